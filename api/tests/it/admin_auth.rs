//! Who may call the admin API: the permission matrix over every endpoint family (tenants,
//! keys, audit, groups, memberships, users, journal, counters), and tokens signed with public
//! keys (PEM and JWKS).

use chrono::Utc;
use reqwest::Method;
use serde_json::{json, Value};

use crate::admin_helpers::{
    claims, read_token, scoped_token, sign, sign_with_secret, write_token, Es256Key, SUPPORT,
};
use crate::helpers::{spawn_app, spawn_app_with, unique_slug, TestApp, TEST_JWT_SECRET};

/// One request of each kind on tenant `slug`, per endpoint family.
fn reads(slug: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/admin/v1/tenants".to_owned()),
        (Method::GET, format!("/admin/v1/tenants/{slug}")),
        (Method::GET, format!("/admin/v1/tenants/{slug}/keys")),
        (Method::GET, format!("/admin/v1/audit?tenant={slug}")),
        (Method::GET, format!("/admin/v1/tenants/{slug}/groups")),
        (Method::GET, format!("/admin/v1/tenants/{slug}/users")),
        (Method::GET, format!("/admin/v1/tenants/{slug}/journal")),
        (Method::GET, format!("/admin/v1/tenants/{slug}/counters")),
    ]
}

fn writes(slug: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/admin/v1/tenants".to_owned(),
            Some(json!({ "slug": unique_slug(), "name": "Never created" })),
        ),
        (
            Method::PATCH,
            format!("/admin/v1/tenants/{slug}"),
            Some(json!({ "name": "Renamed" })),
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{slug}/suspend"),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{slug}/keys"),
            Some(json!({ "service_account": "intruder" })),
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{slug}/keys/{}/revoke", uuid::Uuid::nil()),
            None,
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{slug}/groups"),
            Some(json!({ "display_name": "Intruders" })),
        ),
        (
            Method::PATCH,
            format!("/admin/v1/tenants/{slug}/groups/{}", uuid::Uuid::nil()),
            Some(json!({ "sync_enabled": false })),
        ),
        (
            Method::POST,
            format!(
                "/admin/v1/tenants/{slug}/groups/{}/members",
                uuid::Uuid::nil()
            ),
            Some(json!({ "user_ids": [uuid::Uuid::nil()] })),
        ),
        (
            Method::PATCH,
            format!("/admin/v1/tenants/{slug}/users/{}", uuid::Uuid::nil()),
            Some(json!({ "display_name": "Renamed" })),
        ),
        (
            Method::POST,
            format!(
                "/admin/v1/tenants/{slug}/users/{}/deactivate",
                uuid::Uuid::nil()
            ),
            None,
        ),
        (
            Method::DELETE,
            format!("/admin/v1/tenants/{slug}/users/{}", uuid::Uuid::nil()),
            None,
        ),
        (
            Method::DELETE,
            format!("/admin/v1/tenants/{slug}/groups/{}", uuid::Uuid::nil()),
            None,
        ),
        (
            Method::DELETE,
            format!("/admin/v1/tenants/{slug}?confirm={slug}"),
            None,
        ),
    ]
}

/// Sends every read and write on `slug` with `token` and returns each status with its request.
async fn statuses(app: &TestApp, slug: &str, token: Option<&str>) -> Vec<(u16, String)> {
    let mut seen = Vec::new();
    for (method, path) in reads(slug) {
        let reply = app.admin(method.clone(), &path, token, None).await;
        seen.push((reply.status.as_u16(), format!("{method} {path}")));
    }
    for (method, path, body) in writes(slug) {
        let reply = app.admin(method.clone(), &path, token, body.as_ref()).await;
        seen.push((reply.status.as_u16(), format!("{method} {path}")));
    }
    seen
}

fn assert_all(seen: &[(u16, String)], status: u16) {
    for (got, request) in seen {
        assert_eq!(*got, status, "{request}");
    }
}

/// The tenant is exactly as it was: not renamed, suspended, deleted or given a key.
async fn assert_untouched(app: &TestApp, slug: &str) {
    let tenant = tenancy::tenants::require_by_slug(&app.pool, slug)
        .await
        .unwrap();
    assert_eq!(tenant.name, "Test tenant");
    assert_eq!(tenant.status, tenancy::TenantStatus::Active);
    let keys = tenancy::keys::list(&app.pool, tenant.id).await.unwrap();
    assert_eq!(keys.len(), 1);
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_everywhere() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let now = Utc::now().timestamp();

    let mut wrong_issuer = claims(SUPPORT, &["roster:write"]);
    wrong_issuer["iss"] = json!("someone-else");
    let mut wrong_audience = claims(SUPPORT, &["roster:write"]);
    wrong_audience["aud"] = json!("another-service");
    let mut expired = claims(SUPPORT, &["roster:write"]);
    expired["exp"] = json!(now - 600);
    let mut not_yet_valid = claims(SUPPORT, &["roster:write"]);
    not_yet_valid["nbf"] = json!(now + 600);
    let mut no_expiry = claims(SUPPORT, &["roster:write"]);
    no_expiry.as_object_mut().unwrap().remove("exp");
    let bad_signature = sign_with_secret(
        &claims(SUPPORT, &["roster:write"]),
        "another-secret-another-secret-0123456789",
    );
    let tokens = [
        ("wrong issuer", sign(&wrong_issuer)),
        ("wrong audience", sign(&wrong_audience)),
        ("expired", sign(&expired)),
        ("not yet valid", sign(&not_yet_valid)),
        ("no expiry", sign(&no_expiry)),
        ("bad signature", bad_signature),
        ("garbage", "not-a-jwt".to_owned()),
    ];

    let missing = statuses(&app, slug, None).await;
    assert_all(&missing, 401);
    for (case, token) in &tokens {
        let seen = statuses(&app, slug, Some(token)).await;
        for (status, request) in seen {
            assert_eq!(status, 401, "{case}: {request}");
        }
    }

    assert_untouched(&app, slug).await;
}

#[tokio::test]
async fn a_401_says_bearer_and_has_the_admin_error_shape() {
    let app = spawn_app().await;

    let reply = app
        .admin(Method::GET, "/admin/v1/tenants", None, None)
        .await;

    reply.assert_admin_error(401, "unauthorized");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"roster-admin\"")
    );
}

#[tokio::test]
async fn a_read_token_reads_but_gets_403_on_every_write() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let token = read_token();

    for (method, path) in reads(slug) {
        let reply = app.admin(method, &path, Some(&token), None).await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
    }
    for (method, path, body) in writes(slug) {
        let reply = app.admin(method, &path, Some(&token), body.as_ref()).await;
        reply.assert_admin_error(403, "forbidden");
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .contains("roster:write"),
            "{reply:?}"
        );
    }

    assert_untouched(&app, slug).await;
}

#[tokio::test]
async fn a_token_without_a_roster_role_gets_403_everywhere() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let token = sign(&claims(SUPPORT, &["roster:admin", "billing:write"]));

    let seen = statuses(&app, &tenant.tenant.slug, Some(&token)).await;

    assert_all(&seen, 403);
    assert_untouched(&app, &tenant.tenant.slug).await;
}

#[tokio::test]
async fn a_scoped_token_gets_403_on_another_tenant_existing_or_not() {
    let app = spawn_app().await;
    let own = app.create_tenant().await;
    let other = app.create_tenant().await;
    let token = scoped_token(&own.tenant.slug, "roster:write");

    let on_other = statuses(&app, &other.tenant.slug, Some(&token)).await;
    let on_missing = statuses(&app, &unique_slug(), Some(&token)).await;

    // The tenant listing is the exception: it answers with the token's own tenant.
    for seen in [&on_other, &on_missing] {
        let (listing, rest) = seen.split_first().unwrap();
        assert_eq!(listing.0, 200);
        assert_all(rest, 403);
    }
    assert_untouched(&app, &other.tenant.slug).await;
}

#[tokio::test]
async fn a_scoped_token_sees_and_changes_only_its_tenant() {
    let app = spawn_app().await;
    let own = app.create_tenant().await;
    let slug = own.tenant.slug.as_str();
    let token = scoped_token(slug, "roster:write");

    let listing = app.admin_get("/admin/v1/tenants", &token).await;
    let own_tenant = app
        .admin_get(&format!("/admin/v1/tenants/{slug}"), &token)
        .await;
    let renamed = app
        .admin_patch(
            &format!("/admin/v1/tenants/{slug}"),
            &token,
            &json!({ "name": "Renamed by its admin" }),
        )
        .await;
    let issued = app
        .admin_post(
            &format!("/admin/v1/tenants/{slug}/keys"),
            &token,
            &json!({}),
        )
        .await;
    let audit = app.admin_get("/admin/v1/audit", &token).await;

    assert_eq!(listing.status, 200);
    let slugs: Vec<&str> = listing.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, [slug]);
    assert_eq!(listing.body["next_cursor"], Value::Null);
    assert_eq!(own_tenant.status, 200);
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(issued.status, 201, "{issued:?}");
    assert_eq!(audit.status, 200);
    let tenant_ids: Vec<&Value> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| &record["tenant_id"])
        .collect();
    assert!(!tenant_ids.is_empty());
    assert!(tenant_ids
        .iter()
        .all(|id| **id == json!(own.tenant.id.to_string())));
}

#[tokio::test]
async fn a_scoped_token_cannot_take_service_level_actions_on_its_tenant() {
    let app = spawn_app().await;
    let own = app.create_tenant().await;
    let slug = own.tenant.slug.as_str();
    let token = scoped_token(slug, "roster:write");

    let create = app
        .admin_post(
            "/admin/v1/tenants",
            &token,
            &json!({ "slug": unique_slug(), "name": "Sibling" }),
        )
        .await;
    let rate_limit = app
        .admin_patch(
            &format!("/admin/v1/tenants/{slug}"),
            &token,
            &json!({ "rate_limit_per_sec": 100_000 }),
        )
        .await;
    let suspend = app
        .admin_post(
            &format!("/admin/v1/tenants/{slug}/suspend"),
            &token,
            &json!({}),
        )
        .await;
    let resume = app
        .admin_post(
            &format!("/admin/v1/tenants/{slug}/resume"),
            &token,
            &json!({}),
        )
        .await;
    let delete = app
        .admin_delete(&format!("/admin/v1/tenants/{slug}?confirm={slug}"), &token)
        .await;

    for reply in [create, rate_limit, suspend, resume, delete] {
        reply.assert_admin_error(403, "forbidden");
    }
    assert_untouched(&app, slug).await;
}

#[tokio::test]
async fn es256_tokens_verify_against_configured_pem_keys() {
    let key = Es256Key::generate("pem-key");
    let stranger = Es256Key::generate("pem-key");
    let public_pem = key.public_pem.clone();
    let app = spawn_app_with(|config| {
        config.admin_auth.jwt_public_keys = Some(public_pem);
    })
    .await;
    let write = claims(SUPPORT, &["roster:write"]);

    let signed = app.admin_get("/admin/v1/tenants", &key.sign(&write)).await;
    let by_stranger = app
        .admin_get("/admin/v1/tenants", &stranger.sign(&write))
        .await;
    // Algorithm confusion: the public key used as an HMAC secret must not verify.
    let confused = app
        .admin_get(
            "/admin/v1/tenants",
            &sign_with_secret(&write, &key.public_pem),
        )
        .await;
    let hs256 = app.admin_get("/admin/v1/tenants", &write_token()).await;

    assert_eq!(signed.status, 200, "{signed:?}");
    by_stranger.assert_admin_error(401, "unauthorized");
    confused.assert_admin_error(401, "unauthorized");
    assert_eq!(
        hs256.status, 200,
        "the HS256 secret stays configured alongside"
    );
}

#[tokio::test]
async fn es256_tokens_verify_against_a_jwks_url() {
    let key = Es256Key::generate("jwks-key");
    let jwks_url = serve_jwks(json!({ "keys": [key.jwk.clone()] })).await;
    let app = spawn_app_with(|config| {
        config.admin_auth.jwt_hs256_secret = None;
        config.admin_auth.jwt_jwks_url = Some(jwks_url);
    })
    .await;
    let write = claims(SUPPORT, &["roster:write"]);
    let unpublished_key = Es256Key::generate("not-published");

    let signed = app.admin_get("/admin/v1/tenants", &key.sign(&write)).await;
    let unpublished = app
        .admin_get("/admin/v1/tenants", &unpublished_key.sign(&write))
        .await;
    let hs256 = app
        .admin_get(
            "/admin/v1/tenants",
            &sign_with_secret(&write, TEST_JWT_SECRET),
        )
        .await;

    assert_eq!(signed.status, 200, "{signed:?}");
    unpublished.assert_admin_error(401, "unauthorized");
    hs256.assert_admin_error(401, "unauthorized");
}

/// Serves `jwks` over HTTP on a random port and returns its URL.
async fn serve_jwks(jwks: Value) -> String {
    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::{get, handler, EndpointExt, Route, Server};

    #[handler]
    fn publish(jwks: poem::web::Data<&Value>) -> poem::web::Json<Value> {
        poem::web::Json(jwks.0.clone())
    }

    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new().at("/jwks", get(publish)).data(jwks);
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    format!("http://{addr}/jwks")
}
