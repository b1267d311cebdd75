//! Request bodies: at most the configured size, read within the configured time.
//!
//! poem's own `SizeLimit` insists on a `Content-Length` header, which GET requests and chunked
//! uploads do not carry, and nothing bounds how slowly a client may send a body. This
//! middleware reads every body up front — refusing it as soon as it passes the limit, or when
//! it has not arrived within the timeout — so that a slow or oversized upload costs neither
//! memory nor a connection held open, and each route family renders the refusal in its own
//! error shape.

use std::time::Duration;

use poem::error::ReadBodyError;
use poem::http::StatusCode;
use poem::{Body, Endpoint, Middleware, Request, Result};

/// Middleware: bodies larger than `limit` bytes fail with `ReadBodyError::PayloadTooLarge`
/// (413); bodies not received within `timeout` fail with 408.
pub struct BodyLimit {
    pub limit: usize,
    pub timeout: Duration,
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            limit: self.limit,
            timeout: self.timeout,
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    limit: usize,
    timeout: Duration,
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let declared = req
            .header("content-length")
            .and_then(|value| value.parse::<usize>().ok());
        if declared.is_some_and(|length| length > self.limit) {
            return Err(ReadBodyError::PayloadTooLarge.into());
        }
        let read = req.take_body().into_bytes_limit(self.limit);
        let body = match tokio::time::timeout(self.timeout, read).await {
            Ok(body) => body?,
            Err(_) => {
                return Err(poem::Error::from_string(
                    "the request body was not received in time",
                    StatusCode::REQUEST_TIMEOUT,
                ))
            }
        };
        req.set_body(Body::from(body));
        self.inner.call(req).await
    }
}
