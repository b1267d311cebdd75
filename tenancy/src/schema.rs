//! Tenant schema names: generated, validated, and the only identifiers ever put into SQL text.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The name of one tenant's Postgres schema, always `t_` followed by 32 lowercase hex digits.
///
/// It can only be generated or parsed from that exact shape, so interpolating it into DDL or a
/// `set local search_path` statement cannot inject anything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SchemaName(String);

impl SchemaName {
    /// A fresh name for a new tenant.
    pub fn generate() -> Self {
        SchemaName(format!("t_{}", Uuid::new_v4().simple()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidSchemaName> {
        let hex = raw.strip_prefix("t_").ok_or(InvalidSchemaName)?;
        let valid = hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(SchemaName(raw.to_owned()))
        } else {
            Err(InvalidSchemaName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a double-quoted SQL identifier.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a tenant schema name")]
pub struct InvalidSchemaName;

impl TryFrom<String> for SchemaName {
    type Error = InvalidSchemaName;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        SchemaName::parse(&raw)
    }
}

impl From<SchemaName> for String {
    fn from(name: SchemaName) -> String {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_parse_back() {
        let name = SchemaName::generate();
        assert_eq!(SchemaName::parse(name.as_str()).unwrap(), name);
    }

    #[test]
    fn anything_else_is_refused() {
        for raw in [
            "",
            "public",
            "t_",
            "t_0123456789abcdef0123456789ABCDEF",
            "t_0123456789abcdef0123456789abcde",
            "t_0123456789abcdef0123456789abcdef0",
            "t_0123456789abcdef\"; drop table x;--",
            "roster_control",
        ] {
            assert!(SchemaName::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
