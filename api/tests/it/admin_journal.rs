//! The admin API's sync journal and counters against the real server: filters, newest-first
//! paging, and counts that let support say "your Entra app has Update switched on".

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin2_helpers::{app_and_tenant, assert_guarded, tenant_path};
use crate::admin_helpers::read_token;
use crate::groups_helpers::{insert_user, patch_group};
use crate::helpers::{TestApp, TestTenant};

/// Entra's user PATCH with its capitalised `op`, which Roster acknowledges and ignores.
async fn ignored_user_patch(app: &TestApp, tenant: &TestTenant, user: &str) {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{ "op": "Replace", "path": "displayName", "value": "Someone Else" }]
    });
    let reply = app
        .scim(
            Method::PATCH,
            tenant,
            &format!("/Users/{user}"),
            Some(&body),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

async fn journal_page(app: &TestApp, tenant: &TestTenant, query: &str) -> Vec<Value> {
    app.running.state.journal.flush().await;
    app.admin_all_pages(&tenant_path(tenant, &format!("/journal{query}")), 2)
        .await
}

#[tokio::test]
async fn the_journal_filters_by_user_group_outcome_operation_and_time() {
    let (app, tenant) = app_and_tenant().await;
    let created = app
        .post_user(&tenant, "kim@contoso.com", "kim@contoso.com")
        .await;
    let user = created.body["id"].as_str().unwrap().to_owned();
    ignored_user_patch(&app, &tenant, &user).await;
    let other = insert_user(&app, &tenant).await;
    let group = app.admin_group(&tenant, true).await;
    let patched = patch_group(
        &app,
        &tenant,
        group,
        json!([{ "op": "add", "path": "members", "value": [{ "value": other.to_string() }] }]),
    )
    .await;
    assert_eq!(patched.status, 204, "{patched:?}");

    let all = journal_page(&app, &tenant, "").await;
    let for_user = journal_page(&app, &tenant, &format!("?user_id={user}")).await;
    let for_group = journal_page(&app, &tenant, &format!("?group_id={group}")).await;
    let ignored = journal_page(&app, &tenant, "?outcome=ignored").await;
    let creates = journal_page(&app, &tenant, "?operation=scim.users.create").await;
    let future = (Utc::now() + Duration::hours(1)).timestamp();
    let later = journal_page(&app, &tenant, &format!("?from={}", rfc3339(future))).await;
    let past = (Utc::now() - Duration::hours(1)).timestamp();
    let before = journal_page(&app, &tenant, &format!("?to={}", rfc3339(past))).await;

    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert!(for_user.iter().all(|e| e["user_id"] == user.as_str()));
    assert!(
        for_user.len() >= 3,
        "create, safety net, ignored patch: {for_user:?}"
    );
    assert!(!for_group.is_empty());
    assert!(for_group.iter().all(|e| e["group_id"] == group.to_string()));
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert_eq!(ignored[0]["operation"], "scim.users.patch");
    assert_eq!(ignored[0]["quirks"], json!(["capitalised_op"]));
    assert_eq!(creates.len(), 1);
    assert!(later.is_empty() && before.is_empty());
}

fn rfc3339(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[tokio::test]
async fn bad_journal_queries_are_400() {
    let (app, tenant) = app_and_tenant().await;
    let path = tenant_path(&tenant, "/journal");

    let inverted = app
        .admin_get(
            &format!("{path}?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
            &read_token(),
        )
        .await;
    let outcome = app
        .admin_get(&format!("{path}?outcome=exploded"), &read_token())
        .await;
    let cursor = app
        .admin_get(&format!("{path}?cursor=abc"), &read_token())
        .await;

    inverted.assert_admin_error(400, "bad_request");
    outcome.assert_admin_error(400, "bad_request");
    cursor.assert_admin_error(400, "bad_request");
}

#[tokio::test]
async fn counters_show_ignored_patches_quirks_and_errors_with_a_hint() {
    let (app, tenant) = app_and_tenant().await;
    let created = app
        .post_user(&tenant, "kim@contoso.com", "kim@contoso.com")
        .await;
    let user = created.body["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        ignored_user_patch(&app, &tenant, &user).await;
    }
    let conflict = app
        .post_user(&tenant, "kim@contoso.com", "kim@contoso.com")
        .await;
    assert_eq!(conflict.status, 409);
    app.running.state.journal.flush().await;

    let reply = app
        .admin_get(&tenant_path(&tenant, "/counters"), &read_token())
        .await;
    let narrow = app
        .admin_get(&tenant_path(&tenant, "/counters?days=0"), &read_token())
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    let body = &reply.body;
    assert_eq!(body["window_days"], 30);
    assert_eq!(
        body["ignored_writes"],
        json!([{ "operation": "scim.users.patch", "count": 3 }])
    );
    assert_eq!(
        body["quirks"][0],
        json!({ "quirk": "capitalised_op", "count": 3 }),
        "the create's own quirks follow: {body}"
    );
    let errors = body["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["outcome"] == "rejected"
            && e["operation"] == "scim.users.create"
            && e["status"] == 409),
        "{errors:?}"
    );
    let hints = body["hints"].as_array().unwrap();
    assert!(
        hints[0].as_str().unwrap().contains("Update switched on"),
        "{hints:?}"
    );
    narrow.assert_admin_error(400, "bad_request");
}

#[tokio::test]
async fn journal_and_counters_check_the_token() {
    let (app, tenant) = app_and_tenant().await;

    assert_guarded(&app, &tenant, Method::GET, "/journal", None, false).await;
    assert_guarded(&app, &tenant, Method::GET, "/counters", None, false).await;
    let unknown = app
        .admin_get(
            &format!(
                "/admin/v1/tenants/no-such-{}/journal",
                Uuid::new_v4().simple()
            ),
            &read_token(),
        )
        .await;
    unknown.assert_admin_error(404, "not_found");
}
