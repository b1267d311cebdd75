//! Users of one tenant.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{bind_filter, conflict_of, DirectoryError};
use crate::scim::filter::SqlFilter;

/// Columns every user query selects, in `User`'s order.
const COLUMNS: &str = "id, user_name, external_id, display_name, given_name, family_name, \
    formatted_name, work_email, emails, active, source, fusionauth_user_id, fusionauth_link, \
    created_at, updated_at";

/// A user as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub formatted_name: Option<String>,
    pub work_email: Option<String>,
    /// Every email as sent: `[{"value", "type", "primary"}]`.
    pub emails: Value,
    pub active: bool,
    /// `scim` or `platform`.
    pub source: String,
    pub fusionauth_user_id: Option<Uuid>,
    /// `created`, `linked` or `skipped` (shadow mode).
    pub fusionauth_link: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A user to insert.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub user_name: String,
    pub external_id: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub formatted_name: Option<String>,
    pub work_email: Option<String>,
    pub emails: Value,
    pub active: bool,
    pub source: &'static str,
    pub fusionauth_user_id: Option<Uuid>,
    pub fusionauth_link: &'static str,
}

/// One page of a listing and how many users matched in all.
#[derive(Debug)]
pub struct Page {
    pub total: i64,
    pub users: Vec<User>,
}

#[derive(sqlx::FromRow)]
struct Counted {
    #[sqlx(flatten)]
    user: User,
    total: i64,
}

pub async fn get(tx: &mut PgConnection, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from users where id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
}

/// Users matching `filter` (all when `None`), oldest first, `limit` from `offset`.
/// One round trip: the total rides along as a window count.
pub async fn list(
    tx: &mut PgConnection,
    filter: Option<&SqlFilter>,
    offset: i64,
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let condition = filter.map_or("true", |f| f.sql.as_str());
    let binds = filter.map_or(&[][..], |f| f.binds.as_slice());
    let n = binds.len();
    if limit == 0 {
        let sql = format!("select count(*) from users where {condition}");
        let query = bind_filter(sqlx::query_as::<_, (i64,)>(&sql), binds);
        let (total,) = query.fetch_one(&mut *tx).await?;
        return Ok(Page {
            total,
            users: Vec::new(),
        });
    }
    let sql = format!(
        "select {COLUMNS}, count(*) over () as total from users where {condition} \
         order by created_at, id offset ${} limit ${}",
        n + 1,
        n + 2
    );
    let rows: Vec<Counted> = bind_filter(sqlx::query_as(&sql), binds)
        .bind(offset)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let total = match rows.first() {
        Some(row) => row.total,
        None if offset > 0 => count(tx, filter).await?,
        None => 0,
    };
    Ok(Page {
        total,
        users: rows.into_iter().map(|row| row.user).collect(),
    })
}

async fn count(tx: &mut PgConnection, filter: Option<&SqlFilter>) -> Result<i64, sqlx::Error> {
    let condition = filter.map_or("true", |f| f.sql.as_str());
    let binds = filter.map_or(&[][..], |f| f.binds.as_slice());
    let sql = format!("select count(*) from users where {condition}");
    let (total,) = bind_filter(sqlx::query_as::<_, (i64,)>(&sql), binds)
        .fetch_one(&mut *tx)
        .await?;
    Ok(total)
}

/// Which unique attribute an existing user already holds, if any; a cheap check before
/// calling FusionAuth. The unique indexes remain the real guard.
pub async fn taken_attribute(
    tx: &mut PgConnection,
    user_name: &str,
    work_email: Option<&str>,
) -> Result<Option<&'static str>, sqlx::Error> {
    let taken: Option<(bool, bool)> = sqlx::query_as(
        // Without a work email the second comparison is NULL, which no bool can decode.
        "select lower(user_name) = lower($1), coalesce(lower(work_email) = lower($2), false) \
         from users \
         where lower(user_name) = lower($1) or lower(work_email) = lower($2) limit 1",
    )
    .bind(user_name)
    .bind(work_email)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match taken {
        Some((true, _)) => Some("userName"),
        Some((false, _)) => Some("work email"),
        None => None,
    })
}

/// Inserts a user; a taken userName or work email is a `Conflict`.
pub async fn insert(tx: &mut PgConnection, user: &NewUser) -> Result<User, DirectoryError> {
    let inserted = sqlx::query_as(&format!(
        "insert into users (id, user_name, external_id, display_name, given_name, family_name, \
           formatted_name, work_email, emails, active, source, fusionauth_user_id, \
           fusionauth_link) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         returning {COLUMNS}"
    ))
    .bind(user.id)
    .bind(&user.user_name)
    .bind(&user.external_id)
    .bind(&user.display_name)
    .bind(&user.given_name)
    .bind(&user.family_name)
    .bind(&user.formatted_name)
    .bind(&user.work_email)
    .bind(&user.emails)
    .bind(user.active)
    .bind(user.source)
    .bind(user.fusionauth_user_id)
    .bind(user.fusionauth_link)
    .fetch_one(&mut *tx)
    .await;
    inserted.map_err(|e| conflict_of(&e).unwrap_or(DirectoryError::Database(e)))
}
