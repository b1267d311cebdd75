//! The test harness: start Roster in-process on a random port and talk to it over HTTP.

use std::time::Duration;

use api::config::{AdminAuthConfig, FusionAuthConfig, ServeConfig, StoreConfig};
use api::server::{self, Running};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tenancy::keys::IssuedKey;
use tenancy::Tenant;

/// Seals FusionAuth keys in tests (base64 of 32 bytes).
pub const TEST_KEY_ENCRYPTION_KEY: &str = "cm9zdGVyLXRlc3Qta2V5LWVuY3J5cHRpb24ta2V5ISE=";

/// Signs admin tokens in tests.
pub const TEST_JWT_SECRET: &str = "roster-test-jwt-secret-0123456789abcdef";

/// The database tests share; each test creates its own tenants in it.
pub fn database_url() -> String {
    std::env::var("ROSTER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/roster_test".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("ROSTER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A unique, valid tenant slug.
pub fn unique_slug() -> String {
    format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn test_config() -> ServeConfig {
    ServeConfig {
        store: StoreConfig {
            database_url: database_url().parse().expect("infallible"),
            db_max_connections: 10,
            db_acquire_timeout_ms: 2000,
            db_statement_cache: 2000,
            db_tenant_pools: 0,
            db_borrow_cold_after_ms: 10,
            redis_url: redis_url().parse().expect("infallible"),
        },
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        public_url: None,
        body_limit_bytes: 64 * 1024,
        body_timeout_secs: 2,
        shutdown_grace_secs: 5,
        default_rate_limit: 1000.try_into().expect("non-zero"),
        auth_failures_per_minute: 1000.try_into().expect("non-zero"),
        trust_forwarded_for: false,
        fusionauth: FusionAuthConfig {
            key_encryption_key: Some(TEST_KEY_ENCRYPTION_KEY.parse().expect("infallible")),
            fusionauth_timeout_ms: 3_000,
            fusionauth_allow_private_urls: true,
        },
        admin_auth: AdminAuthConfig {
            jwt_issuer: "roster-test".to_owned(),
            jwt_audience: "roster-admin".to_owned(),
            jwt_hs256_secret: Some(TEST_JWT_SECRET.parse().expect("infallible")),
            jwt_public_keys: None,
            jwt_jwks_url: None,
            jwt_leeway_secs: 5,
        },
    }
}

/// A running Roster and a client for it.
pub struct TestApp {
    pub base: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub running: Running,
}

/// A tenant of the test with a working key.
pub struct TestTenant {
    pub tenant: Tenant,
    pub key: IssuedKey,
}

/// Starts Roster with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts Roster after letting the test adjust the configuration.
pub async fn spawn_app_with(customise: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let mut config = test_config();
    customise(&mut config);
    let pool = tenancy::db::connect(&config.store.db())
        .await
        .expect("test database reachable");
    tenancy::migrate::migrate_control(&pool)
        .await
        .expect("control migrations apply");
    let running = server::start(&config).await.expect("server starts");
    TestApp {
        base: format!("http://{}", running.addr),
        pool,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client builds"),
        running,
    }
}

/// A decoded response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the body is a SCIM error with this status.
    pub fn assert_scim_error(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "body: {}",
            self.body
        );
        assert_eq!(
            self.body["status"],
            status.to_string(),
            "body: {}",
            self.body
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/scim+json"),
            "{self:?}"
        );
    }
}

impl TestApp {
    /// Creates a tenant with one key.
    pub async fn create_tenant(&self) -> TestTenant {
        let tenant = tenancy::tenants::create(&self.pool, &unique_slug(), "Test tenant")
            .await
            .expect("tenant created");
        let key = tenancy::keys::issue(&self.pool, tenant.id, "entra", None)
            .await
            .expect("key issued");
        TestTenant { tenant, key }
    }

    /// Sends a request with an optional bearer key and JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `GET` on the tenant's per-tenant SCIM base.
    pub async fn scim_get(&self, tenant: &TestTenant, path: &str) -> Reply {
        let url = format!("/scim/v2/{}{path}", tenant.tenant.slug);
        self.request(Method::GET, &url, Some(&tenant.key.secret), None)
            .await
    }
}

/// One journal row, as tests read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JournalRow {
    pub operation: String,
    pub outcome: String,
    pub status: Option<i16>,
    pub user_id: Option<uuid::Uuid>,
    pub group_id: Option<uuid::Uuid>,
    pub detail: Option<String>,
    pub quirks: Vec<String>,
    pub fusionauth_outcome: Option<String>,
    pub fusionauth_latency_ms: Option<i32>,
}

/// Entra's create body for a user, as Microsoft documents it.
pub fn entra_user(user_name: &str, email: &str) -> Value {
    serde_json::json!({
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        ],
        "externalId": uuid::Uuid::new_v4().to_string(),
        "userName": user_name,
        "active": true,
        "displayName": "Test User",
        "emails": [{ "primary": true, "type": "work", "value": email }],
        "meta": { "resourceType": "User" },
        "name": { "formatted": "Test User", "familyName": "User", "givenName": "Test" },
        "roles": []
    })
}

impl TestApp {
    /// Any SCIM request on the tenant's per-tenant base.
    pub async fn scim(
        &self,
        method: Method,
        tenant: &TestTenant,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let url = format!("/scim/v2/{}{path}", tenant.tenant.slug);
        self.request(method, &url, Some(&tenant.key.secret), body)
            .await
    }

    /// `POST /Users` with Entra's body.
    pub async fn post_user(&self, tenant: &TestTenant, user_name: &str, email: &str) -> Reply {
        self.scim(
            Method::POST,
            tenant,
            "/Users",
            Some(&entra_user(user_name, email)),
        )
        .await
    }

    /// The tenant's journal, oldest first, after pending read entries are written.
    pub async fn journal(&self, tenant: &TestTenant) -> Vec<JournalRow> {
        self.running.state.journal.flush().await;
        let mut tx = TenantSql::begin(&self.pool, &tenant.tenant.schema)
            .await
            .expect("scoped");
        let rows = sqlx::query_as(
            "select operation, outcome, status, user_id, group_id, detail, quirks, \
               fusionauth_outcome, fusionauth_latency_ms from journal order by id",
        )
        .fetch_all(&mut *tx)
        .await
        .expect("journal readable");
        tx.commit().await.expect("committed");
        rows
    }

    /// How many users the tenant has.
    pub async fn user_count(&self, tenant: &TestTenant) -> i64 {
        let mut tx = TenantSql::begin(&self.pool, &tenant.tenant.schema)
            .await
            .expect("scoped");
        let count = sqlx::query_scalar("select count(*) from users")
            .fetch_one(&mut *tx)
            .await
            .expect("countable");
        tx.commit().await.expect("committed");
        count
    }
}

/// A transaction whose `search_path` is one tenant's schema, so a test's own SQL can name the
/// tenant's tables unqualified. Roster itself never scopes by `search_path` (see
/// `tenancy::scope`); this is only for inspecting and arranging data in tests.
pub struct TenantSql {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    schema: tenancy::SchemaName,
}

impl TenantSql {
    pub async fn begin(pool: &PgPool, schema: &tenancy::SchemaName) -> sqlx::Result<Self> {
        let tx = pool
            .begin_with(format!(
                "begin; set local search_path to {}",
                schema.quoted()
            ))
            .await?;
        Ok(TenantSql {
            tx,
            schema: schema.clone(),
        })
    }

    /// The transaction as Roster's directory functions take it.
    pub fn db(&mut self) -> tenancy::scope::TenantDb<'_> {
        tenancy::scope::TenantDb {
            conn: &mut self.tx,
            schema: &self.schema,
        }
    }

    pub async fn commit(self) -> sqlx::Result<()> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for TenantSql {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for TenantSql {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}
