//! `/admin/v1/tenants/{slug}/counters`: what a tenant's Entra app keeps doing, counted from
//! its journal — writes Roster ignores, Entra dialect quirks, and errors by kind — so support
//! can tell a customer "your Entra app has Update switched on" without reading entries one by
//! one. Derived on request; nothing is counted twice or kept elsewhere.

use chrono::{DateTime, Duration, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use tenancy::tenants;

use super::auth::{Access, AdminToken};
use super::error::{AdminResult, Change};
use crate::directory::journal::{self, ErrorCount};
use crate::openapi::ApiTags;
use crate::state::AppState;

/// The default window: the default journal retention, so nothing older exists anyway.
const DEFAULT_DAYS: u32 = 30;

pub struct CountersApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Counters")]
impl CountersApi {
    /// Get a tenant's counters
    ///
    /// Over the last `days` (default 30, the default journal retention): writes Roster
    /// acknowledged but ignored, by operation; Entra quirks seen; rejected and failed requests
    /// by operation, status and FusionAuth outcome; and `hints` that say in words what the
    /// counts suggest about the customer's Entra configuration. Needs `roster:read`.
    #[oai(
        path = "/tenants/:slug/counters",
        method = "get",
        operation_id = "getCounters"
    )]
    async fn get_counters(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        /// The window in days, 1 to 365 (default 30).
        #[oai(validator(minimum(value = "1"), maximum(value = "365")))]
        days: Query<Option<u32>>,
    ) -> AdminResult<Json<Counters>, Change> {
        admin.authorize(Access::Read, &slug)?;

        let days = days.0.unwrap_or(DEFAULT_DAYS);
        let since = Utc::now() - Duration::days(i64::from(days));
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
        let counted = journal::counters(&mut conn.db(), since).await?;
        conn.done();

        Ok(Json(Counters::new(days, since, counted)))
    }
}

/// What the ignored operations say about the Entra app, in words support can pass on.
fn hints(ignored: &[OperationCount]) -> Vec<String> {
    let seen = |operations: &[&str]| {
        ignored
            .iter()
            .any(|count| operations.contains(&count.operation.as_str()))
    };
    let mut hints = Vec::new();
    if seen(&["scim.users.patch", "scim.users.replace"]) {
        hints.push(
            "Entra sends user profile updates, which Roster ignores: the app's user attribute \
             mappings have Update switched on. Profiles are managed in the platform."
                .to_owned(),
        );
    }
    if seen(&["scim.users.delete"]) {
        hints.push(
            "Entra sends user deletions, which Roster ignores: deactivate or delete users in \
             the platform instead."
                .to_owned(),
        );
    }
    if seen(&["scim.groups.patch", "scim.groups.replace"]) {
        hints.push(
            "Entra sends group attribute changes (such as renames), which Roster ignores: \
             groups are named in the platform."
                .to_owned(),
        );
    }
    hints
}

/// A tenant's counters over a window.
#[derive(Debug, Object)]
pub struct Counters {
    pub window_days: u32,
    /// The start of the window.
    pub since: DateTime<Utc>,
    /// Writes Roster acknowledged without applying, by operation, most frequent first.
    pub ignored_writes: Vec<OperationCount>,
    /// Entra dialect variations seen, by quirk, most frequent first.
    pub quirks: Vec<QuirkCount>,
    /// Rejected and failed requests by kind, most frequent first.
    pub errors: Vec<ErrorKind>,
    /// What the counts suggest about the customer's Entra configuration.
    pub hints: Vec<String>,
}

impl Counters {
    fn new(window_days: u32, since: DateTime<Utc>, counted: journal::Counters) -> Self {
        let ignored_writes: Vec<OperationCount> = counted
            .ignored
            .into_iter()
            .map(|(operation, count)| OperationCount { operation, count })
            .collect();
        Counters {
            window_days,
            since,
            hints: hints(&ignored_writes),
            ignored_writes,
            quirks: counted
                .quirks
                .into_iter()
                .map(|(quirk, count)| QuirkCount { quirk, count })
                .collect(),
            errors: counted.errors.into_iter().map(ErrorKind::from).collect(),
        }
    }
}

/// How often one operation was ignored.
#[derive(Debug, Object)]
pub struct OperationCount {
    pub operation: String,
    pub count: i64,
}

/// How often one quirk was seen.
#[derive(Debug, Object)]
pub struct QuirkCount {
    /// E.g. `capitalised_op`, `string_boolean`, `null_ref`.
    pub quirk: String,
    pub count: i64,
}

/// How often requests failed one way.
#[derive(Debug, Object)]
pub struct ErrorKind {
    /// `rejected` (the client's mistake) or `failed` (Roster's or FusionAuth's).
    pub outcome: String,
    pub operation: String,
    pub status: Option<i16>,
    /// FusionAuth's part, e.g. `unavailable` or `credentials_rejected`.
    pub fusionauth_outcome: Option<String>,
    pub count: i64,
}

impl From<ErrorCount> for ErrorKind {
    fn from(error: ErrorCount) -> Self {
        ErrorKind {
            outcome: error.outcome,
            operation: error.operation,
            status: error.status,
            fusionauth_outcome: error.fusionauth_outcome,
            count: error.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(operation: &str) -> OperationCount {
        OperationCount {
            operation: operation.to_owned(),
            count: 3,
        }
    }

    #[test]
    fn ignored_user_updates_point_at_the_update_mapping() {
        let hints = hints(&[ignored("scim.users.patch")]);

        assert_eq!(hints.len(), 1);
        assert!(hints[0].contains("Update switched on"), "{hints:?}");
    }

    #[test]
    fn nothing_ignored_means_no_hints() {
        assert!(hints(&[]).is_empty());
        assert_eq!(hints(&[ignored("scim.users.delete")]).len(), 1);
    }
}
