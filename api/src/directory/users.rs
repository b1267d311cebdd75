//! Users of one tenant: what SCIM creates and reads, and what the platform changes (profile,
//! deactivation, reactivation, deletion), each platform change journaled as `admin.users.*`
//! with the Basic User invariant restored in the same transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tenancy::scope::TenantDb;
use uuid::Uuid;

use super::journal::{self, Entry, Outcome};
use super::listing::{self, Listing, Page};
use super::provisioning::FusionAuthTrace;
use super::{conflict_of, safety_net, DirectoryError};
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

pub async fn get(db: &mut TenantDb<'_>, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from {}.users where id = $1",
        db.schema
    ))
    .bind(id)
    .fetch_optional(&mut *db.conn)
    .await
}

/// Users matching `filter` (all when `None`), oldest first, `limit` from `offset`.
pub async fn list(
    db: &mut TenantDb<'_>,
    filter: Option<&SqlFilter>,
    offset: i64,
    limit: i64,
) -> Result<Page<User>, sqlx::Error> {
    let users = Listing {
        table: "users",
        columns: COLUMNS,
        scope: "true",
    };
    listing::page(db, &users, filter, offset, limit).await
}

/// Which unique attribute an existing user already holds, if any; a cheap check before
/// calling FusionAuth. The unique indexes remain the real guard.
pub async fn taken_attribute(
    db: &mut TenantDb<'_>,
    user_name: &str,
    work_email: Option<&str>,
) -> Result<Option<&'static str>, sqlx::Error> {
    let taken: Option<(bool, bool)> = sqlx::query_as(&format!(
        // Without a work email the second comparison is NULL, which no bool can decode.
        "select lower(user_name) = lower($1), coalesce(lower(work_email) = lower($2), false) \
         from {}.users \
         where lower(user_name) = lower($1) or lower(work_email) = lower($2) limit 1",
        db.schema
    ))
    .bind(user_name)
    .bind(work_email)
    .fetch_optional(&mut *db.conn)
    .await?;
    Ok(match taken {
        Some((true, _)) => Some("userName"),
        Some((false, _)) => Some("work email"),
        None => None,
    })
}

/// Inserts a user; a taken userName or work email is a `Conflict`.
pub async fn insert(db: &mut TenantDb<'_>, user: &NewUser) -> Result<User, DirectoryError> {
    let inserted = sqlx::query_as(&format!(
        "insert into {s}.users (id, user_name, external_id, display_name, given_name, family_name, \
           formatted_name, work_email, emails, active, source, fusionauth_user_id, \
           fusionauth_link) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         returning {COLUMNS}",
        s = db.schema
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
    .fetch_one(&mut *db.conn)
    .await;
    inserted.map_err(|e| conflict_of(&e).unwrap_or(DirectoryError::Database(e)))
}

// ---------------------------------------------------------------------------------------------
// Platform search and changes (the admin API)

/// What an admin search looks for; every criterion given must hold. Text criteria match
/// case-insensitively anywhere in the value.
#[derive(Debug, Clone, Default)]
pub struct Search<'a> {
    /// Matches the work email or the userName.
    pub email: Option<&'a str>,
    /// Matches the display, given, family or formatted name.
    pub name: Option<&'a str>,
    /// Members of this group.
    pub group_id: Option<Uuid>,
    /// `scim` or `platform`.
    pub source: Option<&'a str>,
    pub active: Option<bool>,
    /// The `(created_at, id)` of the last user of the previous page.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// Users matching `search`, oldest first, at most `limit`. Every value is bound, never
/// spliced into the SQL.
pub async fn search(
    db: &mut TenantDb<'_>,
    search: &Search<'_>,
    limit: i64,
) -> Result<Vec<User>, sqlx::Error> {
    let (after_at, after_id) = search.after.unzip();
    sqlx::query_as(&format!(
        "select {COLUMNS} from {s}.users u \
         where ($1::text is null or lower(u.work_email) like $1 escape '\\' \
                or lower(u.user_name) like $1 escape '\\') \
           and ($2::text is null or lower(concat_ws(' ', u.display_name, u.given_name, \
                u.family_name, u.formatted_name)) like $2 escape '\\') \
           and ($3::uuid is null or exists (select 1 from {s}.memberships m \
                where m.user_id = u.id and m.group_id = $3)) \
           and ($4::text is null or u.source = $4) \
           and ($5::boolean is null or u.active = $5) \
           and ($6::timestamptz is null or (u.created_at, u.id) > ($6, $7::uuid)) \
         order by u.created_at, u.id limit $8",
        s = db.schema
    ))
    .bind(search.email.map(contains_pattern))
    .bind(search.name.map(contains_pattern))
    .bind(search.group_id)
    .bind(search.source)
    .bind(search.active)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *db.conn)
    .await
}

/// A `like` pattern matching `term` anywhere, lower-cased, its wildcards escaped.
fn contains_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Profile fields to change; `None` leaves a field as it is. No `Debug`: personal data.
#[derive(Clone, Default)]
pub struct ProfileChange {
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The new work email; it replaces the old one in `emails` too.
    pub work_email: Option<String>,
}

impl ProfileChange {
    /// The names of the fields this change sets, for the journal and the audit log (never
    /// their values).
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("display_name", self.display_name.is_some()),
            ("given_name", self.given_name.is_some()),
            ("family_name", self.family_name.is_some()),
            ("email", self.work_email.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

/// Whether another user than `id` holds this work email.
pub async fn email_taken_by_other(
    db: &mut TenantDb<'_>,
    email: &str,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select exists (select 1 from {}.users where lower(work_email) = lower($1) and id <> $2)",
        db.schema
    ))
    .bind(email)
    .bind(id)
    .fetch_one(&mut *db.conn)
    .await
}

/// Applies an admin's profile change and journals it; `None` when there is no such user. A
/// work email another user holds is a `Conflict`.
pub async fn update_profile(
    db: &mut TenantDb<'_>,
    id: Uuid,
    change: &ProfileChange,
    request_id: &str,
    fusionauth: Option<FusionAuthTrace>,
) -> Result<Option<User>, DirectoryError> {
    // A new work email becomes the primary `work` entry; the old work entry goes, and the
    // remaining entries stop claiming to be primary.
    let updated: Option<User> = sqlx::query_as(&format!(
        "update {s}.users set \
           display_name = coalesce($2, display_name), \
           given_name = coalesce($3, given_name), \
           family_name = coalesce($4, family_name), \
           emails = case when $5::text is null then emails else \
             jsonb_build_array(jsonb_build_object('value', $5::text, 'type', 'work', \
               'primary', true)) || coalesce((select jsonb_agg(jsonb_set(e, '{{primary}}', \
               'false')) from jsonb_array_elements(emails) e \
               where e->>'type' is distinct from 'work' \
                 and lower(e->>'value') is distinct from lower(work_email)), '[]'::jsonb) end, \
           work_email = coalesce($5, work_email), \
           updated_at = now() \
         where id = $1 returning {COLUMNS}",
        s = db.schema
    ))
    .bind(id)
    .bind(change.display_name.as_deref())
    .bind(change.given_name.as_deref())
    .bind(change.family_name.as_deref())
    .bind(change.work_email.as_deref())
    .fetch_optional(&mut *db.conn)
    .await
    .map_err(|e| conflict_of(&e).unwrap_or(DirectoryError::Database(e)))?;

    if let Some(user) = &updated {
        let detail = format!("profile changed: {}", change.fields().join(", "));
        let entry = admin_entry(request_id, "admin.users.update", 200, user.id, fusionauth);
        journal::record(db, &[entry.detail(detail)]).await?;
    }
    Ok(updated)
}

/// Deactivates or reactivates a user, restores the Basic User invariant for them (an inactive
/// user holds no Basic User membership; a reactivated one in no synced group regains it) and
/// journals the change. `None` when there is no such user.
pub async fn set_active(
    db: &mut TenantDb<'_>,
    id: Uuid,
    active: bool,
    request_id: &str,
    fusionauth: Option<FusionAuthTrace>,
) -> Result<Option<User>, sqlx::Error> {
    if safety_net::lock_users(db, &[id]).await?.is_empty() {
        return Ok(None);
    }
    let user: User = sqlx::query_as(&format!(
        "update {}.users set active = $2, updated_at = now() where id = $1 returning {COLUMNS}",
        db.schema
    ))
    .bind(id)
    .bind(active)
    .fetch_one(&mut *db.conn)
    .await?;
    safety_net::restore(db, &[id], request_id).await?;

    let (operation, detail) = if active {
        ("admin.users.reactivate", "reactivated by an admin")
    } else {
        ("admin.users.deactivate", "deactivated by an admin")
    };
    let entry = admin_entry(request_id, operation, 200, id, fusionauth).detail(detail);
    journal::record(db, &[entry]).await?;
    Ok(Some(user))
}

/// Deletes a user and their memberships and journals it; `None` when there is no such user.
/// No other user's memberships change, so the safety net has nothing to restore.
pub async fn delete(
    db: &mut TenantDb<'_>,
    id: Uuid,
    request_id: &str,
    fusionauth: Option<FusionAuthTrace>,
) -> Result<Option<User>, sqlx::Error> {
    if safety_net::lock_users(db, &[id]).await?.is_empty() {
        return Ok(None);
    }
    let user: User = sqlx::query_as(&format!(
        "delete from {}.users where id = $1 returning {COLUMNS}",
        db.schema
    ))
    .bind(id)
    .fetch_one(&mut *db.conn)
    .await?;
    let entry = admin_entry(request_id, "admin.users.delete", 204, id, fusionauth)
        .detail("deleted by an admin");
    journal::record(db, &[entry]).await?;
    Ok(Some(user))
}

fn admin_entry(
    request_id: &str,
    operation: &'static str,
    status: u16,
    user_id: Uuid,
    fusionauth: Option<FusionAuthTrace>,
) -> Entry {
    let mut entry = Entry::new(request_id, operation, Outcome::Changed, status).user(user_id);
    if let Some(trace) = fusionauth {
        entry.fusionauth_outcome = Some(trace.outcome);
        entry.fusionauth_latency_ms = i32::try_from(trace.latency.as_millis()).ok();
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_patterns_match_anywhere_and_escape_wildcards() {
        assert_eq!(contains_pattern("Ada"), "%ada%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn a_profile_change_names_only_the_fields_it_sets() {
        let change = ProfileChange {
            display_name: Some("Ada".to_owned()),
            work_email: Some("ada@example.com".to_owned()),
            ..ProfileChange::default()
        };

        assert_eq!(change.fields(), ["display_name", "email"]);
    }
}
