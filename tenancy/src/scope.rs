//! The only way to a tenant's tables: a connection paired with the tenant's schema, whose SQL
//! names every tenant table through that schema (`t_<hex>.users`).
//!
//! The pool's `search_path` is the control schema, which holds no tenant tables, and it never
//! changes. So a query that forgets the schema fails with "relation does not exist" instead of
//! reading another tenant's rows, and each tenant's statements stay prepared and planned on
//! the connections of its home pool ([`crate::db::Db`]): had requests switched `search_path`
//! per tenant instead, Postgres would re-plan every cached statement on each switch, which
//! measured at close to half of its CPU.

use std::ops::DerefMut;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::db::TenantPools;
use crate::SchemaName;

/// A connection, or a transaction, on one tenant's tables.
pub struct Scoped<C> {
    conn: C,
    schema: SchemaName,
}

/// A transaction on one tenant's tables.
pub type TenantTx = Scoped<Transaction<'static, Postgres>>;

/// A pooled connection on one tenant's tables, for reads: each statement commits on its own,
/// so a read costs one round trip per statement and no `begin` or `commit`.
pub type TenantConn = Scoped<PoolConnection<Postgres>>;

/// What the directory's queries take: a connection and the schema their SQL must name.
pub struct TenantDb<'c> {
    pub conn: &'c mut PgConnection,
    pub schema: &'c SchemaName,
}

/// Begins a transaction on `schema`'s tables.
pub async fn begin(pools: &impl TenantPools, schema: &SchemaName) -> Result<TenantTx, sqlx::Error> {
    Ok(Scoped {
        conn: pools.pool_for(schema).begin().await?,
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
        conn: pools.pool_for(schema).acquire().await?,
        schema: schema.clone(),
    })
}

/// A transaction over several tenants' tables at once, for the service's own bookkeeping (the
/// journal writer commits the read entries of all tenants at home in one pool together): each
/// use names its tenant.
pub struct AcrossTenants {
    conn: Transaction<'static, Postgres>,
}

/// Begins a transaction in which statements may go to several tenants' tables.
pub async fn begin_across_tenants(pool: &PgPool) -> Result<AcrossTenants, sqlx::Error> {
    Ok(AcrossTenants {
        conn: pool.begin().await?,
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

impl TenantTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.conn.commit().await
    }
}
