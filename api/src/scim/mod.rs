//! The SCIM 2.0 surface (RFC 7643/7644) as Microsoft Entra uses it.
//!
//! Every tenant is reachable at two bases: `/scim/v2` (the tenant is the key's) and
//! `/scim/v2/{tenant}` (the key must belong to that tenant). Everything that goes wrong under
//! either base answers in the SCIM error shape, including unknown paths and wrong methods.

pub mod auth;
pub mod discovery;
pub mod error;
pub mod filter;
pub mod groups;
pub mod patch;
pub mod path;
pub mod query;
pub mod quirks;
pub mod resources;
pub mod response;
pub mod user_request;

use poem::{get, Endpoint, EndpointExt, IntoEndpoint, Route};

use self::error::render;
use crate::body_limit::BodyLimit;

/// The SCIM routes under both bases (relative to `/scim`), refusing bodies over `body_limit` bytes.
pub fn routes(body_limit: usize) -> impl Endpoint {
    let mut route = Route::new();
    for base in ["/v2", "/v2/:tenant"] {
        route = route
            .at(
                format!("{base}/ServiceProviderConfig"),
                get(discovery::get_service_provider_config),
            )
            .at(format!("{base}/Schemas"), get(discovery::list_schemas))
            .at(format!("{base}/Schemas/:id"), get(discovery::get_schema))
            .at(
                format!("{base}/ResourceTypes"),
                get(discovery::list_resource_types),
            )
            .at(
                format!("{base}/ResourceTypes/:id"),
                get(discovery::get_resource_type),
            )
            .at(
                format!("{base}/Groups"),
                get(groups::list_groups).post(groups::refuse_write),
            )
            .at(
                format!("{base}/Groups/:id"),
                get(groups::get_group)
                    .patch(groups::patch_group)
                    .put(groups::refuse_write)
                    .delete(groups::refuse_write),
            );
    }
    route
        .at("/*rest", unknown_path)
        .with(BodyLimit(body_limit))
        .catch_all_error(|error| async move { render(error) })
        .into_endpoint()
}

/// Any other path under the SCIM bases.
#[poem::handler]
fn unknown_path() -> error::ScimError {
    error::ScimError::NotFound("no such SCIM endpoint".to_owned())
}
