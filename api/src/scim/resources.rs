//! SCIM resource shapes that Roster returns: users, list responses, and projection.

use serde_json::{json, Map, Value};

use super::discovery::USER_SCHEMA;
use super::query::Projection;
use super::response::LIST_RESPONSE_SCHEMA;
use crate::directory::users::User;

/// A stored user as a SCIM User resource.
pub fn user(user: &User, base_url: &str) -> Value {
    let mut resource = Map::new();
    resource.insert("schemas".into(), json!([USER_SCHEMA]));
    resource.insert("id".into(), json!(user.id));
    insert_some(&mut resource, "externalId", user.external_id.as_deref());
    resource.insert("userName".into(), json!(user.user_name));
    let mut name = Map::new();
    insert_some(&mut name, "givenName", user.given_name.as_deref());
    insert_some(&mut name, "familyName", user.family_name.as_deref());
    insert_some(&mut name, "formatted", user.formatted_name.as_deref());
    if !name.is_empty() {
        resource.insert("name".into(), Value::Object(name));
    }
    insert_some(&mut resource, "displayName", user.display_name.as_deref());
    if user
        .emails
        .as_array()
        .is_some_and(|emails| !emails.is_empty())
    {
        resource.insert("emails".into(), user.emails.clone());
    }
    resource.insert("active".into(), json!(user.active));
    resource.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": user.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": user.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": format!("{base_url}/Users/{}", user.id),
        }),
    );
    Value::Object(resource)
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(value) = value {
        map.insert(key.into(), json!(value));
    }
}

/// Drops what the projection excludes from a resource.
pub fn project(resource: Value, projection: &Projection) -> Value {
    if projection == &Projection::default() {
        return resource;
    }
    let Value::Object(map) = resource else {
        return resource;
    };
    let kept = map
        .into_iter()
        .filter(|(key, _)| projection.keeps(key))
        .map(|(key, value)| match value {
            Value::Object(sub) if !matches!(key.as_str(), "meta") => {
                let sub: Map<String, Value> = sub
                    .into_iter()
                    .filter(|(sub_key, _)| projection.keeps_sub(&key, sub_key))
                    .collect();
                (key, Value::Object(sub))
            }
            other => (key, other),
        })
        .collect();
    Value::Object(kept)
}

/// A ListResponse page.
pub fn list(resources: Vec<Value>, total: i64, start_index: i64) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}
