//! Control and tenant migrations.
//!
//! The control schema uses sqlx's migrator as it is: one schema, one `_sqlx_migrations` table,
//! and sqlx's advisory lock so that replicas starting together migrate it once.
//!
//! Tenant schemas use the same embedded migration files but a runner of our own, because a
//! tenant's schema must be created and brought to the current version in the *same*
//! transaction as its control row (a tenant is never half-created), and because a new
//! migration has to reach thousands of schemas quickly. Each tenant's progress is its
//! `tenants.schema_version`; the tenant's control row is locked while its schema changes, so
//! concurrent runners serialise per tenant and never apply a file twice.

use futures::stream::{self, StreamExt};
use sqlx::migrate::{Migration, Migrator};
use sqlx::{Executor as _, PgConnection, PgPool};
use uuid::Uuid;

use crate::db::CONTROL_SCHEMA;
use crate::{Error, SchemaName};

/// The control-schema migrations, embedded at build time.
pub static CONTROL: Migrator = sqlx::migrate!("../migrations/control");

/// The tenant-schema migrations, embedded at build time.
pub static TENANT: Migrator = sqlx::migrate!("../migrations/tenant");

/// Where the control schema stands relative to this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlStatus {
    pub applied: i64,
    pub required: i64,
}

/// What one `migrate_tenants` run did.
#[derive(Debug, Default)]
pub struct TenantReport {
    pub migrated: usize,
    pub already_current: usize,
    pub failed: Vec<(String, String)>,
}

/// The newest version in a set of migrations (0 when empty).
pub fn latest_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Brings the control schema up to date.
pub async fn migrate_control(pool: &PgPool) -> Result<(), Error> {
    let created = sqlx::raw_sql(&format!("create schema if not exists {CONTROL_SCHEMA}"))
        .execute(pool)
        .await;
    match created {
        // `if not exists` does not hold against a concurrent creation: when several processes
        // start at once, the losers of the race see a unique violation on `pg_namespace`.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {}
        other => {
            other?;
        }
    }
    CONTROL.run(pool).await?;
    Ok(())
}

/// Reads how far the control schema has been migrated.
pub async fn control_status(pool: &PgPool) -> Result<ControlStatus, Error> {
    let exists: bool = sqlx::query_scalar(
        "select exists (select 1 from information_schema.tables \
         where table_schema = $1 and table_name = '_sqlx_migrations')",
    )
    .bind(CONTROL_SCHEMA)
    .fetch_one(pool)
    .await?;
    let applied = if exists {
        sqlx::query_scalar::<_, Option<i64>>(
            "select max(version) from roster_control._sqlx_migrations where success",
        )
        .fetch_one(pool)
        .await?
        .unwrap_or(0)
    } else {
        0
    };
    Ok(ControlStatus {
        applied,
        required: latest_version(&CONTROL),
    })
}

/// Fails unless the control schema is at least at this build's version.
pub async fn ensure_control_current(pool: &PgPool) -> Result<(), Error> {
    let status = control_status(pool).await?;
    if status.applied < status.required {
        return Err(Error::ControlSchemaBehind {
            applied: status.applied,
            required: status.required,
        });
    }
    Ok(())
}

/// Counts tenants whose schema is older than `migrator`'s newest version.
pub async fn tenants_behind(pool: &PgPool, migrator: &Migrator) -> Result<i64, Error> {
    let count =
        sqlx::query_scalar("select count(*) from roster_control.tenants where schema_version < $1")
            .bind(latest_version(migrator))
            .fetch_one(pool)
            .await?;
    Ok(count)
}

/// Brings every tenant schema up to `migrator`'s newest version, `concurrency` at a time.
///
/// Idempotent and resumable: tenants already current are skipped, and a failure in one tenant
/// is reported without stopping the others.
pub async fn migrate_tenants(
    pool: &PgPool,
    migrator: &Migrator,
    concurrency: usize,
) -> Result<TenantReport, Error> {
    let pending: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, slug from roster_control.tenants where schema_version < $1 order by slug",
    )
    .bind(latest_version(migrator))
    .fetch_all(pool)
    .await?;

    let mut report = TenantReport::default();
    let mut results = stream::iter(pending)
        .map(|(id, slug)| async move { (slug, migrate_tenant(pool, migrator, id).await) })
        .buffer_unordered(concurrency.max(1));
    while let Some((slug, result)) = results.next().await {
        match result {
            Ok(0) => report.already_current += 1,
            Ok(applied) => {
                tracing::info!(tenant.slug = %slug, migrations = applied, "tenant migrated");
                report.migrated += 1;
            }
            Err(e) => {
                tracing::error!(tenant.slug = %slug, error = %e, "tenant migration failed");
                report.failed.push((slug, e.to_string()));
            }
        }
    }
    Ok(report)
}

/// Applies the pending migrations of one tenant in one transaction; returns how many ran.
pub async fn migrate_tenant(pool: &PgPool, migrator: &Migrator, id: Uuid) -> Result<usize, Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, i64)> = sqlx::query_as(
        "select schema_name, schema_version from roster_control.tenants where id = $1 for update",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((schema, version)) = row else {
        return Ok(0);
    };
    let schema = SchemaName::parse(&schema)
        .map_err(|_| Error::UnknownTenant(format!("tenant {id} has an invalid schema name")))?;
    let applied = apply_pending(&mut tx, &schema, migrator, version).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Runs, inside the caller's transaction, every migration newer than `from_version` against
/// `schema`, then records the new version on the tenant's control row.
pub(crate) async fn apply_pending(
    tx: &mut PgConnection,
    schema: &SchemaName,
    migrator: &Migrator,
    from_version: i64,
) -> Result<usize, Error> {
    let pending: Vec<&Migration> = migrator
        .iter()
        .filter(|m| m.version > from_version && !m.migration_type.is_down_migration())
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    // `Executor::execute` with a plain string runs the simple protocol, as `raw_sql` does, but
    // its boxed future is `Send`, so tenant creation can run inside a request handler.
    tx.execute(format!("set local search_path to {}", schema.quoted()).as_str())
        .await?;
    for migration in &pending {
        tx.execute(migration.sql.as_ref()).await?;
    }
    tx.execute(format!("set local search_path to {CONTROL_SCHEMA}").as_str())
        .await?;
    let newest = pending
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(from_version);
    sqlx::query(
        "update roster_control.tenants set schema_version = $2, updated_at = now() \
         where schema_name = $1",
    )
    .bind(schema.as_str())
    .bind(newest)
    .execute(&mut *tx)
    .await?;
    Ok(pending.len())
}
