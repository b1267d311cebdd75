//! The only way to a tenant's tables: a transaction whose `search_path` is that tenant's schema.
//!
//! The pool's default `search_path` is the control schema, which holds no tenant tables, so a
//! query that bypasses this module fails with "relation does not exist" instead of reading
//! another tenant's rows. The scoping is transaction-local (`set local`), so nothing leaks back
//! into the pool when the transaction ends.

use sqlx::{PgPool, Postgres, Transaction};

use crate::SchemaName;

/// A transaction scoped to one tenant's schema.
pub type TenantTx = Transaction<'static, Postgres>;

/// Begins a transaction scoped to `schema`.
///
/// `begin` and the scoping travel in one simple-protocol round trip; the schema name is
/// interpolated, which is safe only because [`SchemaName`] admits nothing but `t_<hex>`.
pub async fn begin(pool: &PgPool, schema: &SchemaName) -> Result<TenantTx, sqlx::Error> {
    let statement = format!("begin; set local search_path to {}", schema.quoted());
    pool.begin_with(statement).await
}

/// Ends a transaction that only read: nothing to commit, so instead of waiting a round trip
/// for `commit`, the rollback is queued and flushed when the connection goes back to the pool,
/// off the request's path.
pub fn finish_read(tx: TenantTx) {
    drop(tx);
}
