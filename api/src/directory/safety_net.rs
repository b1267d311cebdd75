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

use sqlx::PgConnection;
use uuid::Uuid;

use super::journal::{self, Entry, Outcome};

/// A synced membership: the group is visible over SCIM.
const SYNCED_MEMBERSHIP: &str = "exists (select 1 from memberships sm join groups sg \
     on sg.id = sm.group_id where sm.user_id = u.id and sg.sync_enabled \
     and sg.external_id is not null)";

/// Locks the rows of `user_ids` in a stable order, so transactions that touch overlapping
/// users serialise instead of deadlocking. Returns the ids that exist.
pub async fn lock_users(
    tx: &mut PgConnection,
    user_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids = user_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query_scalar("select id from users where id = any($1) order by id for update")
        .bind(&ids)
        .fetch_all(&mut *tx)
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
    tx: &mut PgConnection,
    user_ids: &[Uuid],
    request_id: &str,
) -> Result<Moves, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(Moves::default());
    }
    let placed: Vec<Uuid> = sqlx::query_scalar(&format!(
        "insert into memberships (group_id, user_id, source) \
         select b.id, u.id, 'safety_net' from users u \
           cross join (select id from groups where is_basic_user) b \
         where u.id = any($1) and u.active and not {SYNCED_MEMBERSHIP} \
         on conflict do nothing returning user_id"
    ))
    .bind(user_ids)
    .fetch_all(&mut *tx)
    .await?;
    let released: Vec<Uuid> = sqlx::query_scalar(&format!(
        "delete from memberships m using groups b, users u \
         where b.is_basic_user and m.group_id = b.id and m.user_id = u.id \
           and u.id = any($1) and (not u.active or {SYNCED_MEMBERSHIP}) \
         returning m.user_id"
    ))
    .bind(user_ids)
    .fetch_all(&mut *tx)
    .await?;

    journal_moves(tx, &placed, &released, request_id).await?;
    Ok(Moves { placed, released })
}

async fn journal_moves(
    tx: &mut PgConnection,
    placed: &[Uuid],
    released: &[Uuid],
    request_id: &str,
) -> Result<(), sqlx::Error> {
    let basic_user: Option<Uuid> = sqlx::query_scalar("select id from groups where is_basic_user")
        .fetch_optional(&mut *tx)
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
    journal::record(tx, &entries).await
}
