//! The admin audit trail: every change made through the admin API or the CLI, with its actor.

use serde_json::Value;
use sqlx::PgExecutor;
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
