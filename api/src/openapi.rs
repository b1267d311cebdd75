//! The published OpenAPI document: the admin API and the operational endpoints.
//!
//! SCIM is not described here: it is a standard protocol (RFC 7643/7644) and Roster describes
//! it the standard way, through `/scim/v2/ServiceProviderConfig`, `/Schemas` and
//! `/ResourceTypes`.

use poem_openapi::{OpenApiService, Tags};

use crate::admin::{self, AdminApi};
use crate::health::HealthApi;

#[derive(Tags)]
pub enum ApiTags {
    /// Liveness and readiness probes for orchestrators and load balancers.
    Operations,
    /// Customer tenants: each has its own schema, SCIM base URL, API keys, rate limit and
    /// FusionAuth connection. Create, inspect, configure, suspend, resume and delete them.
    Tenants,
    /// The service-account API keys Entra presents as its Secret Token: issue (shown once),
    /// list, revoke, and rotate without a provisioning gap.
    Keys,
    /// Who changed what through the admin API or the command line, newest first.
    Audit,
}

pub type Apis = (HealthApi, AdminApi);

/// The service with every documented operation.
pub fn service() -> OpenApiService<Apis, ()> {
    let apis = (HealthApi, admin::apis());
    OpenApiService::new(apis, "Roster", env!("CARGO_PKG_VERSION")).description(
        "Multi-tenant SCIM 2.0 provisioning from Microsoft Entra ID into FusionAuth. \
         This document covers the operational endpoints and the admin API; the SCIM surface \
         is described by its own discovery endpoints under /scim/v2.\n\n\
         The admin API (`/admin/v1`) takes a JWT bearer token (`AdminToken`): the role \
         `roster:read` reads, `roster:write` also writes, and a `tenant` claim confines the \
         token to one tenant. Every write is audited with the token's `sub`. Errors are \
         `{\"error\": \"<code>\", \"message\": \"...\"}`; listings page with `limit` and \
         an opaque `cursor` taken from the previous page's `next_cursor`.",
    )
}

/// The spec as committed in `openapi/roster.json`.
pub fn spec_json() -> String {
    service().spec()
}
