//! SCIM Groups: Entra finds synced groups and changes their members; nothing else.
//!
//! Only synced groups (Sync Enabled with an External Group ID) are visible. Reads stamp
//! `last_synced_at` and journal through the batched [`JournalWriter`], off the request path.
//! A PATCH applies membership deltas, restores the safety net, stamps and journals in one
//! transaction, and answers `204`. Members are loaded only when a response carries them, and
//! then at most [`groups::MEMBER_PAGE_LIMIT`] per group (the first by id): Entra always sends
//! `excludedAttributes=members`, and a response listing every member of a large group would be
//! unbounded. Create, replace and delete are refused: the platform owns groups.
//!
//! [`JournalWriter`]: crate::directory::journal::JournalWriter

use std::collections::HashMap;
use std::time::Duration;

use poem::error::ResponseError;
use poem::http::{Method, Uri};
use poem::web::Data;
use poem::Response;
use serde_json::Value;
use tenancy::db::Db;
use uuid::Uuid;

use super::auth::ScimCaller;
use super::body::ScimBody;
use super::error::ScimError;
use super::filter::{self, SqlFilter};
use super::patch::{self, GroupChange, PatchError};
use super::path::ResourceId;
use super::query::{self, ListQuery};
use super::quirks::Quirks;
use super::resources;
use super::response::{no_content, ScimJson};
use crate::directory::groups::{self, AppliedChanges, Group, GroupError, Member};
use crate::directory::journal::{Entry, Outcome};
use crate::directory::listing::Page;
use crate::state::AppState;

/// How many times a PATCH transaction runs when Postgres reports a deadlock or a
/// serialization failure before the client is told to retry.
const PATCH_ATTEMPTS: u32 = 3;

const PLATFORM_OWNS_GROUPS: &str = "groups are created, replaced and deleted in the platform, \
     not over SCIM; only the members of synced groups can be changed (PATCH)";

/// `GET /Groups`
#[poem::handler]
pub async fn list_groups(
    caller: ScimCaller,
    state: Data<&AppState>,
    uri: &Uri,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation("scim.groups.list");
    let query = query::parse(uri.query())?;
    let filter = query.sql_filter(&filter::GROUPS, &caller.tenant.schema)?;

    let (page, members) = read_page(&state.db, &caller, &query, filter.as_ref()).await?;

    let mut entry = read_entry(&caller, "scim.groups.list", 200).detail(format!(
        "{} of {} synced groups",
        page.items.len(),
        page.total
    ));
    if let [only] = page.items.as_slice() {
        entry = entry.group(only.id);
    }
    journal_read(&state, &caller, entry, &page.items);

    let resources = page
        .items
        .iter()
        .map(|group| group_resource(group, members.get(&group.id), &caller, &query))
        .collect();
    Ok(ScimJson::ok(resources::list(
        resources,
        page.total,
        query.start_index,
    )))
}

/// `GET /Groups/{id}`
#[poem::handler]
pub async fn get_group(
    caller: ScimCaller,
    state: Data<&AppState>,
    ResourceId(id): ResourceId,
    uri: &Uri,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation("scim.groups.get");
    let query = query::parse(uri.query())?;
    let group_id = parse_group_id(&id)?;

    let found = read_group(&state.db, &caller, group_id, wants_members(&query)).await?;

    let status = if found.is_some() { 200 } else { 404 };
    let entry = read_entry(&caller, "scim.groups.get", status).group(group_id);
    let read = found.as_ref().map(|(group, _)| std::slice::from_ref(group));
    journal_read(&state, &caller, entry, read.unwrap_or_default());

    let (group, members) = found.ok_or_else(not_found)?;
    Ok(ScimJson::ok(group_resource(
        &group,
        members.as_ref(),
        &caller,
        &query,
    )))
}

/// `PATCH /Groups/{id}`: membership deltas, all or nothing.
#[poem::handler]
pub async fn patch_group(
    caller: ScimCaller,
    state: Data<&AppState>,
    ResourceId(id): ResourceId,
    ScimBody(body): ScimBody,
) -> Result<Response, ScimError> {
    caller.context.set_operation("scim.groups.patch");
    let group_id = parse_group_id(&id)?;
    let parsed = parse_patch(&body);
    let (changes, quirks) =
        parsed.inspect_err(|e| journal_rejection(&state, &caller, group_id, e))?;

    let applied = apply_patch(&state.db, &caller, group_id, &changes, &quirks).await;
    let applied = applied.map_err(|e| patch_error(&state, &caller, group_id, e))?;

    tracing::debug!(
        group.id = %group_id,
        added = applied.added.len(),
        removed = applied.removed.len(),
        "group members changed"
    );
    Ok(no_content())
}

/// `POST /Groups`, `PUT /Groups/{id}`, `DELETE /Groups/{id}`: refused, the platform owns
/// groups.
#[poem::handler]
pub async fn refuse_write(caller: ScimCaller, state: Data<&AppState>, method: Method) -> ScimError {
    let operation = match method {
        Method::POST => "scim.groups.create",
        Method::PUT => "scim.groups.replace",
        _ => "scim.groups.delete",
    };
    caller.context.set_operation(operation);

    let entry = Entry::new(caller.request_id(), operation, Outcome::Rejected, 403)
        .detail("groups are managed in the platform");
    state.journal.submit(&caller.tenant.schema, entry);

    ScimError::Forbidden(PLATFORM_OWNS_GROUPS.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Parse

/// A group id that is no UUID names no group.
fn parse_group_id(id: &str) -> Result<Uuid, ScimError> {
    Uuid::parse_str(id).map_err(|_| not_found())
}

fn not_found() -> ScimError {
    ScimError::NotFound("no synced group with this id".to_owned())
}

fn wants_members(query: &ListQuery) -> bool {
    query.projection.keeps("members")
}

fn parse_patch(body: &Value) -> Result<(Vec<GroupChange>, Quirks), ScimError> {
    let request = patch::parse(body).map_err(patch_rejection)?;
    let changes = patch::group_changes(&request).map_err(patch_rejection)?;
    Ok((changes, request.quirks))
}

fn patch_rejection(error: PatchError) -> ScimError {
    ScimError::bad_request(error.scim_type(), error.to_string())
}

// ---------------------------------------------------------------------------------------------
// Apply

async fn read_page(
    db: &Db,
    caller: &ScimCaller,
    query: &ListQuery,
    filter: Option<&SqlFilter>,
) -> Result<(Page<Group>, HashMap<Uuid, Vec<Member>>), ScimError> {
    let mut conn = tenancy::scope::read(db, &caller.tenant.schema).await?;
    let page = groups::list_synced(&mut conn.db(), filter, query.offset(), query.count).await?;
    let members = if wants_members(query) && !page.items.is_empty() {
        let ids: Vec<Uuid> = page.items.iter().map(|group| group.id).collect();
        groups::first_members(&mut conn.db(), &ids).await?
    } else {
        Default::default()
    };
    conn.done();
    Ok((page, members))
}

async fn read_group(
    db: &Db,
    caller: &ScimCaller,
    group_id: Uuid,
    with_members: bool,
) -> Result<Option<(Group, Option<Vec<Member>>)>, ScimError> {
    let mut conn = tenancy::scope::read(db, &caller.tenant.schema).await?;
    let Some(group) = groups::get_synced(&mut conn.db(), group_id).await? else {
        conn.done();
        return Ok(None);
    };
    let members = if with_members {
        Some(groups::members(&mut conn.db(), group_id, None, groups::MEMBER_PAGE_LIMIT).await?)
    } else {
        None
    };
    conn.done();
    Ok(Some((group, members)))
}

/// Runs the PATCH transaction, again when Postgres reports a deadlock or serialization
/// failure: the row locks make that unexpected, and a client must never see it as a 500.
async fn apply_patch(
    db: &Db,
    caller: &ScimCaller,
    group_id: Uuid,
    changes: &[GroupChange],
    quirks: &Quirks,
) -> Result<AppliedChanges, GroupError> {
    let mut attempt = 1;
    loop {
        match apply_patch_once(db, caller, group_id, changes, quirks).await {
            Err(e) if e.is_transient() && attempt < PATCH_ATTEMPTS => {
                tracing::warn!(group.id = %group_id, attempt, error = %e, "retrying group PATCH");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn apply_patch_once(
    db: &Db,
    caller: &ScimCaller,
    group_id: Uuid,
    changes: &[GroupChange],
    quirks: &Quirks,
) -> Result<AppliedChanges, GroupError> {
    let mut tx = tenancy::scope::begin(db, &caller.tenant.schema).await?;
    let request_id = caller.request_id();
    let summary = |applied: &AppliedChanges| patch_summary(request_id, group_id, applied, quirks);
    let applied =
        groups::apply_member_changes(&mut tx.db(), group_id, changes, request_id, summary).await?;
    tx.commit().await?;
    Ok(applied)
}

// ---------------------------------------------------------------------------------------------
// Journal

fn read_entry(caller: &ScimCaller, operation: &'static str, status: u16) -> Entry {
    Entry::new(caller.request_id(), operation, Outcome::Matched, status)
}

/// Queues the read's journal entry and a `last_synced_at` stamp for each group it returned.
fn journal_read(state: &AppState, caller: &ScimCaller, entry: Entry, groups: &[Group]) {
    let schema = &caller.tenant.schema;
    for group in groups {
        state.journal.group_read(schema, group.id);
    }
    state.journal.submit(schema, entry);
}

fn patch_summary(
    request_id: &str,
    group_id: Uuid,
    applied: &AppliedChanges,
    quirks: &Quirks,
) -> Entry {
    let outcome = if !applied.added.is_empty() || !applied.removed.is_empty() {
        Outcome::Changed
    } else if !applied.ignored.is_empty() {
        Outcome::Ignored
    } else {
        Outcome::Matched
    };
    let detail = format!(
        "members added {}, removed {}, already as asked {}; attributes ignored {}; \
         safety net placed {}, released {}",
        applied.added.len(),
        applied.removed.len(),
        applied.unchanged,
        applied.ignored.len(),
        applied.safety_net.placed.len(),
        applied.safety_net.released.len(),
    );
    Entry::new(request_id, "scim.groups.patch", outcome, 204)
        .group(group_id)
        .detail(detail)
        .quirks(quirks.iter().map(|quirk| quirk.as_str()))
}

/// Journals a PATCH that was refused before its transaction (nothing was applied).
fn journal_rejection(state: &AppState, caller: &ScimCaller, group_id: Uuid, error: &ScimError) {
    let status = error.status().as_u16();
    let entry = Entry::new(
        caller.request_id(),
        "scim.groups.patch",
        Outcome::Rejected,
        status,
    )
    .group(group_id)
    .detail("the PATCH body was refused; nothing applied");
    state.journal.submit(&caller.tenant.schema, entry);
}

/// Maps a failed PATCH transaction to SCIM, journaling it (its own entries rolled back) and
/// stamping the group when it was found.
fn patch_error(
    state: &AppState,
    caller: &ScimCaller,
    group_id: Uuid,
    error: GroupError,
) -> ScimError {
    let (outcome, detail) = match &error {
        GroupError::NotFound => (Outcome::Rejected, "no synced group with this id".to_owned()),
        // The ids are checked after the group was found synced: Entra did reach it.
        GroupError::UnknownMembers { ids } => {
            state.journal.group_read(&caller.tenant.schema, group_id);
            (
                Outcome::Rejected,
                format!(
                    "{} member ids are not users of this tenant; nothing applied",
                    ids.len()
                ),
            )
        }
        _ => (
            Outcome::Failed,
            "the change failed; nothing applied".to_owned(),
        ),
    };
    let scim = scim_error(error);
    let status = scim.status().as_u16();
    let entry = Entry::new(caller.request_id(), "scim.groups.patch", outcome, status)
        .group(group_id)
        .detail(detail);
    state.journal.submit(&caller.tenant.schema, entry);
    scim
}

// ---------------------------------------------------------------------------------------------
// Respond

fn group_resource(
    group: &Group,
    members: Option<&Vec<Member>>,
    caller: &ScimCaller,
    query: &ListQuery,
) -> Value {
    let members = wants_members(query).then(|| members.map_or(&[][..], Vec::as_slice));
    let resource = resources::group(group, members, &caller.base_url);
    resources::project(resource, &query.projection)
}

fn scim_error(error: GroupError) -> ScimError {
    match error {
        GroupError::NotFound => not_found(),
        GroupError::UnknownMembers { .. } => {
            ScimError::bad_request("invalidValue", error.to_string())
        }
        GroupError::Refused(reason) => ScimError::Forbidden(reason.to_owned()),
        GroupError::ExternalIdTaken => ScimError::Uniqueness(error.to_string()),
        ref transient if transient.is_transient() => ScimError::Unavailable {
            retry_after: Duration::from_secs(1),
            detail: "the group is busy with concurrent changes; retry shortly",
        },
        GroupError::Database(e) => ScimError::from(e),
    }
}
