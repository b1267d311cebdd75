//! Admin API test helpers: tokens signed the way an identity provider would sign them, typed
//! calls, and a database of a test's own for assertions about complete listings.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{database_url, spawn_app_with, Reply, TestApp, TEST_JWT_SECRET};

/// The issuer and audience `test_config` expects.
pub const ISSUER: &str = "roster-test";
pub const AUDIENCE: &str = "roster-admin";
/// The subject of the helper tokens, which audit records must name as the actor.
pub const SUPPORT: &str = "support@example.com";

/// Valid claims for `sub` with `roles`, expiring in ten minutes; tests alter them.
pub fn claims(sub: &str, roles: &[&str]) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "roles": roles,
        "iat": now,
        "exp": now + 600,
    })
}

/// Signs `claims` with the test HS256 secret.
pub fn sign(claims: &Value) -> String {
    sign_with_secret(claims, TEST_JWT_SECRET)
}

pub fn sign_with_secret(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

pub fn write_token() -> String {
    sign(&claims(SUPPORT, &["roster:write"]))
}

pub fn read_token() -> String {
    sign(&claims(SUPPORT, &["roster:read"]))
}

/// A token confined to the tenant `slug`.
pub fn scoped_token(slug: &str, role: &str) -> String {
    let mut claims = claims("tenant-admin@example.com", &[role]);
    claims["tenant"] = json!(slug);
    sign(&claims)
}

/// An ES256 signing key generated for the test, with its public half as PEM and as a JWK.
pub struct Es256Key {
    pub encoding: EncodingKey,
    pub public_pem: String,
    pub kid: String,
    pub jwk: Value,
}

/// The DER prefix of a P-256 `SubjectPublicKeyInfo`, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl Es256Key {
    pub fn generate(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let spki = [P256_SPKI_PREFIX.as_slice(), point].concat();
        let body = STANDARD.encode(spki);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        Es256Key {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            public_pem: format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                lines.join("\n")
            ),
            kid: kid.to_owned(),
            jwk: json!({
                "kty": "EC",
                "crv": "P-256",
                "use": "sig",
                "alg": "ES256",
                "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            }),
        }
    }

    /// Signs `claims`, naming this key's `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

impl TestApp {
    /// Sends an admin API request with an optional bearer token and JSON body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
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

    pub async fn admin_get(&self, path: &str, token: &str) -> Reply {
        self.admin(Method::GET, path, Some(token), None).await
    }

    pub async fn admin_post(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.admin(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn admin_patch(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.admin(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn admin_delete(&self, path: &str, token: &str) -> Reply {
        self.admin(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a tenant through the admin API; returns the `createTenant` response body.
    pub async fn admin_create_tenant(&self, slug: &str) -> Value {
        let body = json!({ "slug": slug, "name": format!("Tenant {slug}") });
        let reply = self
            .admin_post("/admin/v1/tenants", &write_token(), &body)
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body
    }

    /// `GET` on a SCIM path with a key, for checking what a key can do.
    pub async fn scim_status(&self, path: &str, key: &str) -> u16 {
        self.request(Method::GET, path, Some(key), None)
            .await
            .status
            .as_u16()
    }
}

impl Reply {
    /// Asserts the body is an admin API error with this status and code.
    pub fn assert_admin_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.body["error"], code, "{self:?}");
        assert!(self.body["message"].is_string(), "{self:?}");
    }
}

/// A server running against a database of its own, for tests that need to see every row.
pub struct IsolatedApp {
    pub app: TestApp,
    url: String,
}

impl IsolatedApp {
    pub async fn spawn() -> Self {
        let name = format!("roster_admin_{}", uuid::Uuid::new_v4().simple());
        let url = match database_url().rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("database URL without a database name"),
        };
        let app = spawn_app_with(|config| {
            config.store.database_url = url.parse().expect("infallible");
        })
        .await;
        IsolatedApp { app, url }
    }

    /// Stops the server and drops its database.
    pub async fn finish(self) {
        self.app.running.stop().await.unwrap();
        self.app.pool.close().await;
        let name = self.url.rsplit('/').next().unwrap();
        let admin = PgPool::connect(&database_url()).await.unwrap();
        sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
            .execute(&admin)
            .await
            .unwrap();
    }
}
