//! The Basic User safety net.
//!
//! The invariant: an active user is a member of the tenant's Basic User group if and only if
//! they belong to no synced group (Sync Enabled with an External Group ID). It is restored in
//! the same transaction as every change that could break it, for exactly the users the change
//! touched, and every move it makes is journaled.
//!
//! Callers must have locked the touched users' rows first ([`lock_users`]): two concurrent
//! transactions changing one user's memberships would otherwise each decide from a snapshot
//! without the other's change, and both commit a wrong answer.

use tenancy::scope::TenantDb;
use tenancy::SchemaName;
use uuid::Uuid;

use super::journal::{self, Entry, Outcome};

/// That user `u` holds a synced membership: the group is visible over SCIM.
fn synced_membership(s: &SchemaName) -> String {
    format!(
        "exists (select 1 from {s}.memberships sm join {s}.groups sg \
         on sg.id = sm.group_id where sm.user_id = u.id and sg.sync_enabled \
         and sg.external_id is not null)"
    )
}

/// Locks the rows of `user_ids` in a stable order, so transactions that touch overlapping
/// users serialise instead of deadlocking. Returns the ids that exist.
pub async fn lock_users(
    db: &mut TenantDb<'_>,
    user_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids = user_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query_scalar(&format!(
        "select id from {s}.users where id = any($1) order by id for update",
        s = db.schema
    ))
    .bind(&ids)
    .fetch_all(&mut *db.conn)
    .await
}

/// Who the safety net moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moves {
    pub placed: Vec<Uuid>,
    pub released: Vec<Uuid>,
}

/// Restores the invariant for `user_ids` and journals each move under `request_id`.
pub async fn restore(
    db: &mut TenantDb<'_>,
    user_ids: &[Uuid],
    request_id: &str,
) -> Result<Moves, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(Moves::default());
    }
    let placed: Vec<Uuid> = sqlx::query_scalar(&format!(
        "insert into {s}.memberships (group_id, user_id, source) \
         select b.id, u.id, 'safety_net' from {s}.users u \
           cross join (select id from {s}.groups where is_basic_user) b \
         where u.id = any($1) and u.active and not {synced} \
         on conflict do nothing returning user_id",
        s = db.schema,
        synced = synced_membership(db.schema),
    ))
    .bind(user_ids)
    .fetch_all(&mut *db.conn)
    .await?;
    let released: Vec<Uuid> = sqlx::query_scalar(&format!(
        "delete from {s}.memberships m using {s}.groups b, {s}.users u \
         where b.is_basic_user and m.group_id = b.id and m.user_id = u.id \
           and u.id = any($1) and (not u.active or {synced}) \
         returning m.user_id",
        s = db.schema,
        synced = synced_membership(db.schema),
    ))
    .bind(user_ids)
    .fetch_all(&mut *db.conn)
    .await?;

    journal_moves(db, &placed, &released, request_id).await?;
    Ok(Moves { placed, released })
}

async fn journal_moves(
    db: &mut TenantDb<'_>,
    placed: &[Uuid],
    released: &[Uuid],
    request_id: &str,
) -> Result<(), sqlx::Error> {
    let basic_user: Option<Uuid> = sqlx::query_scalar(&format!(
        "select id from {s}.groups where is_basic_user",
        s = db.schema
    ))
    .fetch_optional(&mut *db.conn)
    .await?;
    let entry = |user: &Uuid, detail: &str| {
        let mut entry = Entry::new(request_id, "safety_net", Outcome::Changed, 0)
            .user(*user)
            .detail(detail);
        entry.status = None;
        entry.group_id = basic_user;
        entry
    };
    let entries: Vec<Entry> = placed
        .iter()
        .map(|u| entry(u, "placed in Basic User: in no synced group"))
        .chain(
            released
                .iter()
                .map(|u| entry(u, "removed from Basic User: in a synced group or inactive")),
        )
        .collect();
    journal::record(db, &entries).await
}
