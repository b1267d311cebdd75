//! The published OpenAPI document: the admin API and the operational endpoints.
//!
//! SCIM is not described here: it is a standard protocol (RFC 7643/7644) and Roster describes
//! it the standard way, through `/scim/v2/ServiceProviderConfig`, `/Schemas` and
//! `/ResourceTypes`.

use poem_openapi::{OpenApiService, Tags};

use crate::health::HealthApi;

#[derive(Tags)]
pub enum ApiTags {
    /// Liveness and readiness probes for orchestrators and load balancers.
    Operations,
}

pub type Apis = HealthApi;

/// The service with every documented operation.
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(HealthApi, "Roster", env!("CARGO_PKG_VERSION")).description(
        "Multi-tenant SCIM 2.0 provisioning from Microsoft Entra ID into FusionAuth. \
         This document covers the operational endpoints and the admin API; the SCIM surface \
         is described by its own discovery endpoints under /scim/v2.",
    )
}

/// The spec as committed in `openapi/roster.json`.
pub fn spec_json() -> String {
    service().spec()
}
