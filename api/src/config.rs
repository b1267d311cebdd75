//! Every `ROSTER_*` environment variable, documented in one place.
//!
//! `roster --help` and `roster serve --help` print the same text. Values marked secret are
//! never printed: not by `--help`, not by `Debug`, not in logs.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

/// A configuration value that must never be printed.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(Secret(raw.to_owned()))
    }
}

/// Where Postgres and Redis are. Every command that touches the database needs these.
#[derive(Debug, Clone, Args)]
pub struct StoreConfig {
    /// Postgres URL (secret: may hold a password). The database is created when missing.
    #[arg(
        long,
        env = "ROSTER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/roster",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub database_url: Secret,

    /// Postgres connections per replica: a fifth (one to four) for the control schema, the rest
    /// (at least one) for the tenants' home pools.
    #[arg(long, env = "ROSTER_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    /// How long a request waits for a pooled connection (of the control pool, then of the tenant
    /// pools) before answering 503.
    #[arg(long, env = "ROSTER_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 2000)]
    pub db_acquire_timeout_ms: u64,

    /// Prepared statements each pooled connection keeps (least recently used go first). Every
    /// tenant has its own statements, so this bounds how many tenants stay warm per connection:
    /// about 15 statements each.
    #[arg(long, env = "ROSTER_DB_STATEMENT_CACHE", default_value_t = 2000)]
    pub db_statement_cache: usize,

    /// Pools the tenants' connections are split into; each tenant has a home pool, so each
    /// Postgres backend caches only its share of the tenants' tables and statements. 0: one
    /// pool per connection. (A fifth of the connections, one to four, serve the control schema.)
    #[arg(long, env = "ROSTER_DB_TENANT_POOLS", default_value_t = 0)]
    pub db_tenant_pools: u32,

    /// How long a request waits for a connection of its tenant's home pool before it takes one
    /// from a pool that has not served the tenant. On such a connection Postgres first builds
    /// the tenant's table caches and prepares its statements, about 20 ms of its CPU at 10,000
    /// tenants, where a home connection usually comes back within a few milliseconds.
    #[arg(long, env = "ROSTER_DB_BORROW_COLD_AFTER_MS", default_value_t = 10)]
    pub db_borrow_cold_after_ms: u64,

    /// Redis URL (secret: may hold a password). Empty runs single-node, with in-process key
    /// caching and rate limits.
    #[arg(
        long,
        env = "ROSTER_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub redis_url: Secret,
}

impl StoreConfig {
    pub fn db(&self) -> tenancy::db::DbConfig {
        tenancy::db::DbConfig {
            url: self.database_url.expose().to_owned(),
            max_connections: self.db_max_connections,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_cache: self.db_statement_cache,
            tenant_pools: self.db_tenant_pools,
            borrow_cold_after: Duration::from_millis(self.db_borrow_cold_after_ms),
        }
    }
}

/// How `roster serve` behaves.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub store: StoreConfig,

    /// Address to listen on.
    #[arg(long, env = "ROSTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The externally visible base URL, used in `Location` headers and `meta.location`.
    /// Defaults to `http://<listen address>`.
    #[arg(long, env = "ROSTER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ROSTER_BODY_LIMIT_BYTES", default_value_t = 1_048_576)]
    pub body_limit_bytes: usize,

    /// Seconds a client may take to send a request body before it gets 408.
    #[arg(long, env = "ROSTER_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,

    /// Seconds to drain in-flight requests after SIGTERM or Ctrl-C.
    #[arg(long, env = "ROSTER_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// SCIM requests per second per tenant unless the tenant sets its own (Entra needs 25).
    #[arg(long, env = "ROSTER_DEFAULT_RATE_LIMIT", default_value = "200")]
    pub default_rate_limit: NonZeroU32,

    /// Failed authentications allowed per client address per minute before it gets 429.
    #[arg(long, env = "ROSTER_AUTH_FAILURES_PER_MINUTE", default_value = "30")]
    pub auth_failures_per_minute: NonZeroU32,

    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    #[arg(long, env = "ROSTER_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    #[command(flatten)]
    pub fusionauth: FusionAuthConfig,

    #[command(flatten)]
    pub admin_auth: AdminAuthConfig,
}

/// How Roster reaches tenants' FusionAuth instances.
#[derive(Debug, Clone, Args)]
pub struct FusionAuthConfig {
    /// Base64 of 32 random bytes (secret) that seals tenants' FusionAuth API keys at rest
    /// (AES-256-GCM). Without it, FusionAuth connections cannot be stored or used.
    #[arg(long, env = "ROSTER_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<Secret>,

    /// Total time one FusionAuth operation (with its retries) may take before the SCIM request
    /// answers 503 with `Retry-After`.
    #[arg(long, env = "ROSTER_FUSIONAUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub fusionauth_timeout_ms: u64,

    /// Allow FusionAuth base URLs on loopback and private networks (development only: it
    /// opens a path to internal services).
    #[arg(
        long,
        env = "ROSTER_FUSIONAUTH_ALLOW_PRIVATE_URLS",
        default_value_t = false
    )]
    pub fusionauth_allow_private_urls: bool,
}

/// How admin API bearer tokens (JWT) are checked.
#[derive(Debug, Clone, Args)]
pub struct AdminAuthConfig {
    /// Required `iss` of admin tokens.
    #[arg(long, env = "ROSTER_JWT_ISSUER", default_value = "roster-dev")]
    pub jwt_issuer: String,

    /// Required `aud` of admin tokens.
    #[arg(long, env = "ROSTER_JWT_AUDIENCE", default_value = "roster-admin")]
    pub jwt_audience: String,

    /// HS256 shared secret (secret; development): enables `roster admin-token`.
    #[arg(long, env = "ROSTER_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<Secret>,

    /// PEM text of one or more RS256/ES256 public keys that may sign admin tokens.
    #[arg(long, env = "ROSTER_JWT_PUBLIC_KEYS")]
    pub jwt_public_keys: Option<String>,

    /// JWKS URL to fetch (and cache) signing keys from.
    #[arg(long, env = "ROSTER_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "ROSTER_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
}

impl ServeConfig {
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// How logs are written; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    #[arg(long, env = "ROSTER_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,

    /// Which events to log, in `tracing` filter syntax (e.g. `info,api=debug`).
    #[arg(long, env = "ROSTER_LOG", default_value = "info", global = true)]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How `roster migrate` runs.
#[derive(Debug, Clone, Args)]
pub struct MigrateConfig {
    #[command(flatten)]
    pub store: StoreConfig,

    /// Tenant schemas migrated at once.
    #[arg(long, env = "ROSTER_MIGRATE_CONCURRENCY", default_value_t = 8)]
    pub migrate_concurrency: usize,
}
