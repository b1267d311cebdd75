//! `/admin/v1/tenants/{slug}/groups`: create, configure, list and delete a tenant's groups.
//!
//! Groups are managed in the platform, never from Entra: here an operator names a group, links
//! it to an Entra group (its External Group ID), turns Sync Enabled on so Entra's membership
//! changes apply, and sets the permissions its members get. Every change runs through the
//! directory's group functions, which restore the Basic User invariant in the same transaction,
//! and is audited there too. Basic User is the safety net's system group: it cannot be synced,
//! deleted or given members by hand.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::{json, Map, Value};
use tenancy::audit::{record, AuditEvent};
use tenancy::scope::TenantDb;
use tenancy::{tenants, Tenant};
use uuid::Uuid;

use super::audit::event;
use super::auth::{Access, Admin, AdminToken};
use super::error::{AdminError, AdminResult, Change, Conflicting, Create, Lookup};
use super::page;
use crate::directory::groups::{self, Counted, GroupError, ListCursor, NewGroup};
use crate::openapi::ApiTags;
use crate::state::AppState;

/// Longest group name, External Group ID or permission accepted.
const MAX_TEXT: usize = 256;

pub struct GroupsApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Groups")]
impl GroupsApi {
    /// Create a group
    ///
    /// Creates a platform group with no members. To sync it from Entra, give it the Entra
    /// group's object id as `external_id` and set `sync_enabled`; its membership then belongs
    /// to Entra. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/groups",
        method = "post",
        operation_id = "createGroup"
    )]
    async fn create_group(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        body: Json<NewGroupRequest>,
    ) -> AdminResult<CreatedGroup, Create> {
        admin.authorize(Access::Write, &slug)?;

        let new_group = body.0.validated()?;
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        let group = groups::create(&mut tx.db(), &new_group)
            .await
            .map_err(group_error)?;
        let detail = json!({
            "display_name": group.display_name,
            "external_id": group.external_id,
            "sync_enabled": group.sync_enabled,
            "permissions": group.permissions,
        });
        audit(
            &mut tx.db(),
            &admin,
            "group.create",
            &tenant,
            group.id,
            detail,
        )
        .await?;
        tx.commit().await?;

        let counted = Counted {
            group,
            member_count: 0,
        };
        Ok(CreatedGroup::Created(Json(GroupView::new(
            &counted,
            &tenant,
            Utc::now(),
        ))))
    }

    /// List groups
    ///
    /// Every group of the tenant, Basic User first, then by name, a page at a time: the SCIM
    /// badge (`synced`), member count, when Entra last read or changed it and whether that is
    /// too long ago (`stale`). Needs `roster:read`.
    #[oai(
        path = "/tenants/:slug/groups",
        method = "get",
        operation_id = "listGroups"
    )]
    async fn list_groups(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResult<Json<GroupPage>, Change> {
        admin.authorize(Access::Read, &slug)?;

        let after = cursor.0.as_deref().map(decode_cursor).transpose()?;
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let limit = page::limit(limit.0);
        let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
        let rows =
            groups::list_counted(&mut conn.db(), after.as_ref(), page::fetch_size(limit)).await?;
        conn.done();
        let (rows, next_cursor) = page::finish(rows, limit, |row| {
            encode_cursor(&ListCursor::of(&row.group))
        });

        let now = Utc::now();
        Ok(Json(GroupPage {
            items: rows
                .iter()
                .map(|row| GroupView::new(row, &tenant, now))
                .collect(),
            next_cursor,
        }))
    }

    /// Get a group
    ///
    /// One group with its SCIM badge, member count, last synced time and stale flag. Needs
    /// `roster:read`.
    #[oai(
        path = "/tenants/:slug/groups/:group_id",
        method = "get",
        operation_id = "getGroup"
    )]
    async fn get_group(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        group_id: Path<Uuid>,
    ) -> AdminResult<Json<GroupView>, Lookup> {
        admin.authorize(Access::Read, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;
        let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
        let group = require_counted(&mut conn.db(), group_id.0).await?;
        conn.done();

        Ok(Json(GroupView::new(&group, &tenant, Utc::now())))
    }

    /// Update a group
    ///
    /// Changes only the fields present, in one transaction: `display_name` renames;
    /// `external_id` links the group to an Entra group (`null` unlinks it); `sync_enabled`
    /// turns syncing on or off; `permissions` replaces the permission list. When the group
    /// starts or stops being synced, its members' Basic User memberships are restored at once:
    /// members who are left in no synced group fall back to Basic User. Basic User cannot be
    /// synced (409); an External Group ID another group holds is 409. Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/groups/:group_id",
        method = "patch",
        operation_id = "updateGroup"
    )]
    async fn update_group(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        group_id: Path<Uuid>,
        body: Json<GroupUpdate>,
    ) -> AdminResult<Json<GroupView>, Conflicting> {
        admin.authorize(Access::Write, &slug)?;

        let update = body.0.validated()?;
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        require_counted(&mut tx.db(), group_id.0).await?;
        apply_update(&mut tx.db(), group_id.0, &update, admin.request_id())
            .await
            .map_err(group_error)?;
        let group = require_counted(&mut tx.db(), group_id.0).await?;
        audit(
            &mut tx.db(),
            &admin,
            "group.update",
            &tenant,
            group_id.0,
            update.detail(),
        )
        .await?;
        tx.commit().await?;

        Ok(Json(GroupView::new(&group, &tenant, Utc::now())))
    }

    /// Delete a group
    ///
    /// Deletes the group and its memberships. Members of a synced group who are left in no
    /// synced group fall back to Basic User in the same transaction. Basic User is a system
    /// group and cannot be deleted (409). Needs `roster:write`.
    #[oai(
        path = "/tenants/:slug/groups/:group_id",
        method = "delete",
        operation_id = "deleteGroup"
    )]
    async fn delete_group(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        group_id: Path<Uuid>,
    ) -> AdminResult<DeletedGroup, Conflicting> {
        admin.authorize(Access::Write, &slug)?;

        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut tx = tenancy::scope::begin(&state.db, &tenant.schema).await?;
        let group = groups::delete(&mut tx.db(), group_id.0, admin.request_id())
            .await
            .map_err(group_error)?;
        let detail = json!({ "display_name": group.display_name, "synced": group.is_synced() });
        audit(
            &mut tx.db(),
            &admin,
            "group.delete",
            &tenant,
            group.id,
            detail,
        )
        .await?;
        tx.commit().await?;

        Ok(DeletedGroup::Deleted)
    }
}

/// Records an audited change to the group `group_id` inside the caller's transaction.
pub(super) async fn audit(
    db: &mut TenantDb<'_>,
    admin: &Admin,
    action: &str,
    tenant: &Tenant,
    group_id: Uuid,
    detail: Value,
) -> Result<(), AdminError> {
    let audited = AuditEvent {
        target: Some(format!("group:{group_id}")),
        ..event(admin, action, tenant, detail)
    };
    record(&mut *db.conn, audited).await?;
    Ok(())
}

/// The group with its member count, or 404.
pub(super) async fn require_counted(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
) -> Result<Counted, AdminError> {
    groups::get_counted(db, group_id)
        .await?
        .ok_or_else(|| no_group(group_id))
}

fn no_group(group_id: Uuid) -> AdminError {
    AdminError::NotFound(format!("no group {group_id} in this tenant"))
}

/// What the admin API answers for a failed group change.
pub(super) fn group_error(error: GroupError) -> AdminError {
    match error {
        GroupError::NotFound => AdminError::NotFound("no such group in this tenant".to_owned()),
        GroupError::UnknownMembers { .. } => AdminError::BadRequest(error.to_string()),
        GroupError::Refused(message) => AdminError::Conflict(message.to_owned()),
        GroupError::ExternalIdTaken => AdminError::Conflict(error.to_string()),
        error if error.is_transient() => {
            tracing::warn!(error = %error, "group change collided with a concurrent change");
            AdminError::Unavailable("a concurrent change to the same group won; retry shortly")
        }
        GroupError::Database(error) => AdminError::from(error),
    }
}

/// Applies the fields of `update` that are present, in a fixed order.
async fn apply_update(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    update: &ValidUpdate,
    request_id: &str,
) -> Result<(), GroupError> {
    if let Some(name) = &update.display_name {
        groups::rename(db, group_id, name).await?;
    }
    if let Some(external_id) = &update.external_id {
        groups::set_external_id(db, group_id, external_id.as_deref(), request_id).await?;
    }
    if let Some(enabled) = update.sync_enabled {
        groups::set_sync(db, group_id, enabled, request_id).await?;
    }
    if let Some(permissions) = &update.permissions {
        groups::set_permissions(db, group_id, permissions).await?;
    }
    Ok(())
}

/// Whether Entra has not touched a synced group for longer than the tenant's threshold. A
/// synced group Entra never touched is stale too; a group that is not synced never is.
fn is_stale(group: &groups::Group, stale_after_secs: i32, now: DateTime<Utc>) -> bool {
    if !group.is_synced() {
        return false;
    }
    let threshold = chrono::Duration::seconds(i64::from(stale_after_secs));
    group
        .last_synced_at
        .is_none_or(|at| now.signed_duration_since(at) > threshold)
}

/// A page cursor: the last group's place in the listing order, opaque to clients.
fn encode_cursor(cursor: &ListCursor) -> String {
    let basic = if cursor.is_basic_user { '1' } else { '0' };
    URL_SAFE_NO_PAD.encode(format!("{basic}{}{}", cursor.id, cursor.name))
}

fn decode_cursor(raw: &str) -> Result<ListCursor, AdminError> {
    let invalid = || AdminError::BadRequest("invalid cursor".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let is_basic_user = match text.get(..1) {
        Some("1") => true,
        Some("0") => false,
        _ => return Err(invalid()),
    };
    let id = text
        .get(1..37)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(invalid)?;
    let name = text.get(37..).ok_or_else(invalid)?.to_owned();
    Ok(ListCursor {
        is_basic_user,
        name,
        id,
    })
}

/// A trimmed, non-empty text of at most [`MAX_TEXT`] characters, or 400 naming `field`.
pub(super) fn required_text(value: &str, field: &str) -> Result<String, AdminError> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_TEXT {
        return Err(AdminError::BadRequest(format!(
            "{field} must be 1 to {MAX_TEXT} characters"
        )));
    }
    Ok(value.to_owned())
}

fn valid_permissions(permissions: &[String]) -> Result<BTreeSet<String>, AdminError> {
    permissions
        .iter()
        .map(|permission| required_text(permission, "each permission"))
        .collect()
}

/// A group to create.
#[derive(Debug, Object)]
#[oai(example)]
pub struct NewGroupRequest {
    /// 1 to 256 characters.
    pub display_name: String,
    /// The Entra group's object id. Needed, with `sync_enabled`, for the group to sync.
    pub external_id: Option<String>,
    /// Whether Entra manages the group's membership (once it has an External Group ID).
    #[oai(default)]
    pub sync_enabled: bool,
    /// What members of the group may do in the platform.
    #[oai(default)]
    pub permissions: Vec<String>,
}

impl NewGroupRequest {
    fn validated(self) -> Result<NewGroup, AdminError> {
        Ok(NewGroup {
            display_name: required_text(&self.display_name, "display_name")?,
            external_id: self
                .external_id
                .map(|id| required_text(&id, "external_id"))
                .transpose()?,
            sync_enabled: self.sync_enabled,
            permissions: valid_permissions(&self.permissions)?,
        })
    }
}

impl Example for NewGroupRequest {
    fn example() -> Self {
        NewGroupRequest {
            display_name: "Finance".to_owned(),
            external_id: Some("0f3c9a52-5f1e-4d8a-9a43-8f2b1c7d6e10".to_owned()),
            sync_enabled: true,
            permissions: vec!["invoices:read".to_owned(), "invoices:approve".to_owned()],
        }
    }
}

/// The changes to make to a group; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(example)]
pub struct GroupUpdate {
    pub display_name: Option<String>,
    /// The Entra group's object id; `null` unlinks the group (it stops syncing).
    pub external_id: MaybeUndefined<String>,
    pub sync_enabled: Option<bool>,
    /// Replaces the whole permission list.
    pub permissions: Option<Vec<String>>,
}

impl Example for GroupUpdate {
    fn example() -> Self {
        GroupUpdate {
            display_name: None,
            external_id: MaybeUndefined::Undefined,
            sync_enabled: Some(false),
            permissions: None,
        }
    }
}

/// A checked [`GroupUpdate`].
struct ValidUpdate {
    display_name: Option<String>,
    external_id: Option<Option<String>>,
    sync_enabled: Option<bool>,
    permissions: Option<BTreeSet<String>>,
}

impl GroupUpdate {
    fn validated(self) -> Result<ValidUpdate, AdminError> {
        let external_id = match self.external_id {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(id) => Some(Some(required_text(&id, "external_id")?)),
        };
        Ok(ValidUpdate {
            display_name: self
                .display_name
                .map(|name| required_text(&name, "display_name"))
                .transpose()?,
            external_id,
            sync_enabled: self.sync_enabled,
            permissions: self
                .permissions
                .map(|permissions| valid_permissions(&permissions))
                .transpose()?,
        })
    }
}

impl ValidUpdate {
    /// The audit detail: the fields changed and their new values (none is personal data).
    fn detail(&self) -> Value {
        let mut detail = Map::new();
        if let Some(name) = &self.display_name {
            detail.insert("display_name".to_owned(), json!(name));
        }
        if let Some(external_id) = &self.external_id {
            detail.insert("external_id".to_owned(), json!(external_id));
        }
        if let Some(enabled) = self.sync_enabled {
            detail.insert("sync_enabled".to_owned(), json!(enabled));
        }
        if let Some(permissions) = &self.permissions {
            detail.insert("permissions".to_owned(), json!(permissions));
        }
        Value::Object(detail)
    }
}

/// A group as the admin API shows it.
#[derive(Debug, Object)]
#[oai(rename = "Group")]
pub struct GroupView {
    pub id: Uuid,
    pub display_name: String,
    /// The Entra group's object id.
    pub external_id: Option<String>,
    pub sync_enabled: bool,
    /// The SCIM badge: Sync Enabled with an External Group ID. Entra sees the group and
    /// manages its members.
    pub synced: bool,
    /// The Basic User group: the safety net's system group, never synced or deleted.
    pub system: bool,
    pub permissions: Vec<String>,
    pub member_count: i64,
    /// When a SCIM request last read or changed the group.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// A synced group that Entra has not touched for longer than the tenant's
    /// `stale_after_secs` (or never): its provisioning job may be stopped or failing.
    pub stale: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl GroupView {
    pub fn new(counted: &Counted, tenant: &Tenant, now: DateTime<Utc>) -> Self {
        let group = &counted.group;
        GroupView {
            id: group.id,
            display_name: group.display_name.clone(),
            external_id: group.external_id.clone(),
            sync_enabled: group.sync_enabled,
            synced: group.is_synced(),
            system: group.is_basic_user,
            permissions: group.permissions.clone(),
            member_count: counted.member_count,
            last_synced_at: group.last_synced_at,
            stale: is_stale(group, tenant.stale_after_secs, now),
            created_at: group.created_at,
            updated_at: group.updated_at,
        }
    }
}

/// One page of groups.
#[derive(Debug, Object)]
pub struct GroupPage {
    pub items: Vec<GroupView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedGroup {
    /// The group exists, with no members.
    #[oai(status = 201)]
    Created(Json<GroupView>),
}

#[derive(ApiResponse)]
pub enum DeletedGroup {
    /// The group and its memberships are gone.
    #[oai(status = 204)]
    Deleted,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(synced: bool, last_synced_at: Option<DateTime<Utc>>) -> groups::Group {
        let now = Utc::now();
        groups::Group {
            id: Uuid::now_v7(),
            display_name: "Finance".to_owned(),
            external_id: synced.then(|| "entra-id".to_owned()),
            sync_enabled: synced,
            permissions: Vec::new(),
            is_basic_user: false,
            last_synced_at,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn only_synced_groups_untouched_past_the_threshold_are_stale() {
        let now = Utc::now();
        let recent = Some(now - chrono::Duration::minutes(40));
        let old = Some(now - chrono::Duration::hours(3));

        assert!(!is_stale(&group(true, recent), 7200, now));
        assert!(is_stale(&group(true, old), 7200, now));
        assert!(is_stale(&group(true, None), 7200, now));
        assert!(!is_stale(&group(false, None), 7200, now));
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = ListCursor {
            is_basic_user: false,
            name: "finance & ops: eu".to_owned(),
            id: Uuid::now_v7(),
        };

        assert_eq!(decode_cursor(&encode_cursor(&cursor)).unwrap(), cursor);
        assert!(decode_cursor("not base64!").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("2abc")).is_err());
    }

    #[test]
    fn updates_validate_and_audit_only_present_fields() {
        let update = GroupUpdate {
            display_name: Some("  Finance ".to_owned()),
            external_id: MaybeUndefined::Null,
            sync_enabled: None,
            permissions: None,
        };

        let valid = update.validated().unwrap();

        assert_eq!(valid.display_name.as_deref(), Some("Finance"));
        assert_eq!(
            valid.detail(),
            json!({"display_name": "Finance", "external_id": null})
        );
        let blank = GroupUpdate {
            display_name: Some(" ".to_owned()),
            ..GroupUpdate::example()
        };
        assert!(matches!(blank.validated(), Err(AdminError::BadRequest(_))));
    }
}
