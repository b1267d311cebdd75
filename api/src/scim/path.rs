//! Path parameters of SCIM routes.
//!
//! Every SCIM route exists under two bases, one with a `{tenant}` segment, so handlers read
//! their resource id by name rather than by position. Ids are percent-decoded once; a client
//! that double-encodes (Entra may) ends up with an id that matches nothing, which is a 404.

use poem::{FromRequest, Request, RequestBody};

/// The `{id}` segment of a SCIM route, percent-decoded.
#[derive(Debug, Clone)]
pub struct ResourceId(pub String);

impl<'a> FromRequest<'a> for ResourceId {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let raw = req.raw_path_param("id").unwrap_or_default();
        let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
        Ok(ResourceId(decoded.into_owned()))
    }
}
