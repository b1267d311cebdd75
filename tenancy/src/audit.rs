//! The admin audit trail: every change made through the admin API or the CLI, with its actor.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// One audited change.
#[derive(Debug)]
pub struct AuditEvent<'a> {
    /// The token subject for the admin API, `cli:<user>` for the command line.
    pub actor: &'a str,
    /// A dotted verb such as `tenant.create` or `key.revoke`.
    pub action: &'a str,
    pub tenant_id: Option<Uuid>,
    /// What was changed, e.g. a key prefix or a group id.
    pub target: Option<String>,
    /// Non-secret details of the change.
    pub detail: Value,
}

/// Appends an event; run it in the same transaction as the change when there is one.
pub async fn record(
    executor: impl PgExecutor<'_>,
    event: AuditEvent<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into roster_control.admin_audit (actor, action, tenant_id, target, detail) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(event.actor)
    .bind(event.action)
    .bind(event.tenant_id)
    .bind(event.target)
    .bind(event.detail)
    .execute(executor)
    .await?;
    Ok(())
}

/// One recorded change, as listings show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    /// Increases with every record: newer records have larger ids.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    /// Kept after the tenant is deleted, so its history stays readable.
    pub tenant_id: Option<Uuid>,
    pub target: Option<String>,
    pub detail: Value,
}

/// Which records [`list`] returns; `None` fields do not filter.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter<'a> {
    pub tenant_id: Option<Uuid>,
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    /// Only records older than this id: the cursor of the previous page.
    pub before_id: Option<i64>,
}

/// One page of records, newest first.
pub async fn list(
    pool: &PgPool,
    filter: &AuditFilter<'_>,
    limit: i64,
) -> Result<Vec<AuditRecord>, sqlx::Error> {
    sqlx::query_as(
        "select id, at, actor, action, tenant_id, target, detail \
         from roster_control.admin_audit \
         where ($1::uuid is null or tenant_id = $1) \
           and ($2::text is null or actor = $2) \
           and ($3::text is null or action = $3) \
           and ($4::bigint is null or id < $4) \
         order by id desc \
         limit $5",
    )
    .bind(filter.tenant_id)
    .bind(filter.actor)
    .bind(filter.action)
    .bind(filter.before_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
