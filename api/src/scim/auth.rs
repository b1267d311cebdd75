//! Who is calling: bearer key → tenant, checked against the path, the tenant's status and its
//! rate limit. The first step of every SCIM handler.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use poem::{FromRequest, Request, RequestBody};
use tenancy::keys::{KeyGrant, KeyHash};
use tenancy::limits::Decision;
use tenancy::{TenantRef, TenantStatus};
use uuid::Uuid;

use super::error::ScimError;
use crate::state::AppState;
use crate::telemetry::RequestContext;

/// An authenticated SCIM caller: the tenant its key belongs to.
#[derive(Debug, Clone)]
pub struct ScimCaller {
    pub tenant: TenantRef,
    pub key_id: Uuid,
    pub context: Arc<RequestContext>,
    /// This tenant's SCIM base as the caller addressed it, for `Location` and `meta.location`.
    pub base_url: String,
}

impl ScimCaller {
    pub fn request_id(&self) -> &str {
        &self.context.request_id
    }
}

impl<'a> FromRequest<'a> for ScimCaller {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let state = req
            .data::<AppState>()
            .ok_or_else(|| ScimError::internal("AppState missing from the request"))?;
        Ok(authenticate(state, req).await?)
    }
}

async fn authenticate(state: &AppState, req: &Request) -> Result<ScimCaller, ScimError> {
    let address = client_address(req, state.trust_forwarded_for);
    if let Some(wait) = state.auth_failures.blocked_for(address) {
        crate::metrics::record_rate_limited("auth_failures");
        return Err(too_many_failures(wait));
    }

    let path_slug = req.raw_path_param("tenant");
    let grant = match find_grant(state, req).await? {
        Some(grant) if path_slug.is_none_or(|slug| slug == grant.tenant.slug) => grant,
        _ => {
            state.auth_failures.record_failure(address);
            return Err(ScimError::Unauthorized);
        }
    };

    let context = RequestContext::of(req);
    context.set_tenant(&grant.tenant.slug);
    if grant.tenant.status == TenantStatus::Suspended {
        return Err(ScimError::Forbidden(
            "this tenant is suspended; contact the platform's support".to_owned(),
        ));
    }
    state.last_used.touch(grant.key_id);
    enforce_rate_limit(state, &grant.tenant).await?;

    let base_url = match path_slug {
        Some(slug) => format!("{}/scim/v2/{slug}", state.public_url),
        None => format!("{}/scim/v2", state.public_url),
    };
    Ok(ScimCaller {
        tenant: grant.tenant,
        key_id: grant.key_id,
        context,
        base_url,
    })
}

/// The live, unexpired grant of the presented bearer key, if any.
async fn find_grant(state: &AppState, req: &Request) -> Result<Option<KeyGrant>, ScimError> {
    let Some(secret) = bearer_token(req) else {
        return Ok(None);
    };
    let grant = state.keys.resolve(&KeyHash::of(secret)).await?;
    Ok(grant.filter(|grant| !grant.is_expired(Utc::now())))
}

async fn enforce_rate_limit(state: &AppState, tenant: &TenantRef) -> Result<(), ScimError> {
    match state.limits.check(tenant).await {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after } => {
            crate::metrics::record_rate_limited("tenant");
            Err(ScimError::TooManyRequests {
                retry_after,
                detail: "this tenant's request rate limit is exceeded; retry after the given delay",
            })
        }
    }
}

fn too_many_failures(wait: Duration) -> ScimError {
    ScimError::TooManyRequests {
        retry_after: wait,
        detail: "too many failed authentications from this address",
    }
}

fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The client's address: the first `X-Forwarded-For` hop behind a trusted proxy, else the
/// socket peer.
fn client_address(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| req.header("x-forwarded-for"))
        .flatten()
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse().ok());
    forwarded
        .or_else(|| req.remote_addr().as_socket_addr().map(|addr| addr.ip()))
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}
