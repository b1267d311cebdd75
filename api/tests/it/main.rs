//! Roster's integration tests: one binary, real Postgres and Redis, real HTTP.
//!
//! Every test creates its own tenants (and, where it needs one, its own database), so tests
//! run in parallel without seeing each other.

// Test code fails loudly by design; the workspace denies these only in production code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_auth;
mod admin_helpers;
mod admin_tenants;
mod foundation;
mod fusionauth;
mod groups;
mod groups_bench;
mod groups_helpers;
mod helpers;
mod migrations;
mod openapi;
mod replicas;
mod users;
