//! The pools the server's tenant work runs on, and the connections taken from them.
//!
//! sqlx's pool sends a ping to every connection handed back to it, so each request paid a second
//! round trip to Postgres after its last statement: on the match query that was a sixth of
//! Roster's CPU and a fifth of Postgres's per request (`load-tests/bench/run.sh`). A home pool
//! is a `deadpool` pool of sqlx connections that skips that ping when the holder says it
//! finished cleanly ([`Taken::settle`]: a committed transaction, a read that ran to its end).
//! A connection handed back any other way (an error, a rolled-back transaction, a request
//! dropped mid-query) or idle for more than a second is pinged before its next use, and
//! replaced when the ping fails, so a Postgres restart still costs each dead connection one
//! failed request at most.

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool::managed::{
    Manager, Metrics, Object, Pool, PoolError, RecycleError, RecycleResult, TimeoutType, Timeouts,
};
use deadpool::Runtime;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Postgres};
use tokio::sync::OwnedSemaphorePermit;

/// Pooled connections idle longer than this are pinged before use.
pub(crate) const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// Connections are closed and opened afresh after this long, so a Postgres backend's caches of
/// the tenants it served do not grow for ever (sqlx's pool does the same after 30 minutes).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// How many tenants a pool remembers serving; past it the pool starts its memory afresh.
const SERVED_MAX: usize = 4096;

/// A pool of connections serving the tenants at home in it (see [`crate::db::Db`]).
pub type HomePool = Pool<Connector>;

/// Opens a home pool of at most `size` connections, each opened on first use. Callers take
/// connections with [`take_now`], which bounds each take by the time left to it.
pub(crate) fn open(options: PgConnectOptions, size: u32) -> Result<HomePool, sqlx::Error> {
    let connector = Connector {
        options,
        served: Mutex::default(),
    };
    Pool::builder(connector)
        .max_size(size.max(1) as usize)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|error| sqlx::Error::Configuration(error.into()))
}

/// Opens and checks the connections of a home pool, and remembers which tenants they served.
///
/// A Postgres backend that has served a tenant keeps that tenant's relation caches and
/// prepared statements; one that has not must build them first, which at 10,000 tenants costs
/// it about 20 ms of CPU. [`crate::db::Db`] lends a busy tenant a connection from another pool
/// at once only when that pool has served the tenant before.
#[derive(Debug)]
pub struct Connector {
    options: PgConnectOptions,
    /// Tenants (by [`crate::db::Db`]'s hash of their schema) served since the pool last
    /// opened a connection: a new backend knows none of them.
    served: Mutex<HashSet<u64>>,
}

impl Connector {
    /// Whether the pool's connections have served `tenant` lately.
    pub(crate) fn has_served(&self, tenant: u64) -> bool {
        self.served_tenants().contains(&tenant)
    }

    /// Remembers that the pool's connections served `tenant`.
    pub(crate) fn serving(&self, tenant: u64) {
        let mut served = self.served_tenants();
        if served.len() >= SERVED_MAX {
            served.clear();
        }
        served.insert(tenant);
    }

    fn served_tenants(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        // The set is only a hint: one left behind by a panicking holder is still usable.
        self.served
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection in a home pool, with when its last holder handed it back cleanly.
#[derive(Debug)]
pub struct PooledConn {
    conn: PgConnection,
    settled_at: Option<Instant>,
}

impl PooledConn {
    /// Closes the connection, telling Postgres so; a connection that fails to is dropped.
    pub(crate) async fn close(self) {
        if let Err(error) = self.conn.close().await {
            tracing::debug!(error = %error, "a pooled connection did not close cleanly");
        }
    }
}

impl Manager for Connector {
    type Type = PooledConn;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PooledConn, sqlx::Error> {
        let conn = PgConnection::connect_with(&self.options).await?;
        self.served_tenants().clear();
        Ok(PooledConn {
            conn,
            settled_at: None,
        })
    }

    async fn recycle(
        &self,
        pooled: &mut PooledConn,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if metrics.age() > MAX_LIFETIME {
            return Err(RecycleError::message("connection past its lifetime"));
        }
        let recently_settled = pooled
            .settled_at
            .take()
            .is_some_and(|at| at.elapsed() <= IDLE_BEFORE_PING);
        if !recently_settled {
            pooled.conn.ping().await?;
        }
        Ok(())
    }
}

/// A connection taken for one tenant's work: from sqlx's pool (the command-line tools and
/// tests, where the release ping does not matter) or from a home pool (the server).
#[derive(Debug)]
pub enum Taken {
    Shared(PoolConnection<Postgres>),
    Home(HomeConn),
}

/// A home pool's connection, with the permit that counts it as in use across all the pools
/// (see `crate::db::Db`). The connection goes back to its pool before the permit is released,
/// so the request the permit wakes finds it there.
#[derive(Debug)]
pub struct HomeConn {
    pooled: Object<Connector>,
    _in_use: OwnedSemaphorePermit,
}

impl Taken {
    pub(crate) fn home(pooled: Object<Connector>, in_use: OwnedSemaphorePermit) -> Taken {
        Taken::Home(HomeConn {
            pooled,
            _in_use: in_use,
        })
    }

    /// Marks the connection idle and healthy: its holder's last exchange completed, so the
    /// next holder may use it without a ping.
    pub(crate) fn settle(&mut self) {
        if let Taken::Home(home) = self {
            home.pooled.settled_at = Some(Instant::now());
        }
    }
}

impl Deref for Taken {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Taken::Shared(conn) => conn,
            Taken::Home(home) => &home.pooled.conn,
        }
    }
}

impl DerefMut for Taken {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Taken::Shared(conn) => conn,
            Taken::Home(home) => &mut home.pooled.conn,
        }
    }
}

/// Takes a connection from `pool` if one is free or may be opened, without waiting for one in
/// use, checking or opening it within `within`; sqlx's errors for what went wrong, so callers
/// classify a home pool's failures like any other (`crate::error::is_unavailable`).
pub(crate) async fn take_now(
    pool: &HomePool,
    within: Duration,
) -> Result<Option<Object<Connector>>, sqlx::Error> {
    take_waiting(pool, Duration::ZERO, within).await
}

/// [`take_now`], but waiting up to `wait` for a connection in use to come back: `None` when
/// none did.
pub(crate) async fn take_waiting(
    pool: &HomePool,
    wait: Duration,
    within: Duration,
) -> Result<Option<Object<Connector>>, sqlx::Error> {
    let timeouts = Timeouts {
        wait: Some(wait),
        create: Some(within),
        recycle: Some(within),
    };
    match pool.timeout_get(&timeouts).await {
        Ok(pooled) => Ok(Some(pooled)),
        Err(PoolError::Timeout(TimeoutType::Wait)) => Ok(None),
        Err(PoolError::Backend(error)) => Err(error),
        Err(PoolError::Closed) => Err(sqlx::Error::PoolClosed),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}
