//! SCIM filters (RFC 7644 §3.4.2.2): the `filter` query parameter parsed into a [`Filter`] tree,
//! printed back as canonical text, and translated into parameterised Postgres SQL over the
//! allow-list of attributes a resource type lets clients filter on ([`USERS`], [`GROUPS`]).
//!
//! Nothing here knows about HTTP. Every [`FilterError`] is the client's mistake, answered with
//! `400` and `scimType: invalidFilter`; its message names attributes and byte offsets but never
//! a comparison value, because values are personal data (emails, names).
//!
//! What the SQL means, where RFC 7644 and SQL could disagree:
//! * A comparison with an absent (NULL) attribute is false, and stays false under `not`: `not`
//!   reads its operand as `coalesce(…, false)`, so `not (title eq "x")` matches users without
//!   a title instead of SQL's "unknown".
//! * `ne` is `is distinct from`: it matches rows where the attribute is absent.
//! * A multi-valued attribute (`emails`, `members`) matches when any one of its values does.
//! * Values are always bound, never spliced into the SQL text.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use tenancy::SchemaName;
use uuid::Uuid;

/// The longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 2048;

/// The deepest nesting of `( … )`, `not ( … )` and value-path `[ … ]` accepted.
pub const MAX_DEPTH: usize = 10;

/// A parsed filter. Attribute names are kept as the client spelled them (they match
/// case-insensitively); grouping parentheses leave no trace in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `path op value` or `path pr` (RFC `attrExp`).
    Attr {
        path: AttrPath,
        test: Test,
    },
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    /// `not ( filter )`.
    Not(Box<Filter>),
    /// `attr[filter]`, optionally followed by a test on a sub-attribute of the same value:
    /// `emails[type eq "work"].value eq "x"`. Inside the brackets, attribute paths name
    /// sub-attributes of `attr`.
    ValuePath {
        attr: AttrPath,
        filter: Box<Filter>,
        then: Option<SubAttrTest>,
    },
}

/// `[schema:]name[.subAttr]`. A path without a schema URN means the attribute of that name in
/// whichever schema of the resource type has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub schema: Option<String>,
    pub name: String,
    pub sub_attr: Option<String>,
}

/// The `.subAttr op value` after a value path's closing bracket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAttrTest {
    pub sub_attr: String,
    pub test: Test,
}

/// What an attribute expression asks of the attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    Compare(CompareOp, Value),
    /// `pr`: the attribute has a non-empty value.
    Present,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A comparison value: a JSON literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
    Null,
}

/// Why a filter was refused. Every variant is `400` with `scimType: invalidFilter`; the message
/// is the SCIM `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter is longer than [`MAX_FILTER_LEN`] bytes.
    #[error("the filter is {len} bytes long; at most {max} are accepted", max = MAX_FILTER_LEN)]
    TooLong { len: usize },
    /// The filter is empty or only white space.
    #[error("the filter is empty")]
    Empty,
    /// Groups, `not` and value paths nest deeper than [`MAX_DEPTH`].
    #[error("the filter nests deeper than {max} levels at offset {position}", max = MAX_DEPTH)]
    TooDeep { position: usize },
    /// A string value has no closing quote.
    #[error("the string starting at offset {position} is not closed")]
    UnterminatedString { position: usize },
    /// A string value is not a valid JSON string (bad escape or raw control character), or
    /// holds a NUL (`\u0000`).
    #[error("the string starting at offset {position} is not a valid JSON string")]
    InvalidString { position: usize },
    /// A comparison value is neither a quoted string, a number, `true`, `false` nor `null`.
    #[error(
        "the value at offset {position} must be a quoted string, a number, true, false or null"
    )]
    InvalidValue { position: usize },
    /// Something other than an RFC 7643 attribute path where one was expected.
    #[error("the attribute path at offset {position} is not valid")]
    InvalidAttributePath { position: usize },
    /// A token that does not fit the grammar (or the end of the filter, at its length).
    #[error("expected {expected} at offset {position}")]
    Syntax {
        expected: &'static str,
        position: usize,
    },
    /// A value path inside the brackets of another one.
    #[error("the value path at offset {position} is inside another value path")]
    NestedValuePath { position: usize },
    /// The attribute is not one this resource type can be filtered on.
    #[error("filtering on attribute '{attribute}' is not supported")]
    UnsupportedAttribute { attribute: String },
    /// `attr[…]` on an attribute that is not multi-valued.
    #[error("attribute '{attribute}' has no multiple values to filter with [...]")]
    NotMultiValued { attribute: String },
    /// The operator does not apply to the attribute's type (e.g. `gt` on a boolean).
    #[error("operator '{operator}' cannot be used on attribute '{attribute}'")]
    UnsupportedOperator {
        attribute: String,
        operator: CompareOp,
    },
    /// The value has the wrong type for the attribute (e.g. a number for `userName`).
    #[error("attribute '{attribute}' must be compared with {expected}")]
    ValueType {
        attribute: String,
        expected: &'static str,
    },
}

impl FilterError {
    /// The RFC 7644 §3.12 `scimType` of the error response: always `invalidFilter`.
    pub fn scim_type(&self) -> &'static str {
        "invalidFilter"
    }
}

/// Parses a filter. Refuses (never panics on) input longer than [`MAX_FILTER_LEN`] or nested
/// deeper than [`MAX_DEPTH`]. The invalid legacy form `emails[type eq "work"] eq "x"` that once
/// appeared in Microsoft's documentation is read as `emails[type eq "work"].value eq "x"`.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(FilterError::TooLong { len: input.len() });
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err(FilterError::Empty);
    }

    let mut parser = Parser {
        tokens,
        next: 0,
        end: input.len(),
    };
    let filter = parser.or_expr(0, Scope::Resource)?;
    match parser.peek() {
        None => Ok(filter),
        Some(token) => Err(FilterError::Syntax {
            expected: "'and', 'or' or the end of the filter",
            position: token.at,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq)]
enum TokenKind<'a> {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    /// A string literal, quotes included, already checked to be valid JSON.
    Str(&'a str),
    /// Anything else up to white space, a bracket or a quote: a name, operator or literal.
    Word(&'a str),
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    kind: TokenKind<'a>,
    /// Byte offset in the input.
    at: usize,
}

fn tokenize(input: &str) -> Result<Vec<Token<'_>>, FilterError> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&byte) = input.as_bytes().get(at) {
        let (kind, end) = match byte {
            b if b.is_ascii_whitespace() => {
                at += 1;
                continue;
            }
            b'(' => (TokenKind::Open, at + 1),
            b')' => (TokenKind::Close, at + 1),
            b'[' => (TokenKind::OpenBracket, at + 1),
            b']' => (TokenKind::CloseBracket, at + 1),
            b'"' => string_literal(input, at)?,
            _ => word(input, at),
        };
        tokens.push(Token { kind, at });
        at = end;
    }
    Ok(tokens)
}

fn string_literal(input: &str, start: usize) -> Result<(TokenKind<'_>, usize), FilterError> {
    let bytes = input.as_bytes();
    let mut at = start + 1;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            // An escaped character is never the closing quote; the JSON decoder checks it.
            b'\\' => at += 2,
            b'"' => {
                let literal = input
                    .get(start..=at)
                    .ok_or(FilterError::InvalidString { position: start })?;
                decode_string(literal, start)?;
                return Ok((TokenKind::Str(literal), at + 1));
            }
            _ => at += 1,
        }
    }
    Err(FilterError::UnterminatedString { position: start })
}

/// Decodes a JSON string literal. `\u0000` is refused too: Postgres text cannot hold it, so no
/// stored value can match it, and binding it would fail the query with a 500.
fn decode_string(literal: &str, position: usize) -> Result<String, FilterError> {
    serde_json::from_str::<String>(literal)
        .ok()
        .filter(|text| !text.contains('\0'))
        .ok_or(FilterError::InvalidString { position })
}

fn word(input: &str, start: usize) -> (TokenKind<'_>, usize) {
    let rest = input.get(start..).unwrap_or_default();
    let len = rest
        .find(|c: char| c.is_ascii_whitespace() || "()[]\"".contains(c))
        .unwrap_or(rest.len());
    let text = rest.get(..len).unwrap_or_default();
    // `len` is at least one whenever `start` is a character boundary, which the lexer keeps;
    // advancing regardless guarantees it terminates.
    (TokenKind::Word(text), start + len.max(1))
}

// ---------------------------------------------------------------------------------------------
// Parser: recursive descent, recursion bounded by MAX_DEPTH.

/// Where an expression is: at the top, or inside a value path's brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Resource,
    Values,
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
    /// Input length: the offset reported for "unexpected end".
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn peek_kind_at(&self, ahead: usize) -> Option<TokenKind<'a>> {
        self.tokens.get(self.next + ahead).map(|token| token.kind)
    }

    fn position(&self) -> usize {
        self.peek().map_or(self.end, |token| token.at)
    }

    fn syntax_error(&self, expected: &'static str) -> FilterError {
        FilterError::Syntax {
            expected,
            position: self.position(),
        }
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(
            self.peek_kind_at(0),
            Some(TokenKind::Word(word)) if word.eq_ignore_ascii_case(keyword)
        );
        if found {
            self.next += 1;
        }
        found
    }

    fn expect(
        &mut self,
        kind: TokenKind<'static>,
        expected: &'static str,
    ) -> Result<(), FilterError> {
        if self.peek_kind_at(0) == Some(kind) {
            self.next += 1;
            Ok(())
        } else {
            Err(self.syntax_error(expected))
        }
    }

    fn expect_word(&mut self, expected: &'static str) -> Result<(&'a str, usize), FilterError> {
        match self.peek() {
            Some(Token {
                kind: TokenKind::Word(word),
                at,
            }) => {
                self.next += 1;
                Ok((word, at))
            }
            _ => Err(self.syntax_error(expected)),
        }
    }

    /// `and_expr ("or" and_expr)*`
    fn or_expr(&mut self, depth: usize, scope: Scope) -> Result<Filter, FilterError> {
        let mut filter = self.and_expr(depth, scope)?;
        while self.eat_keyword("or") {
            let right = self.and_expr(depth, scope)?;
            filter = Filter::Or(Box::new(filter), Box::new(right));
        }
        Ok(filter)
    }

    /// `unary ("and" unary)*`
    fn and_expr(&mut self, depth: usize, scope: Scope) -> Result<Filter, FilterError> {
        let mut filter = self.unary(depth, scope)?;
        while self.eat_keyword("and") {
            let right = self.unary(depth, scope)?;
            filter = Filter::And(Box::new(filter), Box::new(right));
        }
        Ok(filter)
    }

    /// `"(" or_expr ")" | "not" "(" or_expr ")" | attribute expression | value path`
    fn unary(&mut self, depth: usize, scope: Scope) -> Result<Filter, FilterError> {
        match self.peek_kind_at(0) {
            Some(TokenKind::Open) => self.group(depth, scope),
            // `not` is a keyword only before "(": an attribute may be called "not".
            Some(TokenKind::Word(word))
                if word.eq_ignore_ascii_case("not")
                    && self.peek_kind_at(1) == Some(TokenKind::Open) =>
            {
                self.next += 1;
                Ok(Filter::Not(Box::new(self.group(depth, scope)?)))
            }
            Some(TokenKind::Word(_)) => self.attribute_expr(depth, scope),
            _ => Err(self.syntax_error("an attribute path, 'not' or '('")),
        }
    }

    fn group(&mut self, depth: usize, scope: Scope) -> Result<Filter, FilterError> {
        let depth = self.enter(depth)?;
        self.expect(TokenKind::Open, "'('")?;
        let filter = self.or_expr(depth, scope)?;
        self.expect(TokenKind::Close, "')'")?;
        Ok(filter)
    }

    fn enter(&self, depth: usize) -> Result<usize, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(FilterError::TooDeep {
                position: self.position(),
            });
        }
        Ok(depth + 1)
    }

    /// `path test` or `path "[" filter "]" [tail]`
    fn attribute_expr(&mut self, depth: usize, scope: Scope) -> Result<Filter, FilterError> {
        let (word, at) = self.expect_word("an attribute path")?;
        let path = attr_path(word, at)?;
        if self.peek_kind_at(0) != Some(TokenKind::OpenBracket) {
            let test = self.test()?;
            return Ok(Filter::Attr { path, test });
        }

        if scope == Scope::Values {
            return Err(FilterError::NestedValuePath { position: at });
        }
        let depth = self.enter(depth)?;
        self.next += 1;
        let filter = self.or_expr(depth, Scope::Values)?;
        self.expect(TokenKind::CloseBracket, "']'")?;
        let then = self.value_path_tail()?;
        Ok(Filter::ValuePath {
            attr: path,
            filter: Box::new(filter),
            then,
        })
    }

    /// What may follow `attr[filter]`: `.subAttr test`, or (legacy) a bare test on `value`.
    fn value_path_tail(&mut self) -> Result<Option<SubAttrTest>, FilterError> {
        let Some(Token {
            kind: TokenKind::Word(word),
            at,
        }) = self.peek()
        else {
            return Ok(None);
        };
        if let Some(sub_attr) = word.strip_prefix('.') {
            if !is_attr_name(sub_attr) {
                return Err(FilterError::InvalidAttributePath { position: at });
            }
            self.next += 1;
            let test = self.test()?;
            let sub_attr = sub_attr.to_owned();
            return Ok(Some(SubAttrTest { sub_attr, test }));
        }
        if word.eq_ignore_ascii_case("pr") || CompareOp::from_word(word).is_some() {
            let test = self.test()?;
            let sub_attr = "value".to_owned();
            return Ok(Some(SubAttrTest { sub_attr, test }));
        }
        Ok(None)
    }

    /// `"pr" | compare-op value`
    fn test(&mut self) -> Result<Test, FilterError> {
        let (word, at) = self.expect_word("an operator")?;
        if word.eq_ignore_ascii_case("pr") {
            return Ok(Test::Present);
        }
        let op = CompareOp::from_word(word).ok_or(FilterError::Syntax {
            expected: "an operator",
            position: at,
        })?;
        Ok(Test::Compare(op, self.value()?))
    }

    fn value(&mut self) -> Result<Value, FilterError> {
        let Some(token) = self.peek() else {
            return Err(self.syntax_error("a value"));
        };
        let value = match token.kind {
            TokenKind::Str(literal) => Value::String(decode_string(literal, token.at)?),
            TokenKind::Word(word) => literal_value(word, token.at)?,
            _ => return Err(self.syntax_error("a value")),
        };
        self.next += 1;
        Ok(value)
    }
}

fn literal_value(word: &str, position: usize) -> Result<Value, FilterError> {
    if word.eq_ignore_ascii_case("true") {
        Ok(Value::Bool(true))
    } else if word.eq_ignore_ascii_case("false") {
        Ok(Value::Bool(false))
    } else if word.eq_ignore_ascii_case("null") {
        Ok(Value::Null)
    } else {
        json_number(word).ok_or(FilterError::InvalidValue { position })
    }
}

/// A JSON number. serde_json checks the syntax; a fraction or exponent is then re-read with
/// Rust's exactly rounding parser, so printing and parsing again gives the same value.
fn json_number(word: &str) -> Option<Value> {
    let number: serde_json::Number = serde_json::from_str(word).ok()?;
    if number.is_f64() {
        let exact = word.parse::<f64>().ok()?;
        return serde_json::Number::from_f64(exact).map(Value::Number);
    }
    Some(Value::Number(number))
}

/// Splits `[schema:]name[.subAttr]`. The schema URN itself holds dots (`2.0`), so the name
/// starts after its last colon.
fn attr_path(word: &str, position: usize) -> Result<AttrPath, FilterError> {
    let invalid = FilterError::InvalidAttributePath { position };
    let (schema, rest) = match word.rsplit_once(':') {
        Some((schema, rest)) if is_schema(schema) => (Some(schema.to_owned()), rest),
        Some(_) => return Err(invalid),
        None => (None, word),
    };
    let (name, sub_attr) = match rest.split_once('.') {
        Some((name, sub_attr)) => (name, Some(sub_attr)),
        None => (rest, None),
    };
    if !is_attr_name(name) || !sub_attr.is_none_or(is_attr_name) {
        return Err(invalid);
    }
    Ok(AttrPath {
        schema,
        name: name.to_owned(),
        sub_attr: sub_attr.map(str::to_owned),
    })
}

/// RFC 7643 `ATTRNAME` (`ALPHA *(nameChar)`), plus a leading `$` for `$ref`.
fn is_attr_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_schema(schema: &str) -> bool {
    schema.starts_with(|c: char| c.is_ascii_alphabetic())
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":._-/".contains(c))
}

impl CompareOp {
    const ALL: [CompareOp; 9] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    fn from_word(word: &str) -> Option<CompareOp> {
        CompareOp::ALL
            .into_iter()
            .find(|op| word.eq_ignore_ascii_case(op.as_str()))
    }

    fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical text: lower-case operators and keywords, single spaces, JSON literals, and
// parentheses only where precedence needs them.

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Attr { path, test } => write!(f, "{path} {test}"),
            Filter::And(left, right) => {
                write_operand(f, left, matches!(**left, Filter::Or(..)))?;
                f.write_str(" and ")?;
                write_operand(
                    f,
                    right,
                    matches!(**right, Filter::Or(..) | Filter::And(..)),
                )
            }
            Filter::Or(left, right) => {
                write!(f, "{left} or ")?;
                write_operand(f, right, matches!(**right, Filter::Or(..)))
            }
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath { attr, filter, then } => {
                write!(f, "{attr}[{filter}]")?;
                match then {
                    Some(then) => write!(f, ".{} {}", then.sub_attr, then.test),
                    None => Ok(()),
                }
            }
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, operand: &Filter, parenthesise: bool) -> fmt::Result {
    if parenthesise {
        write!(f, "({operand})")
    } else {
        write!(f, "{operand}")
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{schema}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub_attr) = &self.sub_attr {
            write!(f, ".{sub_attr}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Test::Compare(op, value) => write!(f, "{op} {value}"),
            Test::Present => f.write_str("pr"),
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(text) => write_json_string(f, text),
            Value::Number(number) => write!(f, "{number}"),
            Value::Bool(flag) => write!(f, "{flag}"),
            Value::Null => f.write_str("null"),
        }
    }
}

fn write_json_string(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c < ' ' => write!(f, "\\u{:04x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

// ---------------------------------------------------------------------------------------------
// Allow-lists

const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// What a resource type lets clients filter on, and where each attribute lives in SQL.
pub struct AttributeMap {
    attributes: &'static [Attribute],
}

struct Attribute {
    /// The schema URN the attribute belongs to; a client may prefix the name with it.
    schema: &'static str,
    name: &'static str,
    sub_attr: Option<&'static str>,
    target: Target,
}

enum Target {
    Column(Column),
    MultiValued(MultiValued),
}

/// A SQL expression with one value per row.
struct Column {
    sql: &'static str,
    kind: Kind,
    /// A unique index guarantees that at most one row holds a given value, compared the way
    /// this column compares (`lower()` for case-insensitive text).
    unique: bool,
}

#[derive(Clone, Copy)]
enum Kind {
    Uuid,
    Text {
        case_exact: bool,
    },
    Bool,
    /// A JSON boolean read as text (`e->>'primary'`): compared as text so a stored `"True"`
    /// string matches too, and no cast can fail.
    JsonBool,
    Timestamp,
}

/// A multi-valued complex attribute: a sub-query yields one row per value.
struct MultiValued {
    /// True when the attribute has at least one value. `{s}` stands for the tenant's schema.
    present_sql: &'static str,
    /// The sub-query's `from` list; `{s}` stands for the tenant's schema.
    from: &'static str,
    /// Ties the sub-query's rows to the outer row, when `from` does not already.
    correlation: Option<&'static str>,
    sub_attrs: &'static [SubAttr],
    /// Columns that hold the `value` of the value with a given `type`: the index behind
    /// Entra's match query `emails[type eq "work"].value eq "x"`.
    typed_values: &'static [TypedValue],
}

struct SubAttr {
    name: &'static str,
    column: Column,
}

struct TypedValue {
    type_value: &'static str,
    column: Column,
}

const CI_TEXT: Kind = Kind::Text { case_exact: false };
const EXACT_TEXT: Kind = Kind::Text { case_exact: true };

const fn column(
    schema: &'static str,
    name: &'static str,
    sub_attr: Option<&'static str>,
    sql: &'static str,
    kind: Kind,
) -> Attribute {
    Attribute {
        schema,
        name,
        sub_attr,
        target: Target::Column(Column {
            sql,
            kind,
            unique: false,
        }),
    }
}

/// A column behind a unique index.
const fn unique_column(
    schema: &'static str,
    name: &'static str,
    sql: &'static str,
    kind: Kind,
) -> Attribute {
    Attribute {
        schema,
        name,
        sub_attr: None,
        target: Target::Column(Column {
            sql,
            kind,
            unique: true,
        }),
    }
}

/// The `users` table.
pub const USERS: AttributeMap = AttributeMap {
    attributes: &[
        unique_column(USER_URN, "id", "id", Kind::Uuid),
        unique_column(USER_URN, "userName", "user_name", CI_TEXT),
        column(USER_URN, "externalId", None, "external_id", EXACT_TEXT),
        column(USER_URN, "displayName", None, "display_name", CI_TEXT),
        column(USER_URN, "name", Some("givenName"), "given_name", CI_TEXT),
        column(USER_URN, "name", Some("familyName"), "family_name", CI_TEXT),
        column(
            USER_URN,
            "name",
            Some("formatted"),
            "formatted_name",
            CI_TEXT,
        ),
        column(USER_URN, "active", None, "active", Kind::Bool),
        column(
            USER_URN,
            "meta",
            Some("created"),
            "created_at",
            Kind::Timestamp,
        ),
        column(
            USER_URN,
            "meta",
            Some("lastModified"),
            "updated_at",
            Kind::Timestamp,
        ),
        Attribute {
            schema: USER_URN,
            name: "emails",
            sub_attr: None,
            target: Target::MultiValued(MultiValued {
                present_sql: "jsonb_array_length(emails) > 0",
                from: "jsonb_array_elements(emails) e",
                correlation: None,
                sub_attrs: &[
                    SubAttr {
                        name: "value",
                        column: Column {
                            sql: "e->>'value'",
                            kind: CI_TEXT,
                            unique: false,
                        },
                    },
                    SubAttr {
                        name: "type",
                        column: Column {
                            sql: "e->>'type'",
                            kind: CI_TEXT,
                            unique: false,
                        },
                    },
                    SubAttr {
                        name: "primary",
                        column: Column {
                            sql: "e->>'primary'",
                            kind: Kind::JsonBool,
                            unique: false,
                        },
                    },
                ],
                typed_values: &[TypedValue {
                    type_value: "work",
                    column: Column {
                        sql: "work_email",
                        kind: CI_TEXT,
                        unique: true,
                    },
                }],
            }),
        },
    ],
};

/// The `groups` table.
pub const GROUPS: AttributeMap = AttributeMap {
    attributes: &[
        unique_column(GROUP_URN, "id", "id", Kind::Uuid),
        unique_column(GROUP_URN, "externalId", "external_id", EXACT_TEXT),
        column(GROUP_URN, "displayName", None, "display_name", CI_TEXT),
        Attribute {
            schema: GROUP_URN,
            name: "members",
            sub_attr: None,
            target: Target::MultiValued(MultiValued {
                present_sql:
                    "exists (select 1 from {s}.memberships m where m.group_id = groups.id)",
                from: "{s}.memberships m",
                correlation: Some("m.group_id = groups.id"),
                sub_attrs: &[SubAttr {
                    name: "value",
                    column: Column {
                        sql: "m.user_id",
                        kind: Kind::Uuid,
                        unique: false,
                    },
                }],
                typed_values: &[],
            }),
        },
    ],
};

impl AttributeMap {
    fn find(&self, path: &AttrPath) -> Result<&'static Attribute, FilterError> {
        self.attributes
            .iter()
            .find(|attribute| attribute.matches(path))
            .ok_or_else(|| FilterError::UnsupportedAttribute {
                attribute: path.to_string(),
            })
    }
}

impl Attribute {
    /// A multi-valued attribute matches whatever its path's sub-attribute: the caller
    /// resolves that against its sub-attributes.
    fn matches(&self, path: &AttrPath) -> bool {
        let schema_ok = path
            .schema
            .as_deref()
            .is_none_or(|schema| schema.eq_ignore_ascii_case(self.schema));
        let sub_attr_ok = match (&self.target, self.sub_attr, path.sub_attr.as_deref()) {
            (Target::MultiValued(_), _, _) => true,
            (Target::Column(_), None, None) => true,
            (Target::Column(_), Some(expected), Some(given)) => {
                expected.eq_ignore_ascii_case(given)
            }
            (Target::Column(_), _, _) => false,
        };
        schema_ok && sub_attr_ok && path.name.eq_ignore_ascii_case(self.name)
    }
}

impl MultiValued {
    fn sub_attr(&self, name: &str) -> Option<&Column> {
        self.sub_attrs
            .iter()
            .find(|sub_attr| sub_attr.name.eq_ignore_ascii_case(name))
            .map(|sub_attr| &sub_attr.column)
    }

    /// `exists` one value for which `condition` holds.
    fn any(&self, condition: &str, schema: &SchemaName) -> String {
        let from = in_schema(self.from, schema);
        match self.correlation {
            Some(correlation) => {
                format!("exists (select 1 from {from} where {correlation} and {condition})")
            }
            None => format!("exists (select 1 from {from} where {condition})"),
        }
    }

    /// The `typed_values` column answering `attr[type eq "t"].value eq "x"`, if there is one.
    fn typed_value_column(&self, filter: &Filter, then: &SubAttrTest) -> Option<&Column> {
        let Filter::Attr {
            path,
            test: Test::Compare(CompareOp::Eq, Value::String(wanted)),
        } = filter
        else {
            return None;
        };
        let is_type = path.schema.is_none()
            && path.sub_attr.is_none()
            && path.name.eq_ignore_ascii_case("type");
        let is_value_eq = then.sub_attr.eq_ignore_ascii_case("value")
            && matches!(then.test, Test::Compare(CompareOp::Eq, Value::String(_)));
        if !(is_type && is_value_eq) {
            return None;
        }
        self.typed_values
            .iter()
            .find(|typed| typed.type_value.eq_ignore_ascii_case(wanted))
            .map(|typed| &typed.column)
    }
}

// ---------------------------------------------------------------------------------------------
// SQL

/// A value bound to a placeholder of [`SqlFilter::sql`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Uuid(Uuid),
    Bool(bool),
    Timestamp(DateTime<Utc>),
}

/// A boolean SQL expression over the resource's table (`users` or `groups`, unaliased), and
/// the values for its placeholders, in order. Compound expressions are parenthesised, so the
/// caller may `and` it with its own conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    pub sql: String,
    pub binds: Vec<SqlValue>,
    /// The filter requires equality on a unique column (`userName eq`, `id eq`, Entra's
    /// `emails[type eq "work"].value eq`), so at most one row can match: a listing needs no
    /// count, sort or offset.
    pub at_most_one: bool,
}

/// Translates a filter over `map` in the tenant's `schema`; placeholders are numbered
/// `$first_param`, `$first_param + 1`, … (so `first_param` is at least 1).
pub fn to_sql(
    filter: &Filter,
    map: &AttributeMap,
    schema: &SchemaName,
    first_param: usize,
) -> Result<SqlFilter, FilterError> {
    let mut translator = Translator {
        map,
        schema,
        first_param,
        binds: Vec::new(),
    };
    let sql = translator.filter(filter, SqlScope::Resource)?;
    Ok(SqlFilter {
        sql,
        binds: translator.binds,
        at_most_one: at_most_one(filter, map),
    })
}

/// Whether `filter` can match at most one row: an `eq` on a unique column, alone or `and`ed
/// with anything else.
fn at_most_one(filter: &Filter, map: &AttributeMap) -> bool {
    let is_unique = |column: &Column, test: &Test| {
        column.unique
            && matches!(test, Test::Compare(CompareOp::Eq, value) if *value != Value::Null)
    };
    match filter {
        Filter::Attr { path, test } => match map.find(path).map(|a| &a.target) {
            Ok(Target::Column(column)) => is_unique(column, test),
            _ => false,
        },
        Filter::ValuePath {
            attr,
            filter,
            then: Some(then),
        } => multi_valued(map, attr)
            .ok()
            .and_then(|values| values.typed_value_column(filter, then))
            .is_some_and(|column| is_unique(column, &then.test)),
        Filter::And(left, right) => at_most_one(left, map) || at_most_one(right, map),
        Filter::Or(..) | Filter::Not(_) | Filter::ValuePath { then: None, .. } => false,
    }
}

/// What attribute paths name: the resource's attributes, or the sub-attributes of the values
/// inside `attr[…]`.
#[derive(Clone, Copy)]
enum SqlScope<'f> {
    Resource,
    Values {
        attr: &'f AttrPath,
        values: &'static MultiValued,
    },
}

/// Names a tenant table of an allow-listed SQL fragment through the tenant's schema.
fn in_schema(sql: &str, schema: &SchemaName) -> String {
    sql.replace("{s}", schema.as_str())
}

struct Translator<'m> {
    map: &'m AttributeMap,
    schema: &'m SchemaName,
    first_param: usize,
    binds: Vec<SqlValue>,
}

impl Translator<'_> {
    fn bind(&mut self, value: SqlValue) -> String {
        let placeholder = format!("${}", self.first_param + self.binds.len());
        self.binds.push(value);
        placeholder
    }

    fn filter(&mut self, filter: &Filter, scope: SqlScope<'_>) -> Result<String, FilterError> {
        match filter {
            Filter::Attr { path, test } => match scope {
                SqlScope::Resource => self.resource_attr(path, test),
                SqlScope::Values { attr, values } => {
                    let (column, name) = value_sub_attr(attr, values, path)?;
                    self.test(column, test, &name)
                }
            },
            Filter::And(left, right) => {
                let left = self.filter(left, scope)?;
                Ok(format!("({left} and {})", self.filter(right, scope)?))
            }
            Filter::Or(left, right) => {
                let left = self.filter(left, scope)?;
                Ok(format!("({left} or {})", self.filter(right, scope)?))
            }
            // An absent attribute makes a comparison NULL; `not` must still read it as false.
            Filter::Not(inner) => Ok(format!(
                "not coalesce({}, false)",
                self.filter(inner, scope)?
            )),
            Filter::ValuePath { attr, filter, then } => match scope {
                SqlScope::Resource => self.value_path(attr, filter, then.as_ref()),
                SqlScope::Values { attr: outer, .. } => Err(FilterError::UnsupportedAttribute {
                    attribute: format!("{outer}.{attr}"),
                }),
            },
        }
    }

    fn resource_attr(&mut self, path: &AttrPath, test: &Test) -> Result<String, FilterError> {
        let name = path.to_string();
        match &self.map.find(path)?.target {
            Target::Column(column) => self.test(column, test, &name),
            Target::MultiValued(values) => match (path.sub_attr.as_deref(), test) {
                (None, Test::Present) => Ok(in_schema(values.present_sql, self.schema)),
                // `emails eq "x"` compares the values' `value` sub-attribute.
                (sub_attr, _) => {
                    let column = values.sub_attr(sub_attr.unwrap_or("value")).ok_or(
                        FilterError::UnsupportedAttribute {
                            attribute: name.clone(),
                        },
                    )?;
                    let condition = self.test(column, test, &name)?;
                    Ok(values.any(&condition, self.schema))
                }
            },
        }
    }

    fn value_path(
        &mut self,
        attr: &AttrPath,
        filter: &Filter,
        then: Option<&SubAttrTest>,
    ) -> Result<String, FilterError> {
        let values = multi_valued(self.map, attr)?;
        if let Some(then) = then {
            if let Some(column) = values.typed_value_column(filter, then) {
                return self.test(column, &then.test, &format!("{attr}.{}", then.sub_attr));
            }
        }

        let scope = SqlScope::Values { attr, values };
        let mut condition = self.filter(filter, scope)?;
        if let Some(then) = then {
            let sub_path = AttrPath {
                schema: None,
                name: then.sub_attr.clone(),
                sub_attr: None,
            };
            let (column, name) = value_sub_attr(attr, values, &sub_path)?;
            condition = format!(
                "({condition} and {})",
                self.test(column, &then.test, &name)?
            );
        }
        Ok(values.any(&condition, self.schema))
    }

    /// One test on one SQL expression; `attribute` names it in errors.
    fn test(
        &mut self,
        column: &Column,
        test: &Test,
        attribute: &str,
    ) -> Result<String, FilterError> {
        let sql = column.sql;
        let (op, value) = match test {
            Test::Present => return Ok(present(column)),
            Test::Compare(op, Value::Null) => return null_comparison(sql, *op, attribute),
            Test::Compare(op, value) => (*op, value),
        };
        match column.kind {
            Kind::Uuid => self.uuid_comparison(sql, op, value, attribute),
            Kind::Text { case_exact } => {
                self.text_comparison(sql, case_exact, op, value, attribute)
            }
            Kind::Bool => {
                let flag = boolean(value, attribute)?;
                self.equality(sql.to_owned(), op, SqlValue::Bool(flag), attribute)
            }
            Kind::JsonBool => {
                let flag = boolean(value, attribute)?;
                let text = SqlValue::Text(flag.to_string());
                self.equality(format!("lower({sql})"), op, text, attribute)
            }
            Kind::Timestamp => self.timestamp_comparison(sql, op, value, attribute),
        }
    }

    /// `eq` and `ne`, the only operators a boolean takes.
    fn equality(
        &mut self,
        lhs: String,
        op: CompareOp,
        value: SqlValue,
        attribute: &str,
    ) -> Result<String, FilterError> {
        match op {
            CompareOp::Eq | CompareOp::Ne => Ok(format!(
                "{lhs} {} {}",
                comparison_sql(op, attribute)?,
                self.bind(value)
            )),
            _ => Err(unsupported_operator(attribute, op)),
        }
    }

    /// A value that is no UUID cannot be an id: `eq` matches nothing, `ne` everything. Entra
    /// probes with random GUIDs and other strings; the answer must be empty, never an error.
    fn uuid_comparison(
        &mut self,
        sql: &str,
        op: CompareOp,
        value: &Value,
        attribute: &str,
    ) -> Result<String, FilterError> {
        let id = match value {
            Value::String(text) => Uuid::parse_str(text).ok(),
            _ => None,
        };
        match (op, id) {
            (CompareOp::Eq | CompareOp::Ne, Some(id)) => {
                self.equality(sql.to_owned(), op, SqlValue::Uuid(id), attribute)
            }
            (CompareOp::Eq, None) => Ok("false".to_owned()),
            (CompareOp::Ne, None) => Ok(format!("{sql} is not null")),
            _ => Err(unsupported_operator(attribute, op)),
        }
    }

    fn text_comparison(
        &mut self,
        sql: &str,
        case_exact: bool,
        op: CompareOp,
        value: &Value,
        attribute: &str,
    ) -> Result<String, FilterError> {
        let Value::String(text) = value else {
            return Err(value_type(attribute, "a string"));
        };
        let like_pattern = match op {
            CompareOp::Co => Some(format!("%{}%", escape_like(text))),
            CompareOp::Sw => Some(format!("{}%", escape_like(text))),
            CompareOp::Ew => Some(format!("%{}", escape_like(text))),
            _ => None,
        };
        let (operator, escape, bound) = match like_pattern {
            Some(pattern) => ("like", " escape '\\'", pattern),
            None => (comparison_sql(op, attribute)?, "", text.clone()),
        };
        let placeholder = self.bind(SqlValue::Text(bound));
        let (lhs, rhs) = if case_exact {
            (sql.to_owned(), placeholder)
        } else {
            (format!("lower({sql})"), format!("lower({placeholder})"))
        };
        Ok(format!("{lhs} {operator} {rhs}{escape}"))
    }

    fn timestamp_comparison(
        &mut self,
        sql: &str,
        op: CompareOp,
        value: &Value,
        attribute: &str,
    ) -> Result<String, FilterError> {
        let operator = comparison_sql(op, attribute)?;
        let at = match value {
            Value::String(text) => DateTime::parse_from_rfc3339(text).ok(),
            _ => None,
        }
        .ok_or_else(|| value_type(attribute, "an RFC 3339 timestamp string"))?;
        let placeholder = self.bind(SqlValue::Timestamp(at.with_timezone(&Utc)));
        Ok(format!("{sql} {operator} {placeholder}"))
    }
}

/// Resolves `attr` of `attr[…]`: it must be a multi-valued attribute, without sub-attribute.
fn multi_valued(map: &AttributeMap, attr: &AttrPath) -> Result<&'static MultiValued, FilterError> {
    match &map.find(attr)?.target {
        Target::MultiValued(values) if attr.sub_attr.is_none() => Ok(values),
        _ => Err(FilterError::NotMultiValued {
            attribute: attr.to_string(),
        }),
    }
}

/// Resolves a path inside `attr[…]` to a sub-attribute, and its name for errors.
fn value_sub_attr<'v>(
    attr: &AttrPath,
    values: &'v MultiValued,
    path: &AttrPath,
) -> Result<(&'v Column, String), FilterError> {
    let name = format!("{attr}.{path}");
    let column = match (&path.schema, &path.sub_attr) {
        (None, None) => values.sub_attr(&path.name),
        _ => None,
    };
    match column {
        Some(column) => Ok((column, name)),
        None => Err(FilterError::UnsupportedAttribute { attribute: name }),
    }
}

fn present(column: &Column) -> String {
    let sql = column.sql;
    match column.kind {
        Kind::Text { .. } | Kind::JsonBool => format!("coalesce({sql}, '') <> ''"),
        Kind::Uuid | Kind::Bool | Kind::Timestamp => format!("{sql} is not null"),
    }
}

fn null_comparison(sql: &str, op: CompareOp, attribute: &str) -> Result<String, FilterError> {
    match op {
        CompareOp::Eq => Ok(format!("{sql} is null")),
        CompareOp::Ne => Ok(format!("{sql} is not null")),
        _ => Err(value_type(attribute, "a value other than null")),
    }
}

/// The SQL operator for `eq`, `ne` (null-safe) and the orderings; the substring operators
/// have none.
fn comparison_sql(op: CompareOp, attribute: &str) -> Result<&'static str, FilterError> {
    match op {
        CompareOp::Eq => Ok("="),
        CompareOp::Ne => Ok("is distinct from"),
        CompareOp::Gt => Ok(">"),
        CompareOp::Ge => Ok(">="),
        CompareOp::Lt => Ok("<"),
        CompareOp::Le => Ok("<="),
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => Err(unsupported_operator(attribute, op)),
    }
}

/// A boolean as JSON or as Entra's `"True"`/`"False"` strings (any case).
fn boolean(value: &Value, attribute: &str) -> Result<bool, FilterError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(value_type(attribute, "true or false")),
    }
}

/// Makes `%`, `_` and `\` match themselves in a `like … escape '\'` pattern.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn unsupported_operator(attribute: &str, operator: CompareOp) -> FilterError {
    FilterError::UnsupportedOperator {
        attribute: attribute.to_owned(),
        operator,
    }
}

fn value_type(attribute: &str, expected: &'static str) -> FilterError {
    FilterError::ValueType {
        attribute: attribute.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ENTERPRISE_URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn schema() -> SchemaName {
        SchemaName::parse("t_0123456789abcdef0123456789abcdef").expect("a schema name")
    }

    fn users(filter: &str) -> Result<SqlFilter, FilterError> {
        to_sql(&parse(filter)?, &USERS, &schema(), 1)
    }

    fn groups(filter: &str) -> Result<SqlFilter, FilterError> {
        to_sql(&parse(filter)?, &GROUPS, &schema(), 1)
    }

    /// The SQL and binds for a filter over `users` that must translate.
    fn user_sql(filter: &str) -> (String, Vec<SqlValue>) {
        let translated = users(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        (translated.sql, translated.binds)
    }

    fn text(value: &str) -> SqlValue {
        SqlValue::Text(value.to_owned())
    }

    fn path(name: &str) -> AttrPath {
        AttrPath {
            schema: None,
            name: name.to_owned(),
            sub_attr: None,
        }
    }

    fn present(name: &str) -> Filter {
        Filter::Attr {
            path: path(name),
            test: Test::Present,
        }
    }

    fn eq(name: &str, value: &str) -> Filter {
        Filter::Attr {
            path: path(name),
            test: Test::Compare(CompareOp::Eq, Value::String(value.to_owned())),
        }
    }

    fn and(left: Filter, right: Filter) -> Filter {
        Filter::And(Box::new(left), Box::new(right))
    }

    fn or(left: Filter, right: Filter) -> Filter {
        Filter::Or(Box::new(left), Box::new(right))
    }

    fn nested_parens(depth: usize) -> String {
        format!("{}userName pr{}", "(".repeat(depth), ")".repeat(depth))
    }

    // ---- parsing ------------------------------------------------------------------------

    #[test]
    fn every_operator_parses() {
        let ops = [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ];
        for (word, op) in ops {
            let expected = Filter::Attr {
                path: path("userName"),
                test: Test::Compare(op, Value::String("x".to_owned())),
            };
            assert_eq!(parse(&format!("userName {word} \"x\"")), Ok(expected));
        }
        assert_eq!(parse("userName pr"), Ok(present("userName")));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            parse("a pr or b pr and c pr"),
            Ok(or(present("a"), and(present("b"), present("c"))))
        );
        assert_eq!(
            parse("a pr and b pr or c pr"),
            Ok(or(and(present("a"), present("b")), present("c")))
        );
    }

    #[test]
    fn chains_associate_to_the_left() {
        assert_eq!(
            parse("a pr and b pr and c pr"),
            Ok(and(and(present("a"), present("b")), present("c")))
        );
        assert_eq!(
            parse("a pr or b pr or c pr"),
            Ok(or(or(present("a"), present("b")), present("c")))
        );
    }

    #[test]
    fn parentheses_group() {
        assert_eq!(
            parse("(a pr or b pr) and c pr"),
            Ok(and(or(present("a"), present("b")), present("c")))
        );
        assert_eq!(
            parse("a pr and (b pr and c pr)"),
            Ok(and(present("a"), and(present("b"), present("c"))))
        );
        assert_eq!(parse("((a pr))"), Ok(present("a")));
        assert_eq!(
            parse("(a pr)and(b pr)"),
            Ok(and(present("a"), present("b")))
        );
    }

    #[test]
    fn not_takes_a_parenthesised_filter() {
        let expected = Filter::Not(Box::new(or(eq("a", "x"), present("b"))));
        assert_eq!(parse(r#"not (a eq "x" or b pr)"#), Ok(expected.clone()));
        assert_eq!(parse(r#"NOT(a eq "x" or b pr)"#), Ok(expected));
        assert_eq!(
            parse(r#"not userName eq "x""#),
            Err(FilterError::Syntax {
                expected: "an operator",
                position: 4
            })
        );
        // Without "(" after it, `not` is an attribute name.
        assert_eq!(parse("not pr"), Ok(present("not")));
    }

    #[test]
    fn names_operators_and_keywords_are_case_insensitive_and_kept_as_sent() {
        let parsed = parse(r#"USERNAME EQ "x" AND (Active Eq TRUE OR NOT (title PR))"#);
        let expected = and(
            eq("USERNAME", "x"),
            or(
                Filter::Attr {
                    path: path("Active"),
                    test: Test::Compare(CompareOp::Eq, Value::Bool(true)),
                },
                Filter::Not(Box::new(present("title"))),
            ),
        );
        assert_eq!(parsed, Ok(expected));
    }

    #[test]
    fn attribute_paths_take_urn_prefixes_and_sub_attributes() {
        let parsed = parse("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName pr");
        let expected = Filter::Attr {
            path: AttrPath {
                schema: Some(USER_URN.to_owned()),
                name: "name".to_owned(),
                sub_attr: Some("givenName".to_owned()),
            },
            test: Test::Present,
        };
        assert_eq!(parsed, Ok(expected));

        let Ok(Filter::Attr { path, .. }) = parse(&format!("{ENTERPRISE_URN}:employeeNumber pr"))
        else {
            panic!("an extension attribute path parses");
        };
        assert_eq!(path.schema.as_deref(), Some(ENTERPRISE_URN));
        assert_eq!(path.name, "employeeNumber");
        assert_eq!(path.sub_attr, None);
    }

    #[test]
    fn string_escapes_are_decoded() {
        let parsed = parse(r#"userName eq "q\"b\\s\/\u00e9\ud83d\ude00\n\t end""#);
        assert_eq!(parsed, Ok(eq("userName", "q\"b\\s/é😀\n\t end")));
        assert_eq!(
            parse(r#"userName eq "a\u0000b""#),
            Err(FilterError::InvalidString { position: 12 })
        );
        assert_eq!(
            parse("displayName eq \"Zoë 山田 (x) [y] and or\""),
            Ok(eq("displayName", "Zoë 山田 (x) [y] and or"))
        );
    }

    #[test]
    fn literals_parse() {
        let value_of = |filter: &str| match parse(filter) {
            Ok(Filter::Attr {
                test: Test::Compare(_, value),
                ..
            }) => value,
            other => panic!("{filter}: {other:?}"),
        };
        assert_eq!(value_of("x eq 42"), Value::Number(42.into()));
        assert_eq!(value_of("x eq -7"), Value::Number((-7).into()));
        assert_eq!(
            value_of("x eq -1.5e3"),
            Value::Number(serde_json::Number::from_f64(-1500.0).expect("finite"))
        );
        assert_eq!(value_of("x eq true"), Value::Bool(true));
        assert_eq!(value_of("x eq False"), Value::Bool(false));
        assert_eq!(value_of("x eq NULL"), Value::Null);
        assert_eq!(value_of("x eq \"\""), Value::String(String::new()));
    }

    #[test]
    fn value_paths_parse() {
        let expected = Filter::ValuePath {
            attr: path("emails"),
            filter: Box::new(and(
                eq("type", "work"),
                Filter::Attr {
                    path: path("primary"),
                    test: Test::Compare(CompareOp::Eq, Value::Bool(true)),
                },
            )),
            then: None,
        };
        assert_eq!(
            parse(r#"emails[type eq "work" and primary eq true]"#),
            Ok(expected)
        );

        let expected = Filter::ValuePath {
            attr: path("emails"),
            filter: Box::new(eq("type", "work")),
            then: Some(SubAttrTest {
                sub_attr: "value".to_owned(),
                test: Test::Compare(CompareOp::Eq, Value::String("a@b.c".to_owned())),
            }),
        };
        assert_eq!(
            parse(r#"emails[type eq "work"].value eq "a@b.c""#),
            Ok(expected.clone())
        );
        // The legacy form from old Microsoft documentation means the same.
        assert_eq!(parse(r#"emails[type eq "work"] eq "a@b.c""#), Ok(expected));
    }

    #[test]
    fn value_paths_do_not_nest() {
        assert_eq!(
            parse(r#"emails[x[type eq "a"]]"#),
            Err(FilterError::NestedValuePath { position: 7 })
        );
    }

    #[test]
    fn length_and_depth_are_limited() {
        let long = format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN));
        assert_eq!(parse(&long), Err(FilterError::TooLong { len: long.len() }));
        let exactly = format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN - 14));
        assert_eq!(exactly.len(), MAX_FILTER_LEN);
        assert!(parse(&exactly).is_ok());

        assert_eq!(parse(&nested_parens(MAX_DEPTH)), Ok(present("userName")));
        assert_eq!(
            parse(&nested_parens(MAX_DEPTH + 1)),
            Err(FilterError::TooDeep {
                position: MAX_DEPTH
            })
        );
        let nots = format!(
            "{}a pr{}",
            "not (".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(parse(&nots), Err(FilterError::TooDeep { .. })));
        let bracketed = format!(
            "emails[{}type pr{}]",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(matches!(
            parse(&bracketed),
            Err(FilterError::TooDeep { .. })
        ));
    }

    #[test]
    fn hostile_input_is_refused_without_panicking() {
        assert!(matches!(
            parse(&"(".repeat(100_000)),
            Err(FilterError::TooLong { .. })
        ));
        assert!(matches!(
            parse(&"(".repeat(MAX_FILTER_LEN)),
            Err(FilterError::TooDeep { .. })
        ));
        let not_chain = "not (".repeat(MAX_FILTER_LEN / 5);
        assert!(matches!(
            parse(&not_chain),
            Err(FilterError::TooDeep { .. })
        ));
        let brackets = "a[".repeat(MAX_FILTER_LEN / 2);
        assert!(parse(&brackets).is_err());

        // Long flat chains are no nesting: they parse and translate.
        let chain = vec!["userName pr"; 120].join(" or ");
        assert!(users(&chain).is_ok());
    }

    #[test]
    fn malformed_filters_are_errors() {
        let cases = [
            "",
            "   ",
            "(",
            ")",
            "[",
            "]",
            "userName",
            "userName eq",
            "userName eq \"x",
            "userName eq \"x\\\"",
            "eq \"x\"",
            "\"x\" eq userName",
            "userName eq \"x\" and",
            "userName eq \"x\" userName",
            "userName zz \"x\"",
            "userName eq unquoted",
            "userName eq 1e999",
            "userName eq \"\\q\"",
            "userName eq \"\u{1}\"",
            "userName pr \"x\"",
            "user name eq \"x\"",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]]",
            "emails[]",
            "emails[type eq \"work\"].",
            "emails[type eq \"work\"].value",
            "emails[type eq \"work\"].a.b eq \"x\"",
            "not (",
            "not ()",
            "a pr or",
            "a pr and and b pr",
            ".value eq \"x\"",
            "a..b pr",
            "1abc pr",
            ":userName pr",
            "urn:x:name.a.b pr",
            "é eq \"x\"",
            "userNäme eq \"x\"",
            "userName\u{a0}eq \"x\"",
            "userName eq \"x\" ) (",
        ];
        for case in cases {
            assert!(parse(case).is_err(), "{case:?} should not parse");
        }
    }

    #[test]
    fn display_is_canonical() {
        let cases = [
            (r#"UserName  EQ   "x""#, r#"UserName eq "x""#),
            ("a pr and (b pr and c pr)", "a pr and (b pr and c pr)"),
            ("(a pr and b pr) and c pr", "a pr and b pr and c pr"),
            ("(a pr or b pr) and c pr", "(a pr or b pr) and c pr"),
            ("a pr or (b pr and c pr)", "a pr or b pr and c pr"),
            ("a pr or (b pr or c pr)", "a pr or (b pr or c pr)"),
            ("NOT((a pr))", "not (a pr)"),
            (r#"x eq "q\"\\\u0001é""#, r#"x eq "q\"\\\u0001é""#),
            ("x eq 1.50", "x eq 1.5"),
            ("x eq TRUE", "x eq true"),
            (
                r#"emails[type eq "work"] eq "x""#,
                r#"emails[type eq "work"].value eq "x""#,
            ),
            (
                r#"Emails[Type eq "work"].Value PR"#,
                r#"Emails[Type eq "work"].Value pr"#,
            ),
            ("urn:a:b:Name.given PR", "urn:a:b:Name.given pr"),
        ];
        for (input, printed) in cases {
            let parsed = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed.to_string(), printed);
            assert_eq!(parse(printed), Ok(parsed));
        }
    }

    // ---- SQL ----------------------------------------------------------------------------

    #[test]
    fn each_operator_on_a_case_insensitive_attribute() {
        let cases = [
            ("eq", "lower(user_name) = lower($1)", "x"),
            ("ne", "lower(user_name) is distinct from lower($1)", "x"),
            ("co", r"lower(user_name) like lower($1) escape '\'", "%x%"),
            ("sw", r"lower(user_name) like lower($1) escape '\'", "x%"),
            ("ew", r"lower(user_name) like lower($1) escape '\'", "%x"),
            ("gt", "lower(user_name) > lower($1)", "x"),
            ("ge", "lower(user_name) >= lower($1)", "x"),
            ("lt", "lower(user_name) < lower($1)", "x"),
            ("le", "lower(user_name) <= lower($1)", "x"),
        ];
        for (op, sql, bound) in cases {
            let filter = format!("userName {op} \"x\"");
            assert_eq!(
                user_sql(&filter),
                (sql.to_owned(), vec![text(bound)]),
                "{op}"
            );
        }
        assert_eq!(
            user_sql("userName pr"),
            ("coalesce(user_name, '') <> ''".to_owned(), vec![])
        );
    }

    #[test]
    fn case_exact_attributes_compare_without_lower() {
        assert_eq!(
            user_sql(r#"externalId eq "AbC""#),
            ("external_id = $1".to_owned(), vec![text("AbC")])
        );
        assert_eq!(
            user_sql(r#"externalId sw "Ab""#),
            (
                r"external_id like $1 escape '\'".to_owned(),
                vec![text("Ab%")]
            )
        );
    }

    #[test]
    fn like_metacharacters_in_values_are_escaped() {
        let (_, binds) = user_sql(r#"displayName co "50%_a\\b""#);
        assert_eq!(binds, vec![text(r"%50\%\_a\\b%")]);
    }

    #[test]
    fn text_sub_attributes_of_name_map_to_columns() {
        let cases = [
            ("displayName", "display_name"),
            ("name.givenName", "given_name"),
            ("name.familyName", "family_name"),
            ("NAME.FAMILYNAME", "family_name"),
            ("name.formatted", "formatted_name"),
        ];
        for (attribute, column) in cases {
            let (sql, _) = user_sql(&format!("{attribute} eq \"x\""));
            assert_eq!(sql, format!("lower({column}) = lower($1)"));
        }
    }

    #[test]
    fn null_means_absent() {
        assert_eq!(user_sql("displayName eq null").0, "display_name is null");
        assert_eq!(
            user_sql("displayName ne null").0,
            "display_name is not null"
        );
        assert_eq!(user_sql("meta.created eq null").0, "created_at is null");
        assert!(matches!(
            users("displayName gt null"),
            Err(FilterError::ValueType { .. })
        ));
    }

    #[test]
    fn logical_operators_are_fully_parenthesised() {
        let (sql, binds) = user_sql(r#"userName eq "a" or displayName eq "b" and active eq true"#);
        let expected = "(lower(user_name) = lower($1) or \
                        (lower(display_name) = lower($2) and active = $3))";
        assert_eq!(sql, expected);
        assert_eq!(binds, vec![text("a"), text("b"), SqlValue::Bool(true)]);
    }

    #[test]
    fn not_treats_an_absent_attribute_as_not_matching() {
        assert_eq!(
            user_sql(r#"not (displayName eq "x")"#).0,
            "not coalesce(lower(display_name) = lower($1), false)"
        );
        assert_eq!(
            user_sql(r#"not (userName eq "x" or externalId pr)"#).0,
            "not coalesce((lower(user_name) = lower($1) or coalesce(external_id, '') <> ''), false)"
        );
    }

    #[test]
    fn placeholders_start_at_first_param() {
        let filter = parse(r#"userName eq "a" and externalId eq "b""#).expect("valid");
        let translated = to_sql(&filter, &USERS, &schema(), 3).expect("supported");
        assert_eq!(
            translated.sql,
            "(lower(user_name) = lower($3) and external_id = $4)"
        );
    }

    #[test]
    fn ids_that_are_not_uuids_match_nothing() {
        let id = "54d382a4-2050-4c03-94d1-e769f1d15682";
        let uuid = Uuid::parse_str(id).expect("valid uuid");
        assert_eq!(
            user_sql(&format!("id eq \"{id}\"")),
            ("id = $1".to_owned(), vec![SqlValue::Uuid(uuid)])
        );
        let upper = id.to_uppercase();
        assert_eq!(
            user_sql(&format!("ID eq \"{upper}\"")).1,
            vec![SqlValue::Uuid(uuid)]
        );
        assert_eq!(
            user_sql(&format!("id ne \"{id}\"")).0,
            "id is distinct from $1"
        );

        assert_eq!(
            user_sql(r#"id eq "2441309d85324e7793ae""#),
            ("false".to_owned(), vec![])
        );
        assert_eq!(user_sql("id eq 42"), ("false".to_owned(), vec![]));
        assert_eq!(
            user_sql(r#"id ne "nope""#),
            ("id is not null".to_owned(), vec![])
        );
        assert_eq!(user_sql("id pr").0, "id is not null");
        for op in ["co", "sw", "ew", "gt", "ge", "lt", "le"] {
            let result = users(&format!("id {op} \"{id}\""));
            assert!(
                matches!(result, Err(FilterError::UnsupportedOperator { .. })),
                "{op}"
            );
        }
    }

    #[test]
    fn active_takes_booleans_and_entras_strings() {
        for (value, expected) in [
            ("true", true),
            ("\"True\"", true),
            ("\"FALSE\"", false),
            ("false", false),
        ] {
            assert_eq!(
                user_sql(&format!("active eq {value}")),
                ("active = $1".to_owned(), vec![SqlValue::Bool(expected)])
            );
        }
        assert_eq!(user_sql("active ne false").0, "active is distinct from $1");
        assert_eq!(user_sql("active pr").0, "active is not null");
        assert!(matches!(
            users("active eq 1"),
            Err(FilterError::ValueType { .. })
        ));
        assert!(matches!(
            users(r#"active eq "yes""#),
            Err(FilterError::ValueType { .. })
        ));
        assert!(matches!(
            users("active gt true"),
            Err(FilterError::UnsupportedOperator { .. })
        ));
        assert!(matches!(
            users("active co true"),
            Err(FilterError::UnsupportedOperator { .. })
        ));
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let (sql, binds) = user_sql(r#"meta.created gt "2024-01-02T03:04:05+02:00""#);
        assert_eq!(sql, "created_at > $1");
        let expected = DateTime::parse_from_rfc3339("2024-01-02T01:04:05Z").expect("valid");
        assert_eq!(
            binds,
            vec![SqlValue::Timestamp(expected.with_timezone(&Utc))]
        );
        assert_eq!(
            user_sql(r#"Meta.LastModified le "2024-01-02T03:04:05Z""#).0,
            "updated_at <= $1"
        );
        assert_eq!(
            user_sql(r#"meta.created ne "2024-01-02T03:04:05Z""#).0,
            "created_at is distinct from $1"
        );
        assert!(matches!(
            users(r#"meta.created gt "yesterday""#),
            Err(FilterError::ValueType { .. })
        ));
        assert!(matches!(
            users("meta.created gt 1700000000"),
            Err(FilterError::ValueType { .. })
        ));
        assert!(matches!(
            users(r#"meta.created sw "2024""#),
            Err(FilterError::UnsupportedOperator { .. })
        ));
    }

    #[test]
    fn values_of_the_wrong_type_are_refused() {
        for filter in ["userName eq 42", "displayName eq true", "externalId co 1.5"] {
            assert!(
                matches!(users(filter), Err(FilterError::ValueType { .. })),
                "{filter}"
            );
        }
    }

    #[test]
    fn attributes_outside_the_allow_list_are_refused_by_name() {
        let cases = [
            (r#"manager eq "x""#, "manager"),
            (r#"name eq "x""#, "name"),
            (r#"userName.x eq "x""#, "userName.x"),
            (r#"meta eq "x""#, "meta"),
            (r#"nickName eq "x""#, "nickName"),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:Group:userName eq "x""#,
                "urn:ietf:params:scim:schemas:core:2.0:Group:userName",
            ),
            (
                r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager eq "x""#,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            ),
            (r#"emails.display eq "x""#, "emails.display"),
            (r#"emails[display eq "x"]"#, "emails.display"),
            (r#"emails[type eq "work"].display eq "x""#, "emails.display"),
            (r#"emails[value.x eq "x"]"#, "emails.value.x"),
        ];
        for (filter, attribute) in cases {
            let expected = FilterError::UnsupportedAttribute {
                attribute: attribute.to_owned(),
            };
            assert_eq!(users(filter), Err(expected.clone()), "{filter}");
            assert!(expected.to_string().contains(attribute));
        }
        assert_eq!(
            groups(r#"userName eq "x""#),
            Err(FilterError::UnsupportedAttribute {
                attribute: "userName".to_owned()
            })
        );
    }

    #[test]
    fn urn_prefixed_core_names_resolve() {
        let (sql, _) = user_sql(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x""#);
        assert_eq!(sql, "lower(user_name) = lower($1)");
        let (sql, _) =
            user_sql(r#"URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:name.givenName eq "x""#);
        assert_eq!(sql, "lower(given_name) = lower($1)");
        let translated =
            groups(r#"urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq "x""#);
        assert_eq!(
            translated.map(|t| t.sql),
            Ok("lower(display_name) = lower($1)".to_owned())
        );
    }

    #[test]
    fn emails_match_when_any_value_matches() {
        let any_value = "exists (select 1 from jsonb_array_elements(emails) e \
                         where lower(e->>'value') = lower($1))";
        assert_eq!(
            user_sql(r#"emails eq "a@b.c""#),
            (any_value.to_owned(), vec![text("a@b.c")])
        );
        // `emails.value eq` is any email, so it must not use the work-email column.
        assert_eq!(user_sql(r#"Emails.Value eq "a@b.c""#).0, any_value);
        assert_eq!(
            user_sql(r#"emails.type eq "work""#).0,
            "exists (select 1 from jsonb_array_elements(emails) e \
             where lower(e->>'type') = lower($1))"
        );
        assert_eq!(
            user_sql("emails.value pr").0,
            "exists (select 1 from jsonb_array_elements(emails) e \
             where coalesce(e->>'value', '') <> '')"
        );
        assert_eq!(user_sql("emails pr").0, "jsonb_array_length(emails) > 0");
    }

    #[test]
    fn value_paths_become_exists_over_the_values() {
        let (sql, binds) = user_sql(r#"emails[type eq "work" and primary eq true]"#);
        assert_eq!(
            sql,
            "exists (select 1 from jsonb_array_elements(emails) e \
             where (lower(e->>'type') = lower($1) and lower(e->>'primary') = $2))"
        );
        assert_eq!(binds, vec![text("work"), text("true")]);

        let (sql, binds) = user_sql(r#"emails[type eq "work"].value co "a@""#);
        assert_eq!(
            sql,
            "exists (select 1 from jsonb_array_elements(emails) e \
             where (lower(e->>'type') = lower($1) \
             and lower(e->>'value') like lower($2) escape '\\'))"
        );
        assert_eq!(binds, vec![text("work"), text("%a@%")]);

        let (sql, _) = user_sql(r#"emails[not (primary eq "True")]"#);
        assert_eq!(
            sql,
            "exists (select 1 from jsonb_array_elements(emails) e \
             where not coalesce(lower(e->>'primary') = $1, false))"
        );
        assert!(matches!(
            users(r#"userName[value eq "x"]"#),
            Err(FilterError::NotMultiValued { .. })
        ));
        assert!(matches!(
            users(r#"emails.value[type eq "x"]"#),
            Err(FilterError::NotMultiValued { .. })
        ));
    }

    #[test]
    fn the_work_email_match_query_uses_the_indexed_column() {
        let fast = (
            "lower(work_email) = lower($1)".to_owned(),
            vec![text("user@contoso.com")],
        );
        for filter in [
            r#"emails[type eq "work"].value eq "user@contoso.com""#,
            r#"Emails[Type EQ "Work"].Value Eq "user@contoso.com""#,
            r#"emails[type eq "work"] eq "user@contoso.com""#,
            &format!("{USER_URN}:emails[type eq \"WORK\"].value eq \"user@contoso.com\""),
        ] {
            assert_eq!(user_sql(filter), fast, "{filter}");
        }
        for filter in [
            r#"emails[type eq "home"].value eq "x""#,
            r#"emails[type eq "work"].value ne "x""#,
            r#"emails[type ne "work"].value eq "x""#,
            r#"emails[type eq "work" and primary eq true].value eq "x""#,
        ] {
            assert!(user_sql(filter).0.starts_with("exists ("), "{filter}");
        }
    }

    #[test]
    fn equality_on_a_unique_column_matches_at_most_one_row() {
        let id = "2819c223-7f76-453a-919d-413861904646";
        for filter in [
            r#"emails[type eq "work"].value eq "user@contoso.com""#,
            r#"userName eq "Alice@Contoso.com""#,
            &format!(r#"id eq "{id}""#),
            r#"id eq "not-a-uuid""#,
            r#"userName eq "a" and active eq true"#,
            r#"displayName sw "A" and (userName eq "a")"#,
        ] {
            assert!(users(filter).unwrap().at_most_one, "{filter}");
        }
        for filter in [
            r#"userName ne "a""#,
            r#"userName sw "a""#,
            "userName eq null",
            r#"userName eq "a" or userName eq "b""#,
            r#"not (userName eq "a")"#,
            r#"emails[type eq "home"].value eq "x""#,
            r#"emails[value eq "x"]"#,
            r#"emails eq "x""#,
            r#"externalId eq "x""#,
            r#"displayName eq "x""#,
        ] {
            assert!(!users(filter).unwrap().at_most_one, "{filter}");
        }
        assert!(groups(r#"externalId eq "x""#).unwrap().at_most_one);
        assert!(!groups(r#"displayName eq "x""#).unwrap().at_most_one);
        assert!(
            !groups(&format!(r#"members[value eq "{id}"]"#))
                .unwrap()
                .at_most_one
        );
    }

    #[test]
    fn group_members_are_looked_up_in_memberships() {
        let id = "2819c223-7f76-453a-919d-413861904646";
        let uuid = Uuid::parse_str(id).expect("valid uuid");
        let expected = "exists (select 1 from t_0123456789abcdef0123456789abcdef.memberships m \
                        where m.group_id = groups.id and m.user_id = $1)";
        for filter in [
            format!("members.value eq \"{id}\""),
            format!("members[value eq \"{id}\"]"),
            format!("Members eq \"{id}\""),
        ] {
            let translated = groups(&filter).expect("supported");
            assert_eq!(translated.sql, expected, "{filter}");
            assert_eq!(translated.binds, vec![SqlValue::Uuid(uuid)]);
        }
        let translated = groups(r#"members[value eq "not-a-user"]"#).expect("supported");
        assert_eq!(
            translated.sql,
            "exists (select 1 from t_0123456789abcdef0123456789abcdef.memberships m \
             where m.group_id = groups.id and false)"
        );
        assert_eq!(
            groups("members pr").map(|t| t.sql),
            Ok(
                "exists (select 1 from t_0123456789abcdef0123456789abcdef.memberships m \
                where m.group_id = groups.id)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn group_attributes() {
        let translated = groups(r#"externalId eq "0db508eb-91e2-46e4-809c-30dcbda0c685""#);
        assert_eq!(translated.map(|t| t.sql), Ok("external_id = $1".to_owned()));
        let translated = groups(r#"DisplayName eq "displayName""#);
        assert_eq!(
            translated.map(|t| t.sql),
            Ok("lower(display_name) = lower($1)".to_owned())
        );
        assert_eq!(
            groups(r#"id eq "x""#).map(|t| t.sql),
            Ok("false".to_owned())
        );
    }

    #[test]
    fn entra_query_shapes() {
        let guid = "cf4d78e8-cc4f-4d5d-b8b9-183561c0104a";
        assert_eq!(
            user_sql(&format!("userName eq \"{guid}\"")).0,
            "lower(user_name) = lower($1)"
        );
        assert_eq!(
            user_sql(&format!("emails[type eq \"work\"].value eq \"{guid}\"")).0,
            "lower(work_email) = lower($1)"
        );
        assert_eq!(
            user_sql(&format!("externalId eq \"{guid}\"")).0,
            "external_id = $1"
        );
        assert_eq!(user_sql(&format!("id eq \"{guid}\"")).0, "id = $1");
        assert_eq!(
            user_sql(r#"displayName eq "displayName""#).0,
            "lower(display_name) = lower($1)"
        );
        assert_eq!(
            groups(&format!("externalId eq \"{guid}\"")).map(|t| t.sql),
            Ok("external_id = $1".to_owned())
        );
        assert_eq!(
            groups(r#"displayName eq "displayName""#).map(|t| t.sql),
            Ok("lower(display_name) = lower($1)".to_owned())
        );
        // Microsoft's test collection spells names in other cases.
        assert_eq!(
            user_sql(r#"DisplayName eq "x""#).0,
            "lower(display_name) = lower($1)"
        );
        assert_eq!(
            user_sql(r#"name.FamilyName eq "x""#).0,
            "lower(family_name) = lower($1)"
        );
        assert_eq!(
            user_sql(r#"meta.Created gt "2018-03-27T19:59:26.000Z""#).0,
            "created_at > $1"
        );
        // The legacy manager reference check: Roster stores no manager.
        let manager = users(&format!("id eq \"{guid}\" and manager eq \"{guid}\""));
        assert_eq!(
            manager,
            Err(FilterError::UnsupportedAttribute {
                attribute: "manager".to_owned()
            })
        );
    }

    #[test]
    fn values_never_reach_the_sql_text() {
        let marker = "zq9marker";
        for filter in [
            format!("userName eq \"{marker}\""),
            format!("displayName co \"{marker}\""),
            format!("externalId ne \"{marker}\""),
            format!("emails[type eq \"{marker}\"].value eq \"{marker}\""),
            format!("emails[type eq \"work\"].value eq \"{marker}\""),
            format!("not (name.givenName sw \"{marker}\")"),
        ] {
            let (sql, binds) = user_sql(&filter);
            assert!(!sql.contains(marker), "{filter}: {sql}");
            assert!(!binds.is_empty());
        }
    }

    #[test]
    fn error_messages_do_not_echo_values() {
        let secret = "jane.doe@contoso.com";
        let filters = [
            format!("userName eq \"{secret}"),
            format!("userName eq {secret}"),
            format!("userName eq \"{secret}\" garbage"),
            format!("userName eq \"{secret}\\q\""),
            format!("{secret} eq \"x\""),
            format!("active eq \"{secret}\""),
            format!("meta.created gt \"{secret}\""),
            format!("id co \"{secret}\""),
            format!("manager eq \"{secret}\""),
        ];
        for filter in filters {
            let message = users(&filter)
                .expect_err("every case is an error")
                .to_string();
            assert!(!message.contains("jane"), "{message}");
        }
    }

    #[test]
    fn every_error_is_invalid_filter() {
        assert_eq!(FilterError::Empty.scim_type(), "invalidFilter");
        let unsupported = users("manager pr").expect_err("unsupported");
        assert_eq!(unsupported.scim_type(), "invalidFilter");
    }

    // ---- properties ---------------------------------------------------------------------

    fn garbage() -> impl Strategy<Value = String> {
        let tokens = prop::sample::select(vec![
            "userName",
            "emails",
            "emails.value",
            "members",
            "type",
            "value",
            "id",
            "active",
            "meta.created",
            ".value",
            "[",
            "]",
            "(",
            ")",
            "\"",
            "\\",
            "\"work\"",
            "\"a\\\"b\"",
            "\"00000000-0000-0000-0000-000000000000\"",
            "\"2024-01-01T00:00:00Z\"",
            "eq",
            "ne",
            "co",
            "gt",
            "pr",
            "and",
            "or",
            "not",
            "true",
            "null",
            "1.5",
            "-3",
            "é",
            "urn:ietf:params:scim:schemas:core:2.0:User:userName",
        ]);
        prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9 \\[\\]()\".:$%_\\\\-]{0,64}",
            prop::collection::vec((tokens, prop::bool::ANY), 0..24).prop_map(|parts| {
                parts
                    .into_iter()
                    .map(|(token, spaced)| {
                        if spaced {
                            format!("{token} ")
                        } else {
                            token.to_owned()
                        }
                    })
                    .collect()
            }),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[ -~]{0,12}".prop_map(Value::String),
            "\\PC{0,6}".prop_map(Value::String),
            // Control characters and quotes, but no NUL: the parser refuses `\u0000`.
            "[\\x01-\\x1f\"\\\\]{0,4}".prop_map(Value::String),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>().prop_filter_map("finite", |x| {
                serde_json::Number::from_f64(x).map(Value::Number)
            }),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ]
    }

    fn test_strategy() -> impl Strategy<Value = Test> {
        let ops = prop::sample::select(CompareOp::ALL.to_vec());
        prop_oneof![
            1 => Just(Test::Present),
            6 => (ops, value()).prop_map(|(op, value)| Test::Compare(op, value)),
        ]
    }

    fn resource_path() -> impl Strategy<Value = AttrPath> {
        let paths = prop::sample::select(vec![
            (None, "id", None),
            (None, "userName", None),
            (None, "USERNAME", None),
            (Some(USER_URN), "userName", None),
            (None, "externalId", None),
            (None, "displayName", None),
            (None, "name", Some("givenName")),
            (Some(USER_URN), "name", Some("familyName")),
            (None, "active", None),
            (None, "meta", Some("created")),
            (None, "meta", Some("LastModified")),
            (None, "emails", None),
            (None, "emails", Some("value")),
            (None, "members", Some("value")),
            (Some(GROUP_URN), "displayName", None),
        ]);
        paths.prop_map(|(schema, name, sub_attr)| AttrPath {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
            sub_attr: sub_attr.map(str::to_owned),
        })
    }

    fn sub_attr_name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["value", "type", "primary", "Value", "TYPE"])
            .prop_map(str::to_owned)
    }

    fn logical(inner: BoxedStrategy<Filter>) -> impl Strategy<Value = Filter> {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| and(l, r)),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| or(l, r)),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    }

    fn value_filter() -> impl Strategy<Value = Filter> {
        let leaf = (sub_attr_name(), test_strategy()).prop_map(|(name, test)| Filter::Attr {
            path: path(&name),
            test,
        });
        leaf.prop_recursive(2, 6, 2, |inner| logical(inner.boxed()))
    }

    fn value_path() -> impl Strategy<Value = Filter> {
        let attrs = prop::sample::select(vec!["emails", "Emails", "members"]);
        let then = prop::option::of((sub_attr_name(), test_strategy()))
            .prop_map(|then| then.map(|(sub_attr, test)| SubAttrTest { sub_attr, test }));
        (attrs, value_filter(), then).prop_map(|(attr, filter, then)| Filter::ValuePath {
            attr: path(attr),
            filter: Box::new(filter),
            then,
        })
    }

    fn tree() -> impl Strategy<Value = Filter> {
        let attr =
            (resource_path(), test_strategy()).prop_map(|(path, test)| Filter::Attr { path, test });
        let leaf = prop_oneof![3 => attr, 1 => value_path()];
        leaf.prop_recursive(4, 12, 2, |inner| logical(inner.boxed()))
    }

    /// The numbers of the `$n` placeholders in `sql`, in order.
    fn placeholders(sql: &str) -> Vec<usize> {
        sql.split('$')
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().expect("a number follows every $")
            })
            .collect()
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(input in garbage()) {
            if let Ok(filter) = parse(&input) {
                let _ = to_sql(&filter, &USERS, &schema(), 1);
                let _ = to_sql(&filter, &GROUPS, &schema(), 1);
                prop_assert_eq!(parse(&filter.to_string()), Ok(filter));
            }
        }

        #[test]
        fn trees_print_and_parse_back(filter in tree()) {
            let printed = filter.to_string();
            if printed.len() > MAX_FILTER_LEN {
                prop_assert_eq!(parse(&printed), Err(FilterError::TooLong { len: printed.len() }));
            } else {
                prop_assert_eq!(parse(&printed), Ok(filter));
            }
        }

        #[test]
        fn every_bind_has_its_placeholder(filter in tree(), first in 1usize..5) {
            for map in [&USERS, &GROUPS] {
                if let Ok(translated) = to_sql(&filter, map, &schema(), first) {
                    let expected: Vec<usize> = (first..first + translated.binds.len()).collect();
                    prop_assert_eq!(placeholders(&translated.sql), expected);
                }
            }
        }
    }
}
