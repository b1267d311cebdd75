//! The tenant, key and audit endpoints of the admin API, through the real server.

use serde_json::{json, Value};

use crate::admin_helpers::{read_token, write_token, IsolatedApp, SUPPORT};
use crate::helpers::{spawn_app, unique_slug, TestApp};

const SPC: &str = "ServiceProviderConfig";

fn slugs(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tenant| tenant["slug"].as_str().unwrap().to_owned())
        .collect()
}

/// The audit records of `slug`, newest first, as `(action, actor)`.
async fn audit_of(app: &TestApp, slug: &str) -> Vec<(String, String)> {
    let reply = app
        .admin_get(&format!("/admin/v1/audit?tenant={slug}"), &read_token())
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_created_tenant_has_a_schema_a_basic_user_group_and_a_working_key() {
    let app = spawn_app().await;
    let slug = unique_slug();

    let created = app.admin_create_tenant(&slug).await;

    let tenant = &created["tenant"];
    assert_eq!(tenant["slug"], slug.as_str());
    assert_eq!(tenant["status"], "active");
    assert_eq!(tenant["provisioning"], "shadow");
    assert_eq!(tenant["fusionauth"], Value::Null);
    let base = created["api_key"]["scim_base_url"].as_str().unwrap();
    assert_eq!(base, format!("{}/scim/v2/{slug}", app.base));
    assert_eq!(created["api_key"]["service_account"], "entra-provisioning");
    let key = created["api_key"]["key"].as_str().unwrap();
    assert!(key.starts_with(created["api_key"]["prefix"].as_str().unwrap()));
    assert_eq!(
        app.scim_status(&format!("/scim/v2/{slug}/{SPC}"), key)
            .await,
        200
    );
    let stored = tenancy::tenants::require_by_slug(&app.pool, &slug)
        .await
        .unwrap();
    let mut tx = crate::helpers::TenantSql::begin(&app.pool, &stored.schema)
        .await
        .unwrap();
    let basic_user_groups: i64 =
        sqlx::query_scalar("select count(*) from groups where is_basic_user")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(basic_user_groups, 1);
    let audit = audit_of(&app, &slug).await;
    assert_eq!(
        audit,
        [
            ("key.issue".to_owned(), SUPPORT.to_owned()),
            ("tenant.create".to_owned(), SUPPORT.to_owned())
        ]
    );
}

#[tokio::test]
async fn creation_refuses_taken_invalid_and_malformed_requests() {
    let app = spawn_app().await;
    let slug = unique_slug();
    app.admin_create_tenant(&slug).await;
    let token = write_token();
    let post = |body: Value| {
        let token = token.clone();
        let app = &app;
        async move { app.admin_post("/admin/v1/tenants", &token, &body).await }
    };

    let taken = post(json!({ "slug": slug, "name": "Again" })).await;
    let reserved = post(json!({ "slug": "users", "name": "Users" })).await;
    let uppercase = post(json!({ "slug": "Acme", "name": "Acme" })).await;
    let no_name = post(json!({ "slug": unique_slug() })).await;
    let empty_name = post(json!({ "slug": unique_slug(), "name": " " })).await;
    let past_expiry = post(json!({
        "slug": unique_slug(),
        "name": "Expired",
        "key_expires_at": "2001-01-01T00:00:00Z"
    }))
    .await;
    let not_json = app
        .client
        .post(format!("{}/admin/v1/tenants", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();

    taken.assert_admin_error(409, "conflict");
    for reply in [reserved, uppercase, no_name, empty_name, past_expiry] {
        reply.assert_admin_error(400, "bad_request");
    }
    assert_eq!(not_json.status(), 400);
    let body: Value = not_json.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
}

#[tokio::test]
async fn a_failed_creation_leaves_nothing_behind() {
    let app = spawn_app().await;
    let slug = unique_slug();

    let reply = app
        .admin_post(
            "/admin/v1/tenants",
            &write_token(),
            &json!({ "slug": slug, "name": "No key", "service_account": "" }),
        )
        .await;

    reply.assert_admin_error(400, "bad_request");
    let tenant = tenancy::tenants::get_by_slug(&app.pool, &slug)
        .await
        .unwrap();
    assert!(tenant.is_none(), "the tenant was created without its key");
}

#[tokio::test]
async fn tenants_list_in_pages_with_a_cursor() {
    let isolated = IsolatedApp::spawn().await;
    let app = &isolated.app;
    let prefix = unique_slug();
    for suffix in ["a", "b", "c"] {
        app.admin_create_tenant(&format!("{prefix}-{suffix}")).await;
    }
    let token = read_token();

    let first = app.admin_get("/admin/v1/tenants?limit=2", &token).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = app
        .admin_get(
            &format!("/admin/v1/tenants?limit=2&cursor={cursor}"),
            &token,
        )
        .await;
    let everything = app.admin_get("/admin/v1/tenants", &token).await;
    let too_many = app.admin_get("/admin/v1/tenants?limit=1000", &token).await;

    assert_eq!(
        slugs(&first.body),
        [format!("{prefix}-a"), format!("{prefix}-b")]
    );
    assert_eq!(slugs(&second.body), [format!("{prefix}-c")]);
    assert_eq!(second.body["next_cursor"], Value::Null);
    assert_eq!(slugs(&everything.body).len(), 3);
    too_many.assert_admin_error(400, "bad_request");
    isolated.finish().await;
}

#[tokio::test]
async fn a_tenant_is_read_by_slug_and_unknown_slugs_are_404() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let token = read_token();

    let found = app
        .admin_get(&format!("/admin/v1/tenants/{}", tenant.tenant.slug), &token)
        .await;
    let missing = app
        .admin_get(&format!("/admin/v1/tenants/{}", unique_slug()), &token)
        .await;

    assert_eq!(found.status, 200);
    assert_eq!(found.body["id"], tenant.tenant.id.to_string());
    assert_eq!(found.body["stale_after_secs"], 7200);
    assert_eq!(found.body["rate_limit_per_sec"], Value::Null);
    missing.assert_admin_error(404, "not_found");
}

#[tokio::test]
async fn settings_change_and_bad_values_are_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let path = format!("/admin/v1/tenants/{}", tenant.tenant.slug);
    let token = write_token();

    let updated = app
        .admin_patch(
            &path,
            &token,
            &json!({
                "name": "Acme (EU)",
                "rate_limit_per_sec": 40,
                "stale_after_secs": 3600,
                "journal_retention_days": 90
            }),
        )
        .await;
    let back_to_default = app
        .admin_patch(&path, &token, &json!({ "rate_limit_per_sec": null }))
        .await;
    let zero = app
        .admin_patch(&path, &token, &json!({ "stale_after_secs": 0 }))
        .await;
    let wrong_type = app
        .admin_patch(&path, &token, &json!({ "journal_retention_days": "long" }))
        .await;
    let missing = app
        .admin_patch(
            &format!("/admin/v1/tenants/{}", unique_slug()),
            &token,
            &json!({ "name": "Ghost" }),
        )
        .await;

    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body["name"], "Acme (EU)");
    assert_eq!(updated.body["rate_limit_per_sec"], 40);
    assert_eq!(updated.body["stale_after_secs"], 3600);
    assert_eq!(updated.body["journal_retention_days"], 90);
    assert_eq!(back_to_default.body["rate_limit_per_sec"], Value::Null);
    assert_eq!(back_to_default.body["name"], "Acme (EU)");
    zero.assert_admin_error(400, "bad_request");
    wrong_type.assert_admin_error(400, "bad_request");
    missing.assert_admin_error(404, "not_found");
}

#[tokio::test]
async fn the_fusionauth_key_is_sealed_and_never_returned() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let path = format!("/admin/v1/tenants/{slug}");
    let token = write_token();
    let api_key = "fa-key-5f3b9c1e-never-echoed";
    let fa_tenant = uuid::Uuid::new_v4();
    let application = uuid::Uuid::new_v4();

    let connected = app
        .admin_patch(
            &path,
            &token,
            &json!({ "fusionauth": {
                "base_url": "http://127.0.0.1:9011",
                "api_key": api_key,
                "tenant_id": fa_tenant
            }}),
        )
        .await;
    let read_back = app.admin_get(&path, &read_token()).await;
    let kept_key = app
        .admin_patch(
            &path,
            &token,
            &json!({ "fusionauth": {
                "base_url": "http://127.0.0.1:9011",
                "tenant_id": fa_tenant,
                "application_id": application
            }}),
        )
        .await;
    let sealed: Vec<u8> = sqlx::query_scalar(
        "select fusionauth_api_key_sealed from roster_control.tenants where slug = $1",
    )
    .bind(slug)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let audit = app
        .admin_get(&format!("/admin/v1/audit?tenant={slug}"), &read_token())
        .await;

    assert_eq!(connected.status, 200, "{connected:?}");
    assert_eq!(connected.body["provisioning"], "fusionauth");
    assert_eq!(connected.body["fusionauth"]["api_key_set"], true);
    assert_eq!(
        connected.body["fusionauth"]["tenant_id"],
        fa_tenant.to_string()
    );
    assert_eq!(
        kept_key.body["fusionauth"]["application_id"],
        application.to_string()
    );
    for reply in [&connected, &read_back, &kept_key, &audit] {
        assert!(!reply.body.to_string().contains(api_key), "{reply:?}");
    }
    assert!(!sealed
        .windows(api_key.len())
        .any(|w| w == api_key.as_bytes()));
    let sealer = app.running.state.sealer.as_ref().unwrap();
    assert_eq!(sealer.open(&sealed).unwrap().expose(), api_key);
}

#[tokio::test]
async fn clearing_the_fusionauth_connection_returns_to_shadow_mode() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let path = format!("/admin/v1/tenants/{}", tenant.tenant.slug);
    let token = write_token();
    let connection = json!({ "fusionauth": {
        "base_url": "https://acme.fusionauth.io",
        "api_key": "fa-key",
        "tenant_id": uuid::Uuid::new_v4()
    }});
    assert_eq!(
        app.admin_patch(&path, &token, &connection).await.status,
        200
    );

    let cleared = app
        .admin_patch(&path, &token, &json!({ "fusionauth": null }))
        .await;

    assert_eq!(cleared.status, 200, "{cleared:?}");
    assert_eq!(cleared.body["provisioning"], "shadow");
    assert_eq!(cleared.body["fusionauth"], Value::Null);
    let stored = tenancy::tenants::get(&app.pool, tenant.tenant.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.fusionauth.is_none());
}

#[tokio::test]
async fn bad_fusionauth_connections_are_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let path = format!("/admin/v1/tenants/{}", tenant.tenant.slug);
    let token = write_token();
    let fa_tenant = uuid::Uuid::new_v4();

    let bad_scheme = app
        .admin_patch(
            &path,
            &token,
            &json!({ "fusionauth": {
                "base_url": "ftp://acme.example", "api_key": "k", "tenant_id": fa_tenant
            }}),
        )
        .await;
    let credentials_in_url = app
        .admin_patch(
            &path,
            &token,
            &json!({ "fusionauth": {
                "base_url": "https://user:pw@acme.example", "api_key": "k", "tenant_id": fa_tenant
            }}),
        )
        .await;
    let no_key_yet = app
        .admin_patch(
            &path,
            &token,
            &json!({ "fusionauth": {
                "base_url": "https://acme.example", "tenant_id": fa_tenant
            }}),
        )
        .await;
    let bad_tenant_id = app
        .admin_patch(
            &path,
            &token,
            &json!({ "fusionauth": {
                "base_url": "https://acme.example", "api_key": "k", "tenant_id": "nope"
            }}),
        )
        .await;

    for reply in [bad_scheme, credentials_in_url, no_key_yet, bad_tenant_id] {
        reply.assert_admin_error(400, "bad_request");
    }
    let stored = tenancy::tenants::get(&app.pool, tenant.tenant.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.fusionauth.is_none());
}

#[tokio::test]
async fn a_suspended_tenant_gets_403_on_scim_until_resumed() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let scim = format!("/scim/v2/{slug}/{SPC}");
    let token = write_token();

    let suspended = app
        .admin_post(
            &format!("/admin/v1/tenants/{slug}/suspend"),
            &token,
            &json!({}),
        )
        .await;
    let while_suspended = app.scim_status(&scim, &tenant.key.secret).await;
    let resumed = app
        .admin_post(
            &format!("/admin/v1/tenants/{slug}/resume"),
            &token,
            &json!({}),
        )
        .await;
    let after_resume = app.scim_status(&scim, &tenant.key.secret).await;
    let missing = app
        .admin_post(
            &format!("/admin/v1/tenants/{}/suspend", unique_slug()),
            &token,
            &json!({}),
        )
        .await;

    assert_eq!(suspended.status, 200);
    assert_eq!(suspended.body["status"], "suspended");
    assert_eq!(while_suspended, 403);
    assert_eq!(resumed.body["status"], "active");
    assert_eq!(after_resume, 200);
    missing.assert_admin_error(404, "not_found");
    let actions: Vec<String> = audit_of(&app, slug)
        .await
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(actions, ["tenant.resume", "tenant.suspend"]);
}

#[tokio::test]
async fn deletion_needs_confirmation_and_then_keys_stop_working() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let scim = format!("/scim/v2/{slug}/{SPC}");
    let token = write_token();
    let path = format!("/admin/v1/tenants/{slug}");

    let unconfirmed = app.admin_delete(&path, &token).await;
    let misconfirmed = app
        .admin_delete(&format!("{path}?confirm={}", unique_slug()), &token)
        .await;
    let still_working = app.scim_status(&scim, &tenant.key.secret).await;
    let deleted = app
        .admin_delete(&format!("{path}?confirm={slug}"), &token)
        .await;
    let after_delete = app
        .scim_status(&format!("/scim/v2/{SPC}"), &tenant.key.secret)
        .await;
    let gone = app.admin_get(&path, &read_token()).await;

    unconfirmed.assert_admin_error(400, "bad_request");
    assert!(unconfirmed.body["message"]
        .as_str()
        .unwrap()
        .contains(&format!("?confirm={slug}")));
    misconfirmed.assert_admin_error(400, "bad_request");
    assert_eq!(still_working, 200);
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(after_delete, 401);
    gone.assert_admin_error(404, "not_found");
    let history = app
        .admin_get(
            "/admin/v1/audit?action=tenant.delete&limit=200",
            &read_token(),
        )
        .await;
    let record = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tenant_id"] == tenant.tenant.id.to_string())
        .cloned()
        .unwrap();
    assert_eq!(record["actor"], SUPPORT);
    assert_eq!(record["target"], slug);
}

#[tokio::test]
async fn keys_are_issued_listed_and_revoked() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let keys_path = format!("/admin/v1/tenants/{slug}/keys");
    let scim = format!("/scim/v2/{slug}/{SPC}");
    let token = write_token();

    let issued = app
        .admin_post(
            &keys_path,
            &token,
            &json!({ "service_account": "entra-rotation", "expires_at": "2999-01-01T00:00:00Z" }),
        )
        .await;
    let new_key = issued.body["key"].as_str().unwrap().to_owned();
    let listed = app.admin_get(&keys_path, &read_token()).await;
    let old_id = tenant.key.id;
    let revoked = app
        .admin_post(&format!("{keys_path}/{old_id}/revoke"), &token, &json!({}))
        .await;
    let relisted = app.admin_get(&keys_path, &read_token()).await;

    assert_eq!(issued.status, 201, "{issued:?}");
    assert_eq!(issued.body["service_account"], "entra-rotation");
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 2);
    let newest = &listed.body["items"][0];
    assert_eq!(newest["prefix"], issued.body["prefix"]);
    assert_eq!(newest["state"], "active");
    let expires_at: chrono::DateTime<chrono::Utc> =
        newest["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires_at.to_rfc3339(), "2999-01-01T00:00:00+00:00");
    assert!(newest.get("key").is_none());
    assert!(!listed.body.to_string().contains(&new_key));
    assert!(!listed.body.to_string().contains(&tenant.key.secret));
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!(revoked.body["state"], "revoked");
    assert_eq!(relisted.body["items"][1]["state"], "revoked");
    assert_eq!(app.scim_status(&scim, &tenant.key.secret).await, 401);
    assert_eq!(app.scim_status(&scim, &new_key).await, 200);
    let actions: Vec<String> = audit_of(&app, slug)
        .await
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert_eq!(actions, ["key.revoke", "key.issue"]);
}

#[tokio::test]
async fn key_mistakes_are_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let other = app.create_tenant().await;
    let keys_path = format!("/admin/v1/tenants/{}/keys", tenant.tenant.slug);
    let token = write_token();

    let unknown = app
        .admin_post(
            &format!("{keys_path}/{}/revoke", uuid::Uuid::new_v4()),
            &token,
            &json!({}),
        )
        .await;
    let not_a_uuid = app
        .admin_post(&format!("{keys_path}/rst_abc/revoke"), &token, &json!({}))
        .await;
    let another_tenants_key = app
        .admin_post(
            &format!("{keys_path}/{}/revoke", other.key.id),
            &token,
            &json!({}),
        )
        .await;
    let past_expiry = app
        .admin_post(
            &keys_path,
            &token,
            &json!({ "expires_at": "2001-01-01T00:00:00Z" }),
        )
        .await;
    let long_name = app
        .admin_post(
            &keys_path,
            &token,
            &json!({ "service_account": "x".repeat(101) }),
        )
        .await;

    unknown.assert_admin_error(404, "not_found");
    not_a_uuid.assert_admin_error(400, "bad_request");
    another_tenants_key.assert_admin_error(404, "not_found");
    past_expiry.assert_admin_error(400, "bad_request");
    long_name.assert_admin_error(400, "bad_request");
    let other_scim = format!("/scim/v2/{}/{SPC}", other.tenant.slug);
    assert_eq!(app.scim_status(&other_scim, &other.key.secret).await, 200);
}

#[tokio::test]
async fn the_audit_log_pages_and_filters() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let token = write_token();
    for name in ["One", "Two", "Three"] {
        let path = format!("/admin/v1/tenants/{slug}");
        app.admin_patch(&path, &token, &json!({ "name": name }))
            .await;
    }
    app.admin_post(
        &format!("/admin/v1/tenants/{slug}/keys"),
        &token,
        &json!({}),
    )
    .await;
    let base = format!("/admin/v1/audit?tenant={slug}");

    let first = app
        .admin_get(&format!("{base}&limit=2"), &read_token())
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = app
        .admin_get(&format!("{base}&limit=2&cursor={cursor}"), &read_token())
        .await;
    let updates = app
        .admin_get(&format!("{base}&action=tenant.update"), &read_token())
        .await;
    let by_nobody = app
        .admin_get(&format!("{base}&actor=nobody"), &read_token())
        .await;
    let bad_cursor = app
        .admin_get(&format!("{base}&cursor=yesterday"), &read_token())
        .await;
    let unknown_tenant = app
        .admin_get(
            &format!("/admin/v1/audit?tenant={}", unique_slug()),
            &read_token(),
        )
        .await;

    let actions = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(actions(&first.body), ["key.issue", "tenant.update"]);
    assert_eq!(actions(&second.body), ["tenant.update", "tenant.update"]);
    assert_eq!(second.body["next_cursor"], Value::Null);
    assert_eq!(updates.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        updates.body["items"][0]["detail"],
        json!({ "name": "Three" })
    );
    assert_eq!(updates.body["items"][0]["actor"], SUPPORT);
    assert_eq!(by_nobody.body["items"], json!([]));
    bad_cursor.assert_admin_error(400, "bad_request");
    unknown_tenant.assert_admin_error(404, "not_found");
}

#[tokio::test]
async fn unknown_admin_paths_and_methods_answer_in_the_admin_shape() {
    let app = spawn_app().await;
    let token = read_token();

    let unknown = app.admin_get("/admin/v1/nothing-here", &token).await;
    let method = app
        .admin(
            reqwest::Method::PUT,
            "/admin/v1/tenants",
            Some(&token),
            None,
        )
        .await;

    unknown.assert_admin_error(404, "not_found");
    method.assert_admin_error(405, "method_not_allowed");
}
