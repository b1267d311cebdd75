//! The only way to a tenant's tables: a connection paired with the tenant's schema, whose SQL
//! names every tenant table through that schema (`t_<hex>.users`).
//!
//! The pool's `search_path` is the control schema, which holds no tenant tables, and it never
//! changes. So a query that forgets the schema fails with "relation does not exist" instead of
//! reading another tenant's rows, and each tenant's statements stay prepared and planned on
//! the connections of its home pool ([`crate::db::Db`]): had requests switched `search_path`
//! per tenant instead, Postgres would re-plan every cached statement on each switch, which
//! measured at close to half of its CPU.

use std::ops::{Deref, DerefMut};

use sqlx::postgres::PgTransactionManager;
use sqlx::{PgConnection, TransactionManager};

use crate::db::TenantPools;
use crate::home_pool::Taken;
use crate::SchemaName;

/// A connection, or a transaction, on one tenant's tables.
pub struct Scoped<C> {
    conn: C,
    schema: SchemaName,
}

/// A transaction on one tenant's tables.
pub type TenantTx = Scoped<Tx>;

/// A pooled connection on one tenant's tables, for reads: each statement commits on its own,
/// so a read costs one round trip per statement and no `begin` or `commit`. Hand it back with
/// [`TenantConn::done`] once the read succeeded; dropped otherwise, it is checked before its
/// next use (see [`crate::home_pool`]).
pub type TenantConn = Scoped<Taken>;

/// What the directory's queries take: a connection and the schema their SQL must name.
pub struct TenantDb<'c> {
    pub conn: &'c mut PgConnection,
    pub schema: &'c SchemaName,
}

/// Begins a transaction on `schema`'s tables.
pub async fn begin(pools: &impl TenantPools, schema: &SchemaName) -> Result<TenantTx, sqlx::Error> {
    Ok(Scoped {
        conn: Tx::begin(pools.take(schema).await?).await?,
        schema: schema.clone(),
    })
}

/// A connection for reading `schema`'s tables outside a transaction. Under Postgres's default
/// `read committed` isolation every statement sees its own snapshot anyway, so a transaction
/// would add two round trips and no consistency.
pub async fn read(
    pools: &impl TenantPools,
    schema: &SchemaName,
) -> Result<TenantConn, sqlx::Error> {
    Ok(Scoped {
        conn: pools.take(schema).await?,
        schema: schema.clone(),
    })
}

/// A transaction over several tenants' tables at once, for the service's own bookkeeping (the
/// journal writer commits the read entries of all tenants at home in one pool together): each
/// use names its tenant.
pub struct AcrossTenants {
    conn: Tx,
}

/// Begins a transaction in which statements may go to several tenants' tables, on the
/// connection `pools` give `any_of_them` (the journal writer groups tenants by home pool and
/// names one of each group).
pub async fn begin_across_tenants(
    pools: &impl TenantPools,
    any_of_them: &SchemaName,
) -> Result<AcrossTenants, sqlx::Error> {
    Ok(AcrossTenants {
        conn: Tx::begin(pools.take(any_of_them).await?).await?,
    })
}

impl AcrossTenants {
    /// The connection and `schema`, borrowed for the directory's queries on that tenant.
    pub fn db<'c>(&'c mut self, schema: &'c SchemaName) -> TenantDb<'c> {
        TenantDb {
            conn: &mut self.conn,
            schema,
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.conn.commit().await
    }
}

impl<C: DerefMut<Target = PgConnection>> Scoped<C> {
    /// The connection and schema, borrowed for the directory's queries.
    pub fn db(&mut self) -> TenantDb<'_> {
        TenantDb {
            conn: &mut self.conn,
            schema: &self.schema,
        }
    }

    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }
}

impl TenantConn {
    /// Hands the connection back as idle and healthy: every statement of the read completed.
    pub fn done(mut self) {
        self.conn.settle();
    }
}

impl TenantTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.conn.commit().await
    }
}

/// A transaction on a taken connection: committed by [`Tx::commit`], rolled back when dropped
/// (the `rollback` is queued and goes out before the connection's next statement, or with the
/// check a home pool runs before reusing it).
pub struct Tx {
    conn: Taken,
    open: bool,
}

impl Tx {
    async fn begin(mut conn: Taken) -> Result<Tx, sqlx::Error> {
        PgTransactionManager::begin(&mut conn, None).await?;
        Ok(Tx { conn, open: true })
    }

    async fn commit(mut self) -> Result<(), sqlx::Error> {
        PgTransactionManager::commit(&mut self.conn).await?;
        self.open = false;
        self.conn.settle();
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            PgTransactionManager::start_rollback(&mut self.conn);
        }
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
