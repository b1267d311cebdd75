//! `/admin/v1/audit`: who changed what through the admin API or the command line, and the
//! helper every admin write uses to say so.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use serde_json::Value;
use tenancy::audit::{self, AuditEvent, AuditFilter, AuditRecord};
use tenancy::{tenants, Tenant};
use uuid::Uuid;

use super::auth::{Access, Admin, AdminToken};
use super::error::{AdminError, AdminResult, Change};
use super::page;
use crate::openapi::ApiTags;
use crate::state::AppState;

/// The audit event of a change `admin` made to `tenant`, targeting the tenant's slug.
pub fn event<'a>(
    admin: &'a Admin,
    action: &'a str,
    tenant: &Tenant,
    detail: Value,
) -> AuditEvent<'a> {
    AuditEvent {
        actor: &admin.actor,
        action,
        tenant_id: Some(tenant.id),
        target: Some(tenant.slug.clone()),
        detail,
    }
}

pub struct AuditApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Audit")]
impl AuditApi {
    /// List audit records
    ///
    /// Every change made through the admin API or the `roster` command line, newest first:
    /// when, by whom (the token's `sub`, or `cli:<user>`), what, on which tenant, and the
    /// non-secret details. A token scoped to a tenant sees only that tenant's records. Records
    /// of deleted tenants are kept; list them without a `tenant` filter. Needs `roster:read`.
    #[oai(path = "/audit", method = "get", operation_id = "listAudit")]
    // poem-openapi documents each query parameter from its own handler argument.
    #[allow(clippy::too_many_arguments)]
    async fn list_audit(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        /// Only changes to this tenant (its slug).
        tenant: Query<Option<String>>,
        /// Only changes by this actor.
        actor: Query<Option<String>>,
        /// Only this action, e.g. `tenant.update` or `key.revoke`.
        action: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResult<Json<AuditPage>, Change> {
        let scope = admin.authorize_listing(Access::Read)?;
        let slug = tenant.0.or_else(|| scope.map(str::to_owned));
        if let Some(slug) = &slug {
            admin.authorize(Access::Read, slug)?;
        }

        let tenant_id = match &slug {
            Some(slug) => Some(tenants::require_by_slug(state.db.control(), slug).await?.id),
            None => None,
        };
        let filter = AuditFilter {
            tenant_id,
            actor: actor.0.as_deref(),
            action: action.0.as_deref(),
            before_id: parse_cursor(cursor.0.as_deref())?,
        };
        let limit = page::limit(limit.0);
        let rows = audit::list(state.db.control(), &filter, page::fetch_size(limit)).await?;
        let (rows, next_cursor) = page::finish(rows, limit, |record| record.id.to_string());

        Ok(Json(AuditPage {
            items: rows.into_iter().map(AuditEntry::from).collect(),
            next_cursor,
        }))
    }
}

fn parse_cursor(cursor: Option<&str>) -> Result<Option<i64>, AdminError> {
    cursor
        .map(|raw| {
            raw.parse::<i64>()
                .map_err(|_| AdminError::BadRequest("invalid cursor".to_owned()))
        })
        .transpose()
}

/// One recorded change.
#[derive(Debug, Object)]
pub struct AuditEntry {
    /// Newer records have larger ids.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The admin token's `sub`, or `cli:<user>` for the command line.
    pub actor: String,
    /// A dotted verb: `tenant.create`, `tenant.update`, `tenant.suspend`, `tenant.resume`,
    /// `tenant.delete`, `key.issue`, `key.revoke`, ...
    pub action: String,
    /// The tenant changed; kept after the tenant is deleted.
    pub tenant_id: Option<Uuid>,
    /// What was changed: a tenant slug, a key prefix, ...
    pub target: Option<String>,
    /// Non-secret details of the change.
    pub detail: Value,
}

impl From<AuditRecord> for AuditEntry {
    fn from(record: AuditRecord) -> Self {
        AuditEntry {
            id: record.id,
            at: record.at,
            actor: record.actor,
            action: record.action,
            tenant_id: record.tenant_id,
            target: record.target,
            detail: record.detail,
        }
    }
}

/// One page of audit records, newest first.
#[derive(Debug, Object)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_record_ids() {
        assert_eq!(parse_cursor(None).unwrap(), None);
        assert_eq!(parse_cursor(Some("42")).unwrap(), Some(42));
        assert!(matches!(
            parse_cursor(Some("abc")),
            Err(AdminError::BadRequest(_))
        ));
    }
}
