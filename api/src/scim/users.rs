//! `/Users`: Entra matches and creates users here. Profiles and lifecycle belong to the
//! platform, so replace, patch and delete are acknowledged, journaled as ignored, and change
//! nothing.

use poem::web::Data;
use poem::{Request, Response};
use uuid::Uuid;

use super::auth::ScimCaller;
use super::body::ScimBody;
use super::error::ScimError;
use super::filter;
use super::path::ResourceId;
use super::query;
use super::response::{no_content, ScimJson};
use super::{patch, resources, user_request};
use crate::directory::journal::{Entry, Outcome};
use crate::directory::provisioning::{CreateError, Provisioner};
use crate::directory::users::{self, User};
use crate::directory::DirectoryError;
use crate::fusionauth::FusionAuthError;
use crate::state::AppState;

const LIST: &str = "scim.users.list";
const GET: &str = "scim.users.get";
const CREATE: &str = "scim.users.create";
const REPLACE: &str = "scim.users.replace";
const PATCH: &str = "scim.users.patch";
const DELETE: &str = "scim.users.delete";

/// `GET /Users`: Entra's Test Connection probe and match query. Always a ListResponse.
#[poem::handler]
pub async fn list_users(
    caller: ScimCaller,
    state: Data<&AppState>,
    req: &Request,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation(LIST);
    let query = query::parse(req.uri().query())?;
    let filter = query.sql_filter(&filter::USERS, &caller.tenant.schema)?;

    let mut conn = tenancy::scope::read(&state.db, &caller.tenant.schema).await?;
    let page = users::list(&mut conn.db(), filter.as_ref(), query.offset(), query.count).await?;
    conn.done();

    let detail = format!("{} of {} matched", page.items.len(), page.total);
    journal_read(&state, &caller, LIST, detail, None);
    let resources = page
        .items
        .iter()
        .map(|user| resources::project(resources::user(user, &caller.base_url), &query.projection))
        .collect();
    Ok(ScimJson::ok(resources::list(
        resources,
        page.total,
        query.start_index,
    )))
}

/// `GET /Users/{id}`
#[poem::handler]
pub async fn get_user(
    caller: ScimCaller,
    state: Data<&AppState>,
    ResourceId(id): ResourceId,
    req: &Request,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation(GET);
    let query = query::parse(req.uri().query())?;

    let user = find(&state, &caller, &id).await?;

    journal_read(&state, &caller, GET, "found", Some(user.id));
    let resource = resources::user(&user, &caller.base_url);
    Ok(ScimJson::ok(resources::project(
        resource,
        &query.projection,
    )))
}

/// `POST /Users`: FusionAuth first, then the tenant schema; `201` with the resource.
#[poem::handler]
pub async fn create_user(
    caller: ScimCaller,
    state: Data<&AppState>,
    ScimBody(body): ScimBody,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation(CREATE);
    let request = user_request::parse(&body).map_err(|e| {
        let error = ScimError::bad_request(e.scim_type(), e.to_string());
        journal_failure(&state, &caller, CREATE, &error, None);
        error
    })?;

    let created = provisioner(&state)
        .create(&caller.tenant, &request, caller.request_id())
        .await;

    let user = created.result.map_err(|e| {
        let error = create_error(&caller, e);
        journal_failure(
            &state,
            &caller,
            CREATE,
            &error,
            created.fusionauth.map(|t| t.outcome),
        );
        error
    })?;
    let resource = resources::user(&user, &caller.base_url);
    let location = format!("{}/Users/{}", caller.base_url, user.id);
    Ok(ScimJson::created(resource, location))
}

/// `PUT /Users/{id}`: acknowledged, ignored; the unchanged resource.
#[poem::handler]
pub async fn replace_user(
    caller: ScimCaller,
    state: Data<&AppState>,
    ResourceId(id): ResourceId,
    ScimBody(body): ScimBody,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation(REPLACE);
    if !body.is_object() {
        return Err(ScimError::bad_request(
            "invalidSyntax",
            "the body must be a User object",
        ));
    }

    let user = find(&state, &caller, &id).await?;

    journal_ignored(&state, &caller, REPLACE, user.id, Vec::new(), 200);
    Ok(ScimJson::ok(resources::user(&user, &caller.base_url)))
}

/// `PATCH /Users/{id}`: parsed (an invalid body is a 400), acknowledged, ignored.
#[poem::handler]
pub async fn patch_user(
    caller: ScimCaller,
    state: Data<&AppState>,
    ResourceId(id): ResourceId,
    ScimBody(body): ScimBody,
) -> Result<ScimJson, ScimError> {
    caller.context.set_operation(PATCH);
    let request =
        patch::parse(&body).map_err(|e| ScimError::bad_request(e.scim_type(), e.to_string()))?;

    let user = find(&state, &caller, &id).await?;

    let quirks = request.quirks.iter().map(|q| q.as_str()).collect();
    journal_ignored(&state, &caller, PATCH, user.id, quirks, 200);
    Ok(ScimJson::ok(resources::user(&user, &caller.base_url)))
}

/// `DELETE /Users/{id}`: acknowledged, ignored; `204`.
#[poem::handler]
pub async fn delete_user(
    caller: ScimCaller,
    state: Data<&AppState>,
    ResourceId(id): ResourceId,
) -> Result<Response, ScimError> {
    caller.context.set_operation(DELETE);

    let user = find(&state, &caller, &id).await?;

    journal_ignored(&state, &caller, DELETE, user.id, Vec::new(), 204);
    Ok(no_content())
}

fn provisioner<'a>(state: &'a AppState) -> Provisioner<'a> {
    Provisioner {
        db: &state.db,
        client: &state.fusionauth,
        sealer: state.sealer.as_deref(),
        url_policy: state.url_policy,
    }
}

/// The user with this id in the caller's tenant, or a SCIM 404. Ids that are not UUIDs
/// (including double-encoded ones) cannot exist.
async fn find(state: &AppState, caller: &ScimCaller, id: &str) -> Result<User, ScimError> {
    let not_found = || ScimError::NotFound("no user with this id in this tenant".to_owned());
    let id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let mut conn = tenancy::scope::read(&state.db, &caller.tenant.schema).await?;
    let user = users::get(&mut conn.db(), id).await?;
    conn.done();
    user.ok_or_else(not_found)
}

fn create_error(caller: &ScimCaller, error: CreateError) -> ScimError {
    match error {
        CreateError::Conflict(DirectoryError::Conflict { attribute, .. }) => ScimError::Uniqueness(
            format!("a user with the same {attribute} already exists in this tenant"),
        ),
        CreateError::Conflict(DirectoryError::Database(e)) | CreateError::Database(e) => e.into(),
        CreateError::FusionAuth(e) => fusionauth_error(caller, e),
        CreateError::Misconfigured(why) => {
            tracing::error!(tenant.slug = %caller.tenant.slug, reason = why,
                "cannot provision: the tenant's FusionAuth connection is unusable");
            ScimError::Upstream("the tenant's FusionAuth connection is misconfigured; the operator has been alerted")
        }
    }
}

fn fusionauth_error(caller: &ScimCaller, error: FusionAuthError) -> ScimError {
    match error {
        FusionAuthError::Unavailable { retry_after, cause } => {
            tracing::warn!(tenant.slug = %caller.tenant.slug, cause = %cause,
                "FusionAuth unavailable; create answered 503");
            ScimError::Unavailable {
                retry_after,
                detail: "the tenant's FusionAuth is unavailable; retry later",
            }
        }
        FusionAuthError::CredentialsRejected => {
            tracing::error!(tenant.slug = %caller.tenant.slug,
                "FusionAuth rejected the tenant's API key: update the tenant's FusionAuth connection");
            ScimError::Upstream(
                "the tenant's FusionAuth rejected Roster's credentials; the operator has been alerted",
            )
        }
        FusionAuthError::Rejected { detail } => ScimError::bad_request(
            "invalidValue",
            format!("FusionAuth refused the user: {detail}"),
        ),
        FusionAuthError::Conflict { .. } => ScimError::Uniqueness(
            "the tenant's FusionAuth already has a user with this userName".to_owned(),
        ),
        FusionAuthError::NotFound | FusionAuthError::Protocol(_) => {
            tracing::error!(tenant.slug = %caller.tenant.slug, error = %error,
                "unexpected FusionAuth answer while provisioning");
            ScimError::Upstream(
                "the tenant's FusionAuth answered unexpectedly; the operator has been alerted",
            )
        }
    }
}

fn journal_read(
    state: &AppState,
    caller: &ScimCaller,
    operation: &'static str,
    detail: impl Into<String>,
    user: Option<Uuid>,
) {
    let mut entry =
        Entry::new(caller.request_id(), operation, Outcome::Matched, 200).detail(detail);
    entry.user_id = user;
    state.journal.submit(&caller.tenant.schema, entry);
}

fn journal_ignored(
    state: &AppState,
    caller: &ScimCaller,
    operation: &'static str,
    user: Uuid,
    quirks: Vec<&'static str>,
    status: u16,
) {
    let entry = Entry::new(caller.request_id(), operation, Outcome::Ignored, status)
        .user(user)
        .detail("profiles and lifecycle are managed in the platform")
        .quirks(quirks);
    state.journal.submit(&caller.tenant.schema, entry);
}

/// Journals a refused or failed create; the detail is the SCIM detail (never personal data).
fn journal_failure(
    state: &AppState,
    caller: &ScimCaller,
    operation: &'static str,
    error: &ScimError,
    fusionauth: Option<&'static str>,
) {
    use poem::error::ResponseError;
    let status = error.status().as_u16();
    let outcome = if status < 500 {
        Outcome::Rejected
    } else {
        Outcome::Failed
    };
    let mut entry =
        Entry::new(caller.request_id(), operation, outcome, status).detail(error.to_string());
    entry.fusionauth_outcome = fusionauth;
    state.journal.submit(&caller.tenant.schema, entry);
}
