//! The committed OpenAPI document matches the code.

#[test]
fn the_committed_spec_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/roster.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = api::openapi::spec_json();

    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/roster.json is out of date: run `cargo run -q --bin roster -- openapi > \
         openapi/roster.json` and commit it"
    );
}
