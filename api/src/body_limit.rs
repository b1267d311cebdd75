//! Refuses request bodies over the configured size, with or without `Content-Length`.
//!
//! poem's own `SizeLimit` insists on a `Content-Length` header, which GET requests and chunked
//! uploads do not carry. This one checks the header when present and otherwise reads the body
//! up to the limit, so every route family can render the 413 in its own error shape.

use poem::error::ReadBodyError;
use poem::{Body, Endpoint, Middleware, Request, Result};

/// Middleware: bodies larger than `limit` bytes fail with `ReadBodyError::PayloadTooLarge`.
pub struct BodyLimit(pub usize);

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            limit: self.0,
        }
    }
}

pub struct BodyLimitEndpoint<E> {
    inner: E,
    limit: usize,
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let declared = req
            .header("content-length")
            .and_then(|value| value.parse::<usize>().ok());
        match declared {
            Some(length) if length > self.limit => {
                return Err(ReadBodyError::PayloadTooLarge.into())
            }
            Some(_) => {}
            None => {
                let body = req.take_body().into_bytes_limit(self.limit).await?;
                req.set_body(Body::from(body));
            }
        }
        self.inner.call(req).await
    }
}
