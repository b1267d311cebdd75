//! The admin API under `/admin/v1`, for support staff and the platform UI.
//!
//! - [`auth`]: the bearer token becomes an [`auth::Admin`]; handlers check it first.
//! - [`token`] and [`jwks`]: verifying JWTs (HS256 secret, RS256/ES256 PEM keys, a JWKS URL)
//!   and minting development tokens.
//! - [`error`]: the one error type, its JSON shape, and the error sets operations document.
//! - [`page`]: cursor pagination for listings.
//!
//! A handler reads as paragraphs: authorize, load, change and audit in one transaction, clear
//! the key cache when what a key grants changed, respond.

pub mod auth;
pub mod error;
pub mod jwks;
pub mod page;
pub mod token;
