//! Liveness and readiness probes.

use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::openapi::ApiTags;
use crate::state::AppState;

pub struct HealthApi;

/// What `/readyz` found.
#[derive(Debug, Object)]
pub struct Readiness {
    /// `ok` or `unreachable`.
    pub postgres: String,
    /// `healthy`, `degraded` (unreachable: serving without it) or `disabled` (single-node).
    pub redis: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Postgres is reachable; the service can take traffic (Redis may be degraded).
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// Postgres is unreachable.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: the process is up.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }

    /// Prometheus metrics: requests by operation and status, latencies, FusionAuth outcomes,
    /// rate-limit rejections, key-cache hits and misses, Redis state and pool usage.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&AppState>) -> PlainText<String> {
        PlainText(crate::metrics::render(&state))
    }

    /// Readiness: Postgres answers; Redis state is reported but does not decide.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&AppState>) -> ReadyResponse {
        let postgres_ok = sqlx::query("select 1")
            .execute(state.db.control())
            .await
            .is_ok();
        let readiness = Readiness {
            postgres: if postgres_ok { "ok" } else { "unreachable" }.to_owned(),
            redis: state.redis.state().as_str().to_owned(),
        };
        if postgres_ok {
            ReadyResponse::Ready(Json(readiness))
        } else {
            ReadyResponse::NotReady(Json(readiness))
        }
    }
}
