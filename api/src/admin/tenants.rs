//! `/admin/v1/tenants`: create, list, read, configure, suspend, resume and delete tenants.
//!
//! Every change is audited in the transaction that makes it. Changes that alter what a key
//! grants — status, deletion, rate limit — clear the key cache afterwards, so every replica
//! sees them within two seconds. A tenant's FusionAuth API key is write-only: it is sealed
//! before it is stored, and responses say only whether one is set.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::{json, Map, Value};
use tenancy::audit::record;
use tenancy::tenants::{self, FusionAuthSettings, SettingsUpdate};
use tenancy::{Tenant, TenantStatus};
use uuid::Uuid;

use super::audit::event;
use super::auth::{Access, AdminToken};
use super::error::{AdminError, AdminResult, Change, Create, Invalid, Lookup};
use super::keys::{issue_key, NewKey, DEFAULT_SERVICE_ACCOUNT};
use super::page;
use crate::fusionauth::validate_base_url;
use crate::openapi::ApiTags;
use crate::state::AppState;

pub struct TenantsApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Tenants")]
impl TenantsApi {
    /// Create a tenant
    ///
    /// Creates the tenant, its own schema with the Basic User group, and a first API key. The
    /// key is in this response and nowhere else: paste it into the Entra app's *Secret Token*
    /// and `scim_base_url` into its *Tenant URL*. The tenant starts in shadow mode (no
    /// FusionAuth) until its connection is set with `updateTenant`. Needs `roster:write` on an
    /// unscoped token.
    #[oai(path = "/tenants", method = "post", operation_id = "createTenant")]
    async fn create_tenant(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        body: Json<NewTenantRequest>,
    ) -> AdminResult<CreatedTenant, Create> {
        admin.authorize_service(Access::Write)?;

        let request = body.0;
        let mut tx = state.db.control().begin().await?;
        let tenant = tenants::create_in(&mut tx, &request.slug, &request.name).await?;
        let detail = json!({ "name": tenant.name });
        record(&mut *tx, event(&admin, "tenant.create", &tenant, detail)).await?;
        let key = issue_key(
            &mut tx,
            &admin,
            &tenant,
            &request.service_account,
            request.key_expires_at,
        )
        .await?;
        tx.commit().await?;

        let public_url = &state.public_url;
        Ok(CreatedTenant::Created(Json(NewTenant {
            tenant: TenantView::new(&tenant, public_url),
            api_key: NewKey::new(key, &request.service_account, &tenant, public_url),
        })))
    }

    /// List tenants
    ///
    /// Tenants in slug order, a page at a time. A token scoped to a tenant sees only that
    /// tenant. Needs `roster:read`.
    #[oai(path = "/tenants", method = "get", operation_id = "listTenants")]
    async fn list_tenants(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResult<Json<TenantPage>, Invalid> {
        let scope = admin.authorize_listing(Access::Read)?;

        let limit = page::limit(limit.0);
        let cursor = slug_cursor(cursor.0.as_deref())?;
        let rows = match scope {
            Some(slug) => scoped_listing(&state, slug, cursor).await?,
            None => tenants::list(state.db.control(), cursor, page::fetch_size(limit)).await?,
        };
        let (rows, next_cursor) = page::finish(rows, limit, |tenant| tenant.slug.clone());

        Ok(Json(TenantPage {
            items: rows
                .iter()
                .map(|tenant| TenantView::new(tenant, &state.public_url))
                .collect(),
            next_cursor,
        }))
    }

    /// Get a tenant
    ///
    /// The tenant's settings, status and FusionAuth connection (never its API key). Needs
    /// `roster:read`.
    #[oai(path = "/tenants/:slug", method = "get", operation_id = "getTenant")]
    async fn get_tenant(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
    ) -> AdminResult<Json<TenantView>, Lookup> {
        admin.authorize(Access::Read, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        Ok(Json(TenantView::new(&tenant, &state.public_url)))
    }

    /// Update a tenant's settings
    ///
    /// Changes only the fields present. `fusionauth` sets the tenant's FusionAuth connection
    /// (its `api_key` is sealed at rest and never returned; omit it to keep the stored key) or,
    /// as `null`, removes it and returns the tenant to shadow mode. `rate_limit_per_sec` takes
    /// effect on every replica within two seconds and needs an unscoped token; `null` returns
    /// to the service default. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug",
        method = "patch",
        operation_id = "updateTenant"
    )]
    async fn update_tenant(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        body: Json<TenantSettings>,
    ) -> AdminResult<Json<TenantView>, Change> {
        admin.authorize(Access::Write, &slug)?;
        let settings = body.0;
        if !settings.rate_limit_per_sec.is_undefined() {
            admin.authorize_service(Access::Write)?;
        }

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;
        let update = settings_update(&settings);
        let connection = connection_change(&state, &tenant, &settings.fusionauth)?;
        let detail = change_detail(&settings);

        let mut tx = state.db.control().begin().await?;
        if let Some(connection) = &connection {
            tenants::set_fusionauth(&mut *tx, tenant.id, connection.as_ref()).await?;
        }
        let updated = tenants::update_settings(&mut *tx, tenant.id, &update).await?;
        record(&mut *tx, event(&admin, "tenant.update", &tenant, detail)).await?;
        tx.commit().await?;

        if update.rate_limit_per_sec.is_some() {
            state.keys.invalidate_all().await;
        }
        Ok(Json(TenantView::new(&updated, &state.public_url)))
    }

    /// Suspend a tenant
    ///
    /// SCIM requests with the tenant's keys answer 403 on every replica within two seconds;
    /// its data and keys are kept. Suspending a suspended tenant changes nothing. Needs
    /// `roster:write` on an unscoped token.
    #[oai(
        path = "/tenants/:slug/suspend",
        method = "post",
        operation_id = "suspendTenant"
    )]
    async fn suspend_tenant(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
    ) -> AdminResult<Json<TenantView>, Lookup> {
        admin.authorize_service(Access::Write)?;

        let tenant = change_status(&state, &admin, &slug, TenantStatus::Suspended).await?;

        Ok(Json(TenantView::new(&tenant, &state.public_url)))
    }

    /// Resume a tenant
    ///
    /// Serves a suspended tenant's SCIM requests again (within two seconds on every replica).
    /// Resuming an active tenant changes nothing. Needs `roster:write` on an unscoped token.
    #[oai(
        path = "/tenants/:slug/resume",
        method = "post",
        operation_id = "resumeTenant"
    )]
    async fn resume_tenant(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
    ) -> AdminResult<Json<TenantView>, Lookup> {
        admin.authorize_service(Access::Write)?;

        let tenant = change_status(&state, &admin, &slug, TenantStatus::Active).await?;

        Ok(Json(TenantView::new(&tenant, &state.public_url)))
    }

    /// Delete a tenant
    ///
    /// Drops the tenant's schema with all its users, groups and journal, and its keys, which
    /// stop working at once. There is no undo, so the request must repeat the slug as
    /// `?confirm=<slug>`. The audit log keeps the tenant's history. Needs `roster:write` on an
    /// unscoped token.
    #[oai(
        path = "/tenants/:slug",
        method = "delete",
        operation_id = "deleteTenant"
    )]
    async fn delete_tenant(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        /// The tenant's slug again, to confirm the deletion.
        confirm: Query<Option<String>>,
    ) -> AdminResult<Deleted, Change> {
        admin.authorize_service(Access::Write)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;
        require_confirmation(&tenant, confirm.0.as_deref())?;

        let mut tx = state.db.control().begin().await?;
        tenants::delete_in(&mut tx, tenant.id).await?;
        let detail = json!({ "name": tenant.name });
        record(&mut *tx, event(&admin, "tenant.delete", &tenant, detail)).await?;
        tx.commit().await?;

        state.keys.invalidate_all().await;
        Ok(Deleted::Deleted)
    }
}

/// A tenants cursor is the slug of the last tenant of the previous page; anything that is not
/// a slug cannot have come from `next_cursor` (and a NUL would fail the query with a 500).
fn slug_cursor(cursor: Option<&str>) -> Result<Option<&str>, AdminError> {
    match cursor {
        Some(slug) if tenants::validate_slug(slug).is_err() => {
            Err(AdminError::BadRequest("invalid cursor".to_owned()))
        }
        other => Ok(other),
    }
}

/// What a tenant-scoped token's listing holds: its own tenant, on the first page only.
async fn scoped_listing(
    state: &AppState,
    slug: &str,
    cursor: Option<&str>,
) -> Result<Vec<Tenant>, AdminError> {
    let tenant = tenants::get_by_slug(state.db.control(), slug).await?;
    Ok(tenant
        .filter(|tenant| cursor.is_none_or(|after| tenant.slug.as_str() > after))
        .into_iter()
        .collect())
}

/// Sets the tenant's status, audited, and clears the key cache so every replica sees it.
async fn change_status(
    state: &AppState,
    admin: &AdminToken,
    slug: &str,
    status: TenantStatus,
) -> Result<Tenant, AdminError> {
    let tenant = tenants::require_by_slug(state.db.control(), slug).await?;
    let action = match status {
        TenantStatus::Active => "tenant.resume",
        TenantStatus::Suspended => "tenant.suspend",
    };

    let mut tx = state.db.control().begin().await?;
    tenants::set_status(&mut *tx, tenant.id, status).await?;
    let detail = json!({ "previous_status": Status::from(tenant.status).as_str() });
    record(&mut *tx, event(admin, action, &tenant, detail)).await?;
    let changed = tenants::require_by_slug(&mut *tx, slug).await?;
    tx.commit().await?;

    state.keys.invalidate_all().await;
    Ok(changed)
}

fn require_confirmation(tenant: &Tenant, confirm: Option<&str>) -> Result<(), AdminError> {
    if confirm == Some(tenant.slug.as_str()) {
        return Ok(());
    }
    Err(AdminError::BadRequest(format!(
        "deleting a tenant drops all its data and cannot be undone: repeat its slug as \
         ?confirm={}",
        tenant.slug
    )))
}

fn settings_update(settings: &TenantSettings) -> SettingsUpdate {
    SettingsUpdate {
        name: settings.name.clone(),
        rate_limit_per_sec: settings
            .rate_limit_per_sec
            .as_opt_ref()
            .map(Option::<&i32>::copied),
        stale_after_secs: settings.stale_after_secs,
        journal_retention_days: settings.journal_retention_days,
    }
}

/// The connection to store: `None` leaves it as it is, `Some(None)` removes it.
fn connection_change(
    state: &AppState,
    tenant: &Tenant,
    input: &MaybeUndefined<FusionAuthInput>,
) -> Result<Option<Option<FusionAuthSettings>>, AdminError> {
    match input {
        MaybeUndefined::Undefined => Ok(None),
        MaybeUndefined::Null => Ok(Some(None)),
        MaybeUndefined::Value(input) => Ok(Some(Some(connection(state, tenant, input)?))),
    }
}

fn connection(
    state: &AppState,
    tenant: &Tenant,
    input: &FusionAuthInput,
) -> Result<FusionAuthSettings, AdminError> {
    let base_url = validate_base_url(&input.base_url, state.url_policy)
        .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    let sealed_api_key = match (&input.api_key, &tenant.fusionauth) {
        (Some(api_key), _) => seal(state, api_key)?,
        (None, Some(stored)) => stored.sealed_api_key.clone(),
        (None, None) => {
            return Err(AdminError::BadRequest(
                "fusionauth.api_key is required: the tenant has no FusionAuth key yet".to_owned(),
            ))
        }
    };
    Ok(FusionAuthSettings {
        base_url: base_url.to_string(),
        sealed_api_key,
        tenant_id: input.tenant_id,
        application_id: input.application_id,
    })
}

fn seal(state: &AppState, api_key: &str) -> Result<Vec<u8>, AdminError> {
    let api_key = api_key.trim();
    if api_key.is_empty() {
        return Err(AdminError::BadRequest(
            "fusionauth.api_key must not be empty".to_owned(),
        ));
    }
    let sealer = state.sealer.as_ref().ok_or(AdminError::Unavailable(
        "FusionAuth keys cannot be stored: this deployment has no ROSTER_KEY_ENCRYPTION_KEY",
    ))?;
    sealer.seal(api_key).map_err(AdminError::internal)
}

/// The audit detail of a settings change: the fields changed, without the FusionAuth key.
fn change_detail(settings: &TenantSettings) -> Value {
    let mut detail = Map::new();
    if let Some(name) = &settings.name {
        detail.insert("name".to_owned(), json!(name));
    }
    if let Some(limit) = settings.rate_limit_per_sec.as_opt_ref() {
        detail.insert("rate_limit_per_sec".to_owned(), json!(limit));
    }
    if let Some(secs) = settings.stale_after_secs {
        detail.insert("stale_after_secs".to_owned(), json!(secs));
    }
    if let Some(days) = settings.journal_retention_days {
        detail.insert("journal_retention_days".to_owned(), json!(days));
    }
    if let Some(connection) = settings.fusionauth.as_opt_ref() {
        let connection = connection.map(|c| {
            json!({
                "base_url": c.base_url,
                "tenant_id": c.tenant_id,
                "application_id": c.application_id,
                "api_key": if c.api_key.is_some() { "replaced" } else { "kept" },
            })
        });
        detail.insert("fusionauth".to_owned(), json!(connection));
    }
    Value::Object(detail)
}

/// Whether a tenant is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "TenantStatus", rename_all = "lowercase")]
pub enum Status {
    /// SCIM requests are served.
    Active,
    /// SCIM requests answer 403; data and keys are kept.
    Suspended,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Suspended => "suspended",
        }
    }
}

impl From<TenantStatus> for Status {
    fn from(status: TenantStatus) -> Self {
        match status {
            TenantStatus::Active => Status::Active,
            TenantStatus::Suspended => Status::Suspended,
        }
    }
}

/// Where a tenant's users are provisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Provisioning {
    /// Into the tenant's FusionAuth and its Roster schema.
    Fusionauth,
    /// Into the Roster schema only; the journal notes that FusionAuth was skipped.
    Shadow,
}

/// A tenant as the admin API shows it.
#[derive(Debug, Object)]
#[oai(rename = "Tenant")]
pub struct TenantView {
    pub id: Uuid,
    /// Used in the per-tenant SCIM base URL; never changes.
    pub slug: String,
    pub name: String,
    pub status: Status,
    /// The SCIM base URL for the Entra app's *Tenant URL*.
    pub scim_base_url: String,
    /// SCIM requests per second; `null` means the service default.
    pub rate_limit_per_sec: Option<i32>,
    /// A synced group untouched by SCIM for longer than this many seconds is flagged stale.
    pub stale_after_secs: i32,
    /// Days the sync journal is kept.
    pub journal_retention_days: i32,
    pub provisioning: Provisioning,
    /// The FusionAuth connection; `null` in shadow mode.
    pub fusionauth: Option<FusionAuthView>,
    /// The tenant schema's migration version.
    pub schema_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TenantView {
    pub fn new(tenant: &Tenant, public_url: &str) -> Self {
        TenantView {
            id: tenant.id,
            slug: tenant.slug.clone(),
            name: tenant.name.clone(),
            status: tenant.status.into(),
            scim_base_url: scim_base_url(public_url, &tenant.slug),
            rate_limit_per_sec: tenant.rate_limit_per_sec,
            stale_after_secs: tenant.stale_after_secs,
            journal_retention_days: tenant.journal_retention_days,
            provisioning: match tenant.fusionauth {
                Some(_) => Provisioning::Fusionauth,
                None => Provisioning::Shadow,
            },
            fusionauth: tenant.fusionauth.as_ref().map(FusionAuthView::new),
            schema_version: tenant.schema_version,
            created_at: tenant.created_at,
            updated_at: tenant.updated_at,
        }
    }
}

/// The per-tenant SCIM base, as Entra's *Tenant URL*.
pub fn scim_base_url(public_url: &str, slug: &str) -> String {
    format!("{public_url}/scim/v2/{slug}")
}

/// A tenant's FusionAuth connection, without its API key.
#[derive(Debug, Object)]
#[oai(rename = "FusionAuthConnection")]
pub struct FusionAuthView {
    pub base_url: String,
    /// Sent as `X-FusionAuth-TenantId`.
    pub tenant_id: Uuid,
    /// New users are registered with this application when set.
    pub application_id: Option<Uuid>,
    /// Whether an API key is stored. The key itself is never returned.
    pub api_key_set: bool,
}

impl FusionAuthView {
    fn new(settings: &FusionAuthSettings) -> Self {
        FusionAuthView {
            base_url: settings.base_url.clone(),
            tenant_id: settings.tenant_id,
            application_id: settings.application_id,
            api_key_set: !settings.sealed_api_key.is_empty(),
        }
    }
}

/// One page of tenants.
#[derive(Debug, Object)]
pub struct TenantPage {
    pub items: Vec<TenantView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A tenant to create.
#[derive(Debug, Object)]
#[oai(example)]
pub struct NewTenantRequest {
    /// `[a-z0-9][a-z0-9-]{1,62}` and not a SCIM endpoint name; used in `/scim/v2/<slug>` and
    /// never changes.
    pub slug: String,
    /// A display name, 1 to 200 characters.
    pub name: String,
    /// The service account the first API key belongs to.
    #[oai(default = "default_service_account")]
    pub service_account: String,
    /// When the first key stops working; never when absent.
    pub key_expires_at: Option<DateTime<Utc>>,
}

fn default_service_account() -> String {
    DEFAULT_SERVICE_ACCOUNT.to_owned()
}

impl Example for NewTenantRequest {
    fn example() -> Self {
        NewTenantRequest {
            slug: "acme".to_owned(),
            name: "Acme Corporation".to_owned(),
            service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
            key_expires_at: None,
        }
    }
}

/// A created tenant and its first API key. (No `Debug`: it holds the key.)
#[derive(Object)]
pub struct NewTenant {
    pub tenant: TenantView,
    /// Shown once: Roster keeps only a hash.
    pub api_key: NewKey,
}

#[derive(ApiResponse)]
pub enum CreatedTenant {
    /// The tenant exists, with its schema, its Basic User group and a first key.
    #[oai(status = 201)]
    Created(Json<NewTenant>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The tenant, its data and its keys are gone.
    #[oai(status = 204)]
    Deleted,
}

/// Settings to change; absent fields stay as they are.
#[derive(Object)]
#[oai(example)]
pub struct TenantSettings {
    /// A display name, 1 to 200 characters.
    pub name: Option<String>,
    /// SCIM requests per second (positive); `null` returns to the service default. Needs an
    /// unscoped token.
    pub rate_limit_per_sec: MaybeUndefined<i32>,
    /// Seconds after which an untouched synced group is flagged stale (positive).
    pub stale_after_secs: Option<i32>,
    /// Days the sync journal is kept (positive).
    pub journal_retention_days: Option<i32>,
    /// The FusionAuth connection; `null` removes it and returns the tenant to shadow mode.
    pub fusionauth: MaybeUndefined<FusionAuthInput>,
}

impl Example for TenantSettings {
    fn example() -> Self {
        TenantSettings {
            name: None,
            rate_limit_per_sec: MaybeUndefined::Value(50),
            stale_after_secs: None,
            journal_retention_days: None,
            fusionauth: MaybeUndefined::Value(FusionAuthInput {
                base_url: "https://acme.fusionauth.io".to_owned(),
                api_key: Some("<FusionAuth API key>".to_owned()),
                tenant_id: Uuid::nil(),
                application_id: None,
            }),
        }
    }
}

/// A FusionAuth connection to store. (No `Debug`: it holds the API key.)
#[derive(Object)]
pub struct FusionAuthInput {
    /// FusionAuth's base URL (http or https; private addresses only when the deployment
    /// allows them).
    pub base_url: String,
    /// A FusionAuth API key: sealed at rest and never returned. Omit it to keep the stored
    /// key.
    #[oai(write_only)]
    pub api_key: Option<String>,
    /// The FusionAuth tenant id, sent as `X-FusionAuth-TenantId`.
    pub tenant_id: Uuid,
    /// Register new users with this FusionAuth application.
    pub application_id: Option<Uuid>,
}
