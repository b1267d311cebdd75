//! `/admin/v1/tenants/{slug}/users`: find a tenant's users, see what they can do and why, and
//! make the changes SCIM deliberately ignores — profile, deactivation, reactivation, deletion.
//!
//! Each change goes to the tenant's FusionAuth first (when the tenant is connected and the
//! user is linked there), then to Roster in one transaction with its journal entry, the Basic
//! User invariant and the audit record. FusionAuth failing leaves Roster unchanged: the client
//! gets 503 with `Retry-After` and can simply try again. In shadow mode only Roster changes.
//! Search terms are personal data: they are bound as SQL parameters and never logged.

use std::time::Instant;
use tenancy::scope::TenantDb;

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::{json, Value};
use tenancy::audit::{record, AuditEvent};
use tenancy::{tenants, Tenant};
use uuid::Uuid;

use super::audit::event;
use super::auth::{Access, Admin, AdminToken};
use super::error::{AdminError, AdminResult, Change, Conflicting, Lookup};
use super::journal::JournalEntry;
use super::page;
use crate::directory::journal::{self, Filter};
use crate::directory::provisioning::{connection_of, CreateError, FusionAuthTrace};
use crate::directory::users::{self, ProfileChange, Search, User};
use crate::directory::{groups, DirectoryError};
use crate::fusionauth::{Connection, FusionAuthError, ProfileUpdate};
use crate::openapi::ApiTags;
use crate::state::AppState;

/// How many of a user's latest journal entries `getUser` shows.
const RECENT_ENTRIES: i64 = 20;

pub struct UsersApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Users")]
impl UsersApi {
    /// List and search users
    ///
    /// The tenant's users, oldest first, a page at a time. Every filter given must match:
    /// `email` and `name` match anywhere in the value, ignoring case (`email` looks at the work
    /// email and the userName; `name` at the display, given, family and formatted names).
    /// Search terms are never logged. Needs `roster:read`.
    #[oai(
        path = "/tenants/:slug/users",
        method = "get",
        operation_id = "listUsers"
    )]
    // poem-openapi documents each query parameter from its own handler argument.
    #[allow(clippy::too_many_arguments)]
    async fn list_users(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        /// Part of the work email or userName.
        email: Query<Option<String>>,
        /// Part of a name.
        name: Query<Option<String>>,
        /// Only members of this group.
        group: Query<Option<Uuid>>,
        /// Only users from this source.
        source: Query<Option<UserSource>>,
        /// Only active (`true`) or deactivated (`false`) users.
        active: Query<Option<bool>>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResult<Json<UserPage>, Change> {
        admin.authorize(Access::Read, &slug)?;

        let search = Search {
            email: email.0.as_deref(),
            name: name.0.as_deref(),
            group_id: group.0,
            source: source.0.map(UserSource::as_str),
            active: active.0,
            after: cursor.0.as_deref().map(decode_cursor).transpose()?,
        };
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let limit = page::limit(limit.0);
        let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
        let rows = users::search(&mut conn.db(), &search, page::fetch_size(limit)).await?;
        conn.done();
        let (rows, next_cursor) = page::finish(rows, limit, encode_cursor);

        Ok(Json(UserPage {
            items: rows.iter().map(UserView::from).collect(),
            next_cursor,
        }))
    }

    /// Get a user
    ///
    /// The user with everything support needs to answer "why can't they get in": their groups
    /// (and whether each is synced, i.e. managed by Entra), their effective permissions, the
    /// FusionAuth user they are linked to, and their latest journal entries. Needs
    /// `roster:read`.
    #[oai(
        path = "/tenants/:slug/users/:user_id",
        method = "get",
        operation_id = "getUser"
    )]
    async fn get_user(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        user_id: Path<Uuid>,
    ) -> AdminResult<Json<UserDetail>, Lookup> {
        admin.authorize(Access::Read, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;
        let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
        let user = users::get(&mut conn.db(), user_id.0)
            .await?
            .ok_or_else(|| no_user(user_id.0))?;
        let memberships = groups::memberships_of(&mut conn.db(), user.id).await?;
        let permissions = groups::effective_permissions(&mut conn.db(), user.id).await?;
        let filter = Filter {
            user_id: Some(user.id),
            ..Filter::default()
        };
        let recent = journal::list(&mut conn.db(), &filter, RECENT_ENTRIES).await?;
        conn.done();

        Ok(Json(UserDetail {
            user: UserView::from(&user),
            fusionauth: FusionAuthLink {
                user_id: user.fusionauth_user_id,
                link: user.fusionauth_link.clone(),
            },
            groups: memberships.into_iter().map(UserGroup::from).collect(),
            effective_permissions: permissions.into_iter().collect(),
            recent_journal: recent.into_iter().map(JournalEntry::from).collect(),
        }))
    }

    /// Update a user's profile
    ///
    /// Changes the fields present: display, given and family name, and the work email (which
    /// must stay unique in the tenant: 409). Applied to FusionAuth first, then to Roster;
    /// FusionAuth unavailable is 503 with nothing changed. Entra never overwrites these: SCIM
    /// profile updates are acknowledged and ignored. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/users/:user_id",
        method = "patch",
        operation_id = "updateUser"
    )]
    async fn update_user(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        user_id: Path<Uuid>,
        body: Json<ProfileRequest>,
    ) -> AdminResult<Json<UserView>, Conflicting> {
        admin.authorize(Access::Write, &slug)?;

        let change = body.0.validated()?;
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;
        let user = load_user(&state, &tenant, user_id.0).await?;
        ensure_email_free(&state, &tenant, &change, user.id).await?;

        let update = ProfileUpdate {
            email: change.work_email.clone(),
            first_name: change.given_name.clone(),
            last_name: change.family_name.clone(),
            full_name: change.display_name.clone(),
            ..ProfileUpdate::default()
        };
        let trace = in_fusionauth(&state, &tenant, &user, Action::Update(&update)).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        let updated =
            users::update_profile(&mut tx.db(), user.id, &change, admin.request_id(), trace)
                .await
                .map_err(directory_error)?
                .ok_or_else(|| no_user(user.id))?;
        let detail = json!({ "fields": change.fields() });
        audit(
            &mut tx.db(),
            &admin,
            "user.update",
            &tenant,
            user.id,
            detail,
        )
        .await?;
        tx.commit().await?;

        Ok(Json(UserView::from(&updated)))
    }

    /// Deactivate a user
    ///
    /// Deactivates the user in FusionAuth (they can no longer sign in), then in Roster, where
    /// they leave Basic User. Their other memberships stay, so reactivating restores their
    /// access. Entra's own deactivations are ignored: this is the way to do it. Needs
    /// `roster:write`.
    #[oai(
        path = "/tenants/:slug/users/:user_id/deactivate",
        method = "post",
        operation_id = "deactivateUser"
    )]
    async fn deactivate_user(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        user_id: Path<Uuid>,
    ) -> AdminResult<Json<UserView>, Conflicting> {
        self.set_active(&admin, &state, &slug, user_id.0, false)
            .await
    }

    /// Reactivate a user
    ///
    /// Reactivates the user in FusionAuth, then in Roster, where they rejoin Basic User if they
    /// are in no synced group. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/users/:user_id/reactivate",
        method = "post",
        operation_id = "reactivateUser"
    )]
    async fn reactivate_user(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        user_id: Path<Uuid>,
    ) -> AdminResult<Json<UserView>, Conflicting> {
        self.set_active(&admin, &state, &slug, user_id.0, true)
            .await
    }

    /// Delete a user
    ///
    /// Deletes the user for good: from FusionAuth first, then from Roster with all their
    /// memberships. The journal keeps its entries about them until retention removes them. If
    /// Entra still has the user assigned, its next cycle creates them again. Needs
    /// `roster:write`.
    #[oai(
        path = "/tenants/:slug/users/:user_id",
        method = "delete",
        operation_id = "deleteUser"
    )]
    async fn delete_user(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        user_id: Path<Uuid>,
    ) -> AdminResult<DeletedUser, Conflicting> {
        admin.authorize(Access::Write, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;
        let user = load_user(&state, &tenant, user_id.0).await?;
        let trace = in_fusionauth(&state, &tenant, &user, Action::Delete).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        users::delete(&mut tx.db(), user.id, admin.request_id(), trace)
            .await?
            .ok_or_else(|| no_user(user.id))?;
        let detail =
            json!({ "source": user.source, "fusionauth_user_id": user.fusionauth_user_id });
        audit(
            &mut tx.db(),
            &admin,
            "user.delete",
            &tenant,
            user.id,
            detail,
        )
        .await?;
        tx.commit().await?;

        Ok(DeletedUser::Deleted)
    }
}

impl UsersApi {
    async fn set_active(
        &self,
        admin: &Admin,
        state: &AppState,
        slug: &str,
        user_id: Uuid,
        active: bool,
    ) -> AdminResult<Json<UserView>, Conflicting> {
        admin.authorize(Access::Write, slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), slug).await?;
        let user = load_user(state, &tenant, user_id).await?;
        let action = if active {
            Action::Reactivate
        } else {
            Action::Deactivate
        };
        let trace = in_fusionauth(state, &tenant, &user, action).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        let changed = users::set_active(&mut tx.db(), user.id, active, admin.request_id(), trace)
            .await?
            .ok_or_else(|| no_user(user.id))?;
        let verb = if active {
            "user.reactivate"
        } else {
            "user.deactivate"
        };
        let detail = json!({ "was_active": user.active });
        audit(&mut tx.db(), admin, verb, &tenant, user.id, detail).await?;
        tx.commit().await?;

        Ok(Json(UserView::from(&changed)))
    }
}

async fn load_user(state: &AppState, tenant: &Tenant, id: Uuid) -> Result<User, AdminError> {
    let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
    let user = users::get(&mut conn.db(), id).await?;
    conn.done();
    user.ok_or_else(|| no_user(id))
}

fn no_user(id: Uuid) -> AdminError {
    AdminError::NotFound(format!("no user {id} in this tenant"))
}

/// Refuses a work email another user of the tenant holds before FusionAuth is asked; the
/// unique index stays the real guard.
async fn ensure_email_free(
    state: &AppState,
    tenant: &Tenant,
    change: &ProfileChange,
    id: Uuid,
) -> Result<(), AdminError> {
    let Some(email) = &change.work_email else {
        return Ok(());
    };
    let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
    let taken = users::email_taken_by_other(&mut conn.db(), email, id).await?;
    conn.done();
    if taken {
        return Err(email_taken());
    }
    Ok(())
}

fn email_taken() -> AdminError {
    AdminError::Conflict("another user of this tenant already has this email".to_owned())
}

fn directory_error(error: DirectoryError) -> AdminError {
    match error {
        DirectoryError::Conflict { .. } => email_taken(),
        DirectoryError::Database(error) => AdminError::from(error),
    }
}

async fn audit(
    db: &mut TenantDb<'_>,
    admin: &Admin,
    action: &str,
    tenant: &Tenant,
    user_id: Uuid,
    detail: Value,
) -> Result<(), AdminError> {
    let audited = AuditEvent {
        target: Some(format!("user:{user_id}")),
        ..event(admin, action, tenant, detail)
    };
    record(&mut *db.conn, audited).await?;
    Ok(())
}

/// A change to make in FusionAuth.
enum Action<'a> {
    Update(&'a ProfileUpdate),
    Deactivate,
    Reactivate,
    Delete,
}

/// Applies `action` to the user's FusionAuth account and says how it went, for the journal.
/// A tenant in shadow mode, or a user not linked to FusionAuth, is `skipped`.
async fn in_fusionauth(
    state: &AppState,
    tenant: &Tenant,
    user: &User,
    action: Action<'_>,
) -> Result<Option<FusionAuthTrace>, AdminError> {
    let skipped = FusionAuthTrace {
        outcome: "skipped",
        latency: std::time::Duration::ZERO,
    };
    let (Some(connection), Some(fusionauth_user_id)) =
        (connection(state, tenant)?, user.fusionauth_user_id)
    else {
        return Ok(Some(skipped));
    };

    let started = Instant::now();
    let client = &state.fusionauth;
    let (result, outcome) = match action {
        Action::Update(update) => (
            client
                .update_profile(&connection, fusionauth_user_id, update)
                .await,
            "updated",
        ),
        Action::Deactivate => (
            client.deactivate(&connection, fusionauth_user_id).await,
            "deactivated",
        ),
        Action::Reactivate => (
            client.reactivate(&connection, fusionauth_user_id).await,
            "reactivated",
        ),
        Action::Delete => (
            client.delete(&connection, fusionauth_user_id).await,
            "deleted",
        ),
    };
    result.map_err(fusionauth_error)?;
    Ok(Some(FusionAuthTrace {
        outcome,
        latency: started.elapsed(),
    }))
}

/// The tenant's FusionAuth connection; `None` in shadow mode.
fn connection(state: &AppState, tenant: &Tenant) -> Result<Option<Connection>, AdminError> {
    let Some(settings) = &tenant.fusionauth else {
        return Ok(None);
    };
    match connection_of(settings, state.sealer.as_deref(), state.url_policy) {
        Ok(connection) => Ok(Some(connection)),
        Err(CreateError::Misconfigured(why)) => {
            tracing::warn!(reason = why, "tenant's FusionAuth connection is unusable");
            Err(AdminError::Unavailable(
                "the tenant's FusionAuth connection is unusable; fix it with updateTenant",
            ))
        }
        Err(other) => Err(AdminError::internal(other)),
    }
}

/// What the admin API answers when FusionAuth refuses or fails a change; Roster is unchanged.
fn fusionauth_error(error: FusionAuthError) -> AdminError {
    match error {
        FusionAuthError::Unavailable { .. } => {
            tracing::warn!(error = %error, "FusionAuth unavailable for an admin change");
            AdminError::Unavailable("FusionAuth is unavailable; nothing was changed, retry shortly")
        }
        FusionAuthError::CredentialsRejected => {
            tracing::warn!("FusionAuth rejected a tenant's API key on an admin change");
            AdminError::Unavailable(
                "FusionAuth rejected the tenant's API key; fix the connection with updateTenant",
            )
        }
        FusionAuthError::Rejected { .. } => {
            AdminError::BadRequest(format!("{error}; nothing was changed"))
        }
        FusionAuthError::Conflict { .. } => AdminError::Conflict(
            "another FusionAuth user already has this email; nothing was changed".to_owned(),
        ),
        FusionAuthError::NotFound => AdminError::Conflict(
            "the linked FusionAuth user no longer exists; nothing was changed".to_owned(),
        ),
        FusionAuthError::Protocol(_) => AdminError::internal(error),
    }
}

/// A page cursor: the last user's `created_at` in microseconds and id.
fn encode_cursor(user: &User) -> String {
    format!("{}_{}", user.created_at.timestamp_micros(), user.id)
}

fn decode_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), AdminError> {
    let invalid = || AdminError::BadRequest("invalid cursor".to_owned());
    let (micros, id) = raw.split_once('_').ok_or_else(invalid)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((at, id))
}

/// Where a user came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum UserSource {
    /// Created by Entra over SCIM.
    Scim,
    /// Created in the platform.
    Platform,
}

impl UserSource {
    fn as_str(self) -> &'static str {
        match self {
            UserSource::Scim => "scim",
            UserSource::Platform => "platform",
        }
    }
}

/// Profile fields to change; absent fields stay as they are.
#[derive(Object)]
#[oai(example)]
pub struct ProfileRequest {
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The new work email, unique in the tenant.
    pub email: Option<String>,
}

impl ProfileRequest {
    fn validated(self) -> Result<ProfileChange, AdminError> {
        let text = |value: Option<String>, field: &str| {
            value
                .map(|v| super::groups::required_text(&v, field))
                .transpose()
        };
        let change = ProfileChange {
            display_name: text(self.display_name, "display_name")?,
            given_name: text(self.given_name, "given_name")?,
            family_name: text(self.family_name, "family_name")?,
            work_email: text(self.email, "email")?,
        };
        if change
            .work_email
            .as_deref()
            .is_some_and(|e| !e.contains('@'))
        {
            return Err(AdminError::BadRequest(
                "email must be an email address".to_owned(),
            ));
        }
        if change.fields().is_empty() {
            return Err(AdminError::BadRequest(
                "the request changes nothing".to_owned(),
            ));
        }
        Ok(change)
    }
}

impl Example for ProfileRequest {
    fn example() -> Self {
        ProfileRequest {
            display_name: Some("Ada Lovelace".to_owned()),
            given_name: None,
            family_name: None,
            email: Some("ada.lovelace@example.com".to_owned()),
        }
    }
}

/// A user as listings show them.
#[derive(Debug, Object)]
#[oai(rename = "User")]
pub struct UserView {
    pub id: Uuid,
    pub user_name: String,
    /// Entra's id for the user.
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The work email.
    pub email: Option<String>,
    pub active: bool,
    pub source: UserSource,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id,
            user_name: user.user_name.clone(),
            external_id: user.external_id.clone(),
            display_name: user.display_name.clone(),
            given_name: user.given_name.clone(),
            family_name: user.family_name.clone(),
            email: user.work_email.clone(),
            active: user.active,
            source: if user.source == "platform" {
                UserSource::Platform
            } else {
                UserSource::Scim
            },
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// One group a user belongs to.
#[derive(Debug, Object)]
pub struct UserGroup {
    pub group_id: Uuid,
    pub display_name: String,
    /// Entra manages this membership.
    pub synced: bool,
    /// The Basic User group.
    pub system: bool,
    /// How the membership came about: `scim` (Entra), `safety_net` (Basic User) or
    /// `platform` (an admin).
    pub source: String,
}

impl From<groups::UserMembership> for UserGroup {
    fn from(membership: groups::UserMembership) -> Self {
        UserGroup {
            group_id: membership.group_id,
            display_name: membership.display_name,
            synced: membership.synced,
            system: membership.is_basic_user,
            source: membership.source,
        }
    }
}

/// The FusionAuth account behind a user.
#[derive(Debug, Object)]
pub struct FusionAuthLink {
    /// `null` when the user was created in shadow mode.
    pub user_id: Option<Uuid>,
    /// `created` (Roster created it), `linked` (it existed with the same email) or `skipped`
    /// (shadow mode).
    pub link: Option<String>,
}

/// A user with their groups, permissions, FusionAuth link and latest journal entries.
#[derive(Debug, Object)]
pub struct UserDetail {
    #[oai(flatten)]
    pub user: UserView,
    pub fusionauth: FusionAuthLink,
    pub groups: Vec<UserGroup>,
    /// The union of the permissions of the user's groups.
    pub effective_permissions: Vec<String>,
    /// The latest journal entries about the user, newest first.
    pub recent_journal: Vec<JournalEntry>,
}

/// One page of users.
#[derive(Debug, Object)]
pub struct UserPage {
    pub items: Vec<UserView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum DeletedUser {
    /// The user is gone from FusionAuth and Roster.
    #[oai(status = 204)]
    Deleted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let at = DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap();
        let id = Uuid::now_v7();
        let raw = format!("{}_{id}", at.timestamp_micros());

        assert_eq!(decode_cursor(&raw).unwrap(), (at, id));
        assert!(decode_cursor("12_nope").is_err());
        assert!(decode_cursor("nope").is_err());
    }

    #[test]
    fn profile_requests_must_change_something_valid() {
        let empty = ProfileRequest {
            display_name: None,
            given_name: None,
            family_name: None,
            email: None,
        };
        let bad_email = ProfileRequest {
            email: Some("not-an-address".to_owned()),
            ..ProfileRequest::example()
        };

        assert!(empty.validated().is_err());
        assert!(bad_email.validated().is_err());
        let change = ProfileRequest::example().validated().unwrap();
        assert_eq!(change.fields(), ["display_name", "email"]);
    }

    #[test]
    fn fusionauth_failures_leave_a_clear_status() {
        let down = FusionAuthError::Unavailable {
            retry_after: std::time::Duration::from_secs(1),
            cause: "connect refused".to_owned(),
        };

        assert!(matches!(fusionauth_error(down), AdminError::Unavailable(_)));
        assert!(matches!(
            fusionauth_error(FusionAuthError::NotFound),
            AdminError::Conflict(_)
        ));
    }
}
