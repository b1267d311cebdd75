//! Request-rate limits.
//!
//! Per tenant, SCIM requests are limited with GCRA in Redis, so every replica draws from one
//! budget; when Redis is unreachable each replica falls back to an in-process `governor`
//! limiter at the same rate. The burst equals one second of the rate: Entra sends its traffic
//! in bursts at cycle boundaries.
//!
//! A replica takes the budget in leases rather than one request at a time: a busy tenant's
//! requests are counted against a few tokens taken from Redis at once, so Redis sees one call
//! per lease instead of one per request (that call was a fifth of a match query's CPU). A
//! lease is sized to the tenant's recent demand on this replica — a quiet tenant takes one
//! token at a time, exactly as before — and to at most [`LEASE_SHARE`] of its rate, and it
//! lapses after [`LEASE_LIFETIME`]. So the shared limit can be overrun by at most one
//! lease per replica, and a lapsed lease's unused tokens are lost to the budget.
//!
//! Failed authentications are limited per client address, in process: they are cheap to
//! count locally and need no shared state to protect Postgres from a flood of bad tokens.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::redis_link::{RedisLink, RedisState};
use crate::TenantRef;

/// GCRA over one Redis key holding the theoretical arrival time in microseconds, granting up
/// to `ARGV[3]` requests at once. Returns `{granted, 0}`, or `{0, microseconds to wait}`.
const GCRA_SCRIPT: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local free = math.floor((now + tolerance - tat) / interval)
if free < 1 then return {0, tat + interval - tolerance - now} end
local granted = math.min(free, wanted)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {granted, 0}
";

/// The largest lease, as a share of the tenant's rate (1/20: 10 tokens at 200 requests/s).
pub const LEASE_SHARE: u32 = 20;

/// How long a lease's tokens may be spent before they lapse.
pub const LEASE_LIFETIME: Duration = Duration::from_millis(100);

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
    leases: moka::sync::Cache<Uuid, Arc<Mutex<Lease>>>,
    local: moka::sync::Cache<Uuid, Arc<LocalLimiter>>,
    redis_calls: Arc<AtomicU64>,
}

struct LocalLimiter {
    per_sec: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
}

/// Tokens this replica took from a tenant's shared budget and has not spent yet.
#[derive(Debug)]
struct Lease {
    granted: u32,
    remaining: u32,
    lapses_at: Instant,
}

impl Lease {
    fn spend(&mut self, now: Instant) -> bool {
        if self.remaining == 0 || now >= self.lapses_at {
            return false;
        }
        self.remaining -= 1;
        true
    }

    /// How many tokens to ask for next: twice the last lease when it ran out before lapsing
    /// (demand outgrew it), else what was spent of it (the demand of one lifetime).
    fn next_size(&self, now: Instant, largest: u32) -> u32 {
        let spent = self.granted.saturating_sub(self.remaining);
        let wanted = if self.remaining == 0 && now < self.lapses_at {
            self.granted.saturating_mul(2)
        } else {
            spent
        };
        wanted.clamp(1, largest)
    }

    /// Adds a new grant, less the request that asked for it. Requests that ran out at the
    /// same moment each bring their own grant, so a live lease adds them up.
    fn refill(&mut self, granted: u32, now: Instant) {
        if now >= self.lapses_at {
            self.granted = 0;
            self.remaining = 0;
        }
        self.granted += granted;
        self.remaining += granted - 1;
        self.lapses_at = now + LEASE_LIFETIME;
    }
}

impl TenantLimits {
    pub fn new(redis: RedisLink, default_per_sec: NonZeroU32) -> Self {
        TenantLimits {
            redis,
            default_per_sec,
            script: Arc::new(redis::Script::new(GCRA_SCRIPT)),
            leases: per_tenant(),
            local: per_tenant(),
            redis_calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many times this process has asked Redis for budget.
    pub fn redis_calls(&self) -> u64 {
        self.redis_calls.load(Ordering::Relaxed)
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
        if self.redis.state() == RedisState::Disabled {
            return self.check_locally(tenant.id, rate);
        }

        let lease = self.leases.get_with(tenant.id, || {
            Arc::new(Mutex::new(Lease {
                granted: 0,
                remaining: 0,
                lapses_at: Instant::now(),
            }))
        });
        let wanted = {
            let mut lease = lock(&lease);
            let now = Instant::now();
            if lease.spend(now) {
                return Decision::Allowed;
            }
            lease.next_size(now, (rate.get() / LEASE_SHARE).max(1))
        };

        match self.take_from_redis(tenant.id, rate, wanted).await {
            Some(Ok(granted)) => {
                lock(&lease).refill(granted, Instant::now());
                Decision::Allowed
            }
            Some(Err(retry_after)) => Decision::Limited { retry_after },
            None => self.check_locally(tenant.id, rate),
        }
    }

    /// Up to `wanted` tokens from the shared budget: how many were granted, or how long to
    /// wait for the next; `None` when Redis cannot answer.
    async fn take_from_redis(
        &self,
        tenant_id: Uuid,
        rate: NonZeroU32,
        wanted: u32,
    ) -> Option<Result<u32, Duration>> {
        let mut conn = self.redis.connection()?;
        self.redis_calls.fetch_add(1, Ordering::Relaxed);
        let interval_us = 1_000_000 / u64::from(rate.get());
        let tolerance_us = interval_us * u64::from(rate.get());
        let outcome: Result<(u32, u64), _> = self
            .script
            .key(format!("roster:rate:{tenant_id}"))
            .arg(interval_us)
            .arg(tolerance_us)
            .arg(wanted)
            .invoke_async(&mut conn)
            .await;
        match outcome {
            Ok((0, wait_us)) => Some(Err(Duration::from_micros(wait_us))),
            Ok((granted, _)) => Some(Ok(granted)),
            Err(e) => {
                self.redis.report_failure(&e);
                None
            }
        }
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

/// A lease's lock is never held across an await or a panic-prone call, so poisoning cannot
/// leave it inconsistent; a poisoned lock is used as it is.
fn lock(lease: &Mutex<Lease>) -> std::sync::MutexGuard<'_, Lease> {
    lease
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn per_tenant<V: Clone + Send + Sync + 'static>() -> moka::sync::Cache<Uuid, V> {
    moka::sync::Cache::builder()
        .max_capacity(100_000)
        .time_to_idle(Duration::from_secs(600))
        .build()
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

    fn lease(granted: u32, remaining: u32, lapses_in: Duration, now: Instant) -> Lease {
        Lease {
            granted,
            remaining,
            lapses_at: now + lapses_in,
        }
    }

    #[test]
    fn a_lease_grows_while_demand_outruns_it_and_shrinks_to_what_was_spent() {
        let now = Instant::now();
        let soon = Duration::from_millis(50);

        let ran_out_early = lease(4, 0, soon, now);
        let lapsed_half_spent = lease(8, 4, Duration::ZERO, now);
        let lapsed_unspent = lease(8, 8, Duration::ZERO, now);
        let ran_out_late = lease(4, 0, Duration::ZERO, now);

        assert_eq!(ran_out_early.next_size(now, 10), 8);
        assert_eq!(
            ran_out_early.next_size(now, 5),
            5,
            "capped at the largest lease"
        );
        assert_eq!(lapsed_half_spent.next_size(now, 10), 4);
        assert_eq!(
            lapsed_unspent.next_size(now, 10),
            1,
            "never less than one token"
        );
        assert_eq!(ran_out_late.next_size(now, 10), 4);
    }

    #[test]
    fn a_lapsed_lease_spends_nothing_and_its_leftovers_do_not_carry_over() {
        let now = Instant::now();
        let mut lapsed = lease(8, 5, Duration::ZERO, now);

        assert!(!lapsed.spend(now));
        lapsed.refill(4, now);
        lapsed.refill(2, now);

        assert_eq!((lapsed.granted, lapsed.remaining), (6, 4));
        assert!(lapsed.spend(now));
        assert!(!lapsed.spend(now + LEASE_LIFETIME));
    }

    async fn redis() -> RedisLink {
        let url = std::env::var("ROSTER_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let link = RedisLink::connect(&url).await.unwrap();
        assert_eq!(
            link.state(),
            RedisState::Healthy,
            "the tests need Redis at {url}"
        );
        link
    }

    #[tokio::test]
    async fn a_busy_tenant_takes_its_budget_from_redis_in_leases() {
        let limits = TenantLimits::new(redis().await, NonZeroU32::new(100).unwrap());
        let busy = tenant(Some(1_000_000));

        for _ in 0..1_000 {
            assert_eq!(limits.check(&busy).await, Decision::Allowed);
        }

        assert!(
            limits.redis_calls() < 50,
            "{} Redis calls for 1,000 requests",
            limits.redis_calls()
        );
    }

    #[tokio::test]
    async fn leases_overrun_the_shared_budget_by_at_most_one_lease_per_replica() {
        let link = redis().await;
        let replicas = [
            TenantLimits::new(link.clone(), NonZeroU32::new(100).unwrap()),
            TenantLimits::new(link, NonZeroU32::new(100).unwrap()),
        ];
        let limited = tenant(Some(200));
        let largest_lease = 200 / LEASE_SHARE as usize;

        let started = Instant::now();
        let mut allowed = 0;
        for round in 0..1_000 {
            if replicas[round % 2].check(&limited).await == Decision::Allowed {
                allowed += 1;
            }
        }
        let refilled = (started.elapsed().as_secs_f64() * 200.0).ceil() as usize;

        // The burst (one second of the rate), plus what the elapsed time refilled.
        assert!(allowed >= 200, "{allowed} allowed");
        let most = 200 + refilled + 2 * largest_lease;
        assert!(
            allowed <= most,
            "{allowed} allowed, at most {most} expected"
        );
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
