//! Key lookups on the request path: in-process, then Redis, then Postgres.
//!
//! * The in-process tier lives one second, so a change reaches every replica within two.
//! * Redis entries carry the *key generation* they were read under. Revoking a key, or
//!   suspending or deleting a tenant, bumps the generation after the change commits, so entries
//!   written before it — even by a replica that read Postgres just before the revocation — are
//!   ignored from then on.
//! * Unknown keys are cached negatively for a short time, so a flood of bad tokens does not
//!   reach Postgres.
//! * With Redis down, lookups go to Postgres. When Redis comes back the generation is bumped,
//!   because revocations made meanwhile could not be announced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::keys::{self, KeyGrant, KeyHash};
use crate::redis_link::RedisLink;
use crate::Error;

const LOCAL_TTL: Duration = Duration::from_secs(1);
const POSITIVE_TTL_SECS: u64 = 60;
const NEGATIVE_TTL_SECS: u64 = 10;
const GENERATION_KEY: &str = "roster:keys:generation";

#[derive(Serialize, Deserialize)]
struct Entry {
    generation: i64,
    grant: Option<KeyGrant>,
}

/// Resolves presented keys to grants.
#[derive(Clone)]
pub struct KeyCache {
    pool: PgPool,
    redis: RedisLink,
    local: moka::sync::Cache<KeyHash, Option<KeyGrant>>,
    recoveries_seen: Arc<AtomicU64>,
}

impl KeyCache {
    pub fn new(pool: PgPool, redis: RedisLink) -> Self {
        KeyCache {
            recoveries_seen: Arc::new(AtomicU64::new(redis.recoveries())),
            pool,
            redis,
            local: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LOCAL_TTL)
                .build(),
        }
    }

    /// The grant of a live key, or `None` for an unknown or revoked key. Expiry is the
    /// caller's to check, since a grant may outlive its key's expiry in a cache.
    pub async fn resolve(&self, hash: &KeyHash) -> Result<Option<KeyGrant>, Error> {
        if let Some(grant) = self.local.get(hash) {
            count_lookup("local", &grant);
            return Ok(grant);
        }
        let grant = match self.redis.connection() {
            Some(conn) => self.resolve_through_redis(conn, hash).await?,
            None => {
                let grant = keys::lookup(&self.pool, hash).await?;
                count_lookup("postgres", &grant);
                grant
            }
        };
        self.local.insert(*hash, grant.clone());
        Ok(grant)
    }

    async fn resolve_through_redis(
        &self,
        mut conn: ConnectionManager,
        hash: &KeyHash,
    ) -> Result<Option<KeyGrant>, Error> {
        self.announce_recovery(&mut conn).await;
        let entry_key = entry_key(hash);
        let cached: Result<(Option<String>, Option<i64>), _> =
            conn.mget(&[entry_key.as_str(), GENERATION_KEY]).await;
        let (entry, generation) = match cached {
            Ok(found) => found,
            Err(e) => {
                self.redis.report_failure(&e);
                return keys::lookup(&self.pool, hash).await;
            }
        };
        let generation = generation.unwrap_or(0);
        if let Some(entry) = entry.and_then(|raw| serde_json::from_str::<Entry>(&raw).ok()) {
            if entry.generation == generation {
                count_lookup("redis", &entry.grant);
                return Ok(entry.grant);
            }
        }

        let grant = keys::lookup(&self.pool, hash).await?;
        count_lookup("postgres", &grant);
        self.store(&mut conn, &entry_key, generation, &grant).await;
        Ok(grant)
    }

    async fn store(
        &self,
        conn: &mut ConnectionManager,
        entry_key: &str,
        generation: i64,
        grant: &Option<KeyGrant>,
    ) {
        let ttl = if grant.is_some() {
            POSITIVE_TTL_SECS
        } else {
            NEGATIVE_TTL_SECS
        };
        let entry = Entry {
            generation,
            grant: grant.clone(),
        };
        let Ok(raw) = serde_json::to_string(&entry) else {
            return;
        };
        if let Err(e) = conn.set_ex::<_, _, ()>(entry_key, raw, ttl).await {
            self.redis.report_failure(&e);
        }
    }

    /// Makes every cached grant stale, on this replica at once and on the others within
    /// [`LOCAL_TTL`]. Call it after revoking a key or changing a tenant's status or limits.
    pub async fn invalidate_all(&self) {
        self.local.invalidate_all();
        let Some(mut conn) = self.redis.connection() else {
            if self.redis.state() != crate::redis_link::RedisState::Disabled {
                tracing::warn!(
                    "Redis is unreachable: other replicas see this change when Redis returns"
                );
            }
            return;
        };
        if let Err(e) = conn.incr::<_, _, i64>(GENERATION_KEY, 1).await {
            self.redis.report_failure(&e);
        }
    }

    async fn announce_recovery(&self, conn: &mut ConnectionManager) {
        let recoveries = self.redis.recoveries();
        if self.recoveries_seen.swap(recoveries, Ordering::AcqRel) != recoveries {
            if let Err(e) = conn.incr::<_, _, i64>(GENERATION_KEY, 1).await {
                self.redis.report_failure(&e);
            }
        }
    }
}

/// Counts where a lookup was answered (`local`, `redis`, `postgres`) and whether the key was
/// known, for the `roster_key_cache_lookups_total` metric.
fn count_lookup(tier: &'static str, grant: &Option<KeyGrant>) {
    let known = if grant.is_some() { "known" } else { "unknown" };
    metrics::counter!("roster_key_cache_lookups_total", "tier" => tier, "key" => known)
        .increment(1);
}

fn entry_key(hash: &KeyHash) -> String {
    format!("roster:key:{}", hash.to_hex())
}
