//! Roster's HTTP service: the SCIM 2.0 surface Entra provisions into, the admin API, and the
//! `roster` command line that runs and administers it.

pub mod admin;
pub mod body_limit;
pub mod cli;
pub mod config;
pub mod directory;
pub mod fusionauth;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod request_line;
pub mod scim;
pub mod server;
pub mod state;
pub mod telemetry;
