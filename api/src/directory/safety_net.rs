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
    let (moves, entries) = restore_unjournaled(db, user_ids, request_id).await?;
    journal::record(db, &entries).await?;
    Ok(moves)
}

/// Restores the invariant for `user_ids` and returns the journal entries of its moves, for a
/// caller that records them together with its own entries in one insert.
///
/// One statement places, releases and names the Basic User group: the placing and the releasing
/// conditions exclude each other, so the two data-modifying parts cannot see or undo each
/// other's work even though they share one snapshot.
pub async fn restore_unjournaled(
    db: &mut TenantDb<'_>,
    user_ids: &[Uuid],
    request_id: &str,
) -> Result<(Moves, Vec<Entry>), sqlx::Error> {
    if user_ids.is_empty() {
        return Ok((Moves::default(), Vec::new()));
    }
    let (basic_user, placed, released): (Option<Uuid>, Vec<Uuid>, Vec<Uuid>) =
        sqlx::query_as(&format!(
            "with basic as (select id from {s}.groups where is_basic_user), \
             placed as ( \
               insert into {s}.memberships (group_id, user_id, source) \
               select b.id, u.id, 'safety_net' from {s}.users u cross join basic b \
               where u.id = any($1) and u.active and not {synced} \
               on conflict do nothing returning user_id), \
             released as ( \
               delete from {s}.memberships m using basic b, {s}.users u \
               where m.group_id = b.id and m.user_id = u.id \
                 and u.id = any($1) and (not u.active or {synced}) \
               returning m.user_id) \
             select (select id from basic), \
               array(select user_id from placed), array(select user_id from released)",
            s = db.schema,
            synced = synced_membership(db.schema),
        ))
        .bind(user_ids)
        .fetch_one(&mut *db.conn)
        .await?;

    let entries = move_entries(basic_user, &placed, &released, request_id);
    Ok((Moves { placed, released }, entries))
}

fn move_entries(
    basic_user: Option<Uuid>,
    placed: &[Uuid],
    released: &[Uuid],
    request_id: &str,
) -> Vec<Entry> {
    let entry = |user: &Uuid, detail: &str| {
        let mut entry = Entry::new(request_id, "safety_net", Outcome::Changed, 0)
            .user(*user)
            .detail(detail);
        entry.status = None;
        entry.group_id = basic_user;
        entry
    };
    placed
        .iter()
        .map(|u| entry(u, "placed in Basic User: in no synced group"))
        .chain(
            released
                .iter()
                .map(|u| entry(u, "removed from Basic User: in a synced group or inactive")),
        )
        .collect()
}
