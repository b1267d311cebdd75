//! The shared connection pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// Pooled connections idle longer than this are pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

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
}

/// Opens the pool, creating the database first when it does not exist yet.
///
/// Every connection starts with `search_path` set to the control schema, which holds no tenant
/// tables: tenant queries must go through [`crate::scope`].
pub async fn connect(config: &DbConfig) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(&config.url)?.statement_cache_capacity(config.statement_cache);
    create_database_if_missing(&options).await?;
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
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
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
