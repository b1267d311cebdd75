//! What every request handler shares: the pool, Redis, the key cache and the limits.

use sqlx::PgPool;
use tenancy::cache::KeyCache;
use tenancy::keys::LastUsed;
use tenancy::limits::{AuthFailures, TenantLimits};
use tenancy::redis_link::RedisLink;

use crate::config::ServeConfig;

/// Shared, cheaply cloneable service state.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub redis: RedisLink,
    pub keys: KeyCache,
    pub last_used: LastUsed,
    pub limits: TenantLimits,
    pub auth_failures: AuthFailures,
    /// Base for `Location` headers and `meta.location`, without a trailing slash.
    pub public_url: String,
    pub body_limit: usize,
    pub trust_forwarded_for: bool,
}

impl AppState {
    pub fn new(config: &ServeConfig, pool: PgPool, redis: RedisLink) -> Self {
        AppState {
            keys: KeyCache::new(pool.clone(), redis.clone()),
            last_used: LastUsed::new(pool.clone()),
            limits: TenantLimits::new(redis.clone(), config.default_rate_limit),
            auth_failures: AuthFailures::new(config.auth_failures_per_minute),
            public_url: config.public_url(),
            body_limit: config.body_limit_bytes,
            trust_forwarded_for: config.trust_forwarded_for,
            pool,
            redis,
        }
    }
}

/// Connects to Redis as configured; an empty URL means single-node mode.
pub async fn connect_redis(url: &str) -> anyhow::Result<RedisLink> {
    if url.is_empty() {
        tracing::info!("no Redis configured: single-node mode");
        return Ok(RedisLink::disabled());
    }
    Ok(RedisLink::connect(url).await?)
}
