//! The shared Redis connection, and whether Redis can be used right now.
//!
//! Redis is a cache, never a store: when it is unreachable, callers fall back to Postgres and
//! in-process limits. A background task pings Redis every second, so a request never waits
//! on a Redis that is known to be down, and recovery needs no restart. State changes are
//! logged once each, not per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// What `/readyz` reports about Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisState {
    /// No Redis configured: single-node mode with in-process equivalents.
    Disabled,
    Healthy,
    /// Configured but unreachable: serving from Postgres and in-process limits.
    Degraded,
}

impl RedisState {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisState::Disabled => "disabled",
            RedisState::Healthy => "healthy",
            RedisState::Degraded => "degraded",
        }
    }
}

/// A cheaply cloneable handle on the shared Redis connection.
#[derive(Clone, Default)]
pub struct RedisLink {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    client: redis::Client,
    manager: RwLock<Option<ConnectionManager>>,
    healthy: AtomicBool,
    /// Bumped each time Redis comes back after being unreachable.
    recoveries: AtomicU64,
}

impl RedisLink {
    /// Single-node mode: no Redis at all.
    pub fn disabled() -> Self {
        RedisLink { inner: None }
    }

    /// Connects to `url`. An unreachable Redis is not an error: the link starts degraded and
    /// the probe keeps trying. Only a malformed URL fails.
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let inner = Arc::new(Inner {
            client: redis::Client::open(url)?,
            manager: RwLock::new(None),
            healthy: AtomicBool::new(false),
            recoveries: AtomicU64::new(0),
        });
        if inner.try_connect().await {
            inner.healthy.store(true, Ordering::Release);
        } else {
            tracing::warn!("Redis is unreachable; serving from Postgres and in-process limits");
        }
        tokio::spawn(probe(Arc::downgrade(&inner)));
        Ok(RedisLink { inner: Some(inner) })
    }

    pub fn state(&self) -> RedisState {
        match &self.inner {
            None => RedisState::Disabled,
            Some(inner) if inner.healthy.load(Ordering::Acquire) => RedisState::Healthy,
            Some(_) => RedisState::Degraded,
        }
    }

    /// A connection to use now, or `None` when Redis is disabled or known to be down.
    pub fn connection(&self) -> Option<ConnectionManager> {
        let inner = self.inner.as_ref()?;
        if !inner.healthy.load(Ordering::Acquire) {
            return None;
        }
        inner.manager.read().ok()?.clone()
    }

    /// Tells the link that a command failed; the first failure flips it to degraded.
    pub fn report_failure(&self, error: &redis::RedisError) {
        if let Some(inner) = &self.inner {
            inner.mark_degraded(error);
        }
    }

    /// How many times Redis has come back after being unreachable.
    pub fn recoveries(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.recoveries.load(Ordering::Acquire))
    }
}

impl Inner {
    async fn try_connect(&self) -> bool {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        let attempt = ConnectionManager::new_with_config(self.client.clone(), config);
        let Ok(Ok(mut manager)) = tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await else {
            return false;
        };
        if !ping(&mut manager).await {
            return false;
        }
        if let Ok(mut slot) = self.manager.write() {
            *slot = Some(manager);
        }
        true
    }

    fn mark_degraded(&self, error: &redis::RedisError) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error = %error,
                "Redis is unreachable; serving from Postgres and in-process limits"
            );
        }
    }

    fn mark_healthy(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            self.recoveries.fetch_add(1, Ordering::AcqRel);
            tracing::info!("Redis is reachable again");
        }
    }
}

async fn ping(manager: &mut ConnectionManager) -> bool {
    let command = redis::cmd("PING");
    let reply = command.query_async::<String>(manager);
    matches!(
        tokio::time::timeout(RESPONSE_TIMEOUT, reply).await,
        Ok(Ok(_))
    )
}

/// Keeps the health flag true to Redis until the link is dropped.
async fn probe(link: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(inner) = link.upgrade() else { return };
        let manager = inner.manager.read().ok().and_then(|slot| slot.clone());
        let reachable = match manager {
            Some(mut manager) => ping(&mut manager).await || inner.try_connect().await,
            None => inner.try_connect().await,
        };
        if reachable {
            inner.mark_healthy();
        } else {
            inner.mark_degraded(&redis::RedisError::from((
                redis::ErrorKind::IoError,
                "probe failed",
            )));
        }
    }
}
