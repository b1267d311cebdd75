//! The production FusionAuth client: how Roster talks to each tenant's own FusionAuth.
//!
//! One shared `reqwest` client (connection reuse, connect timeout, no redirects) serves every
//! tenant. Each operation gets a total time budget; inside it every request has its own timeout
//! and is retried with exponential backoff and jitter on 429, 5xx, timeouts and connection
//! errors, honouring `Retry-After` but never past the budget. A create is never retried blindly:
//! before each new attempt the client asks FusionAuth whether the user with Roster's chosen id
//! already exists. Every request carries the raw API key in `Authorization` (no scheme) and
//! `X-FusionAuth-TenantId`. Logs name the operation, attempt, status or transport failure and
//! duration only: never the key, URLs (an email lookup carries the address) or personal data.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use url::{Host, Url};
use uuid::Uuid;

use super::sealing::ApiKey;

/// Header naming the FusionAuth tenant a request acts in.
const TENANT_HEADER: &str = "X-FusionAuth-TenantId";

/// What Roster suggests to Entra when FusionAuth gave no `Retry-After` of its own.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Longest pause between two attempts, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Largest response body read from FusionAuth; anything longer is a protocol failure.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Where one tenant's FusionAuth lives and how Roster authenticates to it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Validated with [`validate_base_url`]; may carry a path prefix.
    pub base_url: Url,
    pub api_key: ApiKey,
    /// Sent as `X-FusionAuth-TenantId` on every request.
    pub tenant_id: Uuid,
    /// When set, every provisioned user is registered with this application.
    pub application_id: Option<Uuid>,
}

/// Which FusionAuth hosts a tenant may point Roster at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPolicy {
    /// `false` in production: loopback, private, link-local and unique-local addresses and
    /// `localhost` are refused, both in the URL and (by the client) after DNS resolution.
    pub allow_private: bool,
}

/// Why a FusionAuth base URL was refused: the admin API answers `400` with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BaseUrlError {
    #[error("the FusionAuth URL is not an absolute URL")]
    NotAUrl,
    #[error("the FusionAuth URL must use http or https")]
    Scheme,
    #[error("the FusionAuth URL must not contain a user name or password")]
    Credentials,
    #[error("the FusionAuth URL must not contain a query or a fragment")]
    QueryOrFragment,
    #[error("the FusionAuth URL points at a loopback, private or link-local address")]
    PrivateHost,
}

/// Checks a FusionAuth base URL before it is stored for a tenant.
///
/// Only literal addresses and `localhost` are checked here; host names are checked when the
/// client resolves them (see [`ClientConfig::url_policy`]).
pub fn validate_base_url(raw: &str, policy: UrlPolicy) -> Result<Url, BaseUrlError> {
    let url = Url::parse(raw.trim()).map_err(|_| BaseUrlError::NotAUrl)?;

    if !matches!(url.scheme(), "http" | "https") {
        return Err(BaseUrlError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BaseUrlError::Credentials);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BaseUrlError::QueryOrFragment);
    }
    // http and https URLs always have a host once parsed; none means it was not one.
    let host = url.host().ok_or(BaseUrlError::NotAUrl)?;
    if !policy.allow_private && is_private_host(&host) {
        return Err(BaseUrlError::PrivateHost);
    }
    Ok(url)
}

fn is_private_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => is_local_name(name),
        Host::Ipv4(ip) => is_private_v4(*ip),
        Host::Ipv6(ip) => is_private_v6(*ip),
    }
}

fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_private_v4(ip),
        IpAddr::V6(ip) => is_private_v6(ip),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [first, second, ..] = ip.octets();
    let shared_address_space = first == 100 && (second & 0xc0) == 64;
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || first == 0
        || shared_address_space
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || ip.is_multicast()
        || is_site_local(ip)
        || embedded_v4(ip).is_some_and(is_private_v4)
}

/// `fec0::/10`: deprecated, but still routed inside some networks.
fn is_site_local(ip: Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfec0
}

/// The IPv4 address an IPv6 address carries and that a host or gateway may connect to in its
/// place: IPv4-mapped and IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let octets = ip.octets();
    let last_four = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0, 0, ..] => Some(last_four),
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(last_four),
        [0x2002, ..] => Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5])),
        _ => None,
    }
}

/// Timeouts and retry limits of the shared client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// Limit for one request, body included.
    pub request_timeout: Duration,
    /// Limit for a whole operation (a provision is several requests), retries included.
    pub total_budget: Duration,
    /// Most attempts of any one request.
    pub max_attempts: u32,
    /// Pause before the second attempt; it doubles per attempt (with jitter), up to 5 s.
    pub initial_backoff: Duration,
    /// With `allow_private: false`, host names that resolve only to private addresses are
    /// refused at connect time (DNS-rebinding guard for [`validate_base_url`]).
    pub url_policy: UrlPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            total_budget: Duration::from_secs(25),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            url_policy: UrlPolicy {
                allow_private: false,
            },
        }
    }
}

/// Why a FusionAuth operation failed, and what Roster's own client sees because of it.
#[derive(Debug, thiserror::Error)]
pub enum FusionAuthError {
    /// FusionAuth unreachable, timing out, or answering 5xx/429 until the budget ran out:
    /// SCIM `503` with this `Retry-After`; nothing is stored.
    #[error("FusionAuth is unavailable: {cause}")]
    Unavailable {
        retry_after: Duration,
        cause: String,
    },
    /// FusionAuth answered 401 to the tenant's stored API key: an operator problem, journaled
    /// and answered with a server-side error, never a SCIM `401`.
    #[error("FusionAuth rejected the tenant's API key")]
    CredentialsRejected,
    /// FusionAuth refused the user's data (400): SCIM `400 invalidValue`; `detail` lists
    /// FusionAuth's field codes, never values.
    #[error("FusionAuth rejected the user: {detail}")]
    Rejected { detail: String },
    /// Another FusionAuth user holds this username (or, on a profile update, this email):
    /// SCIM `409 uniqueness`. A create whose email is taken links instead.
    #[error("FusionAuth already has a user with this login: {detail}")]
    Conflict { detail: String },
    /// The FusionAuth user Roster is linked to no longer exists: admin API `404`-style message
    /// naming FusionAuth; SCIM paths answer with a server-side error.
    #[error("FusionAuth has no user with this id")]
    NotFound,
    /// Anything else unexpected (bad JSON, odd status, configuration FusionAuth refused):
    /// server-side error, cause logged once by the caller.
    #[error("unexpected answer from FusionAuth: {0}")]
    Protocol(String),
}

/// A user to create in FusionAuth. Holds personal data, so it deliberately has no `Debug`.
#[derive(Clone)]
pub struct NewUser {
    /// Chosen by Roster so that a retried create can be recognised.
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    /// Roster's ids and Entra's `externalId`; stored as `user.data` (an object, or `Null`).
    pub data: Value,
}

/// Profile fields to change; `None` leaves a field as it is. No `Debug`: personal data.
#[derive(Clone, Default)]
pub struct ProfileUpdate {
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    /// Merged into `user.data` (FusionAuth PATCH semantics).
    pub data: Option<Value>,
}

/// How the FusionAuth user behind a provision came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionOutcome {
    /// This call created it.
    Created,
    /// An earlier attempt (this call's or an earlier call's) had already created it.
    AlreadyCreated,
    /// A FusionAuth user already owned the email; Roster links to it instead of duplicating.
    LinkedByEmail,
}

/// Whether the user is registered with the tenant's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// The tenant has no application configured.
    NotConfigured,
    Registered,
    /// FusionAuth already had the registration (an earlier attempt or a linked user's own).
    AlreadyRegistered,
}

/// The result of [`FusionAuthClient::provision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub fusionauth_user_id: Uuid,
    pub outcome: ProvisionOutcome,
    pub registered: RegistrationOutcome,
    /// Whether the FusionAuth user is active; a linked user may have been deactivated there.
    pub active: bool,
    /// Create attempts sent (the lookups that guard retries are not counted).
    pub attempts: u32,
    pub latency: Duration,
}

/// The shared client. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct FusionAuthClient {
    http: reqwest::Client,
    config: ClientConfig,
}

impl FusionAuthClient {
    /// Builds the shared HTTP client (rustls, no redirects, no automatic retries).
    pub fn new(config: ClientConfig) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .user_agent(concat!("roster/", env!("CARGO_PKG_VERSION")));
        if !config.url_policy.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        Ok(Self {
            http: builder.build()?,
            config,
        })
    }

    /// Makes sure FusionAuth has this user (created, found from an earlier attempt, or linked
    /// by email) and, when the tenant has an application, that it is registered with it.
    pub async fn provision(
        &self,
        conn: &Connection,
        user: &NewUser,
    ) -> Result<Provisioned, FusionAuthError> {
        let budget = Budget::start(&self.config);

        let (found, outcome, attempts) = self.create_or_find(conn, &budget, user).await?;

        let registered = match conn.application_id {
            Some(application_id) => {
                self.ensure_registration(conn, &budget, found.id, application_id)
                    .await?
            }
            None => RegistrationOutcome::NotConfigured,
        };

        Ok(Provisioned {
            fusionauth_user_id: found.id,
            outcome,
            registered,
            active: found.active,
            attempts,
            latency: budget.elapsed(),
        })
    }

    /// Changes profile fields with a merge `PATCH`.
    pub async fn update_profile(
        &self,
        conn: &Connection,
        fusionauth_user_id: Uuid,
        update: &ProfileUpdate,
    ) -> Result<(), FusionAuthError> {
        let budget = Budget::start(&self.config);
        let body = json_body(&PatchBody {
            user: UserFields::from_update(update),
        })?;
        let call = Call::new(
            "user.update",
            Method::PATCH,
            user_url(conn, fusionauth_user_id)?,
        )
        .with_body(body);

        let reply = self.send(conn, &budget, &call).await?;
        match reply.status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(FusionAuthError::NotFound),
            StatusCode::BAD_REQUEST => Err(user_errors(&reply.errors())),
            _ => Err(reply.unexpected()),
        }
    }

    /// Soft-deletes (deactivates) the user. A user FusionAuth no longer has counts as done.
    pub async fn deactivate(
        &self,
        conn: &Connection,
        fusionauth_user_id: Uuid,
    ) -> Result<(), FusionAuthError> {
        let url = user_url(conn, fusionauth_user_id)?;
        self.remove(conn, Call::new("user.deactivate", Method::DELETE, url))
            .await
    }

    /// Deletes the user for good. A user FusionAuth no longer has counts as done.
    pub async fn delete(
        &self,
        conn: &Connection,
        fusionauth_user_id: Uuid,
    ) -> Result<(), FusionAuthError> {
        let mut url = user_url(conn, fusionauth_user_id)?;
        url.query_pairs_mut().append_pair("hardDelete", "true");
        self.remove(conn, Call::new("user.delete", Method::DELETE, url))
            .await
    }

    /// Reactivates a deactivated user.
    pub async fn reactivate(
        &self,
        conn: &Connection,
        fusionauth_user_id: Uuid,
    ) -> Result<(), FusionAuthError> {
        let budget = Budget::start(&self.config);
        let mut url = user_url(conn, fusionauth_user_id)?;
        url.query_pairs_mut().append_pair("reactivate", "true");
        let call = Call::new("user.reactivate", Method::PUT, url);

        let reply = self.send(conn, &budget, &call).await?;
        match reply.status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => Err(FusionAuthError::NotFound),
            _ => Err(reply.unexpected()),
        }
    }

    async fn remove(&self, conn: &Connection, call: Call) -> Result<(), FusionAuthError> {
        let budget = Budget::start(&self.config);
        let reply = self.send(conn, &budget, &call).await?;
        match reply.status {
            StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(reply.unexpected()),
        }
    }

    /// `POST /api/user/{id}`, guarded so that no attempt can create a second user.
    async fn create_or_find(
        &self,
        conn: &Connection,
        budget: &Budget,
        user: &NewUser,
    ) -> Result<(FoundUser, ProvisionOutcome, u32), FusionAuthError> {
        let body = json_body(&CreateBody {
            skip_verification: true,
            send_set_password_email: false,
            user: UserFields::from_new(user),
        })?;
        let call = Call::new("user.create", Method::POST, user_url(conn, user.id)?).with_body(body);

        let mut attempt = 1;
        loop {
            // The previous attempt may have committed before its answer was lost.
            if attempt > 1 {
                if let Some(found) = self.find_by_id(conn, budget, user.id).await? {
                    return Ok((found, ProvisionOutcome::AlreadyCreated, attempt - 1));
                }
            }
            match self.attempt(conn, budget, &call, attempt).await {
                Ok(reply) => {
                    let (found, outcome) = self.settle_create(conn, budget, user, reply).await?;
                    return Ok((found, outcome, attempt));
                }
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Transient(transient)) => {
                    budget.pause(&self.config, attempt, transient).await?;
                }
            }
            attempt += 1;
        }
    }

    /// Interprets the answer to a create attempt that reached FusionAuth.
    async fn settle_create(
        &self,
        conn: &Connection,
        budget: &Budget,
        user: &NewUser,
        reply: Reply,
    ) -> Result<(FoundUser, ProvisionOutcome), FusionAuthError> {
        match reply.status {
            StatusCode::OK => {
                let found = reply.user()?;
                if found.id != user.id {
                    return Err(FusionAuthError::Protocol(
                        "create answered with another user id".to_owned(),
                    ));
                }
                Ok((found, ProvisionOutcome::Created))
            }
            StatusCode::BAD_REQUEST => self.settle_refused_create(conn, budget, user, reply).await,
            _ => Err(reply.unexpected()),
        }
    }

    /// A 400 on create: the id may be taken by an earlier attempt (FusionAuth's code for that
    /// is undocumented, so ask), the email may belong to someone to link, or the data is bad.
    async fn settle_refused_create(
        &self,
        conn: &Connection,
        budget: &Budget,
        user: &NewUser,
        reply: Reply,
    ) -> Result<(FoundUser, ProvisionOutcome), FusionAuthError> {
        if let Some(found) = self.find_by_id(conn, budget, user.id).await? {
            return Ok((found, ProvisionOutcome::AlreadyCreated));
        }

        let errors = reply.errors();
        match user.email.as_deref() {
            Some(email) if errors.has_code("[duplicate]user.email") => {
                let found = self.find_by_email(conn, budget, email).await?;
                Ok((found, ProvisionOutcome::LinkedByEmail))
            }
            _ => Err(user_errors(&errors)),
        }
    }

    /// `GET /api/user/{id}`: `None` when FusionAuth has no such user.
    async fn find_by_id(
        &self,
        conn: &Connection,
        budget: &Budget,
        id: Uuid,
    ) -> Result<Option<FoundUser>, FusionAuthError> {
        let call = Call::new("user.get", Method::GET, user_url(conn, id)?);
        let reply = self.send(conn, budget, &call).await?;
        match reply.status {
            StatusCode::OK => reply.user().map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(reply.unexpected()),
        }
    }

    /// `GET /api/user?email=`: the user that owns an email FusionAuth called taken.
    async fn find_by_email(
        &self,
        conn: &Connection,
        budget: &Budget,
        email: &str,
    ) -> Result<FoundUser, FusionAuthError> {
        let mut url = endpoint(&conn.base_url, &["api", "user"])?;
        url.query_pairs_mut().append_pair("email", email);
        let call = Call::new("user.find_by_email", Method::GET, url);

        let reply = self.send(conn, budget, &call).await?;
        match reply.status {
            StatusCode::OK => reply.user(),
            StatusCode::NOT_FOUND => Err(FusionAuthError::Protocol(
                "email reported as taken, but no user has it".to_owned(),
            )),
            _ => Err(reply.unexpected()),
        }
    }

    /// `POST /api/user/registration/{id}`. Safe to retry: a registration that an earlier
    /// attempt committed comes back as `[duplicate]registration`, which counts as done.
    async fn ensure_registration(
        &self,
        conn: &Connection,
        budget: &Budget,
        user_id: Uuid,
        application_id: Uuid,
    ) -> Result<RegistrationOutcome, FusionAuthError> {
        let body = json_body(&RegistrationBody {
            registration: RegistrationFields { application_id },
            skip_registration_verification: true,
        })?;
        let url = endpoint(
            &conn.base_url,
            &["api", "user", "registration", &user_id.to_string()],
        )?;
        let call = Call::new("user.register", Method::POST, url).with_body(body);

        let reply = self.send(conn, budget, &call).await?;
        match reply.status {
            StatusCode::OK => Ok(RegistrationOutcome::Registered),
            StatusCode::BAD_REQUEST => {
                let errors = reply.errors();
                if errors.has_code("[duplicate]registration") {
                    Ok(RegistrationOutcome::AlreadyRegistered)
                } else {
                    Err(FusionAuthError::Protocol(format!(
                        "registration refused: {}",
                        errors.summary()
                    )))
                }
            }
            StatusCode::NOT_FOUND => Err(FusionAuthError::NotFound),
            _ => Err(reply.unexpected()),
        }
    }

    /// Sends an idempotent request, retrying transient failures within the budget.
    async fn send(
        &self,
        conn: &Connection,
        budget: &Budget,
        call: &Call,
    ) -> Result<Reply, FusionAuthError> {
        let mut attempt = 1;
        loop {
            match self.attempt(conn, budget, call, attempt).await {
                Ok(reply) => return Ok(reply),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Transient(transient)) => {
                    budget.pause(&self.config, attempt, transient).await?;
                }
            }
            attempt += 1;
        }
    }

    /// One request, classified: an answer to interpret, a transient failure, or a final one.
    async fn attempt(
        &self,
        conn: &Connection,
        budget: &Budget,
        call: &Call,
        attempt: u32,
    ) -> Result<Reply, Failure> {
        let Some(timeout) = budget.attempt_timeout(self.config.request_timeout) else {
            return Err(Failure::Transient(Transient::new("time budget spent")));
        };
        let request = self.request(conn, call, timeout)?;

        let started = Instant::now();
        let result = read_reply(self.http.execute(request).await).await;
        let duration_ms = started.elapsed().as_millis();

        match classify(result) {
            Ok(reply) => {
                let status = reply.status.as_u16();
                tracing::debug!(
                    fusionauth.op = call.op,
                    attempt,
                    status,
                    duration_ms,
                    "FusionAuth answered"
                );
                Ok(reply)
            }
            Err(Failure::Transient(transient)) => {
                let cause = transient.cause.as_str();
                tracing::warn!(
                    fusionauth.op = call.op,
                    attempt,
                    cause,
                    duration_ms,
                    "FusionAuth request failed"
                );
                Err(Failure::Transient(transient))
            }
            Err(fatal) => Err(fatal),
        }
    }

    fn request(
        &self,
        conn: &Connection,
        call: &Call,
        timeout: Duration,
    ) -> Result<reqwest::Request, Failure> {
        let mut key = HeaderValue::from_str(conn.api_key.expose())
            .map_err(|_| Failure::Fatal(FusionAuthError::CredentialsRejected))?;
        key.set_sensitive(true);

        let mut builder = self
            .http
            .request(call.method.clone(), call.url.clone())
            .timeout(timeout)
            .header(AUTHORIZATION, key)
            .header(TENANT_HEADER, conn.tenant_id.to_string());
        if let Some(body) = &call.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        builder
            .build()
            .map_err(|_| Failure::Fatal(FusionAuthError::Protocol("bad request URL".to_owned())))
    }
}

/// One HTTP request of an operation; the URL and body are never logged.
struct Call {
    op: &'static str,
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
}

impl Call {
    fn new(op: &'static str, method: Method, url: Url) -> Self {
        Self {
            op,
            method,
            url,
            body: None,
        }
    }

    fn with_body(self, body: Vec<u8>) -> Self {
        Self {
            body: Some(body),
            ..self
        }
    }
}

/// The time left for one operation.
struct Budget {
    started: Instant,
    deadline: Instant,
}

impl Budget {
    fn start(config: &ClientConfig) -> Self {
        let started = Instant::now();
        Self {
            started,
            deadline: started + config.total_budget,
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The timeout for the next request, or `None` when the budget is spent.
    fn attempt_timeout(&self, request_timeout: Duration) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| left.min(request_timeout))
    }

    /// Waits before attempt `attempt + 1`, or gives up when attempts or time are exhausted.
    async fn pause(
        &self,
        config: &ClientConfig,
        attempt: u32,
        transient: Transient,
    ) -> Result<(), FusionAuthError> {
        let delay =
            backoff(config.initial_backoff, attempt).max(transient.retry_after.unwrap_or_default());
        if attempt >= config.max_attempts || Instant::now() + delay >= self.deadline {
            return Err(transient.give_up());
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Exponential backoff with equal jitter: between half and all of `initial * 2^(attempt-1)`.
fn backoff(initial: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let ceiling = initial.saturating_mul(factor).min(MAX_BACKOFF);
    let floor = ceiling / 2;
    rand::thread_rng().gen_range(floor..=ceiling)
}

enum Failure {
    /// Worth another attempt if the budget allows.
    Transient(Transient),
    /// Retrying cannot help.
    Fatal(FusionAuthError),
}

struct Transient {
    cause: String,
    retry_after: Option<Duration>,
}

impl Transient {
    fn new(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            retry_after: None,
        }
    }

    fn give_up(self) -> FusionAuthError {
        FusionAuthError::Unavailable {
            retry_after: self.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            cause: self.cause,
        }
    }
}

/// An answer FusionAuth gave that the operation has to interpret.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Reply {
    fn user(&self) -> Result<FoundUser, FusionAuthError> {
        serde_json::from_slice::<UserEnvelope>(&self.body)
            .map(|envelope| envelope.user)
            .map_err(|_| FusionAuthError::Protocol("user response is not the expected JSON".into()))
    }

    /// FusionAuth's `Errors` body; an unreadable body counts as no errors.
    fn errors(&self) -> Errors {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    fn unexpected(&self) -> FusionAuthError {
        FusionAuthError::Protocol(format!("unexpected status {}", self.status.as_u16()))
    }
}

async fn read_reply(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<Reply, reqwest::Error> {
    let mut response = response?;
    let status = response.status();
    let retry_after = retry_after(response.headers());

    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        // A cut-off body no longer parses, which the caller reports as a protocol failure.
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// Sorts a finished request into "interpret it", "retry it" or "stop".
fn classify(result: Result<Reply, reqwest::Error>) -> Result<Reply, Failure> {
    let reply = match result {
        Ok(reply) => reply,
        Err(error) if refused_private_address(&error) => {
            return Err(Failure::Fatal(FusionAuthError::Protocol(
                "the FusionAuth host resolves only to private addresses".to_owned(),
            )));
        }
        Err(error) => return Err(Failure::Transient(Transient::new(describe(error)))),
    };

    let retryable_conflict =
        reply.status == StatusCode::CONFLICT && reply.errors().has_code("[retryableConflict]");
    match reply.status {
        StatusCode::UNAUTHORIZED => Err(Failure::Fatal(FusionAuthError::CredentialsRejected)),
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::INTERNAL_SERVER_ERROR
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Err(Failure::Transient(Transient {
            cause: format!("FusionAuth answered {}", reply.status.as_u16()),
            retry_after: reply.retry_after,
        })),
        _ if retryable_conflict => Err(Failure::Transient(Transient::new(
            "FusionAuth answered 409 [retryableConflict]",
        ))),
        _ => Ok(reply),
    }
}

/// A transport failure in words, without the URL (an email lookup's URL carries the address).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let kind = if error.is_timeout() {
        "request timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    let mut innermost = None;
    while let Some(cause) = source {
        innermost = Some(cause);
        source = cause.source();
    }
    match innermost {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

fn refused_private_address(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(cause) = source {
        if cause.is::<PrivateAddressRefused>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = date.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or_default())
}

/// Resolves host names and keeps only public addresses (see [`UrlPolicy`]).
struct PublicOnlyResolver;

#[derive(Debug, thiserror::Error)]
#[error("the host resolves only to private addresses")]
struct PrivateAddressRefused;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = resolved.filter(|a| !is_private_ip(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(PrivateAddressRefused) as Box<dyn StdError + Send + Sync>);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// FusionAuth's error body: `fieldErrors` is an object keyed by field (the OpenAPI spec's
/// array is wrong), `generalErrors` a list. Messages may quote personal values, so only
/// codes are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Errors {
    #[serde(default)]
    general_errors: Vec<ErrorCode>,
    #[serde(default)]
    field_errors: std::collections::BTreeMap<String, Vec<ErrorCode>>,
}

#[derive(Debug, Deserialize)]
struct ErrorCode {
    code: String,
}

impl Errors {
    fn codes(&self) -> impl Iterator<Item = &str> {
        let fields = self.field_errors.values().flatten();
        self.general_errors
            .iter()
            .chain(fields)
            .map(|error| error.code.as_str())
    }

    fn has_code(&self, code: &str) -> bool {
        self.codes().any(|c| c == code)
    }

    fn about_user_fields(&self) -> bool {
        self.field_errors
            .keys()
            .any(|field| field.starts_with("user."))
    }

    fn summary(&self) -> String {
        let codes: Vec<&str> = self.codes().collect();
        if codes.is_empty() {
            "no error codes given".to_owned()
        } else {
            codes.join(", ")
        }
    }
}

/// Maps a 400 about a user's data: username taken → conflict, other field errors → rejected,
/// errors not about the user (tenant, licence, ...) → a configuration problem.
fn user_errors(errors: &Errors) -> FusionAuthError {
    let detail = errors.summary();
    if errors.has_code("[duplicate]user.username") || errors.has_code("[duplicate]user.email") {
        FusionAuthError::Conflict { detail }
    } else if errors.about_user_fields() {
        FusionAuthError::Rejected { detail }
    } else {
        FusionAuthError::Protocol(format!("request refused: {detail}"))
    }
}

/// The part of a `UserResponse` Roster reads.
#[derive(Deserialize)]
struct UserEnvelope {
    user: FoundUser,
}

#[derive(Deserialize)]
struct FoundUser {
    id: Uuid,
    #[serde(default = "active_by_default")]
    active: bool,
}

fn active_by_default() -> bool {
    true
}

/// `UserRequest` for a create.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    skip_verification: bool,
    send_set_password_email: bool,
    user: UserFields<'a>,
}

/// `UserRequest` for a `PATCH`: only the user.
#[derive(Serialize)]
struct PatchBody<'a> {
    user: UserFields<'a>,
}

/// The `User` fields Roster manages.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserFields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    full_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Value>,
}

impl<'a> UserFields<'a> {
    fn from_new(user: &'a NewUser) -> Self {
        Self {
            username: Some(&user.username),
            email: user.email.as_deref(),
            first_name: user.first_name.as_deref(),
            last_name: user.last_name.as_deref(),
            full_name: user.full_name.as_deref(),
            data: (!user.data.is_null()).then_some(&user.data),
        }
    }

    fn from_update(update: &'a ProfileUpdate) -> Self {
        Self {
            username: update.username.as_deref(),
            email: update.email.as_deref(),
            first_name: update.first_name.as_deref(),
            last_name: update.last_name.as_deref(),
            full_name: update.full_name.as_deref(),
            data: update.data.as_ref(),
        }
    }
}

/// `RegistrationRequest` registering an existing user.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationBody {
    registration: RegistrationFields,
    skip_registration_verification: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationFields {
    application_id: Uuid,
}

fn json_body(body: &impl Serialize) -> Result<Vec<u8>, FusionAuthError> {
    serde_json::to_vec(body)
        .map_err(|_| FusionAuthError::Protocol("request body could not be encoded".to_owned()))
}

fn user_url(conn: &Connection, id: Uuid) -> Result<Url, FusionAuthError> {
    endpoint(&conn.base_url, &["api", "user", &id.to_string()])
}

/// `base` with `segments` appended to its path (a path prefix in `base` is kept).
fn endpoint(base: &Url, segments: &[&str]) -> Result<Url, FusionAuthError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| FusionAuthError::Protocol("FusionAuth URL cannot take a path".to_owned()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fusionauth::double::{Fault, FaultKind, FusionAuthDouble, RecordedRequest};

    const KEY: &str = "fa-test-key-0123456789abcdef";

    /// Slack allowed past the budget: scheduling on a busy test machine, not retries.
    const SLACK: Duration = Duration::from_secs(1);

    struct Harness {
        double: FusionAuthDouble,
        conn: Connection,
    }

    /// A double with two tenants (so the tenant header is required) and Roster's key.
    async fn harness(with_application: bool) -> Harness {
        let double = FusionAuthDouble::start().await.unwrap();
        let tenant_id = Uuid::new_v4();
        double.add_tenant(tenant_id);
        double.add_tenant(Uuid::new_v4());
        double.add_api_key(KEY, None);
        let application_id = with_application.then(Uuid::new_v4);
        if let Some(application_id) = application_id {
            double.add_application(tenant_id, application_id);
        }
        let base_url = validate_base_url(&double.base_url(), allow_private()).unwrap();
        let conn = Connection {
            base_url,
            api_key: ApiKey::new(KEY),
            tenant_id,
            application_id,
        };
        Harness { double, conn }
    }

    fn allow_private() -> UrlPolicy {
        UrlPolicy {
            allow_private: true,
        }
    }

    fn fast_config() -> ClientConfig {
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_millis(300),
            total_budget: Duration::from_secs(3),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            url_policy: allow_private(),
        }
    }

    fn client() -> FusionAuthClient {
        FusionAuthClient::new(fast_config()).unwrap()
    }

    fn new_user(email: &str) -> NewUser {
        NewUser {
            id: Uuid::new_v4(),
            username: email.to_owned(),
            email: Some(email.to_owned()),
            first_name: Some("Alice".to_owned()),
            last_name: Some("Smith".to_owned()),
            full_name: Some("Alice Smith".to_owned()),
            data: json!({ "roster": { "externalId": "entra-1" } }),
        }
    }

    fn line(request: &RecordedRequest) -> String {
        format!("{} {}", request.method, request.path)
    }

    fn lines(double: &FusionAuthDouble) -> Vec<String> {
        double.requests().iter().map(line).collect()
    }

    fn assert_every_request_authenticated(h: &Harness) {
        let tenant = h.conn.tenant_id.to_string();
        for request in h.double.requests() {
            assert_eq!(
                request.header("authorization"),
                Some(KEY),
                "{}",
                line(&request)
            );
            assert_eq!(
                request.header("x-fusionauth-tenantid"),
                Some(tenant.as_str()),
                "{}",
                line(&request)
            );
        }
    }

    /// Every create after the first was preceded by a lookup of the same id.
    fn assert_no_blind_create_retry(double: &FusionAuthDouble, id: Uuid) {
        let create = format!("POST /api/user/{id}");
        let check = format!("GET /api/user/{id}");
        let mut checked = true;
        for request in lines(double) {
            if request == create {
                assert!(checked, "a create was retried without a lookup: {request}");
                checked = false;
            } else if request == check {
                checked = true;
            }
        }
    }

    #[tokio::test]
    async fn provision_creates_the_user_with_the_chosen_id() {
        let h = harness(false).await;
        let mut user = new_user("Alice@Contoso.com");
        user.username = "alice".to_owned();

        let provisioned = client().provision(&h.conn, &user).await.unwrap();

        assert_eq!(provisioned.fusionauth_user_id, user.id);
        assert_eq!(provisioned.outcome, ProvisionOutcome::Created);
        assert_eq!(provisioned.registered, RegistrationOutcome::NotConfigured);
        assert_eq!(provisioned.attempts, 1);
        assert!(provisioned.active);
        let stored = h.double.user(user.id).unwrap();
        assert_eq!(stored["email"], "alice@contoso.com");
        assert_eq!(stored["username"], "alice");
        assert_eq!(stored["fullName"], "Alice Smith");
        assert_eq!(stored["data"]["roster"]["externalId"], "entra-1");
        assert_eq!(h.double.users().len(), 1);
        assert_eq!(lines(&h.double), [format!("POST /api/user/{}", user.id)]);
        let body = h.double.requests()[0].json().unwrap();
        assert_eq!(body["skipVerification"], true);
        assert_eq!(body["sendSetPasswordEmail"], false);
        assert_every_request_authenticated(&h);
    }

    #[tokio::test]
    async fn provision_registers_the_user_with_the_application() {
        let h = harness(true).await;
        let user = new_user("bob@contoso.com");

        let provisioned = client().provision(&h.conn, &user).await.unwrap();

        assert_eq!(provisioned.outcome, ProvisionOutcome::Created);
        assert_eq!(provisioned.registered, RegistrationOutcome::Registered);
        let registrations = h.double.registrations();
        assert_eq!(registrations.len(), 1);
        assert_eq!(registrations[0].user_id, user.id);
        assert_eq!(Some(registrations[0].application_id), h.conn.application_id);
        assert_eq!(
            lines(&h.double),
            [
                format!("POST /api/user/{}", user.id),
                format!("POST /api/user/registration/{}", user.id),
            ]
        );
        assert_every_request_authenticated(&h);
    }

    #[tokio::test]
    async fn existing_email_owner_is_linked_and_registered_once() {
        let h = harness(true).await;
        let existing = h.double.insert_user(
            h.conn.tenant_id,
            json!({ "email": "carol@contoso.com", "username": "carol-old" }),
        );

        let first = client()
            .provision(&h.conn, &new_user("Carol@contoso.com"))
            .await
            .unwrap();
        let second = client()
            .provision(&h.conn, &new_user("carol@contoso.com"))
            .await
            .unwrap();

        assert_eq!(first.fusionauth_user_id, existing);
        assert_eq!(first.outcome, ProvisionOutcome::LinkedByEmail);
        assert_eq!(first.registered, RegistrationOutcome::Registered);
        assert_eq!(second.fusionauth_user_id, existing);
        assert_eq!(second.outcome, ProvisionOutcome::LinkedByEmail);
        assert_eq!(second.registered, RegistrationOutcome::AlreadyRegistered);
        assert_eq!(h.double.users().len(), 1);
        assert_eq!(h.double.registrations().len(), 1);
        assert_every_request_authenticated(&h);
    }

    #[tokio::test]
    async fn linking_reports_a_deactivated_owner_as_inactive() {
        let h = harness(false).await;
        h.double.insert_user(
            h.conn.tenant_id,
            json!({ "email": "dan@contoso.com", "active": false }),
        );

        let provisioned = client()
            .provision(&h.conn, &new_user("dan@contoso.com"))
            .await
            .unwrap();

        assert_eq!(provisioned.outcome, ProvisionOutcome::LinkedByEmail);
        assert!(!provisioned.active);
    }

    #[tokio::test]
    async fn repeating_a_finished_provision_finds_the_user() {
        let h = harness(true).await;
        let user = new_user("erin@contoso.com");
        client().provision(&h.conn, &user).await.unwrap();

        let again = client().provision(&h.conn, &user).await.unwrap();

        assert_eq!(again.outcome, ProvisionOutcome::AlreadyCreated);
        assert_eq!(again.registered, RegistrationOutcome::AlreadyRegistered);
        assert_eq!(h.double.users().len(), 1);
        assert_eq!(h.double.registrations().len(), 1);
    }

    /// Provisions through one injected fault on the user create and checks that exactly one
    /// user exists afterwards and that no create was retried blindly.
    async fn provision_through(kind: FaultKind) -> Provisioned {
        let h = harness(true).await;
        let user = new_user("frank@contoso.com");
        h.double
            .set_fault(Fault::next(1, kind).on(Method::POST, &format!("/api/user/{}", user.id)));

        let provisioned = client().provision(&h.conn, &user).await.unwrap();

        assert_eq!(provisioned.fusionauth_user_id, user.id);
        assert_eq!(h.double.users().len(), 1);
        assert_eq!(h.double.registrations().len(), 1);
        assert_no_blind_create_retry(&h.double, user.id);
        assert_every_request_authenticated(&h);
        provisioned
    }

    #[tokio::test]
    async fn a_500_before_commit_is_retried_into_one_user() {
        let provisioned = provision_through(FaultKind::Status(500)).await;

        assert_eq!(provisioned.outcome, ProvisionOutcome::Created);
        assert_eq!(provisioned.attempts, 2);
    }

    #[tokio::test]
    async fn a_503_is_retried_into_one_user() {
        let provisioned = provision_through(FaultKind::Status(503)).await;

        assert_eq!(provisioned.outcome, ProvisionOutcome::Created);
    }

    #[tokio::test]
    async fn a_504_webhook_failure_is_retried_into_one_user() {
        let provisioned = provision_through(FaultKind::Status(504)).await;

        assert_eq!(provisioned.outcome, ProvisionOutcome::Created);
    }

    #[tokio::test]
    async fn a_500_after_commit_finds_the_created_user() {
        let provisioned = provision_through(FaultKind::StatusAfterCommit(500)).await;

        assert_eq!(provisioned.outcome, ProvisionOutcome::AlreadyCreated);
    }

    #[tokio::test]
    async fn a_slow_answer_past_the_request_timeout_is_retried_into_one_user() {
        provision_through(FaultKind::Slow(Duration::from_secs(1))).await;
    }

    #[tokio::test]
    async fn a_connection_dropped_after_commit_finds_the_created_user() {
        let provisioned = provision_through(FaultKind::DropAfterCommit).await;

        assert_eq!(provisioned.outcome, ProvisionOutcome::AlreadyCreated);
        assert_eq!(provisioned.attempts, 1);
    }

    #[tokio::test]
    async fn a_registration_lost_after_commit_counts_as_registered_once() {
        let h = harness(true).await;
        let user = new_user("gina@contoso.com");
        let path = format!("/api/user/registration/{}", user.id);
        h.double
            .set_fault(Fault::next(1, FaultKind::DropAfterCommit).on(Method::POST, &path));

        let provisioned = client().provision(&h.conn, &user).await.unwrap();

        assert_eq!(
            provisioned.registered,
            RegistrationOutcome::AlreadyRegistered
        );
        assert_eq!(h.double.registrations().len(), 1);
    }

    /// With the fault never clearing, the provision gives up as `Unavailable` within budget.
    async fn give_up_on(kind: FaultKind) -> Harness {
        let h = harness(true).await;
        h.double.set_fault(Fault::always(kind));
        let started = Instant::now();

        let result = client()
            .provision(&h.conn, &new_user("hal@contoso.com"))
            .await;

        assert!(
            matches!(result, Err(FusionAuthError::Unavailable { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < fast_config().total_budget + SLACK);
        assert!(h.double.registrations().is_empty());
        assert_every_request_authenticated(&h);
        h
    }

    #[tokio::test]
    async fn a_lasting_500_ends_unavailable_within_budget() {
        let h = give_up_on(FaultKind::Status(500)).await;

        assert!(h.double.users().is_empty());
    }

    #[tokio::test]
    async fn a_lasting_503_ends_unavailable_within_budget() {
        let h = give_up_on(FaultKind::Status(503)).await;

        assert!(h.double.users().is_empty());
    }

    #[tokio::test]
    async fn a_lasting_504_ends_unavailable_within_budget() {
        let h = give_up_on(FaultKind::Status(504)).await;

        assert!(h.double.users().is_empty());
    }

    #[tokio::test]
    async fn a_lasting_slowness_ends_unavailable_within_budget() {
        give_up_on(FaultKind::Slow(Duration::from_secs(10))).await;
    }

    #[tokio::test]
    async fn lasting_dropped_connections_end_unavailable_with_at_most_one_user() {
        let h = give_up_on(FaultKind::DropAfterCommit).await;

        assert!(h.double.users().len() <= 1);
    }

    #[tokio::test]
    async fn a_short_retry_after_is_waited_out() {
        let h = harness(false).await;
        let retry_after = Duration::from_secs(1);
        h.double
            .set_fault(Fault::next(1, FaultKind::RateLimited { retry_after }));
        let started = Instant::now();

        let provisioned = client()
            .provision(&h.conn, &new_user("ian@contoso.com"))
            .await
            .unwrap();

        assert!(started.elapsed() >= retry_after);
        assert_eq!(provisioned.outcome, ProvisionOutcome::Created);
        assert_eq!(h.double.users().len(), 1);
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_budget_gives_up_at_once() {
        let h = harness(false).await;
        let retry_after = Duration::from_secs(60);
        h.double
            .set_fault(Fault::always(FaultKind::RateLimited { retry_after }));
        let started = Instant::now();

        let result = client()
            .provision(&h.conn, &new_user("jo@contoso.com"))
            .await;

        match result {
            Err(FusionAuthError::Unavailable { retry_after: r, .. }) => assert_eq!(r, retry_after),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < SLACK);
        assert_eq!(h.double.requests().len(), 1);
    }

    #[tokio::test]
    async fn a_key_locked_to_the_tenant_is_accepted() {
        let mut h = harness(true).await;
        h.double.add_api_key("locked-key", Some(h.conn.tenant_id));
        h.conn.api_key = ApiKey::new("locked-key");

        let provisioned = client()
            .provision(&h.conn, &new_user("kai@contoso.com"))
            .await;

        assert_eq!(
            provisioned.unwrap().registered,
            RegistrationOutcome::Registered
        );
    }

    #[tokio::test]
    async fn a_rejected_key_is_reported_and_not_retried() {
        let mut h = harness(false).await;
        h.conn.api_key = ApiKey::new("not-the-key");

        let result = client()
            .provision(&h.conn, &new_user("kim@contoso.com"))
            .await;

        assert!(matches!(result, Err(FusionAuthError::CredentialsRejected)));
        assert_eq!(h.double.requests().len(), 1);
        assert!(h.double.users().is_empty());
    }

    #[tokio::test]
    async fn a_user_without_email_or_username_is_rejected_with_both_codes() {
        let h = harness(false).await;
        let mut user = new_user("unused@contoso.com");
        user.username = String::new();
        user.email = None;

        let result = client().provision(&h.conn, &user).await;

        let Err(FusionAuthError::Rejected { detail }) = result else {
            panic!("expected Rejected, got {result:?}");
        };
        assert!(detail.contains("[blank]user.email"), "{detail}");
        assert!(detail.contains("[blank]user.username"), "{detail}");
        assert!(h.double.users().is_empty());
    }

    #[tokio::test]
    async fn a_malformed_email_is_rejected_without_echoing_it() {
        let h = harness(false).await;
        let mut user = new_user("lee at contoso");
        user.username = "lee".to_owned();

        let result = client().provision(&h.conn, &user).await;

        let Err(FusionAuthError::Rejected { detail }) = result else {
            panic!("expected Rejected, got {result:?}");
        };
        assert_eq!(detail, "[notEmail]user.email");
    }

    #[tokio::test]
    async fn a_username_held_by_someone_else_is_a_conflict() {
        let h = harness(false).await;
        h.double.insert_user(
            h.conn.tenant_id,
            json!({ "email": "max@fabrikam.com", "username": "max" }),
        );
        let mut user = new_user("max@contoso.com");
        user.username = "MAX".to_owned();

        let result = client().provision(&h.conn, &user).await;

        let Err(FusionAuthError::Conflict { detail }) = result else {
            panic!("expected Conflict, got {result:?}");
        };
        assert_eq!(detail, "[duplicate]user.username");
        assert_eq!(h.double.users().len(), 1);
    }

    #[tokio::test]
    async fn an_unknown_application_is_a_configuration_problem() {
        let mut h = harness(false).await;
        h.conn.application_id = Some(Uuid::new_v4());

        let result = client()
            .provision(&h.conn, &new_user("ned@contoso.com"))
            .await;

        assert!(
            matches!(result, Err(FusionAuthError::Protocol(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn profile_update_and_lifecycle_reach_fusionauth() {
        let h = harness(false).await;
        let client = client();
        let user = new_user("olga@contoso.com");
        client.provision(&h.conn, &user).await.unwrap();
        let update = ProfileUpdate {
            first_name: Some("Olga".to_owned()),
            data: Some(json!({ "roster": { "groups": 2 } })),
            ..ProfileUpdate::default()
        };

        client
            .update_profile(&h.conn, user.id, &update)
            .await
            .unwrap();
        let updated = h.double.user(user.id).unwrap();
        client.deactivate(&h.conn, user.id).await.unwrap();
        let deactivated = h.double.user(user.id).unwrap();
        client.reactivate(&h.conn, user.id).await.unwrap();
        let reactivated = h.double.user(user.id).unwrap();
        client.delete(&h.conn, user.id).await.unwrap();

        assert_eq!(updated["firstName"], "Olga");
        assert_eq!(updated["lastName"], "Smith");
        assert_eq!(updated["data"]["roster"]["externalId"], "entra-1");
        assert_eq!(updated["data"]["roster"]["groups"], 2);
        assert_eq!(deactivated["active"], false);
        assert_eq!(reactivated["active"], true);
        assert!(h.double.users().is_empty());
        assert_every_request_authenticated(&h);
    }

    #[tokio::test]
    async fn operations_on_a_missing_user() {
        let h = harness(false).await;
        let client = client();
        let missing = Uuid::new_v4();

        let deleted = client.delete(&h.conn, missing).await;
        let deactivated = client.deactivate(&h.conn, missing).await;
        let reactivated = client.reactivate(&h.conn, missing).await;
        let updated = client
            .update_profile(&h.conn, missing, &ProfileUpdate::default())
            .await;

        assert!(deleted.is_ok());
        assert!(deactivated.is_ok());
        assert!(matches!(reactivated, Err(FusionAuthError::NotFound)));
        assert!(matches!(updated, Err(FusionAuthError::NotFound)));
    }

    #[tokio::test]
    async fn an_update_to_a_taken_email_is_a_conflict() {
        let h = harness(false).await;
        let client = client();
        let user = new_user("pat@contoso.com");
        client.provision(&h.conn, &user).await.unwrap();
        client
            .provision(&h.conn, &new_user("quinn@contoso.com"))
            .await
            .unwrap();
        let update = ProfileUpdate {
            email: Some("quinn@contoso.com".to_owned()),
            ..ProfileUpdate::default()
        };

        let result = client.update_profile(&h.conn, user.id, &update).await;

        assert!(
            matches!(result, Err(FusionAuthError::Conflict { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn host_names_resolving_to_private_addresses_are_refused() {
        let h = harness(false).await;
        let config = ClientConfig {
            url_policy: UrlPolicy {
                allow_private: false,
            },
            ..fast_config()
        };
        let port = h.conn.base_url.port().unwrap();
        let conn = Connection {
            base_url: Url::parse(&format!("http://localhost:{port}")).unwrap(),
            ..h.conn.clone()
        };

        let result = FusionAuthClient::new(config)
            .unwrap()
            .provision(&conn, &new_user("rae@contoso.com"))
            .await;

        assert!(
            matches!(result, Err(FusionAuthError::Protocol(_))),
            "{result:?}"
        );
        assert!(h.double.requests().is_empty());
    }

    #[test]
    fn base_urls_are_validated() {
        let strict = UrlPolicy {
            allow_private: false,
        };
        let cases = [
            ("https://acme.fusionauth.io", Ok(())),
            ("https://auth.acme.com/fusionauth/", Ok(())),
            ("http://203.0.113.9:9011", Ok(())),
            ("ftp://acme.fusionauth.io", Err(BaseUrlError::Scheme)),
            ("acme.fusionauth.io", Err(BaseUrlError::NotAUrl)),
            (
                "https://admin:pw@acme.fusionauth.io",
                Err(BaseUrlError::Credentials),
            ),
            (
                "https://acme.fusionauth.io/?x=1",
                Err(BaseUrlError::QueryOrFragment),
            ),
            (
                "https://acme.fusionauth.io/#top",
                Err(BaseUrlError::QueryOrFragment),
            ),
            ("https://localhost:9011", Err(BaseUrlError::PrivateHost)),
            ("https://fa.localhost.", Err(BaseUrlError::PrivateHost)),
            ("http://127.0.0.1:9011", Err(BaseUrlError::PrivateHost)),
            ("http://2130706433/", Err(BaseUrlError::PrivateHost)),
            ("http://10.1.2.3", Err(BaseUrlError::PrivateHost)),
            ("http://172.16.0.1", Err(BaseUrlError::PrivateHost)),
            ("http://192.168.1.1", Err(BaseUrlError::PrivateHost)),
            ("http://169.254.169.254", Err(BaseUrlError::PrivateHost)),
            ("http://100.64.0.1", Err(BaseUrlError::PrivateHost)),
            ("http://0.0.0.0", Err(BaseUrlError::PrivateHost)),
            ("http://[::1]:9011", Err(BaseUrlError::PrivateHost)),
            ("http://[fd00::1]", Err(BaseUrlError::PrivateHost)),
            ("http://[fe80::1]", Err(BaseUrlError::PrivateHost)),
            ("http://[::ffff:10.0.0.1]", Err(BaseUrlError::PrivateHost)),
            ("http://[2001:db8::1]", Ok(())),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                validate_base_url(raw, strict).map(|_| ()),
                expected,
                "{raw}"
            );
        }
        assert!(validate_base_url("http://127.0.0.1:9011", allow_private()).is_ok());
    }

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let with_prefix = Url::parse("https://auth.acme.com/fa").unwrap();
        let with_slash = Url::parse("https://auth.acme.com/fa/").unwrap();
        let bare = Url::parse("https://auth.acme.com").unwrap();

        let expected = "https://auth.acme.com/fa/api/user";
        assert_eq!(
            endpoint(&with_prefix, &["api", "user"]).unwrap().as_str(),
            expected
        );
        assert_eq!(
            endpoint(&with_slash, &["api", "user"]).unwrap().as_str(),
            expected
        );
        assert_eq!(
            endpoint(&bare, &["api", "user"]).unwrap().as_str(),
            "https://auth.acme.com/api/user"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(100);
        for _ in 0..50 {
            let first = backoff(initial, 1);
            let third = backoff(initial, 3);
            let late = backoff(initial, 40);
            assert!((Duration::from_millis(50)..=initial).contains(&first));
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third));
            assert!((MAX_BACKOFF / 2..=MAX_BACKOFF).contains(&late));
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers)
        };
        let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();

        assert_eq!(header("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            header("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let wait = header(&in_a_minute).unwrap();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert_eq!(header("soon"), None);
    }

    #[test]
    fn field_errors_are_read_as_an_object_keyed_by_field() {
        let body = json!({
            "fieldErrors": {
                "user.email": [{ "code": "[notEmail]user.email", "message": "x@y is bad" }],
                "user.password": [{ "code": "[blank]user.password", "message": "..." }]
            }
        });
        let errors: Errors = serde_json::from_value(body).unwrap();

        let error = user_errors(&errors);

        let FusionAuthError::Rejected { detail } = error else {
            panic!("expected Rejected, got {error:?}");
        };
        assert_eq!(detail, "[notEmail]user.email, [blank]user.password");
    }

    #[test]
    fn general_errors_alone_are_a_configuration_problem() {
        let body = json!({ "generalErrors": [{ "code": "[TenantIdRequired]", "message": "..." }] });
        let errors: Errors = serde_json::from_value(body).unwrap();

        assert!(matches!(user_errors(&errors), FusionAuthError::Protocol(_)));
    }

    #[test]
    fn connection_debug_hides_the_key() {
        let conn = Connection {
            base_url: Url::parse("https://acme.fusionauth.io").unwrap(),
            api_key: ApiKey::new(KEY),
            tenant_id: Uuid::nil(),
            application_id: None,
        };

        assert!(!format!("{conn:?}").contains(KEY));
    }
}
