//! Helpers for the admin API's directory families (groups, memberships, users, journal,
//! counters): paths under a tenant, typed calls, and a tenant connected to the FusionAuth
//! double.

use api::fusionauth::double::FusionAuthDouble;
use api::fusionauth::KeySealer;
use reqwest::Method;
use serde_json::{json, Value};
use tenancy::tenants::{self, FusionAuthSettings};
use uuid::Uuid;

use crate::admin_helpers::{read_token, scoped_token, write_token, SUPPORT};
use crate::helpers::{spawn_app, Reply, TestApp, TestTenant, TEST_KEY_ENCRYPTION_KEY};

/// `/admin/v1/tenants/{slug}{rest}`.
pub fn tenant_path(tenant: &TestTenant, rest: &str) -> String {
    format!("/admin/v1/tenants/{}{rest}", tenant.tenant.slug)
}

pub async fn app_and_tenant() -> (TestApp, TestTenant) {
    let app = spawn_app().await;
    let tenant = app.create_tenant().await;
    (app, tenant)
}

impl TestApp {
    /// `createGroup` with a write token; asserts 201 and returns the group.
    pub async fn admin_create_group(&self, tenant: &TestTenant, body: Value) -> Value {
        let path = tenant_path(tenant, "/groups");
        let reply = self.admin_post(&path, &write_token(), &body).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body
    }

    /// A synced group (with a random External Group ID) or a platform one.
    pub async fn admin_group(&self, tenant: &TestTenant, synced: bool) -> Uuid {
        let body = json!({
            "display_name": format!("Group {}", Uuid::new_v4().simple()),
            "external_id": synced.then(|| Uuid::new_v4().to_string()),
            "sync_enabled": synced,
        });
        let group = self.admin_create_group(tenant, body).await;
        group["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn admin_get_group(&self, tenant: &TestTenant, group: Uuid) -> Value {
        let reply = self
            .admin_get(
                &tenant_path(tenant, &format!("/groups/{group}")),
                &read_token(),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    pub async fn admin_add_members(&self, tenant: &TestTenant, group: Uuid, ids: &[Uuid]) -> Reply {
        let path = tenant_path(tenant, &format!("/groups/{group}/members"));
        self.admin_post(&path, &write_token(), &json!({ "user_ids": ids }))
            .await
    }

    pub async fn admin_user_action(&self, tenant: &TestTenant, user: Uuid, action: &str) -> Reply {
        let path = tenant_path(tenant, &format!("/users/{user}/{action}"));
        self.admin(Method::POST, &path, Some(&write_token()), None)
            .await
    }

    /// Every page of a listing, following `next_cursor`.
    pub async fn admin_all_pages(&self, path: &str, limit: u32) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        let separator = if path.contains('?') { '&' } else { '?' };
        loop {
            let mut url = format!("{path}{separator}limit={limit}");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let reply = self.admin_get(&url, &read_token()).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            items.extend(reply.body["items"].as_array().unwrap().iter().cloned());
            match reply.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    /// The tenant's audit records of `action`, newest first.
    pub async fn audited(&self, tenant: &TestTenant, action: &str) -> Vec<Value> {
        let path = format!(
            "/admin/v1/audit?tenant={}&action={action}",
            tenant.tenant.slug
        );
        let reply = self.admin_get(&path, &read_token()).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let records = reply.body["items"].as_array().unwrap().clone();
        assert!(records.iter().all(|r| r["actor"] == SUPPORT), "{records:?}");
        records
    }
}

/// Asserts the permission matrix on one operation: no token 401, a read token on a write 403,
/// and a token scoped to another tenant 403.
pub async fn assert_guarded(
    app: &TestApp,
    tenant: &TestTenant,
    method: Method,
    rest: &str,
    body: Option<&Value>,
    writes: bool,
) {
    let path = tenant_path(tenant, rest);
    let anonymous = app.admin(method.clone(), &path, None, body).await;
    anonymous.assert_admin_error(401, "unauthorized");

    let elsewhere = scoped_token("some-other-tenant", "roster:write");
    let scoped = app
        .admin(method.clone(), &path, Some(&elsewhere), body)
        .await;
    scoped.assert_admin_error(403, "forbidden");

    if writes {
        let reader = app.admin(method, &path, Some(&read_token()), body).await;
        reader.assert_admin_error(403, "forbidden");
    }
}

/// Connects the tenant to a fresh FusionAuth double (no application).
pub async fn connect_fusionauth(app: &TestApp, tenant: &TestTenant) -> FusionAuthDouble {
    let double = FusionAuthDouble::start().await.unwrap();
    let fa_tenant = Uuid::new_v4();
    let api_key = format!("fa-key-{}", Uuid::new_v4().simple());
    double.add_tenant(fa_tenant);
    double.add_api_key(&api_key, None);
    let sealer = KeySealer::from_base64(TEST_KEY_ENCRYPTION_KEY).unwrap();
    let settings = FusionAuthSettings {
        base_url: double.base_url(),
        sealed_api_key: sealer.seal(&api_key).unwrap(),
        tenant_id: fa_tenant,
        application_id: None,
    };
    tenants::set_fusionauth(&app.pool, tenant.tenant.id, Some(&settings))
        .await
        .unwrap();
    double
}
