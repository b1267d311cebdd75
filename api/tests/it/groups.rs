//! SCIM Groups, membership sync and the Basic User safety net, through the real server.

use std::collections::BTreeSet;

use api::directory::groups::{self, GroupError};
use futures::future::join_all;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::groups_helpers::{
    add_members, assert_invariant, basic_user_id, basic_user_members, begin, create_group,
    create_group_with, group_path, insert_user, insert_user_with, insert_users_bulk, journal_of,
    last_synced_at, members_of, patch_group, remove_members,
};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Entra's group match query for an object id.
fn match_query(object_id: &str) -> String {
    format!("/Groups?excludedAttributes=members&filter=externalId+eq+%22{object_id}%22")
}

/// A server whose pool lets many requests wait for row locks without timing out.
async fn spawn_patient_app() -> TestApp {
    spawn_app_with(|config| {
        config.store.db_max_connections = 20;
        config.store.db_acquire_timeout_ms = 20_000;
    })
    .await
}

#[tokio::test]
async fn entra_group_flow_replays_as_documented() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let object_id = group.external_id.clone().unwrap();
    let (alice, bob) = (
        insert_user(&app, &tenant).await,
        insert_user(&app, &tenant).await,
    );

    // Match by externalId, members excluded.
    let found = app.scim_get(&tenant, &match_query(&object_id)).await;
    assert_eq!(found.status, 200, "{found:?}");
    assert_eq!(found.body["totalResults"], 1);
    let resource = &found.body["Resources"][0];
    assert_eq!(resource["id"], group.id.to_string());
    assert_eq!(resource["externalId"], object_id);
    assert_eq!(resource["displayName"], group.display_name);
    assert!(resource.get("members").is_none(), "{resource}");

    // Add two members, then the same add again.
    let add = add_members(&app, &tenant, group.id, &[alice, bob]).await;
    let again = add_members(&app, &tenant, group.id, &[alice, bob]).await;
    assert_eq!(
        (add.status.as_u16(), again.status.as_u16()),
        (204, 204),
        "{add:?} {again:?}"
    );
    assert_eq!(add.body, serde_json::Value::Null);
    assert_eq!(
        members_of(&app, &tenant, group.id).await,
        BTreeSet::from([alice, bob])
    );
    assert!(basic_user_members(&app, &tenant).await.is_empty());

    // Remove with a value list: only the listed member goes.
    let removed = remove_members(&app, &tenant, group.id, &[alice]).await;
    assert_eq!(removed.status, 204, "{removed:?}");
    assert_eq!(
        members_of(&app, &tenant, group.id).await,
        BTreeSet::from([bob])
    );
    assert_eq!(
        basic_user_members(&app, &tenant).await,
        BTreeSet::from([alice])
    );

    // The flag dialect: lowercase ops and a members[value eq ...] path.
    let readd = patch_group(
        &app,
        &tenant,
        group.id,
        json!([{"op": "add", "path": "members", "value": [{"value": alice.to_string()}]}]),
    )
    .await;
    let filtered = patch_group(
        &app,
        &tenant,
        group.id,
        json!([{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]),
    )
    .await;
    assert_eq!(
        (readd.status.as_u16(), filtered.status.as_u16()),
        (204, 204)
    );
    assert_eq!(
        members_of(&app, &tenant, group.id).await,
        BTreeSet::from([alice])
    );
    assert_eq!(
        basic_user_members(&app, &tenant).await,
        BTreeSet::from([bob])
    );

    // Replace displayName: acknowledged, ignored, journaled.
    let rename = patch_group(
        &app,
        &tenant,
        group.id,
        json!([{"op": "Replace", "path": "displayName", "value": "renamed in Entra"}]),
    )
    .await;
    assert_eq!(rename.status, 204, "{rename:?}");
    let after = app
        .scim_get(&tenant, &format!("/Groups/{}", group.id))
        .await;
    assert_eq!(after.body["displayName"], group.display_name);
    let journal = journal_of(&app, &tenant, group.id).await;
    assert!(journal
        .iter()
        .any(|(_, outcome, _, detail)| outcome == "ignored"
            && detail.as_deref().is_some_and(|d| d.contains("displayName"))));

    // An unknown object id: an empty list, not an error.
    let unknown = app
        .scim_get(&tenant, &match_query(&Uuid::new_v4().to_string()))
        .await;
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.body["totalResults"], 0);
    assert_eq!(unknown.body["Resources"], json!([]));
    assert_invariant(&app, &tenant).await;
}

#[tokio::test]
async fn a_group_is_read_with_or_without_members() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let user = insert_user(&app, &tenant).await;
    add_members(&app, &tenant, group.id, &[user]).await;
    let path = format!("/Groups/{}", group.id);

    let full = app.scim_get(&tenant, &path).await;
    let without = app
        .scim_get(&tenant, &format!("{path}?excludedAttributes=members"))
        .await;
    let only_members = app
        .scim_get(&tenant, &format!("{path}?attributes=members"))
        .await;
    let key_base = app
        .request(
            Method::GET,
            &format!("/scim/v2{path}"),
            Some(&tenant.key.secret),
            None,
        )
        .await;

    assert_eq!(full.status, 200, "{full:?}");
    assert_eq!(full.header("content-type"), Some("application/scim+json"));
    let member = &full.body["members"][0];
    assert_eq!(member["value"], user.to_string());
    assert!(member["$ref"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/scim/v2/{}/Users/{user}", tenant.tenant.slug)));
    assert!(member["display"].as_str().unwrap().starts_with("User "));
    assert_eq!(full.body["meta"]["resourceType"], "Group");
    assert!(without.body.get("members").is_none(), "{:?}", without.body);
    assert_eq!(without.body["id"], group.id.to_string());
    assert!(only_members.body.get("displayName").is_none());
    assert_eq!(key_base.status, 200);
    assert_eq!(key_base.body["id"], group.id.to_string());
    assert_eq!(only_members.body["members"][0]["value"], user.to_string());
}

#[tokio::test]
async fn groups_filter_on_display_name_id_and_members() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let (first, second) = (
        create_group(&app, &tenant, true).await,
        create_group(&app, &tenant, true).await,
    );
    let user = insert_user(&app, &tenant).await;
    add_members(&app, &tenant, second.id, &[user]).await;
    let list = |filter: String| {
        let app = &app;
        let tenant = &tenant;
        async move {
            let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
            app.scim_get(tenant, &format!("/Groups?filter={encoded}"))
                .await
        }
    };

    let by_name = list(format!(
        "displayName eq \"{}\"",
        first.display_name.to_uppercase()
    ))
    .await;
    let by_id = list(format!("id eq \"{}\"", second.id)).await;
    let by_member = list(format!("members[value eq \"{user}\"]")).await;
    let all = app.scim_get(&tenant, "/Groups?count=1").await;
    let unsupported = list("permissions eq \"x\"".to_owned()).await;

    assert_eq!(by_name.body["Resources"][0]["id"], first.id.to_string());
    assert_eq!(by_name.body["totalResults"], 1);
    assert_eq!(by_id.body["Resources"][0]["id"], second.id.to_string());
    assert_eq!(by_member.body["totalResults"], 1);
    assert_eq!(by_member.body["Resources"][0]["id"], second.id.to_string());
    assert_eq!(all.body["totalResults"], 2, "{:?}", all.body);
    assert_eq!(all.body["itemsPerPage"], 1);
    unsupported.assert_scim_error(400);
    assert_eq!(unsupported.body["scimType"], "invalidFilter");
}

#[tokio::test]
async fn returned_members_are_capped() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    insert_users_bulk(&app, &tenant, groups::MEMBER_PAGE_LIMIT + 5, Some(group.id)).await;

    let one = app
        .scim_get(&tenant, &format!("/Groups/{}", group.id))
        .await;
    let listed = app.scim_get(&tenant, "/Groups").await;

    let cap = usize::try_from(groups::MEMBER_PAGE_LIMIT).unwrap();
    assert_eq!(one.body["members"].as_array().unwrap().len(), cap);
    let members = listed.body["Resources"][0]["members"].as_array().unwrap();
    assert_eq!(members.len(), cap);
}

#[tokio::test]
async fn unknown_member_ids_are_400_and_nothing_is_applied() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let other = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let ours = insert_user(&app, &tenant).await;
    let theirs = insert_user(&app, &other).await;

    let reply = patch_group(
        &app,
        &tenant,
        group.id,
        json!([
            {"op": "Add", "path": "members", "value": [{"value": ours.to_string()}]},
            {"op": "Add", "path": "members", "value": [
                {"value": theirs.to_string()}, {"value": "not-a-uuid"}
            ]}
        ]),
    )
    .await;

    reply.assert_scim_error(400);
    assert_eq!(reply.body["scimType"], "invalidValue");
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.contains(&theirs.to_string()), "{detail}");
    assert!(detail.contains("not-a-uuid"), "{detail}");
    assert!(!detail.contains(&ours.to_string()), "{detail}");
    assert!(members_of(&app, &tenant, group.id).await.is_empty());
    assert_eq!(
        basic_user_members(&app, &tenant).await,
        BTreeSet::from([ours])
    );
    app.running.state.journal.flush().await;
    let journal = journal_of(&app, &tenant, group.id).await;
    assert!(journal
        .iter()
        .any(|(_, outcome, _, _)| outcome == "rejected"));
    assert!(last_synced_at(&app, &tenant, group.id).await.is_some());
}

#[tokio::test]
async fn invalid_patch_bodies_and_unknown_groups_are_scim_errors() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let path = group_path(&tenant, group.id);
    let key = Some(tenant.key.secret.as_str());

    let not_json = app
        .client
        .patch(format!("{}{path}", app.base))
        .bearer_auth(&tenant.key.secret)
        .header("content-type", "application/json; charset=utf-8")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let no_operations = app
        .request(Method::PATCH, &path, key, Some(&json!({"schemas": []})))
        .await;
    let bad_path = patch_group(
        &app,
        &tenant,
        group.id,
        json!([{"op": "remove", "path": "members[display eq \"x\"]"}]),
    )
    .await;
    let no_operations_listed = patch_group(&app, &tenant, group.id, json!([])).await;
    let unknown_group = add_members(&app, &tenant, Uuid::new_v4(), &[Uuid::new_v4()]).await;
    let not_uuid = patch_group(
        &app,
        &tenant,
        "not-a-uuid",
        json!([{"op": "add", "path": "members", "value": []}]),
    )
    .await;

    assert_eq!(not_json.status(), 400);
    no_operations.assert_scim_error(400);
    assert_eq!(no_operations.body["scimType"], "invalidSyntax");
    bad_path.assert_scim_error(400);
    assert_eq!(bad_path.body["scimType"], "invalidFilter");
    no_operations_listed.assert_scim_error(400);
    unknown_group.assert_scim_error(404);
    not_uuid.assert_scim_error(404);
}

#[tokio::test]
async fn creating_replacing_and_deleting_groups_is_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let key = Some(tenant.key.secret.as_str());
    let collection = format!("/scim/v2/{}/Groups", tenant.tenant.slug);
    let one = group_path(&tenant, group.id);
    let body = json!({"displayName": "x", "externalId": Uuid::new_v4().to_string()});

    let replies = [
        app.request(Method::POST, &collection, key, Some(&body))
            .await,
        app.request(Method::PUT, &one, key, Some(&body)).await,
        app.request(Method::DELETE, &one, key, None).await,
        app.request(Method::POST, "/scim/v2/Groups", key, Some(&body))
            .await,
    ];
    let anonymous = app.request(Method::DELETE, &one, None, None).await;

    for reply in &replies {
        reply.assert_scim_error(403);
        let detail = reply.body["detail"].as_str().unwrap();
        assert!(
            detail.contains("managed") || detail.contains("platform"),
            "{detail}"
        );
    }
    anonymous.assert_scim_error(401);
    let mut tx = begin(&app, &tenant).await;
    assert!(groups::get(&mut tx.db(), group.id).await.unwrap().is_some());
}

#[tokio::test]
async fn groups_that_are_not_synced_are_invisible() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let not_synced = create_group(&app, &tenant, false).await;
    let mut tx = begin(&app, &tenant).await;
    let no_external_id = groups::set_sync(&mut tx.db(), not_synced.id, true, "test")
        .await
        .unwrap();
    let disabled = create_group(&app, &tenant, true).await;
    groups::set_sync(&mut tx.db(), disabled.id, false, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let user = insert_user(&app, &tenant).await;
    let basic_user = basic_user_id(&app, &tenant).await;

    let listed = app.scim_get(&tenant, "/Groups").await;
    let matched = app
        .scim_get(
            &tenant,
            &match_query(disabled.external_id.as_deref().unwrap()),
        )
        .await;
    let ids = [no_external_id.id, disabled.id, basic_user];
    let mut reads = Vec::new();
    let mut patches = Vec::new();
    for id in ids {
        reads.push(app.scim_get(&tenant, &format!("/Groups/{id}")).await);
        patches.push(add_members(&app, &tenant, id, &[user]).await);
    }

    assert_eq!(listed.body["totalResults"], 0, "{:?}", listed.body);
    assert_eq!(matched.status, 200);
    assert_eq!(matched.body["totalResults"], 0);
    for reply in reads.iter().chain(&patches) {
        reply.assert_scim_error(404);
    }
    assert!(members_of(&app, &tenant, disabled.id).await.is_empty());
    assert_eq!(
        basic_user_members(&app, &tenant).await,
        BTreeSet::from([user])
    );
}

#[tokio::test]
async fn reads_and_writes_stamp_last_synced_at() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let (read_by_id, matched, patched) = (
        create_group(&app, &tenant, true).await,
        create_group(&app, &tenant, true).await,
        create_group(&app, &tenant, true).await,
    );
    let user = insert_user(&app, &tenant).await;

    app.scim_get(&tenant, &format!("/Groups/{}", read_by_id.id))
        .await;
    app.scim_get(
        &tenant,
        &match_query(matched.external_id.as_deref().unwrap()),
    )
    .await;
    let before_patch = last_synced_at(&app, &tenant, patched.id).await;
    add_members(&app, &tenant, patched.id, &[user]).await;
    let after_patch = last_synced_at(&app, &tenant, patched.id).await;
    app.running.state.journal.flush().await;

    assert!(before_patch.is_none());
    assert!(after_patch.is_some(), "a PATCH stamps in its transaction");
    assert!(last_synced_at(&app, &tenant, read_by_id.id).await.is_some());
    assert!(last_synced_at(&app, &tenant, matched.id).await.is_some());
}

#[tokio::test]
async fn remove_all_and_replace_apply_as_sets_and_restore_the_safety_net() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(insert_user(&app, &tenant).await);
    }
    add_members(&app, &tenant, group.id, &users[..3]).await;

    let replaced = patch_group(
        &app,
        &tenant,
        group.id,
        json!([{"op": "replace", "path": "members",
                "value": [{"value": users[2].to_string()}, {"value": users[3].to_string()}]}]),
    )
    .await;
    let after_replace = members_of(&app, &tenant, group.id).await;
    let basic_after_replace = basic_user_members(&app, &tenant).await;
    let emptied = patch_group(
        &app,
        &tenant,
        group.id,
        json!([{"op": "remove", "path": "members"}]),
    )
    .await;

    assert_eq!(
        (replaced.status.as_u16(), emptied.status.as_u16()),
        (204, 204)
    );
    assert_eq!(after_replace, BTreeSet::from([users[2], users[3]]));
    assert_eq!(basic_after_replace, BTreeSet::from([users[0], users[1]]));
    assert!(members_of(&app, &tenant, group.id).await.is_empty());
    assert_eq!(
        basic_user_members(&app, &tenant).await,
        users.iter().copied().collect()
    );
    assert_invariant(&app, &tenant).await;
}

#[tokio::test]
async fn a_patch_is_journaled_per_member_with_a_summary() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let (a, b) = (
        insert_user(&app, &tenant).await,
        insert_user(&app, &tenant).await,
    );

    add_members(&app, &tenant, group.id, &[a, b]).await;
    add_members(&app, &tenant, group.id, &[a]).await;

    let journal = journal_of(&app, &tenant, group.id).await;
    let added: BTreeSet<Uuid> = journal
        .iter()
        .filter(|(_, _, _, detail)| detail.as_deref() == Some("member added"))
        .filter_map(|(_, _, user, _)| *user)
        .collect();
    let summaries: Vec<&str> = journal
        .iter()
        .filter(|(operation, _, user, _)| operation == "scim.groups.patch" && user.is_none())
        .filter_map(|(_, _, _, detail)| detail.as_deref())
        .collect();
    let released = journal
        .iter()
        .filter(|(operation, _, _, _)| operation == "safety_net")
        .count();
    assert_eq!(added, BTreeSet::from([a, b]));
    assert_eq!(summaries.len(), 2, "{journal:?}");
    assert!(summaries[1].contains("added 0") && summaries[1].contains("already as asked 1"));
    // Safety-net entries carry the Basic User group, not this one.
    assert_eq!(released, 0);
}

#[tokio::test]
async fn fifty_concurrent_patches_adding_distinct_members_all_land() {
    let app = spawn_patient_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let users = insert_users_bulk(&app, &tenant, 50, None).await;

    let replies = join_all(
        users
            .iter()
            .map(|user| add_members(&app, &tenant, group.id, std::slice::from_ref(user))),
    )
    .await;

    for reply in &replies {
        assert_eq!(reply.status, 204, "{reply:?}");
    }
    assert_eq!(
        members_of(&app, &tenant, group.id).await,
        users.iter().copied().collect()
    );
    assert!(basic_user_members(&app, &tenant).await.is_empty());
    assert_invariant(&app, &tenant).await;
}

#[tokio::test]
async fn parallel_adds_and_removes_of_the_same_members_keep_the_invariant() {
    let app = spawn_patient_app().await;
    let tenant = app.create_tenant().await;
    let mut synced = Vec::new();
    for _ in 0..6 {
        synced.push(create_group(&app, &tenant, true).await.id);
    }
    let users = insert_users_bulk(&app, &tenant, 8, None).await;
    let reversed: Vec<Uuid> = users.iter().rev().copied().collect();

    // Each round changes every group at once, touching the same users in both id orders:
    // all adds, all removes (the last remove must put everyone in Basic User), then mixed.
    for round in 0..12 {
        let requests = synced.iter().enumerate().map(|(g, &group)| {
            let members = if g % 2 == 0 { &users } else { &reversed };
            let adds = match round % 3 {
                0 => true,
                1 => false,
                _ => g % 2 == 0,
            };
            let (app, tenant) = (&app, &tenant);
            async move {
                if adds {
                    add_members(app, tenant, group, members).await
                } else {
                    remove_members(app, tenant, group, members).await
                }
            }
        });
        let replies = join_all(requests).await;

        for reply in &replies {
            assert_eq!(reply.status, 204, "round {round}: {reply:?}");
        }
        assert_invariant(&app, &tenant).await;
    }
}

// The retry of a PATCH rests on this classification of what Postgres reports.
#[tokio::test]
async fn a_real_deadlock_is_classified_as_transient() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let (a, b) = (
        insert_user(&app, &tenant).await,
        insert_user(&app, &tenant).await,
    );
    let lock = "select id from users where id = $1 for update";
    let (mut first, mut second) = (begin(&app, &tenant).await, begin(&app, &tenant).await);
    sqlx::query(lock)
        .bind(a)
        .execute(&mut *first)
        .await
        .unwrap();
    sqlx::query(lock)
        .bind(b)
        .execute(&mut *second)
        .await
        .unwrap();

    let (one, other) = tokio::join!(
        sqlx::query(lock).bind(b).execute(&mut *first),
        sqlx::query(lock).bind(a).execute(&mut *second),
    );

    let failure = one
        .err()
        .or(other.err())
        .expect("Postgres breaks the deadlock");
    assert!(GroupError::Database(failure).is_transient());
}

#[tokio::test]
async fn platform_changes_restore_the_safety_net() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let (toggled, cleared, deleted) = (
        create_group(&app, &tenant, true).await,
        create_group(&app, &tenant, true).await,
        create_group(&app, &tenant, true).await,
    );
    let platform = create_group(&app, &tenant, false).await;
    let (a, b, c) = (
        insert_user(&app, &tenant).await,
        insert_user(&app, &tenant).await,
        insert_user(&app, &tenant).await,
    );
    add_members(&app, &tenant, toggled.id, &[a]).await;
    add_members(&app, &tenant, cleared.id, &[b]).await;
    add_members(&app, &tenant, deleted.id, &[c]).await;
    assert!(basic_user_members(&app, &tenant).await.is_empty());

    let mut tx = begin(&app, &tenant).await;
    groups::set_sync(&mut tx.db(), toggled.id, false, "t")
        .await
        .unwrap();
    groups::set_external_id(&mut tx.db(), cleared.id, None, "t")
        .await
        .unwrap();
    groups::delete(&mut tx.db(), deleted.id, "t").await.unwrap();
    groups::add_platform_members(&mut tx.db(), platform.id, &[a, b], "t")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let all_back = basic_user_members(&app, &tenant).await;

    let mut tx = begin(&app, &tenant).await;
    groups::set_sync(&mut tx.db(), toggled.id, true, "t")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(all_back, BTreeSet::from([a, b, c]));
    assert_eq!(
        basic_user_members(&app, &tenant).await,
        BTreeSet::from([b, c])
    );
    assert_eq!(
        members_of(&app, &tenant, platform.id).await,
        BTreeSet::from([a, b])
    );
    assert_invariant(&app, &tenant).await;
}

#[tokio::test]
async fn basic_user_and_synced_groups_refuse_what_would_break_them() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let basic_user = basic_user_id(&app, &tenant).await;
    let synced = create_group(&app, &tenant, true).await;
    let user = insert_user(&app, &tenant).await;
    let mut tx = begin(&app, &tenant).await;

    let delete = groups::delete(&mut tx.db(), basic_user, "t")
        .await
        .unwrap_err();
    let sync = groups::set_sync(&mut tx.db(), basic_user, true, "t")
        .await
        .unwrap_err();
    let external_id = groups::set_external_id(&mut tx.db(), basic_user, Some("x"), "t")
        .await
        .unwrap_err();
    let manual = groups::remove_platform_members(&mut tx.db(), basic_user, &[user], "t")
        .await
        .unwrap_err();
    let entra_owned = groups::add_platform_members(&mut tx.db(), synced.id, &[user], "t")
        .await
        .unwrap_err();
    let taken = groups::set_external_id(
        &mut tx.db(),
        create_group(&app, &tenant, false).await.id,
        synced.external_id.as_deref(),
        "t",
    )
    .await
    .unwrap_err();

    assert!(matches!(delete, GroupError::Refused(m) if m.contains("cannot be deleted")));
    assert!(matches!(sync, GroupError::Refused(m) if m.contains("cannot be synced")));
    assert!(matches!(external_id, GroupError::Refused(_)));
    assert!(matches!(manual, GroupError::Refused(_)));
    assert!(matches!(entra_owned, GroupError::Refused(m) if m.contains("Entra")));
    assert!(matches!(taken, GroupError::ExternalIdTaken));
}

#[tokio::test]
async fn effective_permissions_are_the_union_of_the_users_groups() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let basic_user = basic_user_id(&app, &tenant).await;
    let sales = create_group_with(&app, &tenant, true, &["crm.read", "crm.write"]).await;
    let support = create_group_with(&app, &tenant, false, &["tickets.read", "crm.read"]).await;
    let (member, newcomer, inactive) = (
        insert_user(&app, &tenant).await,
        insert_user(&app, &tenant).await,
        insert_user_with(&app, &tenant, false).await,
    );
    let mut tx = begin(&app, &tenant).await;
    groups::set_permissions(
        &mut tx.db(),
        basic_user,
        &BTreeSet::from(["profile.read".to_owned()]),
    )
    .await
    .unwrap();
    groups::add_platform_members(&mut tx.db(), support.id, &[member, newcomer], "t")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    add_members(&app, &tenant, sales.id, &[member]).await;

    let mut tx = begin(&app, &tenant).await;
    let of_member = groups::effective_permissions(&mut tx.db(), member)
        .await
        .unwrap();
    let of_newcomer = groups::effective_permissions(&mut tx.db(), newcomer)
        .await
        .unwrap();
    let of_inactive = groups::effective_permissions(&mut tx.db(), inactive)
        .await
        .unwrap();

    let set = |items: &[&str]| {
        items
            .iter()
            .map(|p| (*p).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(of_member, set(&["crm.read", "crm.write", "tickets.read"]));
    assert_eq!(
        of_newcomer,
        set(&["crm.read", "profile.read", "tickets.read"])
    );
    assert!(of_inactive.is_empty());
}

/// Runs `roster group ...` against the test database.
async fn roster_group(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("group")
        .args(args)
        .env("ROSTER_DATABASE_URL", crate::helpers::database_url())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stdout, stderr)
}

#[tokio::test]
async fn the_cli_creates_lists_updates_and_deletes_groups_with_an_audit_trail() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let slug = tenant.tenant.slug.as_str();
    let object_id = Uuid::new_v4().to_string();
    let user = insert_user(&app, &tenant).await;
    let basic_user = basic_user_id(&app, &tenant).await.to_string();

    let (created, stdout, stderr) = roster_group(&[
        "create",
        slug,
        "--name",
        "Sales",
        "--external-id",
        &object_id,
        "--sync",
        "--permission",
        "crm.read",
        "--permission",
        "crm.write",
    ])
    .await;
    assert!(created, "{stderr}");
    let id = stdout.split_whitespace().nth(2).unwrap().to_owned();
    let group_id: Uuid = id.parse().unwrap();
    add_members(&app, &tenant, group_id, &[user]).await;
    let (listed, list, _) = roster_group(&["list", slug]).await;
    let (updated, _, stderr) = roster_group(&[
        "update",
        slug,
        &id,
        "--sync",
        "false",
        "--name",
        "Sales EMEA",
        "--clear-permissions",
    ])
    .await;
    assert!(updated, "{stderr}");
    let mut tx = begin(&app, &tenant).await;
    let after_update = groups::get(&mut tx.db(), group_id).await.unwrap().unwrap();
    drop(tx);
    let basic_after_update = basic_user_members(&app, &tenant).await;
    let (refused, _, refusal) = roster_group(&["delete", slug, &basic_user]).await;
    let (deleted, _, stderr) = roster_group(&["delete", slug, &id]).await;

    assert!(listed);
    let sales = list.lines().find(|line| line.contains("Sales")).unwrap();
    assert!(
        sales.contains("synced") && sales.contains(&object_id),
        "{list}"
    );
    assert!(sales.contains("crm.read, crm.write"), "{list}");
    assert!(list
        .lines()
        .any(|l| l.contains("Basic User") && l.contains("system")));
    assert_eq!(after_update.display_name, "Sales EMEA");
    assert!(!after_update.sync_enabled && after_update.permissions.is_empty());
    assert_eq!(basic_after_update, BTreeSet::from([user]));
    assert!(
        !refused && refusal.contains("cannot be deleted"),
        "{refusal}"
    );
    assert!(deleted, "{stderr}");
    let mut tx = begin(&app, &tenant).await;
    assert!(groups::get(&mut tx.db(), group_id).await.unwrap().is_none());
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from roster_control.admin_audit where tenant_id = $1 and target = $2 \
         order by id",
    )
    .bind(tenant.tenant.id)
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(actions, ["group.create", "group.update", "group.delete"]);
}

mod model {
    //! Random sequences of user creations, membership PATCHes and sync toggles, replayed
    //! against the real server and a serial model.

    use std::collections::BTreeSet;

    use api::directory::groups;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use serde_json::json;
    use uuid::Uuid;

    use crate::groups_helpers::{
        basic_user_members, begin, create_group, insert_user_with, invariant_violations,
        member_values, members_of, patch_group,
    };
    use crate::helpers::{spawn_app, TestApp};

    const GROUPS: usize = 3;

    #[derive(Debug, Clone)]
    enum Step {
        CreateUser { active: bool },
        Add { group: usize, users: Vec<usize> },
        Remove { group: usize, users: Vec<usize> },
        Replace { group: usize, users: Vec<usize> },
        ToggleSync { group: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        let group = 0..GROUPS;
        let users = proptest::collection::vec(0..64usize, 0..4);
        prop_oneof![
            3 => any::<bool>().prop_map(|active| Step::CreateUser { active }),
            4 => (group.clone(), users.clone())
                .prop_map(|(group, users)| Step::Add { group, users }),
            3 => (group.clone(), users.clone())
                .prop_map(|(group, users)| Step::Remove { group, users }),
            1 => (group.clone(), users).prop_map(|(group, users)| Step::Replace { group, users }),
            1 => group.prop_map(|group| Step::ToggleSync { group }),
        ]
    }

    #[derive(Default)]
    struct Model {
        users: Vec<(Uuid, bool)>,
        synced: [bool; GROUPS],
        members: [BTreeSet<Uuid>; GROUPS],
    }

    impl Model {
        fn pick(&self, indexes: &[usize]) -> Vec<Uuid> {
            indexes
                .iter()
                .map(|i| self.users[i % self.users.len()].0)
                .collect()
        }

        fn basic_user(&self) -> BTreeSet<Uuid> {
            self.users
                .iter()
                .filter(|(id, active)| {
                    *active && !(0..GROUPS).any(|g| self.synced[g] && self.members[g].contains(id))
                })
                .map(|(id, _)| *id)
                .collect()
        }
    }

    async fn replay(app: &TestApp, steps: Vec<Step>) {
        let tenant = app.create_tenant().await;
        let mut model = Model::default();
        let mut ids = Vec::new();
        for g in 0..GROUPS {
            let synced = g != 2;
            ids.push(create_group(app, &tenant, true).await.id);
            model.synced[g] = synced;
            if !synced {
                let mut tx = begin(app, &tenant).await;
                groups::set_sync(&mut tx.db(), ids[g], false, "model")
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }

        for (n, step) in steps.into_iter().enumerate() {
            let (group, op, users) = match step {
                Step::CreateUser { active } => {
                    let id = insert_user_with(app, &tenant, active).await;
                    model.users.push((id, active));
                    continue;
                }
                Step::ToggleSync { group } => {
                    model.synced[group] = !model.synced[group];
                    let mut tx = begin(app, &tenant).await;
                    groups::set_sync(&mut tx.db(), ids[group], model.synced[group], "model")
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    (None, "", Vec::new())
                }
                _ if model.users.is_empty() => continue,
                Step::Add { group, users } => (Some(group), "add", model.pick(&users)),
                Step::Remove { group, users } => (Some(group), "remove", model.pick(&users)),
                Step::Replace { group, users } => (Some(group), "replace", model.pick(&users)),
            };
            if let Some(group) = group {
                let operations =
                    json!([{"op": op, "path": "members", "value": member_values(&users)}]);
                let reply = patch_group(app, &tenant, ids[group], operations).await;
                let expected = if model.synced[group] { 204 } else { 404 };
                assert_eq!(reply.status, expected, "step {n}: {reply:?}");
                if model.synced[group] {
                    let members = &mut model.members[group];
                    match op {
                        "add" => members.extend(&users),
                        "remove" => users.iter().for_each(|u| {
                            members.remove(u);
                        }),
                        _ => *members = users.iter().copied().collect(),
                    }
                }
            }
            let violations = invariant_violations(app, &tenant).await;
            assert!(
                violations.is_empty(),
                "step {n}: invariant broken for {violations:?}"
            );
        }

        for (g, id) in ids.iter().enumerate() {
            assert_eq!(
                members_of(app, &tenant, *id).await,
                model.members[g],
                "group {g}"
            );
        }
        assert_eq!(basic_user_members(app, &tenant).await, model.basic_user());
    }

    #[test]
    fn random_sequences_keep_the_invariant_and_match_a_serial_model() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = runtime.block_on(spawn_app());
        let config = Config {
            cases: 16,
            failure_persistence: None,
            ..Config::default()
        };
        let steps = proptest::collection::vec(step(), 1..30);

        let result = TestRunner::new(config).run(&steps, |steps| {
            runtime.block_on(replay(&app, steps));
            Ok(())
        });

        if let Err(failure) = result {
            panic!("{failure}");
        }
    }
}
