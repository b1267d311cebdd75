//! SCIM resource shapes that Roster returns: users, groups, list responses, and projection.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::discovery::{GROUP_SCHEMA, USER_SCHEMA};
use super::query::Projection;
use super::response::LIST_RESPONSE_SCHEMA;
use crate::directory::groups::{Group, Member};
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

/// A synced group as a SCIM Group resource. `members` is present when the caller loaded them
/// (at most `groups::MEMBER_PAGE_LIMIT`, the first by id) and the group has any.
pub fn group(group: &Group, members: Option<&[Member]>, base_url: &str) -> Value {
    let mut resource = Map::new();
    resource.insert("schemas".into(), json!([GROUP_SCHEMA]));
    resource.insert("id".into(), json!(group.id));
    insert_some(&mut resource, "externalId", group.external_id.as_deref());
    resource.insert("displayName".into(), json!(group.display_name));
    if let Some(members) = members.filter(|members| !members.is_empty()) {
        let members = members.iter().map(|m| member(m, base_url)).collect();
        resource.insert("members".into(), Value::Array(members));
    }
    resource.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": timestamp(&group.created_at),
            "lastModified": timestamp(&group.updated_at),
            "location": format!("{base_url}/Groups/{}", group.id),
        }),
    );
    Value::Object(resource)
}

fn member(member: &Member, base_url: &str) -> Value {
    json!({
        "value": member.user_id,
        "$ref": format!("{base_url}/Users/{}", member.user_id),
        "display": member.display,
    })
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
