//! Logging: the subscriber, and the one access event every request produces.
//!
//! The access event carries the request id, the tenant slug, the operation id, the status and
//! the duration — never the URI, whose SCIM query string holds personal data, and never a
//! header or a body.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::OperationId;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global subscriber. Safe to call more than once (tests do).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What the access event reports about one request; handlers fill in what they learn.
#[derive(Debug)]
pub struct RequestContext {
    pub request_id: String,
    tenant: OnceLock<String>,
    operation: OnceLock<&'static str>,
}

impl RequestContext {
    fn new(request_id: String) -> Self {
        RequestContext {
            request_id,
            tenant: OnceLock::new(),
            operation: OnceLock::new(),
        }
    }

    pub fn set_tenant(&self, slug: &str) {
        let _first_wins = self.tenant.set(slug.to_owned());
    }

    pub fn set_operation(&self, operation: &'static str) {
        let _first_wins = self.operation.set(operation);
    }

    pub fn operation(&self) -> &'static str {
        self.operation.get().copied().unwrap_or("unrouted")
    }

    /// The context of the request being served (tests and tools call handlers without one).
    pub fn of(req: &Request) -> Arc<RequestContext> {
        req.extensions()
            .get::<Arc<RequestContext>>()
            .cloned()
            .unwrap_or_else(|| Arc::new(RequestContext::new(new_request_id())))
    }
}

fn new_request_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Keeps a caller's request id when it is short and plain; otherwise makes one up.
fn request_id_of(req: &Request) -> String {
    req.header(REQUEST_ID_HEADER)
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

/// Middleware: assigns the request id and writes the access event.
pub struct AccessLog;

impl<E: Endpoint> Middleware<E> for AccessLog {
    type Output = AccessLogEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AccessLogEndpoint { inner }
    }
}

pub struct AccessLogEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for AccessLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let started = Instant::now();
        let context = Arc::new(RequestContext::new(request_id_of(&req)));
        req.extensions_mut().insert(context.clone());

        let span = tracing::info_span!("request", request.id = %context.request_id);
        let mut response = match self.inner.call(req).instrument(span).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        };

        if let Ok(value) = HeaderValue::from_str(&context.request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        // Documented operations name themselves on the response; SCIM handlers set theirs.
        let operation = match response.data::<OperationId>() {
            Some(id) if context.operation.get().is_none() => id.0,
            _ => context.operation(),
        };
        crate::metrics::record_request(operation, response.status().as_u16(), started.elapsed());
        tracing::info!(
            request.id = %context.request_id,
            tenant.slug = context.tenant.get().map(String::as_str).unwrap_or("-"),
            operation,
            http.status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        Ok(response)
    }
}
