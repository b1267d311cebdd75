//! Typed helpers for group tests: users and groups straight into a tenant's schema, SCIM group
//! requests, and reads of memberships and the Basic User invariant.

use std::collections::BTreeSet;

use crate::helpers::TenantSql;
use api::directory::groups::{self, Group, NewGroup};
use api::directory::safety_net;
use api::directory::users::{self, NewUser};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{Reply, TestApp, TestTenant};

pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

pub async fn begin(app: &TestApp, tenant: &TestTenant) -> TenantSql {
    TenantSql::begin(&app.pool, &tenant.tenant.schema)
        .await
        .unwrap()
}

/// Inserts an active user as a SCIM create would store it, safety net included.
pub async fn insert_user(app: &TestApp, tenant: &TestTenant) -> Uuid {
    insert_user_with(app, tenant, true).await
}

pub async fn insert_user_with(app: &TestApp, tenant: &TestTenant, active: bool) -> Uuid {
    let id = Uuid::now_v7();
    let email = format!("{}@example.com", id.simple());
    let mut tx = begin(app, tenant).await;
    users::insert(
        &mut tx.db(),
        &NewUser {
            id,
            user_name: email.clone(),
            external_id: None,
            display_name: Some(format!("User {}", &id.simple().to_string()[24..])),
            given_name: None,
            family_name: None,
            formatted_name: None,
            work_email: Some(email.clone()),
            emails: json!([{"value": email, "type": "work", "primary": true}]),
            active,
            source: "scim",
            fusionauth_user_id: None,
            fusionauth_link: "skipped",
        },
    )
    .await
    .unwrap();
    safety_net::restore(&mut tx.db(), &[id], "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Inserts `count` active users in one statement (for large groups); when `group` is given
/// they become its members, which keeps the invariant only if that group is synced.
pub async fn insert_users_bulk(
    app: &TestApp,
    tenant: &TestTenant,
    count: i64,
    group: Option<Uuid>,
) -> Vec<Uuid> {
    let mut tx = begin(app, tenant).await;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "insert into users (id, user_name, work_email, emails) \
         select id, id::text, id::text || '@example.com', '[]' \
         from (select gen_random_uuid() as id from generate_series(1, $1)) s returning id",
    )
    .bind(count)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    match group {
        Some(group) => {
            sqlx::query(
                "insert into memberships (group_id, user_id, source) \
                 select $1, unnest($2::uuid[]), 'scim'",
            )
            .bind(group)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        None => {
            safety_net::restore(&mut tx.db(), &ids, "test")
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
    ids
}

/// Creates a group; a synced one gets a random Entra object id as External Group ID.
pub async fn create_group(app: &TestApp, tenant: &TestTenant, synced: bool) -> Group {
    create_group_with(app, tenant, synced, &[]).await
}

pub async fn create_group_with(
    app: &TestApp,
    tenant: &TestTenant,
    synced: bool,
    permissions: &[&str],
) -> Group {
    let mut tx = begin(app, tenant).await;
    let group = groups::create(
        &mut tx.db(),
        &NewGroup {
            display_name: format!("Group {}", Uuid::new_v4().simple()),
            external_id: synced.then(|| Uuid::new_v4().to_string()),
            sync_enabled: synced,
            permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    group
}

pub fn group_path(tenant: &TestTenant, group_id: impl std::fmt::Display) -> String {
    format!("/scim/v2/{}/Groups/{group_id}", tenant.tenant.slug)
}

/// `PATCH /Groups/{id}` with these operations.
pub async fn patch_group(
    app: &TestApp,
    tenant: &TestTenant,
    group_id: impl std::fmt::Display,
    operations: Value,
) -> Reply {
    let body = json!({"schemas": [PATCH_OP], "Operations": operations});
    let path = group_path(tenant, group_id);
    app.request(Method::PATCH, &path, Some(&tenant.key.secret), Some(&body))
        .await
}

/// Entra's member list: `[{"$ref": null, "value": "<id>"}, ...]`.
pub fn member_values(ids: &[Uuid]) -> Value {
    ids.iter()
        .map(|id| json!({"$ref": null, "value": id.to_string()}))
        .collect()
}

pub async fn add_members(app: &TestApp, tenant: &TestTenant, group: Uuid, ids: &[Uuid]) -> Reply {
    let operations = json!([{"op": "Add", "path": "members", "value": member_values(ids)}]);
    patch_group(app, tenant, group, operations).await
}

pub async fn remove_members(
    app: &TestApp,
    tenant: &TestTenant,
    group: Uuid,
    ids: &[Uuid],
) -> Reply {
    let operations = json!([{"op": "Remove", "path": "members", "value": member_values(ids)}]);
    patch_group(app, tenant, group, operations).await
}

pub async fn members_of(app: &TestApp, tenant: &TestTenant, group: Uuid) -> BTreeSet<Uuid> {
    let mut tx = begin(app, tenant).await;
    let ids: Vec<Uuid> = sqlx::query_scalar("select user_id from memberships where group_id = $1")
        .bind(group)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    ids.into_iter().collect()
}

pub async fn basic_user_id(app: &TestApp, tenant: &TestTenant) -> Uuid {
    let mut tx = begin(app, tenant).await;
    sqlx::query_scalar("select id from groups where is_basic_user")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
}

pub async fn basic_user_members(app: &TestApp, tenant: &TestTenant) -> BTreeSet<Uuid> {
    let basic_user = basic_user_id(app, tenant).await;
    members_of(app, tenant, basic_user).await
}

/// Users for whom the invariant fails: an active user in Basic User exactly when in no synced
/// group; an inactive user never in Basic User.
pub async fn invariant_violations(app: &TestApp, tenant: &TestTenant) -> Vec<Uuid> {
    let mut tx = begin(app, tenant).await;
    sqlx::query_scalar(
        "select u.id from users u \
         cross join lateral (select \
           exists (select 1 from memberships m join groups g on g.id = m.group_id \
             where m.user_id = u.id and g.is_basic_user) as in_basic, \
           exists (select 1 from memberships m join groups g on g.id = m.group_id \
             where m.user_id = u.id and g.sync_enabled and g.external_id is not null) \
             as in_synced) s \
         where s.in_basic <> (u.active and not s.in_synced)",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap()
}

pub async fn assert_invariant(app: &TestApp, tenant: &TestTenant) {
    let violations = invariant_violations(app, tenant).await;
    assert!(violations.is_empty(), "invariant broken for {violations:?}");
}

pub async fn last_synced_at(
    app: &TestApp,
    tenant: &TestTenant,
    group: Uuid,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut tx = begin(app, tenant).await;
    sqlx::query_scalar("select last_synced_at from groups where id = $1")
        .bind(group)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
}

/// A group's journal entries in order: (operation, outcome, user_id, detail).
pub async fn journal_of(
    app: &TestApp,
    tenant: &TestTenant,
    group: Uuid,
) -> Vec<(String, String, Option<Uuid>, Option<String>)> {
    let mut tx = begin(app, tenant).await;
    sqlx::query_as(
        "select operation, outcome, user_id, detail from journal where group_id = $1 order by id",
    )
    .bind(group)
    .fetch_all(&mut *tx)
    .await
    .unwrap()
}
