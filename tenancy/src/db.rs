//! Connections to Postgres: one pool for the tools, and for the server a control pool plus
//! tenant pools that each serve a fixed share of the tenants.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use deadpool::managed::Object;

use crate::home_pool::{self, Connector, HomePool, Taken, IDLE_BEFORE_PING};
use crate::SchemaName;

/// Name of the schema that holds the tenant registry, keys and audit trail.
pub const CONTROL_SCHEMA: &str = "roster_control";

/// How to reach Postgres and how big the pool may grow.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Prepared statements kept per connection (see [`crate::scope`] for why it is large).
    pub statement_cache: usize,
    /// How many pools [`Db::connect`] splits the tenants' connections into; 0 gives each
    /// tenant connection a pool of its own.
    pub tenant_pools: u32,
    /// How long a request waits for its tenant's home pool before it takes a connection from a
    /// pool that has not served the tenant (see [`Db::take_for`]).
    pub borrow_cold_after: Duration,
}

/// Opens the pool, creating the database first when it does not exist yet.
///
/// Every connection starts with `search_path` set to the control schema, which holds no tenant
/// tables: tenant queries must go through [`crate::scope`].
pub async fn connect(config: &DbConfig) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(&config.url)?.statement_cache_capacity(config.statement_cache);
    create_database_if_missing(&options).await?;
    open_pool(config, &options, config.max_connections).await
}

async fn open_pool(
    config: &DbConfig,
    options: &PgConnectOptions,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    // sqlx's own test pings before *every* acquire, adding a round trip to every request.
    // Pinging only connections that sat idle for a while keeps the hot path at one trip per
    // statement and still weeds out connections that died while unused (a Postgres restart).
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .max_connections(max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options.clone())
        .await
}

/// The server's connections: a small pool for the control schema, and the tenant connections
/// split into home pools (`crate::home_pool`), each tenant's home always the same one.
///
/// Every Postgres backend keeps, for each tenant whose tables it has touched, the relation
/// caches of those tables (about 34 kB a tenant) and one prepared statement per query (about
/// 22 kB each, `pg_backend_memory_contexts`). With one shared pool every connection ends up
/// holding every tenant: 65 MB per thousand tenants per backend, and at 10,000 tenants most
/// requests land on a connection that has never seen their tenant, so Postgres parses, plans
/// and builds caches before it can run the query. With a home pool each backend holds only its
/// share of the tenants, and a tenant's requests find their statements prepared.
///
/// A request whose home pool has no idle connection (and no room to open one) borrows one from
/// another pool that has served its tenant before; failing that it waits briefly at home, and
/// only then borrows from a pool that has not (see [`Db::take_for`]).
#[derive(Clone, Debug)]
pub struct Db {
    control: PgPool,
    tenants: Arc<[HomePool]>,
    /// One permit per tenant connection not in use, whichever pool it is in: a request that
    /// finds every connection busy waits here, and the first connection handed back anywhere
    /// serves it, rather than only one of its home pool.
    free: Arc<Semaphore>,
    acquire_timeout: Duration,
    borrow_cold_after: Duration,
}

impl Db {
    /// Opens the pools: of `max_connections`, a fifth (one to four) serves the control schema
    /// and the rest are split into `tenant_pools` home pools, which hold at least one
    /// connection between them.
    pub async fn connect(config: &DbConfig) -> Result<Db, sqlx::Error> {
        let options =
            connect_options(&config.url)?.statement_cache_capacity(config.statement_cache);
        create_database_if_missing(&options).await?;
        let total = config.max_connections.max(1);
        let control = (total / 5).clamp(1, 4);
        let sizes = split(total.saturating_sub(control), config.tenant_pools);
        let tenant_connections = sizes.iter().sum::<u32>() as usize;
        let tenants = sizes
            .into_iter()
            .map(|size| home_pool::open(options.clone(), size))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Db {
            control: open_pool(config, &options, control).await?,
            tenants: tenants.into(),
            free: Arc::new(Semaphore::new(tenant_connections)),
            acquire_timeout: config.acquire_timeout,
            borrow_cold_after: config.borrow_cold_after,
        })
    }

    /// The pool for the control schema (the tenant registry, keys, the audit trail).
    pub fn control(&self) -> &PgPool {
        &self.control
    }

    /// The home pools, in home order.
    pub fn tenant_pools(&self) -> &[HomePool] {
        &self.tenants
    }

    /// Which of [`Db::tenant_pools`] is `schema`'s home.
    pub fn home_of(&self, schema: &SchemaName) -> usize {
        self.home_index(tenant_hash(schema))
    }

    /// Connections open, idle and allowed, over every pool.
    pub fn usage(&self) -> PoolUsage {
        let mut usage = PoolUsage {
            open: self.control.size() as usize,
            idle: self.control.num_idle(),
            max: self.control.options().get_max_connections() as usize,
        };
        for pool in self.tenants.iter() {
            let status = pool.status();
            usage.open += status.size;
            usage.idle += status.available;
            usage.max += status.max_size;
        }
        usage
    }

    /// Closes every pool, saying goodbye to Postgres on each idle connection; connections in
    /// use close when they are handed back.
    pub async fn close(&self) {
        self.free.close();
        for pool in self.tenants.iter() {
            let idle = pool.retain(|_, _| false).removed;
            pool.close();
            for pooled in idle {
                pooled.close().await;
            }
        }
        self.control.close().await;
    }

    /// A connection for `schema`, waiting (up to the acquire timeout) when every one is in use:
    ///
    /// 1. from its home pool, or from another pool that has served the tenant lately, when one
    ///    of them has a connection free;
    /// 2. else from its home pool as soon as one comes back, for up to
    ///    [`DbConfig::borrow_cold_after`];
    /// 3. else from whichever pool has one free, home onwards.
    async fn take_for(&self, schema: &SchemaName) -> Result<Taken, sqlx::Error> {
        let deadline = Instant::now() + self.acquire_timeout;
        let free = tokio::time::timeout_at(deadline, self.free.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let tenant = tenant_hash(schema);
        let home = self.home_index(tenant);
        if let Some(pooled) = self.take_warm(home, tenant, deadline).await? {
            return Ok(Taken::home(pooled, free));
        }
        if let Some(pooled) = self.wait_at_home(home, deadline).await? {
            return Ok(Taken::home(pooled, free));
        }
        let pooled = self.take_any(home, tenant, deadline).await?;
        Ok(Taken::home(pooled, free))
    }

    /// A free connection of the home pool, or of a pool that has served `tenant` lately.
    async fn take_warm(
        &self,
        home: usize,
        tenant: u64,
        deadline: Instant,
    ) -> Result<Option<Object<Connector>>, sqlx::Error> {
        for (step, pool) in self.pools_from(home).enumerate() {
            if step > 0 && !pool.manager().has_served(tenant) {
                continue;
            }
            let within = deadline.saturating_duration_since(Instant::now());
            if let Some(pooled) = home_pool::take_now(pool, within).await? {
                return Ok(Some(pooled));
            }
        }
        Ok(None)
    }

    /// The home pool's next connection to come back within [`DbConfig::borrow_cold_after`].
    async fn wait_at_home(
        &self,
        home: usize,
        deadline: Instant,
    ) -> Result<Option<Object<Connector>>, sqlx::Error> {
        let within = deadline.saturating_duration_since(Instant::now());
        let wait = within.min(self.borrow_cold_after);
        home_pool::take_waiting(&self.tenants[home], wait, within).await
    }

    /// A free connection of any pool, home onwards; the pool lending it remembers the tenant.
    async fn take_any(
        &self,
        home: usize,
        tenant: u64,
        deadline: Instant,
    ) -> Result<Object<Connector>, sqlx::Error> {
        // Holding a permit means some pool has a connection free (idle, or room to open one);
        // another request holding one may take it between the look and the take, and then
        // another pool has one.
        loop {
            for pool in self.pools_from(home) {
                let within = deadline.saturating_duration_since(Instant::now());
                if let Some(pooled) = home_pool::take_now(pool, within).await? {
                    pool.manager().serving(tenant);
                    return Ok(pooled);
                }
            }
            if Instant::now() >= deadline {
                return Err(sqlx::Error::PoolTimedOut);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Every tenant pool once, starting at `home`.
    fn pools_from(&self, home: usize) -> impl Iterator<Item = &HomePool> {
        let count = self.tenants.len();
        (0..count).map(move |step| &self.tenants[(home + step) % count])
    }

    fn home_index(&self, tenant: u64) -> usize {
        (tenant % self.tenants.len() as u64) as usize
    }
}

/// The hash that picks a tenant's home pool and names it in the pools' memory of whom they
/// served.
fn tenant_hash(schema: &SchemaName) -> u64 {
    let mut hasher = DefaultHasher::new();
    schema.hash(&mut hasher);
    hasher.finish()
}

/// Connections over all of a [`Db`]'s pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub open: usize,
    pub idle: usize,
    pub max: usize,
}

/// Where a tenant's connection comes from.
pub trait TenantPools {
    fn take(
        &self,
        schema: &SchemaName,
    ) -> impl std::future::Future<Output = Result<Taken, sqlx::Error>> + Send;
}

/// The command-line tools' one pool serves every tenant.
impl TenantPools for PgPool {
    async fn take(&self, _schema: &SchemaName) -> Result<Taken, sqlx::Error> {
        Ok(Taken::Shared(self.acquire().await?))
    }
}

/// The server's pools: each tenant from its home pool (see [`Db`]).
impl TenantPools for Db {
    async fn take(&self, schema: &SchemaName) -> Result<Taken, sqlx::Error> {
        self.take_for(schema).await
    }
}

/// `connections` split into `pools` pool sizes as even as they go (0 pools: one per connection).
fn split(connections: u32, pools: u32) -> Vec<u32> {
    let connections = connections.max(1);
    let pools = if pools == 0 {
        connections
    } else {
        pools.min(connections)
    };
    (0..pools)
        .map(|i| connections / pools + u32::from(i < connections % pools))
        .collect()
}

/// Every connection plans each prepared statement once, generically.
///
/// Each tenant has its own copy of every statement (its SQL names the tenant's schema), on
/// every pooled connection. Postgres's default plans a prepared statement afresh for each of
/// its first five runs before it settles on a generic plan; with a hundred tenants on sixteen
/// connections most copies never reach a sixth run, so nearly every statement was planned:
/// 56,000 plans for 91,000 statements, more time planning than executing, in a 30 s Entra mix
/// at 1,000 requests/s (`pg_stat_statements` with `track_planning`). Roster's statements are
/// equality lookups on indexed columns, keyset pages and inserts, whose generic plans are the
/// custom ones; forcing them cut the plans to one per statement copy (17,800) and Postgres's
/// CPU per request by 17 %.
const PLAN_CACHE_MODE: &str = "force_generic_plan";

fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("roster")
        .options([
            ("search_path", CONTROL_SCHEMA),
            ("plan_cache_mode", PLAN_CACHE_MODE),
        ]))
}

async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    match PgConnection::connect_with(options).await {
        Ok(conn) => return conn.close().await,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => return Err(e),
    }
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let create = format!("create database \"{}\"", name.replace('"', "\"\""));
    match sqlx::raw_sql(&create).execute(&mut admin).await {
        Ok(_) => tracing::info!(db.name = %name, "created the database"),
        // Another process created it between our two connections.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
        Err(e) => return Err(e),
    }
    admin.close().await
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn connections_split_into_pools_as_evenly_as_they_go() {
        assert_eq!(split(16, 0), vec![1; 16]);
        assert_eq!(split(16, 5), [4, 3, 3, 3, 3]);
        assert_eq!(split(3, 8), [1, 1, 1]);
        assert_eq!(split(0, 0), [1]);
    }
}
