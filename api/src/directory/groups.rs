//! Groups of one tenant, their memberships, and effective permissions.
//!
//! Entra changes memberships of synced groups ([`apply_member_changes`]); the platform (the CLI
//! today, the admin API later) creates, configures and deletes groups and manages the members
//! of groups that are not synced. Every change that can move a user in or out of a synced group
//! restores the Basic User invariant ([`safety_net::restore`]) in the same transaction.
//!
//! Locking: a change locks the group row first (`for no key update`, or a SCIM change's update
//! of `last_synced_at`, which takes the same lock and leaves the foreign key checks of other
//! transactions free), then the users it touches in id order
//! ([`safety_net::lock_users`]). Every transaction that changes memberships follows that one
//! order and locks at most one group, so concurrent changes queue instead of deadlocking, and
//! each statement after the locks reads the latest committed memberships: no change is lost.
//! Should Postgres still report a deadlock or a serialization failure, [`GroupError::is_transient`]
//! tells the caller to run the whole transaction again.
//!
//! A group's members are never all loaded to answer a request: counts are computed by Postgres,
//! and member listings are paged and capped at [`MEMBER_PAGE_LIMIT`].

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use tenancy::scope::TenantDb;
use uuid::Uuid;

use super::conflict_of;
use super::journal::{self, Entry, Outcome};
use super::listing::{self, Listing, Page};
use super::safety_net::{self, Moves};
use crate::scim::filter::SqlFilter;
use crate::scim::patch::GroupChange;

/// Columns every group query selects, in `Group`'s order.
const COLUMNS: &str = "id, display_name, external_id, sync_enabled, permissions, is_basic_user, \
    last_synced_at, created_at, updated_at";

/// A synced group is visible over SCIM and counts for the safety net.
const SYNCED: &str = "sync_enabled and external_id is not null";

/// The most members one listing returns. A SCIM read of a larger group returns its first
/// `MEMBER_PAGE_LIMIT` members by id; the admin API pages through the rest.
pub const MEMBER_PAGE_LIMIT: i64 = 1000;

/// At most this many offending member ids are named in an error.
const NAMED_IDS_LIMIT: usize = 20;

/// A group as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Group {
    pub id: Uuid,
    pub display_name: String,
    /// The Entra group's object id.
    pub external_id: Option<String>,
    pub sync_enabled: bool,
    pub permissions: Vec<String>,
    /// The system group of the safety net: never synced, never deleted.
    pub is_basic_user: bool,
    /// When a SCIM request last read or changed the group.
    pub last_synced_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Group {
    /// Visible over SCIM: Sync Enabled with an External Group ID.
    pub fn is_synced(&self) -> bool {
        self.sync_enabled && self.external_id.is_some()
    }
}

/// A group to create from the platform.
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    pub display_name: String,
    pub external_id: Option<String>,
    pub sync_enabled: bool,
    pub permissions: BTreeSet<String>,
}

/// One member as a group listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    /// The user's display name, else their userName.
    pub display: String,
}

/// A group with its member count, for operator listings.
#[derive(Debug, sqlx::FromRow)]
pub struct Counted {
    #[sqlx(flatten)]
    pub group: Group,
    pub member_count: i64,
}

/// What a SCIM membership change did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppliedChanges {
    /// Users who became members.
    pub added: Vec<Uuid>,
    /// Users who stopped being members.
    pub removed: Vec<Uuid>,
    /// Named members whose membership was already as asked (e.g. Entra's re-sent adds).
    pub unchanged: usize,
    /// Attributes the request tried to change that Roster does not take from SCIM.
    pub ignored: Vec<String>,
    /// What the safety net did in response.
    pub safety_net: Moves,
}

/// What can go wrong with a group change, and what the caller should answer.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No such group (for SCIM: none that is synced). SCIM: `404`; admin API: `404`.
    #[error("no such group")]
    NotFound,

    /// Member ids that are not users of this tenant; nothing was applied.
    /// SCIM: `400 invalidValue` naming them; admin API: `422`.
    #[error("{}", unknown_members_detail(.ids))]
    UnknownMembers { ids: Vec<String> },

    /// The change is not allowed on this group (e.g. deleting or syncing Basic User).
    /// Admin API: `409` with this message.
    #[error("{0}")]
    Refused(&'static str),

    /// The External Group ID belongs to another group. Admin API: `409`.
    #[error("another group already has this External Group ID")]
    ExternalIdTaken,

    /// Postgres failed; the caller logs it and answers 500 (503 when unreachable or when
    /// [`GroupError::is_transient`] stays true after retries).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl GroupError {
    /// A deadlock, serialization failure or lock timeout: running the whole transaction again
    /// can succeed.
    pub fn is_transient(&self) -> bool {
        let GroupError::Database(error) = self else {
            return false;
        };
        let code = error.as_database_error().and_then(|e| e.code());
        matches!(code.as_deref(), Some("40001" | "40P01" | "55P03"))
    }
}

fn unknown_members_detail(ids: &[String]) -> String {
    let named: Vec<String> = ids
        .iter()
        .take(NAMED_IDS_LIMIT)
        .map(|id| id.chars().take(64).collect())
        .collect();
    let more = ids.len().saturating_sub(NAMED_IDS_LIMIT);
    let tail = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    format!(
        "these members are not users of this tenant: {}{tail}",
        named.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Reads

pub async fn get(db: &mut TenantDb<'_>, id: Uuid) -> Result<Option<Group>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from {s}.groups where id = $1",
        s = db.schema
    ))
    .bind(id)
    .fetch_optional(&mut *db.conn)
    .await
}

/// The group with this id if it is synced (what SCIM may see).
pub async fn get_synced(db: &mut TenantDb<'_>, id: Uuid) -> Result<Option<Group>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from {s}.groups where id = $1 and {SYNCED}",
        s = db.schema
    ))
    .bind(id)
    .fetch_optional(&mut *db.conn)
    .await
}

/// Synced groups matching `filter` (over the unaliased `groups` table, placeholders from `$1`),
/// oldest first, `limit` from `offset`.
pub async fn list_synced(
    db: &mut TenantDb<'_>,
    filter: Option<&SqlFilter>,
    offset: i64,
    limit: i64,
) -> Result<Page<Group>, sqlx::Error> {
    let synced = Listing {
        table: "groups",
        columns: COLUMNS,
        scope: SYNCED,
    };
    listing::page(db, &synced, filter, offset, limit).await
}

/// Every group with its member count, Basic User first, then by name; `limit` from `offset`.
pub async fn list_with_member_counts(
    db: &mut TenantDb<'_>,
    offset: i64,
    limit: i64,
) -> Result<Vec<Counted>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS}, (select count(*) from {s}.memberships m where m.group_id = groups.id) \
           as member_count \
         from {s}.groups order by is_basic_user desc, lower(display_name), id offset $1 limit $2",
        s = db.schema
    ))
    .bind(offset)
    .bind(limit)
    .fetch_all(&mut *db.conn)
    .await
}

/// Where a keyset page of [`list_counted`] resumes: after this group in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub is_basic_user: bool,
    /// The group's lower-cased name.
    pub name: String,
    pub id: Uuid,
}

impl ListCursor {
    pub fn of(group: &Group) -> Self {
        ListCursor {
            is_basic_user: group.is_basic_user,
            name: group.display_name.to_lowercase(),
            id: group.id,
        }
    }
}

/// Groups with their member counts, Basic User first, then by name, after `after`; at most
/// `limit`. Keyset-paged, so groups created while a client pages are neither skipped nor
/// repeated.
pub async fn list_counted(
    db: &mut TenantDb<'_>,
    after: Option<&ListCursor>,
    limit: i64,
) -> Result<Vec<Counted>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS}, (select count(*) from {s}.memberships m where m.group_id = groups.id) \
           as member_count \
         from {s}.groups \
         where $1::boolean is null \
            or (not is_basic_user, lower(display_name), id) > (not $1, $2::text, $3::uuid) \
         order by not is_basic_user, lower(display_name), id limit $4",
        s = db.schema
    ))
    .bind(after.map(|c| c.is_basic_user))
    .bind(after.map(|c| c.name.as_str()))
    .bind(after.map(|c| c.id))
    .bind(limit)
    .fetch_all(&mut *db.conn)
    .await
}

/// The group with this id and its member count.
pub async fn get_counted(db: &mut TenantDb<'_>, id: Uuid) -> Result<Option<Counted>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS}, (select count(*) from {s}.memberships m where m.group_id = groups.id) \
           as member_count \
         from {s}.groups where id = $1",
        s = db.schema
    ))
    .bind(id)
    .fetch_optional(&mut *db.conn)
    .await
}

/// One of a user's memberships, with what makes the group matter.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserMembership {
    pub group_id: Uuid,
    pub display_name: String,
    /// Synced: Entra manages the membership.
    pub synced: bool,
    pub is_basic_user: bool,
    /// `scim`, `safety_net` or `platform`.
    pub source: String,
}

/// Every group the user belongs to, Basic User first, then by name.
pub async fn memberships_of(
    db: &mut TenantDb<'_>,
    user_id: Uuid,
) -> Result<Vec<UserMembership>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select g.id as group_id, g.display_name, \
           (g.sync_enabled and g.external_id is not null) as synced, g.is_basic_user, m.source \
         from {s}.memberships m join {s}.groups g on g.id = m.group_id where m.user_id = $1 \
         order by not g.is_basic_user, lower(g.display_name), g.id",
        s = db.schema
    ))
    .bind(user_id)
    .fetch_all(&mut *db.conn)
    .await
}

pub async fn member_count(db: &mut TenantDb<'_>, group_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select count(*) from {s}.memberships where group_id = $1",
        s = db.schema
    ))
    .bind(group_id)
    .fetch_one(&mut *db.conn)
    .await
}

/// Members of a group by user id, after `after` (exclusive), at most `limit` (capped at
/// [`MEMBER_PAGE_LIMIT`]).
pub async fn members(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select m.user_id, coalesce(u.display_name, u.user_name) as display \
         from {s}.memberships m join {s}.users u on u.id = m.user_id \
         where m.group_id = $1 and ($2::uuid is null or m.user_id > $2) \
         order by m.user_id limit $3",
        s = db.schema
    ))
    .bind(group_id)
    .bind(after)
    .bind(limit.clamp(0, MEMBER_PAGE_LIMIT))
    .fetch_all(&mut *db.conn)
    .await
}

/// The first [`MEMBER_PAGE_LIMIT`] members (by user id) of each group, in one round trip.
pub async fn first_members(
    db: &mut TenantDb<'_>,
    group_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Member>>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        group_id: Uuid,
        #[sqlx(flatten)]
        member: Member,
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "select g.id as group_id, f.user_id, f.display \
         from unnest($1::uuid[]) as g(id) cross join lateral ( \
           select m.user_id, coalesce(u.display_name, u.user_name) as display \
           from {s}.memberships m join {s}.users u on u.id = m.user_id \
           where m.group_id = g.id order by m.user_id limit $2) f",
        s = db.schema
    ))
    .bind(group_ids)
    .bind(MEMBER_PAGE_LIMIT)
    .fetch_all(&mut *db.conn)
    .await?;
    let mut members: HashMap<Uuid, Vec<Member>> = HashMap::new();
    for row in rows {
        members.entry(row.group_id).or_default().push(row.member);
    }
    Ok(members)
}

/// The union of the permissions of the user's groups, Basic User included.
pub async fn effective_permissions(
    db: &mut TenantDb<'_>,
    user_id: Uuid,
) -> Result<BTreeSet<String>, sqlx::Error> {
    let permissions: Vec<String> = sqlx::query_scalar(&format!(
        "select distinct p from {s}.memberships m join {s}.groups g on g.id = m.group_id \
           cross join unnest(g.permissions) as p \
         where m.user_id = $1",
        s = db.schema
    ))
    .bind(user_id)
    .fetch_all(&mut *db.conn)
    .await?;
    Ok(permissions.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// SCIM membership changes

/// Applies a SCIM PATCH's changes to a synced group, in request order, as deltas: the cost
/// follows the number of members named (and, for remove-all or replace, removed), never the
/// group size. Every named member must be a user of this tenant, else nothing is applied.
/// Restores the safety net for the users touched, stamps `last_synced_at` and journals one entry
/// per membership changed and per ignored attribute, followed by the caller's `summary` of the
/// whole request, in one insert. Must run in one transaction; on [`GroupError::is_transient`]
/// the caller runs it again.
pub async fn apply_member_changes(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    changes: &[GroupChange],
    request_id: &str,
    summary: impl FnOnce(&AppliedChanges) -> Entry,
) -> Result<AppliedChanges, GroupError> {
    lock_and_stamp_synced_group(db, group_id).await?;

    let (named, not_uuids) = named_members(changes);
    let removes_unnamed = changes.iter().any(|change| {
        matches!(
            change,
            GroupChange::RemoveAllMembers | GroupChange::ReplaceMembers(_)
        )
    });
    let mut to_lock = named.clone();
    if removes_unnamed {
        to_lock.extend(current_member_ids(db, group_id).await?);
    }
    let mut unknown = not_uuids;
    unknown.extend(lock_existing(db, &to_lock, &named).await?);
    if !unknown.is_empty() {
        return Err(GroupError::UnknownMembers { ids: unknown });
    }

    let mut applied = AppliedChanges::default();
    for change in changes {
        apply_one(db, group_id, change, &mut applied).await?;
    }
    applied.unchanged = unchanged_count(changes, &applied);

    let mut touched = named;
    touched.extend(&applied.removed);
    let (moves, mut entries) = safety_net::restore_unjournaled(db, &touched, request_id).await?;
    applied.safety_net = moves;
    entries.extend(change_entries(group_id, &applied, request_id));
    entries.push(summary(&applied));
    journal::record(db, &entries).await?;
    Ok(applied)
}

/// Locks a synced group's row and stamps its `last_synced_at`, or says it is not there. The
/// update takes the same row lock `for no key update` would, in the same round trip; a PATCH
/// that fails later rolls the stamp back with everything else.
async fn lock_and_stamp_synced_group(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
) -> Result<(), GroupError> {
    let found: Option<Uuid> = sqlx::query_scalar(&format!(
        "update {s}.groups set last_synced_at = now() where id = $1 and {SYNCED} returning id",
        s = db.schema
    ))
    .bind(group_id)
    .fetch_optional(&mut *db.conn)
    .await?;
    found.map(|_| ()).ok_or(GroupError::NotFound)
}

/// The member ids the changes name, sorted and unique, and those that are no UUID (and so
/// cannot be users).
fn named_members(changes: &[GroupChange]) -> (Vec<Uuid>, Vec<String>) {
    let mut ids = Vec::new();
    let mut not_uuids = Vec::new();
    for raw in changes.iter().flat_map(change_ids) {
        match Uuid::parse_str(raw) {
            Ok(id) => ids.push(id),
            Err(_) => not_uuids.push(raw.clone()),
        }
    }
    (sorted_unique(&ids), not_uuids)
}

fn change_ids(change: &GroupChange) -> &[String] {
    match change {
        GroupChange::AddMembers(ids)
        | GroupChange::RemoveMembers(ids)
        | GroupChange::ReplaceMembers(ids) => ids,
        GroupChange::RemoveAllMembers | GroupChange::Ignored { .. } => &[],
    }
}

fn parse_ids(ids: &[String]) -> Vec<Uuid> {
    ids.iter()
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}

async fn current_member_ids(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select user_id from {s}.memberships where group_id = $1",
        s = db.schema
    ))
    .bind(group_id)
    .fetch_all(&mut *db.conn)
    .await
}

/// Locks the users of `to_lock`; returns the ids of `required` that are not users.
async fn lock_existing(
    db: &mut TenantDb<'_>,
    to_lock: &[Uuid],
    required: &[Uuid],
) -> Result<Vec<String>, sqlx::Error> {
    let existing: HashSet<Uuid> = safety_net::lock_users(db, to_lock)
        .await?
        .into_iter()
        .collect();
    Ok(required
        .iter()
        .filter(|id| !existing.contains(id))
        .map(Uuid::to_string)
        .collect())
}

async fn apply_one(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    change: &GroupChange,
    applied: &mut AppliedChanges,
) -> Result<(), sqlx::Error> {
    match change {
        GroupChange::AddMembers(ids) => {
            let added = insert_members(db, group_id, &parse_ids(ids), "scim").await?;
            note_added(applied, added);
        }
        // Only the listed members go, whatever the dialect (see `patch::group_changes`).
        GroupChange::RemoveMembers(ids) => {
            let removed = delete_members(db, group_id, &parse_ids(ids)).await?;
            note_removed(applied, removed);
        }
        GroupChange::RemoveAllMembers => {
            let removed = delete_all_members(db, group_id).await?;
            note_removed(applied, removed);
        }
        GroupChange::ReplaceMembers(ids) => {
            let ids = parse_ids(ids);
            let removed = delete_members_except(db, group_id, &ids).await?;
            note_removed(applied, removed);
            let added = insert_members(db, group_id, &ids, "scim").await?;
            note_added(applied, added);
        }
        GroupChange::Ignored { attribute } => applied.ignored.push(attribute.clone()),
    }
    Ok(())
}

/// Records additions; a user removed earlier in the same request and added back is unchanged.
fn note_added(applied: &mut AppliedChanges, added: Vec<Uuid>) {
    for id in added {
        match applied.removed.iter().position(|r| *r == id) {
            Some(index) => {
                applied.removed.swap_remove(index);
            }
            None => applied.added.push(id),
        }
    }
}

/// Records removals; a user added earlier in the same request and removed again is unchanged.
fn note_removed(applied: &mut AppliedChanges, removed: Vec<Uuid>) {
    for id in removed {
        match applied.added.iter().position(|a| *a == id) {
            Some(index) => {
                applied.added.swap_remove(index);
            }
            None => applied.removed.push(id),
        }
    }
}

fn unchanged_count(changes: &[GroupChange], applied: &AppliedChanges) -> usize {
    let named: HashSet<Uuid> = changes
        .iter()
        .flat_map(|change| parse_ids(change_ids(change)))
        .collect();
    let changed = applied
        .added
        .iter()
        .chain(&applied.removed)
        .filter(|id| named.contains(id))
        .count();
    named.len().saturating_sub(changed)
}

async fn insert_members(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    user_ids: &[Uuid],
    source: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "insert into {s}.memberships (group_id, user_id, source) \
         select $1, u, $3 from unnest($2::uuid[]) as u \
         on conflict do nothing returning user_id",
        s = db.schema
    ))
    .bind(group_id)
    .bind(user_ids)
    .bind(source)
    .fetch_all(&mut *db.conn)
    .await
}

async fn delete_members(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    user_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "delete from {s}.memberships where group_id = $1 and user_id = any($2) returning user_id",
        s = db.schema
    ))
    .bind(group_id)
    .bind(user_ids)
    .fetch_all(&mut *db.conn)
    .await
}

async fn delete_all_members(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "delete from {s}.memberships where group_id = $1 returning user_id",
        s = db.schema
    ))
    .bind(group_id)
    .fetch_all(&mut *db.conn)
    .await
}

async fn delete_members_except(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    keep: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "delete from {s}.memberships where group_id = $1 and user_id <> all($2) returning user_id",
        s = db.schema
    ))
    .bind(group_id)
    .bind(keep)
    .fetch_all(&mut *db.conn)
    .await
}

/// One entry per membership changed and per ignored attribute. The volume follows what
/// changed, which a request bounds by `patch::MAX_MEMBER_VALUES` except for remove-all and
/// replace, whose entries follow the members they removed.
fn change_entries(group_id: Uuid, applied: &AppliedChanges, request_id: &str) -> Vec<Entry> {
    let entry = |outcome: Outcome, detail: String| {
        Entry::new(request_id, "scim.groups.patch", outcome, 204)
            .group(group_id)
            .detail(detail)
    };
    let added = applied
        .added
        .iter()
        .map(|user| entry(Outcome::Changed, "member added".to_owned()).user(*user));
    let removed = applied
        .removed
        .iter()
        .map(|user| entry(Outcome::Changed, "member removed".to_owned()).user(*user));
    let ignored = applied.ignored.iter().map(|attribute| {
        entry(
            Outcome::Ignored,
            format!("{attribute} is managed in the platform; not changed"),
        )
    });
    added.chain(removed).chain(ignored).collect()
}

// ---------------------------------------------------------------------------------------------
// Platform changes (CLI now, admin API later)

/// Creates a group. A new group has no members, so the safety net has nothing to do.
pub async fn create(db: &mut TenantDb<'_>, group: &NewGroup) -> Result<Group, GroupError> {
    let display_name = valid_name(&group.display_name)?;
    let external_id = group.external_id.as_deref().map(valid_external_id);
    let created = sqlx::query_as(&format!(
        "insert into {s}.groups (id, display_name, external_id, sync_enabled, permissions) \
         values ($1, $2, $3, $4, $5) returning {COLUMNS}",
        s = db.schema
    ))
    .bind(Uuid::now_v7())
    .bind(display_name)
    .bind(external_id.transpose()?)
    .bind(group.sync_enabled)
    .bind(group.permissions.iter().collect::<Vec<_>>())
    .fetch_one(&mut *db.conn)
    .await;
    created.map_err(taken_or_database)
}

pub async fn rename(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    display_name: &str,
) -> Result<Group, GroupError> {
    let display_name = valid_name(display_name)?;
    let renamed: Option<Group> = sqlx::query_as(&format!(
        "update {s}.groups set display_name = $2, updated_at = now() where id = $1 \
         returning {COLUMNS}",
        s = db.schema
    ))
    .bind(group_id)
    .bind(display_name)
    .fetch_optional(&mut *db.conn)
    .await?;
    renamed.ok_or(GroupError::NotFound)
}

/// Sets or clears the External Group ID. When that makes the group start or stop being
/// synced, the safety net is restored for all its members.
pub async fn set_external_id(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    external_id: Option<&str>,
    request_id: &str,
) -> Result<Group, GroupError> {
    let external_id = external_id.map(valid_external_id).transpose()?;
    let before = lock_group(db, group_id).await?;
    if before.is_basic_user && external_id.is_some() {
        return Err(GroupError::Refused("the Basic User group cannot be synced"));
    }
    let updated = sqlx::query_as(&format!(
        "update {s}.groups set external_id = $2, updated_at = now() where id = $1 \
         returning {COLUMNS}",
        s = db.schema
    ))
    .bind(group_id)
    .bind(external_id)
    .fetch_one(&mut *db.conn)
    .await
    .map_err(taken_or_database)?;
    restore_if_sync_changed(db, &before, &updated, request_id).await?;
    Ok(updated)
}

/// Turns Sync Enabled on or off; the safety net is restored for all members when that
/// changes whether the group is synced.
pub async fn set_sync(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    enabled: bool,
    request_id: &str,
) -> Result<Group, GroupError> {
    let before = lock_group(db, group_id).await?;
    if before.is_basic_user && enabled {
        return Err(GroupError::Refused("the Basic User group cannot be synced"));
    }
    let updated: Group = sqlx::query_as(&format!(
        "update {s}.groups set sync_enabled = $2, updated_at = now() where id = $1 \
         returning {COLUMNS}",
        s = db.schema
    ))
    .bind(group_id)
    .bind(enabled)
    .fetch_one(&mut *db.conn)
    .await?;
    restore_if_sync_changed(db, &before, &updated, request_id).await?;
    Ok(updated)
}

/// Replaces the group's permissions.
pub async fn set_permissions(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    permissions: &BTreeSet<String>,
) -> Result<Group, GroupError> {
    let updated: Option<Group> = sqlx::query_as(&format!(
        "update {s}.groups set permissions = $2, updated_at = now() where id = $1 \
         returning {COLUMNS}",
        s = db.schema
    ))
    .bind(group_id)
    .bind(permissions.iter().collect::<Vec<_>>())
    .fetch_optional(&mut *db.conn)
    .await?;
    updated.ok_or(GroupError::NotFound)
}

/// Deletes a group and its memberships; members of a synced group get the safety net.
/// Basic User cannot be deleted.
pub async fn delete(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    request_id: &str,
) -> Result<Group, GroupError> {
    let group = lock_group(db, group_id).await?;
    if group.is_basic_user {
        return Err(GroupError::Refused(
            "the Basic User group is a system group and cannot be deleted",
        ));
    }
    let members = if group.is_synced() {
        lock_members(db, group_id).await?
    } else {
        Vec::new()
    };
    sqlx::query(&format!(
        "delete from {s}.groups where id = $1",
        s = db.schema
    ))
    .bind(group_id)
    .execute(&mut *db.conn)
    .await?;
    safety_net::restore(db, &members, request_id).await?;
    Ok(group)
}

/// Adds users to a group that is not synced (the platform's own memberships).
/// Returns the users who were not members yet.
pub async fn add_platform_members(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    user_ids: &[Uuid],
    request_id: &str,
) -> Result<Vec<Uuid>, GroupError> {
    lock_platform_group(db, group_id).await?;
    let ids = sorted_unique(user_ids);
    require_users(db, &ids).await?;
    let added = insert_members(db, group_id, &ids, "platform").await?;
    safety_net::restore(db, &ids, request_id).await?;
    Ok(added)
}

/// Removes users from a group that is not synced. Returns the users who were members.
pub async fn remove_platform_members(
    db: &mut TenantDb<'_>,
    group_id: Uuid,
    user_ids: &[Uuid],
    request_id: &str,
) -> Result<Vec<Uuid>, GroupError> {
    lock_platform_group(db, group_id).await?;
    let ids = sorted_unique(user_ids);
    require_users(db, &ids).await?;
    let removed = delete_members(db, group_id, &ids).await?;
    safety_net::restore(db, &ids, request_id).await?;
    Ok(removed)
}

/// Locks the users of `ids`, which must all exist.
async fn require_users(db: &mut TenantDb<'_>, ids: &[Uuid]) -> Result<(), GroupError> {
    let unknown = lock_existing(db, ids, ids).await?;
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(GroupError::UnknownMembers { ids: unknown })
    }
}

/// Locks any group's row, or says it is not there.
async fn lock_group(db: &mut TenantDb<'_>, group_id: Uuid) -> Result<Group, GroupError> {
    let group: Option<Group> = sqlx::query_as(&format!(
        "select {COLUMNS} from {s}.groups where id = $1 for no key update",
        s = db.schema
    ))
    .bind(group_id)
    .fetch_optional(&mut *db.conn)
    .await?;
    group.ok_or(GroupError::NotFound)
}

/// Locks a group whose members the platform manages: neither synced nor Basic User.
async fn lock_platform_group(db: &mut TenantDb<'_>, group_id: Uuid) -> Result<(), GroupError> {
    let group = lock_group(db, group_id).await?;
    if group.is_basic_user {
        return Err(GroupError::Refused(
            "Basic User membership is kept by the safety net and cannot be changed directly",
        ));
    }
    if group.is_synced() {
        return Err(GroupError::Refused(
            "the members of a synced group are managed by Entra",
        ));
    }
    Ok(())
}

/// Locks the group's members (the group row is already locked, so the set cannot change).
async fn lock_members(db: &mut TenantDb<'_>, group_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    let members = current_member_ids(db, group_id).await?;
    safety_net::lock_users(db, &members).await
}

async fn restore_if_sync_changed(
    db: &mut TenantDb<'_>,
    before: &Group,
    after: &Group,
    request_id: &str,
) -> Result<(), sqlx::Error> {
    if before.is_synced() != after.is_synced() {
        let members = lock_members(db, after.id).await?;
        safety_net::restore(db, &members, request_id).await?;
    }
    Ok(())
}

fn sorted_unique(ids: &[Uuid]) -> Vec<Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn valid_name(name: &str) -> Result<&str, GroupError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(GroupError::Refused("a group needs a non-empty name"));
    }
    Ok(name)
}

fn valid_external_id(external_id: &str) -> Result<&str, GroupError> {
    let external_id = external_id.trim();
    if external_id.is_empty() {
        return Err(GroupError::Refused(
            "an External Group ID cannot be empty; clear it instead",
        ));
    }
    Ok(external_id)
}

/// The only unique constraint a group change can hit is the External Group ID's.
fn taken_or_database(error: sqlx::Error) -> GroupError {
    match conflict_of(&error) {
        Some(_) => GroupError::ExternalIdTaken,
        None => GroupError::Database(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn ids_that_are_no_uuid_are_set_apart() {
        let good = Uuid::new_v4();
        let changes = [
            GroupChange::AddMembers(ids(&[&good.to_string(), "f648f8d5ea4e4cd38e9c"])),
            GroupChange::RemoveMembers(ids(&["u1091"])),
        ];

        let (uuids, not_uuids) = named_members(&changes);

        assert_eq!(uuids, vec![good]);
        assert_eq!(not_uuids, ids(&["f648f8d5ea4e4cd38e9c", "u1091"]));
        let error = GroupError::UnknownMembers { ids: not_uuids };
        assert_eq!(
            error.to_string(),
            "these members are not users of this tenant: f648f8d5ea4e4cd38e9c, u1091"
        );
    }

    #[test]
    fn named_members_are_sorted_and_unique() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let changes = [
            GroupChange::AddMembers(ids(&[&b.to_string(), &a.to_string()])),
            GroupChange::ReplaceMembers(ids(&[&a.to_string()])),
            GroupChange::RemoveAllMembers,
            GroupChange::Ignored {
                attribute: "displayName".to_owned(),
            },
        ];

        let mut expected = vec![a, b];
        expected.sort_unstable();
        assert_eq!(named_members(&changes), (expected, Vec::new()));
    }

    #[test]
    fn error_detail_names_at_most_twenty_ids_and_bounds_their_length() {
        let many: Vec<String> = (0..25).map(|n| format!("id-{n}")).collect();
        let long = vec!["x".repeat(500)];

        let many = unknown_members_detail(&many);
        let long = unknown_members_detail(&long);

        assert!(many.contains("id-19") && !many.contains("id-20"), "{many}");
        assert!(many.ends_with("(and 5 more)"), "{many}");
        assert!(long.len() < 120, "{long}");
    }

    #[test]
    fn a_member_removed_and_added_back_in_one_request_is_unchanged() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut applied = AppliedChanges::default();

        note_removed(&mut applied, vec![a, b]);
        note_added(&mut applied, vec![a]);

        assert_eq!(applied.removed, vec![b]);
        assert!(applied.added.is_empty());
        let changes = [
            GroupChange::RemoveMembers(ids(&[&a.to_string(), &b.to_string()])),
            GroupChange::AddMembers(ids(&[&a.to_string()])),
        ];
        assert_eq!(unchanged_count(&changes, &applied), 1);
    }

    #[test]
    fn only_deadlocks_serialization_failures_and_lock_timeouts_are_transient() {
        assert!(!GroupError::NotFound.is_transient());
        assert!(!GroupError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!GroupError::UnknownMembers { ids: Vec::new() }.is_transient());
    }
}
