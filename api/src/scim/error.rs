//! SCIM errors (RFC 7644 §3.12): the one shape every failure on a SCIM route takes.
//!
//! Internal causes are logged once, here, with the request id; the client sees an opaque
//! detail. Client mistakes carry a precise detail and, where RFC 7644 defines one, a scimType.

use std::time::Duration;

use poem::error::ResponseError;
use poem::http::{header, HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use serde_json::json;

use super::response::SCIM_CONTENT_TYPE;

pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// Everything a SCIM route can answer with other than success.
#[derive(Debug, thiserror::Error)]
pub enum ScimError {
    /// 400 with a scimType such as `invalidFilter`, `invalidSyntax`, `invalidValue`,
    /// `invalidPath`, `tooMany`, or none.
    #[error("{detail}")]
    BadRequest {
        scim_type: Option<&'static str>,
        detail: String,
    },

    /// 401: no key, an unknown, revoked or expired key, or a key of another tenant. The
    /// detail never says which, so it cannot be used to probe keys.
    #[error("a valid API key for this tenant is required")]
    Unauthorized,

    /// 403 with a detail saying why (a suspended tenant, a write the platform owns).
    #[error("{0}")]
    Forbidden(String),

    /// 404: unknown resource id or unknown path.
    #[error("{0}")]
    NotFound(String),

    /// 405: e.g. a write to a discovery endpoint.
    #[error("this endpoint does not support the method")]
    MethodNotAllowed,

    /// 501: a SCIM feature Roster does not offer (e.g. `POST /.search`); advertised as such
    /// in `/ServiceProviderConfig`.
    #[error("{0}")]
    NotImplemented(&'static str),

    /// 409 `uniqueness`: a user with the same userName or work email exists.
    #[error("{0}")]
    Uniqueness(String),

    /// 413: the body is larger than the configured limit (`ROSTER_BODY_LIMIT_BYTES`).
    #[error("the request body is larger than this service accepts")]
    PayloadTooLarge,

    /// 408: the body did not arrive within `ROSTER_BODY_TIMEOUT_SECS`.
    #[error("the request body was not received in time")]
    RequestTimeout,

    /// 415: a body labelled with a type other than JSON.
    #[error("request bodies must be application/scim+json or application/json")]
    UnsupportedMediaType,

    /// 429 with `Retry-After`.
    #[error("{detail}")]
    TooManyRequests {
        retry_after: Duration,
        detail: &'static str,
    },

    /// 503 with `Retry-After`: a dependency is down; the client should retry.
    #[error("{detail}")]
    Unavailable {
        retry_after: Duration,
        detail: &'static str,
    },

    /// 502: the tenant's FusionAuth failed in a way only an operator can fix (Roster's
    /// credentials refused, a broken connection setting). Never a 401, which would make Entra
    /// blame its own token.
    #[error("{0}")]
    Upstream(&'static str),

    /// 500: a server-side fault. The cause has been logged; the client gets nothing of it.
    #[error("internal error; the request id identifies it in Roster's logs")]
    Internal,
}

impl ScimError {
    pub fn bad_request(scim_type: &'static str, detail: impl Into<String>) -> Self {
        ScimError::BadRequest {
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    /// Logs `cause` and returns the opaque 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error on a SCIM route");
        ScimError::Internal
    }

    fn scim_type(&self) -> Option<&'static str> {
        match self {
            ScimError::BadRequest { scim_type, .. } => *scim_type,
            ScimError::Uniqueness(_) => Some("uniqueness"),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ScimError::TooManyRequests { retry_after, .. }
            | ScimError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Maps a framework error (unmatched route, wrong method, unreadable body) to SCIM.
    pub fn from_framework(error: &poem::Error) -> Self {
        match error.status() {
            StatusCode::NOT_FOUND => ScimError::NotFound("no such SCIM endpoint".to_owned()),
            StatusCode::METHOD_NOT_ALLOWED => ScimError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ScimError::PayloadTooLarge,
            StatusCode::REQUEST_TIMEOUT => ScimError::RequestTimeout,
            status if status.is_client_error() => ScimError::BadRequest {
                scim_type: None,
                detail: "the request could not be read".to_owned(),
            },
            _ => ScimError::internal(error),
        }
    }
}

impl From<tenancy::Error> for ScimError {
    fn from(error: tenancy::Error) -> Self {
        if error.is_unstorable_text() {
            return ScimError::bad_request(
                "invalidValue",
                "text values may not contain NUL characters",
            );
        }
        if error.is_unavailable() {
            tracing::warn!(error = %error, "database unavailable on a SCIM route");
            return ScimError::Unavailable {
                retry_after: Duration::from_secs(5),
                detail: "the service is temporarily unavailable; retry shortly",
            };
        }
        ScimError::internal(error)
    }
}

impl From<sqlx::Error> for ScimError {
    fn from(error: sqlx::Error) -> Self {
        ScimError::from(tenancy::Error::from(error))
    }
}

impl ResponseError for ScimError {
    fn status(&self) -> StatusCode {
        match self {
            ScimError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ScimError::Unauthorized => StatusCode::UNAUTHORIZED,
            ScimError::Forbidden(_) => StatusCode::FORBIDDEN,
            ScimError::NotFound(_) => StatusCode::NOT_FOUND,
            ScimError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ScimError::Uniqueness(_) => StatusCode::CONFLICT,
            ScimError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ScimError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ScimError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ScimError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ScimError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ScimError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ScimError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ScimError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        let status = self.status();
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": status.as_u16().to_string(),
            "detail": self.to_string(),
        });
        if let Some(scim_type) = self.scim_type() {
            body["scimType"] = json!(scim_type);
        }
        let mut response = Response::builder()
            .status(status)
            .content_type(SCIM_CONTENT_TYPE)
            .body(body.to_string());
        if let Some(wait) = self.retry_after() {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if matches!(self, ScimError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"roster\""),
            );
        }
        response
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        self.as_response()
    }
}

/// Renders any error that reaches the edge of the SCIM routes in the SCIM shape.
pub fn render(error: poem::Error) -> Response {
    match error.downcast_ref::<ScimError>() {
        Some(scim) => scim.as_response(),
        None => ScimError::from_framework(&error).as_response(),
    }
}
