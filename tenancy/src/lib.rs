//! Who a tenant is and where its data lives.
//!
//! This crate owns the control schema (tenants, API keys, the admin audit trail), the
//! per-tenant Postgres schemas and their migrations, and the request-path machinery that turns
//! an API key into a tenant: the key cache and the rate limits. It knows nothing about HTTP,
//! SCIM or FusionAuth.

pub mod audit;
pub mod cache;
pub mod db;
mod error;
pub mod home_pool;
pub mod keys;
pub mod limits;
pub mod migrate;
pub mod redis_link;
pub mod schema;
pub mod scope;
pub mod tenants;

pub use error::Error;
pub use schema::SchemaName;
pub use tenants::{Tenant, TenantRef, TenantStatus};
