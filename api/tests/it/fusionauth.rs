//! Provisioning into the tenant's FusionAuth, exactly once, against the contract-faithful
//! double over real HTTP.

use std::time::{Duration, Instant};

use api::fusionauth::double::{Fault, FaultKind, FusionAuthDouble};
use api::fusionauth::KeySealer;
use poem::http::Method as FaMethod;
use reqwest::Method;
use tenancy::tenants::{self, FusionAuthSettings};
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp, TestTenant, TEST_KEY_ENCRYPTION_KEY};

/// A tenant connected to its own FusionAuth (the double).
struct Connected {
    app: TestApp,
    tenant: TestTenant,
    double: FusionAuthDouble,
    api_key: String,
}

async fn connected(application: bool) -> Connected {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let double = FusionAuthDouble::start().await.unwrap();
    let fa_tenant = Uuid::new_v4();
    let api_key = format!("fa-key-{}", Uuid::new_v4().simple());
    double.add_tenant(fa_tenant);
    double.add_api_key(&api_key, None);
    let application_id = application.then(Uuid::new_v4);
    if let Some(app_id) = application_id {
        double.add_application(fa_tenant, app_id);
    }
    connect(&app, &tenant, &double, &api_key, fa_tenant, application_id).await;
    Connected {
        app,
        tenant,
        double,
        api_key,
    }
}

async fn connect(
    app: &TestApp,
    tenant: &TestTenant,
    double: &FusionAuthDouble,
    api_key: &str,
    fa_tenant: Uuid,
    application_id: Option<Uuid>,
) {
    let sealer = KeySealer::from_base64(TEST_KEY_ENCRYPTION_KEY).unwrap();
    let settings = FusionAuthSettings {
        base_url: double.base_url(),
        sealed_api_key: sealer.seal(api_key).unwrap(),
        tenant_id: fa_tenant,
        application_id,
    };
    tenants::set_fusionauth(&app.pool, tenant.tenant.id, Some(&settings))
        .await
        .unwrap();
}

fn users_named(double: &FusionAuthDouble, user_name: &str) -> usize {
    double
        .users()
        .iter()
        .filter(|u| u["username"] == user_name)
        .count()
}

#[tokio::test]
async fn a_create_provisions_fusionauth_first_with_roster_ids() {
    let c = connected(true).await;

    let reply = c
        .app
        .post_user(&c.tenant, "amy@contoso.com", "amy@contoso.com")
        .await;

    assert_eq!(reply.status, 201, "{reply:?}");
    let id: Uuid = reply.body["id"].as_str().unwrap().parse().unwrap();
    let fa_user = c
        .double
        .user(id)
        .expect("the FusionAuth user has Roster's id");
    assert_eq!(fa_user["email"], "amy@contoso.com");
    assert_eq!(fa_user["data"]["roster"]["userId"], id.to_string());
    assert_eq!(c.double.registrations().len(), 1);
    let journal = c.app.journal(&c.tenant).await;
    let create = journal
        .iter()
        .find(|e| e.operation == "scim.users.create")
        .unwrap();
    assert_eq!(create.fusionauth_outcome.as_deref(), Some("created"));
    assert!(create.fusionauth_latency_ms.is_some());
}

#[tokio::test]
async fn every_fusionauth_request_carries_the_tenant_header_and_the_raw_key() {
    let c = connected(true).await;
    c.double.set_fault(Fault::next(1, FaultKind::Status(503)));

    c.app
        .post_user(&c.tenant, "hdr@contoso.com", "hdr@contoso.com")
        .await;

    let requests = c.double.requests();
    assert!(requests.len() >= 3, "{requests:?}");
    for request in requests {
        assert!(
            request.header("x-fusionauth-tenantid").is_some(),
            "{request:?}"
        );
        assert_eq!(request.header("authorization"), Some(c.api_key.as_str()));
    }
}

#[tokio::test]
async fn transient_faults_are_retried_into_exactly_one_user() {
    for kind in [
        FaultKind::Status(500),
        FaultKind::Status(503),
        FaultKind::Status(504),
        FaultKind::StatusAfterCommit(500),
        FaultKind::DropAfterCommit,
    ] {
        let c = connected(false).await;
        c.double
            .set_fault(Fault::next(1, kind.clone()).on(FaMethod::POST, "/api/user"));

        let reply = c
            .app
            .post_user(&c.tenant, "ret@contoso.com", "ret@contoso.com")
            .await;

        assert_eq!(reply.status, 201, "{kind:?}: {reply:?}");
        assert_eq!(users_named(&c.double, "ret@contoso.com"), 1, "{kind:?}");
        assert_eq!(c.app.user_count(&c.tenant).await, 1, "{kind:?}");
    }
}

#[tokio::test]
async fn fusionauth_down_is_503_with_retry_after_and_entras_retry_stores_one_user() {
    for kind in [
        FaultKind::Status(503),
        FaultKind::Slow(Duration::from_secs(5)),
        FaultKind::DropAfterCommit,
    ] {
        let c = connected(false).await;
        c.double.set_fault(Fault::always(kind.clone()));

        let started = Instant::now();
        let failed = c
            .app
            .post_user(&c.tenant, "down@contoso.com", "down@contoso.com")
            .await;
        let elapsed = started.elapsed();
        c.double.clear_faults();
        let retried = c
            .app
            .post_user(&c.tenant, "down@contoso.com", "down@contoso.com")
            .await;

        failed.assert_scim_error(503);
        assert!(failed.header("retry-after").is_some(), "{kind:?}");
        assert!(
            elapsed < Duration::from_millis(3_000 + 1_500),
            "{kind:?}: a failing create took {elapsed:?}, over the 3 s budget"
        );
        assert_eq!(retried.status, 201, "{kind:?}: {retried:?}");
        assert_eq!(users_named(&c.double, "down@contoso.com"), 1, "{kind:?}");
        assert_eq!(c.app.user_count(&c.tenant).await, 1, "{kind:?}");
        let journal = c.app.journal(&c.tenant).await;
        let failure = journal.iter().find(|e| e.outcome == "failed").unwrap();
        assert_eq!(
            failure.fusionauth_outcome.as_deref(),
            Some("unavailable"),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn committed_then_dropped_links_the_existing_fusionauth_user_on_retry() {
    let c = connected(false).await;
    c.double
        .set_fault(Fault::always(FaultKind::DropAfterCommit));
    let failed = c
        .app
        .post_user(&c.tenant, "drop@contoso.com", "drop@contoso.com")
        .await;
    let created_in_fusionauth = users_named(&c.double, "drop@contoso.com");
    c.double.clear_faults();

    let retried = c
        .app
        .post_user(&c.tenant, "drop@contoso.com", "drop@contoso.com")
        .await;

    failed.assert_scim_error(503);
    assert_eq!(
        created_in_fusionauth, 1,
        "the write committed before the drop"
    );
    assert_eq!(retried.status, 201);
    assert_eq!(users_named(&c.double, "drop@contoso.com"), 1);
    let journal = c.app.journal(&c.tenant).await;
    let created = journal.iter().find(|e| e.outcome == "created").unwrap();
    assert_eq!(
        created.fusionauth_outcome.as_deref(),
        Some("already_created")
    );
}

#[tokio::test]
async fn an_existing_fusionauth_user_with_the_email_is_linked_and_registered_once() {
    let c = connected(true).await;
    let existing = c.double.insert_user(
        tenant_of(&c).await,
        serde_json::json!({ "email": "old@contoso.com", "username": "legacy-old", "active": true }),
    );

    let first = c
        .app
        .post_user(&c.tenant, "old@contoso.com", "old@contoso.com")
        .await;
    let again = c
        .app
        .post_user(&c.tenant, "old@contoso.com", "old@contoso.com")
        .await;

    assert_eq!(first.status, 201, "{first:?}");
    again.assert_scim_error(409);
    assert_eq!(c.double.users().len(), 1, "linked, not duplicated");
    let registrations = c.double.registrations();
    assert_eq!(registrations.len(), 1);
    assert_eq!(registrations[0].user_id, existing);
    let link: Option<Uuid> = {
        let mut tx = crate::helpers::TenantSql::begin(&c.app.pool, &c.tenant.tenant.schema)
            .await
            .unwrap();
        let link = sqlx::query_scalar("select fusionauth_user_id from users")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        link
    };
    assert_eq!(link, Some(existing));
}

/// The FusionAuth tenant id the Roster tenant is connected to.
async fn tenant_of(c: &Connected) -> Uuid {
    tenants::get(&c.app.pool, c.tenant.tenant.id)
        .await
        .unwrap()
        .unwrap()
        .fusionauth
        .unwrap()
        .tenant_id
}

#[tokio::test]
async fn rejected_credentials_are_a_server_side_error_never_a_scim_401() {
    let c = connected(false).await;
    let fa_tenant = tenant_of(&c).await;
    connect(&c.app, &c.tenant, &c.double, "a-wrong-key", fa_tenant, None).await;

    let reply = c
        .app
        .post_user(&c.tenant, "cred@contoso.com", "cred@contoso.com")
        .await;

    reply.assert_scim_error(502);
    assert!(reply.body["detail"]
        .as_str()
        .unwrap()
        .contains("credentials"));
    assert_eq!(c.app.user_count(&c.tenant).await, 0);
    let journal = c.app.journal(&c.tenant).await;
    let failure = journal.iter().find(|e| e.outcome == "failed").unwrap();
    assert_eq!(
        failure.fusionauth_outcome.as_deref(),
        Some("credentials_rejected")
    );
    assert!(failure.detail.as_deref().unwrap().contains("credentials"));
}

#[tokio::test]
async fn fusionauth_validation_errors_are_400_invalid_value() {
    let c = connected(false).await;

    let reply = c
        .app
        .post_user(&c.tenant, "bad@contoso.com", "not-an-email")
        .await;

    reply.assert_scim_error(400);
    assert_eq!(reply.body["scimType"], "invalidValue");
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("FusionAuth"),
        "{reply:?}"
    );
    assert_eq!(c.app.user_count(&c.tenant).await, 0);
}

#[tokio::test]
async fn shadow_mode_stores_in_roster_only_and_says_so() {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    let double = FusionAuthDouble::start().await.unwrap();

    let reply = app
        .post_user(&tenant, "shadow@contoso.com", "shadow@contoso.com")
        .await;

    assert_eq!(reply.status, 201);
    assert!(double.requests().is_empty());
    let journal = app.journal(&tenant).await;
    let create = journal.iter().find(|e| e.outcome == "created").unwrap();
    assert_eq!(create.fusionauth_outcome.as_deref(), Some("skipped"));
    let reads = app
        .scim(
            Method::GET,
            &tenant,
            "/Users?filter=userName+eq+%22shadow%40contoso.com%22",
            None,
        )
        .await;
    assert_eq!(reads.body["totalResults"], 1);
}
