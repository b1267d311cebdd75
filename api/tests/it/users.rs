//! SCIM `/Users` as Entra uses it: the probe, the match query, create, and the writes Roster
//! acknowledges and ignores.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{entra_user, spawn_app, TestApp, TestTenant};

const WORK_EMAIL_PROBE: &str =
    "/Users?filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22cf4d78e8-cc4f-4d5d-b8b9-183561c0104a%22";

async fn app_and_tenant() -> (TestApp, TestTenant) {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    (app, tenant)
}

fn assert_empty_list(reply: &crate::helpers::Reply) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/scim+json"));
    assert_eq!(
        reply.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:ListResponse"
    );
    assert_eq!(reply.body["totalResults"], 0);
    assert_eq!(reply.body["Resources"], json!([]));
}

#[tokio::test]
async fn test_connection_probes_get_an_empty_list_in_every_encoding() {
    let (app, tenant) = app_and_tenant().await;

    for path in [
        WORK_EMAIL_PROBE.to_owned(),
        "/Users?filter=emails%5btype%20eq%20%22work%22%5d.value%20eq%20%22x%40y.z%22".to_owned(),
        "/Users?filter=emails[type+eq+%22work%22].value+eq+%22x@y.z%22".to_owned(),
        "/Users?filter=userName+eq+%22cf4d78e8-cc4f-4d5d-b8b9-183561c0104a%22".to_owned(),
        format!(
            "/Users?aadOptscim062020&filter=userName+eq+%22{}%22",
            uuid::Uuid::new_v4()
        ),
        "/Users?filter=id+eq+%22not-a-uuid%22".to_owned(),
    ] {
        assert_empty_list(&app.scim(Method::GET, &tenant, &path, None).await);
    }
    let from_key = app
        .request(
            Method::GET,
            &format!("/scim/v2{WORK_EMAIL_PROBE}&aadOptscim062020"),
            Some(&tenant.key.secret),
            None,
        )
        .await;
    assert_empty_list(&from_key);
}

#[tokio::test]
async fn create_returns_the_full_resource_with_location_and_meta() {
    let (app, tenant) = app_and_tenant().await;

    let reply = app
        .post_user(&tenant, "Ada@Contoso.com", "Ada@Contoso.com")
        .await;

    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/scim+json"));
    let id = reply.body["id"].as_str().unwrap();
    let location = reply.header("location").unwrap();
    assert!(location.ends_with(&format!("/scim/v2/{}/Users/{id}", tenant.tenant.slug)));
    assert_eq!(reply.body["meta"]["location"], location);
    assert_eq!(reply.body["meta"]["resourceType"], "User");
    assert!(reply.body["meta"]["created"].is_string());
    assert_eq!(reply.body["userName"], "Ada@Contoso.com");
    assert_eq!(reply.body["active"], true);
    assert_eq!(reply.body["name"]["givenName"], "Test");
    assert_eq!(reply.body["emails"][0]["value"], "Ada@Contoso.com");
    let read = app
        .scim(Method::GET, &tenant, &format!("/Users/{id}"), None)
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, reply.body);
}

#[tokio::test]
async fn the_match_query_finds_the_user_case_insensitively() {
    let (app, tenant) = app_and_tenant().await;
    let created = app
        .post_user(&tenant, "grace@contoso.com", "Grace.Hopper@Contoso.com")
        .await;

    let by_email = app
        .scim(
            Method::GET,
            &tenant,
            "/Users?filter=emails%5BType+eq+%22WORK%22%5D.Value+eq+%22grace.hopper%40contoso.COM%22",
            None,
        )
        .await;
    let by_user_name = app
        .scim(
            Method::GET,
            &tenant,
            "/Users?filter=USERNAME+Eq+%22GRACE%40contoso.com%22",
            None,
        )
        .await;

    for reply in [by_email, by_user_name] {
        assert_eq!(reply.body["totalResults"], 1, "{reply:?}");
        assert_eq!(reply.body["Resources"][0]["id"], created.body["id"]);
    }
}

#[tokio::test]
async fn a_repeated_create_is_409_uniqueness() {
    let (app, tenant) = app_and_tenant().await;
    assert_eq!(
        app.post_user(&tenant, "lin@contoso.com", "lin@contoso.com")
            .await
            .status,
        201
    );

    let same = app
        .post_user(&tenant, "LIN@contoso.com", "other@contoso.com")
        .await;
    let same_email = app
        .post_user(&tenant, "lin2@contoso.com", "Lin@Contoso.com")
        .await;

    for reply in [&same, &same_email] {
        reply.assert_scim_error(409);
        assert_eq!(reply.body["scimType"], "uniqueness");
    }
    assert_eq!(app.user_count(&tenant).await, 1);
    let journal = app.journal(&tenant).await;
    assert!(journal
        .iter()
        .any(|e| e.operation == "scim.users.create" && e.outcome == "rejected"));
}

#[tokio::test]
async fn entra_create_bodies_are_accepted_as_they_come() {
    let (app, tenant) = app_and_tenant().await;
    let mut strings = entra_user("str@contoso.com", "str@contoso.com");
    strings["active"] = json!("False");
    let mut extended = entra_user("ext@contoso.com", "ext@contoso.com");
    extended["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] =
        json!({ "department": "R&D", "manager": { "value": "x" } });
    extended["schemas"] = json!([
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0User",
        "urn:example:unknown"
    ]);
    extended["nickName"] = json!(null);
    extended["title"] = json!(null);
    extended["favouriteColour"] = json!("teal");
    extended["meta"] = json!({ "resourceType": "User", "created": "2001-01-01T00:00:00Z" });

    let strings = app
        .scim(Method::POST, &tenant, "/Users", Some(&strings))
        .await;
    let extended = app
        .scim(Method::POST, &tenant, "/Users", Some(&extended))
        .await;

    assert_eq!(strings.status, 201, "{strings:?}");
    assert_eq!(strings.body["active"], false);
    assert_eq!(extended.status, 201, "{extended:?}");
    assert_eq!(extended.body["active"], true);
    assert_ne!(extended.body["meta"]["created"], "2001-01-01T00:00:00Z");
}

#[tokio::test]
async fn bad_bodies_get_precise_errors_and_change_nothing() {
    let (app, tenant) = app_and_tenant().await;
    let url = format!("{}/scim/v2/{}/Users", app.base, tenant.tenant.slug);
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(&tenant.key.secret)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let malformed = send("{\"userName\": ", "application/scim+json")
        .await
        .unwrap();
    let wrong_type = send("{\"userName\": 5}", "application/json").await.unwrap();
    let missing = send("{\"emails\": []}", "application/scim+json; charset=utf-8")
        .await
        .unwrap();
    let not_json = send("userName=x", "text/plain").await.unwrap();
    let array = send("[]", "application/scim+json").await.unwrap();

    let expectations = [
        (malformed, 400, Some("invalidSyntax")),
        (wrong_type, 400, Some("invalidValue")),
        (missing, 400, Some("invalidValue")),
        (not_json, 415, None),
        (array, 400, Some("invalidSyntax")),
    ];
    for (response, status, scim_type) in expectations {
        assert_eq!(response.status(), status);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], status.to_string());
        assert_eq!(body["scimType"].as_str(), scim_type, "{body}");
    }
    assert_eq!(app.user_count(&tenant).await, 0);
}

#[tokio::test]
async fn user_writes_are_acknowledged_ignored_and_journaled() {
    let (app, tenant) = app_and_tenant().await;
    let created = app
        .post_user(&tenant, "kim@contoso.com", "kim@contoso.com")
        .await;
    let path = format!("/Users/{}", created.body["id"].as_str().unwrap());
    let capitalised = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            { "op": "Replace", "path": "displayName", "value": "Someone Else" },
            { "op": "Replace", "path": "active", "value": "False" }
        ]
    });
    let lowercase = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            { "op": "replace", "value": { "name.givenName": "X", "active": false } },
            { "op": "add", "path": "emails[type eq \"work\"].value", "value": "new@contoso.com" }
        ]
    });
    let mut replacement = entra_user("kim@contoso.com", "changed@contoso.com");
    replacement["active"] = json!(false);

    let patched = app
        .scim(Method::PATCH, &tenant, &path, Some(&capitalised))
        .await;
    let patched_again = app
        .scim(Method::PATCH, &tenant, &path, Some(&lowercase))
        .await;
    let replaced = app
        .scim(Method::PUT, &tenant, &path, Some(&replacement))
        .await;
    let deleted = app.scim(Method::DELETE, &tenant, &path, None).await;
    let after = app.scim(Method::GET, &tenant, &path, None).await;

    for reply in [&patched, &patched_again, &replaced] {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, created.body, "the resource must be unchanged");
    }
    assert_eq!(deleted.status, 204);
    assert_eq!(after.body, created.body);
    let journal = app.journal(&tenant).await;
    let ignored: Vec<_> = journal.iter().filter(|e| e.outcome == "ignored").collect();
    assert_eq!(ignored.len(), 4, "{journal:?}");
    assert!(
        ignored[0].quirks.contains(&"capitalised_op".to_owned()),
        "{:?}",
        ignored[0]
    );
}

#[tokio::test]
async fn invalid_patch_bodies_are_400_and_unknown_ids_404() {
    let (app, tenant) = app_and_tenant().await;
    let created = app
        .post_user(&tenant, "ivo@contoso.com", "ivo@contoso.com")
        .await;
    let path = format!("/Users/{}", created.body["id"].as_str().unwrap());

    let no_operations = app
        .scim(
            Method::PATCH,
            &tenant,
            &path,
            Some(&json!({ "schemas": [] })),
        )
        .await;
    let bad_op = app
        .scim(
            Method::PATCH,
            &tenant,
            &path,
            Some(&json!({ "Operations": [{ "op": "explode", "path": "x" }] })),
        )
        .await;
    let unknown = app
        .scim(
            Method::GET,
            &tenant,
            &format!("/Users/{}", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    let not_uuid = app.scim(Method::GET, &tenant, "/Users/abc", None).await;
    let double_encoded = app
        .scim(Method::DELETE, &tenant, "/Users/%2561bc", None)
        .await;

    no_operations.assert_scim_error(400);
    bad_op.assert_scim_error(400);
    unknown.assert_scim_error(404);
    not_uuid.assert_scim_error(404);
    double_encoded.assert_scim_error(404);
}

#[tokio::test]
async fn filters_outside_the_allow_list_or_malformed_are_400_invalid_filter() {
    let (app, tenant) = app_and_tenant().await;

    for filter in [
        "manager+eq+%22x%22",
        "userName+eq",
        "userName+eq+%22a%22+and+(",
        "password+pr",
    ] {
        let reply = app
            .scim(
                Method::GET,
                &tenant,
                &format!("/Users?filter={filter}"),
                None,
            )
            .await;
        reply.assert_scim_error(400);
        assert_eq!(reply.body["scimType"], "invalidFilter", "{filter}");
    }
    let too_long = format!("/Users?filter=userName+eq+%22{}%22", "a".repeat(3000));
    app.scim(Method::GET, &tenant, &too_long, None)
        .await
        .assert_scim_error(400);
}

#[tokio::test]
async fn pages_are_one_based_stable_and_projected() {
    let (app, tenant) = app_and_tenant().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let reply = app
            .post_user(
                &tenant,
                &format!("p{n}@contoso.com"),
                &format!("p{n}@contoso.com"),
            )
            .await;
        ids.push(reply.body["id"].clone());
    }

    let page = app
        .scim(
            Method::GET,
            &tenant,
            "/Users?startIndex=2&count=2&attributes=userName",
            None,
        )
        .await;
    let count_only = app.scim(Method::GET, &tenant, "/Users?count=0", None).await;
    let excluded = app
        .scim(
            Method::GET,
            &tenant,
            "/Users?excludedAttributes=emails,name",
            None,
        )
        .await;

    assert_eq!(page.body["totalResults"], 5);
    assert_eq!(page.body["startIndex"], 2);
    assert_eq!(page.body["itemsPerPage"], 2);
    assert_eq!(page.body["Resources"][0]["id"], ids[1]);
    assert_eq!(page.body["Resources"][1]["id"], ids[2]);
    let first = page.body["Resources"][0].as_object().unwrap();
    let mut keys: Vec<_> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["id", "meta", "schemas", "userName"]);
    assert_eq!(count_only.body["totalResults"], 5);
    assert_eq!(count_only.body["Resources"], json!([]));
    let resource = &excluded.body["Resources"][0];
    assert!(resource.get("emails").is_none() && resource.get("name").is_none());
    assert!(resource.get("userName").is_some());
}

#[tokio::test]
async fn a_unique_match_pages_like_any_other_listing() {
    let (app, tenant) = app_and_tenant().await;
    app.post_user(&tenant, "solo@contoso.com", "solo@contoso.com")
        .await;
    app.post_user(&tenant, "other@contoso.com", "other@contoso.com")
        .await;
    let filter = "filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22SOLO%40contoso.com%22";

    let found = app
        .scim(Method::GET, &tenant, &format!("/Users?{filter}"), None)
        .await;
    let past_the_end = app
        .scim(
            Method::GET,
            &tenant,
            &format!("/Users?{filter}&startIndex=2"),
            None,
        )
        .await;
    let count_only = app
        .scim(
            Method::GET,
            &tenant,
            &format!("/Users?{filter}&count=0"),
            None,
        )
        .await;
    let and_inactive = app
        .scim(
            Method::GET,
            &tenant,
            &format!("/Users?{filter}+and+active+eq+false"),
            None,
        )
        .await;

    assert_eq!(found.body["totalResults"], 1);
    assert_eq!(found.body["Resources"][0]["userName"], "solo@contoso.com");
    assert_eq!(past_the_end.body["totalResults"], 1);
    assert_eq!(past_the_end.body["startIndex"], 2);
    assert_eq!(past_the_end.body["Resources"], json!([]));
    assert_eq!(count_only.body["totalResults"], 1);
    assert_eq!(count_only.body["Resources"], json!([]));
    assert_empty_list(&and_inactive);
}

#[tokio::test]
async fn fifty_concurrent_creates_of_one_user_store_exactly_one() {
    let (app, tenant) = app_and_tenant().await;

    let attempts = (0..50).map(|n| {
        let email = format!("race{n}@contoso.com");
        let app = &app;
        let tenant = &tenant;
        async move {
            app.post_user(tenant, "race@contoso.com", &email)
                .await
                .status
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(attempts).await;

    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    assert_eq!(app.user_count(&tenant).await, 1);
}

#[tokio::test]
async fn reads_and_creates_are_journaled_without_personal_data() {
    let (app, tenant) = app_and_tenant().await;
    app.scim(Method::GET, &tenant, WORK_EMAIL_PROBE, None).await;
    app.post_user(&tenant, "zoe@contoso.com", "zoe@contoso.com")
        .await;

    let journal = app.journal(&tenant).await;

    let list = journal
        .iter()
        .find(|e| e.operation == "scim.users.list")
        .unwrap();
    assert_eq!(list.outcome, "matched");
    let create = journal
        .iter()
        .find(|e| e.operation == "scim.users.create")
        .unwrap();
    assert_eq!(
        (create.outcome.as_str(), create.status),
        ("created", Some(201))
    );
    assert_eq!(
        create.fusionauth_outcome.as_deref(),
        Some("skipped"),
        "shadow mode"
    );
    for entry in &journal {
        let text = format!("{entry:?}");
        assert!(
            !text.contains("zoe@"),
            "personal data in the journal: {text}"
        );
        assert!(
            !text.contains("cf4d78e8"),
            "a filter value in the journal: {text}"
        );
    }
}

/// Read entries of many tenants are written in one transaction; should that fail (here one
/// tenant's journal refuses them), every other tenant's entries are still written.
#[tokio::test]
async fn read_entries_of_several_tenants_survive_one_tenant_that_cannot_take_them() {
    let (app, first) = app_and_tenant().await;
    let second = app.create_tenant().await;
    let broken = app.create_tenant().await;
    let refuse = format!(
        "alter table {}.journal add constraint refuse_reads check (operation <> 'scim.users.list')",
        broken.tenant.schema
    );
    sqlx::query(&refuse).execute(&app.pool).await.unwrap();

    for tenant in [&first, &second, &broken] {
        let read = app.scim(Method::GET, tenant, WORK_EMAIL_PROBE, None).await;
        assert_eq!(read.status, 200, "{read:?}");
    }
    let first_journal = app.journal(&first).await;
    let second_journal = app.journal(&second).await;

    for journal in [first_journal, second_journal] {
        let lists = journal
            .iter()
            .filter(|e| e.operation == "scim.users.list")
            .count();
        assert_eq!(lists, 1, "{journal:?}");
    }
}

#[tokio::test]
async fn a_new_user_lands_in_basic_user() {
    let (app, tenant) = app_and_tenant().await;
    let created = app
        .post_user(&tenant, "new@contoso.com", "new@contoso.com")
        .await;
    let id: uuid::Uuid = created.body["id"].as_str().unwrap().parse().unwrap();

    let mut tx = crate::helpers::TenantSql::begin(&app.pool, &tenant.tenant.schema)
        .await
        .unwrap();
    let source: Option<String> = sqlx::query_scalar(
        "select m.source from memberships m join groups g on g.id = m.group_id \
         where g.is_basic_user and m.user_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(source.as_deref(), Some("safety_net"));
    let journal = app.journal(&tenant).await;
    assert!(journal
        .iter()
        .any(|e| e.operation == "safety_net" && e.user_id == Some(id) && e.group_id.is_some()));
}

#[tokio::test]
async fn the_journal_is_pruned_by_the_tenants_retention() {
    let (app, tenant) = app_and_tenant().await;
    app.post_user(&tenant, "old@contoso.com", "old@contoso.com")
        .await;
    let mut tx = crate::helpers::TenantSql::begin(&app.pool, &tenant.tenant.schema)
        .await
        .unwrap();
    sqlx::query("update journal set at = now() - interval '31 days'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.scim(Method::GET, &tenant, WORK_EMAIL_PROBE, None).await;
    app.running.state.journal.flush().await;

    api::directory::journal::prune(&app.running.state.db)
        .await
        .unwrap();

    let left = app.journal(&tenant).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].operation, "scim.users.list");
}

/// One tenant whose journal cannot be pruned (here a trigger refuses every delete) holds back
/// no other tenant's pruning.
#[tokio::test]
async fn a_tenant_whose_journal_cannot_be_pruned_is_skipped() {
    let (app, tenant) = app_and_tenant().await;
    let stuck = app.create_tenant().await;
    for t in [&tenant, &stuck] {
        app.post_user(t, "old@contoso.com", "old@contoso.com").await;
        let age = format!(
            "update {}.journal set at = now() - interval '31 days'",
            t.tenant.schema
        );
        sqlx::query(&age).execute(&app.pool).await.unwrap();
    }
    let refuse = format!(
        "create function {s}.refuse_delete() returns trigger language plpgsql as \
           $$ begin raise exception 'journal is kept'; end $$; \
         create trigger keep before delete on {s}.journal \
           for each statement execute function {s}.refuse_delete()",
        s = stuck.tenant.schema
    );
    sqlx::raw_sql(&refuse).execute(&app.pool).await.unwrap();

    let pruned = api::directory::journal::prune(&app.running.state.db).await;

    assert!(pruned.is_ok(), "{pruned:?}");
    assert!(app.journal(&tenant).await.is_empty());
    assert!(!app.journal(&stuck).await.is_empty());
}

#[tokio::test]
async fn raw_quotes_in_the_query_string_are_accepted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (app, tenant) = app_and_tenant().await;
    app.post_user(&tenant, "raw@contoso.com", "raw@contoso.com")
        .await;
    let mut stream = tokio::net::TcpStream::connect(app.running.addr)
        .await
        .unwrap();
    let request = format!(
        "GET /scim/v2/{}/Users?filter=emails[type+eq+\"work\"].value+eq+\"raw@contoso.com\" \
         HTTP/1.1\r\nHost: roster\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        tenant.tenant.slug, tenant.key.secret
    );

    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"totalResults\":1"), "{response}");
}

#[tokio::test]
async fn another_tenants_user_ids_are_404() {
    let app = spawn_app().await;
    let mine = app.create_tenant().await;
    let theirs = app.create_tenant().await;
    let created = app
        .post_user(&theirs, "them@contoso.com", "them@contoso.com")
        .await;
    let path = format!("/Users/{}", created.body["id"].as_str().unwrap());

    let read = app.scim(Method::GET, &mine, &path, None).await;
    let deleted = app.scim(Method::DELETE, &mine, &path, None).await;
    let by_filter = app
        .scim(
            Method::GET,
            &mine,
            &format!(
                "/Users?filter=id+eq+%22{}%22",
                created.body["id"].as_str().unwrap()
            ),
            None,
        )
        .await;

    read.assert_scim_error(404);
    deleted.assert_scim_error(404);
    assert_eq!(by_filter.body["totalResults"], 0);
}
