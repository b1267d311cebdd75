//! SCIM PATCH bodies (RFC 7644 §3.5.2) in both of Entra's dialects, and what a PATCH means for a
//! Group.
//!
//! [`parse`] turns any PATCH body, for a User or a Group, into typed operations and records the
//! dialect variations it used. [`group_changes`] then reads a parsed request as membership
//! deltas: Roster applies only membership to groups and acknowledges everything else. User PATCH
//! bodies are acknowledged and ignored, but must still parse, so an invalid one is a 400.
//!
//! Nothing here knows about HTTP or storage: an error's `Display` is the SCIM `detail`, and
//! [`PatchError::scim_type`] its `scimType`.

use serde_json::{Map, Value};

use super::quirks::{self, Quirk, Quirks};

/// The most operations one PATCH request may carry.
pub const MAX_OPERATIONS: usize = 1000;

/// The most member ids one group PATCH request may name, over all its operations.
pub const MAX_MEMBER_VALUES: usize = 10_000;

const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// A parsed PATCH request: its operations in the order sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    pub operations: Vec<PatchOperation>,
    pub quirks: Quirks,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: OpKind,
    /// `None` when the operation has no `path` (the value is then an object of attributes).
    pub path: Option<PatchPath>,
    /// The value as sent; `Some(Value::Null)` for an explicit `null`.
    pub value: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Remove,
    Replace,
}

/// A PATCH `path` (RFC 7644 §3.5.2 `PATH`), with names kept as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchPath {
    /// `[urn:]attribute[.subAttribute]`, e.g. `members`, `name.givenName`,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`.
    Attribute {
        urn: Option<String>,
        name: String,
        sub_attribute: Option<String>,
    },
    /// `[urn:]attribute[filter][.subAttribute]`, e.g. `emails[type eq "work"].value`; `filter`
    /// is the raw text between the brackets.
    ValueFilter {
        urn: Option<String>,
        name: String,
        filter: String,
        sub_attribute: Option<String>,
    },
}

impl PatchPath {
    /// The attribute the path addresses, `[urn:]attribute[.subAttribute]`. The filter is left
    /// out because it may hold personal data (`emails[value eq "..."]`), so this is safe to log
    /// and journal.
    pub fn attribute(&self) -> String {
        let (urn, name, sub_attribute) = match self {
            PatchPath::Attribute {
                urn,
                name,
                sub_attribute,
            }
            | PatchPath::ValueFilter {
                urn,
                name,
                sub_attribute,
                ..
            } => (urn, name, sub_attribute),
        };
        let mut text = String::new();
        if let Some(urn) = urn {
            text.push_str(urn);
            text.push(':');
        }
        text.push_str(name);
        if let Some(sub_attribute) = sub_attribute {
            text.push('.');
            text.push_str(sub_attribute);
        }
        text
    }
}

/// One change a PATCH makes to a Group, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    AddMembers(Vec<String>),
    /// Removes exactly these members and no others.
    RemoveMembers(Vec<String>),
    RemoveAllMembers,
    ReplaceMembers(Vec<String>),
    /// A change to an attribute Roster does not take from SCIM (`displayName`, `externalId`,
    /// ...): acknowledged and journaled, not applied.
    Ignored {
        attribute: String,
    },
}

/// Why a PATCH body was refused. Every variant is a `400`; `Display` is the SCIM `detail` and
/// names operations by index (`Operations[0]`) and attributes, never values from the body.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// `400 invalidSyntax`: the body is JSON but not an object.
    #[error("the PATCH body must be a JSON object")]
    NotAnObject,
    /// `400 invalidSyntax`: `Operations` is absent, not an array, or empty.
    #[error("the PATCH body must have \"Operations\", a non-empty array")]
    MissingOperations,
    /// `400 invalidValue`: more than [`MAX_OPERATIONS`] operations.
    #[error("a PATCH request may have at most {max} operations; this one has {count}",
        max = MAX_OPERATIONS)]
    TooManyOperations { count: usize },
    /// `400 invalidSyntax`: an element of `Operations` is not an object.
    #[error("Operations[{index}] must be an object")]
    OperationNotObject { index: usize },
    /// `400 invalidSyntax`: `op` is missing or not add/remove/replace (in any case).
    #[error("Operations[{index}].op must be \"add\", \"remove\" or \"replace\"")]
    InvalidOp { index: usize },
    /// `400 invalidPath`: `path` is not a string in RFC 7644 path syntax.
    #[error("Operations[{index}].path is not a valid SCIM attribute path")]
    InvalidPath { index: usize },
    /// `400 invalidPath`: an operation without `path` has a value key that is not an attribute
    /// path.
    #[error("Operations[{index}].value has a key that is not a valid SCIM attribute path")]
    InvalidValueKey { index: usize },
    /// `400 noTarget`: a `remove` without `path` (RFC 7644 §3.5.2.2).
    #[error("Operations[{index}] is a remove without a path")]
    RemoveWithoutPath { index: usize },
    /// `400 invalidValue`: an `add` or `replace` without `value`, or a member change whose
    /// value is `null`.
    #[error("Operations[{index}] needs a value")]
    MissingValue { index: usize },
    /// `400 invalidValue`: an operation without `path` whose value is not an object.
    #[error("Operations[{index}] has no path, so its value must be an object of attributes")]
    PathlessValueNotObject { index: usize },
    /// `400 invalidValue`: a member entry is not an object with a non-empty string `value`.
    #[error(
        "Operations[{index}]: every member must be an object with a non-empty string \"value\""
    )]
    InvalidMember { index: usize },
    /// `400 invalidFilter`: a `members[...]` filter other than `value eq "<id>"` clauses joined
    /// by `or`.
    #[error(
        "Operations[{index}]: a members filter may only be value eq \"<id>\" clauses joined by or"
    )]
    UnsupportedMemberFilter { index: usize },
    /// `400 invalidPath`: a members path other than `members` or, for remove,
    /// `members[value eq "<id>"]` (e.g. `members.display`, or add with a filter).
    #[error(
        "Operations[{index}]: members can be added, removed or replaced as \"members\", \
         or removed as members[value eq \"<id>\"]"
    )]
    UnsupportedMemberPath { index: usize },
    /// `400 invalidValue`: more than [`MAX_MEMBER_VALUES`] member ids in one request.
    #[error("a PATCH request may name at most {max} members; this one names {count}",
        max = MAX_MEMBER_VALUES)]
    TooManyMembers { count: usize },
}

impl PatchError {
    /// The RFC 7644 §3.12 `scimType` of the error response.
    pub fn scim_type(&self) -> &'static str {
        match self {
            PatchError::NotAnObject
            | PatchError::MissingOperations
            | PatchError::OperationNotObject { .. }
            | PatchError::InvalidOp { .. } => "invalidSyntax",
            PatchError::InvalidPath { .. }
            | PatchError::InvalidValueKey { .. }
            | PatchError::UnsupportedMemberPath { .. } => "invalidPath",
            PatchError::RemoveWithoutPath { .. } => "noTarget",
            PatchError::UnsupportedMemberFilter { .. } => "invalidFilter",
            PatchError::TooManyOperations { .. }
            | PatchError::MissingValue { .. }
            | PatchError::PathlessValueNotObject { .. }
            | PatchError::InvalidMember { .. }
            | PatchError::TooManyMembers { .. } => "invalidValue",
        }
    }
}

/// Parses a PATCH body of either Entra dialect. The `schemas` member is checked only to record
/// quirks: a missing or odd one is not an error.
pub fn parse(body: &Value) -> Result<PatchRequest, PatchError> {
    let object = body.as_object().ok_or(PatchError::NotAnObject)?;
    let mut quirks = Quirks::default();
    quirks::check_schemas(object, PATCH_OP_URN, &[], &mut quirks);

    let raw_operations = operations(object, &mut quirks)?;
    let operations = raw_operations
        .iter()
        .enumerate()
        .map(|(index, raw)| parse_operation(index, raw, &mut quirks))
        .collect::<Result<_, _>>()?;

    Ok(PatchRequest { operations, quirks })
}

/// Interprets a PATCH for a Group: only membership is applied; everything else is ignored
/// (renames and `externalId` changes are acknowledged, not applied).
pub fn group_changes(req: &PatchRequest) -> Result<Vec<GroupChange>, PatchError> {
    let mut changes = Vec::new();
    for (index, operation) in req.operations.iter().enumerate() {
        operation_changes(index, operation, &mut changes)?;
    }

    let count = changes.iter().map(member_count).sum();
    if count > MAX_MEMBER_VALUES {
        return Err(PatchError::TooManyMembers { count });
    }
    Ok(changes)
}

fn operations<'a>(
    object: &'a Map<String, Value>,
    quirks: &mut Quirks,
) -> Result<&'a Vec<Value>, PatchError> {
    let operations = match quirks::field(object, "Operations", quirks) {
        Some(Value::Array(operations)) if !operations.is_empty() => operations,
        _ => return Err(PatchError::MissingOperations),
    };
    if operations.len() > MAX_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: operations.len(),
        });
    }
    Ok(operations)
}

fn parse_operation(
    index: usize,
    raw: &Value,
    quirks: &mut Quirks,
) -> Result<PatchOperation, PatchError> {
    let object = raw
        .as_object()
        .ok_or(PatchError::OperationNotObject { index })?;
    let op = op_kind(index, object, quirks)?;
    let path = operation_path(index, object, quirks)?;
    let value = quirks::field(object, "value", quirks);

    match (&path, value) {
        (None, _) if op == OpKind::Remove => return Err(PatchError::RemoveWithoutPath { index }),
        (_, None) if op != OpKind::Remove => return Err(PatchError::MissingValue { index }),
        (None, Some(value)) => pathless_value_quirks(index, op, value, quirks)?,
        (Some(path), Some(value)) => path_value_quirks(op, path, value, quirks),
        (_, None) => {}
    }

    Ok(PatchOperation {
        op,
        path,
        value: value.cloned(),
    })
}

fn op_kind(
    index: usize,
    object: &Map<String, Value>,
    quirks: &mut Quirks,
) -> Result<OpKind, PatchError> {
    let Some(Value::String(name)) = quirks::field(object, "op", quirks) else {
        return Err(PatchError::InvalidOp { index });
    };
    let kind = match name.to_ascii_lowercase().as_str() {
        "add" => OpKind::Add,
        "remove" => OpKind::Remove,
        "replace" => OpKind::Replace,
        _ => return Err(PatchError::InvalidOp { index }),
    };
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        quirks.insert(Quirk::CapitalisedOp);
    }
    Ok(kind)
}

fn operation_path(
    index: usize,
    object: &Map<String, Value>,
    quirks: &mut Quirks,
) -> Result<Option<PatchPath>, PatchError> {
    match quirks::field(object, "path", quirks) {
        None => Ok(None),
        Some(Value::Null) => {
            quirks.insert(Quirk::ExplicitNull);
            Ok(None)
        }
        Some(Value::String(text)) => {
            let path = parse_path(text).ok_or(PatchError::InvalidPath { index })?;
            path_quirks(&path, quirks);
            Ok(Some(path))
        }
        Some(_) => Err(PatchError::InvalidPath { index }),
    }
}

/// Quirks of a path-less operation, whose value must be an object keyed by attribute paths.
fn pathless_value_quirks(
    index: usize,
    op: OpKind,
    value: &Value,
    quirks: &mut Quirks,
) -> Result<(), PatchError> {
    let Value::Object(attributes) = value else {
        return Err(PatchError::PathlessValueNotObject { index });
    };
    quirks.insert(Quirk::PathlessValueObject);
    for (key, attribute_value) in attributes {
        let path = parse_path(key).ok_or(PatchError::InvalidValueKey { index })?;
        path_quirks(&path, quirks);
        path_value_quirks(op, &path, attribute_value, quirks);
    }
    Ok(())
}

fn path_quirks(path: &PatchPath, quirks: &mut Quirks) {
    match path {
        PatchPath::Attribute {
            urn, sub_attribute, ..
        } => {
            if urn.is_some() {
                quirks.insert(Quirk::UrnPath);
            }
            if sub_attribute.is_some() {
                quirks.insert(Quirk::DottedPath);
            }
        }
        PatchPath::ValueFilter { urn, .. } => {
            if urn.is_some() {
                quirks.insert(Quirk::UrnPath);
            }
            quirks.insert(Quirk::ValueFilterPath);
        }
    }
    if let Some(name) = members_name(path) {
        if name != "members" {
            quirks.insert(Quirk::AttributeNameCase);
        }
    }
}

/// Quirks of the value an operation sets at `path`.
fn path_value_quirks(op: OpKind, path: &PatchPath, value: &Value, quirks: &mut Quirks) {
    if value.is_null() {
        quirks.insert(Quirk::ExplicitNull);
    }
    if has_null_ref(value) {
        quirks.insert(Quirk::NullRef);
    }
    let string_boolean = value.as_str().and_then(quirks::string_boolean).is_some();
    if string_boolean && is_plain_attribute(path, "active") {
        quirks.insert(Quirk::StringBoolean);
    }
    if members_name(path).is_some() && matches!(path, PatchPath::Attribute { .. }) {
        if value.is_object() {
            quirks.insert(Quirk::SingleMemberObject);
        }
        if op == OpKind::Remove && !value.is_null() {
            quirks.insert(Quirk::MemberRemoveByValue);
        }
    }
}

/// Whether a value, or one of the objects of an array value, has `"$ref": null`.
fn has_null_ref(value: &Value) -> bool {
    let is_null_ref = |item: &Value| {
        let reference = item
            .as_object()
            .and_then(|item| quirks::lookup(item, "$ref"));
        reference.is_some_and(|(_, reference)| reference.is_null())
    };
    match value {
        Value::Array(items) => items.iter().any(is_null_ref),
        other => is_null_ref(other),
    }
}

fn is_plain_attribute(path: &PatchPath, attribute: &str) -> bool {
    matches!(path, PatchPath::Attribute { urn: None, name, sub_attribute: None }
        if name.eq_ignore_ascii_case(attribute))
}

/// The attribute name as sent when `path` addresses a Group's members (`members`, any case,
/// optionally qualified by the core Group URN).
fn members_name(path: &PatchPath) -> Option<&str> {
    let (urn, name) = match path {
        PatchPath::Attribute { urn, name, .. } | PatchPath::ValueFilter { urn, name, .. } => {
            (urn, name)
        }
    };
    let urn_matches = urn
        .as_deref()
        .is_none_or(|urn| urn.eq_ignore_ascii_case(GROUP_URN));
    (urn_matches && name.eq_ignore_ascii_case("members")).then_some(name.as_str())
}

fn operation_changes(
    index: usize,
    operation: &PatchOperation,
    changes: &mut Vec<GroupChange>,
) -> Result<(), PatchError> {
    let Some(path) = &operation.path else {
        return pathless_changes(index, operation, changes);
    };
    let change = if members_name(path).is_some() {
        member_change(index, operation.op, path, operation.value.as_ref())?
    } else {
        GroupChange::Ignored {
            attribute: path.attribute(),
        }
    };
    changes.push(change);
    Ok(())
}

/// An operation without path: each key of its value object is an attribute set by the same op.
fn pathless_changes(
    index: usize,
    operation: &PatchOperation,
    changes: &mut Vec<GroupChange>,
) -> Result<(), PatchError> {
    if operation.op == OpKind::Remove {
        return Err(PatchError::RemoveWithoutPath { index });
    }
    let Some(Value::Object(attributes)) = &operation.value else {
        return Err(PatchError::PathlessValueNotObject { index });
    };
    for (key, value) in attributes {
        let path = parse_path(key).ok_or(PatchError::InvalidValueKey { index })?;
        let change = if members_name(&path).is_some() {
            member_change(index, operation.op, &path, Some(value))?
        } else {
            GroupChange::Ignored {
                attribute: path.attribute(),
            }
        };
        changes.push(change);
    }
    Ok(())
}

fn member_change(
    index: usize,
    op: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<GroupChange, PatchError> {
    match path {
        PatchPath::Attribute {
            sub_attribute: None,
            ..
        } => whole_members_change(index, op, value),
        PatchPath::ValueFilter {
            filter,
            sub_attribute: None,
            ..
        } if op == OpKind::Remove => {
            let ids = filter_member_ids(index, filter)?;
            Ok(GroupChange::RemoveMembers(ids))
        }
        _ => Err(PatchError::UnsupportedMemberPath { index }),
    }
}

/// A change addressed to `members` as a whole.
fn whole_members_change(
    index: usize,
    op: OpKind,
    value: Option<&Value>,
) -> Result<GroupChange, PatchError> {
    match (op, value) {
        (OpKind::Add, _) => Ok(GroupChange::AddMembers(member_ids(index, value)?)),
        (OpKind::Replace, _) => Ok(GroupChange::ReplaceMembers(member_ids(index, value)?)),
        (OpKind::Remove, None | Some(Value::Null)) => Ok(GroupChange::RemoveAllMembers),
        // Entra's default dialect names the members to remove in `value`. Reading it the RFC way
        // (remove every member) is how other servers emptied whole groups when one person left,
        // so a value list removes exactly the listed members, and an empty list removes nobody.
        (OpKind::Remove, Some(_)) => Ok(GroupChange::RemoveMembers(member_ids(index, value)?)),
    }
}

/// Member ids from `[{"value": "<id>", ...}, ...]` or a single `{"value": "<id>"}`.
fn member_ids(index: usize, value: Option<&Value>) -> Result<Vec<String>, PatchError> {
    match value {
        None | Some(Value::Null) => Err(PatchError::MissingValue { index }),
        Some(Value::Array(members)) => members.iter().map(|m| member_id(index, m)).collect(),
        Some(member @ Value::Object(_)) => Ok(vec![member_id(index, member)?]),
        Some(_) => Err(PatchError::InvalidMember { index }),
    }
}

fn member_id(index: usize, member: &Value) -> Result<String, PatchError> {
    let id = member
        .as_object()
        .and_then(|member| quirks::lookup(member, "value"))
        .and_then(|(_, id)| id.as_str());
    match id {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(PatchError::InvalidMember { index }),
    }
}

/// Member ids from the filter of `members[value eq "a" or value eq "b"]`.
fn filter_member_ids(index: usize, filter: &str) -> Result<Vec<String>, PatchError> {
    let ids = parse_member_filter(filter).ok_or(PatchError::UnsupportedMemberFilter { index })?;
    if ids.iter().any(String::is_empty) {
        return Err(PatchError::InvalidMember { index });
    }
    Ok(ids)
}

fn parse_member_filter(filter: &str) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    let mut rest = filter;
    loop {
        rest = keyword(rest, "value")?;
        rest = keyword(rest, "eq")?;
        let (id, after) = quoted_string(rest)?;
        ids.push(id);
        rest = after.trim_start();
        if rest.is_empty() {
            return Some(ids);
        }
        rest = keyword(rest, "or")?;
    }
}

/// Skips leading whitespace and `word` (any case), which must be followed by whitespace.
fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let text = text.trim_start();
    let head = text.get(..word.len())?;
    let rest = text.get(word.len()..)?;
    (head.eq_ignore_ascii_case(word) && rest.starts_with(char::is_whitespace)).then_some(rest)
}

/// A JSON string literal at the start of `text` (after whitespace), decoded, and what follows.
fn quoted_string(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    let end = closing_quote(text.strip_prefix('"')?)? + 1;
    let literal = text.get(..=end)?;
    let decoded = serde_json::from_str(literal).ok()?;
    Some((decoded, text.get(end + 1..)?))
}

/// The byte offset of the first `"` in `text` not escaped by a backslash.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (offset, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(offset),
            _ => {}
        }
    }
    None
}

/// Parses RFC 7644 `PATH = attrPath / valuePath [subAttr]`; `None` when it is not one.
fn parse_path(text: &str) -> Option<PatchPath> {
    let text = text.trim();
    let Some((head, bracketed)) = text.split_once('[') else {
        let (urn, attribute) = split_urn(text)?;
        let (name, sub_attribute) = split_sub_attribute(attribute)?;
        return Some(PatchPath::Attribute {
            urn,
            name: name.to_owned(),
            sub_attribute: sub_attribute.map(str::to_owned),
        });
    };

    let (urn, name) = split_urn(head)?;
    let filter_end = filter_end(bracketed)?;
    let filter = bracketed.get(..filter_end)?;
    let after = bracketed.get(filter_end + 1..)?;
    let sub_attribute = match after.strip_prefix('.') {
        None if after.is_empty() => None,
        Some(sub) if is_attribute_name(sub) => Some(sub),
        _ => return None,
    };
    (is_attribute_name(name) && !filter.trim().is_empty()).then(|| PatchPath::ValueFilter {
        urn,
        name: name.to_owned(),
        filter: filter.to_owned(),
        sub_attribute: sub_attribute.map(str::to_owned),
    })
}

/// Splits `urn:...:attribute` into the schema URN and the rest; text without a `urn:` prefix has
/// no URN.
fn split_urn(text: &str) -> Option<(Option<String>, &str)> {
    let has_urn = text
        .get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:"));
    if !has_urn {
        return Some((None, text));
    }
    let (urn, attribute) = text.rsplit_once(':')?;
    let valid = urn.len() > 4 && urn.chars().all(|c| c.is_ascii_graphic() && c != '"');
    valid.then(|| (Some(urn.to_owned()), attribute))
}

fn split_sub_attribute(text: &str) -> Option<(&str, Option<&str>)> {
    match text.split_once('.') {
        None => is_attribute_name(text).then_some((text, None)),
        Some((name, sub)) => {
            (is_attribute_name(name) && is_attribute_name(sub)).then_some((name, Some(sub)))
        }
    }
}

/// The offset of the `]` closing a value filter, skipping brackets inside string literals.
fn filter_end(text: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (offset, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            ']' if !in_string => return Some(offset),
            '[' if !in_string => return None,
            _ => {}
        }
    }
    None
}

/// RFC 7643 `ATTRNAME = ALPHA *(nameChar)`, plus `$ref`.
fn is_attribute_name(text: &str) -> bool {
    let mut chars = text.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    text == "$ref"
        || (starts_with_letter && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

fn member_count(change: &GroupChange) -> usize {
    match change {
        GroupChange::AddMembers(ids)
        | GroupChange::RemoveMembers(ids)
        | GroupChange::ReplaceMembers(ids) => ids.len(),
        GroupChange::RemoveAllMembers | GroupChange::Ignored { .. } => 0,
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

    fn changes(body: Value) -> Vec<GroupChange> {
        group_changes(&parse(&body).expect("body parses")).expect("group changes")
    }

    fn group_error(body: Value) -> PatchError {
        group_changes(&parse(&body).expect("body parses")).expect_err("group changes fail")
    }

    fn patch(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP_URN], "Operations": operations})
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn has(request: &PatchRequest, quirk: Quirk) -> bool {
        request.quirks.contains(quirk)
    }

    fn attribute(urn: Option<&str>, name: &str, sub: Option<&str>) -> PatchPath {
        PatchPath::Attribute {
            urn: urn.map(str::to_owned),
            name: name.to_owned(),
            sub_attribute: sub.map(str::to_owned),
        }
    }

    // entra-client.md §5.3, verbatim.
    const ADD_MEMBERS: &str = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{
            "op": "Add",
            "path": "members",
            "value": [{
                "$ref": null,
                "value": "f648f8d5ea4e4cd38e9c"
            }]
        }]
    }"#;

    const REMOVE_MEMBERS_DEFAULT: &str = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{
            "op": "Remove",
            "path": "members",
            "value": [{
                "$ref": null,
                "value": "f648f8d5ea4e4cd38e9c"
            }]
        }]
    }"#;

    const REMOVE_MEMBERS_DEFAULT_2: &str = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {
                "op": "Remove",
                "path": "members",
                "value": [
                    {
                        "value": "u1091"
                    }
                ]
            }
        ]
    }"#;

    const REMOVE_MEMBERS_FLAG: &str = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {
                "op": "remove",
                "path": "members[value eq \"7f4bc1a3-285e-48ae-8202-5accb43efb0e\"]"
            }
        ]
    }"#;

    const REPLACE_DISPLAY_NAME: &str = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{
            "op": "Replace",
            "path": "displayName",
            "value": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
        }]
    }"#;

    // entra-client.md §6, verbatim (user PATCH bodies: acknowledged, but must parse).
    const USER_REPLACE_DEFAULT: &str = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
                {
                "op": "Replace",
                "path": "emails[type eq \"work\"].value",
                "value": "updatedEmail@microsoft.com"
                },
                {
                "op": "Replace",
                "path": "name.familyName",
                "value": "updatedFamilyName"
                }
        ]
    }"#;

    const USER_REPLACE_USER_NAME: &str = concat!(
        r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations": [{"op": "Replace","path": "userName","#,
        r#""value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"}]}"#
    );

    const USER_CAPTURED_2022: &str = concat!(
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":["#,
        r#"{"op":"Replace","path":"emails[type eq \"work\"].value","#,
        r#""value":"AdeleV2@REDACTED.onmicrosoft.com"},"#,
        r#"{"op":"Replace","path":"addresses[type eq \"work\"].formatted","value":"18/2111"},"#,
        r#"{"op":"Add","#,
        r#""path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","#,
        r#""value":"Retail"}]}"#
    );

    const USER_DISABLE_DEFAULT: &str = concat!(
        r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"#,
        r#"
 "Operations": [{"op": "Replace","path": "active","value": "False"}]}"#
    );

    const USER_DISABLE_FLAG: &str = concat!(
        r#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"#,
        r#"
 "Operations": [{"op": "replace","path": "active","value": false}]}"#
    );

    const USER_MULTI_REPLACE_FLAG: &str = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {
                "op": "replace",
                "path": "emails[type eq \"work\"].value",
                "value": "TestMhvaes@test.microsoft.com"
            },
            {
                "op": "replace",
                "value": {
                    "displayName": "Bjfe",
                    "name.givenName": "Kkom",
                    "name.familyName": "Unua",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "Aklq"
                }
            }
        ]
    }"#;

    /// Single operations from entra-client.md §6 and §7 (verbatim where the doc gives the whole
    /// operation; the last two give values to value-filter paths that Q7 names).
    const USER_OPERATIONS: &[&str] = &[
        r#"{"op": "Add","path": "nickName","value": "Babs"}"#,
        r#"{"op": "add","path": "nickName","value": "Babs"}"#,
        concat!(
            r#"{"op":"Add","#,
            r#""path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","#,
            r#""value":"271"}"#
        ),
        concat!(
            r#"{"op":"Add","path":"manager","#,
            r#""value":[{"$ref":"http://.../scim/Users/00aa...","value":"00aa..."}]}"#
        ),
        concat!(
            r#"{"op":"replace","#,
            r#""path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","#,
            r#""value":""}"#
        ),
        concat!(
            r#"{"op": "Add","path": "roles","value": [{"value": "#,
            r#""{\"id\":\"06b07648-ecfe-589f-9d2f-6325724a46ee\",\"value\":\"25\","#,
            r#"\"displayName\":\"Role1234\"}"}]}"#
        ),
        concat!(
            r#"{"op":"replace","path":"roles","value":[{"primary":true,"#,
            r#""type":"WindowsAzureActiveDirectoryRole","value":"Admin"}]}"#
        ),
        r#"{"op":"Add","path":"emails[type eq \"other\"].value","value":[{"value":"ab"}]}"#,
        r#"{"op":"replace","value":{"name.givenName":"Oswaldo","name.familyName":"Rylan"}}"#,
        r#"{"op":"replace","path":"roles[primary eq \"True\"].value","value":"Admin"}"#,
        r#"{"op":"Replace","path":"phoneNumbers[type eq \"mobile\"].value","value":"+1 555"}"#,
    ];

    #[test]
    fn entra_add_members() {
        let request = parse(&body(ADD_MEMBERS)).unwrap();

        assert_eq!(
            group_changes(&request).unwrap(),
            vec![GroupChange::AddMembers(ids(&["f648f8d5ea4e4cd38e9c"]))]
        );
        assert!(has(&request, Quirk::CapitalisedOp));
        assert!(has(&request, Quirk::NullRef));
        assert!(!has(&request, Quirk::ExplicitNull));
    }

    #[test]
    fn entra_default_remove_removes_only_listed_members() {
        for (text, id) in [
            (REMOVE_MEMBERS_DEFAULT, "f648f8d5ea4e4cd38e9c"),
            (REMOVE_MEMBERS_DEFAULT_2, "u1091"),
        ] {
            let request = parse(&body(text)).unwrap();

            assert_eq!(
                group_changes(&request).unwrap(),
                vec![GroupChange::RemoveMembers(ids(&[id]))]
            );
            assert!(has(&request, Quirk::MemberRemoveByValue));
        }
    }

    #[test]
    fn entra_flag_remove_by_filter() {
        let request = parse(&body(REMOVE_MEMBERS_FLAG)).unwrap();

        assert_eq!(
            group_changes(&request).unwrap(),
            vec![GroupChange::RemoveMembers(ids(&[
                "7f4bc1a3-285e-48ae-8202-5accb43efb0e"
            ]))]
        );
        assert!(has(&request, Quirk::ValueFilterPath));
        assert!(!has(&request, Quirk::CapitalisedOp));
    }

    #[test]
    fn entra_rename_is_ignored() {
        assert_eq!(
            changes(body(REPLACE_DISPLAY_NAME)),
            vec![GroupChange::Ignored {
                attribute: "displayName".to_owned()
            }]
        );
    }

    #[test]
    fn entra_user_bodies_parse() {
        let bodies = [
            USER_REPLACE_DEFAULT,
            USER_REPLACE_USER_NAME,
            USER_CAPTURED_2022,
            USER_DISABLE_DEFAULT,
            USER_DISABLE_FLAG,
            USER_MULTI_REPLACE_FLAG,
        ];
        for text in bodies {
            assert!(parse(&body(text)).is_ok(), "{text}");
        }
        for operation in USER_OPERATIONS {
            let text = format!(r#"{{"schemas":["{PATCH_OP_URN}"],"Operations":[{operation}]}}"#);
            assert!(parse(&body(&text)).is_ok(), "{text}");
        }
    }

    #[test]
    fn user_paths_are_typed() {
        let request = parse(&body(USER_CAPTURED_2022)).unwrap();

        let paths: Vec<_> = request.operations.iter().map(|o| o.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                Some(PatchPath::ValueFilter {
                    urn: None,
                    name: "emails".to_owned(),
                    filter: "type eq \"work\"".to_owned(),
                    sub_attribute: Some("value".to_owned()),
                }),
                Some(PatchPath::ValueFilter {
                    urn: None,
                    name: "addresses".to_owned(),
                    filter: "type eq \"work\"".to_owned(),
                    sub_attribute: Some("formatted".to_owned()),
                }),
                Some(attribute(
                    Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"),
                    "department",
                    None
                )),
            ]
        );
        assert_eq!(request.operations[2].op, OpKind::Add);
        assert!(has(&request, Quirk::UrnPath));
        assert!(has(&request, Quirk::ValueFilterPath));
    }

    #[test]
    fn user_dotted_path_and_string_boolean_quirks() {
        let dotted = parse(&body(USER_REPLACE_DEFAULT)).unwrap();
        let disable = parse(&body(USER_DISABLE_DEFAULT)).unwrap();
        let disable_flag = parse(&body(USER_DISABLE_FLAG)).unwrap();

        assert_eq!(
            dotted.operations[1].path,
            Some(attribute(None, "name", Some("familyName")))
        );
        assert!(has(&dotted, Quirk::DottedPath));
        assert!(has(&disable, Quirk::StringBoolean));
        assert!(!has(&disable_flag, Quirk::StringBoolean));
        assert_eq!(disable_flag.operations[0].value, Some(json!(false)));
    }

    #[test]
    fn user_pathless_value_object() {
        let request = parse(&body(USER_MULTI_REPLACE_FLAG)).unwrap();

        assert_eq!(request.operations[1].path, None);
        assert_eq!(
            request.operations[1].value.as_ref().unwrap()["displayName"],
            "Bjfe"
        );
        for quirk in [
            Quirk::PathlessValueObject,
            Quirk::DottedPath,
            Quirk::UrnPath,
        ] {
            assert!(has(&request, quirk), "{quirk:?}");
        }
    }

    #[test]
    fn op_names_are_case_insensitive() {
        for (name, kind) in [
            ("add", OpKind::Add),
            ("ADD", OpKind::Add),
            ("Replace", OpKind::Replace),
            ("rEmOvE", OpKind::Remove),
        ] {
            let request = parse(&patch(
                json!([{"op": name, "path": "displayName", "value": "x"}]),
            ));

            assert_eq!(request.unwrap().operations[0].op, kind);
        }
    }

    #[test]
    fn message_keys_are_case_insensitive() {
        let request = parse(&json!({
            "schemas": [PATCH_OP_URN],
            "operations": [{"OP": "add", "Path": "Members", "VALUE": [{"Value": "u1"}]}]
        }))
        .unwrap();

        assert_eq!(
            group_changes(&request).unwrap(),
            vec![GroupChange::AddMembers(ids(&["u1"]))]
        );
        assert!(has(&request, Quirk::AttributeNameCase));
    }

    #[test]
    fn missing_or_odd_schemas_are_tolerated() {
        let operations = json!([{"op": "add", "path": "members", "value": [{"value": "u1"}]}]);

        let missing = parse(&json!({"Operations": operations})).unwrap();
        let unknown = parse(&json!({"schemas": ["urn:x:y"], "Operations": operations})).unwrap();

        assert!(has(&missing, Quirk::MissingSchema));
        assert!(has(&unknown, Quirk::UnknownSchemaUrn));
    }

    #[test]
    fn member_value_may_be_a_single_object() {
        let request = parse(&patch(json!([{
            "op": "Add", "path": "members", "value": {"value": "u1", "display": "Ann"}
        }])))
        .unwrap();

        assert_eq!(
            group_changes(&request).unwrap(),
            vec![GroupChange::AddMembers(ids(&["u1"]))]
        );
        assert!(has(&request, Quirk::SingleMemberObject));
    }

    #[test]
    fn many_members_and_operations_keep_order() {
        let operations = json!([
            {"op": "Add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "c"}, {"value": "d"}]},
            {"op": "replace", "path": "externalId", "value": "e"},
            {"op": "remove", "path": "members[value eq \"f\" or VALUE EQ \"g\"]"},
            {"op": "add", "path": "members", "value": [{"value": "h"}]}
        ]);

        assert_eq!(
            changes(patch(operations)),
            vec![
                GroupChange::AddMembers(ids(&["a", "b"])),
                GroupChange::RemoveMembers(ids(&["c", "d"])),
                GroupChange::Ignored {
                    attribute: "externalId".to_owned()
                },
                GroupChange::RemoveMembers(ids(&["f", "g"])),
                GroupChange::AddMembers(ids(&["h"])),
            ]
        );
    }

    #[test]
    fn remove_without_value_removes_all_members() {
        let without = patch(json!([{"op": "remove", "path": "members"}]));
        let null = patch(json!([{"op": "Remove", "path": "members", "value": null}]));

        assert_eq!(changes(without), vec![GroupChange::RemoveAllMembers]);
        assert_eq!(changes(null), vec![GroupChange::RemoveAllMembers]);
    }

    #[test]
    fn remove_with_empty_list_removes_nobody() {
        let empty = patch(json!([{"op": "Remove", "path": "members", "value": []}]));

        assert_eq!(changes(empty), vec![GroupChange::RemoveMembers(vec![])]);
    }

    #[test]
    fn replace_members() {
        let operations = json!([{"op": "replace", "path": "members", "value": [{"value": "a"}]}]);

        assert_eq!(
            changes(patch(operations)),
            vec![GroupChange::ReplaceMembers(ids(&["a"]))]
        );
    }

    #[test]
    fn group_urn_qualified_members_path() {
        let operations = json!([{
            "op": "add",
            "path": "urn:ietf:params:scim:schemas:core:2.0:Group:members",
            "value": [{"value": "a"}]
        }]);

        assert_eq!(
            changes(patch(operations)),
            vec![GroupChange::AddMembers(ids(&["a"]))]
        );
    }

    #[test]
    fn pathless_group_value_object() {
        let request = parse(&patch(json!([{
            "op": "Replace",
            "value": {
                "displayName": "Renamed",
                "externalId": "x",
                "members": [{"value": "a"}, {"value": "b"}]
            }
        }])))
        .unwrap();

        let changes = group_changes(&request).unwrap();

        assert_eq!(changes.len(), 3);
        assert!(changes.contains(&GroupChange::ReplaceMembers(ids(&["a", "b"]))));
        for attribute in ["displayName", "externalId"] {
            let ignored = GroupChange::Ignored {
                attribute: attribute.to_owned(),
            };
            assert!(changes.contains(&ignored), "{attribute}");
        }
        assert!(has(&request, Quirk::PathlessValueObject));
    }

    #[test]
    fn pathless_add_of_members() {
        let operations = json!([{"op": "add", "value": {"Members": [{"value": "a"}]}}]);

        assert_eq!(
            changes(patch(operations)),
            vec![GroupChange::AddMembers(ids(&["a"]))]
        );
    }

    #[test]
    fn ignored_attribute_names_drop_filters() {
        let operations = json!([
            {
                "op": "replace",
                "path": "emails[value eq \"secret@example.com\"].display",
                "value": "x"
            },
            {
                "op": "replace",
                "path": "urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
                "value": "y"
            }
        ]);

        assert_eq!(
            changes(patch(operations)),
            vec![
                GroupChange::Ignored {
                    attribute: "emails.display".to_owned()
                },
                GroupChange::Ignored {
                    attribute: "urn:ietf:params:scim:schemas:core:2.0:Group:displayName".to_owned()
                },
            ]
        );
    }

    #[test]
    fn filter_ids_are_json_strings() {
        let operations = json!([{"op": "remove", "path": r#"members[value eq "a\"]b"]"#}]);

        assert_eq!(
            changes(patch(operations)),
            vec![GroupChange::RemoveMembers(ids(&["a\"]b"]))]
        );
    }

    // peers.md §5 theme 2: "remove one member" wiped the whole group at several servers.
    #[test]
    fn regression_remove_one_member_never_empties_the_group() {
        let operations = json!([{"op": "Remove", "path": "members", "value": [{"value": "one"}]}]);

        let changes = changes(patch(operations));

        assert_eq!(changes, vec![GroupChange::RemoveMembers(ids(&["one"]))]);
        assert!(!changes.contains(&GroupChange::RemoveAllMembers));
    }

    // peers.md §5 theme 3: membership must be applied as deltas, never as a rewritten full list.
    #[test]
    fn regression_add_and_remove_are_deltas() {
        let operations = json!([
            {"op": "Add", "path": "members", "value": [{"value": "a"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "b"}]}
        ]);

        let changes = changes(patch(operations));

        assert!(changes.iter().all(|c| !matches!(
            c,
            GroupChange::ReplaceMembers(_) | GroupChange::RemoveAllMembers
        )));
    }

    // peers.md §5 theme 1: string booleans, capitalised ops, filter-in-path adds and JSON inside
    // strings broke other servers' PATCH parsers.
    #[test]
    fn regression_non_standard_entra_patch_parses() {
        let request = parse(&patch(json!([
            {"op": "Replace", "path": "active", "value": "True"},
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@example.com"},
            {"op": "Add", "path": "roles", "value": [{"value": "{\"id\":\"1\",\"value\":\"25\"}"}]},
            {"op": "Replace", "path": "roles[primary eq \"True\"].value", "value": "x"}
        ])))
        .unwrap();

        assert_eq!(request.operations.len(), 4);
        assert!(has(&request, Quirk::StringBoolean));
        assert!(has(&request, Quirk::CapitalisedOp));
        assert!(has(&request, Quirk::ValueFilterPath));
    }

    // A value-filter add must not be refused with noTarget (broke Entra at scim-for-keycloak).
    #[test]
    fn regression_value_filter_add_is_accepted() {
        let operations =
            json!([{"op": "Add", "path": "emails[type eq \"other\"].value", "value": "x"}]);

        assert_eq!(parse(&patch(operations)).unwrap().operations.len(), 1);
    }

    #[test]
    fn body_must_be_an_object_with_operations() {
        let cases = [
            (json!([]), "invalidSyntax"),
            (json!("x"), "invalidSyntax"),
            (json!({"schemas": [PATCH_OP_URN]}), "invalidSyntax"),
            (json!({"Operations": []}), "invalidSyntax"),
            (json!({"Operations": {"op": "add"}}), "invalidSyntax"),
            (json!({"Operations": [5]}), "invalidSyntax"),
        ];
        for (body, scim_type) in cases {
            let error = parse(&body).unwrap_err();
            assert_eq!(error.scim_type(), scim_type, "{body}");
        }
    }

    #[test]
    fn op_must_be_add_remove_or_replace() {
        for op in [
            json!("delete"),
            json!("move"),
            json!(""),
            json!(1),
            json!(null),
        ] {
            let error = parse(&patch(json!([{"op": op, "path": "members"}]))).unwrap_err();

            assert!(matches!(error, PatchError::InvalidOp { index: 0 }), "{op}");
            assert_eq!(error.scim_type(), "invalidSyntax");
        }
        let error = parse(&patch(json!([{"path": "members"}]))).unwrap_err();
        assert!(matches!(error, PatchError::InvalidOp { index: 0 }));
    }

    #[test]
    fn remove_requires_a_path() {
        let error = parse(&patch(json!([{"op": "remove", "value": {"members": []}}]))).unwrap_err();

        assert!(matches!(error, PatchError::RemoveWithoutPath { index: 0 }));
        assert_eq!(error.scim_type(), "noTarget");
    }

    #[test]
    fn add_and_replace_require_a_value() {
        let error = parse(&patch(json!([{"op": "add", "path": "members"}]))).unwrap_err();

        assert!(matches!(error, PatchError::MissingValue { index: 0 }));
        assert_eq!(error.scim_type(), "invalidValue");
    }

    #[test]
    fn member_add_with_null_value_is_refused() {
        let error = group_error(patch(
            json!([{"op": "add", "path": "members", "value": null}]),
        ));

        assert!(matches!(error, PatchError::MissingValue { index: 0 }));
    }

    #[test]
    fn pathless_value_must_be_an_object() {
        for value in [json!("x"), json!([{"value": "a"}]), json!(null)] {
            let error = parse(&patch(json!([{"op": "add", "value": value}]))).unwrap_err();

            assert!(matches!(
                error,
                PatchError::PathlessValueNotObject { index: 0 }
            ));
            assert_eq!(error.scim_type(), "invalidValue");
        }
    }

    #[test]
    fn invalid_paths_are_refused() {
        let invalid = [
            "",
            "   ",
            "1members",
            "members..value",
            "name.givenName.x",
            "members[",
            "members[]",
            "members[value eq \"a\"",
            "members[value eq \"a]",
            "members[value eq \"a\"]x",
            "members[value eq \"a\"].",
            "members[a[b]]",
            "na me",
            "urn:",
            "urn:members",
            "foo:bar",
            "emails.value[type eq \"work\"]",
        ];
        for path in invalid {
            let error = parse(&patch(json!([{"op": "remove", "path": path}]))).unwrap_err();

            assert!(
                matches!(error, PatchError::InvalidPath { index: 0 }),
                "{path}"
            );
            assert_eq!(error.scim_type(), "invalidPath");
        }
        let error = parse(&patch(json!([{"op": "remove", "path": 3}]))).unwrap_err();
        assert!(matches!(error, PatchError::InvalidPath { index: 0 }));
    }

    #[test]
    fn invalid_pathless_keys_are_refused() {
        let error = parse(&patch(json!([{"op": "add", "value": {"na me": 1}}]))).unwrap_err();

        assert!(matches!(error, PatchError::InvalidValueKey { index: 0 }));
        assert_eq!(error.scim_type(), "invalidPath");
    }

    #[test]
    fn error_index_points_at_the_operation() {
        let operations = json!([
            {"op": "add", "path": "members", "value": []},
            {"op": "add", "path": "members", "value": [{"display": "x"}]}
        ]);

        let error = group_error(patch(operations));

        assert!(matches!(error, PatchError::InvalidMember { index: 1 }));
        assert_eq!(
            error.to_string(),
            "Operations[1]: every member must be an object with a non-empty string \"value\""
        );
    }

    #[test]
    fn members_need_a_string_value() {
        let invalid = [
            json!([{"display": "x"}]),
            json!([{"value": 5}]),
            json!([{"value": ""}]),
            json!([{"value": null}]),
            json!(["u1"]),
            json!("u1"),
            json!([[{"value": "u1"}]]),
        ];
        for value in invalid {
            let operations = json!([{"op": "Remove", "path": "members", "value": value}]);

            let error = group_error(patch(operations));

            assert!(
                matches!(error, PatchError::InvalidMember { index: 0 }),
                "{value}"
            );
            assert_eq!(error.scim_type(), "invalidValue");
        }
    }

    #[test]
    fn member_filters_other_than_value_eq_are_refused() {
        let filters = [
            "display eq \"a\"",
            "value ne \"a\"",
            "value eq \"a\" and value eq \"b\"",
            "value eq a",
            "value eq \"a\" or",
            "(value eq \"a\")",
            "value pr",
            "valueeq \"a\"",
        ];
        for filter in filters {
            let operations = json!([{"op": "remove", "path": format!("members[{filter}]")}]);

            let error = group_error(patch(operations));

            assert!(
                matches!(error, PatchError::UnsupportedMemberFilter { index: 0 }),
                "{filter}"
            );
            assert_eq!(error.scim_type(), "invalidFilter");
        }
    }

    #[test]
    fn empty_member_id_in_filter_is_refused() {
        let error = group_error(patch(
            json!([{"op": "remove", "path": "members[value eq \"\"]"}]),
        ));

        assert!(matches!(error, PatchError::InvalidMember { index: 0 }));
    }

    #[test]
    fn unsupported_member_paths_are_refused() {
        let operations = [
            json!({"op": "add", "path": "members[value eq \"a\"]", "value": [{"value": "a"}]}),
            json!({"op": "replace", "path": "members[value eq \"a\"]", "value": [{"value": "b"}]}),
            json!({"op": "remove", "path": "members.value"}),
            json!({"op": "remove", "path": "members[value eq \"a\"].display"}),
        ];
        for operation in operations {
            let error = group_error(patch(json!([operation])));

            assert!(
                matches!(error, PatchError::UnsupportedMemberPath { index: 0 }),
                "{operation}"
            );
            assert_eq!(error.scim_type(), "invalidPath");
        }
    }

    #[test]
    fn operation_limit() {
        let operation = json!({"op": "replace", "path": "displayName", "value": "x"});

        let at_limit = patch(Value::Array(vec![operation.clone(); MAX_OPERATIONS]));
        let over_limit = patch(Value::Array(vec![operation; MAX_OPERATIONS + 1]));

        assert_eq!(parse(&at_limit).unwrap().operations.len(), MAX_OPERATIONS);
        let error = parse(&over_limit).unwrap_err();
        assert!(matches!(
            error,
            PatchError::TooManyOperations { count: 1001 }
        ));
        assert_eq!(
            error.to_string(),
            "a PATCH request may have at most 1000 operations; this one has 1001"
        );
    }

    #[test]
    fn member_limit_spans_all_operations() {
        let half: Vec<Value> = (0..MAX_MEMBER_VALUES / 2)
            .map(|n| json!({"value": n.to_string()}))
            .collect();
        let add = json!({"op": "add", "path": "members", "value": half});
        let one_more = json!({"op": "remove", "path": "members[value eq \"x\"]"});

        let at_limit = changes(patch(json!([add, add])));
        let error = group_error(patch(json!([add, add, one_more])));

        assert_eq!(at_limit.len(), 2);
        assert!(matches!(
            error,
            PatchError::TooManyMembers { count: 10_001 }
        ));
        assert_eq!(error.scim_type(), "invalidValue");
    }

    #[test]
    fn error_details_do_not_echo_values() {
        let secret = "secret-value@example.com";
        let bodies = [
            patch(json!([{"op": secret, "path": "members"}])),
            patch(json!([{"op": "remove", "path": format!("members[value eq \"{secret}\"")}])),
            patch(json!([{"op": "remove", "path": format!("members[display eq \"{secret}\"]")}])),
            patch(json!([{"op": "add", "path": "members", "value": [{"display": secret}]}])),
        ];
        for body in bodies {
            let error = parse(&body)
                .and_then(|request| group_changes(&request))
                .unwrap_err();

            assert!(!error.to_string().contains(secret), "{error}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(body in arbitrary::json()) {
            if let Ok(request) = parse(&body) {
                let _ = group_changes(&request);
            }
        }

        #[test]
        fn arbitrary_operations_never_panic(
            operations in proptest::collection::vec(arbitrary::json(), 1..6),
        ) {
            if let Ok(request) = parse(&patch(Value::Array(operations))) {
                let _ = group_changes(&request);
            }
        }

        #[test]
        fn arbitrary_paths_never_panic(
            path in prop_oneof!["[a-zA-Z.:\\[\\]\" =$\\\\]{0,40}", any::<String>()],
            op in proptest::sample::select(vec!["add", "Remove", "replace"]),
        ) {
            let body = patch(json!([{"op": op, "path": path, "value": [{"value": "a"}]}]));
            if let Ok(request) = parse(&body) {
                let _ = group_changes(&request);
            }
        }

        #[test]
        fn remove_with_value_list_removes_exactly_those(
            members in proptest::collection::vec("[a-z0-9-]{1,36}", 0..50),
            op in proptest::sample::select(vec!["Remove", "remove", "REMOVE"]),
        ) {
            let value: Vec<Value> = members
                .iter()
                .map(|id| json!({"$ref": null, "value": id}))
                .collect();
            let body = patch(json!([{"op": op, "path": "members", "value": value}]));

            prop_assert_eq!(changes(body), vec![GroupChange::RemoveMembers(members)]);
        }

        #[test]
        fn filter_remove_round_trips_ids(members in proptest::collection::vec(".{1,20}", 1..10)) {
            let clauses: Vec<String> = members
                .iter()
                .map(|id| format!("value eq {}", Value::String(id.clone())))
                .collect();
            let path = format!("members[{}]", clauses.join(" or "));
            let body = patch(json!([{"op": "remove", "path": path}]));

            prop_assert_eq!(changes(body), vec![GroupChange::RemoveMembers(members)]);
        }
    }
}
