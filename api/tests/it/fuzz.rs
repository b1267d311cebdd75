//! Fuzzing the three parsers that read what a client sends — the filter parser and its SQL
//! translation, the PATCH parser (and the Group reading of it), and SCIM user bodies — from
//! the kept corpus in `api/tests/corpus/`.
//!
//! Every corpus entry runs on every `cargo test`. The mutation properties start from corpus
//! entries and damage them (characters replaced, inserted, deleted, duplicated, spliced with
//! another entry; JSON nodes replaced by hostile values); the parsers must never panic, and a
//! translated filter must never carry a value in its SQL text. The `#[ignore]`d `*_at_scale`
//! variants take their case count from `PROPTEST_CASES` (see `load-tests/fuzz.sh`).

use std::path::PathBuf;

use api::scim::filter::{self, SqlFilter, GROUPS, USERS};
use api::scim::{patch, user_request};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// One corpus entry: its file name and bytes.
pub struct Entry {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The entries of `api/tests/corpus/{kind}`, sorted by name.
pub fn corpus(kind: &str) -> Vec<Entry> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut entries: Vec<Entry> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            Entry {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                bytes: std::fs::read(&path).unwrap(),
            }
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

/// The corpus entries of `kind` as text (every filter entry is UTF-8).
fn texts(kind: &str) -> Vec<String> {
    corpus(kind)
        .into_iter()
        .map(|entry| String::from_utf8(entry.bytes).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What must hold for any input

/// Words the translator may write: its keywords and the allow-listed columns. A value that
/// reached the SQL text would show up as a word, number or literal outside these.
const SQL_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "coalesce",
    "false",
    "true",
    "lower",
    "like",
    "escape",
    "is",
    "distinct",
    "from",
    "null",
    "exists",
    "select",
    "where",
    "jsonb_array_length",
    "jsonb_array_elements",
    "emails",
    "e",
    "memberships",
    "m",
    "group_id",
    "groups",
    "id",
    "user_id",
    "user_name",
    "external_id",
    "display_name",
    "given_name",
    "family_name",
    "formatted_name",
    "active",
    "created_at",
    "updated_at",
    "work_email",
];

/// The only quoted literals the translator writes (JSON keys, the empty string, the escape).
const SQL_LITERALS: &[&str] = &["'value'", "'type'", "'primary'", "''", "'\\'"];

/// Asserts `sql` is built only from the translator's own vocabulary, and that its
/// placeholders are `$1..$n` for exactly the `n` bound values.
fn assert_values_are_bound(input: &str, translated: &SqlFilter) {
    let sql = translated.sql.as_str();
    let mut placeholders = Vec::new();
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        let token_len = match c {
            '$' => {
                let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                assert!(digits > 0, "bare $ in {sql:?} for {input:?}");
                placeholders.push(rest[1..=digits].parse::<usize>().unwrap());
                1 + digits
            }
            '\'' => {
                let close = rest[1..].find('\'').expect("closed literal") + 2;
                let literal = &rest[..close];
                assert!(
                    SQL_LITERALS.contains(&literal),
                    "literal {literal:?} in {sql:?} for {input:?}"
                );
                close
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let word = &rest[..len];
                assert!(
                    SQL_WORDS.contains(&word) || word == FUZZ_SCHEMA,
                    "word {word:?} in {sql:?} for {input:?}"
                );
                len
            }
            '0' | '1' => 1,
            ' ' | '(' | ')' | ',' | '=' | '<' | '>' | '-' | '.' => 1,
            other => panic!("character {other:?} in {sql:?} for {input:?}"),
        };
        rest = &rest[token_len..];
    }
    let expected: Vec<usize> = (1..=translated.binds.len()).collect();
    placeholders.sort_unstable();
    placeholders.dedup();
    assert_eq!(placeholders, expected, "{sql:?} for {input:?}");
}

/// A filter: parsing, printing and translating for both resource types never panic; what
/// parses prints to text that parses to the same tree; what translates binds every value.
/// The schema the translated filters name; any valid tenant schema name does.
const FUZZ_SCHEMA: &str = "t_0123456789abcdef0123456789abcdef";

fn fuzz_schema() -> tenancy::SchemaName {
    tenancy::SchemaName::parse(FUZZ_SCHEMA).expect("a schema name")
}

fn check_filter(input: &str) {
    let Ok(parsed) = filter::parse(input) else {
        return;
    };
    let printed = parsed.to_string();
    assert_eq!(
        filter::parse(&printed).as_ref(),
        Ok(&parsed),
        "{input:?} printed as {printed:?}"
    );
    for map in [&USERS, &GROUPS] {
        if let Ok(translated) = filter::to_sql(&parsed, map, &fuzz_schema(), 1) {
            assert_values_are_bound(input, &translated);
        }
    }
}

/// A PATCH body: parsing and the Group reading never panic.
fn check_patch(body: &Value) {
    if let Ok(request) = patch::parse(body) {
        let _ = patch::group_changes(&request);
    }
}

/// A user body: parsing never panics.
fn check_user(body: &Value) {
    let _ = user_request::parse(body);
}

/// Raw bytes as a body: JSON first (as the server reads it), then the parser.
fn check_body(bytes: &[u8], check: fn(&Value)) {
    if let Ok(body) = serde_json::from_slice::<Value>(bytes) {
        check(&body);
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus, as it is

#[test]
fn fuzz_corpus_filters_parse_translate_and_bind_every_value() {
    let entries = texts("filter");
    assert!(entries.len() > 150, "the filter corpus is missing");
    for input in &entries {
        check_filter(input);
    }
}

#[test]
fn fuzz_corpus_patch_and_user_bodies_parse_without_panic() {
    let patches = corpus("patch");
    let users = corpus("user");
    assert!(
        patches.len() > 30 && users.len() > 30,
        "a body corpus is missing"
    );
    for entry in &patches {
        check_body(&entry.bytes, check_patch);
        check_body(&entry.bytes, check_user);
    }
    for entry in &users {
        check_body(&entry.bytes, check_user);
        check_body(&entry.bytes, check_patch);
    }
}

#[test]
fn fuzz_corpus_limits_are_where_the_corpus_says() {
    let by_name = |name: &str| {
        let entry = corpus("filter")
            .into_iter()
            .find(|entry| entry.name == name)
            .unwrap();
        filter::parse(std::str::from_utf8(&entry.bytes).unwrap())
    };
    assert!(by_name("long-2048.txt").is_ok());
    assert!(matches!(
        by_name("long-2049.txt"),
        Err(filter::FilterError::TooLong { len: 2049 })
    ));
    assert!(by_name("deep-10.txt").is_ok());
    for deep in ["deep-11.txt", "deep-not.txt", "deep-1000.txt"] {
        assert!(
            matches!(by_name(deep), Err(filter::FilterError::TooDeep { .. })),
            "{deep}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// One damage done to a text, at positions taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, String),
    Insert(usize, String),
    Delete(usize, usize),
    Duplicate(usize, usize),
    /// Inserts a slice of another corpus entry.
    Splice {
        at: usize,
        entry: usize,
        from: usize,
        len: usize,
    },
}

/// Fragments a parser is most likely to trip on.
const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "(",
    ")",
    "[",
    "]",
    ".",
    " ",
    "'",
    ";",
    "--",
    "\0",
    "\u{202e}",
    "ѕ",
    "é",
    "🔥",
    ":",
    "$1",
    "%",
    "_",
    "eq",
    "ne",
    "co",
    "sw",
    "gt",
    "pr",
    "and",
    "or",
    "not (",
    "urn:",
    "\\u0000",
    "\\ud800",
    "true",
    "null",
    "1e999",
    "-0",
    "{",
    "}",
    ",",
    "\"op\":",
    "\"path\":",
    "\"value\":",
    "\"members\"",
    "\"Operations\":[",
    "emails[",
    "members[",
    "value eq \"",
];

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(TOKENS).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), fragment()).prop_map(|(at, s)| Mutation::Replace(at, s)),
        (any::<usize>(), fragment()).prop_map(|(at, s)| Mutation::Insert(at, s)),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        (any::<usize>(), any::<usize>(), any::<usize>(), 1..256usize).prop_map(
            |(at, entry, from, len)| Mutation::Splice {
                at,
                entry,
                from,
                len
            }
        ),
    ]
}

/// The char boundary nearest below `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, mutation: &Mutation, corpus: &[String]) {
    match mutation {
        Mutation::Replace(at, with) => {
            let start = boundary(text, *at);
            let end = text[start..]
                .chars()
                .next()
                .map_or(start, |c| start + c.len_utf8());
            text.replace_range(start..end, with);
        }
        Mutation::Insert(at, with) => text.insert_str(boundary(text, *at), with),
        Mutation::Delete(at, len) => {
            let start = boundary(text, *at);
            let end = boundary(text, start + len).max(start);
            text.replace_range(start..end, "");
        }
        Mutation::Duplicate(at, len) => {
            let start = boundary(text, *at);
            let end = boundary(text, start + len).max(start);
            let copy = text[start..end].to_owned();
            text.insert_str(end, &copy);
        }
        Mutation::Splice {
            at,
            entry,
            from,
            len,
        } => {
            let other = &corpus[entry % corpus.len()];
            let start = boundary(other, *from);
            let end = boundary(other, start + len).max(start);
            let slice = other[start..end].to_owned();
            text.insert_str(boundary(text, *at), &slice);
        }
    }
}

/// A corpus entry of `kind` (by index) damaged by up to eight mutations.
fn mutated(kind: &'static str) -> impl Strategy<Value = String> {
    let entries = texts_lossy(kind);
    let count = entries.len();
    (0..count, prop::collection::vec(mutation(), 1..8)).prop_map(move |(index, mutations)| {
        let mut text = entries[index].clone();
        for mutation in &mutations {
            apply(&mut text, mutation, &entries);
        }
        text
    })
}

fn texts_lossy(kind: &str) -> Vec<String> {
    corpus(kind)
        .into_iter()
        .map(|entry| String::from_utf8_lossy(&entry.bytes).into_owned())
        .collect()
}

/// A hostile JSON value: the kinds Entra sends, wrong types, and values from the token list.
fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        fragment().prop_map(Value::String),
        prop::sample::select(TOKENS).prop_map(|s| Value::String(s.repeat(3))),
        Just(Value::String(
            "2819c223-7f76-453a-919d-413861904646".to_owned()
        )),
    ];
    const KEYS: &[&str] = &[
        "op",
        "path",
        "value",
        "Operations",
        "schemas",
        "members",
        "userName",
        "emails",
        "type",
        "primary",
        "active",
        "name",
        "givenName",
        "externalId",
        "displayName",
        "Op",
        "PATH",
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(KEYS), inner, 0..6).prop_map(|map| {
                Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// Replaces the `n`-th node (pre-order, modulo the node count) of `value` with `with`.
fn replace_node(value: &mut Value, n: usize, with: Value) {
    let total = count_nodes(value);
    let mut remaining = n % total;
    replace_nth(value, &mut remaining, with);
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn replace_nth(value: &mut Value, remaining: &mut usize, with: Value) -> Option<Value> {
    if *remaining == 0 {
        *value = with;
        return None;
    }
    *remaining -= 1;
    let children: Vec<&mut Value> = match value {
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(map) => map.values_mut().collect(),
        _ => return Some(with),
    };
    let mut with = Some(with);
    for child in children {
        with = replace_nth(child, remaining, with?);
    }
    with
}

/// A JSON corpus entry of `kind` with up to four nodes replaced by hostile values.
fn mutated_json(kind: &'static str) -> impl Strategy<Value = Value> {
    let entries: Vec<Value> = corpus(kind)
        .iter()
        .filter_map(|entry| serde_json::from_slice(&entry.bytes).ok())
        .collect();
    let count = entries.len();
    let replacements = prop::collection::vec((any::<usize>(), hostile_json()), 1..4);
    (0..count, replacements).prop_map(move |(index, replacements)| {
        let mut value = entries[index].clone();
        for (node, with) in replacements {
            replace_node(&mut value, node, with);
        }
        value
    })
}

/// The mutation properties, declared twice: a quick run on every `cargo test`, and the
/// `#[ignore]`d run at scale whose case count comes from `PROPTEST_CASES`.
macro_rules! mutation_properties {
    ($config:expr, $($attr:meta)?; $filters:ident, $patch_text:ident, $patch_json:ident,
     $user_text:ident, $user_json:ident) => {
        proptest! {
            #![proptest_config($config)]

            $(#[$attr])?
            #[test]
            fn $filters(input in mutated("filter")) {
                check_filter(&input);
            }

            $(#[$attr])?
            #[test]
            fn $patch_text(input in mutated("patch")) {
                check_body(input.as_bytes(), check_patch);
            }

            $(#[$attr])?
            #[test]
            fn $patch_json(body in mutated_json("patch")) {
                check_patch(&body);
                let _ = serde_json::to_vec(&body).map(|b| check_body(&b, check_patch));
            }

            $(#[$attr])?
            #[test]
            fn $user_text(input in mutated("user")) {
                check_body(input.as_bytes(), check_user);
            }

            $(#[$attr])?
            #[test]
            fn $user_json(body in mutated_json("user")) {
                check_user(&body);
            }
        }
    };
}

mutation_properties!(
    Config::with_cases(256), ;
    fuzz_mutated_filters,
    fuzz_mutated_patch_text,
    fuzz_mutated_patch_json,
    fuzz_mutated_user_text,
    fuzz_mutated_user_json
);

mutation_properties!(
    Config::default(), ignore = "at scale: PROPTEST_CASES=200000 bash load-tests/fuzz.sh";
    fuzz_mutated_filters_at_scale,
    fuzz_mutated_patch_text_at_scale,
    fuzz_mutated_patch_json_at_scale,
    fuzz_mutated_user_text_at_scale,
    fuzz_mutated_user_json_at_scale
);
