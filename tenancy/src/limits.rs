//! Request-rate limits.
//!
//! Per tenant, SCIM requests are limited with GCRA in Redis, so every replica draws from one
//! budget; when Redis is unreachable each replica falls back to an in-process `governor`
//! limiter at the same rate. The burst equals one second of the rate: Entra sends its traffic
//! in bursts at cycle boundaries.
//!
//! Failed authentications are limited per client address, in process: they are cheap to
//! count locally and need no shared state to protect Postgres from a flood of bad tokens.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::redis_link::RedisLink;
use crate::TenantRef;

/// GCRA over one Redis key holding the theoretical arrival time in microseconds.
/// Returns 0 when allowed, else the microseconds to wait.
const GCRA_SCRIPT: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - tolerance
if allowed_at > now then return allowed_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

/// The outcome of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

/// Per-tenant request-rate limits.
#[derive(Clone)]
pub struct TenantLimits {
    redis: RedisLink,
    default_per_sec: NonZeroU32,
    script: Arc<redis::Script>,
    local: moka::sync::Cache<Uuid, Arc<LocalLimiter>>,
}

struct LocalLimiter {
    per_sec: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
}

impl TenantLimits {
    pub fn new(redis: RedisLink, default_per_sec: NonZeroU32) -> Self {
        TenantLimits {
            redis,
            default_per_sec,
            script: Arc::new(redis::Script::new(GCRA_SCRIPT)),
            local: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// The rate that applies to a tenant.
    pub fn rate_of(&self, tenant: &TenantRef) -> NonZeroU32 {
        tenant
            .rate_limit_per_sec
            .and_then(|rate| u32::try_from(rate).ok())
            .and_then(NonZeroU32::new)
            .unwrap_or(self.default_per_sec)
    }

    /// Takes one request from the tenant's budget.
    pub async fn check(&self, tenant: &TenantRef) -> Decision {
        let rate = self.rate_of(tenant);
        if let Some(mut conn) = self.redis.connection() {
            let interval_us = 1_000_000 / u64::from(rate.get());
            let tolerance_us = interval_us * u64::from(rate.get());
            let outcome: Result<u64, _> = self
                .script
                .key(format!("roster:rate:{}", tenant.id))
                .arg(interval_us)
                .arg(tolerance_us)
                .invoke_async(&mut conn)
                .await;
            match outcome {
                Ok(0) => return Decision::Allowed,
                Ok(wait_us) => {
                    return Decision::Limited {
                        retry_after: Duration::from_micros(wait_us),
                    }
                }
                Err(e) => self.redis.report_failure(&e),
            }
        }
        self.check_locally(tenant.id, rate)
    }

    fn check_locally(&self, tenant_id: Uuid, rate: NonZeroU32) -> Decision {
        let mut limiter = self.local.get_with(tenant_id, || local_limiter(rate));
        if limiter.per_sec != rate {
            limiter = local_limiter(rate);
            self.local.insert(tenant_id, limiter.clone());
        }
        match limiter.limiter.check() {
            Ok(()) => Decision::Allowed,
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }
}

fn local_limiter(per_sec: NonZeroU32) -> Arc<LocalLimiter> {
    Arc::new(LocalLimiter {
        per_sec,
        limiter: RateLimiter::direct(Quota::per_second(per_sec).allow_burst(per_sec)),
    })
}

/// Limits failed authentications per client address.
#[derive(Clone)]
pub struct AuthFailures {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    blocked: moka::sync::Cache<IpAddr, Instant>,
}

impl AuthFailures {
    /// Allows `per_minute` failures per address, in a burst or spread out.
    pub fn new(per_minute: NonZeroU32) -> Self {
        AuthFailures {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            blocked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// How long `address` must wait before it may try again, if it is blocked.
    pub fn blocked_for(&self, address: IpAddr) -> Option<Duration> {
        let until = self.blocked.get(&address)?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts one failed authentication from `address`.
    pub fn record_failure(&self, address: IpAddr) {
        if let Err(not_until) = self.limiter.check_key(&address) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.blocked.insert(address, Instant::now() + wait);
        }
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SchemaName, TenantStatus};

    fn tenant(rate: Option<i32>) -> TenantRef {
        TenantRef {
            id: Uuid::new_v4(),
            slug: "acme".into(),
            schema: SchemaName::generate(),
            status: TenantStatus::Active,
            rate_limit_per_sec: rate,
        }
    }

    #[tokio::test]
    async fn in_process_limit_allows_a_burst_of_one_second_then_limits() {
        let limits = TenantLimits::new(RedisLink::disabled(), NonZeroU32::new(100).unwrap());
        let tenant = tenant(Some(5));
        for _ in 0..5 {
            assert_eq!(limits.check(&tenant).await, Decision::Allowed);
        }
        match limits.check(&tenant).await {
            Decision::Limited { retry_after } => assert!(retry_after <= Duration::from_secs(1)),
            Decision::Allowed => panic!("the sixth request in a burst of five was allowed"),
        }
    }

    #[tokio::test]
    async fn tenants_have_separate_budgets() {
        let limits = TenantLimits::new(RedisLink::disabled(), NonZeroU32::new(1).unwrap());
        let (a, b) = (tenant(None), tenant(None));
        assert_eq!(limits.check(&a).await, Decision::Allowed);
        assert_ne!(limits.check(&a).await, Decision::Allowed);
        assert_eq!(limits.check(&b).await, Decision::Allowed);
    }

    #[test]
    fn failed_authentications_block_an_address_after_the_quota() {
        let failures = AuthFailures::new(NonZeroU32::new(3).unwrap());
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            failures.record_failure(address);
        }
        assert!(failures.blocked_for(address).is_none());
        failures.record_failure(address);
        assert!(failures.blocked_for(address).is_some());
        assert!(failures.blocked_for(other).is_none());
    }
}
