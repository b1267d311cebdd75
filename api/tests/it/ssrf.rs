//! SSRF through FusionAuth base URLs: with private URLs disallowed (production's default),
//! every spelling of an internal address is refused by `validate_base_url`, by
//! `roster tenant set-fusionauth` and by the admin API's tenant update, and nothing is stored.

use api::fusionauth::{validate_base_url, BaseUrlError, UrlPolicy};
use serde_json::json;

use crate::admin_helpers::write_token;
use crate::helpers::{database_url, spawn_app_with, TestApp, TEST_KEY_ENCRYPTION_KEY};

const STRICT: UrlPolicy = UrlPolicy {
    allow_private: false,
};

/// Spellings of loopback, private, link-local, metadata and otherwise internal addresses.
const INTERNAL: &[&str] = &[
    "http://127.0.0.1/",
    "http://127.0.0.1./",
    "http://127.1/",
    "http://127.255.255.254:9011/",
    "http://0177.0.0.1/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://2130706433/",
    "http://017700000001/",
    "http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
    "http://0/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://012.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.0.1/",
    "http://3232235521/",
    "http://100.64.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://localhost:9011/",
    "http://fusionauth.localhost/",
    "http://good.example@127.0.0.1/",
    "http://good.example:pw@169.254.169.254/",
    "http://127.0.0.1\\@good.example/",
    "http://127.0.0.1#@good.example/",
    "http://127.0.0.1?@good.example/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
];

/// Public addresses and names: allowed (names are checked again when they are resolved).
const PUBLIC: &[&str] = &[
    "https://auth.acme.example",
    "https://auth.acme.example/fusionauth/",
    "http://203.0.113.9:9011",
    "http://172.32.0.1/",
    "http://[2001:db8::1]/",
];

#[test]
fn every_spelling_of_an_internal_address_is_refused() {
    let accepted: Vec<&str> = INTERNAL
        .iter()
        .copied()
        .filter(|raw| validate_base_url(raw, STRICT).is_ok())
        .collect();
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
    for raw in PUBLIC {
        assert!(validate_base_url(raw, STRICT).is_ok(), "{raw}");
    }
    assert_eq!(
        validate_base_url("http://good.example@127.0.0.1/", STRICT),
        Err(BaseUrlError::Credentials)
    );
}

async fn strict_app() -> TestApp {
    spawn_app_with(|config| config.fusionauth.fusionauth_allow_private_urls = false).await
}

#[tokio::test]
async fn the_admin_api_refuses_internal_fusionauth_urls() {
    let app = strict_app().await;
    let tenant = app.create_tenant().await;
    let path = format!("/admin/v1/tenants/{}", tenant.tenant.slug);
    let connection = |base_url: &str| {
        json!({ "fusionauth": {
            "base_url": base_url, "api_key": "fa-key", "tenant_id": uuid::Uuid::new_v4()
        }})
    };

    for raw in INTERNAL {
        let reply = app
            .admin_patch(&path, &write_token(), &connection(raw))
            .await;
        reply.assert_admin_error(400, "bad_request");
    }
    let stored = tenancy::tenants::get(&app.pool, tenant.tenant.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.fusionauth.is_none());

    let public = app
        .admin_patch(&path, &write_token(), &connection(PUBLIC[0]))
        .await;
    assert_eq!(public.status, 200, "{public:?}");
}

#[tokio::test]
async fn the_cli_refuses_internal_fusionauth_urls() {
    let app = strict_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let fa_tenant = uuid::Uuid::new_v4().to_string();

    for raw in [
        "http://0x7f000001/",
        "http://2852039166/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:9011/",
        "http://good.example@10.0.0.1/",
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["tenant", "set-fusionauth", slug, "--base-url", raw])
            .args(["--tenant-id", &fa_tenant])
            .env("ROSTER_DATABASE_URL", database_url())
            .env("ROSTER_FUSIONAUTH_API_KEY", "fa-key")
            .env("ROSTER_KEY_ENCRYPTION_KEY", TEST_KEY_ENCRYPTION_KEY)
            .env("ROSTER_FUSIONAUTH_ALLOW_PRIVATE_URLS", "false")
            .output()
            .await
            .unwrap();

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{raw}");
        assert!(stderr.contains("base URL is refused"), "{raw}: {stderr}");
    }
    let stored = tenancy::tenants::get(&app.pool, tenant.tenant.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.fusionauth.is_none());
}
