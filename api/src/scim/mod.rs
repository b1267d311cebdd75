//! The SCIM 2.0 surface (RFC 7643/7644) as Microsoft Entra uses it.
//!
//! Every tenant is reachable at two bases: `/scim/v2` (the tenant is the key's) and
//! `/scim/v2/{tenant}` (the key must belong to that tenant). Everything that goes wrong under
//! either base answers in the SCIM error shape, including unknown paths and wrong methods.

pub mod auth;
pub mod body;
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
pub mod users;

use poem::{get, post, Endpoint, EndpointExt, IntoEndpoint, Route};

use self::error::render;
use crate::state::BodyLimitConfig;

/// The SCIM routes under both bases (relative to `/scim`), with bodies bounded by `body_limit`.
pub fn routes(body_limit: BodyLimitConfig) -> impl Endpoint {
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
            .at(format!("{base}/.search"), post(search_not_implemented))
            .at(
                format!("{base}/Users/.search"),
                post(search_not_implemented),
            )
            .at(
                format!("{base}/Users"),
                get(users::list_users).post(users::create_user),
            )
            .at(
                format!("{base}/Users/:id"),
                get(users::get_user)
                    .put(users::replace_user)
                    .patch(users::patch_user)
                    .delete(users::delete_user),
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
        .with(body_limit.middleware())
        .catch_all_error(|error| async move { render(error) })
        .into_endpoint()
}

/// `POST /.search`: searching is done with `GET` and `filter`.
#[poem::handler]
fn search_not_implemented() -> error::ScimError {
    error::ScimError::NotImplemented("POST /.search is not supported; use GET with filter")
}

/// Any other path under the SCIM bases.
#[poem::handler]
fn unknown_path() -> error::ScimError {
    error::ScimError::NotFound("no such SCIM endpoint".to_owned())
}
