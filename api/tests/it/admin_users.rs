//! The admin API's users against the real server: search, the support view of one user, and
//! profile, status and deletion changes — in shadow mode and through the FusionAuth double.

use api::fusionauth::double::{Fault, FaultKind};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin2_helpers::{app_and_tenant, assert_guarded, connect_fusionauth, tenant_path};
use crate::admin_helpers::{read_token, write_token};
use crate::groups_helpers::{
    add_members, assert_invariant, basic_user_members, begin, create_group_with, insert_user,
};
use crate::helpers::{TestApp, TestTenant};

/// Creates a user over SCIM as Entra would; returns its id.
async fn scim_user(app: &TestApp, tenant: &TestTenant, user_name: &str) -> Uuid {
    let reply = app.post_user(tenant, user_name, user_name).await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.body["id"].as_str().unwrap().parse().unwrap()
}

fn user_path(tenant: &TestTenant, user: Uuid) -> String {
    tenant_path(tenant, &format!("/users/{user}"))
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn users_are_searched_by_email_name_group_and_source() {
    let (app, tenant) = app_and_tenant().await;
    let ada = scim_user(&app, &tenant, "ada.lovelace@contoso.com").await;
    let alan = scim_user(&app, &tenant, "alan.turing@contoso.com").await;
    let grace = scim_user(&app, &tenant, "grace@fabrikam.com").await;
    let group = app.admin_group(&tenant, false).await;
    app.admin_add_members(&tenant, group, &[alan]).await;
    let list = tenant_path(&tenant, "/users");

    let all = app.admin_all_pages(&list, 2).await;
    let contoso = app
        .admin_all_pages(&format!("{list}?email=CONTOSO"), 50)
        .await;
    let by_name = app
        .admin_all_pages(&format!("{list}?name=test%20user&email=fabrikam"), 50)
        .await;
    let in_group = app
        .admin_all_pages(&format!("{list}?group={group}"), 50)
        .await;
    let platform = app
        .admin_all_pages(&format!("{list}?source=platform"), 50)
        .await;
    let wildcard = app.admin_all_pages(&format!("{list}?email=%25"), 50).await;

    assert_eq!(
        ids(&all),
        [ada, alan, grace].map(|id| id.to_string()).to_vec()
    );
    assert_eq!(ids(&contoso), [ada, alan].map(|id| id.to_string()).to_vec());
    assert_eq!(ids(&by_name), [grace.to_string()]);
    assert_eq!(ids(&in_group), [alan.to_string()]);
    assert!(platform.is_empty());
    assert!(wildcard.is_empty(), "a % in a term is a literal");
    assert_eq!(all[0]["email"], "ada.lovelace@contoso.com");
    assert_eq!(all[0]["source"], "scim");
}

#[tokio::test]
async fn a_user_is_shown_with_groups_permissions_link_and_journal() {
    let (app, tenant) = app_and_tenant().await;
    let user = scim_user(&app, &tenant, "kim@contoso.com").await;
    let synced = create_group_with(&app, &tenant, true, &["reports:read"]).await;
    add_members(&app, &tenant, synced.id, &[user]).await;

    let reply = app
        .admin_get(&user_path(&tenant, user), &read_token())
        .await;
    let missing = app
        .admin_get(&user_path(&tenant, Uuid::new_v4()), &read_token())
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    let body = &reply.body;
    assert_eq!(body["id"], user.to_string());
    assert_eq!(body["user_name"], "kim@contoso.com");
    assert_eq!(
        body["fusionauth"],
        json!({ "user_id": null, "link": "skipped" })
    );
    assert_eq!(body["groups"].as_array().unwrap().len(), 1);
    assert_eq!(body["groups"][0]["group_id"], synced.id.to_string());
    assert_eq!(body["groups"][0]["synced"], true);
    assert_eq!(body["groups"][0]["source"], "scim");
    assert_eq!(body["effective_permissions"], json!(["reports:read"]));
    let operations: Vec<&str> = body["recent_journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert!(operations.contains(&"scim.users.create"), "{operations:?}");
    assert!(operations.contains(&"safety_net"), "{operations:?}");
    missing.assert_admin_error(404, "not_found");
}

#[tokio::test]
async fn a_profile_update_in_shadow_mode_changes_roster_and_is_journaled() {
    let (app, tenant) = app_and_tenant().await;
    let user = scim_user(&app, &tenant, "kim@contoso.com").await;
    let other = scim_user(&app, &tenant, "lee@contoso.com").await;
    let path = user_path(&tenant, user);

    let updated = app
        .admin_patch(
            &path,
            &write_token(),
            &json!({ "display_name": "Kim K", "email": "kim.k@contoso.com" }),
        )
        .await;
    let taken = app
        .admin_patch(
            &user_path(&tenant, other),
            &write_token(),
            &json!({ "email": "KIM.K@contoso.com" }),
        )
        .await;
    let empty = app.admin_patch(&path, &write_token(), &json!({})).await;
    let missing = app
        .admin_patch(
            &user_path(&tenant, Uuid::new_v4()),
            &write_token(),
            &json!({ "display_name": "X" }),
        )
        .await;

    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body["display_name"], "Kim K");
    assert_eq!(updated.body["email"], "kim.k@contoso.com");
    taken.assert_admin_error(409, "conflict");
    empty.assert_admin_error(400, "bad_request");
    missing.assert_admin_error(404, "not_found");
    let scim = app.scim_get(&tenant, &format!("/Users/{user}")).await;
    assert_eq!(scim.body["emails"][0]["value"], "kim.k@contoso.com");
    let journal = app.journal(&tenant).await;
    let entry = journal
        .iter()
        .find(|e| e.operation == "admin.users.update")
        .unwrap();
    assert_eq!(entry.user_id, Some(user));
    assert_eq!(entry.fusionauth_outcome.as_deref(), Some("skipped"));
    assert!(
        !entry.detail.as_deref().unwrap().contains("kim.k"),
        "no PII"
    );
    let audited = app.audited(&tenant, "user.update").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(
        audited[0]["detail"]["fields"],
        json!(["display_name", "email"])
    );
}

#[tokio::test]
async fn deactivation_and_reactivation_keep_the_basic_user_invariant() {
    let (app, tenant) = app_and_tenant().await;
    let loner = insert_user(&app, &tenant).await;
    let member = insert_user(&app, &tenant).await;
    let platform = app.admin_group(&tenant, false).await;
    app.admin_add_members(&tenant, platform, &[member]).await;

    let deactivated = app.admin_user_action(&tenant, loner, "deactivate").await;
    let basic_while_inactive = basic_user_members(&app, &tenant).await;
    assert_invariant(&app, &tenant).await;
    let reactivated = app.admin_user_action(&tenant, loner, "reactivate").await;
    let member_off = app.admin_user_action(&tenant, member, "deactivate").await;
    let missing = app
        .admin_user_action(&tenant, Uuid::new_v4(), "deactivate")
        .await;

    assert_eq!(deactivated.status, 200, "{deactivated:?}");
    assert_eq!(deactivated.body["active"], false);
    assert!(!basic_while_inactive.contains(&loner));
    assert_eq!(reactivated.body["active"], true);
    assert_eq!(member_off.status, 200, "{member_off:?}");
    let basic = basic_user_members(&app, &tenant).await;
    assert!(basic.contains(&loner) && !basic.contains(&member));
    assert_invariant(&app, &tenant).await;
    missing.assert_admin_error(404, "not_found");
    let operations: Vec<String> = app
        .journal(&tenant)
        .await
        .into_iter()
        .filter(|e| e.user_id == Some(loner))
        .map(|e| e.operation)
        .collect();
    assert!(operations.contains(&"admin.users.deactivate".to_owned()));
    assert!(operations.contains(&"admin.users.reactivate".to_owned()));
    assert_eq!(app.audited(&tenant, "user.deactivate").await.len(), 2);
}

#[tokio::test]
async fn a_deleted_user_is_gone_with_their_memberships() {
    let (app, tenant) = app_and_tenant().await;
    let user = scim_user(&app, &tenant, "gone@contoso.com").await;
    let path = user_path(&tenant, user);

    let deleted = app.admin_delete(&path, &write_token()).await;
    let again = app.admin_delete(&path, &write_token()).await;

    assert_eq!(deleted.status, 204, "{deleted:?}");
    again.assert_admin_error(404, "not_found");
    assert_eq!(app.user_count(&tenant).await, 0);
    let mut tx = begin(&app, &tenant).await;
    let memberships: i64 = sqlx::query_scalar("select count(*) from memberships")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(memberships, 0);
    assert_eq!(app.audited(&tenant, "user.delete").await.len(), 1);
}

#[tokio::test]
async fn profile_updates_and_deactivations_reach_fusionauth() {
    let (app, tenant) = app_and_tenant().await;
    let double = connect_fusionauth(&app, &tenant).await;
    let user = scim_user(&app, &tenant, "fa@contoso.com").await;
    let fa_user = app
        .admin_get(&user_path(&tenant, user), &read_token())
        .await
        .body["fusionauth"]["user_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();

    let updated = app
        .admin_patch(
            &user_path(&tenant, user),
            &write_token(),
            &json!({ "given_name": "Fay", "email": "fay@contoso.com" }),
        )
        .await;
    let after_update = double.user(fa_user).unwrap();
    let deactivated = app.admin_user_action(&tenant, user, "deactivate").await;
    let after_deactivation = double.user(fa_user).unwrap();
    let reactivated = app.admin_user_action(&tenant, user, "reactivate").await;

    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(after_update["email"], "fay@contoso.com");
    assert_eq!(after_update["firstName"], "Fay");
    assert_eq!(deactivated.status, 200, "{deactivated:?}");
    assert_eq!(after_deactivation["active"], false);
    assert_eq!(reactivated.status, 200, "{reactivated:?}");
    assert_eq!(double.user(fa_user).unwrap()["active"], true);
    let journal = app.journal(&tenant).await;
    let outcome = |operation: &str| {
        journal
            .iter()
            .find(|e| e.operation == operation)
            .and_then(|e| e.fusionauth_outcome.clone())
    };
    assert_eq!(outcome("admin.users.update").as_deref(), Some("updated"));
    assert_eq!(
        outcome("admin.users.deactivate").as_deref(),
        Some("deactivated")
    );
}

#[tokio::test]
async fn fusionauth_down_is_503_and_changes_nothing_in_roster() {
    let (app, tenant) = app_and_tenant().await;
    let double = connect_fusionauth(&app, &tenant).await;
    let user = scim_user(&app, &tenant, "down@contoso.com").await;
    double.set_fault(Fault::always(FaultKind::Status(503)));

    let updated = app
        .admin_patch(
            &user_path(&tenant, user),
            &write_token(),
            &json!({ "display_name": "Changed" }),
        )
        .await;
    let deactivated = app.admin_user_action(&tenant, user, "deactivate").await;
    let deleted = app
        .admin_delete(&user_path(&tenant, user), &write_token())
        .await;
    double.clear_faults();
    let after = app
        .admin_get(&user_path(&tenant, user), &read_token())
        .await;

    for reply in [&updated, &deactivated, &deleted] {
        reply.assert_admin_error(503, "unavailable");
        assert!(reply.header("retry-after").is_some(), "{reply:?}");
    }
    assert_eq!(after.body["display_name"], "Test User");
    assert_eq!(after.body["active"], true);
    assert!(basic_user_members(&app, &tenant).await.contains(&user));
}

#[tokio::test]
async fn user_operations_check_the_token() {
    let (app, tenant) = app_and_tenant().await;
    let user = insert_user(&app, &tenant).await;
    let one = format!("/users/{user}");
    let profile = json!({ "display_name": "X" });

    assert_guarded(&app, &tenant, Method::GET, "/users", None, false).await;
    assert_guarded(&app, &tenant, Method::GET, &one, None, false).await;
    assert_guarded(&app, &tenant, Method::PATCH, &one, Some(&profile), true).await;
    assert_guarded(&app, &tenant, Method::DELETE, &one, None, true).await;
    for action in ["deactivate", "reactivate"] {
        let path = format!("{one}/{action}");
        assert_guarded(&app, &tenant, Method::POST, &path, None, true).await;
    }
    assert_eq!(app.user_count(&tenant).await, 1);
}
