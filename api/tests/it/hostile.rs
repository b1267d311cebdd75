//! Hostile input through the real server: the fuzz corpus, the limits, SQL injection through
//! every filterable attribute and admin search parameter, and path and id tricks. Every answer
//! must be a 2xx or a 4xx in the SCIM (or admin) error shape, never a 500, and nothing may
//! change in the database beyond what a well-formed request would change.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::admin_helpers::{read_token, write_token};
use crate::fuzz::corpus;
use crate::groups_helpers::{add_members, create_group, insert_users_bulk, members_of};
use crate::helpers::{spawn_app, spawn_app_with, Reply, TestApp, TestTenant};

/// A server whose body limit lets the PATCH limit corpus entries reach the parser.
async fn spawn_roomy_app() -> TestApp {
    spawn_app_with(|config| config.body_limit_bytes = 1024 * 1024).await
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// Asserts a SCIM answer is a success, or a 4xx in the SCIM error shape.
fn assert_handled(reply: &Reply, what: &str) {
    let status = reply.status.as_u16();
    assert!(status < 500, "{what}: {reply:?}");
    if status >= 400 {
        reply.assert_scim_error(status);
    }
}

/// Sends raw bytes as a SCIM request body.
async fn send_raw(app: &TestApp, method: Method, path: &str, key: &str, body: &[u8]) -> Reply {
    let response = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(key)
        .header("content-type", "application/scim+json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends a request target exactly as given (no client-side normalisation of `..` or
/// percent-encodings); returns the status and the raw response.
async fn send_raw_target(app: &TestApp, target: &str, key: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(app.running.addr)
        .await
        .unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: roster\r\nAuthorization: Bearer {key}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, response)
}

// ---------------------------------------------------------------------------------------------
// The corpus through the server

#[tokio::test]
async fn every_corpus_entry_through_the_server_is_answered_without_a_500() {
    let app = spawn_roomy_app().await;
    let tenant = app.create_tenant().await;
    let user = app
        .post_user(&tenant, "adele@contoso.com", "adele@contoso.com")
        .await;
    let user_id = user.body["id"].as_str().unwrap().to_owned();
    let group = create_group(&app, &tenant, true).await;
    let key = tenant.key.secret.as_str();
    let base = format!("/scim/v2/{}", tenant.tenant.slug);

    for entry in corpus("filter") {
        let filter = encode(&String::from_utf8(entry.bytes).unwrap());
        for resource in ["Users", "Groups"] {
            let path = format!("/{resource}?filter={filter}");
            let reply = app.scim_get(&tenant, &path).await;
            assert_handled(&reply, &format!("{resource} filter {}", entry.name));
        }
    }
    for entry in corpus("patch").into_iter().chain(corpus("user")) {
        let targets = [
            (Method::PATCH, format!("{base}/Users/{user_id}")),
            (Method::PATCH, format!("{base}/Groups/{}", group.id)),
            (Method::PUT, format!("{base}/Users/{user_id}")),
            (Method::POST, format!("{base}/Users")),
        ];
        for (method, path) in targets {
            let reply = send_raw(&app, method.clone(), &path, key, &entry.bytes).await;
            assert_handled(&reply, &format!("{method} {path} with {}", entry.name));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn deeply_nested_json_is_400_invalid_syntax_not_a_stack_overflow() {
    let app = spawn_roomy_app().await;
    let tenant = app.create_tenant().await;
    let key = tenant.key.secret.as_str();
    let base = format!("/scim/v2/{}", tenant.tenant.slug);
    let group = create_group(&app, &tenant, true).await;

    for depth in [200, 100_000, 500_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // Six bytes a level: capped so the body stays under the 1 MiB limit.
        let levels = depth.min(150_000);
        let objects = format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels));
        for body in [arrays, objects] {
            for (method, path) in [
                (Method::POST, format!("{base}/Users")),
                (Method::PATCH, format!("{base}/Groups/{}", group.id)),
            ] {
                let reply = send_raw(&app, method, &path, key, body.as_bytes()).await;
                reply.assert_scim_error(400);
                assert_eq!(reply.body["scimType"], "invalidSyntax", "{depth}");
            }
        }
    }
    assert_eq!(app.user_count(&tenant).await, 0);
}

#[tokio::test]
async fn filters_too_long_or_too_deep_are_400_invalid_filter() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let long = format!("userName eq \"{}\"", "a".repeat(2049 - 14));
    let deep = format!("{}userName eq \"x\"{}", "(".repeat(11), ")".repeat(11));
    let deep_not = format!("{}active eq true{}", "not (".repeat(11), ")".repeat(11));
    let very_deep = format!("{}userName eq \"x\"{}", "(".repeat(5000), ")".repeat(5000));

    for filter in [long, deep, deep_not, very_deep] {
        for resource in ["Users", "Groups"] {
            let path = format!("/{resource}?filter={}", encode(&filter));
            let reply = app.scim_get(&tenant, &path).await;
            reply.assert_scim_error(400);
            assert_eq!(reply.body["scimType"], "invalidFilter");
        }
    }
}

#[tokio::test]
async fn a_huge_count_is_clamped_to_max_results() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    insert_users_bulk(&app, &tenant, 205, None).await;

    let huge = app.scim_get(&tenant, "/Users?count=1000000").await;
    let overflow = app
        .scim_get(&tenant, "/Users?count=99999999999999999999")
        .await;
    let negative = app
        .scim_get(&tenant, "/Users?count=-1000000&startIndex=-5")
        .await;

    assert_eq!(huge.status, 200, "{huge:?}");
    assert_eq!(huge.body["totalResults"], 205);
    assert_eq!(huge.body["itemsPerPage"], 200);
    assert_eq!(huge.body["Resources"].as_array().unwrap().len(), 200);
    overflow.assert_scim_error(400);
    assert_eq!(overflow.body["scimType"], "invalidValue");
    assert_eq!(negative.status, 200, "{negative:?}");
    assert_eq!(negative.body["itemsPerPage"], 0);
}

#[tokio::test]
async fn patch_operation_and_member_limits_are_400_and_change_nothing() {
    let app = spawn_roomy_app().await;
    let tenant = app.create_tenant().await;
    let group = create_group(&app, &tenant, true).await;
    let key = tenant.key.secret.as_str();
    let path = format!("/scim/v2/{}/Groups/{}", tenant.tenant.slug, group.id);
    let by_name = |name: &str| {
        corpus("patch")
            .into_iter()
            .find(|entry| entry.name == name)
            .unwrap()
            .bytes
    };

    let operations = send_raw(
        &app,
        Method::PATCH,
        &path,
        key,
        &by_name("too-many-ops.json"),
    )
    .await;
    let members = send_raw(
        &app,
        Method::PATCH,
        &path,
        key,
        &by_name("too-many-members.json"),
    )
    .await;

    for reply in [operations, members] {
        reply.assert_scim_error(400);
        assert_eq!(reply.body["scimType"], "invalidValue");
    }
    assert!(members_of(&app, &tenant, group.id).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// SQL injection

/// Classic injection payloads, as values (escaped into valid filter strings) and raw.
const PAYLOADS: &[&str] = &[
    "' or 1=1--",
    "\"; drop table users;--",
    "\\' union select id, slug from roster_control.tenants--",
    "%27 or %271%27=%271",
    "x\u{0}' or ''='",
    "ʼ or 1=1--",
    "＇ or 1=1--",
    "'); delete from users; --",
    "$1",
    "$$; drop table memberships; $$",
    "%",
    "_",
    "*",
];

const USER_ATTRIBUTES: &[&str] = &[
    "id",
    "userName",
    "externalId",
    "displayName",
    "name.givenName",
    "name.familyName",
    "name.formatted",
    "emails",
    "emails.value",
    "emails.type",
    "emails.primary",
    "emails[type eq \"work\"].value",
    "active",
    "meta.created",
    "meta.lastModified",
];

const GROUP_ATTRIBUTES: &[&str] = &[
    "id",
    "externalId",
    "displayName",
    "members",
    "members.value",
];

/// A payload as a filter string literal, and spliced in raw.
fn payload_filters(attribute: &str, payload: &str) -> Vec<String> {
    let quoted = Value::String(payload.to_owned()).to_string();
    let mut filters: Vec<String> = ["eq", "co", "sw", "ew", "gt"]
        .iter()
        .map(|op| format!("{attribute} {op} {quoted}"))
        .collect();
    filters.push(format!("{attribute} eq \"{payload}\""));
    filters.push(format!("{attribute} eq {payload}"));
    filters.push(format!("{attribute}{payload} eq \"x\""));
    filters
}

/// Row counts of the control tables and of every tenant table but the journal (which grows
/// with every request), plus the canary tenant's users, groups and memberships as text.
async fn fingerprint(app: &TestApp, canary: &TestTenant, tenants: &[&TestTenant]) -> Vec<String> {
    let mut seen = Vec::new();
    // Other tests add control rows in parallel: only the canary's are compared.
    let control: String = sqlx::query_scalar(
        "select concat_ws('|', t.slug, t.name, t.status, t.updated_at, \
           (select count(*) from roster_control.api_keys k where k.tenant_id = t.id), \
           (select count(*) from roster_control.admin_audit a where a.tenant_id = t.id)) \
         from roster_control.tenants t where t.id = $1",
    )
    .bind(canary.tenant.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    seen.push(control);
    for tenant in tenants {
        let schema = &tenant.tenant.schema;
        for table in ["users", "groups", "memberships"] {
            let count: i64 = sqlx::query_scalar(&format!("select count(*) from {schema}.{table}"))
                .fetch_one(&app.pool)
                .await
                .unwrap();
            seen.push(format!("{schema}.{table}: {count}"));
        }
    }
    let schema = &canary.tenant.schema;
    let rows: Vec<String> = sqlx::query_scalar(&format!(
        "select concat_ws('|', u.id, u.user_name, u.work_email, u.active, u.updated_at) \
         from {schema}.users u order by u.id"
    ))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    seen.extend(rows);
    let members: Vec<String> = sqlx::query_scalar(&format!(
        "select concat_ws('|', group_id, user_id) from {schema}.memberships order by 1"
    ))
    .fetch_all(&app.pool)
    .await
    .unwrap();
    seen.extend(members);
    seen
}

/// Asserts a filter answer is `400 invalidFilter` or a list of the asking tenant's own rows:
/// empty, except for `gt`, under which the payload is an ordinary string to compare with.
fn assert_refused_or_own(reply: &Reply, filter: &str, canary: &TestTenant) {
    if reply.status == 400 {
        reply.assert_scim_error(400);
        assert_eq!(reply.body["scimType"], "invalidFilter", "{filter}");
        return;
    }
    assert_eq!(reply.status, 200, "{filter}: {reply:?}");
    let text = reply.body.to_string();
    assert!(!text.contains("canary"), "{filter}: {text}");
    assert!(!text.contains(&canary.tenant.slug), "{filter}: {text}");
    if !filter.contains(" gt ") {
        assert_eq!(reply.body["totalResults"], 0, "{filter}: {reply:?}");
    }
}

#[tokio::test]
async fn sql_injection_through_every_filterable_attribute_changes_nothing() {
    let app = spawn_app().await;
    let canary = app.create_tenant().await;
    let canary_user = app
        .post_user(&canary, "canary@contoso.com", "canary@contoso.com")
        .await;
    let canary_group = create_group(&app, &canary, true).await;
    let canary_id: Uuid = canary_user.body["id"].as_str().unwrap().parse().unwrap();
    add_members(&app, &canary, canary_group.id, &[canary_id]).await;
    let attacker = app.create_tenant().await;
    app.post_user(&attacker, "mine@contoso.com", "mine@contoso.com")
        .await;
    let before = fingerprint(&app, &canary, &[&canary, &attacker]).await;

    let mut sent = 0;
    for (resource, attributes) in [("Users", USER_ATTRIBUTES), ("Groups", GROUP_ATTRIBUTES)] {
        for attribute in attributes {
            for payload in PAYLOADS {
                for filter in payload_filters(attribute, payload) {
                    let path = format!("/{resource}?filter={}", encode(&filter));
                    let reply = app.scim_get(&attacker, &path).await;
                    assert_refused_or_own(&reply, &filter, &canary);
                    sent += 1;
                }
            }
        }
    }

    assert!(sent > 1000, "{sent}");
    assert_eq!(
        fingerprint(&app, &canary, &[&canary, &attacker]).await,
        before
    );
}

/// Sends every admin URL with a read token and asserts it is answered with a success or a 4xx
/// in the admin error shape; returns the replies for further checks. The admin endpoints
/// built later (users, journal) add their search URLs to the lists passed here.
pub async fn admin_searches_are_handled(app: &TestApp, urls: &[String]) -> Vec<Reply> {
    let mut replies = Vec::new();
    for url in urls {
        let reply = app.admin_get(url, &read_token()).await;
        let status = reply.status.as_u16();
        assert!(status < 500, "{url}: {reply:?}");
        if status >= 400 {
            assert!(reply.body["error"].is_string(), "{url}: {reply:?}");
        }
        replies.push(reply);
    }
    replies
}

#[tokio::test]
async fn sql_injection_through_admin_search_parameters_changes_nothing() {
    let app = spawn_app().await;
    let canary = app.create_tenant().await;
    app.post_user(&canary, "canary@contoso.com", "canary@contoso.com")
        .await;
    let slug = canary.tenant.slug.clone();
    app.admin_patch(
        &format!("/admin/v1/tenants/{slug}"),
        &write_token(),
        &json!({ "name": "Canary" }),
    )
    .await;
    let before = fingerprint(&app, &canary, &[&canary]).await;

    let mut urls = Vec::new();
    let mut actor_and_action = Vec::new();
    for payload in PAYLOADS {
        let value = encode(payload);
        urls.push(format!("/admin/v1/tenants?cursor={value}"));
        urls.push(format!("/admin/v1/tenants?limit={value}"));
        urls.push(format!("/admin/v1/audit?tenant={value}"));
        urls.push(format!("/admin/v1/audit?cursor={value}"));
        urls.push(format!("/admin/v1/audit?limit={value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/keys?cursor={value}"));
        urls.push(format!("/admin/v1/tenants/{value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/users?email={value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/users?name={value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/users?group={value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/users?cursor={value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/groups?cursor={value}"));
        urls.push(format!(
            "/admin/v1/tenants/{slug}/journal?operation={value}"
        ));
        urls.push(format!("/admin/v1/tenants/{slug}/journal?from={value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/journal?cursor={value}"));
        urls.push(format!("/admin/v1/tenants/{slug}/counters?days={value}"));
        actor_and_action.push(format!("/admin/v1/audit?tenant={slug}&actor={value}"));
        actor_and_action.push(format!("/admin/v1/audit?tenant={slug}&action={value}"));
        actor_and_action.push(format!("/admin/v1/audit?actor={value}&action={value}"));
    }
    admin_searches_are_handled(&app, &urls).await;
    let filtered = admin_searches_are_handled(&app, &actor_and_action).await;

    for reply in filtered {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["items"], json!([]), "{reply:?}");
    }
    assert_eq!(fingerprint(&app, &canary, &[&canary]).await, before);
}

// ---------------------------------------------------------------------------------------------
// Path and id tricks

/// Two tenants: `theirs` has a user in a synced group; `mine` is the one asking.
struct TwoTenants {
    app: TestApp,
    mine: TestTenant,
    theirs: TestTenant,
    their_user: Uuid,
    their_group: Uuid,
}

async fn two_tenants() -> TwoTenants {
    let app = spawn_app().await;
    let mine = app.create_tenant().await;
    let theirs = app.create_tenant().await;
    let user = app
        .post_user(
            &theirs,
            "secret.agent@contoso.com",
            "secret.agent@contoso.com",
        )
        .await;
    let their_user = user.body["id"].as_str().unwrap().parse().unwrap();
    let their_group = create_group(&app, &theirs, true).await.id;
    add_members(&app, &theirs, their_group, &[their_user]).await;
    TwoTenants {
        app,
        mine,
        theirs,
        their_user,
        their_group,
    }
}

#[tokio::test]
async fn another_tenants_user_and_group_ids_are_404_for_reads_and_writes() {
    let t = two_tenants().await;
    let app = &t.app;
    let remove_all = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": "members"}]
    });
    let disable = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}]
    });
    let user = format!("/Users/{}", t.their_user);
    let group = format!("/Groups/{}", t.their_group);
    let key = Some(t.mine.key.secret.as_str());

    let mut replies = vec![
        app.scim(Method::GET, &t.mine, &user, None).await,
        app.scim(Method::PATCH, &t.mine, &user, Some(&disable))
            .await,
        app.scim(Method::GET, &t.mine, &group, None).await,
        app.scim(Method::PATCH, &t.mine, &group, Some(&remove_all))
            .await,
    ];
    // The key-based base resolves the tenant from the key alone.
    for path in [&user, &group] {
        let url = format!("/scim/v2{path}");
        replies.push(app.request(Method::GET, &url, key, None).await);
        replies.push(
            app.request(Method::PATCH, &url, key, Some(&remove_all))
                .await,
        );
    }

    for reply in &replies {
        reply.assert_scim_error(404);
        assert!(
            !reply.body.to_string().contains("secret.agent"),
            "{reply:?}"
        );
    }
    let members = members_of(app, &t.theirs, t.their_group).await;
    assert!(members.contains(&t.their_user));
}

#[tokio::test]
async fn odd_ids_encoded_slashes_and_dot_segments_never_reach_other_data() {
    let t = two_tenants().await;
    let app = &t.app;
    let mine = &t.mine.tenant.slug;
    let theirs = &t.theirs.tenant.slug;
    let long_id = "a".repeat(8000);
    let targets: Vec<String> = [
        format!("/scim/v2/{mine}/Users/not-a-uuid"),
        format!("/scim/v2/{mine}/Users/1"),
        format!("/scim/v2/{mine}/Users/{}", encode("' or 1=1--")),
        format!("/scim/v2/{mine}/Users/{}%00", t.their_user),
        format!("/scim/v2/{mine}/Users/{}", t.their_user.simple()),
        format!("/scim/v2/{mine}/Users/{{{}}}", t.their_user),
        format!("/scim/v2/{mine}/Users/{long_id}"),
        format!("/scim/v2/{mine}/Groups/{long_id}"),
        format!(
            "/scim/v2/{mine}/Users/..%2F..%2F{theirs}%2FUsers%2F{}",
            t.their_user
        ),
        format!("/scim/v2/{mine}/Users/..%252F..%252F{theirs}%252FUsers"),
        format!(
            "/scim/v2/{mine}/Users/%2e%2e/%2e%2e/{theirs}/Users/{}",
            t.their_user
        ),
        format!(
            "/scim/v2/{mine}/Users/../../{theirs}/Users/{}",
            t.their_user
        ),
        format!("/scim/v2/{mine}/%2561dmin"),
        format!("/scim/v2/{mine}/Users%2F{}", t.their_user),
        format!("/scim/v2/{mine}/Groups/{}%2Fmembers", t.their_group),
        format!("/scim/v2/{mine}/../{theirs}/Users"),
        format!("/scim/v2/{mine}%2F..%2F{theirs}/Users"),
        format!("/scim/v2/..%2F{theirs}/Users"),
        format!("/scim/v2/{theirs}%2F..%2F{mine}/Users"),
        format!("/scim/v2/%2e%2e%2f{theirs}/Users"),
        format!("/scim/v2/{}/Users", encode(&format!("../{theirs}"))),
        format!("/scim/v2/{}/Users", "x".repeat(5000)),
        format!("/scim/v2/{mine}/Users/../../../admin/v1/tenants"),
        "/scim/v2/../../admin/v1/tenants".to_owned(),
        "/scim/v2/Users/..%2F..%2F..%2Fadmin%2Fv1%2Ftenants".to_owned(),
    ]
    .into_iter()
    .collect();

    for target in &targets {
        let (status, response) = send_raw_target(app, target, &t.mine.key.secret).await;
        assert!(
            matches!(status, 400 | 401 | 404 | 414 | 431),
            "{target}: {response}"
        );
        assert!(!response.contains("secret.agent"), "{target}: {response}");
        assert!(!response.contains(theirs.as_str()), "{target}: {response}");
        if target.starts_with("/scim/v2/") && status != 414 && status != 431 {
            assert!(
                response.contains("urn:ietf:params:scim:api:messages:2.0:Error")
                    || response.contains("\"error\""),
                "{target}: {response}"
            );
        }
    }
}

/// Found by the corpus: a second create of a userName without any email failed to decode the
/// uniqueness check's NULL and answered 500.
#[tokio::test]
async fn a_repeated_create_without_an_email_is_409_not_500() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "no.email@contoso.com"
    });

    let first = app.scim(Method::POST, &tenant, "/Users", Some(&body)).await;
    let second = app.scim(Method::POST, &tenant, "/Users", Some(&body)).await;

    assert_eq!(first.status, 201, "{first:?}");
    second.assert_scim_error(409);
    assert_eq!(second.body["scimType"], "uniqueness");
}
