//! Provisioning into each tenant's own FusionAuth.
//!
//! - [`client`]: the production client — idempotent provision (create with Roster's chosen
//!   id, link by email, register), profile updates, deactivate/reactivate/delete, with time
//!   budgets and bounded retries.
//! - [`sealing`]: the tenant's FusionAuth API key, encrypted at rest and redacted in logs.
//! - [`double`]: a contract-faithful FusionAuth test double served over real HTTP, for tests,
//!   load tests and `roster dev`. Production request paths never call it.

pub mod client;
pub mod double;
pub mod sealing;

pub use client::{
    validate_base_url, BaseUrlError, ClientConfig, Connection, FusionAuthClient, FusionAuthError,
    NewUser, ProfileUpdate, ProvisionOutcome, Provisioned, RegistrationOutcome, UrlPolicy,
};
pub use sealing::{ApiKey, KeySealer, SealError};
