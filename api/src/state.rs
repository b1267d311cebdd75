//! What every request handler shares: the pool, Redis, the key cache and the limits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tenancy::cache::KeyCache;
use tenancy::keys::LastUsed;
use tenancy::limits::{AuthFailures, TenantLimits};
use tenancy::redis_link::RedisLink;

use crate::config::{FusionAuthConfig, ServeConfig};
use crate::directory::journal::JournalWriter;
use crate::fusionauth::{ClientConfig, FusionAuthClient, KeySealer, UrlPolicy};

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
    /// Calls tenants' FusionAuth instances (one connection pool for all of them).
    pub fusionauth: FusionAuthClient,
    /// Opens sealed FusionAuth API keys; `None` when no encryption key is configured, in which
    /// case every tenant runs in shadow mode.
    pub sealer: Option<Arc<KeySealer>>,
    /// Which FusionAuth base URLs tenants may configure.
    pub url_policy: UrlPolicy,
    /// Batches read-path journal entries and `last_synced_at` stamps off the request path.
    pub journal: JournalWriter,
}

impl AppState {
    pub fn new(config: &ServeConfig, pool: PgPool, redis: RedisLink) -> anyhow::Result<Self> {
        let url_policy = UrlPolicy {
            allow_private: config.fusionauth.fusionauth_allow_private_urls,
        };
        Ok(AppState {
            fusionauth: fusionauth_client(&config.fusionauth, url_policy)?,
            sealer: sealer(&config.fusionauth)?,
            url_policy,
            keys: KeyCache::new(pool.clone(), redis.clone()),
            last_used: LastUsed::new(pool.clone()),
            journal: JournalWriter::spawn(pool.clone()),
            limits: TenantLimits::new(redis.clone(), config.default_rate_limit),
            auth_failures: AuthFailures::new(config.auth_failures_per_minute),
            public_url: config.public_url(),
            body_limit: config.body_limit_bytes,
            trust_forwarded_for: config.trust_forwarded_for,
            pool,
            redis,
        })
    }
}

fn fusionauth_client(
    config: &FusionAuthConfig,
    url_policy: UrlPolicy,
) -> anyhow::Result<FusionAuthClient> {
    let budget = Duration::from_millis(config.fusionauth_timeout_ms.max(100));
    let client = FusionAuthClient::new(ClientConfig {
        connect_timeout: (budget / 4).min(Duration::from_secs(3)),
        request_timeout: (budget * 2 / 5).min(Duration::from_secs(10)),
        total_budget: budget,
        url_policy,
        ..ClientConfig::default()
    })
    .context("cannot build the FusionAuth HTTP client")?;
    Ok(client)
}

/// The sealer for tenants' FusionAuth keys, from `ROSTER_KEY_ENCRYPTION_KEY`.
pub fn sealer(config: &FusionAuthConfig) -> anyhow::Result<Option<Arc<KeySealer>>> {
    match &config.key_encryption_key {
        Some(key) if !key.is_empty() => Ok(Some(Arc::new(
            KeySealer::from_base64(key.expose()).context(
                "ROSTER_KEY_ENCRYPTION_KEY must be the base64 encoding of 32 random bytes",
            )?,
        ))),
        _ => Ok(None),
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
