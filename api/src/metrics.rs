//! Prometheus metrics at `/metrics`.
//!
//! Labels are bounded whatever the number of tenants: operations come from a fixed set of
//! handler names, statuses from the codes Roster answers with, outcomes from fixed enums.
//! There is deliberately no tenant label — with thousands of tenants it would multiply every
//! series by thousands; per-tenant questions are answered by the journal and the admin API's
//! counters instead.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

/// Latency buckets in seconds, from a cached key lookup to a FusionAuth timeout.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls reuse it.
pub fn install() {
    HANDLE.get_or_init(|| {
        let built = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".to_owned()), BUCKETS)
            .and_then(|builder| builder.install_recorder());
        match built {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// Counts one answered request.
pub fn record_request(operation: &'static str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    metrics::counter!("roster_http_requests_total", "operation" => operation, "status" => status)
        .increment(1);
    metrics::histogram!("roster_http_request_duration_seconds", "operation" => operation)
        .record(elapsed.as_secs_f64());
}

/// Counts one FusionAuth provisioning outcome and its latency.
pub fn record_fusionauth(outcome: &'static str, elapsed: Duration) {
    metrics::counter!("roster_fusionauth_calls_total", "outcome" => outcome).increment(1);
    metrics::histogram!("roster_fusionauth_duration_seconds", "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// Counts a request refused by a rate limit (`tenant` or `auth_failures`).
pub fn record_rate_limited(kind: &'static str) {
    metrics::counter!("roster_rate_limited_total", "limit" => kind).increment(1);
}

/// The exposition text, with the point-in-time gauges refreshed first.
pub fn render(state: &AppState) -> String {
    let degraded = match state.redis.state() {
        tenancy::redis_link::RedisState::Degraded => 1.0,
        _ => 0.0,
    };
    metrics::gauge!("roster_redis_degraded").set(degraded);
    metrics::counter!("roster_rate_limit_redis_calls_total").absolute(state.limits.redis_calls());
    let usage = state.db.usage();
    metrics::gauge!("roster_db_pool_connections", "state" => "idle").set(usage.idle as f64);
    metrics::gauge!("roster_db_pool_connections", "state" => "in_use")
        .set(usage.open.saturating_sub(usage.idle) as f64);
    metrics::gauge!("roster_db_pool_max_connections").set(usage.max as f64);
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}
