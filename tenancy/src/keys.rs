//! Service-account API keys: generate, hash, look up, revoke, and record when they were used.
//!
//! A key is `rst_` followed by 43 base64url characters (256 random bits). Only its SHA-256 is
//! stored; the first twelve characters are kept as a visible prefix so people can tell keys
//! apart in listings. The key itself is returned once, at issue, and never again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::tenants::TenantStatus;
use crate::{Error, SchemaName, TenantRef};

const KEY_SCHEME: &str = "rst_";
const PREFIX_LEN: usize = 12;
/// `last_used_at` is written at most once per this interval per key and replica.
const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

/// The SHA-256 of a presented key: what the database and the caches are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(secret: &str) -> Self {
        KeyHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// A freshly issued key. `secret` is shown to the caller once and then dropped.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: Uuid,
    pub prefix: String,
    pub secret: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a valid key grants: the key's identity and its tenant. This is what the key cache
/// holds, so it carries nothing secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyGrant {
    pub key_id: Uuid,
    pub tenant: TenantRef,
    pub expires_at: Option<DateTime<Utc>>,
}

impl KeyGrant {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A key as listings show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: Uuid,
    pub service_account: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

fn generate_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{KEY_SCHEME}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn validate_service_account(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(Error::InvalidInput {
            field: "service account name",
            reason: "it must be 1 to 100 characters long",
        });
    }
    Ok(())
}

/// Issues a new key for a service account of a tenant.
pub async fn issue(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    service_account: &str,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedKey, Error> {
    validate_service_account(service_account)?;
    let secret = generate_secret();
    let prefix: String = secret.chars().take(PREFIX_LEN).collect();
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into roster_control.api_keys \
           (id, tenant_id, service_account, prefix, key_hash, expires_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(service_account)
    .bind(&prefix)
    .bind(KeyHash::of(&secret).0.as_slice())
    .bind(expires_at)
    .execute(executor)
    .await?;
    Ok(IssuedKey {
        id,
        prefix,
        secret,
        expires_at,
    })
}

/// Every key of a tenant, newest first, revoked ones included.
pub async fn list(pool: &PgPool, tenant_id: Uuid) -> Result<Vec<KeyInfo>, Error> {
    let keys = sqlx::query_as(
        "select id, service_account, prefix, created_at, expires_at, revoked_at, last_used_at \
         from roster_control.api_keys where tenant_id = $1 order by created_at desc, id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?;
    Ok(keys)
}

/// Revokes a tenant's key named by id or visible prefix. Revoking twice is harmless.
/// Callers must invalidate the key cache afterwards.
pub async fn revoke(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id_or_prefix: &str,
) -> Result<KeyInfo, Error> {
    let id = Uuid::parse_str(id_or_prefix).ok();
    let revoked: Option<KeyInfo> = sqlx::query_as(
        "update roster_control.api_keys set revoked_at = coalesce(revoked_at, now()) \
         where tenant_id = $1 and (id = $2 or prefix = $3) \
         returning id, service_account, prefix, created_at, expires_at, revoked_at, last_used_at",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(id_or_prefix)
    .fetch_optional(executor)
    .await?;
    revoked.ok_or_else(|| Error::UnknownKey(id_or_prefix.to_owned()))
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    key_id: Uuid,
    expires_at: Option<DateTime<Utc>>,
    tenant_id: Uuid,
    slug: String,
    schema_name: String,
    status: TenantStatus,
    rate_limit_per_sec: Option<i32>,
}

/// Finds the live (not revoked) key with this hash, with its tenant.
pub async fn lookup(pool: &PgPool, hash: &KeyHash) -> Result<Option<KeyGrant>, Error> {
    let row: Option<GrantRow> = sqlx::query_as(
        "select k.id as key_id, k.expires_at, t.id as tenant_id, t.slug, t.schema_name, \
           t.status, t.rate_limit_per_sec \
         from roster_control.api_keys k join roster_control.tenants t on t.id = k.tenant_id \
         where k.key_hash = $1 and k.revoked_at is null",
    )
    .bind(hash.0.as_slice())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let schema = SchemaName::parse(&row.schema_name)
        .map_err(|_| Error::UnknownTenant(format!("{} has an invalid schema name", row.slug)))?;
    Ok(Some(KeyGrant {
        key_id: row.key_id,
        expires_at: row.expires_at,
        tenant: TenantRef {
            id: row.tenant_id,
            slug: row.slug,
            schema,
            status: row.status,
            rate_limit_per_sec: row.rate_limit_per_sec,
        },
    }))
}

/// Records key use without a write per request: each replica writes a key's `last_used_at`
/// at most once a minute, and the update itself skips rows written by another replica within
/// the minute.
#[derive(Clone)]
pub struct LastUsed {
    pool: PgPool,
    recently_written: moka::sync::Cache<Uuid, ()>,
}

impl LastUsed {
    pub fn new(pool: PgPool) -> Self {
        LastUsed {
            pool,
            recently_written: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LAST_USED_INTERVAL)
                .build(),
        }
    }

    /// Notes that `key_id` was used now; writes in the background when due.
    pub fn touch(&self, key_id: Uuid) {
        if self.recently_written.contains_key(&key_id) {
            return;
        }
        self.recently_written.insert(key_id, ());
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let result = sqlx::query(
                "update roster_control.api_keys set last_used_at = now() \
                 where id = $1 and (last_used_at is null \
                   or last_used_at < now() - interval '60 seconds')",
            )
            .bind(key_id)
            .execute(&pool)
            .await;
            if let Err(e) = result {
                tracing::warn!(key.id = %key_id, error = %e, "could not record key use");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_SCHEME));
        assert_eq!(a.len(), KEY_SCHEME.len() + 43);
    }

    #[test]
    fn hashing_is_stable_and_distinguishing() {
        assert_eq!(KeyHash::of("rst_x"), KeyHash::of("rst_x"));
        assert_ne!(KeyHash::of("rst_x"), KeyHash::of("rst_y"));
        assert_eq!(KeyHash::of("rst_x").to_hex().len(), 64);
    }
}
