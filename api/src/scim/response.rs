//! Successful SCIM responses: `application/scim+json`, with `Location` where RFC 7644 asks.

use poem::http::{header, HeaderValue, StatusCode};
use poem::{IntoResponse, Response};
use serde_json::Value;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// A SCIM JSON document with a status and optional `Location`.
#[derive(Debug)]
pub struct ScimJson {
    status: StatusCode,
    body: Value,
    location: Option<String>,
}

impl ScimJson {
    pub fn ok(body: Value) -> Self {
        ScimJson {
            status: StatusCode::OK,
            body,
            location: None,
        }
    }

    pub fn created(body: Value, location: String) -> Self {
        ScimJson {
            status: StatusCode::CREATED,
            body,
            location: Some(location),
        }
    }
}

impl IntoResponse for ScimJson {
    fn into_response(self) -> Response {
        let mut response = Response::builder()
            .status(self.status)
            .content_type(SCIM_CONTENT_TYPE)
            .body(self.body.to_string());
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    }
}

/// `204 No Content`.
pub fn no_content() -> Response {
    Response::builder().status(StatusCode::NO_CONTENT).finish()
}
