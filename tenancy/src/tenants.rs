//! The tenant registry in the control schema: create, look up, suspend, resume, delete.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Executor as _, PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::migrate::{apply_pending, TENANT};
use crate::{Error, SchemaName};

/// Path segments a slug may not take, because they are SCIM endpoint names and
/// `/scim/v2/<slug>/...` must never be ambiguous with `/scim/v2/Users`.
const RESERVED_SLUGS: &[&str] = &[
    "users",
    "groups",
    "me",
    "schemas",
    "resourcetypes",
    "serviceproviderconfig",
    "serviceproviderconfigs",
    "bulk",
    ".search",
];

/// Whether a tenant is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    /// SCIM requests are answered `403`; the data is kept.
    Suspended,
}

/// A tenant's FusionAuth connection as stored (the key still sealed).
#[derive(Debug, Clone)]
pub struct FusionAuthSettings {
    pub base_url: String,
    pub sealed_api_key: Vec<u8>,
    pub tenant_id: Uuid,
    pub application_id: Option<Uuid>,
}

/// A tenant as the control schema holds it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    pub schema: SchemaName,
    pub schema_version: i64,
    pub rate_limit_per_sec: Option<i32>,
    pub stale_after_secs: i32,
    pub journal_retention_days: i32,
    pub fusionauth: Option<FusionAuthSettings>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The part of a tenant the request path needs, small enough to cache with each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRef {
    pub id: Uuid,
    pub slug: String,
    pub schema: SchemaName,
    pub status: TenantStatus,
    pub rate_limit_per_sec: Option<i32>,
}

impl Tenant {
    pub fn as_ref(&self) -> TenantRef {
        TenantRef {
            id: self.id,
            slug: self.slug.clone(),
            schema: self.schema.clone(),
            status: self.status,
            rate_limit_per_sec: self.rate_limit_per_sec,
        }
    }
}

/// Checks a slug against `[a-z0-9][a-z0-9-]{1,62}` and the reserved SCIM endpoint names.
pub fn validate_slug(slug: &str) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidSlug {
        slug: slug.chars().take(80).collect(),
        reason,
    };
    let bytes = slug.as_bytes();
    if !(2..=63).contains(&bytes.len()) {
        return Err(invalid("it must be 2 to 63 characters long"));
    }
    if !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit() {
        return Err(invalid("it must start with a lowercase letter or a digit"));
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err(invalid(
            "it may only contain lowercase letters, digits and hyphens",
        ));
    }
    if RESERVED_SLUGS.contains(&slug) {
        return Err(invalid("it is the name of a SCIM endpoint"));
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(Error::InvalidInput {
            field: "tenant name",
            reason: "it must be 1 to 200 characters long",
        });
    }
    Ok(())
}

/// Creates a tenant: its control row and its schema at the current tenant migration version,
/// in one transaction, so a tenant is never half-created.
pub async fn create(pool: &PgPool, slug: &str, name: &str) -> Result<Tenant, Error> {
    let mut tx = pool.begin().await?;
    let tenant = create_in(&mut tx, slug, name).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// Creates a tenant inside the caller's transaction, so that what else the caller records
/// (an audit event, a first key) commits or rolls back with it.
pub async fn create_in(tx: &mut PgConnection, slug: &str, name: &str) -> Result<Tenant, Error> {
    validate_slug(slug)?;
    validate_name(name)?;
    let id = Uuid::now_v7();
    let schema = SchemaName::generate();

    let inserted = sqlx::query(
        "insert into roster_control.tenants (id, slug, name, schema_name) values ($1, $2, $3, $4) \
         on conflict (slug) do nothing",
    )
    .bind(id)
    .bind(slug)
    .bind(name)
    .bind(schema.as_str())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::SlugTaken(slug.to_owned()));
    }
    // A plain string runs like `raw_sql`, with a `Send` future (see `migrate::apply_pending`).
    tx.execute(format!("create schema {}", schema.quoted()).as_str())
        .await?;
    apply_pending(&mut *tx, &schema, &TENANT, 0).await?;
    get(&mut *tx, id)
        .await?
        .ok_or_else(|| Error::UnknownTenant(id.to_string()))
}

const TENANT_COLUMNS: &str = "id, slug, name, status, schema_name, schema_version, \
    rate_limit_per_sec, stale_after_secs, journal_retention_days, fusionauth_base_url, \
    fusionauth_api_key_sealed, fusionauth_tenant_id, fusionauth_application_id, created_at, \
    updated_at";

#[derive(sqlx::FromRow)]
struct TenantRow {
    id: Uuid,
    slug: String,
    name: String,
    status: TenantStatus,
    schema_name: String,
    schema_version: i64,
    rate_limit_per_sec: Option<i32>,
    stale_after_secs: i32,
    journal_retention_days: i32,
    fusionauth_base_url: Option<String>,
    fusionauth_api_key_sealed: Option<Vec<u8>>,
    fusionauth_tenant_id: Option<Uuid>,
    fusionauth_application_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = Error;

    fn try_from(row: TenantRow) -> Result<Self, Error> {
        let schema = SchemaName::parse(&row.schema_name).map_err(|_| {
            Error::UnknownTenant(format!("{} has an invalid schema name", row.slug))
        })?;
        let fusionauth = match (
            row.fusionauth_base_url,
            row.fusionauth_api_key_sealed,
            row.fusionauth_tenant_id,
        ) {
            (Some(base_url), Some(sealed_api_key), Some(tenant_id)) => Some(FusionAuthSettings {
                base_url,
                sealed_api_key,
                tenant_id,
                application_id: row.fusionauth_application_id,
            }),
            _ => None,
        };
        Ok(Tenant {
            id: row.id,
            slug: row.slug,
            name: row.name,
            status: row.status,
            schema,
            schema_version: row.schema_version,
            rate_limit_per_sec: row.rate_limit_per_sec,
            stale_after_secs: row.stale_after_secs,
            journal_retention_days: row.journal_retention_days,
            fusionauth,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Looks a tenant up by id.
pub async fn get(executor: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Tenant>, Error> {
    let sql = format!("select {TENANT_COLUMNS} from roster_control.tenants where id = $1");
    let row: Option<TenantRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(executor)
        .await?;
    row.map(Tenant::try_from).transpose()
}

/// Looks a tenant up by slug.
pub async fn get_by_slug(
    executor: impl PgExecutor<'_>,
    slug: &str,
) -> Result<Option<Tenant>, Error> {
    let sql = format!("select {TENANT_COLUMNS} from roster_control.tenants where slug = $1");
    let row: Option<TenantRow> = sqlx::query_as(&sql)
        .bind(slug)
        .fetch_optional(executor)
        .await?;
    row.map(Tenant::try_from).transpose()
}

/// Looks a tenant up by slug, failing when there is none.
pub async fn require_by_slug(executor: impl PgExecutor<'_>, slug: &str) -> Result<Tenant, Error> {
    get_by_slug(executor, slug)
        .await?
        .ok_or_else(|| Error::UnknownTenant(slug.to_owned()))
}

/// One page of tenants in slug order, starting after `after_slug`.
pub async fn list(
    pool: &PgPool,
    after_slug: Option<&str>,
    limit: i64,
) -> Result<Vec<Tenant>, Error> {
    let sql = format!(
        "select {TENANT_COLUMNS} from roster_control.tenants \
         where ($1::text is null or slug > $1) order by slug limit $2"
    );
    let rows: Vec<TenantRow> = sqlx::query_as(&sql)
        .bind(after_slug)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(Tenant::try_from).collect()
}

/// Suspends or resumes a tenant. Callers must invalidate the key cache afterwards.
pub async fn set_status(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    status: TenantStatus,
) -> Result<(), Error> {
    let updated = sqlx::query(
        "update roster_control.tenants set status = $2, updated_at = now() where id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(executor)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::UnknownTenant(id.to_string()));
    }
    Ok(())
}

/// Deletes a tenant, its keys and its schema with all its data, in one transaction.
/// Callers must invalidate the key cache afterwards.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    delete_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a tenant inside the caller's transaction. Callers must invalidate the key cache
/// after it commits.
pub async fn delete_in(tx: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    let schema: Option<String> = sqlx::query_scalar(
        "delete from roster_control.tenants where id = $1 returning schema_name",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let schema = schema.ok_or_else(|| Error::UnknownTenant(id.to_string()))?;
    let schema = SchemaName::parse(&schema)
        .map_err(|_| Error::UnknownTenant(format!("tenant {id} has an invalid schema name")))?;
    tx.execute(format!("drop schema {} cascade", schema.quoted()).as_str())
        .await?;
    Ok(())
}

/// Tenant settings that can change after creation. `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct SettingsUpdate {
    pub name: Option<String>,
    /// `Some(None)` returns the tenant to the service default.
    pub rate_limit_per_sec: Option<Option<i32>>,
    pub stale_after_secs: Option<i32>,
    pub journal_retention_days: Option<i32>,
}

/// Applies a settings update and returns the tenant as it now is. Callers must invalidate the
/// key cache when the rate limit changed, since it travels with cached keys.
pub async fn update_settings(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    update: &SettingsUpdate,
) -> Result<Tenant, Error> {
    if let Some(name) = &update.name {
        validate_name(name)?;
    }
    let positive = |value: Option<i32>, field| match value {
        Some(v) if v <= 0 => Err(Error::InvalidInput {
            field,
            reason: "it must be a positive number",
        }),
        _ => Ok(()),
    };
    positive(update.rate_limit_per_sec.flatten(), "rate limit")?;
    positive(update.stale_after_secs, "stale threshold")?;
    positive(update.journal_retention_days, "journal retention")?;

    let sql = format!(
        "update roster_control.tenants set \
           name = coalesce($2, name), \
           rate_limit_per_sec = case when $3 then $4 else rate_limit_per_sec end, \
           stale_after_secs = coalesce($5, stale_after_secs), \
           journal_retention_days = coalesce($6, journal_retention_days), \
           updated_at = now() \
         where id = $1 \
         returning {TENANT_COLUMNS}"
    );
    let row: Option<TenantRow> = sqlx::query_as(&sql)
        .bind(id)
        .bind(update.name.as_deref())
        .bind(update.rate_limit_per_sec.is_some())
        .bind(update.rate_limit_per_sec.flatten())
        .bind(update.stale_after_secs)
        .bind(update.journal_retention_days)
        .fetch_optional(executor)
        .await?;
    row.map(Tenant::try_from)
        .transpose()?
        .ok_or_else(|| Error::UnknownTenant(id.to_string()))
}

/// Stores (or, with `None`, clears) a tenant's FusionAuth connection. The API key arrives
/// already sealed: this crate never sees it in the clear.
pub async fn set_fusionauth(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    settings: Option<&FusionAuthSettings>,
) -> Result<(), Error> {
    let updated = sqlx::query(
        "update roster_control.tenants set fusionauth_base_url = $2, \
           fusionauth_api_key_sealed = $3, fusionauth_tenant_id = $4, \
           fusionauth_application_id = $5, updated_at = now() \
         where id = $1",
    )
    .bind(id)
    .bind(settings.map(|s| s.base_url.as_str()))
    .bind(settings.map(|s| s.sealed_api_key.as_slice()))
    .bind(settings.map(|s| s.tenant_id))
    .bind(settings.and_then(|s| s.application_id))
    .execute(executor)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::UnknownTenant(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_pattern() {
        for ok in ["ab", "acme", "acme-corp", "0day", "a-", &"a".repeat(63)] {
            assert!(validate_slug(ok).is_ok(), "{ok:?} was refused");
        }
        for bad in [
            "",
            "a",
            "-acme",
            "Acme",
            "acme_corp",
            "acme corp",
            "acmé",
            &"a".repeat(64),
            "users",
            "groups",
            "schemas",
            "resourcetypes",
            "serviceproviderconfig",
        ] {
            assert!(validate_slug(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn refusals_say_why() {
        let message = validate_slug("Users").unwrap_err().to_string();
        assert!(message.contains("lowercase"), "{message}");
        let message = validate_slug("users").unwrap_err().to_string();
        assert!(message.contains("SCIM endpoint"), "{message}");
    }
}
