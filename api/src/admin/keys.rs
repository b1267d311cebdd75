//! `/admin/v1/tenants/{slug}/keys`: issue, list and revoke a tenant's service-account API keys.
//!
//! A key is shown once, when it is issued; listings show its visible prefix and its history,
//! never the key or its hash. A tenant may hold several live keys, which is what makes
//! rotation possible without a provisioning gap: issue a new key, switch the Entra app's
//! *Secret Token* to it, check that the old key's `last_used_at` stops advancing, then revoke
//! the old key.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::json;
use sqlx::PgConnection;
use tenancy::audit::{record, AuditEvent};
use tenancy::keys::{self, IssuedKey, KeyInfo};
use tenancy::{tenants, Tenant};
use uuid::Uuid;

use super::audit::event;
use super::auth::{Access, Admin, AdminToken};
use super::error::{AdminError, AdminResult, Change, Lookup};
use super::tenants::scim_base_url;
use crate::openapi::ApiTags;
use crate::state::AppState;

/// The service account of keys issued without one: the Entra provisioning job.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "entra-provisioning";

pub struct KeysApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Keys")]
impl KeysApi {
    /// Issue an API key
    ///
    /// Issues a new key for a service account of the tenant. The key is in this response and
    /// nowhere else. To rotate the Entra app's key without a gap: issue a new key here, paste
    /// it into the app's *Secret Token* and save, wait until the old key's `last_used_at` stops
    /// advancing in `listKeys`, then `revokeKey` the old one. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/keys",
        method = "post",
        operation_id = "issueKey"
    )]
    async fn issue(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        body: Json<NewKeyRequest>,
    ) -> AdminResult<IssuedKeyResponse, Change> {
        admin.authorize(Access::Write, &slug)?;

        let request = body.0;
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut tx = state.db.control().begin().await?;
        let key = issue_key(
            &mut tx,
            &admin,
            &tenant,
            &request.service_account,
            request.expires_at,
        )
        .await?;
        tx.commit().await?;

        let key = NewKey::new(key, &request.service_account, &tenant, &state.public_url);
        Ok(IssuedKeyResponse::Created(Json(key)))
    }

    /// List API keys
    ///
    /// Every key of the tenant, newest first, revoked and expired ones included: id, visible
    /// prefix, service account, when it was created, last used (updated at most once a
    /// minute), expires and was revoked. Never the key itself. Needs `roster:read`.
    #[oai(
        path = "/tenants/:slug/keys",
        method = "get",
        operation_id = "listKeys"
    )]
    async fn list(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
    ) -> AdminResult<Json<KeyList>, Lookup> {
        admin.authorize(Access::Read, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;
        let keys = keys::list(state.db.control(), tenant.id).await?;

        let now = Utc::now();
        Ok(Json(KeyList {
            items: keys.iter().map(|key| KeyView::new(key, now)).collect(),
        }))
    }

    /// Revoke an API key
    ///
    /// The key stops working on every replica within two seconds; SCIM requests with it answer
    /// 401. Revoking a revoked key changes nothing. When rotating, revoke the old key only
    /// after Entra uses the new one. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/keys/:key_id/revoke",
        method = "post",
        operation_id = "revokeKey"
    )]
    async fn revoke(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        /// The key's id, as `listKeys` shows it.
        key_id: Path<Uuid>,
    ) -> AdminResult<Json<KeyView>, Change> {
        admin.authorize(Access::Write, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut tx = state.db.control().begin().await?;
        let revoked = keys::revoke(&mut *tx, tenant.id, &key_id.0.to_string()).await?;
        let detail = json!({ "key_id": revoked.id, "service_account": revoked.service_account });
        let audited = AuditEvent {
            target: Some(revoked.prefix.clone()),
            ..event(&admin, "key.revoke", &tenant, detail)
        };
        record(&mut *tx, audited).await?;
        tx.commit().await?;

        state.keys.invalidate_all().await;
        Ok(Json(KeyView::new(&revoked, Utc::now())))
    }
}

/// Issues a key inside the caller's transaction and audits it there.
pub async fn issue_key(
    tx: &mut PgConnection,
    admin: &Admin,
    tenant: &Tenant,
    service_account: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedKey, AdminError> {
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(AdminError::BadRequest(
            "the key's expiry must be in the future".to_owned(),
        ));
    }

    let key = keys::issue(&mut *tx, tenant.id, service_account, expires_at).await?;
    let detail = json!({
        "key_id": key.id,
        "service_account": service_account,
        "expires_at": expires_at,
    });
    let audited = AuditEvent {
        target: Some(key.prefix.clone()),
        ..event(admin, "key.issue", tenant, detail)
    };
    record(&mut *tx, audited).await?;
    Ok(key)
}

/// A key to issue.
#[derive(Debug, Object)]
#[oai(example)]
pub struct NewKeyRequest {
    /// Who will use the key, 1 to 100 characters.
    #[oai(default = "default_service_account")]
    pub service_account: String,
    /// When the key stops working; never when absent.
    pub expires_at: Option<DateTime<Utc>>,
}

fn default_service_account() -> String {
    DEFAULT_SERVICE_ACCOUNT.to_owned()
}

impl Example for NewKeyRequest {
    fn example() -> Self {
        NewKeyRequest {
            service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
            expires_at: None,
        }
    }
}

/// A freshly issued key. (No `Debug`: it holds the key.)
#[derive(Object)]
pub struct NewKey {
    pub id: Uuid,
    /// The first characters of the key, as listings show them.
    pub prefix: String,
    pub service_account: String,
    /// The key, for the Entra app's *Secret Token*. Shown once: Roster keeps only a hash.
    pub key: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The SCIM base URL for the Entra app's *Tenant URL*.
    pub scim_base_url: String,
}

impl NewKey {
    pub fn new(key: IssuedKey, service_account: &str, tenant: &Tenant, public_url: &str) -> Self {
        NewKey {
            id: key.id,
            prefix: key.prefix,
            service_account: service_account.to_owned(),
            key: key.secret,
            expires_at: key.expires_at,
            scim_base_url: scim_base_url(public_url, &tenant.slug),
        }
    }
}

#[derive(ApiResponse)]
pub enum IssuedKeyResponse {
    /// The key is live on every replica at once.
    #[oai(status = 201)]
    Created(Json<NewKey>),
}

/// Whether a key works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "KeyState", rename_all = "lowercase")]
pub enum KeyState {
    Active,
    Expired,
    Revoked,
}

/// A key as listings show it: never the key or its hash.
#[derive(Debug, Object)]
#[oai(rename = "ApiKey")]
pub struct KeyView {
    pub id: Uuid,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub service_account: String,
    pub state: KeyState,
    pub created_at: DateTime<Utc>,
    /// Updated at most about once a minute; `null` when never used.
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyView {
    fn new(key: &KeyInfo, now: DateTime<Utc>) -> Self {
        let state = match (key.revoked_at, key.expires_at) {
            (Some(_), _) => KeyState::Revoked,
            (None, Some(at)) if at <= now => KeyState::Expired,
            _ => KeyState::Active,
        };
        KeyView {
            id: key.id,
            prefix: key.prefix.clone(),
            service_account: key.service_account.clone(),
            state,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A tenant's keys, newest first.
#[derive(Debug, Object)]
pub struct KeyList {
    pub items: Vec<KeyView>,
}
