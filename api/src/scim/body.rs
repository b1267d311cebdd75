//! SCIM request bodies: JSON labelled `application/scim+json` or `application/json`.

use poem::error::ReadBodyError;
use poem::{FromRequest, Request, RequestBody};
use serde_json::Value;

use super::error::ScimError;

/// A parsed JSON request body.
#[derive(Debug)]
pub struct ScimBody(pub Value);

impl<'a> FromRequest<'a> for ScimBody {
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        if !is_json(req.header("content-type")) {
            return Err(ScimError::UnsupportedMediaType.into());
        }
        let bytes = body.take()?.into_bytes().await.map_err(|e| match e {
            ReadBodyError::PayloadTooLarge => ScimError::PayloadTooLarge,
            _ => ScimError::bad_request("invalidSyntax", "the request body could not be read"),
        })?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::bad_request(
                "invalidSyntax",
                format!(
                    "the request body is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        Ok(ScimBody(value))
    }
}

/// Entra labels bodies `application/scim+json`; tools send `application/json`; a body with no
/// label at all is given the benefit of the doubt.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/scim+json" | "application/json"
    )
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_labels_are_accepted_with_or_without_charset() {
        for label in [
            None,
            Some("application/scim+json"),
            Some("application/json"),
            Some("application/scim+json; charset=utf-8"),
            Some("Application/JSON;charset=UTF-8"),
        ] {
            assert!(is_json(label), "{label:?}");
        }
        for label in [
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(Some(label)), "{label}");
        }
    }
}
