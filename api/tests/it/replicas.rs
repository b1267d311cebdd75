//! Correctness across replicas: real `roster serve` processes sharing Postgres and Redis.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::helpers::{database_url, redis_url, spawn_app, unique_slug, TEST_KEY_ENCRYPTION_KEY};

/// A `roster serve` process on its own port.
struct Replica {
    child: Child,
    base: String,
}

impl Replica {
    async fn start(extra_env: &[(&str, &str)]) -> Replica {
        Replica::start_with(extra_env, Stdio::null()).await
    }

    /// Starts a replica whose log (stderr) goes to `log`.
    async fn start_with(extra_env: &[(&str, &str)], log: Stdio) -> Replica {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_roster"));
        command
            .arg("serve")
            .env("ROSTER_DATABASE_URL", database_url())
            .env("ROSTER_REDIS_URL", redis_url())
            .env("ROSTER_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROSTER_KEY_ENCRYPTION_KEY", TEST_KEY_ENCRYPTION_KEY)
            .env("ROSTER_FUSIONAUTH_ALLOW_PRIVATE_URLS", "true")
            .env("ROSTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let replica = Replica {
            child: command.spawn().expect("roster serve starts"),
            base: format!("http://127.0.0.1:{port}"),
        };
        replica.wait_until_healthy().await;
        replica
    }

    async fn wait_until_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(response) = client.get(format!("{}/healthz", self.base)).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replica at {} never became healthy", self.base);
    }

    /// Sends SIGTERM, as Kubernetes does when a pod is stopped.
    fn terminate(&self) {
        let pid = self.child.id().expect("running") as i32;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

async fn status(client: &reqwest::Client, url: &str, key: &str) -> u16 {
    client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_tenant_rate_limit_holds_across_three_replicas() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let update = tenancy::tenants::SettingsUpdate {
        rate_limit_per_sec: Some(Some(5)),
        ..Default::default()
    };
    tenancy::tenants::update_settings(&app.pool, tenant.tenant.id, &update)
        .await
        .unwrap();
    let replicas = [
        Replica::start(&[]).await,
        Replica::start(&[]).await,
        Replica::start(&[]).await,
    ];
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut allowed = 0;
    for round in 0..15 {
        let replica = &replicas[round % 3];
        let url = format!(
            "{}/scim/v2/{}/ServiceProviderConfig",
            replica.base, tenant.tenant.slug
        );
        if status(&client, &url, &tenant.key.secret).await == 200 {
            allowed += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    // A burst of one second's budget, refilled at 5/s while the loop ran.
    let budget = 5.0 + 5.0 * elapsed;
    assert!(
        f64::from(allowed) <= budget.ceil() + 1.0,
        "{allowed} of 15 allowed in {elapsed:.2} s against a shared 5/s limit"
    );
    assert!(allowed >= 5, "only {allowed} allowed");
}

#[tokio::test]
async fn a_key_revoked_from_the_cli_fails_on_every_replica_within_two_seconds() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let replicas = [Replica::start(&[]).await, Replica::start(&[]).await];
    let client = reqwest::Client::new();
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| {
            format!(
                "{}/scim/v2/{}/ServiceProviderConfig",
                r.base, tenant.tenant.slug
            )
        })
        .collect();
    for url in &urls {
        assert_eq!(status(&client, url, &tenant.key.secret).await, 200);
    }

    let revoked = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["key", "revoke", &tenant.tenant.slug, &tenant.key.prefix])
        .env("ROSTER_DATABASE_URL", database_url())
        .env("ROSTER_REDIS_URL", redis_url())
        .output()
        .await
        .unwrap();
    let revoked_at = Instant::now();
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );

    for url in &urls {
        loop {
            let code = status(&client, url, &tenant.key.secret).await;
            if code == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(2),
                "{url} still answered {code} 2 s after revocation"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn concurrent_migrations_from_several_processes_apply_once() {
    let name = format!("roster_mig_{}", uuid::Uuid::new_v4().simple());
    let url = match database_url().rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("database URL without a name"),
    };
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_roster"))
            .arg("migrate")
            .env("ROSTER_DATABASE_URL", &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
    };

    let (a, b, c) = tokio::join!(migrate(), migrate(), migrate());

    for output in [a.unwrap(), b.unwrap(), c.unwrap()] {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct version) from roster_control._sqlx_migrations",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, distinct);
    assert_eq!(rows, tenancy::migrate::CONTROL.iter().count() as i64);
    let slug = unique_slug();
    tenancy::tenants::create(&pool, &slug, "after concurrent migrations")
        .await
        .unwrap();
    pool.close().await;
    let admin = sqlx::PgPool::connect(&database_url()).await.unwrap();
    sqlx::raw_sql(&format!("drop database if exists \"{name}\" with (force)"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_drains_a_request_in_flight() {
    use api::fusionauth::double::{Fault, FaultKind, FusionAuthDouble};
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let double = FusionAuthDouble::start().await.unwrap();
    let fa_tenant = uuid::Uuid::new_v4();
    double.add_tenant(fa_tenant);
    double.add_api_key("drain-key", None);
    let sealer = api::fusionauth::KeySealer::from_base64(TEST_KEY_ENCRYPTION_KEY).unwrap();
    let settings = tenancy::tenants::FusionAuthSettings {
        base_url: double.base_url(),
        sealed_api_key: sealer.seal("drain-key").unwrap(),
        tenant_id: fa_tenant,
        application_id: None,
    };
    tenancy::tenants::set_fusionauth(&app.pool, tenant.tenant.id, Some(&settings))
        .await
        .unwrap();
    double.set_fault(Fault::always(FaultKind::Slow(Duration::from_millis(1500))));
    let replica = Replica::start(&[("ROSTER_SHUTDOWN_GRACE_SECS", "10")]).await;
    let url = format!("{}/scim/v2/{}/Users", replica.base, tenant.tenant.slug);
    let body = crate::helpers::entra_user("drain@contoso.com", "drain@contoso.com");

    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let request = client
            .post(&url)
            .bearer_auth(&tenant.key.secret)
            .header("content-type", "application/scim+json")
            .body(body.to_string());
        async move { request.send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    replica.terminate();
    let status = in_flight.await.unwrap();

    assert_eq!(status.ok(), Some(201), "the in-flight create was cut off");
    assert_eq!(app.user_count(&tenant).await, 1);
}

#[tokio::test]
async fn logs_carry_no_keys_emails_names_or_filter_values() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let log_file = std::env::temp_dir().join(format!("roster-log-{}.json", uuid::Uuid::new_v4()));
    let env = [
        ("ROSTER_LOG_FORMAT", "json"),
        ("ROSTER_LOG", "info,api=trace,tenancy=trace"),
    ];
    let mut replica =
        Replica::start_with(&env, std::fs::File::create(&log_file).unwrap().into()).await;
    let client = reqwest::Client::new();
    let base = format!("{}/scim/v2/{}", replica.base, tenant.tenant.slug);

    let body = crate::helpers::entra_user("Secret.Person@contoso.com", "secret.person@contoso.com");
    client
        .post(format!("{base}/Users"))
        .bearer_auth(&tenant.key.secret)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    client
        .get(format!(
            "{base}/Users?filter=userName+eq+%22FilterValue%40contoso.com%22"
        ))
        .bearer_auth(&tenant.key.secret)
        .send()
        .await
        .unwrap();
    client
        .get(format!("{base}/Users?filter=manager+eq+%22ManagerValue%22"))
        .bearer_auth("rst_WrongKeyValue")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    replica.child.kill().await.unwrap();

    let logs = std::fs::read_to_string(&log_file).unwrap();
    std::fs::remove_file(&log_file).ok();
    assert!(
        logs.contains("\"operation\":\"scim.users.create\""),
        "no access log:\n{logs}"
    );
    for secret in [
        tenant.key.secret.as_str(),
        "WrongKeyValue",
        "Secret.Person",
        "secret.person",
        "FilterValue",
        "ManagerValue",
        "Test User",
        "filter=",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appears in the logs:\n{logs}"
        );
    }
}

/// A private `redis-server` on its own port, killed when dropped.
async fn private_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server is installed");
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test]
async fn redis_killed_and_restarted_under_load_fails_no_request_and_recovers() {
    let port = free_port();
    let mut redis = private_redis(port).await;
    let redis_url = format!("redis://127.0.0.1:{port}");
    let app = crate::helpers::spawn_app_with(|config| {
        config.store.redis_url = redis_url.parse().unwrap();
    })
    .await;
    let tenant = app.create_tenant().await;
    let probe = "/Users?filter=userName+eq+%22nobody%40contoso.com%22";
    let ready = || async {
        app.request(reqwest::Method::GET, "/readyz", None, None)
            .await
            .body["redis"]
            .clone()
    };
    assert_eq!(ready().await, "healthy");

    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(app.scim_get(&tenant, probe).await.status.as_u16());
    }
    redis.kill().await.unwrap();
    let killed_at = Instant::now();
    while killed_at.elapsed() < Duration::from_secs(2) {
        statuses.push(app.scim_get(&tenant, probe).await.status.as_u16());
    }
    let degraded = ready().await;
    let _restarted = private_redis(port).await;
    let mut recovered = false;
    for _ in 0..40 {
        statuses.push(app.scim_get(&tenant, probe).await.status.as_u16());
        if ready().await == "healthy" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(
        statuses.iter().all(|s| *s == 200),
        "failed requests: {statuses:?}"
    );
    assert_eq!(degraded, "degraded");
    assert!(
        recovered,
        "Redis never reported healthy again without a restart"
    );
}

/// A private Postgres cluster in a temporary directory, run as the `postgres` user.
struct PrivatePostgres {
    dir: std::path::PathBuf,
    port: u16,
    bin: std::path::PathBuf,
}

impl PrivatePostgres {
    async fn init() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's PostgreSQL is installed")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .max()
            .expect("a PostgreSQL version");
        let dir = std::env::temp_dir().join(format!("roster-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
            bin,
        };
        pg.chown().await;
        pg.run("initdb", &["-A", "trust", "-U", "postgres", "-D"])
            .await;
        pg.start().await;
        pg
    }

    async fn chown(&self) {
        let status = Command::new("chown")
            .arg("postgres")
            .arg(&self.dir)
            .status()
            .await
            .unwrap();
        assert!(status.success(), "chown failed");
    }

    async fn run(&self, tool: &str, args: &[&str]) {
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "{tool} failed");
    }

    async fn start(&self) {
        let options = format!("-p {} -k /tmp -c listen_addresses=127.0.0.1", self.port);
        self.run(
            "pg_ctl",
            &["-w", "-o", &options, "-l", "/dev/null", "start", "-D"],
        )
        .await;
    }

    async fn stop(&self) {
        self.run("pg_ctl", &["-w", "-m", "fast", "stop", "-D"])
            .await;
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/roster", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "stop", "-D"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postgres_restarted_under_load_answers_503_fast_loses_no_write_and_recovers() {
    let pg = PrivatePostgres::init().await;
    let url = pg.url();
    let app = crate::helpers::spawn_app_with(|config| {
        config.store.database_url = url.parse().unwrap();
        config.store.db_acquire_timeout_ms = 500;
    })
    .await;
    let tenant = app.create_tenant().await;
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let user = format!("before{n}@contoso.com");
        assert_eq!(app.post_user(&tenant, &user, &user).await.status, 201);
        acknowledged.push(user);
    }

    pg.stop().await;
    let mut outage = Vec::new();
    for n in 0..5 {
        let user = format!("during{n}@contoso.com");
        let started = Instant::now();
        let reply = app.post_user(&tenant, &user, &user).await;
        outage.push((
            reply.status.as_u16(),
            started.elapsed(),
            reply.header("retry-after").is_some(),
        ));
        if reply.status == 201 {
            acknowledged.push(user);
        }
    }
    pg.start().await;
    let mut recovered = false;
    for n in 0..50 {
        let user = format!("after{n}@contoso.com");
        if app.post_user(&tenant, &user, &user).await.status == 201 {
            acknowledged.push(user);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for (status, took, retry_after) in &outage {
        assert_eq!(*status, 503, "{outage:?}");
        assert!(*retry_after, "{outage:?}");
        assert!(*took < Duration::from_secs(3), "a request hung: {outage:?}");
    }
    assert!(recovered, "never recovered without a restart");
    // The test's own pooled connection died with Postgres too; count on a fresh one.
    let mut config = crate::helpers::test_config();
    config.store.database_url = url.parse().unwrap();
    let app = crate::helpers::TestApp {
        pool: tenancy::db::connect(&config.store.db()).await.unwrap(),
        ..app
    };
    let stored = app.user_count(&tenant).await;
    assert_eq!(
        stored as usize,
        acknowledged.len(),
        "an acknowledged write was lost"
    );
}
