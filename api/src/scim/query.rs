//! Query parameters of SCIM list and read requests (RFC 7644 §3.4.2, §3.9).
//!
//! The query string is decoded form-style, as Entra sends it: `+` is a space, `%XX` any hex
//! case, `[ ] " @` raw or encoded. Parameter names are case-insensitive; unknown parameters —
//! such as Entra's `aadOptscim062020` feature flag — are ignored.

use super::discovery::MAX_RESULTS;
use super::error::ScimError;
use super::filter::{self, AttributeMap, SqlFilter};
use tenancy::SchemaName;

/// Results per page when the client does not say.
pub const DEFAULT_COUNT: i64 = 100;

/// `attributes` / `excludedAttributes`: which attributes a response carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    /// Lower-cased attribute paths (`username`, `name.givenname`); empty means "the default
    /// set".
    pub attributes: Vec<String>,
    pub excluded: Vec<String>,
}

impl Projection {
    /// Whether a top-level attribute survives the projection. `id`, `schemas` and `meta` are
    /// always returned.
    pub fn keeps(&self, attribute: &str) -> bool {
        let name = attribute.to_ascii_lowercase();
        if matches!(name.as_str(), "id" | "schemas" | "meta") {
            return true;
        }
        if !self.attributes.is_empty() {
            return self
                .attributes
                .iter()
                .any(|a| a == &name || a.starts_with(&format!("{name}.")));
        }
        !self.excluded.iter().any(|a| a == &name)
    }

    /// Whether `attribute.sub` survives (the parent is assumed kept).
    pub fn keeps_sub(&self, attribute: &str, sub: &str) -> bool {
        let parent = attribute.to_ascii_lowercase();
        let path = format!("{parent}.{}", sub.to_ascii_lowercase());
        if !self.attributes.is_empty() {
            return self.attributes.iter().any(|a| a == &parent || a == &path);
        }
        !self.excluded.iter().any(|a| a == &path)
    }
}

/// The parameters of `GET /Users` and `GET /Groups` (and the projection of a single GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Option<String>,
    /// 1-based, as in RFC 7644; values below 1 mean 1.
    pub start_index: i64,
    /// 0 ..= MAX_RESULTS; 0 asks only for `totalResults`.
    pub count: i64,
    pub projection: Projection,
}

impl ListQuery {
    /// The filter translated to SQL over `map`'s allow-list in the tenant's `schema`, or `None`
    /// without a filter.
    pub fn sql_filter(
        &self,
        map: &AttributeMap,
        schema: &SchemaName,
    ) -> Result<Option<SqlFilter>, ScimError> {
        let translate = |text: &str| filter::to_sql(&filter::parse(text)?, map, schema, 1);
        self.filter
            .as_deref()
            .map(translate)
            .transpose()
            .map_err(|e| ScimError::bad_request(e.scim_type(), e.to_string()))
    }

    /// Rows to skip for `start_index`.
    pub fn offset(&self) -> i64 {
        self.start_index - 1
    }
}

/// Parses a raw query string (`None` when the URL has none).
pub fn parse(raw: Option<&str>) -> Result<ListQuery, ScimError> {
    let mut query = ListQuery {
        filter: None,
        start_index: 1,
        count: DEFAULT_COUNT,
        projection: Projection::default(),
    };
    let Some(raw) = raw else {
        return Ok(query);
    };
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        match name.to_ascii_lowercase().as_str() {
            "filter" => query.filter = Some(value.into_owned()),
            "startindex" => query.start_index = number("startIndex", &value)?.max(1),
            "count" => query.count = number("count", &value)?.clamp(0, MAX_RESULTS as i64),
            "attributes" => query.projection.attributes = attribute_list(&value),
            "excludedattributes" => query.projection.excluded = attribute_list(&value),
            _ => {}
        }
    }
    Ok(query)
}

fn number(name: &str, value: &str) -> Result<i64, ScimError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| ScimError::bad_request("invalidValue", format!("{name} must be an integer")))
}

/// A comma-separated attribute list, lower-cased, with the core schema URN prefixes removed
/// (`urn:ietf:params:scim:schemas:core:2.0:User:userName` means `username`).
fn attribute_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|a| strip_core_urn(a.trim()).to_ascii_lowercase())
        .filter(|a| !a.is_empty())
        .collect()
}

fn strip_core_urn(attribute: &str) -> &str {
    for urn in [
        "urn:ietf:params:scim:schemas:core:2.0:User:",
        "urn:ietf:params:scim:schemas:core:2.0:Group:",
    ] {
        if attribute.len() > urn.len() && attribute[..urn.len()].eq_ignore_ascii_case(urn) {
            return &attribute[urn.len()..];
        }
    }
    attribute
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_encodings_decode_to_the_same_filter() {
        let expected = Some(r#"emails[type eq "work"].value eq "a@b.c""#.to_owned());
        for raw in [
            "filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22a%40b.c%22",
            "filter=emails%5btype%20eq%20%22work%22%5d.value%20eq%20%22a%40b.c%22",
            r#"filter=emails[type+eq+"work"].value+eq+"a@b.c""#,
            "aadOptscim062020&filter=emails[type eq %22work%22].value eq %22a@b.c%22",
            "FILTER=emails%5Btype+eq+%22work%22%5D.value+eq+%22a%40b.c%22&x=1",
        ] {
            assert_eq!(parse(Some(raw)).unwrap().filter, expected, "{raw}");
        }
    }

    #[test]
    fn paging_is_one_based_and_bounded() {
        let q = parse(Some("startIndex=0&count=-5")).unwrap();
        assert_eq!((q.start_index, q.count, q.offset()), (1, 0, 0));
        let q = parse(Some("startindex=11&Count=100000")).unwrap();
        assert_eq!(
            (q.start_index, q.count, q.offset()),
            (11, MAX_RESULTS as i64, 10)
        );
        let q = parse(None).unwrap();
        assert_eq!((q.start_index, q.count), (1, DEFAULT_COUNT));
        assert!(parse(Some("count=ten")).is_err());
    }

    #[test]
    fn projections_are_case_insensitive_and_keep_the_essentials() {
        let q = parse(Some("attributes=userName,Name.givenName")).unwrap();
        let p = &q.projection;
        assert!(p.keeps("UserName") && p.keeps("id") && p.keeps("meta") && p.keeps("name"));
        assert!(!p.keeps("emails"));
        assert!(p.keeps_sub("name", "givenName") && !p.keeps_sub("name", "familyName"));

        let q = parse(Some(
            "excludedAttributes=members,urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
        ))
        .unwrap();
        assert!(!q.projection.keeps("members") && !q.projection.keeps("displayName"));
        assert!(q.projection.keeps("externalId") && q.projection.keeps("id"));
    }
}
