//! Control and tenant migrations, each test in a database of its own.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tenancy::migrate::{self, TENANT};

use crate::helpers::{database_url, test_config, unique_slug};

/// A fresh, empty database, dropped when the test's pool is closed by `drop_database`.
async fn fresh_database() -> (PgPool, String) {
    let name = format!("roster_mig_{}", uuid::Uuid::new_v4().simple());
    let base = database_url();
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("database URL without a database name"),
    };
    let pool = tenancy::db::connect(&tenancy::db::DbConfig {
        url: url.clone(),
        max_connections: 4,
        acquire_timeout: std::time::Duration::from_secs(5),
        statement_cache: 100,
        tenant_pools: 0,
        borrow_cold_after: std::time::Duration::ZERO,
    })
    .await
    .unwrap();
    (pool, url)
}

async fn drop_database(pool: PgPool, url: &str) {
    pool.close().await;
    let name = url.rsplit('/').next().unwrap();
    let admin = PgPool::connect(&database_url()).await.unwrap();
    sqlx::raw_sql(&format!("drop database if exists \"{name}\" with (force)"))
        .execute(&admin)
        .await
        .unwrap();
}

async fn column_exists(pool: &PgPool, schema: &str, table: &str, column: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from information_schema.columns \
         where table_schema = $1 and table_name = $2 and column_name = $3)",
    )
    .bind(schema)
    .bind(table)
    .bind(column)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The real tenant migrations plus one more, as a release adding a migration would ship.
async fn migrator_with_extra_migration(dir: &Path) -> Migrator {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/tenant");
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(
        dir.join("29991231000000_nickname.sql"),
        "alter table users add column nickname text;",
    )
    .unwrap();
    Migrator::new(dir).await.unwrap()
}

#[tokio::test]
async fn serve_refuses_to_start_while_the_control_schema_is_behind() {
    let (pool, url) = fresh_database().await;
    let mut config = test_config();
    config.store.database_url = url.parse().unwrap();

    let refused = api::server::start(&config).await.err().expect("refused");
    migrate::migrate_control(&pool).await.unwrap();
    let started = api::server::start(&config)
        .await
        .expect("starts once migrated");
    started.stop().await.unwrap();

    assert!(refused.to_string().contains("roster migrate"), "{refused}");
    drop_database(pool, &url).await;
}

#[tokio::test]
async fn migrate_twice_changes_nothing_and_a_new_migration_reaches_every_tenant() {
    let (pool, url) = fresh_database().await;
    migrate::migrate_control(&pool).await.unwrap();
    let mut tenants = Vec::new();
    for _ in 0..3 {
        tenants.push(
            tenancy::tenants::create(&pool, &unique_slug(), "T")
                .await
                .unwrap(),
        );
    }

    migrate::migrate_control(&pool).await.unwrap();
    let again = migrate::migrate_tenants(&pool, &TENANT, 2).await.unwrap();
    let dir = tempdir();
    let next = migrator_with_extra_migration(&dir).await;
    let upgraded = migrate::migrate_tenants(&pool, &next, 2).await.unwrap();
    let resumed = migrate::migrate_tenants(&pool, &next, 2).await.unwrap();

    assert_eq!((again.migrated, again.failed.len()), (0, 0));
    assert_eq!((upgraded.migrated, upgraded.failed.len()), (3, 0));
    assert_eq!(resumed.migrated, 0);
    for tenant in &tenants {
        assert!(column_exists(&pool, tenant.schema.as_str(), "users", "nickname").await);
        let version: i64 =
            sqlx::query_scalar("select schema_version from roster_control.tenants where id = $1")
                .bind(tenant.id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(version, 29991231000000);
    }
    assert_eq!(migrate::tenants_behind(&pool, &next).await.unwrap(), 0);
    drop_database(pool, &url).await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_new_tenant_starts_at_the_current_version_with_its_basic_user_group() {
    let (pool, url) = fresh_database().await;
    migrate::migrate_control(&pool).await.unwrap();

    let tenant = tenancy::tenants::create(&pool, &unique_slug(), "T")
        .await
        .unwrap();
    let mut tx = crate::helpers::TenantSql::begin(&pool, &tenant.schema)
        .await
        .unwrap();
    let basic: Vec<String> =
        sqlx::query_scalar("select display_name from groups where is_basic_user")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(tenant.schema_version, migrate::latest_version(&TENANT));
    assert_eq!(basic, vec!["Basic User".to_owned()]);
    assert_eq!(migrate::tenants_behind(&pool, &TENANT).await.unwrap(), 0);
    drop_database(pool, &url).await;
}

#[tokio::test]
async fn concurrent_migrations_apply_each_file_once() {
    let (pool, url) = fresh_database().await;
    migrate::migrate_control(&pool).await.unwrap();
    for _ in 0..4 {
        tenancy::tenants::create(&pool, &unique_slug(), "T")
            .await
            .unwrap();
    }
    let dir = tempdir();
    let next = migrator_with_extra_migration(&dir).await;

    let (a, b, c) = tokio::join!(
        migrate::migrate_tenants(&pool, &next, 2),
        migrate::migrate_tenants(&pool, &next, 2),
        migrate::migrate_control(&pool),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    c.unwrap();

    assert!(a.failed.is_empty() && b.failed.is_empty(), "{a:?} {b:?}");
    assert_eq!(a.migrated + b.migrated, 4, "{a:?} {b:?}");
    drop_database(pool, &url).await;
    std::fs::remove_dir_all(dir).ok();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("roster-mig-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
