//! The Entra dialect variations a SCIM request showed.
//!
//! Entra's provisioning client speaks two PATCH dialects (with and without the `aadOptscim062020`
//! flag) and bends RFC 7643/7644 in known ways. Roster accepts all of them; the parsers in
//! [`super::patch`] and [`super::user_request`] record which ones each request used, so that the
//! counts can be stored per tenant and support can tell a customer "your Entra app sends X".
//!
//! This module also owns the two lookups both parsers share because they are where most quirks
//! are seen: case-insensitive attribute lookup and the `schemas` check.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One dialect variation. The names returned by [`Quirk::as_str`] are stored and counted per
/// tenant: never rename one, only add new variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quirk {
    /// A PATCH `op` not in lowercase: `"Add"`, `"Replace"`, `"Remove"` (Entra's default dialect).
    CapitalisedOp,
    /// A boolean sent as the string `"True"`/`"False"` (any case), for `active` or `primary`.
    StringBoolean,
    /// A member value carrying `"$ref": null`.
    NullRef,
    /// A PATCH operation without `path` whose `value` is an object of attributes.
    PathlessValueObject,
    /// A sub-attribute path such as `name.givenName`, in `path` or as a key of a path-less value.
    DottedPath,
    /// A path qualified by a schema URN, such as
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`.
    UrnPath,
    /// A value-filter path such as `emails[type eq "work"].value` or `members[value eq "…"]`.
    ValueFilterPath,
    /// A group `Remove` on `members` listing the members to remove in `value` (Entra's default
    /// dialect; the RFC reading would remove every member).
    MemberRemoveByValue,
    /// Members sent as a single object instead of an array of objects.
    SingleMemberObject,
    /// A `schemas` entry, or a URN-named attribute, of a schema Roster does not know (including
    /// Entra's malformed `urn:ietf:params:scim:schemas:extension:enterprise:2.0User`).
    UnknownSchemaUrn,
    /// `schemas` absent, not an array, or without the URN the request type is defined by.
    MissingSchema,
    /// A client-supplied `meta` in a create body.
    ClientMeta,
    /// An attribute sent as an explicit JSON `null`.
    ExplicitNull,
    /// An attribute or message key spelled in another case than the schema's (`UserName`,
    /// `Members`, `operations`, `Value`).
    AttributeNameCase,
    /// An attribute that is not part of the SCIM core or enterprise User schema (Entra's older
    /// create body sends top-level `department` and `manager`).
    UnknownAttribute,
}

impl Quirk {
    /// The stable snake_case name under which the quirk is stored and counted.
    pub fn as_str(&self) -> &'static str {
        match self {
            Quirk::CapitalisedOp => "capitalised_op",
            Quirk::StringBoolean => "string_boolean",
            Quirk::NullRef => "null_ref",
            Quirk::PathlessValueObject => "pathless_value_object",
            Quirk::DottedPath => "dotted_path",
            Quirk::UrnPath => "urn_path",
            Quirk::ValueFilterPath => "value_filter_path",
            Quirk::MemberRemoveByValue => "member_remove_by_value",
            Quirk::SingleMemberObject => "single_member_object",
            Quirk::UnknownSchemaUrn => "unknown_schema_urn",
            Quirk::MissingSchema => "missing_schema",
            Quirk::ClientMeta => "client_meta",
            Quirk::ExplicitNull => "explicit_null",
            Quirk::AttributeNameCase => "attribute_name_case",
            Quirk::UnknownAttribute => "unknown_attribute",
        }
    }
}

/// The set of quirks one request showed, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quirks(BTreeSet<Quirk>);

impl Quirks {
    /// Records that the request showed `quirk`; recording it again changes nothing.
    pub fn insert(&mut self, quirk: Quirk) {
        self.0.insert(quirk);
    }

    pub fn contains(&self, quirk: Quirk) -> bool {
        self.0.contains(&quirk)
    }

    /// The recorded quirks in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Quirk> + '_ {
        self.0.iter().copied()
    }
}

/// Looks `name` up in `object` case-insensitively, as RFC 7643 §2.1 asks. An exact match wins;
/// otherwise the first key equal ignoring ASCII case is used and recorded as
/// [`Quirk::AttributeNameCase`].
pub(super) fn field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    quirks: &mut Quirks,
) -> Option<&'a Value> {
    let (key, value) = lookup(object, name)?;
    if key != name {
        quirks.insert(Quirk::AttributeNameCase);
    }
    Some(value)
}

/// [`field`] for callers that record no quirks: the matching key and its value.
pub(super) fn lookup<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Option<(&'a str, &'a Value)> {
    if let Some((key, value)) = object.get_key_value(name) {
        return Some((key, value));
    }
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(key, value)| (key.as_str(), value))
}

/// Records the quirks of a message's `schemas` member. Never fails: Entra always sends the
/// expected URN, and a wrong or missing `schemas` tells Roster nothing it needs, so rejecting
/// the request would only break a client that is otherwise understood.
pub(super) fn check_schemas(
    object: &Map<String, Value>,
    required_urn: &str,
    optional_urns: &[&str],
    quirks: &mut Quirks,
) {
    let Some(Value::Array(schemas)) = field(object, "schemas", quirks) else {
        quirks.insert(Quirk::MissingSchema);
        return;
    };
    let urns: Vec<&str> = schemas.iter().filter_map(Value::as_str).collect();
    if !urns
        .iter()
        .any(|urn| urn.eq_ignore_ascii_case(required_urn))
    {
        quirks.insert(Quirk::MissingSchema);
    }
    let is_known = |urn: &&str| {
        urn.eq_ignore_ascii_case(required_urn)
            || optional_urns
                .iter()
                .any(|known| urn.eq_ignore_ascii_case(known))
    };
    if urns.len() != schemas.len() || !urns.iter().all(is_known) {
        quirks.insert(Quirk::UnknownSchemaUrn);
    }
}

/// Reads a SCIM boolean: a JSON boolean, or Entra's `"True"`/`"False"` in any case (recorded as
/// [`Quirk::StringBoolean`]). Anything else is `None`.
pub(super) fn boolean(value: &Value, quirks: &mut Quirks) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) => {
            let flag = string_boolean(text)?;
            quirks.insert(Quirk::StringBoolean);
            Some(flag)
        }
        _ => None,
    }
}

/// `"true"`/`"false"` in any case.
pub(super) fn string_boolean(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Strategies shared by the property tests of the SCIM parsers.
#[cfg(test)]
pub(crate) mod arbitrary {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// Keys and strings that steer the parsers into their interesting branches.
    const WORDS: &[&str] = &[
        "schemas",
        "Operations",
        "operations",
        "op",
        "path",
        "value",
        "Value",
        "members",
        "Members",
        "display",
        "$ref",
        "Add",
        "add",
        "remove",
        "Remove",
        "replace",
        "REPLACE",
        "True",
        "false",
        "userName",
        "UserName",
        "externalId",
        "displayName",
        "name",
        "givenName",
        "familyName",
        "formatted",
        "emails",
        "type",
        "work",
        "primary",
        "active",
        "meta",
        "roles",
        "name.givenName",
        "members[value eq \"a\"]",
        "members[value eq \"a\" or value eq \"b\"]",
        "members[display eq \"a\"]",
        "emails[type eq \"work\"].value",
        "urn:ietf:params:scim:api:messages:2.0:PatchOp",
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
        "urn:ietf:params:scim:schemas:core:2.0:Group:members",
    ];

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => proptest::sample::select(WORDS).prop_map(str::to_owned),
            1 => "[a-zA-Z.:\\[\\]\" =$]{0,24}",
            1 => any::<String>(),
        ]
    }

    /// Arbitrary JSON, at most four levels deep, biased towards SCIM-shaped keys and values.
    pub(crate) fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            word().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((word(), inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const ALL: [Quirk; 15] = [
        Quirk::CapitalisedOp,
        Quirk::StringBoolean,
        Quirk::NullRef,
        Quirk::PathlessValueObject,
        Quirk::DottedPath,
        Quirk::UrnPath,
        Quirk::ValueFilterPath,
        Quirk::MemberRemoveByValue,
        Quirk::SingleMemberObject,
        Quirk::UnknownSchemaUrn,
        Quirk::MissingSchema,
        Quirk::ClientMeta,
        Quirk::ExplicitNull,
        Quirk::AttributeNameCase,
        Quirk::UnknownAttribute,
    ];

    const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            other => panic!("test body is not an object: {other}"),
        }
    }

    fn schema_quirks(body: Value) -> Quirks {
        let mut quirks = Quirks::default();
        check_schemas(&object(body), PATCH_OP, &[], &mut quirks);
        quirks
    }

    #[test]
    fn names_are_unique_snake_case() {
        let names: HashSet<&str> = ALL.iter().map(Quirk::as_str).collect();

        assert_eq!(names.len(), ALL.len());
        for name in names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn names_are_stable() {
        // These strings are stored per tenant; changing one silently resets its counter.
        assert_eq!(Quirk::CapitalisedOp.as_str(), "capitalised_op");
        assert_eq!(
            Quirk::MemberRemoveByValue.as_str(),
            "member_remove_by_value"
        );
        assert_eq!(Quirk::UnknownAttribute.as_str(), "unknown_attribute");
    }

    #[test]
    fn quirks_are_a_sorted_set() {
        let mut quirks = Quirks::default();

        quirks.insert(Quirk::ExplicitNull);
        quirks.insert(Quirk::CapitalisedOp);
        quirks.insert(Quirk::ExplicitNull);

        let recorded: Vec<Quirk> = quirks.iter().collect();
        assert_eq!(recorded, vec![Quirk::CapitalisedOp, Quirk::ExplicitNull]);
        assert!(quirks.contains(Quirk::ExplicitNull));
        assert!(!quirks.contains(Quirk::NullRef));
    }

    #[test]
    fn exact_key_wins_without_quirk() {
        let body = object(json!({"userName": "exact", "username": "other"}));
        let mut quirks = Quirks::default();

        assert_eq!(field(&body, "userName", &mut quirks), Some(&json!("exact")));
        assert_eq!(quirks, Quirks::default());
    }

    #[test]
    fn other_case_key_is_found_and_recorded() {
        let body = object(json!({"UserName": "x"}));
        let mut quirks = Quirks::default();

        assert_eq!(field(&body, "userName", &mut quirks), Some(&json!("x")));
        assert!(quirks.contains(Quirk::AttributeNameCase));
        assert_eq!(field(&body, "externalId", &mut quirks), None);
    }

    #[test]
    fn expected_schema_has_no_quirk() {
        assert_eq!(
            schema_quirks(json!({"schemas": [PATCH_OP]})),
            Quirks::default()
        );
    }

    #[test]
    fn schema_urns_compare_case_insensitively() {
        let quirks = schema_quirks(json!({"schemas": [PATCH_OP.to_uppercase()]}));

        assert_eq!(quirks, Quirks::default());
    }

    #[test]
    fn missing_or_malformed_schemas_are_recorded_not_rejected() {
        for body in [
            json!({}),
            json!({"schemas": null}),
            json!({"schemas": PATCH_OP}),
        ] {
            assert!(schema_quirks(body).contains(Quirk::MissingSchema));
        }
    }

    #[test]
    fn unknown_schema_urns_are_recorded() {
        let malformed = "urn:ietf:params:scim:schemas:extension:enterprise:2.0User";

        let quirks = schema_quirks(json!({"schemas": [PATCH_OP, malformed]}));

        assert!(quirks.contains(Quirk::UnknownSchemaUrn));
        assert!(!quirks.contains(Quirk::MissingSchema));
        assert!(schema_quirks(json!({"schemas": [PATCH_OP, 7]})).contains(Quirk::UnknownSchemaUrn));
    }

    #[test]
    fn booleans_accept_entra_strings() {
        let mut quirks = Quirks::default();

        assert_eq!(boolean(&json!(true), &mut quirks), Some(true));
        assert!(!quirks.contains(Quirk::StringBoolean));
        assert_eq!(boolean(&json!("False"), &mut quirks), Some(false));
        assert_eq!(boolean(&json!("TRUE"), &mut quirks), Some(true));
        assert!(quirks.contains(Quirk::StringBoolean));
        for other in [json!("yes"), json!(1), json!(null), json!([true])] {
            assert_eq!(boolean(&other, &mut quirks), None);
        }
    }

    proptest! {
        #[test]
        fn shared_lookups_never_panic(body in arbitrary::json(), name in "[a-zA-Z]{1,10}") {
            let mut quirks = Quirks::default();
            if let Value::Object(object) = &body {
                let found = field(object, &name, &mut quirks);
                let exists = object.keys().any(|key| key.eq_ignore_ascii_case(&name));
                prop_assert_eq!(found.is_some(), exists);
                check_schemas(object, PATCH_OP, &[], &mut quirks);
            }
            boolean(&body, &mut quirks);
        }
    }
}
