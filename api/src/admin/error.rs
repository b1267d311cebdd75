//! The admin API's errors: one enum, one JSON shape, and the sets each operation documents.
//!
//! Every failure under `/admin/v1` — a handler's, the token check's, or the framework's (an
//! unreadable body, an unknown path) — answers `{"error": "<code>", "message": "..."}`.
//! Internal causes are logged once, where they are turned into [`AdminError::Internal`]; the
//! client gets an opaque message and the request id.
//!
//! Operations return [`Failure<S>`], whose error set `S` lists the statuses the OpenAPI
//! document shows for them beyond the ones every operation can answer (401, 403, 500, 503).

use std::marker::PhantomData;
use std::time::Duration;

use poem::error::ResponseError;
use poem::http::{header, HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::{Example, Type};
use poem_openapi::{ApiResponse, Object, OperationId};

/// How long a client should wait before retrying a 503.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Everything an admin operation can answer with other than success.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 400 `bad_request`: a malformed request or an invalid value; the message says which.
    #[error("{0}")]
    BadRequest(String),

    /// 401 `unauthorized`: no bearer token, or one that is malformed, badly signed, expired,
    /// not yet valid, or from another issuer or audience. The message never says which.
    #[error("a valid admin bearer token is required")]
    Unauthorized,

    /// 403 `forbidden`: a valid token without the role, or scoped to another tenant.
    #[error("{0}")]
    Forbidden(String),

    /// 404 `not_found`: no such tenant, key or endpoint.
    #[error("{0}")]
    NotFound(String),

    /// 405 `method_not_allowed`.
    #[error("this endpoint does not support the method")]
    MethodNotAllowed,

    /// 409 `conflict`: the change contradicts the current state, e.g. a slug already taken.
    #[error("{0}")]
    Conflict(String),

    /// 413 `payload_too_large`: the body exceeds `ROSTER_BODY_LIMIT_BYTES`.
    #[error("the request body is larger than this service accepts")]
    PayloadTooLarge,

    /// 415 `unsupported_media_type`: a body that is not `application/json`.
    #[error("request bodies must be application/json")]
    UnsupportedMediaType,

    /// 503 `unavailable` with `Retry-After`: Postgres or the token key source is unreachable,
    /// or the deployment lacks a setting the operation needs; the message says which.
    #[error("{0}")]
    Unavailable(&'static str),

    /// 500 `internal`: a server-side fault, already logged; the client learns nothing of it.
    #[error("internal error; the request id identifies it in Roster's logs")]
    Internal,
}

impl AdminError {
    /// Logs `cause` and returns the opaque 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error on an admin route");
        AdminError::Internal
    }

    /// The stable machine-readable code in the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Unauthorized => "unauthorized",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound(_) => "not_found",
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::Conflict(_) => "conflict",
            AdminError::PayloadTooLarge => "payload_too_large",
            AdminError::UnsupportedMediaType => "unsupported_media_type",
            AdminError::Unavailable(_) => "unavailable",
            AdminError::Internal => "internal",
        }
    }

    /// Maps a framework error (unknown path, wrong method, unreadable body or parameter,
    /// missing `Authorization` header) to the admin shape.
    fn from_framework(error: &poem::Error) -> Self {
        match error.status() {
            StatusCode::UNAUTHORIZED => AdminError::Unauthorized,
            StatusCode::NOT_FOUND => AdminError::NotFound("no such endpoint".to_owned()),
            StatusCode::METHOD_NOT_ALLOWED => AdminError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => AdminError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AdminError::UnsupportedMediaType,
            // poem-openapi's parse errors name the parameter or field and why it was refused;
            // they describe the caller's own input, so they are safe to return.
            status if status.is_client_error() => AdminError::BadRequest(error.to_string()),
            _ => AdminError::internal(error),
        }
    }
}

impl From<tenancy::Error> for AdminError {
    fn from(error: tenancy::Error) -> Self {
        use tenancy::Error as E;
        match error {
            E::InvalidSlug { .. } | E::InvalidInput { .. } => {
                AdminError::BadRequest(error.to_string())
            }
            E::SlugTaken(_) => AdminError::Conflict(error.to_string()),
            E::UnknownTenant(_) | E::UnknownKey(_) => AdminError::NotFound(error.to_string()),
            _ if error.is_unstorable_text() => {
                AdminError::BadRequest("text values may not contain NUL characters".to_owned())
            }
            _ if error.is_unavailable() => {
                tracing::warn!(error = %error, "database unavailable on an admin route");
                AdminError::Unavailable("the database is unreachable; retry shortly")
            }
            _ => AdminError::internal(error),
        }
    }
}

impl From<sqlx::Error> for AdminError {
    fn from(error: sqlx::Error) -> Self {
        AdminError::from(tenancy::Error::from(error))
    }
}

impl ResponseError for AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = Response::builder()
            .status(self.status())
            .content_type("application/json; charset=utf-8")
            .body(body.to_string());
        let headers = response.headers_mut();
        match self {
            AdminError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"roster-admin\""),
                );
            }
            AdminError::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER.as_secs()),
                );
            }
            _ => {}
        }
        response
    }
}

/// Renders any error that reaches the edge of the documented API in the admin shape, keeping
/// the operation id for the access log.
pub fn render(error: poem::Error) -> Response {
    let mut response = match error.downcast_ref::<AdminError>() {
        Some(admin) => admin.as_response(),
        None => AdminError::from_framework(&error).as_response(),
    };
    if let Some(operation) = error.data::<OperationId>() {
        response.set_data(*operation);
    }
    response
}

/// The body of every admin API error.
#[derive(Debug, Object)]
#[oai(example)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `payload_too_large`, `unsupported_media_type`,
    /// `unavailable` or `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

impl Example for ErrorBody {
    fn example() -> Self {
        ErrorBody {
            error: "not_found".to_owned(),
            message: "no tenant \"acme\"".to_owned(),
        }
    }
}

/// The error statuses an operation documents beyond the ones every operation can answer.
pub trait ErrorSet: Send + Sync + 'static {
    const EXTRA: &'static [StatusCode];
}

/// Statuses any admin operation can answer with.
const ALWAYS: [StatusCode; 4] = [
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// Only the statuses every operation can answer with.
pub struct Plain;
/// Adds 400: the request carries parameters or a body that may be invalid.
pub struct Invalid;
/// Adds 404: the operation names a tenant or resource that may not exist.
pub struct Lookup;
/// Adds 400 and 404: a change to a named tenant or resource.
pub struct Change;
/// Adds 400 and 409: a creation that may collide with an existing resource.
pub struct Create;
/// Adds 400, 404 and 409: a change that may collide with the current state.
pub struct Conflicting;

impl ErrorSet for Plain {
    const EXTRA: &'static [StatusCode] = &[];
}
impl ErrorSet for Invalid {
    const EXTRA: &'static [StatusCode] = &[StatusCode::BAD_REQUEST];
}
impl ErrorSet for Lookup {
    const EXTRA: &'static [StatusCode] = &[StatusCode::NOT_FOUND];
}
impl ErrorSet for Change {
    const EXTRA: &'static [StatusCode] = &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND];
}
impl ErrorSet for Create {
    const EXTRA: &'static [StatusCode] = &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT];
}
impl ErrorSet for Conflicting {
    const EXTRA: &'static [StatusCode] = &[
        StatusCode::BAD_REQUEST,
        StatusCode::NOT_FOUND,
        StatusCode::CONFLICT,
    ];
}

/// An [`AdminError`] returned by an operation that documents the error set `S`.
pub struct Failure<S> {
    pub error: AdminError,
    set: PhantomData<S>,
}

/// What admin operations return.
pub type AdminResult<T, S> = Result<T, Failure<S>>;

impl<S> std::fmt::Debug for Failure<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<S> From<AdminError> for Failure<S> {
    fn from(error: AdminError) -> Self {
        Failure {
            error,
            set: PhantomData,
        }
    }
}

impl<S> From<tenancy::Error> for Failure<S> {
    fn from(error: tenancy::Error) -> Self {
        AdminError::from(error).into()
    }
}

impl<S> From<sqlx::Error> for Failure<S> {
    fn from(error: sqlx::Error) -> Self {
        AdminError::from(error).into()
    }
}

impl<S> From<Failure<S>> for poem::Error {
    fn from(failure: Failure<S>) -> Self {
        poem::Error::from(failure.error)
    }
}

impl<S: Send> IntoResponse for Failure<S> {
    fn into_response(self) -> Response {
        self.error.as_response()
    }
}

impl<S: ErrorSet> ApiResponse for Failure<S> {
    fn meta() -> MetaResponses {
        let mut statuses: Vec<StatusCode> = ALWAYS.iter().chain(S::EXTRA).copied().collect();
        statuses.sort();
        MetaResponses {
            responses: statuses
                .into_iter()
                .map(|status| MetaResponse {
                    description: describe(status),
                    status: Some(status.as_u16()),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

/// The description of an error status in the OpenAPI document.
fn describe(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => {
            "`bad_request`: a parameter or body field is malformed or invalid; the message \
             says which."
        }
        StatusCode::UNAUTHORIZED => {
            "`unauthorized`: the bearer token is missing, malformed, badly signed, expired, \
             not yet valid, or from another issuer or audience."
        }
        StatusCode::FORBIDDEN => {
            "`forbidden`: the token is valid but lacks the role (`roster:read` or \
             `roster:write`), or is scoped to another tenant, or the action needs an \
             unscoped token."
        }
        StatusCode::NOT_FOUND => "`not_found`: no such tenant or resource.",
        StatusCode::CONFLICT => {
            "`conflict`: the change contradicts the current state (e.g. the slug is taken)."
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            "`unavailable`: Postgres or the token key source is unreachable, or the \
             deployment lacks a needed setting; retry after `Retry-After` seconds."
        }
        _ => {
            "`internal`: a server-side fault; the `x-request-id` header identifies it in the logs."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let text = response.into_body().into_string().await.unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn errors_render_code_and_message() {
        let response = AdminError::NotFound("no tenant \"x\"".to_owned()).as_response();

        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = body_of(response).await;
        assert_eq!(body["error"], "not_found");
        assert_eq!(body["message"], "no tenant \"x\"");
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let response =
            AdminError::internal("password=hunter2 in a connection string").as_response();

        let body = body_of(response).await;
        assert_eq!(body["error"], "internal");
        assert!(!body.to_string().contains("hunter2"));
    }

    #[test]
    fn unauthorized_and_unavailable_carry_their_headers() {
        let unauthorized = AdminError::Unauthorized.as_response();
        let unavailable = AdminError::Unavailable("down").as_response();

        assert!(unauthorized
            .headers()
            .contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn tenancy_errors_map_to_client_statuses() {
        let taken = AdminError::from(tenancy::Error::SlugTaken("acme".to_owned()));
        let unknown = AdminError::from(tenancy::Error::UnknownTenant("acme".to_owned()));
        let invalid = AdminError::from(tenancy::tenants::validate_slug("A").unwrap_err());

        assert_eq!(taken.status(), StatusCode::CONFLICT);
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn framework_errors_keep_their_meaning() {
        let missing = poem::Error::from_status(StatusCode::NOT_FOUND);
        let method = poem::Error::from_status(StatusCode::METHOD_NOT_ALLOWED);

        assert_eq!(render(missing).status(), StatusCode::NOT_FOUND);
        assert_eq!(render(method).status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn error_sets_document_common_and_extra_statuses() {
        let statuses: Vec<Option<u16>> = Failure::<Change>::meta()
            .responses
            .iter()
            .map(|r| r.status)
            .collect();

        assert_eq!(statuses, [400, 401, 403, 404, 500, 503].map(Some).to_vec());
    }
}
