//! Creating a user: FusionAuth first, then the tenant schema, so nothing is half-stored.
//!
//! Roster chooses ids: a user's id is a UUIDv5 of the tenant id and the lower-cased userName,
//! and the FusionAuth user is created under the same id. A create that Entra retries after a
//! timeout, a 503 or a dropped connection therefore asks FusionAuth for the *same* user, which
//! the client recognises instead of duplicating.

use std::time::Duration;

use tenancy::db::Db;
use tenancy::tenants::{self, FusionAuthSettings};
use tenancy::TenantRef;
use uuid::Uuid;

use super::journal::{self, Entry, Outcome};
use super::users::{self, NewUser, User};
use super::{safety_net, DirectoryError};
use crate::fusionauth::{
    self, Connection, FusionAuthClient, FusionAuthError, KeySealer, ProvisionOutcome, UrlPolicy,
};
use crate::scim::user_request::UserRequest;

/// What provisioning needs from the service.
#[derive(Clone, Copy)]
pub struct Provisioner<'a> {
    pub db: &'a Db,
    pub client: &'a FusionAuthClient,
    pub sealer: Option<&'a KeySealer>,
    pub url_policy: UrlPolicy,
}

/// What happened in FusionAuth, for the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FusionAuthTrace {
    /// `created`, `already_created`, `linked`, `skipped`, or a failure kind.
    pub outcome: &'static str,
    pub latency: Duration,
}

/// Why a create did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// userName or work email taken in this tenant (SCIM 409 `uniqueness`).
    #[error(transparent)]
    Conflict(DirectoryError),
    /// FusionAuth failed or refused; see [`FusionAuthError`] for what each variant means.
    #[error(transparent)]
    FusionAuth(FusionAuthError),
    /// The tenant's stored FusionAuth connection cannot be used (an operator problem).
    #[error("the tenant's FusionAuth connection is unusable: {0}")]
    Misconfigured(&'static str),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for CreateError {
    fn from(e: sqlx::Error) -> Self {
        CreateError::Database(e)
    }
}

impl From<DirectoryError> for CreateError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Database(e) => CreateError::Database(e),
            conflict => CreateError::Conflict(conflict),
        }
    }
}

/// The id Roster gives (and asks FusionAuth to give) the user with this userName.
pub fn user_id_for(tenant_id: Uuid, user_name: &str) -> Uuid {
    Uuid::new_v5(&tenant_id, user_name.to_lowercase().as_bytes())
}

/// A create's outcome: the stored user, or an error, with FusionAuth's part either way.
pub struct Created {
    pub result: Result<User, CreateError>,
    pub fusionauth: Option<FusionAuthTrace>,
}

impl Provisioner<'_> {
    /// Creates `request` in FusionAuth (unless the tenant runs in shadow mode) and then in the
    /// tenant schema with its Basic User placement and journal entry, in one transaction.
    pub async fn create(
        &self,
        tenant: &TenantRef,
        request: &UserRequest,
        request_id: &str,
    ) -> Created {
        let id = user_id_for(tenant.id, &request.user_name);
        if let Err(e) = self.ensure_available(tenant, request).await {
            return Created {
                result: Err(e),
                fusionauth: None,
            };
        }

        let (link, trace) = match self.provision(tenant, id, request).await {
            Ok(provisioned) => provisioned,
            Err((e, trace)) => {
                if let Some(trace) = trace {
                    crate::metrics::record_fusionauth(trace.outcome, trace.latency);
                }
                return Created {
                    result: Err(e),
                    fusionauth: trace,
                };
            }
        };

        let result = self
            .store(tenant, id, request, link, trace, request_id)
            .await;
        Created {
            result,
            fusionauth: Some(trace),
        }
    }

    async fn ensure_available(
        &self,
        tenant: &TenantRef,
        request: &UserRequest,
    ) -> Result<(), CreateError> {
        let mut conn = tenancy::scope::read(self.db, &tenant.schema).await?;
        let taken =
            users::taken_attribute(&mut conn.db(), &request.user_name, request.work_email())
                .await?;
        conn.done();
        match taken {
            Some(attribute) => Err(CreateError::Conflict(DirectoryError::Conflict {
                resource: "user",
                attribute,
            })),
            None => Ok(()),
        }
    }

    async fn provision(
        &self,
        tenant: &TenantRef,
        id: Uuid,
        request: &UserRequest,
    ) -> Result<(Link, FusionAuthTrace), (CreateError, Option<FusionAuthTrace>)> {
        let Some(connection) = self.connection(tenant).await.map_err(|e| (e, None))? else {
            let skipped = FusionAuthTrace {
                outcome: "skipped",
                latency: Duration::ZERO,
            };
            return Ok((Link::Skipped, skipped));
        };
        let started = std::time::Instant::now();
        let new_user = fusionauth::NewUser {
            id,
            username: request.user_name.clone(),
            email: request.work_email().map(str::to_owned),
            first_name: request.given_name.clone(),
            last_name: request.family_name.clone(),
            full_name: request.formatted_name.clone(),
            data: serde_json::json!({
                "roster": { "tenantId": tenant.id, "userId": id },
                "externalId": request.external_id,
            }),
        };
        match self.client.provision(&connection, &new_user).await {
            Ok(provisioned) => {
                let trace = FusionAuthTrace {
                    outcome: match provisioned.outcome {
                        ProvisionOutcome::Created => "created",
                        ProvisionOutcome::AlreadyCreated => "already_created",
                        ProvisionOutcome::LinkedByEmail => "linked",
                    },
                    latency: provisioned.latency,
                };
                let link = match provisioned.outcome {
                    ProvisionOutcome::LinkedByEmail => Link::Linked(provisioned.fusionauth_user_id),
                    _ => Link::Created(provisioned.fusionauth_user_id),
                };
                Ok((link, trace))
            }
            Err(e) => {
                let trace = FusionAuthTrace {
                    outcome: failure_kind(&e),
                    latency: started.elapsed(),
                };
                Err((CreateError::FusionAuth(e), Some(trace)))
            }
        }
    }

    /// The tenant's FusionAuth connection, or `None` in shadow mode.
    async fn connection(&self, tenant: &TenantRef) -> Result<Option<Connection>, CreateError> {
        let stored = tenants::get(self.db.control(), tenant.id)
            .await
            .map_err(|e| match e {
                tenancy::Error::Database(e) => CreateError::Database(e),
                _ => CreateError::Misconfigured("the tenant record is unreadable"),
            })?;
        let Some(settings) = stored.and_then(|t| t.fusionauth) else {
            return Ok(None);
        };
        connection_of(&settings, self.sealer, self.url_policy).map(Some)
    }

    async fn store(
        &self,
        tenant: &TenantRef,
        id: Uuid,
        request: &UserRequest,
        link: Link,
        trace: FusionAuthTrace,
        request_id: &str,
    ) -> Result<User, CreateError> {
        let mut tx = tenancy::scope::begin(self.db, &tenant.schema).await?;
        let mut db = tx.db();
        let user = users::insert(&mut db, &new_row(id, request, link)).await?;
        let (_, mut entries) =
            safety_net::restore_unjournaled(&mut db, &[user.id], request_id).await?;
        let mut entry = Entry::new(request_id, "scim.users.create", Outcome::Created, 201)
            .user(user.id)
            .quirks(request.quirks.iter().map(|q| q.as_str()));
        entry.fusionauth_outcome = Some(trace.outcome);
        entry.fusionauth_latency_ms = i32::try_from(trace.latency.as_millis()).ok();
        entries.push(entry);
        journal::record(&mut db, &entries).await?;
        tx.commit().await?;
        Ok(user)
    }
}

/// Opens a stored connection: the sealed key must open and the URL must still pass the
/// policy (it may have been tightened since the URL was saved).
pub fn connection_of(
    settings: &FusionAuthSettings,
    sealer: Option<&KeySealer>,
    url_policy: UrlPolicy,
) -> Result<Connection, CreateError> {
    let sealer = sealer.ok_or(CreateError::Misconfigured(
        "ROSTER_KEY_ENCRYPTION_KEY is not configured",
    ))?;
    let api_key = sealer
        .open(&settings.sealed_api_key)
        .map_err(|_| CreateError::Misconfigured("the sealed API key does not open"))?;
    let base_url = fusionauth::validate_base_url(&settings.base_url, url_policy)
        .map_err(|_| CreateError::Misconfigured("the base URL is refused by the URL policy"))?;
    Ok(Connection {
        base_url,
        api_key,
        tenant_id: settings.tenant_id,
        application_id: settings.application_id,
    })
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Created(Uuid),
    Linked(Uuid),
    Skipped,
}

fn new_row(id: Uuid, request: &UserRequest, link: Link) -> NewUser {
    let (fusionauth_user_id, fusionauth_link) = match link {
        Link::Created(fa) => (Some(fa), "created"),
        Link::Linked(fa) => (Some(fa), "linked"),
        Link::Skipped => (None, "skipped"),
    };
    NewUser {
        id,
        user_name: request.user_name.clone(),
        external_id: request.external_id.clone(),
        display_name: request.display_name.clone(),
        given_name: request.given_name.clone(),
        family_name: request.family_name.clone(),
        formatted_name: request.formatted_name.clone(),
        work_email: request.work_email().map(str::to_owned),
        emails: serde_json::to_value(&request.emails).unwrap_or_default(),
        active: request.active,
        source: "scim",
        fusionauth_user_id,
        fusionauth_link,
    }
}

fn failure_kind(error: &FusionAuthError) -> &'static str {
    match error {
        FusionAuthError::Unavailable { .. } => "unavailable",
        FusionAuthError::CredentialsRejected => "credentials_rejected",
        FusionAuthError::Rejected { .. } => "rejected",
        FusionAuthError::Conflict { .. } => "conflict",
        FusionAuthError::NotFound => "not_found",
        FusionAuthError::Protocol(_) => "protocol_error",
    }
}
