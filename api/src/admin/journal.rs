//! `/admin/v1/tenants/{slug}/journal`: what each SCIM request and each admin change did to the
//! tenant's directory — the first place support looks when someone "didn't get access".
//!
//! Entries are short and redacted (never an email, a name or a filter value). Entries of SCIM
//! reads are written in the background and can appear up to a second late; changes appear as
//! soon as they commit.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use tenancy::tenants;
use uuid::Uuid;

use super::auth::{Access, AdminToken};
use super::error::{AdminError, AdminResult, Change};
use super::page;
use crate::directory::journal::{self, Filter, Record};
use crate::openapi::ApiTags;
use crate::state::AppState;

pub struct JournalApi;

#[OpenApi(prefix_path = "/admin/v1", tag = "ApiTags::Journal")]
impl JournalApi {
    /// Read the sync journal
    ///
    /// The tenant's journal, newest first, a page at a time, filtered by user, group, outcome,
    /// operation (e.g. `scim.groups.patch`, `safety_net`, `admin.users.deactivate`) and time
    /// (`from` inclusive, `to` exclusive). Entries are kept for the tenant's
    /// `journal_retention_days`. Needs `roster:read`.
    #[oai(
        path = "/tenants/:slug/journal",
        method = "get",
        operation_id = "listJournal"
    )]
    // poem-openapi documents each query parameter from its own handler argument.
    #[allow(clippy::too_many_arguments)]
    async fn list_journal(
        &self,
        admin: AdminToken,
        state: Data<&AppState>,
        slug: Path<String>,
        /// Only entries about this user.
        user_id: Query<Option<Uuid>>,
        /// Only entries about this group.
        group_id: Query<Option<Uuid>>,
        /// Only entries with this outcome.
        outcome: Query<Option<JournalOutcome>>,
        /// Only entries of this operation.
        operation: Query<Option<String>>,
        /// Only entries at or after this instant (RFC 3339).
        from: Query<Option<DateTime<Utc>>>,
        /// Only entries before this instant (RFC 3339).
        to: Query<Option<DateTime<Utc>>>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> AdminResult<Json<JournalPage>, Change> {
        admin.authorize(Access::Read, &slug)?;

        if let (Some(from), Some(to)) = (from.0, to.0) {
            if from >= to {
                return Err(AdminError::BadRequest("from must be before to".to_owned()).into());
            }
        }
        let filter = Filter {
            user_id: user_id.0,
            group_id: group_id.0,
            outcome: outcome.0.map(JournalOutcome::as_str),
            operation: operation.0.as_deref(),
            from: from.0,
            to: to.0,
            before_id: parse_cursor(cursor.0.as_deref())?,
        };
        let tenant = tenants::require_by_slug(state.db.control(), &slug).await?;

        let limit = page::limit(limit.0);
        let mut conn = tenancy::scope::read(&state.db, &tenant.schema).await?;
        let rows = journal::list(&mut conn.db(), &filter, page::fetch_size(limit)).await?;
        conn.done();
        let (rows, next_cursor) = page::finish(rows, limit, |entry| entry.id.to_string());

        Ok(Json(JournalPage {
            items: rows.into_iter().map(JournalEntry::from).collect(),
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

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum JournalOutcome {
    /// A read that found (or did not find) what it looked for.
    Matched,
    Created,
    /// A membership, profile or status changed, or the safety net moved a user.
    Changed,
    /// A write Roster acknowledged without applying: the platform owns it.
    Ignored,
    /// The client's mistake: refused, nothing changed.
    Rejected,
    /// Roster or FusionAuth failed: nothing changed.
    Failed,
}

impl JournalOutcome {
    fn as_str(self) -> &'static str {
        match self {
            JournalOutcome::Matched => "matched",
            JournalOutcome::Created => "created",
            JournalOutcome::Changed => "changed",
            JournalOutcome::Ignored => "ignored",
            JournalOutcome::Rejected => "rejected",
            JournalOutcome::Failed => "failed",
        }
    }
}

/// One journal entry.
#[derive(Debug, Object)]
pub struct JournalEntry {
    /// Newer entries have larger ids.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The request's `x-request-id`, shared by every entry it caused.
    pub request_id: Option<String>,
    /// `scim.users.create`, `scim.groups.patch`, `safety_net`, `admin.users.update`, ...
    pub operation: String,
    /// `matched`, `created`, `changed`, `ignored`, `rejected` or `failed`.
    pub outcome: String,
    /// The HTTP status answered; `null` for the safety net's moves.
    pub status: Option<i16>,
    pub user_id: Option<Uuid>,
    pub group_id: Option<Uuid>,
    /// What happened, in a few redacted words.
    pub detail: Option<String>,
    /// Entra dialect variations the request showed.
    pub quirks: Vec<String>,
    /// What FusionAuth did: `created`, `linked`, `updated`, `skipped`, `unavailable`, ...
    pub fusionauth_outcome: Option<String>,
    pub fusionauth_latency_ms: Option<i32>,
}

impl From<Record> for JournalEntry {
    fn from(record: Record) -> Self {
        JournalEntry {
            id: record.id,
            at: record.at,
            request_id: record.request_id,
            operation: record.operation,
            outcome: record.outcome,
            status: record.status,
            user_id: record.user_id,
            group_id: record.group_id,
            detail: record.detail,
            quirks: record.quirks,
            fusionauth_outcome: record.fusionauth_outcome,
            fusionauth_latency_ms: record.fusionauth_latency_ms,
        }
    }
}

/// One page of journal entries, newest first.
#[derive(Debug, Object)]
pub struct JournalPage {
    pub items: Vec<JournalEntry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_entry_ids() {
        assert_eq!(parse_cursor(Some("7")).unwrap(), Some(7));
        assert!(parse_cursor(Some("x")).is_err());
    }

    #[test]
    fn outcomes_match_the_stored_vocabulary() {
        use crate::directory::journal::Outcome;

        assert_eq!(JournalOutcome::Ignored.as_str(), Outcome::Ignored.as_str());
        assert_eq!(JournalOutcome::Failed.as_str(), Outcome::Failed.as_str());
    }
}
