//! The admin API under `/admin/v1`, for support staff and the platform UI.
//!
//! - [`auth`]: the bearer token becomes an [`auth::Admin`]; handlers check it first.
//! - [`token`] and [`jwks`]: verifying JWTs (HS256 secret, RS256/ES256 PEM keys, a JWKS URL)
//!   and minting development tokens.
//! - [`error`]: the one error type, its JSON shape, and the error sets operations document.
//! - [`page`]: cursor pagination for listings.
//! - [`audit`]: recording every write with its actor, and reading the record back.
//! - [`tenants`] and [`keys`]: the endpoint families.
//!
//! A handler reads as paragraphs: authorize, load, change and audit in one transaction, clear
//! the key cache when what a key grants changed, respond.

pub mod audit;
pub mod auth;
pub mod error;
pub mod jwks;
pub mod keys;
pub mod page;
pub mod tenants;
pub mod token;

use self::audit::AuditApi;
use self::keys::KeysApi;
use self::tenants::TenantsApi;

/// Every admin endpoint family, as one OpenAPI service component.
pub type AdminApi = (TenantsApi, KeysApi, AuditApi);

pub fn apis() -> AdminApi {
    (TenantsApi, KeysApi, AuditApi)
}
