//! The admin API's groups and memberships against the real server: configuration, listings
//! with the SCIM badge and stale flag, the Basic User group's protection, hand-managed
//! memberships, and the Basic User invariant after every kind of change.

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::admin2_helpers::{app_and_tenant, assert_guarded, tenant_path};
use crate::admin_helpers::write_token;
use crate::groups_helpers::{
    add_members, assert_invariant, basic_user_id, basic_user_members, begin, insert_user,
    members_of,
};

#[tokio::test]
async fn a_group_is_created_read_updated_and_deleted() {
    let (app, tenant) = app_and_tenant().await;
    let body = json!({
        "display_name": "  Finance ",
        "external_id": "0f3c9a52-entra",
        "sync_enabled": true,
        "permissions": ["invoices:read", "invoices:approve"],
    });

    let created = app.admin_create_group(&tenant, body).await;
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let fetched = app.admin_get_group(&tenant, id).await;
    let path = tenant_path(&tenant, &format!("/groups/{id}"));
    let updated = app
        .admin_patch(
            &path,
            &write_token(),
            &json!({ "display_name": "Finance EU", "external_id": null, "permissions": [] }),
        )
        .await;
    let deleted = app.admin_delete(&path, &write_token()).await;
    let gone = app.admin_get(&path, &write_token()).await;

    assert_eq!(created["display_name"], "Finance");
    assert_eq!(created["synced"], true);
    assert_eq!(created["system"], false);
    assert_eq!(created["member_count"], 0);
    assert_eq!(created["stale"], true, "synced but never touched by Entra");
    assert_eq!(
        created["permissions"],
        json!(["invoices:approve", "invoices:read"])
    );
    assert_eq!(fetched, created);
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body["display_name"], "Finance EU");
    assert_eq!(updated.body["external_id"], json!(null));
    assert_eq!(updated.body["synced"], false);
    assert_eq!(updated.body["stale"], false);
    assert_eq!(updated.body["permissions"], json!([]));
    assert_eq!(deleted.status, 204, "{deleted:?}");
    gone.assert_admin_error(404, "not_found");
    for action in ["group.create", "group.update", "group.delete"] {
        let records = app.audited(&tenant, action).await;
        assert_eq!(records.len(), 1, "{action}");
        assert_eq!(records[0]["target"], format!("group:{id}"));
    }
}

#[tokio::test]
async fn bad_group_changes_are_refused_with_clear_statuses() {
    let (app, tenant) = app_and_tenant().await;
    let body = json!({ "display_name": "A", "external_id": "dup", "sync_enabled": true });
    app.admin_create_group(&tenant, body.clone()).await;
    let path = tenant_path(&tenant, "/groups");

    let duplicate = app.admin_post(&path, &write_token(), &body).await;
    let blank = app
        .admin_post(&path, &write_token(), &json!({ "display_name": " " }))
        .await;
    let unknown = app
        .admin_patch(
            &format!("{path}/{}", Uuid::new_v4()),
            &write_token(),
            &json!({ "sync_enabled": true }),
        )
        .await;
    let bad_cursor = app
        .admin_get(&format!("{path}?cursor=zz!"), &write_token())
        .await;

    duplicate.assert_admin_error(409, "conflict");
    blank.assert_admin_error(400, "bad_request");
    unknown.assert_admin_error(404, "not_found");
    bad_cursor.assert_admin_error(400, "bad_request");
}

#[tokio::test]
async fn basic_user_is_listed_first_as_a_system_group_and_protected() {
    let (app, tenant) = app_and_tenant().await;
    let basic_user = basic_user_id(&app, &tenant).await;
    let user = insert_user(&app, &tenant).await;
    let path = tenant_path(&tenant, &format!("/groups/{basic_user}"));

    let deleted = app.admin_delete(&path, &write_token()).await;
    let synced = app
        .admin_patch(
            &path,
            &write_token(),
            &json!({ "external_id": "x", "sync_enabled": true }),
        )
        .await;
    let added = app.admin_add_members(&tenant, basic_user, &[user]).await;
    let listed = app
        .admin_all_pages(&tenant_path(&tenant, "/groups"), 50)
        .await;

    deleted.assert_admin_error(409, "conflict");
    assert!(
        deleted.body["message"]
            .as_str()
            .unwrap()
            .contains("system group"),
        "{deleted:?}"
    );
    synced.assert_admin_error(409, "conflict");
    added.assert_admin_error(409, "conflict");
    assert!(added.body["message"]
        .as_str()
        .unwrap()
        .contains("safety net"));
    assert_eq!(listed[0]["id"], basic_user.to_string());
    assert_eq!(listed[0]["system"], true);
    assert_eq!(listed[0]["member_count"], 1);
    assert_eq!(
        app.admin_get_group(&tenant, basic_user).await["synced"],
        false
    );
}

#[tokio::test]
async fn listings_page_through_every_group_once_in_order() {
    let (app, tenant) = app_and_tenant().await;
    for name in ["delta", "Alpha", "charlie", "Bravo", "echo"] {
        app.admin_create_group(&tenant, json!({ "display_name": name }))
            .await;
    }

    let groups = app
        .admin_all_pages(&tenant_path(&tenant, "/groups"), 2)
        .await;

    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Basic User", "Alpha", "Bravo", "charlie", "delta", "echo"]
    );
}

#[tokio::test]
async fn a_synced_group_recently_touched_by_entra_is_not_stale() {
    let (app, tenant) = app_and_tenant().await;
    let group = app.admin_group(&tenant, true).await;
    let user = insert_user(&app, &tenant).await;

    let before = app.admin_get_group(&tenant, group).await;
    let patched = add_members(&app, &tenant, group, &[user]).await;
    let after = app.admin_get_group(&tenant, group).await;
    let mut tx = begin(&app, &tenant).await;
    sqlx::query("update groups set last_synced_at = now() - interval '3 hours' where id = $1")
        .bind(group)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let old = app.admin_get_group(&tenant, group).await;

    assert_eq!(patched.status, 204, "{patched:?}");
    assert_eq!(before["stale"], true);
    assert_eq!(after["stale"], false);
    assert!(after["last_synced_at"].is_string());
    assert_eq!(after["member_count"], 1);
    assert_eq!(old["stale"], true);
}

#[tokio::test]
async fn turning_sync_off_returns_members_to_basic_user() {
    let (app, tenant) = app_and_tenant().await;
    let group = app.admin_group(&tenant, true).await;
    let user = insert_user(&app, &tenant).await;
    add_members(&app, &tenant, group, &[user]).await;
    assert!(!basic_user_members(&app, &tenant).await.contains(&user));

    let path = tenant_path(&tenant, &format!("/groups/{group}"));
    let reply = app
        .admin_patch(&path, &write_token(), &json!({ "sync_enabled": false }))
        .await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["synced"], false);
    assert!(basic_user_members(&app, &tenant).await.contains(&user));
    assert_invariant(&app, &tenant).await;
}

#[tokio::test]
async fn deleting_a_synced_group_returns_its_members_to_basic_user() {
    let (app, tenant) = app_and_tenant().await;
    let group = app.admin_group(&tenant, true).await;
    let user = insert_user(&app, &tenant).await;
    add_members(&app, &tenant, group, &[user]).await;

    let path = tenant_path(&tenant, &format!("/groups/{group}"));
    let reply = app.admin_delete(&path, &write_token()).await;

    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(basic_user_members(&app, &tenant).await.contains(&user));
    assert_invariant(&app, &tenant).await;
}

#[tokio::test]
async fn platform_groups_take_members_by_hand_and_synced_ones_refuse() {
    let (app, tenant) = app_and_tenant().await;
    let platform = app.admin_group(&tenant, false).await;
    let synced = app.admin_group(&tenant, true).await;
    let (a, b) = (
        insert_user(&app, &tenant).await,
        insert_user(&app, &tenant).await,
    );

    let added = app.admin_add_members(&tenant, platform, &[a, b, a]).await;
    let again = app.admin_add_members(&tenant, platform, &[a]).await;
    let unknown = app
        .admin_add_members(&tenant, platform, &[Uuid::new_v4()])
        .await;
    let refused = app.admin_add_members(&tenant, synced, &[a]).await;
    let remove_path = tenant_path(&tenant, &format!("/groups/{platform}/members/{b}"));
    let removed = app.admin_delete(&remove_path, &write_token()).await;
    let removed_again = app.admin_delete(&remove_path, &write_token()).await;
    let removed_from_synced = app
        .admin_delete(
            &tenant_path(&tenant, &format!("/groups/{synced}/members/{a}")),
            &write_token(),
        )
        .await;

    assert_eq!(added.status, 200, "{added:?}");
    assert_eq!(added.body["added"].as_array().unwrap().len(), 2);
    assert_eq!(again.body["added"], json!([]));
    unknown.assert_admin_error(400, "bad_request");
    refused.assert_admin_error(409, "conflict");
    assert!(refused.body["message"].as_str().unwrap().contains("Entra"));
    assert_eq!(removed.status, 204, "{removed:?}");
    removed_again.assert_admin_error(404, "not_found");
    removed_from_synced.assert_admin_error(409, "conflict");
    assert_eq!(
        members_of(&app, &tenant, platform).await,
        [a].into_iter().collect()
    );
    let basic = basic_user_members(&app, &tenant).await;
    assert!(
        basic.contains(&a) && basic.contains(&b),
        "still in no synced group"
    );
    assert_invariant(&app, &tenant).await;
    assert_eq!(app.audited(&tenant, "group.members.add").await.len(), 2);
    assert_eq!(app.audited(&tenant, "group.members.remove").await.len(), 1);
}

#[tokio::test]
async fn a_groups_members_are_listed_a_page_at_a_time() {
    let (app, tenant) = app_and_tenant().await;
    let group = app.admin_group(&tenant, false).await;
    let mut users = Vec::new();
    for _ in 0..5 {
        users.push(insert_user(&app, &tenant).await);
    }
    app.admin_add_members(&tenant, group, &users).await;

    let path = tenant_path(&tenant, &format!("/groups/{group}/members"));
    let listed = app.admin_all_pages(&path, 2).await;
    let missing = app
        .admin_get(
            &tenant_path(&tenant, &format!("/groups/{}/members", Uuid::new_v4())),
            &write_token(),
        )
        .await;

    users.sort_unstable();
    let ids: Vec<Uuid> = listed
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, users);
    assert!(listed[0]["display"].as_str().unwrap().starts_with("User "));
    missing.assert_admin_error(404, "not_found");
}

#[tokio::test]
async fn group_and_membership_operations_check_the_token() {
    let (app, tenant) = app_and_tenant().await;
    let group = app.admin_group(&tenant, false).await;
    let user = insert_user(&app, &tenant).await;
    let name = json!({ "display_name": "X" });
    let members = json!({ "user_ids": [user] });

    assert_guarded(&app, &tenant, Method::GET, "/groups", None, false).await;
    assert_guarded(&app, &tenant, Method::POST, "/groups", Some(&name), true).await;
    let one = format!("/groups/{group}");
    assert_guarded(&app, &tenant, Method::GET, &one, None, false).await;
    assert_guarded(&app, &tenant, Method::PATCH, &one, Some(&name), true).await;
    assert_guarded(&app, &tenant, Method::DELETE, &one, None, true).await;
    let list = format!("/groups/{group}/members");
    assert_guarded(&app, &tenant, Method::GET, &list, None, false).await;
    assert_guarded(&app, &tenant, Method::POST, &list, Some(&members), true).await;
    let member = format!("/groups/{group}/members/{user}");
    assert_guarded(&app, &tenant, Method::DELETE, &member, None, true).await;
    assert_eq!(app.admin_get_group(&tenant, group).await["member_count"], 0);
}
