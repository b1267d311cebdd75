//! What every request handler shares: the pool, Redis, the key cache and the limits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tenancy::cache::KeyCache;
use tenancy::db::Db;
use tenancy::keys::LastUsed;
use tenancy::limits::{AuthFailures, TenantLimits};
use tenancy::redis_link::RedisLink;

use crate::admin::token::TokenVerifier;
use crate::config::{FusionAuthConfig, ServeConfig};
use crate::directory::journal::JournalWriter;
use crate::fusionauth::{ClientConfig, FusionAuthClient, KeySealer, UrlPolicy};

/// Shared, cheaply cloneable service state.
#[derive(Clone)]
pub struct AppState {
    /// The control pool and the tenant pools.
    pub db: Db,
    pub redis: RedisLink,
    pub keys: KeyCache,
    pub last_used: LastUsed,
    pub limits: TenantLimits,
    pub auth_failures: AuthFailures,
    /// Base for `Location` headers and `meta.location`, without a trailing slash.
    pub public_url: String,
    pub body_limit: BodyLimitConfig,
    pub trust_forwarded_for: bool,
    /// Calls tenants' FusionAuth instances (one connection pool for all of them).
    pub fusionauth: FusionAuthClient,
    /// Opens sealed FusionAuth API keys; `None` when no encryption key is configured, in which
    /// case every tenant runs in shadow mode.
    pub sealer: Option<Arc<KeySealer>>,
    /// Which FusionAuth base URLs tenants may configure.
    pub url_policy: UrlPolicy,
    /// Batches read-path journal entries and `last_synced_at` stamps.
    pub journal: JournalWriter,
    /// Checks the admin API's bearer tokens.
    pub admin_tokens: Arc<TokenVerifier>,
}

impl AppState {
    pub fn new(config: &ServeConfig, db: Db, redis: RedisLink) -> anyhow::Result<Self> {
        let url_policy = UrlPolicy {
            allow_private: config.fusionauth.fusionauth_allow_private_urls,
        };
        Ok(AppState {
            fusionauth: fusionauth_client(&config.fusionauth, url_policy)?,
            sealer: sealer(&config.fusionauth)?,
            url_policy,
            admin_tokens: Arc::new(
                TokenVerifier::from_config(&config.admin_auth)
                    .context("invalid admin token configuration")?,
            ),
            journal: JournalWriter::spawn(db.clone()),
            keys: KeyCache::new(db.control().clone(), redis.clone()),
            last_used: LastUsed::new(db.control().clone()),
            limits: TenantLimits::new(redis.clone(), config.default_rate_limit),
            auth_failures: AuthFailures::new(config.auth_failures_per_minute),
            public_url: config.public_url(),
            body_limit: BodyLimitConfig {
                bytes: config.body_limit_bytes,
                timeout: Duration::from_secs(config.body_timeout_secs),
            },
            trust_forwarded_for: config.trust_forwarded_for,
            db,
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

/// How large and how slow a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimitConfig {
    pub bytes: usize,
    pub timeout: Duration,
}

impl BodyLimitConfig {
    pub fn middleware(self) -> crate::body_limit::BodyLimit {
        crate::body_limit::BodyLimit {
            limit: self.bytes,
            timeout: self.timeout,
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
