//! Tenancy, authentication, caching and limits, through the real server.

use std::time::{Duration, Instant};

use api::directory::journal::{Entry, Outcome};
use chrono::Utc;
use reqwest::Method;
use tenancy::db::{Db, DbConfig};
use tenancy::scope::TenantConn;
use tenancy::tenants::{self, SettingsUpdate, TenantStatus};
use tenancy::SchemaName;

use crate::helpers::{spawn_app, spawn_app_with, unique_slug};

const SPC: &str = "/ServiceProviderConfig";

#[tokio::test]
async fn both_scim_bases_serve_the_keys_tenant() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let key = Some(tenant.key.secret.as_str());

    let per_tenant = app.scim_get(&tenant, SPC).await;
    let from_key = app
        .request(Method::GET, "/scim/v2/ServiceProviderConfig", key, None)
        .await;

    for reply in [&per_tenant, &from_key] {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/scim+json"));
        assert_eq!(reply.body["patch"]["supported"], true);
    }
    let location = per_tenant.body["meta"]["location"].as_str().unwrap();
    assert!(location.ends_with(&format!(
        "/scim/v2/{}/ServiceProviderConfig",
        tenant.tenant.slug
    )));
}

#[tokio::test]
async fn keys_work_only_for_their_own_tenant() {
    let app = spawn_app().await;
    let a = app.create_tenant().await;
    let b = app.create_tenant().await;

    let url = format!("/scim/v2/{}{SPC}", b.tenant.slug);
    let reply = app
        .request(Method::GET, &url, Some(&a.key.secret), None)
        .await;

    reply.assert_scim_error(401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"roster\"")
    );
}

#[tokio::test]
async fn missing_malformed_unknown_revoked_and_expired_keys_are_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let url = format!("/scim/v2/{}{SPC}", tenant.tenant.slug);
    let revoked = tenancy::keys::issue(&app.pool, tenant.tenant.id, "old", None)
        .await
        .unwrap();
    tenancy::keys::revoke(&app.pool, tenant.tenant.id, &revoked.prefix)
        .await
        .unwrap();
    let expired = tenancy::keys::issue(
        &app.pool,
        tenant.tenant.id,
        "temp",
        Some(Utc::now() - chrono::Duration::seconds(1)),
    )
    .await
    .unwrap();

    let no_key = app.request(Method::GET, &url, None, None).await;
    let unknown = app
        .request(Method::GET, &url, Some("rst_not-a-real-key"), None)
        .await;
    let revoked = app
        .request(Method::GET, &url, Some(&revoked.secret), None)
        .await;
    let expired = app
        .request(Method::GET, &url, Some(&expired.secret), None)
        .await;
    let basic = app
        .client
        .get(format!("{}{url}", app.base))
        .basic_auth("entra", Some(&tenant.key.secret))
        .send()
        .await
        .unwrap();

    for reply in [no_key, unknown, revoked, expired] {
        reply.assert_scim_error(401);
    }
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn several_keys_of_a_tenant_work_at_once_for_rotation() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let second = tenancy::keys::issue(&app.pool, tenant.tenant.id, "entra-new", None)
        .await
        .unwrap();
    let url = format!("/scim/v2/{}{SPC}", tenant.tenant.slug);

    let old = app
        .request(Method::GET, &url, Some(&tenant.key.secret), None)
        .await;
    let new = app
        .request(Method::GET, &url, Some(&second.secret), None)
        .await;

    assert_eq!(old.status, 200);
    assert_eq!(new.status, 200);
}

#[tokio::test]
async fn a_suspended_tenant_gets_403_and_resumes() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;

    tenants::set_status(&app.pool, tenant.tenant.id, TenantStatus::Suspended)
        .await
        .unwrap();
    app.running.state.keys.invalidate_all().await;
    let suspended = app.scim_get(&tenant, SPC).await;
    tenants::set_status(&app.pool, tenant.tenant.id, TenantStatus::Active)
        .await
        .unwrap();
    app.running.state.keys.invalidate_all().await;
    let resumed = app.scim_get(&tenant, SPC).await;

    suspended.assert_scim_error(403);
    assert!(suspended.body["detail"]
        .as_str()
        .unwrap()
        .contains("suspended"));
    assert_eq!(resumed.status, 200);
}

#[tokio::test]
async fn a_deleted_tenants_keys_stop_working_at_once() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    assert_eq!(app.scim_get(&tenant, SPC).await.status, 200);

    tenants::delete(&app.pool, tenant.tenant.id).await.unwrap();
    app.running.state.keys.invalidate_all().await;
    let reply = app
        .request(
            Method::GET,
            "/scim/v2/ServiceProviderConfig",
            Some(&tenant.key.secret),
            None,
        )
        .await;

    reply.assert_scim_error(401);
    let schema_left: bool = sqlx::query_scalar(
        "select exists (select 1 from information_schema.schemata where schema_name = $1)",
    )
    .bind(tenant.tenant.schema.as_str())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!schema_left, "the tenant's schema was not dropped");
}

#[tokio::test]
async fn revocation_reaches_a_second_replica_within_two_seconds() {
    let first = spawn_app().await;
    let second = spawn_app().await;
    let tenant = first.create_tenant().await;
    let url = format!("/scim/v2/{}{SPC}", tenant.tenant.slug);
    let key = Some(tenant.key.secret.as_str());
    assert_eq!(
        second.request(Method::GET, &url, key, None).await.status,
        200
    );
    assert_eq!(
        first.request(Method::GET, &url, key, None).await.status,
        200
    );

    tenancy::keys::revoke(&first.pool, tenant.tenant.id, &tenant.key.prefix)
        .await
        .unwrap();
    first.running.state.keys.invalidate_all().await;
    let revoked_at = Instant::now();

    loop {
        let reply = second.request(Method::GET, &url, key, None).await;
        if reply.status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "the second replica still accepted the revoked key after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first
        .request(Method::GET, &url, key, None)
        .await
        .assert_scim_error(401);
}

#[tokio::test]
async fn with_redis_unreachable_authenticated_requests_are_still_served() {
    let app = spawn_app_with(|config| {
        config.store.redis_url = "redis://127.0.0.1:1".parse().unwrap();
    })
    .await;
    let tenant = app.create_tenant().await;

    let scim = app.scim_get(&tenant, SPC).await;
    let ready = app.request(Method::GET, "/readyz", None, None).await;
    let bad_key = app
        .request(
            Method::GET,
            "/scim/v2/ServiceProviderConfig",
            Some("rst_nope"),
            None,
        )
        .await;

    assert_eq!(scim.status, 200, "{scim:?}");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["redis"], "degraded");
    assert_eq!(ready.body["postgres"], "ok");
    bad_key.assert_scim_error(401);
}

#[tokio::test]
async fn without_redis_configured_the_service_runs_single_node() {
    let app = spawn_app_with(|config| config.store.redis_url = "".parse().unwrap()).await;
    let tenant = app.create_tenant().await;

    let scim = app.scim_get(&tenant, SPC).await;
    let ready = app.request(Method::GET, "/readyz", None, None).await;

    assert_eq!(scim.status, 200);
    assert_eq!(ready.body["redis"], "disabled");
}

async fn assert_rate_limited(app: &crate::helpers::TestApp) {
    let tenant = app.create_tenant().await;
    let update = SettingsUpdate {
        rate_limit_per_sec: Some(Some(3)),
        ..SettingsUpdate::default()
    };
    tenants::update_settings(&app.pool, tenant.tenant.id, &update)
        .await
        .unwrap();
    let tenant = crate::helpers::TestTenant {
        tenant: tenants::get(&app.pool, tenant.tenant.id)
            .await
            .unwrap()
            .unwrap(),
        key: tenant.key,
    };

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let reply = app.scim_get(&tenant, SPC).await;
        statuses.push(reply.status.as_u16());
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }

    let limited = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    limited.assert_scim_error(429);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 3,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn over_the_tenant_rate_limit_is_429_with_retry_after_through_redis() {
    let app = spawn_app().await;
    assert_rate_limited(&app).await;
}

#[tokio::test]
async fn over_the_tenant_rate_limit_is_429_in_process_without_redis() {
    let app = spawn_app_with(|config| config.store.redis_url = "".parse().unwrap()).await;
    assert_rate_limited(&app).await;
}

#[tokio::test]
async fn the_rate_limit_is_shared_by_replicas_through_redis() {
    let first = spawn_app().await;
    let second = spawn_app().await;
    let tenant = first.create_tenant().await;
    let update = SettingsUpdate {
        rate_limit_per_sec: Some(Some(4)),
        ..SettingsUpdate::default()
    };
    tenants::update_settings(&first.pool, tenant.tenant.id, &update)
        .await
        .unwrap();
    let url = format!("/scim/v2/{}{SPC}", tenant.tenant.slug);
    let key = Some(tenant.key.secret.as_str());

    let mut allowed = 0;
    for round in 0..6 {
        let app = if round % 2 == 0 { &first } else { &second };
        if app.request(Method::GET, &url, key, None).await.status == 200 {
            allowed += 1;
        }
    }

    assert!(
        allowed <= 5,
        "{allowed} of 6 allowed with a shared budget of 4/s"
    );
}

#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    let app = spawn_app_with(|config| {
        config.auth_failures_per_minute = 3.try_into().unwrap();
        config.trust_forwarded_for = true;
    })
    .await;
    let tenant = app.create_tenant().await;
    let url = format!("/scim/v2/{}{SPC}", tenant.tenant.slug);
    let send = |address: &'static str, key: String| {
        let request = app
            .client
            .get(format!("{}{url}", app.base))
            .bearer_auth(key)
            .header("x-forwarded-for", address);
        async move { request.send().await.unwrap().status().as_u16() }
    };

    let mut attacker = Vec::new();
    for _ in 0..5 {
        attacker.push(send("198.51.100.7", "rst_guess".to_owned()).await);
    }
    let attacker_valid = send("198.51.100.7", tenant.key.secret.clone()).await;
    let neighbour = send("198.51.100.8", tenant.key.secret.clone()).await;

    assert_eq!(&attacker[..3], &[401, 401, 401]);
    assert_eq!(attacker[4], 429);
    assert_eq!(
        attacker_valid, 429,
        "a blocked address is refused before key lookup"
    );
    assert_eq!(neighbour, 200);
}

#[tokio::test]
async fn tenants_cannot_see_each_others_rows_even_unscoped() {
    let app = spawn_app().await;
    let a = app.create_tenant().await;
    let b = app.create_tenant().await;
    for (tenant, name) in [(&a, "alice"), (&b, "bob")] {
        let mut tx = tenancy::scope::begin(&app.pool, &tenant.tenant.schema)
            .await
            .unwrap();
        let user = api::directory::users::NewUser {
            id: uuid::Uuid::new_v4(),
            user_name: name.to_owned(),
            external_id: None,
            display_name: None,
            given_name: None,
            family_name: None,
            formatted_name: None,
            work_email: None,
            emails: serde_json::json!([]),
            active: true,
            source: "scim",
            fusionauth_user_id: None,
            fusionauth_link: "skipped",
        };
        api::directory::users::insert(&mut tx.db(), &user)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    let mut conn = tenancy::scope::read(&app.pool, &a.tenant.schema)
        .await
        .unwrap();
    let seen_by_a = api::directory::users::list(&mut conn.db(), None, 0, 100)
        .await
        .unwrap();
    drop(conn);
    let unscoped = sqlx::query_scalar::<_, String>("select user_name from users")
        .fetch_all(&app.pool)
        .await;

    let names: Vec<&str> = seen_by_a
        .items
        .iter()
        .map(|u| u.user_name.as_str())
        .collect();
    assert_eq!(names, ["alice"]);
    let error = unscoped.expect_err("an unscoped query must not find tenant tables");
    let code = error.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "42P01", "undefined_table");
}

#[tokio::test]
async fn scoping_does_not_leak_into_the_pool() {
    let app = spawn_app_with(|config| config.store.db_max_connections = 1).await;
    let tenant = app.create_tenant().await;
    let pool = tenancy::db::connect(&DbConfig {
        url: crate::helpers::database_url(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        statement_cache: 100,
        tenant_pools: 0,
        borrow_cold_after: Duration::ZERO,
    })
    .await
    .unwrap();

    let mut tx = tenancy::scope::begin(&pool, &tenant.tenant.schema)
        .await
        .unwrap();
    api::directory::users::list(&mut tx.db(), None, 0, 1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut conn = tenancy::scope::read(&pool, &tenant.tenant.schema)
        .await
        .unwrap();
    api::directory::groups::list_synced(&mut conn.db(), None, 0, 1)
        .await
        .unwrap();
    drop(conn);
    let path: String = sqlx::query_scalar("show search_path")
        .fetch_one(&pool)
        .await
        .unwrap();

    assert_eq!(path, "roster_control");
}

/// A server's pools of `max_connections` in all, the tenants' split into `tenant_pools`.
async fn pools_of(max_connections: u32, tenant_pools: u32) -> Db {
    pools_borrowing_after(max_connections, tenant_pools, Duration::from_millis(10)).await
}

/// [`pools_of`], a busy tenant waiting `borrow_cold_after` for its home pool.
async fn pools_borrowing_after(
    max_connections: u32,
    tenant_pools: u32,
    borrow_cold_after: Duration,
) -> Db {
    Db::connect(&DbConfig {
        url: crate::helpers::database_url(),
        max_connections,
        acquire_timeout: Duration::from_secs(30),
        statement_cache: 100,
        tenant_pools,
        borrow_cold_after,
    })
    .await
    .unwrap()
}

/// Six connections, a tenant pool per connection after the control pool's one.
async fn routed_db() -> Db {
    pools_of(6, 0).await
}

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Each tenant keeps to its home pool, so only that pool's backends cache its tables and
/// statements (see `tenancy::db::Db`).
#[tokio::test]
async fn a_tenant_is_served_by_the_connections_of_its_home_pool() {
    let db = routed_db().await;
    let schema = SchemaName::generate();
    let home = db.home_of(&schema);

    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let mut conn = tenancy::scope::read(&db, &schema).await.unwrap();
        pids.insert(backend_pid(conn.db().conn).await);
        conn.done();
        let mut tx = tenancy::scope::begin(&db, &schema).await.unwrap();
        pids.insert(backend_pid(tx.db().conn).await);
        tx.commit().await.unwrap();
    }
    let home_pid = backend_pid(tenancy::scope::read(&db, &schema).await.unwrap().db().conn).await;

    let opened: Vec<usize> = db.tenant_pools().iter().map(|p| p.status().size).collect();
    assert_eq!(db.tenant_pools().len(), 5);
    assert_eq!(pids.into_iter().collect::<Vec<_>>(), [home_pid]);
    assert_eq!(
        opened.iter().sum::<usize>(),
        1,
        "one connection opened: {opened:?}"
    );
    assert_eq!(opened[home], 1, "in the home pool: {opened:?}");
    let homes: std::collections::BTreeSet<usize> = (0..50)
        .map(|_| db.home_of(&SchemaName::generate()))
        .collect();
    assert!(homes.len() >= 3, "tenants spread over the pools: {homes:?}");
}

/// A tenant whose home pool is busy borrows an idle connection elsewhere after a short wait.
#[tokio::test]
async fn a_tenant_whose_home_pool_is_busy_borrows_an_idle_connection() {
    let db = routed_db().await;
    let schema = SchemaName::generate();
    let mut held = tenancy::scope::read(&db, &schema).await.unwrap();
    let held_pid = backend_pid(held.db().conn).await;

    let mut borrowed =
        tokio::time::timeout(Duration::from_secs(10), tenancy::scope::read(&db, &schema))
            .await
            .expect("did not wait for the home pool's connection")
            .unwrap();

    assert_ne!(backend_pid(borrowed.db().conn).await, held_pid);
}

/// A tenant whose home pool is busy waits for it rather than taking at once a connection whose
/// backend has never served the tenant (and would first build its caches and statements).
#[tokio::test]
async fn a_busy_tenant_waits_for_its_home_pool_before_borrowing_a_cold_connection() {
    let db = pools_borrowing_after(6, 0, Duration::from_secs(20)).await;
    let schema = SchemaName::generate();
    let mut held = tenancy::scope::read(&db, &schema).await.unwrap();
    let home_pid = backend_pid(held.db().conn).await;

    let waiting = tokio::spawn({
        let db = db.clone();
        let schema = schema.clone();
        async move { read_backend_pid(&db, &schema).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waited = !waiting.is_finished();
    held.done();
    let served_by = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("still waiting after the home connection was handed back")
        .unwrap();

    assert!(waited, "borrowed a cold connection instead of waiting");
    assert_eq!(served_by, home_pid);
}

/// A busy tenant takes at once a connection of a pool that has served it before, even when a
/// pool that never has comes first after its home.
#[tokio::test]
async fn a_busy_tenant_borrows_first_from_a_pool_that_has_served_it() {
    let db = pools_borrowing_after(6, 0, Duration::from_millis(200)).await;
    let schema = SchemaName::generate();
    let home = db.home_of(&schema);
    let next = (home + 1) % db.tenant_pools().len();
    let neighbour = loop {
        let other = SchemaName::generate();
        if db.home_of(&other) == next {
            break other;
        }
    };
    let held_home = tenancy::scope::read(&db, &schema).await.unwrap();
    let mut held_next = tenancy::scope::read(&db, &neighbour).await.unwrap();
    let next_pid = backend_pid(held_next.db().conn).await;
    // Home and the pool after it busy: after its wait the tenant borrows from a third pool.
    let lender_pid = read_backend_pid(&db, &schema).await.unwrap();
    held_next.done();

    let served_by = read_backend_pid(&db, &schema).await.unwrap();

    assert_ne!(lender_pid, next_pid);
    assert_eq!(served_by, lender_pid, "not the pool that served the tenant");
    held_home.done();
}

/// With every connection in use, a request waits for the first one handed back in any pool,
/// not only for one of its home pool.
#[tokio::test]
async fn a_waiting_tenant_takes_the_first_connection_handed_back_in_any_pool() {
    let db = routed_db().await;
    let schema = SchemaName::generate();
    let home = db.home_of(&schema);
    let mut one_per_home = std::collections::BTreeMap::new();
    while one_per_home.len() < db.tenant_pools().len() {
        let other = SchemaName::generate();
        one_per_home.entry(db.home_of(&other)).or_insert(other);
    }
    // While a pool has room, a tenant's connection opens at home: one held per pool.
    let mut held = Vec::new();
    for (at, other) in &one_per_home {
        held.push((*at, tenancy::scope::read(&db, other).await.unwrap()));
    }
    let elsewhere = held.iter().position(|(at, _)| *at != home).unwrap();
    let (_, mut freed) = held.swap_remove(elsewhere);
    let freed_pid = backend_pid(freed.db().conn).await;

    let waiting = tokio::spawn({
        let db = db.clone();
        let schema = schema.clone();
        async move {
            let mut conn = tenancy::scope::read(&db, &schema).await.unwrap();
            backend_pid(conn.db().conn).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    freed.done();
    let served_by = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("still waiting after a connection was handed back")
        .unwrap();

    assert_eq!(served_by, freed_pid);
}

/// One tenant connection in all, so every read below takes the same pooled connection.
async fn one_connection_db() -> Db {
    pools_of(2, 1).await
}

/// Ends the Postgres backend `pid`, waiting (up to 5 s) until it has exited, so the next use of
/// its connection cannot reach it first.
async fn terminate_backend(pid: i32) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&crate::helpers::database_url())
        .await
        .unwrap();
    sqlx::query("select pg_terminate_backend($1, 5000)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn read_backend_pid(db: &Db, schema: &SchemaName) -> Result<i32, sqlx::Error> {
    let mut conn = tenancy::scope::read(db, schema).await?;
    let pid = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(conn.db().conn)
        .await?;
    conn.done();
    Ok(pid)
}

/// A read handed back with `done` is reused at once, without the round trip of a ping; a
/// connection handed back after an error is checked before its next use and replaced when it
/// is dead, so a connection Postgres dropped costs one failed request, not one per use.
#[tokio::test]
async fn a_dead_connection_fails_once_and_is_then_replaced() {
    let db = one_connection_db().await;
    let schema = SchemaName::generate();
    let first = read_backend_pid(&db, &schema).await.unwrap();

    terminate_backend(first).await;
    let unchecked = read_backend_pid(&db, &schema).await;
    let replaced = read_backend_pid(&db, &schema).await.unwrap();

    assert!(
        tenancy::Error::from(unchecked.expect_err("reused without a ping")).is_unavailable(),
        "the dead connection's failure is answered as Postgres being unavailable"
    );
    assert_ne!(replaced, first);
}

/// A connection idle for more than a second is checked before use, so one that died while idle
/// (a Postgres restart overnight) never reaches a request.
#[tokio::test]
async fn a_connection_that_died_while_idle_is_replaced_before_use() {
    let db = one_connection_db().await;
    let schema = SchemaName::generate();
    let first = read_backend_pid(&db, &schema).await.unwrap();

    terminate_backend(first).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let next = read_backend_pid(&db, &schema).await;

    assert_ne!(next.expect("checked and replaced before use"), first);
}

/// A transaction dropped without commit is rolled back before the connection serves anyone
/// else: nothing it wrote is visible, and the next user is not inside it.
#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_before_the_connection_is_reused() {
    let db = one_connection_db().await;
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let schema = tenant.tenant.schema.clone();

    let mut tx = tenancy::scope::begin(&db, &schema).await.unwrap();
    sqlx::query(&format!(
        "insert into {schema}.groups (id, display_name) values (gen_random_uuid(), 'Dropped')"
    ))
    .execute(tx.db().conn)
    .await
    .unwrap();
    drop(tx);
    let mut conn = tenancy::scope::read(&db, &schema).await.unwrap();
    let dropped: i64 = sqlx::query_scalar(&format!(
        "select count(*) from {schema}.groups where display_name = 'Dropped'"
    ))
    .fetch_one(conn.db().conn)
    .await
    .unwrap();
    let in_transaction: bool =
        sqlx::query_scalar("select pg_current_xact_id_if_assigned() is not null")
            .fetch_one(conn.db().conn)
            .await
            .unwrap();

    assert_eq!(dropped, 0);
    assert!(
        !in_transaction,
        "the next user runs outside the dropped transaction"
    );
}

/// Tenant statements are planned once per connection, not five times first (see `tenancy::db`).
#[tokio::test]
async fn pooled_connections_plan_statements_generically() {
    let app = spawn_app().await;

    let mode: String = sqlx::query_scalar("show plan_cache_mode")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    assert_eq!(mode, "force_generic_plan");
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_in_scim_shape() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let key = Some(tenant.key.secret.as_str());
    let slug = &tenant.tenant.slug;

    let unknown = app
        .request(Method::GET, &format!("/scim/v2/{slug}/Nope"), key, None)
        .await;
    let deep = app
        .request(Method::GET, "/scim/v2/a/b/c/d", key, None)
        .await;
    let write = app
        .request(
            Method::POST,
            &format!("/scim/v2/{slug}{SPC}"),
            key,
            Some(&serde_json::json!({})),
        )
        .await;

    unknown.assert_scim_error(404);
    deep.assert_scim_error(404);
    write.assert_scim_error(405);
}

#[tokio::test]
async fn oversized_bodies_are_413_in_scim_shape() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let url = format!("{}/scim/v2/{}/Users", app.base, tenant.tenant.slug);
    let big = "x".repeat(200 * 1024);

    let declared = app
        .client
        .post(&url)
        .bearer_auth(&tenant.key.secret)
        .header("content-type", "application/scim+json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let chunked = app
        .client
        .post(&url)
        .bearer_auth(&tenant.key.secret)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(vec![
            Ok::<_, std::io::Error>(big.into_bytes()),
        ])))
        .send()
        .await
        .unwrap();

    for response in [declared, chunked] {
        assert_eq!(response.status(), 413);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], "413");
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;

    let health = app.request(Method::GET, "/healthz", None, None).await;
    let ready = app.request(Method::GET, "/readyz", None, None).await;

    assert_eq!(health.status, 200);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["postgres"], "ok");
    assert_eq!(ready.body["redis"], "healthy");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;

    let reply = app.request(Method::GET, "/healthz", None, None).await;
    let echoed = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "support-case-42")
        .send()
        .await
        .unwrap();

    assert_eq!(reply.header("x-request-id").map(str::len), Some(32));
    assert_eq!(echoed.headers()["x-request-id"], "support-case-42");
}

#[tokio::test]
async fn slugs_are_validated_and_unique() {
    let app = spawn_app().await;
    let slug = unique_slug();
    tenants::create(&app.pool, &slug, "First").await.unwrap();

    let taken = tenants::create(&app.pool, &slug, "Second")
        .await
        .unwrap_err();
    let reserved = tenants::create(&app.pool, "users", "Users")
        .await
        .unwrap_err();
    let uppercase = tenants::create(&app.pool, "Acme", "Acme")
        .await
        .unwrap_err();

    assert!(taken.to_string().contains("already exists"), "{taken}");
    assert!(reserved.to_string().contains("SCIM endpoint"), "{reserved}");
    assert!(uppercase.to_string().contains("lowercase"), "{uppercase}");
}

#[tokio::test]
async fn the_cli_refuses_invalid_slugs_with_a_clear_message() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["tenant", "create", "Not_A_Slug", "--name", "x"])
        .env("ROSTER_DATABASE_URL", crate::helpers::database_url())
        .output()
        .await
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("invalid tenant slug"), "{stderr}");
    assert!(stderr.contains("lowercase"), "{stderr}");
}

#[tokio::test]
async fn last_used_is_recorded_without_a_write_per_request() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;

    for _ in 0..5 {
        assert_eq!(app.scim_get(&tenant, SPC).await.status, 200);
    }
    let mut last_used = None;
    for _ in 0..50 {
        let keys = tenancy::keys::list(&app.pool, tenant.tenant.id)
            .await
            .unwrap();
        last_used = keys[0].last_used_at;
        if last_used.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = last_used.expect("last_used_at recorded");
    assert_eq!(app.scim_get(&tenant, SPC).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let keys = tenancy::keys::list(&app.pool, tenant.tenant.id)
        .await
        .unwrap();

    assert_eq!(
        keys[0].last_used_at,
        Some(first),
        "written again within the minute"
    );
}

#[tokio::test]
async fn metrics_count_requests_cache_lookups_and_pool_use_without_tenant_labels() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    for _ in 0..3 {
        app.scim_get(&tenant, SPC).await;
    }
    let unknown_key = format!("rst_{}", uuid::Uuid::new_v4().simple());
    let spc = "/scim/v2/ServiceProviderConfig";
    app.request(Method::GET, spc, Some(&unknown_key), None)
        .await;

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    for expected in [
        r#"roster_http_requests_total{operation="scim.discovery.service_provider_config",status="200"}"#,
        r#"roster_http_request_duration_seconds_bucket{operation="scim.discovery.service_provider_config""#,
        r#"roster_key_cache_lookups_total{tier="local",key="known"}"#,
        r#"roster_key_cache_lookups_total{tier="postgres",key="unknown"}"#,
        r#"roster_db_pool_connections{state="idle"}"#,
        "roster_redis_degraded 0",
        "roster_rate_limit_redis_calls_total",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains(&tenant.tenant.slug),
        "a tenant label leaked into metrics"
    );
}

#[tokio::test]
async fn slow_request_bodies_are_cut_with_408_in_scim_shape() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let mut stream = tokio::net::TcpStream::connect(app.running.addr)
        .await
        .unwrap();
    let head = format!(
        "POST /scim/v2/{}/Users HTTP/1.1\r\nHost: roster\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{{\"userName\"",
        tenant.tenant.slug, tenant.key.secret
    );

    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .expect("the server answered")
        .unwrap();
    let response = String::from_utf8_lossy(&response[..read]);

    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("urn:ietf:params:scim:api:messages:2.0:Error"),
        "{response}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.user_count(&tenant).await, 0);
}

/// Takes every connection of the app's home pools, so tenant work finds none free.
async fn hold_every_tenant_connection(app: &crate::helpers::TestApp) -> Vec<TenantConn> {
    let db = &app.running.state.db;
    let mut held = Vec::new();
    for _ in 0..db.usage().max - db.control().options().get_max_connections() as usize {
        held.push(
            tenancy::scope::read(db, &SchemaName::generate())
                .await
                .unwrap(),
        );
    }
    held
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_quickly_instead_of_hanging() {
    let app = spawn_app_with(|config| {
        config.store.db_max_connections = 1;
        config.store.db_acquire_timeout_ms = 300;
    })
    .await;
    let tenant = app.create_tenant().await;
    assert_eq!(app.scim_get(&tenant, SPC).await.status, 200);
    let held = hold_every_tenant_connection(&app).await;

    let started = Instant::now();
    let reply = app
        .scim_get(&tenant, "/Users?filter=userName+eq+%22x%22")
        .await;
    let waited = started.elapsed();
    drop(held);
    let after = app
        .scim_get(&tenant, "/Users?filter=userName+eq+%22x%22")
        .await;

    reply.assert_scim_error(503);
    assert!(reply.header("retry-after").is_some());
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    assert_eq!(after.status, 200, "recovers once a connection is free");
}

#[tokio::test]
async fn read_journal_entries_wait_out_a_starved_pool_instead_of_being_dropped() {
    let app = spawn_app_with(|config| {
        config.store.db_max_connections = 1;
        config.store.db_acquire_timeout_ms = 100;
    })
    .await;
    let tenant = app.create_tenant().await;
    let held = hold_every_tenant_connection(&app).await;

    let entry = Entry::new("starved-read", "scim.users.list", Outcome::Matched, 200);
    app.running
        .state
        .journal
        .submit(&tenant.tenant.schema, entry);
    // Several flushes run meanwhile, and each finds no free connection.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    drop(held);
    let journal = app.journal(&tenant).await;

    let written = journal
        .iter()
        .filter(|row| row.operation == "scim.users.list")
        .count();
    assert_eq!(
        written, 1,
        "the entry was dropped or written twice: {journal:?}"
    );
}
