//! Entra's `POST /Users` body as a typed create request.
//!
//! Only the attributes Roster stores are read: `userName`, `externalId`, `displayName`, `name`
//! (`givenName`, `familyName`, `formatted`), `emails` and `active`. Everything else Entra sends
//! (the enterprise extension, `roles: []`, `meta`, explicit `null`s, unknown attributes and schema
//! URNs) is ignored and recorded as a quirk. Attribute names are matched case-insensitively and
//! values are kept verbatim. Nothing here knows about HTTP or storage: an error's `Display` is the
//! SCIM `detail`, and [`UserRequestError::scim_type`] its `scimType`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::quirks::{self, Quirk, Quirks};

/// The longest `userName` accepted, in characters.
pub const MAX_USER_NAME_CHARS: usize = 256;

/// The longest value accepted for any other stored string, in characters.
pub const MAX_STRING_CHARS: usize = 1024;

/// The most emails one user may have.
pub const MAX_EMAILS: usize = 20;

const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE_USER_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// How errors describe the booleans Roster accepts.
const EXPECTED_BOOLEAN: &str = "a boolean or \"True\"/\"False\"";

/// Top-level attributes Roster stores.
const STORED_ATTRIBUTES: &[&str] = &[
    "userName",
    "externalId",
    "displayName",
    "name",
    "emails",
    "active",
];

/// RFC 7643 §4.1 User attributes Roster does not store: standard, so ignored without a quirk.
const UNSTORED_CORE_ATTRIBUTES: &[&str] = &[
    "schemas",
    "id",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "password",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "groups",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// A user to create, as Entra described it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRequest {
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub formatted_name: Option<String>,
    pub emails: Vec<Email>,
    pub active: bool,
    pub quirks: Quirks,
}

/// One entry of `emails`, stored as `{"value", "type", "primary"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    pub value: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub primary: bool,
}

impl UserRequest {
    /// The email Roster matches and provisions on: the one typed `work` (any case), else the
    /// primary one, else the first.
    pub fn work_email(&self) -> Option<&str> {
        let is_work = |email: &&Email| {
            let kind = email.kind.as_deref();
            kind.is_some_and(|kind| kind.eq_ignore_ascii_case("work"))
        };
        let work = self.emails.iter().find(is_work);
        work.or_else(|| self.emails.iter().find(|email| email.primary))
            .or_else(|| self.emails.first())
            .map(|email| email.value.as_str())
    }
}

/// Why a create body was refused. Every variant is a `400`; `Display` is the SCIM `detail`,
/// which names the attribute (`emails[1].value`) but never echoes a value.
#[derive(Debug, thiserror::Error)]
pub enum UserRequestError {
    /// `400 invalidSyntax`: the body is JSON but not an object.
    #[error("the user must be a JSON object")]
    NotAnObject,
    /// `400 invalidValue`: a required attribute (`userName`, an email's `value`) is absent.
    #[error("{attribute} is required")]
    Missing { attribute: String },
    /// `400 invalidValue`: a stored attribute has the wrong JSON type, or is a string holding
    /// a NUL.
    #[error("{attribute} must be {expected}")]
    WrongType {
        attribute: String,
        expected: &'static str,
    },
    /// `400 invalidValue`: `userName` or an email's `value` is empty.
    #[error("{attribute} must not be empty")]
    Empty { attribute: String },
    /// `400 invalidValue`: a string longer than [`MAX_USER_NAME_CHARS`] (for `userName`) or
    /// [`MAX_STRING_CHARS`].
    #[error("{attribute} must be at most {max} characters long")]
    TooLong { attribute: String, max: usize },
    /// `400 invalidValue`: more than [`MAX_EMAILS`] emails.
    #[error("a user may have at most {max} emails; this one has {count}", max = MAX_EMAILS)]
    TooManyEmails { count: usize },
}

impl UserRequestError {
    /// The RFC 7644 §3.12 `scimType` of the error response.
    pub fn scim_type(&self) -> &'static str {
        match self {
            UserRequestError::NotAnObject => "invalidSyntax",
            UserRequestError::Missing { .. }
            | UserRequestError::WrongType { .. }
            | UserRequestError::Empty { .. }
            | UserRequestError::TooLong { .. }
            | UserRequestError::TooManyEmails { .. } => "invalidValue",
        }
    }
}

/// Parses a `POST /Users` body. Explicit `null`s count as absent.
pub fn parse(body: &Value) -> Result<UserRequest, UserRequestError> {
    let object = body.as_object().ok_or(UserRequestError::NotAnObject)?;
    let mut quirks = Quirks::default();
    quirks::check_schemas(object, USER_URN, &[ENTERPRISE_USER_URN], &mut quirks);
    record_ignored_attributes(object, &mut quirks);

    let user_name = user_name(object, &mut quirks)?;
    let external_id = optional_string(object, "externalId", "externalId", &mut quirks)?;
    let display_name = optional_string(object, "displayName", "displayName", &mut quirks)?;
    let [given_name, family_name, formatted_name] = name_parts(object, &mut quirks)?;
    let emails = emails(object, &mut quirks)?;
    let active = active(object, &mut quirks)?;

    Ok(UserRequest {
        user_name,
        external_id,
        display_name,
        given_name,
        family_name,
        formatted_name,
        emails,
        active,
        quirks,
    })
}

/// Records the quirks of the top-level attributes: `meta`, `null`s, unknown names.
fn record_ignored_attributes(object: &Map<String, Value>, quirks: &mut Quirks) {
    for (key, value) in object {
        if value.is_null() {
            quirks.insert(Quirk::ExplicitNull);
        }
        if let Some(quirk) = attribute_name_quirk(key) {
            quirks.insert(quirk);
        }
    }
}

fn attribute_name_quirk(key: &str) -> Option<Quirk> {
    let is_one_of = |names: &[&str]| names.iter().any(|name| key.eq_ignore_ascii_case(name));
    let is_urn = key
        .get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:"));
    if key.eq_ignore_ascii_case("meta") {
        Some(Quirk::ClientMeta)
    } else if key.eq_ignore_ascii_case(ENTERPRISE_USER_URN)
        || is_one_of(STORED_ATTRIBUTES)
        || is_one_of(UNSTORED_CORE_ATTRIBUTES)
    {
        None
    } else if is_urn {
        Some(Quirk::UnknownSchemaUrn)
    } else {
        Some(Quirk::UnknownAttribute)
    }
}

fn user_name(object: &Map<String, Value>, quirks: &mut Quirks) -> Result<String, UserRequestError> {
    let Some(value) = present(object, "userName", quirks) else {
        return Err(UserRequestError::Missing {
            attribute: "userName".to_owned(),
        });
    };
    let user_name = string(value, "userName", MAX_USER_NAME_CHARS)?;
    if user_name.trim().is_empty() {
        return Err(UserRequestError::Empty {
            attribute: "userName".to_owned(),
        });
    }
    Ok(user_name)
}

/// `givenName`, `familyName` and `formatted` of the complex attribute `name`.
fn name_parts(
    object: &Map<String, Value>,
    quirks: &mut Quirks,
) -> Result<[Option<String>; 3], UserRequestError> {
    let name = match present(object, "name", quirks) {
        None => return Ok([None, None, None]),
        Some(Value::Object(name)) => name,
        Some(_) => return Err(wrong_type("name", "an object")),
    };
    let mut part = |sub: &str| optional_string(name, sub, &format!("name.{sub}"), quirks);
    Ok([part("givenName")?, part("familyName")?, part("formatted")?])
}

fn active(object: &Map<String, Value>, quirks: &mut Quirks) -> Result<bool, UserRequestError> {
    match present(object, "active", quirks) {
        None => Ok(true),
        Some(value) => {
            quirks::boolean(value, quirks).ok_or_else(|| wrong_type("active", EXPECTED_BOOLEAN))
        }
    }
}

fn emails(
    object: &Map<String, Value>,
    quirks: &mut Quirks,
) -> Result<Vec<Email>, UserRequestError> {
    let entries = match present(object, "emails", quirks) {
        None => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(wrong_type("emails", "an array")),
    };
    if entries.len() > MAX_EMAILS {
        return Err(UserRequestError::TooManyEmails {
            count: entries.len(),
        });
    }

    let mut emails = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        if let Some(email) = email(index, entry, quirks)? {
            emails.push(email);
        }
    }
    Ok(emails)
}

/// One `emails` entry; `None` when the entry or its `value` is an explicit `null`.
fn email(
    index: usize,
    entry: &Value,
    quirks: &mut Quirks,
) -> Result<Option<Email>, UserRequestError> {
    let attribute = |part: &str| format!("emails[{index}].{part}");
    let entry = match entry {
        Value::Null => {
            quirks.insert(Quirk::ExplicitNull);
            return Ok(None);
        }
        Value::Object(entry) => entry,
        _ => return Err(wrong_type(&format!("emails[{index}]"), "an object")),
    };

    let value = match quirks::field(entry, "value", quirks) {
        None => {
            return Err(UserRequestError::Missing {
                attribute: attribute("value"),
            })
        }
        Some(Value::Null) => {
            quirks.insert(Quirk::ExplicitNull);
            return Ok(None);
        }
        Some(value) => string(value, &attribute("value"), MAX_STRING_CHARS)?,
    };
    if value.is_empty() {
        return Err(UserRequestError::Empty {
            attribute: attribute("value"),
        });
    }
    let kind = optional_string(entry, "type", &attribute("type"), quirks)?;
    let primary = match present(entry, "primary", quirks) {
        None => false,
        Some(primary) => quirks::boolean(primary, quirks)
            .ok_or_else(|| wrong_type(&attribute("primary"), EXPECTED_BOOLEAN))?,
    };

    Ok(Some(Email {
        value,
        kind,
        primary,
    }))
}

/// The attribute `name` of `object`, looked up case-insensitively, with `null` read as absent.
fn present<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    quirks: &mut Quirks,
) -> Option<&'a Value> {
    let value = quirks::field(object, name, quirks)?;
    if value.is_null() {
        quirks.insert(Quirk::ExplicitNull);
        return None;
    }
    Some(value)
}

/// The optional string attribute `name` of `object`, named `label` in errors; absent, `null`
/// and `""` are all `None`.
fn optional_string(
    object: &Map<String, Value>,
    name: &str,
    label: &str,
    quirks: &mut Quirks,
) -> Result<Option<String>, UserRequestError> {
    let Some(value) = present(object, name, quirks) else {
        return Ok(None);
    };
    let text = string(value, label, MAX_STRING_CHARS)?;
    Ok((!text.is_empty()).then_some(text))
}

fn string(value: &Value, attribute: &str, max: usize) -> Result<String, UserRequestError> {
    let Value::String(text) = value else {
        return Err(wrong_type(attribute, "a string"));
    };
    // Postgres text cannot hold a NUL: storing one would fail the write with a 500.
    if text.contains('\0') {
        return Err(wrong_type(attribute, "a string without NUL characters"));
    }
    if text.chars().count() > max {
        return Err(UserRequestError::TooLong {
            attribute: attribute.to_owned(),
            max,
        });
    }
    Ok(text.clone())
}

fn wrong_type(attribute: &str, expected: &'static str) -> UserRequestError {
    UserRequestError::WrongType {
        attribute: attribute.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::quirks::arbitrary;
    use super::*;

    fn body(text: &str) -> Value {
        serde_json::from_str(text).expect("test body is valid JSON")
    }

    fn error(body: Value) -> UserRequestError {
        parse(&body).expect_err("body is refused")
    }

    fn email(value: &str, kind: Option<&str>, primary: bool) -> Email {
        Email {
            value: value.to_owned(),
            kind: kind.map(str::to_owned),
            primary,
        }
    }

    // entra-client.md §4.3, verbatim: the current tutorial's "Create User" request.
    const CREATE_USER: &str = r#"{
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee",
        "active": true,
        "emails": [{
            "primary": true,
            "type": "work",
            "value": "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com"
        }],
        "meta": {
            "resourceType": "User"
        },
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName"
        },
        "roles": []
    }"#;

    // §4.3 "Example 2": explicit nulls, malformed extension URN, top-level department/manager.
    const PROVISION_USER_EXAMPLE_2: &str = r#"{
       "schemas":
       [
         "urn:ietf:params:scim:schemas:core:2.0:User",
         "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
       "externalId":"jyoung",
       "userName":"jyoung@testuser.com",
       "active":true,
       "addresses":null,
       "displayName":"Joy Young",
       "emails": [
         {
           "type":"work",
           "value":"jyoung@Contoso.com",
           "primary":true}],
       "meta": {
         "resourceType":"User"},
        "name":{
         "familyName":"Young",
         "givenName":"Joy"},
       "phoneNumbers":null,
       "preferredLanguage":null,
       "title":null,
       "department":null,
       "manager":null}"#;

    // §4.3 role variant.
    const ROLES_VARIANT: &str = r#"{
      "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
      "externalId": "alias",
      "userName": "alias@contoso.OnMicrosoft.com",
      "active": true,
      "displayName": "First Name Last Name",
      "meta": { "resourceType": "User" },
      "roles": [
        { "primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin" }
      ]
    }"#;

    // §4.3 body reconstructed for Roster's configuration.
    const RECONSTRUCTED: &str = r#"{
      "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
      ],
      "externalId": "<mailNickname>",
      "userName": "<userPrincipalName>",
      "active": true,
      "displayName": "<displayName>",
      "title": "<jobTitle>",
      "preferredLanguage": "<preferredLanguage>",
      "emails": [{ "primary": true, "type": "work", "value": "<mail>" }],
      "meta": { "resourceType": "User" },
      "name": { "formatted": "<givenName> <surname>", "familyName": "<surname>",
                "givenName": "<givenName>" },
      "addresses": [{
        "type": "work", "formatted": "<office>", "streetAddress": "<street>",
        "locality": "<city>", "region": "<state>", "postalCode": "<zip>", "country": "<country>"
      }],
      "phoneNumbers": [
        { "type": "work", "value": "<telephoneNumber>" },
        { "type": "mobile", "value": "<mobile>" },
        { "type": "fax", "value": "<fax>" }
      ],
      "roles": [],
      "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
        "employeeNumber": "<employeeId>",
        "department": "<department>"
      }
    }"#;

    #[test]
    fn entra_create_user() {
        let request = parse(&body(CREATE_USER)).unwrap();

        assert_eq!(
            request.user_name,
            "Test_User_00aa00aa-bb11-cc22-dd33-44ee44ee44ee"
        );
        assert_eq!(
            request.external_id.as_deref(),
            Some("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef")
        );
        assert_eq!(request.display_name, None);
        assert_eq!(request.given_name.as_deref(), Some("givenName"));
        assert_eq!(request.family_name.as_deref(), Some("familyName"));
        assert_eq!(
            request.formatted_name.as_deref(),
            Some("givenName familyName")
        );
        assert_eq!(
            request.emails,
            vec![email(
                "Test_User_11bb11bb-cc22-dd33-ee44-55ff55ff55ff@testuser.com",
                Some("work"),
                true
            )]
        );
        assert!(request.active);
        let quirks: Vec<Quirk> = request.quirks.iter().collect();
        assert_eq!(quirks, vec![Quirk::ClientMeta]);
    }

    #[test]
    fn entra_example_2_with_nulls_and_malformed_urn() {
        let request = parse(&body(PROVISION_USER_EXAMPLE_2)).unwrap();

        assert_eq!(request.user_name, "jyoung@testuser.com");
        assert_eq!(request.external_id.as_deref(), Some("jyoung"));
        assert_eq!(request.display_name.as_deref(), Some("Joy Young"));
        assert_eq!(request.given_name.as_deref(), Some("Joy"));
        assert_eq!(request.formatted_name, None);
        assert_eq!(request.work_email(), Some("jyoung@Contoso.com"));
        let expected = [
            Quirk::UnknownSchemaUrn,
            Quirk::ClientMeta,
            Quirk::ExplicitNull,
            Quirk::UnknownAttribute,
        ];
        for quirk in expected {
            assert!(request.quirks.contains(quirk), "{quirk:?}");
        }
    }

    #[test]
    fn entra_roles_variant() {
        let request = parse(&body(ROLES_VARIANT)).unwrap();

        assert_eq!(request.user_name, "alias@contoso.OnMicrosoft.com");
        assert_eq!(
            request.display_name.as_deref(),
            Some("First Name Last Name")
        );
        assert!(request.emails.is_empty());
        assert_eq!(request.work_email(), None);
    }

    #[test]
    fn entra_reconstructed_body() {
        let request = parse(&body(RECONSTRUCTED)).unwrap();

        assert_eq!(request.user_name, "<userPrincipalName>");
        assert_eq!(request.work_email(), Some("<mail>"));
        assert_eq!(
            request.formatted_name.as_deref(),
            Some("<givenName> <surname>")
        );
        assert!(!request.quirks.contains(Quirk::UnknownSchemaUrn));
        assert!(!request.quirks.contains(Quirk::UnknownAttribute));
    }

    #[test]
    fn attribute_names_are_case_insensitive() {
        let request = parse(&json!({
            "UserName": "a",
            "EXTERNALID": "b",
            "Name": {"GivenName": "c"},
            "Emails": [{"Value": "d", "Type": "Work", "Primary": "True"}],
            "Active": "false"
        }))
        .unwrap();

        assert_eq!(request.user_name, "a");
        assert_eq!(request.external_id.as_deref(), Some("b"));
        assert_eq!(request.given_name.as_deref(), Some("c"));
        assert_eq!(request.emails, vec![email("d", Some("Work"), true)]);
        assert!(!request.active);
        assert!(request.quirks.contains(Quirk::AttributeNameCase));
        assert!(request.quirks.contains(Quirk::StringBoolean));
    }

    #[test]
    fn lowercase_username() {
        assert_eq!(parse(&json!({"username": "x"})).unwrap().user_name, "x");
    }

    #[test]
    fn values_are_kept_verbatim() {
        let request = parse(&json!({
            "userName": "  Mixed.Case@Example.COM ",
            "emails": [{"value": "Mixed@Example.COM", "type": "WORK"}]
        }))
        .unwrap();

        assert_eq!(request.user_name, "  Mixed.Case@Example.COM ");
        assert_eq!(request.emails[0].kind.as_deref(), Some("WORK"));
    }

    #[test]
    fn active_forms() {
        let cases = [
            (json!(true), true),
            (json!(false), false),
            (json!("True"), true),
            (json!("False"), false),
            (json!("tRUE"), true),
            (json!(null), true),
        ];
        for (active, expected) in cases {
            let request = parse(&json!({"userName": "a", "active": active})).unwrap();

            assert_eq!(request.active, expected, "{active}");
        }
        assert!(parse(&json!({"userName": "a"})).unwrap().active);
    }

    #[test]
    fn other_active_values_are_refused() {
        for active in [json!("yes"), json!(1), json!(""), json!([true]), json!({})] {
            let error = error(json!({"userName": "a", "active": active}));

            assert_eq!(error.scim_type(), "invalidValue");
            assert_eq!(
                error.to_string(),
                "active must be a boolean or \"True\"/\"False\""
            );
        }
    }

    #[test]
    fn ignored_attributes_are_not_errors() {
        let request = parse(&json!({
            "schemas": ["urn:example:custom", 7],
            "userName": "a",
            "id": "client-chosen",
            "meta": {"created": "2020-01-01T00:00:00Z"},
            "roles": [],
            "groups": "not an array",
            "password": "secret",
            "urn:example:extension": {"x": 1},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "manager": {"value": "m"}
            },
            "favouriteColour": "green",
            "externalId": null,
            "name": null,
            "emails": null
        }))
        .unwrap();

        assert_eq!(request.external_id, None);
        assert!(request.emails.is_empty());
        let expected = [
            Quirk::UnknownSchemaUrn,
            Quirk::MissingSchema,
            Quirk::ClientMeta,
            Quirk::ExplicitNull,
            Quirk::UnknownAttribute,
        ];
        for quirk in expected {
            assert!(request.quirks.contains(quirk), "{quirk:?}");
        }
    }

    #[test]
    fn empty_optional_strings_are_absent() {
        let request = parse(&json!({
            "userName": "a", "displayName": "", "name": {"givenName": ""},
            "emails": [{"value": "x", "type": ""}]
        }))
        .unwrap();

        assert_eq!(request.display_name, None);
        assert_eq!(request.given_name, None);
        assert_eq!(request.emails[0].kind, None);
    }

    #[test]
    fn null_email_entries_are_skipped() {
        let request = parse(&json!({
            "userName": "a",
            "emails": [null, {"type": "other", "value": null}, {"value": "x", "primary": null}]
        }))
        .unwrap();

        assert_eq!(request.emails, vec![email("x", None, false)]);
        assert!(request.quirks.contains(Quirk::ExplicitNull));
    }

    #[test]
    fn work_email_prefers_work_then_primary_then_first() {
        let user = |emails: Vec<Email>| UserRequest {
            emails,
            ..parse(&json!({"userName": "a"})).unwrap()
        };

        let work = user(vec![
            email("p", Some("home"), true),
            email("w", Some("WORK"), false),
        ]);
        let primary = user(vec![
            email("o", Some("other"), false),
            email("p", None, true),
        ]);
        let first = user(vec![
            email("f", Some("home"), false),
            email("s", None, false),
        ]);

        assert_eq!(work.work_email(), Some("w"));
        assert_eq!(primary.work_email(), Some("p"));
        assert_eq!(first.work_email(), Some("f"));
        assert_eq!(user(vec![]).work_email(), None);
    }

    #[test]
    fn email_serialises_as_scim_json() {
        let stored = serde_json::to_value(email("a@b", Some("work"), true)).unwrap();
        let without_type = serde_json::to_value(email("a@b", None, false)).unwrap();

        assert_eq!(
            stored,
            json!({"value": "a@b", "type": "work", "primary": true})
        );
        assert_eq!(without_type, json!({"value": "a@b", "primary": false}));
        let read: Email = serde_json::from_value(json!({"value": "a@b"})).unwrap();
        assert_eq!(read, email("a@b", None, false));
        let read_back: Email = serde_json::from_value(stored).unwrap();
        assert_eq!(read_back, email("a@b", Some("work"), true));
    }

    #[test]
    fn body_must_be_an_object() {
        for body in [json!([]), json!("a"), json!(null), json!(1)] {
            let error = error(body);

            assert!(matches!(error, UserRequestError::NotAnObject));
            assert_eq!(error.scim_type(), "invalidSyntax");
        }
    }

    #[test]
    fn user_name_is_required() {
        for body in [
            json!({}),
            json!({"userName": null}),
            json!({"externalId": "x"}),
        ] {
            let error = error(body);

            assert_eq!(error.to_string(), "userName is required");
            assert_eq!(error.scim_type(), "invalidValue");
        }
    }

    #[test]
    fn user_name_must_not_be_blank() {
        for user_name in ["", "   "] {
            let error = error(json!({"userName": user_name}));

            assert_eq!(error.to_string(), "userName must not be empty");
        }
    }

    #[test]
    fn user_name_length_limit() {
        let at_limit = "é".repeat(MAX_USER_NAME_CHARS);
        let over_limit = "a".repeat(MAX_USER_NAME_CHARS + 1);

        assert_eq!(
            parse(&json!({"userName": at_limit})).unwrap().user_name,
            at_limit
        );
        let error = error(json!({"userName": over_limit}));
        assert_eq!(
            error.to_string(),
            "userName must be at most 256 characters long"
        );
        assert_eq!(error.scim_type(), "invalidValue");
    }

    #[test]
    fn string_length_limit() {
        let long = "a".repeat(MAX_STRING_CHARS + 1);
        let at_limit = "a".repeat(MAX_STRING_CHARS);
        let cases = [
            (json!({"userName": "a", "externalId": long}), "externalId"),
            (json!({"userName": "a", "displayName": long}), "displayName"),
            (
                json!({"userName": "a", "name": {"familyName": long}}),
                "name.familyName",
            ),
            (
                json!({"userName": "a", "emails": [{"value": long}]}),
                "emails[0].value",
            ),
            (
                json!({"userName": "a", "emails": [{"value": "x", "type": long}]}),
                "emails[0].type",
            ),
        ];
        for (body, attribute) in cases {
            let error = error(body);

            assert_eq!(
                error.to_string(),
                format!("{attribute} must be at most 1024 characters long")
            );
        }
        assert!(parse(&json!({"userName": "a", "displayName": at_limit})).is_ok());
    }

    #[test]
    fn wrong_types_name_the_attribute() {
        let cases = [
            (json!({"userName": 5}), "userName must be a string"),
            (json!({"userName": ["a"]}), "userName must be a string"),
            (
                json!({"userName": "a", "externalId": 1}),
                "externalId must be a string",
            ),
            (
                json!({"userName": "a", "displayName": {}}),
                "displayName must be a string",
            ),
            (
                json!({"userName": "a", "name": []}),
                "name must be an object",
            ),
            (
                json!({"userName": "a", "name": "Joy"}),
                "name must be an object",
            ),
            (
                json!({"userName": "a", "name": {"givenName": 1}}),
                "name.givenName must be a string",
            ),
            (
                json!({"userName": "a", "name": {"formatted": []}}),
                "name.formatted must be a string",
            ),
            (
                json!({"userName": "a", "emails": "x"}),
                "emails must be an array",
            ),
            (
                json!({"userName": "a", "emails": {"value": "x"}}),
                "emails must be an array",
            ),
            (
                json!({"userName": "a", "emails": ["x"]}),
                "emails[0] must be an object",
            ),
            (
                json!({"userName": "a", "emails": [{"value": 1}]}),
                "emails[0].value must be a string",
            ),
            (
                json!({"userName": "a", "emails": [{"value": "x"}, {"value": "y", "type": 2}]}),
                "emails[1].type must be a string",
            ),
            (
                json!({"userName": "a", "emails": [{"value": "x", "primary": "yes"}]}),
                "emails[0].primary must be a boolean or \"True\"/\"False\"",
            ),
        ];
        for (body, detail) in cases {
            let error = error(body);

            assert_eq!(error.to_string(), detail);
            assert_eq!(error.scim_type(), "invalidValue");
        }
    }

    #[test]
    fn email_value_is_required_and_non_empty() {
        let missing = error(json!({"userName": "a", "emails": [{"type": "work"}]}));
        let empty = error(json!({"userName": "a", "emails": [{"value": ""}]}));

        assert_eq!(missing.to_string(), "emails[0].value is required");
        assert_eq!(empty.to_string(), "emails[0].value must not be empty");
    }

    #[test]
    fn email_values_are_not_validated_as_addresses() {
        let request = parse(&json!({"userName": "a", "emails": [{"value": "not an address"}]}));

        assert_eq!(request.unwrap().work_email(), Some("not an address"));
    }

    #[test]
    fn email_count_limit() {
        let emails = |count: usize| -> Vec<Value> {
            (0..count)
                .map(|n| json!({"value": format!("{n}@x")}))
                .collect()
        };

        assert_eq!(
            parse(&json!({"userName": "a", "emails": emails(MAX_EMAILS)}))
                .unwrap()
                .emails
                .len(),
            MAX_EMAILS
        );
        let error = error(json!({"userName": "a", "emails": emails(MAX_EMAILS + 1)}));
        assert!(matches!(
            error,
            UserRequestError::TooManyEmails { count: 21 }
        ));
        assert_eq!(
            error.to_string(),
            "a user may have at most 20 emails; this one has 21"
        );
    }

    #[test]
    fn error_details_do_not_echo_values() {
        let secret = "secret-value@example.com";
        let bodies = [
            json!({"userName": "a", "emails": [{"value": secret, "primary": secret}]}),
            json!({"userName": "a", "active": secret}),
            json!({"userName": "a", "emails": [{"value": secret, "type": [secret]}]}),
        ];
        for body in bodies {
            let detail = error(body).to_string();

            assert!(!detail.contains(secret), "{detail}");
        }
    }

    // peers.md §5 theme 1 (rancher #52996, bytebase #19073, SCIMReferenceCode #21): Entra may send
    // `active` as the string "True" in a create, which other servers rejected.
    #[test]
    fn regression_string_active_in_create() {
        let request = parse(&json!({
            "schemas": [USER_URN],
            "userName": "a",
            "active": "True"
        }))
        .unwrap();

        assert!(request.active);
        assert!(request.quirks.contains(Quirk::StringBoolean));
    }

    // entra-client.md §7 Q4: Microsoft's own tests send attribute names in other cases.
    #[test]
    fn regression_microsoft_test_casing() {
        let request = parse(&json!({
            "userName": "a",
            "emails": [{"Primary": true, "Type": "work", "Value": "a@b"}],
            "Manager": {"Value": "m"}
        }))
        .unwrap();

        assert_eq!(request.emails, vec![email("a@b", Some("work"), true)]);
        assert!(request.quirks.contains(Quirk::UnknownAttribute));
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(body in arbitrary::json()) {
            let _ = parse(&body);
        }

        #[test]
        fn arbitrary_attributes_never_panic(
            attributes in proptest::collection::vec(
                (proptest::sample::select(STORED_ATTRIBUTES), arbitrary::json()),
                0..6,
            ),
        ) {
            let mut object: Map<String, Value> = attributes
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            object.entry("userName").or_insert_with(|| json!("a"));
            let _ = parse(&Value::Object(object));
        }

        #[test]
        fn user_name_round_trips_verbatim(user_name in "\\PC{1,256}") {
            prop_assume!(!user_name.trim().is_empty());

            let request = parse(&json!({"userName": user_name})).unwrap();

            prop_assert_eq!(request.user_name, user_name);
        }
    }
}
