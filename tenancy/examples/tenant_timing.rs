//! Times tenant administration at scale: creating many tenants, then migrating all of them for
//! one more tenant migration. A measuring tool for the load tests, in no shipped binary.
//!
//! ```sh
//! cargo run --release -p tenancy --example tenant_timing -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/roster_load_timing \
//!     --tenants 1000 --concurrency 8
//! ```
//!
//! `load-tests/run.sh tenants` runs it against a freshly dropped database. The new migration is
//! a throwaway file written to a temporary directory beside copies of the real tenant
//! migrations, so the migrator sees the real history plus one version more, exactly as a
//! release adding a tenant migration would. Prints one JSON object with the timings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tenancy::db::DbConfig;
use tenancy::migrate::{self, TenantReport};

/// What a typical additive migration does: a column and an index on the biggest table.
const THROWAWAY_MIGRATION: &str = "alter table users add column load_probe text;\n\
     create index users_load_probe_idx on users (load_probe);\n";

struct Args {
    database_url: String,
    tenants: usize,
    concurrency: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let pool = tenancy::db::connect(&DbConfig {
        url: args.database_url.clone(),
        max_connections: u32::try_from(args.concurrency + 2)?,
        acquire_timeout: Duration::from_secs(30),
        statement_cache: 100,
        tenant_pools: 0,
        borrow_cold_after: Duration::ZERO,
    })
    .await
    .context("cannot connect to Postgres")?;
    migrate::migrate_control(&pool).await?;

    let created = Instant::now();
    create_tenants(&pool, args.tenants, args.concurrency).await?;
    let create_secs = created.elapsed().as_secs_f64();

    let scratch = scratch_dir();
    let migrator = throwaway_migrator(&scratch).await?;
    let migrating = Instant::now();
    let report = migrate::migrate_tenants(&pool, &migrator, args.concurrency).await?;
    let migrate_secs = migrating.elapsed().as_secs_f64();
    let rechecking = Instant::now();
    let again = migrate::migrate_tenants(&pool, &migrator, args.concurrency).await?;
    let recheck_secs = rechecking.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&scratch).context("cannot remove the scratch migrations")?;

    check(&report, &again, args.tenants)?;
    let summary = json!({
        "profile": "tenants",
        "tenants": args.tenants,
        "concurrency": args.concurrency,
        "create_secs": round(create_secs),
        "create_per_sec": round(per_sec(args.tenants, create_secs)),
        "migrate_secs": round(migrate_secs),
        "migrate_per_sec": round(per_sec(report.migrated, migrate_secs)),
        "migrated": report.migrated,
        "recheck_secs": round(recheck_secs),
    });
    println!("{summary}");
    Ok(())
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut args = Args {
        database_url: "postgres://postgres@127.0.0.1:5432/roster_load_timing".to_owned(),
        tenants: 1000,
        concurrency: 8,
    };
    while let Some(flag) = raw.next() {
        let value = raw
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => args.database_url = value,
            "--tenants" => args.tenants = value.parse()?,
            "--concurrency" => args.concurrency = value.parse()?,
            _ => bail!("unknown option {flag}; use --database-url, --tenants, --concurrency"),
        }
    }
    if args.tenants == 0 || args.concurrency == 0 {
        bail!("--tenants and --concurrency must be positive");
    }
    Ok(args)
}

/// Creates `count` tenants (`timing-00001`, ...), `concurrency` at a time, as
/// `roster tenant create` does: control row and migrated schema in one transaction each.
async fn create_tenants(pool: &PgPool, count: usize, concurrency: usize) -> anyhow::Result<()> {
    stream::iter(1..=count)
        .map(|n| async move {
            let slug = format!("timing-{n:05}");
            tenancy::tenants::create(pool, &slug, &format!("Timing {n}")).await
        })
        .buffer_unordered(concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(())
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("roster-tenant-timing-{}", std::process::id()))
}

/// The real tenant migrations plus one throwaway migration, from a scratch directory.
async fn throwaway_migrator(dir: &Path) -> anyhow::Result<Migrator> {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/tenant");
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(&real).context("cannot read migrations/tenant")? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    let version = migrate::latest_version(&migrate::TENANT) + 1;
    std::fs::write(
        dir.join(format!("{version}_load_probe.sql")),
        THROWAWAY_MIGRATION,
    )?;
    Ok(Migrator::new(dir.to_path_buf()).await?)
}

fn check(first: &TenantReport, again: &TenantReport, tenants: usize) -> anyhow::Result<()> {
    if !first.failed.is_empty() {
        bail!(
            "{} tenant(s) failed to migrate: {:?}",
            first.failed.len(),
            first.failed
        );
    }
    if first.migrated < tenants || again.migrated != 0 {
        bail!(
            "expected {tenants} tenants migrated once, got {} then {}",
            first.migrated,
            again.migrated
        );
    }
    Ok(())
}

fn per_sec(count: usize, secs: f64) -> f64 {
    count as f64 / secs.max(f64::EPSILON)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
