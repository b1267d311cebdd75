//! Discovery (RFC 7643 §5-7): what Roster supports and stores, stated honestly.
//!
//! User attributes are published `immutable`: Roster sets them when Entra creates a user and
//! never changes them over SCIM, because profiles belong to the platform. Group `members` is
//! the only attribute a SCIM client can change.

use serde_json::{json, Value};

use super::auth::ScimCaller;
use super::error::ScimError;
use super::path::ResourceId;
use super::response::{ScimJson, LIST_RESPONSE_SCHEMA};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// Largest page `GET /Users` and `GET /Groups` return, advertised as `filter.maxResults`.
pub const MAX_RESULTS: usize = 200;

pub fn service_provider_config(base_url: &str) -> Value {
    json!({
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/roster/roster#scim",
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_RESULTS },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": false },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "API key",
            "description": "A Roster service-account API key sent as `Authorization: Bearer <key>`",
            "primary": true
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base_url}/ServiceProviderConfig")
        }
    })
}

fn attribute(name: &str, kind: &str, description: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "description": description,
        "required": false,
        "caseExact": false,
        "mutability": "immutable",
        "returned": "default",
        "uniqueness": "none"
    })
}

fn user_schema(base_url: &str) -> Value {
    let mut user_name = attribute(
        "userName",
        "string",
        "Unique per tenant, compared case-insensitively.",
    );
    user_name["required"] = json!(true);
    user_name["uniqueness"] = json!("server");
    let mut name = attribute("name", "complex", "The user's name.");
    name["subAttributes"] = json!([
        attribute("givenName", "string", "Given name."),
        attribute("familyName", "string", "Family name."),
        attribute("formatted", "string", "The full name as displayed."),
    ]);
    let mut emails = attribute(
        "emails",
        "complex",
        "Email addresses. The work email (else the primary) is unique per tenant.",
    );
    emails["multiValued"] = json!(true);
    emails["subAttributes"] = json!([
        attribute("value", "string", "The address."),
        attribute("type", "string", "work, home or other."),
        attribute("primary", "boolean", "Whether this is the primary address."),
    ]);
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "A person provisioned by the identity provider. Attributes are set at \
                        creation and managed in the platform afterwards.",
        "attributes": [
            user_name,
            name,
            attribute("displayName", "string", "The name to display."),
            emails,
            attribute("active", "boolean", "Whether the user may sign in."),
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base_url}/Schemas/{USER_SCHEMA}") }
    })
}

fn group_schema(base_url: &str) -> Value {
    let mut display_name = attribute("displayName", "string", "The group's name.");
    display_name["mutability"] = json!("readOnly");
    let member_attribute = |name: &str, kind: &str, description: &str| {
        let mut sub = attribute(name, kind, description);
        sub["mutability"] = json!("immutable");
        sub
    };
    let mut reference = member_attribute("$ref", "reference", "The member's URI.");
    reference["referenceTypes"] = json!(["User"]);
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": GROUP_SCHEMA,
        "name": "Group",
        "description": "A platform group with Sync Enabled. Groups are created, renamed and \
                        deleted in the platform; SCIM clients manage their members.",
        "attributes": [
            display_name,
            {
                "name": "members",
                "type": "complex",
                "multiValued": true,
                "description": "Members of the group (users of this tenant).",
                "required": false,
                "mutability": "readWrite",
                "returned": "default",
                "uniqueness": "none",
                "subAttributes": [
                    member_attribute("value", "string", "The member's id."),
                    reference,
                    member_attribute("display", "string", "The member's display name."),
                ]
            }
        ],
        "meta": { "resourceType": "Schema", "location": format!("{base_url}/Schemas/{GROUP_SCHEMA}") }
    })
}

/// The schema with this id, if Roster publishes it.
pub fn schema(base_url: &str, id: &str) -> Option<Value> {
    match id {
        USER_SCHEMA => Some(user_schema(base_url)),
        GROUP_SCHEMA => Some(group_schema(base_url)),
        _ => None,
    }
}

pub fn schemas(base_url: &str) -> Value {
    list(vec![user_schema(base_url), group_schema(base_url)])
}

fn resource_type(base_url: &str, name: &str, endpoint: &str, schema: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": name,
        "name": name,
        "endpoint": endpoint,
        "schema": schema,
        "schemaExtensions": [],
        "meta": {
            "resourceType": "ResourceType",
            "location": format!("{base_url}/ResourceTypes/{name}")
        }
    })
}

/// The resource type with this id, if Roster serves it.
pub fn resource_type_by_id(base_url: &str, id: &str) -> Option<Value> {
    match id {
        "User" => Some(resource_type(base_url, "User", "/Users", USER_SCHEMA)),
        "Group" => Some(resource_type(base_url, "Group", "/Groups", GROUP_SCHEMA)),
        _ => None,
    }
}

pub fn resource_types(base_url: &str) -> Value {
    list(vec![
        resource_type(base_url, "User", "/Users", USER_SCHEMA),
        resource_type(base_url, "Group", "/Groups", GROUP_SCHEMA),
    ])
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// `GET /ServiceProviderConfig`
#[poem::handler]
pub async fn get_service_provider_config(caller: ScimCaller) -> ScimJson {
    caller
        .context
        .set_operation("scim.discovery.service_provider_config");
    ScimJson::ok(service_provider_config(&caller.base_url))
}

/// `GET /Schemas`
#[poem::handler]
pub async fn list_schemas(caller: ScimCaller) -> ScimJson {
    caller.context.set_operation("scim.discovery.schemas");
    ScimJson::ok(schemas(&caller.base_url))
}

/// `GET /Schemas/{id}`
#[poem::handler]
pub async fn get_schema(
    caller: ScimCaller,
    ResourceId(id): ResourceId,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation("scim.discovery.schema");
    schema(&caller.base_url, &id)
        .map(ScimJson::ok)
        .ok_or_else(|| ScimError::NotFound("no such schema".to_owned()))
}

/// `GET /ResourceTypes`
#[poem::handler]
pub async fn list_resource_types(caller: ScimCaller) -> ScimJson {
    caller
        .context
        .set_operation("scim.discovery.resource_types");
    ScimJson::ok(resource_types(&caller.base_url))
}

/// `GET /ResourceTypes/{id}`
#[poem::handler]
pub async fn get_resource_type(
    caller: ScimCaller,
    ResourceId(id): ResourceId,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation("scim.discovery.resource_type");
    resource_type_by_id(&caller.base_url, &id)
        .map(ScimJson::ok)
        .ok_or_else(|| ScimError::NotFound("no such resource type".to_owned()))
}
