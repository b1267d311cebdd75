//! A FusionAuth test double: a real HTTP server on loopback that behaves like FusionAuth's user
//! and registration APIs as `shared/reference/fusionauth-api.md` (§1-5, §10) describes them.
//!
//! Tests, the load tests and `roster dev` start it; production request paths never call it.
//! What it does:
//! - raw-key auth (`Authorization: <key>`, no scheme); anything else is `401` with an empty
//!   body. Keys may be locked to a tenant.
//! - `X-FusionAuth-TenantId`: required on creates and email/username lookups once more than
//!   one tenant exists (`400 [TenantIdRequired]`) unless the key is tenant-locked; on requests
//!   addressed by id it restricts the request to that tenant (other tenants' users are `404`).
//! - users: create (with or without a chosen id), get, lookup by email/username/loginId,
//!   `PUT` (replace, or `?reactivate=true`), `PATCH` (merge), `DELETE` (soft, or hard with
//!   `?hardDelete=true` or a `{"hardDelete": true}` body); registrations for existing users and
//!   combined user + registration creates.
//! - request bodies are checked against the parts of the OpenAPI schemas that are right
//!   (property names and types of `UserRequest`, `User`, `RegistrationRequest`,
//!   `UserRegistration`); errors use FusionAuth's real `Errors` shape, where `fieldErrors` is an
//!   object keyed by field.
//! - faults settable at runtime, and a record of every request.
//!
//! Where the reference could not confirm FusionAuth's behaviour, the double's choice is marked
//! "double's choice" below.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::http::{HeaderMap, Method, StatusCode};
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Request, Response, Server};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Header naming the FusionAuth tenant a request acts in.
const TENANT_HEADER: &str = "x-fusionauth-tenantid";

/// Largest request body the double reads.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How many recent requests are kept, so a long `roster dev` or load-test run stays bounded.
const RECORDED_REQUESTS: usize = 10_000;

/// User fields a `PUT` keeps: FusionAuth manages them, a replace does not touch them.
const KEPT_ON_REPLACE: &[&str] = &[
    "id",
    "tenantId",
    "active",
    "insertInstant",
    "verified",
    "usernameStatus",
    "passwordChangeRequired",
    "memberships",
];

/// A running FusionAuth double; the server stops when this is dropped.
pub struct FusionAuthDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

/// What an injected fault does to a request that passed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status without applying the request: 500 with an empty body, 503 with
    /// a JSON body, 504 with `[WebhookTransactionException]` (nothing committed), any other
    /// status with an empty body.
    Status(u16),
    /// Answer 429 with `Retry-After` (whole seconds, rounded up) without applying the request.
    RateLimited { retry_after: Duration },
    /// Apply the request, then answer with this status instead of the real answer.
    StatusAfterCommit(u16),
    /// Wait this long, then handle the request normally.
    Slow(Duration),
    /// Apply the request, then close the TCP connection without sending any response.
    DropAfterCommit,
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    kind: FaultKind,
    /// `None`: until cleared.
    remaining: Option<u32>,
    method: Option<Method>,
    path_prefix: Option<String>,
}

impl Fault {
    /// Applies to the next `times` matching requests.
    pub fn next(times: u32, kind: FaultKind) -> Self {
        Self {
            kind,
            remaining: Some(times),
            method: None,
            path_prefix: None,
        }
    }

    /// Applies to every matching request until [`FusionAuthDouble::clear_faults`].
    pub fn always(kind: FaultKind) -> Self {
        Self {
            kind,
            remaining: None,
            method: None,
            path_prefix: None,
        }
    }

    /// Restricts the fault to one method and paths starting with `path_prefix`.
    pub fn on(self, method: Method, path_prefix: &str) -> Self {
        Self {
            method: Some(method),
            path_prefix: Some(path_prefix.to_owned()),
            ..self
        }
    }

    fn matches(&self, request: &Incoming) -> bool {
        self.remaining != Some(0)
            && self.method.as_ref().is_none_or(|m| *m == request.method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| request.path.starts_with(prefix))
    }
}

/// One request as the double received it, before authentication.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// Every header, names lower-cased, values as sent (including `Authorization`).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A registration of a user with an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub application_id: Uuid,
    pub roles: Vec<String>,
    pub insert_instant: i64,
}

impl FusionAuthDouble {
    /// Starts on a random port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr` (port 0 picks a free one).
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let acceptor = SeverableAcceptor {
            listener,
            local: LocalAddr(addr.into()),
            connections: Arc::clone(&shared.connections),
        };
        let endpoint = DoubleEndpoint {
            shared: Arc::clone(&shared),
        };

        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let signal = async {
                // Either a stop message or a dropped sender means: shut down.
                let _ = stopped.await;
            };
            let served = Server::new_with_acceptor(acceptor)
                .name("fusionauth-double")
                .run_with_graceful_shutdown(endpoint, signal, Some(Duration::from_secs(1)))
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "FusionAuth double stopped with an error");
            }
        });

        Ok(Self {
            shared,
            addr,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_tenant(&self, tenant_id: Uuid) {
        self.shared.store().tenants.insert(tenant_id);
    }

    /// Adds an application to a tenant (adding the tenant too if needed).
    pub fn add_application(&self, tenant_id: Uuid, application_id: Uuid) {
        let mut store = self.shared.store();
        store.tenants.insert(tenant_id);
        store.applications.insert(application_id, tenant_id);
    }

    /// Registers an API key; a locked key acts only in its tenant.
    pub fn add_api_key(&self, key: &str, locked_to_tenant: Option<Uuid>) {
        let mut store = self.shared.store();
        store.keys.insert(key.to_owned(), locked_to_tenant);
    }

    /// Adds a fault; the first fault matching a request applies to it.
    pub fn set_fault(&self, fault: Fault) {
        self.shared.store().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.store().faults.clear();
    }

    /// The requests received so far (the most recent 10,000), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.store().requests.iter().cloned().collect()
    }

    /// Every user, as `GET /api/user/{id}` would return its `user` object.
    pub fn users(&self) -> Vec<Value> {
        let store = self.shared.store();
        store
            .users
            .keys()
            .map(|id| store.render_user(*id))
            .collect()
    }

    /// One user, as `GET /api/user/{id}` would return its `user` object.
    pub fn user(&self, id: Uuid) -> Option<Value> {
        let store = self.shared.store();
        store.users.contains_key(&id).then(|| store.render_user(id))
    }

    pub fn registrations(&self) -> Vec<RegistrationRecord> {
        let store = self.shared.store();
        store.registrations.values().flatten().cloned().collect()
    }

    /// Seeds a user without any validation (e.g. one that already owns an email). `user` is a
    /// FusionAuth `user` object; its `id` is used when present. Returns the user's id.
    pub fn insert_user(&self, tenant_id: Uuid, user: Value) -> Uuid {
        let fields = match user {
            Value::Object(fields) => fields,
            _ => Map::new(),
        };
        let id = fields
            .get("id")
            .and_then(Value::as_str)
            .and_then(|raw| Uuid::parse_str(raw).ok())
            .unwrap_or_else(Uuid::new_v4);

        let mut store = self.shared.store();
        store.tenants.insert(tenant_id);
        store.insert_user(tenant_id, id, fields, true);
        id
    }
}

impl Drop for FusionAuthDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already be gone; then there is nothing to stop.
            let _ = stop.send(());
        }
    }
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    connections: Arc<Connections>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record, authenticate, apply faults, handle.
    async fn respond(&self, request: Incoming) -> Response {
        self.store().record(request.record());

        let authenticated = self.store().authenticate(&request);
        let caller = match authenticated {
            Ok(caller) => caller,
            Err(reply) => return reply.into_response(),
        };

        let fault = self.store().take_fault(&request);
        match &fault {
            Some(FaultKind::Status(status)) => return fault_reply(*status).into_response(),
            Some(FaultKind::RateLimited { retry_after }) => {
                return Reply::rate_limited(*retry_after).into_response();
            }
            Some(FaultKind::Slow(delay)) => tokio::time::sleep(*delay).await,
            _ => {}
        }

        let reply = self.store().route(&request, &caller);

        match fault {
            Some(FaultKind::DropAfterCommit) => {
                self.sever(&request);
                Response::default()
            }
            Some(FaultKind::StatusAfterCommit(status)) => fault_reply(status).into_response(),
            _ => reply.into_response(),
        }
    }

    /// Makes the request's connection fail its next read or write, so the response is never
    /// sent and the server closes the socket.
    fn sever(&self, request: &Incoming) {
        if let Some(peer) = request.peer {
            self.connections.sever(&peer);
        }
    }
}

/// The poem endpoint: every request goes through [`Shared::respond`].
struct DoubleEndpoint {
    shared: Arc<Shared>,
}

impl Endpoint for DoubleEndpoint {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let request = Incoming::read(&mut req).await;
        Ok(self.shared.respond(request).await)
    }
}

/// A request read into memory.
struct Incoming {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
}

impl Incoming {
    async fn read(req: &mut Request) -> Self {
        let body = req
            .take_body()
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default();
        Self {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: req.headers().clone(),
            body,
            peer: req.remote_addr().as_socket_addr().copied(),
        }
    }

    fn record(&self) -> RecordedRequest {
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        RecordedRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers,
            body: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    /// The body as JSON; `None` when empty. Malformed JSON is FusionAuth's `[invalid]`.
    fn json(&self) -> Result<Option<Value>, Reply> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|_| Reply::general_error("[invalid]", "Your JSON was invalid"))
    }
}

/// Who is calling, after authentication: the tenant the request is restricted to, from the
/// tenant header or the key's lock.
struct Caller {
    tenant: Option<Uuid>,
}

#[derive(Default)]
struct Store {
    tenants: BTreeSet<Uuid>,
    /// Application id → its tenant.
    applications: HashMap<Uuid, Uuid>,
    /// API key → the tenant it is locked to.
    keys: HashMap<String, Option<Uuid>>,
    users: BTreeMap<Uuid, StoredUser>,
    /// (tenant, login field, lower-cased value) → the users holding it, so lookups and
    /// uniqueness checks do not scan every user: under load the double holds thousands.
    logins: HashMap<LoginKey, BTreeSet<Uuid>>,
    /// User id → that user's registrations, in the order they were made.
    registrations: BTreeMap<Uuid, Vec<RegistrationRecord>>,
    faults: Vec<Fault>,
    requests: VecDeque<RecordedRequest>,
}

/// The fields FusionAuth logs users in with, unique per tenant ignoring case.
const LOGIN_FIELDS: [&str; 2] = ["email", "username"];

type LoginKey = (Uuid, &'static str, String);

/// A user: its tenant, and its FusionAuth `user` object without `registrations`.
struct StoredUser {
    tenant_id: Uuid,
    fields: Map<String, Value>,
}

impl StoredUser {
    fn text(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }

    fn login_keys(&self) -> Vec<LoginKey> {
        LOGIN_FIELDS
            .iter()
            .filter_map(|field| {
                self.text(field)
                    .map(|value| (self.tenant_id, *field, value.to_lowercase()))
            })
            .collect()
    }
}

impl Store {
    fn record(&mut self, request: RecordedRequest) {
        if self.requests.len() == RECORDED_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }

    /// AUTH (§1): the raw key, optionally tenant-locked, and the tenant header.
    fn authenticate(&self, request: &Incoming) -> Result<Caller, Reply> {
        let key = request
            .header("authorization")
            .ok_or_else(Reply::unauthorized)?;
        let locked = *self.keys.get(key).ok_or_else(Reply::unauthorized)?;

        let Some(raw) = request.header(TENANT_HEADER) else {
            return Ok(Caller { tenant: locked });
        };
        // Double's choice: an unknown or malformed tenant id is a 400.
        let tenant = Uuid::parse_str(raw)
            .ok()
            .filter(|tenant| self.tenants.contains(tenant))
            .ok_or_else(|| Reply::general_error("[invalid]tenantId", "Unknown tenant"))?;
        // Double's choice (undocumented): a locked key used for another tenant is refused.
        if locked.is_some_and(|locked| locked != tenant) {
            return Err(Reply::unauthorized());
        }
        Ok(Caller {
            tenant: Some(tenant),
        })
    }

    /// The tenant a create or an email/username lookup acts in (AUTH §1.2).
    fn tenant_for_create(&self, caller: &Caller) -> Result<Uuid, Reply> {
        if let Some(tenant) = caller.tenant {
            return Ok(tenant);
        }
        match (self.tenants.len(), self.tenants.first()) {
            (1, Some(only)) => Ok(*only),
            _ => Err(Reply::general_error(
                "[TenantIdRequired]",
                "A Tenant Id is required to complete this request. To complete this request, \
                 you may assign a Tenant to your API key, or add the X-FusionAuth-TenantId HTTP \
                 request header with the Tenant Id.",
            )),
        }
    }

    /// A user the caller may address by id: in another tenant it does not exist.
    fn visible_user(&self, caller: &Caller, id: Uuid) -> Result<&StoredUser, Reply> {
        self.users
            .get(&id)
            .filter(|user| caller.tenant.is_none_or(|tenant| tenant == user.tenant_id))
            .ok_or_else(|| Reply::empty(StatusCode::NOT_FOUND))
    }

    fn take_fault(&mut self, request: &Incoming) -> Option<FaultKind> {
        let index = self
            .faults
            .iter()
            .position(|fault| fault.matches(request))?;
        let fault = self.faults.get_mut(index)?;
        let kind = fault.kind.clone();
        if let Some(remaining) = fault.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.faults.remove(index);
            }
        }
        Some(kind)
    }

    fn route(&mut self, request: &Incoming, caller: &Caller) -> Reply {
        let path = request.path.trim_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let handled = match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["api", "user"]) => self.lookup_user(request, caller),
            ("POST", ["api", "user"]) => self.create_user(request, caller, None),
            ("POST", ["api", "user", "registration"]) => self.register(request, caller, None),
            ("POST", ["api", "user", "registration", id]) => {
                self.register(request, caller, Some(id))
            }
            ("POST", ["api", "user", id]) => self.create_user(request, caller, Some(id)),
            ("GET", ["api", "user", id]) => self.get_user(caller, id),
            ("PUT", ["api", "user", id]) => self.put_user(request, caller, id),
            ("PATCH", ["api", "user", id]) => self.patch_user(request, caller, id),
            ("DELETE", ["api", "user", id]) => self.delete_user(request, caller, id),
            _ => Err(Reply::empty(StatusCode::NOT_FOUND)),
        };
        handled.unwrap_or_else(|reply| reply)
    }

    /// `POST /api/user[/{userId}]`.
    fn create_user(
        &mut self,
        request: &Incoming,
        caller: &Caller,
        raw_id: Option<&str>,
    ) -> Result<Reply, Reply> {
        let tenant = self.tenant_for_create(caller)?;
        let id = raw_id.map_or_else(|| Ok(Uuid::new_v4()), parse_user_id)?;
        let body = request.json()?;
        let input = UserInput::parse(body.as_ref())?;

        self.check_new_user(tenant, id, &input.user)?;
        self.insert_user(tenant, id, input.user, input.skip_verification);

        let mut response = json!({ "user": self.render_user(id) });
        if !input.sends_set_password {
            response["token"] = Value::String(fake_token());
        }
        Ok(Reply::ok(response))
    }

    /// `GET /api/user/{userId}`.
    fn get_user(&self, caller: &Caller, raw_id: &str) -> Result<Reply, Reply> {
        let id = parse_user_id(raw_id)?;
        self.visible_user(caller, id)?;
        Ok(Reply::ok(json!({ "user": self.render_user(id) })))
    }

    /// `GET /api/user?email=` / `?username=` / `?loginId=`: exact, case-insensitive, one tenant.
    fn lookup_user(&self, request: &Incoming, caller: &Caller) -> Result<Reply, Reply> {
        let (fields, wanted): (&[&str], String) = if let Some(email) = request.query_param("email")
        {
            (&["email"], email)
        } else if let Some(username) = request.query_param("username") {
            (&["username"], username)
        } else if let Some(login_id) = request.query_param("loginId") {
            (&["email", "username"], login_id)
        } else {
            // Double's choice: a lookup naming nothing to look up.
            return Err(Reply::general_error(
                "[invalid]",
                "Give email, username or loginId",
            ));
        };
        let tenant = self.tenant_for_create(caller)?;

        let found = fields
            .iter()
            .filter_map(|field| self.holders(tenant, field, &wanted).next())
            .min();
        match found {
            Some(id) => Ok(Reply::ok(json!({ "user": self.render_user(id) }))),
            None => Err(Reply::empty(StatusCode::NOT_FOUND)),
        }
    }

    /// `PUT /api/user/{userId}`: `?reactivate=true` reactivates, otherwise the user is replaced.
    fn put_user(
        &mut self,
        request: &Incoming,
        caller: &Caller,
        raw_id: &str,
    ) -> Result<Reply, Reply> {
        let id = parse_user_id(raw_id)?;
        let tenant = self.visible_user(caller, id)?.tenant_id;

        if request.query_param("reactivate").as_deref() == Some("true") {
            self.update_fields(id, |fields| {
                fields.insert("active".to_owned(), Value::Bool(true));
            });
            return Ok(Reply::ok(json!({ "user": self.render_user(id) })));
        }

        let body = request.json()?;
        let input = UserInput::parse(body.as_ref())?;
        self.check_login_ids(tenant, id, &input.user)?;
        self.update_fields(id, |fields| {
            fields.retain(|key, _| KEPT_ON_REPLACE.contains(&key.as_str()));
            fields.extend(without_managed_fields(input.user));
        });
        Ok(Reply::ok(json!({ "user": self.render_user(id) })))
    }

    /// `PATCH /api/user/{userId}`: merge (objects merged, arrays appended, `null` removes).
    fn patch_user(
        &mut self,
        request: &Incoming,
        caller: &Caller,
        raw_id: &str,
    ) -> Result<Reply, Reply> {
        let id = parse_user_id(raw_id)?;
        let user = self.visible_user(caller, id)?;
        let tenant = user.tenant_id;

        let body = request.json()?;
        let input = UserInput::parse(body.as_ref())?;
        let mut merged = Value::Object(user.fields.clone());
        merge(
            &mut merged,
            &Value::Object(without_managed_fields(input.user)),
        );
        let Value::Object(merged) = merged else {
            return Err(Reply::general_error("[invalid]", "Your JSON was invalid"));
        };
        self.check_login_ids(tenant, id, &merged)?;

        self.update_fields(id, |fields| *fields = merged);
        Ok(Reply::ok(json!({ "user": self.render_user(id) })))
    }

    /// `DELETE /api/user/{userId}`: deactivate, or remove with `hardDelete`.
    fn delete_user(
        &mut self,
        request: &Incoming,
        caller: &Caller,
        raw_id: &str,
    ) -> Result<Reply, Reply> {
        let id = parse_user_id(raw_id)?;
        self.visible_user(caller, id)?;

        let in_query = request.query_param("hardDelete").as_deref() == Some("true");
        let in_body = request
            .json()
            .ok()
            .flatten()
            .and_then(|body| body.get("hardDelete").and_then(Value::as_bool))
            .unwrap_or(false);
        if in_query || in_body {
            self.unindex_logins(id);
            self.users.remove(&id);
            self.registrations.remove(&id);
        } else {
            self.update_fields(id, |fields| {
                fields.insert("active".to_owned(), Value::Bool(false));
            });
        }
        Ok(Reply::empty(StatusCode::OK))
    }

    /// `POST /api/user/registration[/{userId}]`: registers an existing user, or (with `user`
    /// in the body) creates the user and registers it in one call (REG §4.1).
    fn register(
        &mut self,
        request: &Incoming,
        caller: &Caller,
        raw_id: Option<&str>,
    ) -> Result<Reply, Reply> {
        let body = request.json()?;
        let input = RegistrationInput::parse(body.as_ref())?;

        let (user_id, tenant) = match &input.user {
            Some(_) => (
                raw_id.map_or_else(|| Ok(Uuid::new_v4()), parse_user_id)?,
                self.tenant_for_create(caller)?,
            ),
            None => {
                let id = parse_user_id(raw_id.ok_or_else(|| Reply::empty(StatusCode::NOT_FOUND))?)?;
                (id, self.visible_user(caller, id)?.tenant_id)
            }
        };
        self.check_application(tenant, input.application_id)?;
        self.check_not_registered(user_id, input.application_id)?;

        let combined = input.user.is_some();
        if let Some(user) = input.user {
            self.check_new_user(tenant, user_id, &user.user)?;
            self.insert_user(tenant, user_id, user.user, user.skip_verification);
        }
        let registration = RegistrationRecord {
            id: input.registration_id.unwrap_or_else(Uuid::new_v4),
            user_id,
            application_id: input.application_id,
            roles: input.roles,
            insert_instant: now_millis(),
        };
        let rendered = render_registration(&registration);
        self.registrations
            .entry(user_id)
            .or_default()
            .push(registration);

        let mut response = json!({ "registration": rendered, "token": fake_token() });
        if combined {
            response["user"] = self.render_user(user_id);
        }
        Ok(Reply::ok(response))
    }

    /// Double's choice (undocumented): an application outside the user's tenant is a 400.
    fn check_application(&self, tenant: Uuid, application_id: Uuid) -> Result<(), Reply> {
        if self.applications.get(&application_id) == Some(&tenant) {
            return Ok(());
        }
        let mut errors = FieldErrors::default();
        errors.push(
            "registration.applicationId",
            "[invalid]registration.applicationId",
            "The Application Id specified is invalid.".to_owned(),
        );
        errors.into_result()
    }

    fn check_not_registered(&self, user_id: Uuid, application_id: Uuid) -> Result<(), Reply> {
        let registered = self
            .registrations
            .get(&user_id)
            .is_some_and(|made| made.iter().any(|r| r.application_id == application_id));
        if !registered {
            return Ok(());
        }
        let mut errors = FieldErrors::default();
        errors.push(
            "registration",
            "[duplicate]registration",
            "The User is already registered for this Application.".to_owned(),
        );
        errors.into_result()
    }

    /// Checks for a new user: a free id (double's choice of error, FusionAuth's is
    /// undocumented), then the login-id rules.
    fn check_new_user(
        &self,
        tenant: Uuid,
        id: Uuid,
        user: &Map<String, Value>,
    ) -> Result<(), Reply> {
        if self.users.contains_key(&id) {
            let mut errors = FieldErrors::default();
            errors.push(
                "userId",
                "[duplicate]userId",
                format!("A User with Id [{id}] already exists."),
            );
            return errors.into_result();
        }
        self.check_login_ids(tenant, id, user)
    }

    /// USERS / ERRORS rules: email or username required, email well-formed, both unique per
    /// tenant ignoring case (deactivated users included). All errors are returned together.
    fn check_login_ids(
        &self,
        tenant: Uuid,
        id: Uuid,
        user: &Map<String, Value>,
    ) -> Result<(), Reply> {
        let email = non_blank(user, "email");
        let username = non_blank(user, "username");
        let mut errors = FieldErrors::default();

        if email.is_none() && username.is_none() {
            for field in ["email", "username"] {
                errors.push(
                    &format!("user.{field}"),
                    &format!("[blank]user.{field}"),
                    "You must specify either the [user.email] or [user.username] property."
                        .to_owned(),
                );
            }
        }
        if let Some(email) = email {
            if !looks_like_email(email) {
                errors.push(
                    "user.email",
                    "[notEmail]user.email",
                    "The [user.email] property is not a valid email address.".to_owned(),
                );
            } else if self.login_taken(tenant, id, "email", email) {
                errors.push(
                    "user.email",
                    "[duplicate]user.email",
                    format!("A User with email = [{email}] already exists."),
                );
            }
        }
        if let Some(username) = username {
            if self.login_taken(tenant, id, "username", username) {
                errors.push(
                    "user.username",
                    "[duplicate]user.username",
                    format!("A User with username = [{username}] already exists."),
                );
            }
        }
        errors.into_result()
    }

    fn login_taken(&self, tenant: Uuid, id: Uuid, field: &'static str, value: &str) -> bool {
        self.holders(tenant, field, value).any(|other| other != id)
    }

    /// The users of `tenant` whose `field` is `value` ignoring case, in id order.
    fn holders(
        &self,
        tenant: Uuid,
        field: &'static str,
        value: &str,
    ) -> impl Iterator<Item = Uuid> + '_ {
        self.logins
            .get(&(tenant, field, value.to_lowercase()))
            .into_iter()
            .flatten()
            .copied()
    }

    fn index_logins(&mut self, id: Uuid) {
        let keys = self.users.get(&id).map(StoredUser::login_keys);
        for key in keys.unwrap_or_default() {
            self.logins.entry(key).or_default().insert(id);
        }
    }

    fn unindex_logins(&mut self, id: Uuid) {
        let keys = self.users.get(&id).map(StoredUser::login_keys);
        for key in keys.unwrap_or_default() {
            if let Some(ids) = self.logins.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.logins.remove(&key);
                }
            }
        }
    }

    /// Stores a user the way FusionAuth returns it: email lower-cased, never a password.
    fn insert_user(&mut self, tenant: Uuid, id: Uuid, input: Map<String, Value>, verified: bool) {
        let now = now_millis();
        let mut fields = without_managed_fields(input);
        fields.remove("password");
        lower_case_email(&mut fields);
        fields.entry("active").or_insert(Value::Bool(true));
        fields.entry("data").or_insert_with(|| json!({}));
        fields.extend([
            ("id".to_owned(), json!(id)),
            ("tenantId".to_owned(), json!(tenant)),
            ("insertInstant".to_owned(), json!(now)),
            ("lastUpdateInstant".to_owned(), json!(now)),
            ("passwordChangeRequired".to_owned(), json!(false)),
            ("usernameStatus".to_owned(), json!("ACTIVE")),
            ("verified".to_owned(), json!(verified)),
            ("memberships".to_owned(), json!([])),
        ]);
        let user = StoredUser {
            tenant_id: tenant,
            fields,
        };
        self.unindex_logins(id);
        self.users.insert(id, user);
        self.index_logins(id);
    }

    fn update_fields(&mut self, id: Uuid, change: impl FnOnce(&mut Map<String, Value>)) {
        self.unindex_logins(id);
        if let Some(user) = self.users.get_mut(&id) {
            change(&mut user.fields);
            user.fields.remove("password");
            lower_case_email(&mut user.fields);
            user.fields
                .insert("lastUpdateInstant".to_owned(), json!(now_millis()));
        }
        self.index_logins(id);
    }

    /// The `user` object of a `UserResponse`, with its registrations.
    fn render_user(&self, id: Uuid) -> Value {
        let mut fields = self
            .users
            .get(&id)
            .map(|user| user.fields.clone())
            .unwrap_or_default();
        let registrations: Vec<Value> = self
            .registrations
            .get(&id)
            .into_iter()
            .flatten()
            .map(render_registration)
            .collect();
        fields.insert("registrations".to_owned(), Value::Array(registrations));
        Value::Object(fields)
    }
}

/// The property types the double checks, taken from the OpenAPI schemas. `Object` and `Array`
/// stand for `$ref`s and lists whose inner shape the double does not check.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Text,
    Uuid,
    Integer,
    Object,
    Array,
    OneOf(&'static [&'static str]),
}

/// `SendSetPasswordIdentityType` enum.
const SET_PASSWORD_TYPES: Kind = Kind::OneOf(&["email", "phone", "doNotSend"]);

/// Properties of the OpenAPI `UserRequest` schema.
const USER_REQUEST: &[(&str, Kind)] = &[
    ("applicationId", Kind::Uuid),
    ("currentPassword", Kind::Text),
    ("disableDomainBlock", Kind::Bool),
    ("sendSetPasswordEmail", Kind::Bool),
    ("sendSetPasswordIdentityType", SET_PASSWORD_TYPES),
    ("skipVerification", Kind::Bool),
    ("user", Kind::Object),
    ("verificationIds", Kind::Array),
    ("eventInfo", Kind::Object),
];

/// Properties of the OpenAPI `User` schema (`ZonedDateTime` is epoch milliseconds).
const USER: &[(&str, Kind)] = &[
    ("preferredLanguages", Kind::Array),
    ("active", Kind::Bool),
    ("birthDate", Kind::Text),
    ("cleanSpeakId", Kind::Uuid),
    ("data", Kind::Object),
    ("email", Kind::Text),
    ("expiry", Kind::Integer),
    ("firstName", Kind::Text),
    ("fullName", Kind::Text),
    ("imageUrl", Kind::Text),
    ("insertInstant", Kind::Integer),
    ("lastName", Kind::Text),
    ("legacyIdentifier", Kind::Text),
    ("lastUpdateInstant", Kind::Integer),
    ("middleName", Kind::Text),
    ("mobilePhone", Kind::Text),
    ("parentEmail", Kind::Text),
    ("phoneNumber", Kind::Text),
    ("tenantId", Kind::Uuid),
    ("timezone", Kind::Text),
    ("twoFactor", Kind::Object),
    ("memberships", Kind::Array),
    ("registrations", Kind::Array),
    ("identities", Kind::Array),
    ("breachedPasswordLastCheckedInstant", Kind::Integer),
    ("breachedPasswordStatus", Kind::Text),
    ("connectorId", Kind::Uuid),
    ("encryptionScheme", Kind::Text),
    ("factor", Kind::Integer),
    ("id", Kind::Uuid),
    ("lastLoginInstant", Kind::Integer),
    ("password", Kind::Text),
    ("passwordChangeReason", Kind::Text),
    ("passwordChangeRequired", Kind::Bool),
    ("passwordLastUpdateInstant", Kind::Integer),
    ("salt", Kind::Text),
    ("uniqueUsername", Kind::Text),
    ("username", Kind::Text),
    ("usernameStatus", Kind::Text),
    ("verified", Kind::Bool),
    ("verifiedInstant", Kind::Integer),
];

/// Properties of the OpenAPI `RegistrationRequest` schema.
const REGISTRATION_REQUEST: &[(&str, Kind)] = &[
    ("disableDomainBlock", Kind::Bool),
    ("generateAuthenticationToken", Kind::Bool),
    ("registration", Kind::Object),
    ("sendSetPasswordEmail", Kind::Bool),
    ("sendSetPasswordIdentityType", SET_PASSWORD_TYPES),
    ("skipRegistrationVerification", Kind::Bool),
    ("skipVerification", Kind::Bool),
    ("user", Kind::Object),
    ("verificationIds", Kind::Array),
    ("eventInfo", Kind::Object),
];

/// Properties of the OpenAPI `UserRegistration` schema.
const USER_REGISTRATION: &[(&str, Kind)] = &[
    ("data", Kind::Object),
    ("preferredLanguages", Kind::Array),
    ("tokens", Kind::Object),
    ("applicationId", Kind::Uuid),
    ("authenticationToken", Kind::Text),
    ("cleanSpeakId", Kind::Uuid),
    ("id", Kind::Uuid),
    ("insertInstant", Kind::Integer),
    ("lastLoginInstant", Kind::Integer),
    ("lastUpdateInstant", Kind::Integer),
    ("roles", Kind::Array),
    ("timezone", Kind::Text),
    ("username", Kind::Text),
    ("usernameStatus", Kind::Text),
    ("verified", Kind::Bool),
    ("verifiedInstant", Kind::Integer),
];

/// Checks an object against a schema's properties: every property known (double's
/// strictness), every non-null value of the declared type. Failures are FusionAuth's
/// `[invalid]` "bad JSON" answer, naming the property.
fn check_schema(
    object: &Map<String, Value>,
    prefix: &str,
    schema: &[(&str, Kind)],
) -> Result<(), Reply> {
    for (name, value) in object {
        let kind = schema
            .iter()
            .find(|(property, _)| property == name)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| invalid_property(prefix, name, "is not a known property"))?;
        if !value.is_null() && !has_kind(value, kind) {
            return Err(invalid_property(prefix, name, "has the wrong type"));
        }
    }
    Ok(())
}

fn has_kind(value: &Value, kind: Kind) -> bool {
    match kind {
        Kind::Bool => value.is_boolean(),
        Kind::Text => value.is_string(),
        Kind::Uuid => value
            .as_str()
            .is_some_and(|raw| Uuid::parse_str(raw).is_ok()),
        Kind::Integer => value.is_i64() || value.is_u64(),
        Kind::Object => value.is_object(),
        Kind::Array => value.is_array(),
        Kind::OneOf(allowed) => value.as_str().is_some_and(|raw| allowed.contains(&raw)),
    }
}

fn invalid_property(prefix: &str, name: &str, problem: &str) -> Reply {
    Reply::general_error(
        "[invalid]",
        &format!("Your JSON was invalid: [{prefix}{name}] {problem}"),
    )
}

/// A checked `UserRequest`.
struct UserInput {
    user: Map<String, Value>,
    skip_verification: bool,
    sends_set_password: bool,
}

impl UserInput {
    fn parse(body: Option<&Value>) -> Result<Self, Reply> {
        let request = body
            .and_then(Value::as_object)
            .ok_or_else(|| Reply::general_error("[invalid]", "Your JSON was invalid"))?;
        check_schema(request, "", USER_REQUEST)?;
        let user = required_object(request, "user", "user")?;
        check_schema(&user, "user.", USER)?;

        let flag = |name: &str| request.get(name).and_then(Value::as_bool).unwrap_or(false);
        let identity_type = request
            .get("sendSetPasswordIdentityType")
            .and_then(Value::as_str);
        Ok(Self {
            user,
            skip_verification: flag("skipVerification"),
            sends_set_password: flag("sendSetPasswordEmail")
                || identity_type.is_some_and(|kind| kind != "doNotSend"),
        })
    }
}

/// A checked `RegistrationRequest`.
struct RegistrationInput {
    application_id: Uuid,
    registration_id: Option<Uuid>,
    roles: Vec<String>,
    /// Present in the combined create-and-register mode.
    user: Option<UserInput>,
}

impl RegistrationInput {
    fn parse(body: Option<&Value>) -> Result<Self, Reply> {
        let request = body
            .and_then(Value::as_object)
            .ok_or_else(|| Reply::general_error("[invalid]", "Your JSON was invalid"))?;
        check_schema(request, "", REGISTRATION_REQUEST)?;
        let registration = required_object(request, "registration", "registration")?;
        check_schema(&registration, "registration.", USER_REGISTRATION)?;

        let application_id = uuid_field(&registration, "applicationId").ok_or_else(|| {
            let mut errors = FieldErrors::default();
            errors.push(
                "registration.applicationId",
                "[blank]registration.applicationId",
                "You must specify the [registration.applicationId] property.".to_owned(),
            );
            errors.into_reply()
        })?;
        let user = match request.get("user") {
            Some(user) if !user.is_null() => Some(UserInput::parse(Some(&json!({
                "user": user,
                "skipVerification": request.get("skipVerification").cloned().unwrap_or(Value::Null),
            })))?),
            _ => None,
        };
        Ok(Self {
            application_id,
            registration_id: uuid_field(&registration, "id"),
            roles: string_list(&registration, "roles"),
            user,
        })
    }
}

fn required_object(
    parent: &Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Map<String, Value>, Reply> {
    match parent.get(name) {
        Some(Value::Object(object)) => Ok(object.clone()),
        _ => {
            let mut errors = FieldErrors::default();
            errors.push(
                field,
                &format!("[missing]{field}"),
                format!("You must specify the [{field}] property."),
            );
            Err(errors.into_reply())
        }
    }
}

fn uuid_field(object: &Map<String, Value>, name: &str) -> Option<Uuid> {
    object
        .get(name)
        .and_then(Value::as_str)
        .and_then(|raw| Uuid::parse_str(raw).ok())
}

fn string_list(object: &Map<String, Value>, name: &str) -> Vec<String> {
    object
        .get(name)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A path id that is not a UUID: `[couldNotConvert]userId` (third-party evidence).
fn parse_user_id(raw: &str) -> Result<Uuid, Reply> {
    Uuid::parse_str(raw).map_err(|_| {
        let mut errors = FieldErrors::default();
        errors.push(
            "userId",
            "[couldNotConvert]userId",
            "Invalid userId. It must be a valid UUID.".to_owned(),
        );
        errors.into_reply()
    })
}

fn non_blank<'a>(user: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    user.get(field)
        .and_then(Value::as_str)
        .filter(|value| !value.trim().is_empty())
}

/// Basic syntax: one `@`, something before it, a dotted domain after it, no spaces.
fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
}

/// Drops the fields FusionAuth manages itself from client input.
fn without_managed_fields(mut fields: Map<String, Value>) -> Map<String, Value> {
    let managed = [
        "id",
        "tenantId",
        "insertInstant",
        "lastUpdateInstant",
        "registrations",
        "usernameStatus",
    ];
    fields.retain(|key, _| !managed.contains(&key.as_str()));
    fields
}

fn lower_case_email(fields: &mut Map<String, Value>) {
    if let Some(Value::String(email)) = fields.get_mut("email") {
        *email = email.to_lowercase();
    }
}

/// FusionAuth's PATCH merge: objects merge, arrays append, `null` removes, the rest replaces.
fn merge(target: &mut Value, patch: &Value) {
    let (Value::Object(target), Value::Object(patch)) = (target, patch) else {
        return;
    };
    for (key, value) in patch {
        match (target.get_mut(key), value) {
            (_, Value::Null) => {
                target.remove(key);
            }
            (Some(existing @ Value::Object(_)), Value::Object(_)) => merge(existing, value),
            (Some(Value::Array(existing)), Value::Array(added)) => {
                existing.extend(added.iter().cloned());
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

fn render_registration(registration: &RegistrationRecord) -> Value {
    json!({
        "id": registration.id,
        "applicationId": registration.application_id,
        "roles": registration.roles,
        "data": {},
        "insertInstant": registration.insert_instant,
        "lastUpdateInstant": registration.insert_instant,
        "usernameStatus": "ACTIVE",
        "verified": true,
    })
}

/// Stands in for the access token FusionAuth returns on create; clients must ignore it.
fn fake_token() -> String {
    format!("double-token-{}", Uuid::new_v4().simple())
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The answer a faulted request gets (§10.24 of the reference).
fn fault_reply(status: u16) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Reply::json(
            status,
            errors_body(
                "[SearchIndexUnavailable]",
                "The search index is not available (FusionAuth double).",
            ),
        ),
        StatusCode::GATEWAY_TIMEOUT => Reply::json(
            status,
            errors_body(
                "[WebhookTransactionException]",
                "One or more webhooks returned an invalid response or were unreachable. Based \
                 on your transaction configuration, your action cannot be completed.",
            ),
        ),
        _ => Reply::empty(status),
    }
}

fn errors_body(code: &str, message: &str) -> Value {
    json!({ "generalErrors": [{ "code": code, "message": message }] })
}

/// `fieldErrors` being collected: an object keyed by field, each a list of `{code, message}`.
#[derive(Default)]
struct FieldErrors(BTreeMap<String, Vec<Value>>);

impl FieldErrors {
    fn push(&mut self, field: &str, code: &str, message: String) {
        let error = json!({ "code": code, "message": message });
        self.0.entry(field.to_owned()).or_default().push(error);
    }

    fn into_reply(self) -> Reply {
        Reply::json(StatusCode::BAD_REQUEST, json!({ "fieldErrors": self.0 }))
    }

    fn into_result(self) -> Result<(), Reply> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.into_reply())
        }
    }
}

/// An answer before it becomes a poem response.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
    retry_after: Option<u64>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            retry_after: None,
        }
    }

    fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    /// 401, 404 and deletes answer with no body at all.
    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: None,
            retry_after: None,
        }
    }

    fn unauthorized() -> Self {
        Self::empty(StatusCode::UNAUTHORIZED)
    }

    fn general_error(code: &str, message: &str) -> Self {
        Self::json(StatusCode::BAD_REQUEST, errors_body(code, message))
    }

    fn rate_limited(retry_after: Duration) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self {
            retry_after: Some(seconds),
            ..Self::empty(StatusCode::TOO_MANY_REQUESTS)
        }
    }

    fn into_response(self) -> Response {
        let mut builder = Response::builder().status(self.status);
        if let Some(seconds) = self.retry_after {
            builder = builder.header("Retry-After", seconds.to_string());
        }
        match self.body {
            Some(body) => builder
                .content_type("application/json;charset=UTF-8")
                .body(body.to_string()),
            None => builder.finish(),
        }
    }
}

/// Live connections by peer address, each with a switch that makes its IO fail.
#[derive(Default)]
struct Connections {
    severed: Mutex<HashMap<SocketAddr, Arc<AtomicBool>>>,
}

impl Connections {
    fn switches(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<AtomicBool>>> {
        self.severed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, peer: SocketAddr) -> Arc<AtomicBool> {
        let switch = Arc::new(AtomicBool::new(false));
        self.switches().insert(peer, Arc::clone(&switch));
        switch
    }

    /// Forgets a closed connection, unless its address already belongs to a newer one.
    fn close(&self, peer: &SocketAddr, switch: &Arc<AtomicBool>) {
        let mut switches = self.switches();
        if switches
            .get(peer)
            .is_some_and(|live| Arc::ptr_eq(live, switch))
        {
            switches.remove(peer);
        }
    }

    fn sever(&self, peer: &SocketAddr) {
        if let Some(switch) = self.switches().get(peer) {
            switch.store(true, Ordering::SeqCst);
        }
    }
}

/// A TCP acceptor whose connections can be cut from inside a request handler.
struct SeverableAcceptor {
    listener: TcpListener,
    local: LocalAddr,
    connections: Arc<Connections>,
}

impl Acceptor for SeverableAcceptor {
    type Io = SeverableStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![self.local.clone()]
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, peer) = self.listener.accept().await?;
        let severed = self.connections.open(peer);
        let io = SeverableStream {
            stream,
            peer,
            severed,
            connections: Arc::clone(&self.connections),
        };
        Ok((
            io,
            self.local.clone(),
            RemoteAddr(peer.into()),
            Scheme::HTTP,
        ))
    }
}

/// A TCP stream that fails every read and write once severed; the server then drops it,
/// which closes the socket without a response.
struct SeverableStream {
    stream: TcpStream,
    peer: SocketAddr,
    severed: Arc<AtomicBool>,
    connections: Arc<Connections>,
}

impl SeverableStream {
    fn check(&self) -> io::Result<()> {
        if self.severed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection severed by an injected fault",
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for SeverableStream {
    fn drop(&mut self) {
        self.connections.close(&self.peer, &self.severed);
    }
}

impl AsyncRead for SeverableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SeverableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(error) = this.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.check() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode as Status;

    use super::*;

    const KEY: &str = "double-test-key";

    struct Answer {
        status: Status,
        body: String,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }
    }

    /// A plain HTTP call to the double, with a chosen key and tenant header.
    async fn call(
        double: &FusionAuthDouble,
        method: Method,
        path: &str,
        key: Option<&str>,
        tenant: Option<Uuid>,
        body: Option<Value>,
    ) -> Result<Answer, reqwest::Error> {
        let url = format!("{}{path}", double.base_url());
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(key) = key {
            request = request.header("Authorization", key);
        }
        if let Some(tenant) = tenant {
            request = request.header("X-FusionAuth-TenantId", tenant.to_string());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok(Answer { status, body })
    }

    async fn two_tenants() -> (FusionAuthDouble, Uuid, Uuid) {
        let double = FusionAuthDouble::start().await.unwrap();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        double.add_tenant(first);
        double.add_tenant(second);
        double.add_api_key(KEY, None);
        (double, first, second)
    }

    fn user_body(email: &str, username: &str) -> Value {
        json!({ "skipVerification": true, "user": { "email": email, "username": username } })
    }

    async fn create(double: &FusionAuthDouble, tenant: Uuid, id: Uuid, body: Value) -> Answer {
        let path = format!("/api/user/{id}");
        call(
            double,
            Method::POST,
            &path,
            Some(KEY),
            Some(tenant),
            Some(body),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_wrong_missing_or_bearer_key_gets_401_with_an_empty_body() {
        let (double, tenant, _) = two_tenants().await;
        let path = format!("/api/user/{}", Uuid::new_v4());
        let bearer = format!("Bearer {KEY}");

        for key in [None, Some("wrong"), Some(bearer.as_str())] {
            let answer = call(&double, Method::GET, &path, key, Some(tenant), None)
                .await
                .unwrap();
            assert_eq!(answer.status, Status::UNAUTHORIZED, "{key:?}");
            assert!(answer.body.is_empty(), "{key:?}");
        }
        assert_eq!(double.requests().len(), 3);
        assert_eq!(
            double.requests()[2].header("authorization"),
            Some(bearer.as_str())
        );
    }

    #[tokio::test]
    async fn creates_need_a_tenant_once_there_are_two() {
        let (double, tenant, other) = two_tenants().await;
        double.add_api_key("locked", Some(tenant));
        let body = user_body("a@acme.com", "a");

        let without = call(
            &double,
            Method::POST,
            "/api/user",
            Some(KEY),
            None,
            Some(body.clone()),
        )
        .await
        .unwrap();
        let locked = call(
            &double,
            Method::POST,
            "/api/user",
            Some("locked"),
            None,
            Some(body),
        )
        .await
        .unwrap();
        let crossed = call(
            &double,
            Method::POST,
            "/api/user",
            Some("locked"),
            Some(other),
            Some(user_body("b@acme.com", "b")),
        )
        .await
        .unwrap();

        assert_eq!(without.status, Status::BAD_REQUEST);
        assert_eq!(
            without.json()["generalErrors"][0]["code"],
            "[TenantIdRequired]"
        );
        assert_eq!(locked.status, Status::OK);
        assert_eq!(locked.json()["user"]["tenantId"], tenant.to_string());
        assert_eq!(crossed.status, Status::UNAUTHORIZED);
        assert_eq!(double.users().len(), 1);
    }

    #[tokio::test]
    async fn one_tenant_makes_the_header_optional() {
        let double = FusionAuthDouble::start().await.unwrap();
        double.add_tenant(Uuid::new_v4());
        double.add_api_key(KEY, None);
        let body = Some(user_body("a@acme.com", "a"));

        let answer = call(&double, Method::POST, "/api/user", Some(KEY), None, body)
            .await
            .unwrap();

        assert_eq!(answer.status, Status::OK);
        assert!(answer.json()["token"].is_string());
    }

    #[tokio::test]
    async fn users_of_another_tenant_do_not_exist() {
        let (double, tenant, other) = two_tenants().await;
        let id = Uuid::new_v4();
        create(&double, tenant, id, user_body("a@acme.com", "a")).await;
        let path = format!("/api/user/{id}");

        let own = call(&double, Method::GET, &path, Some(KEY), Some(tenant), None)
            .await
            .unwrap();
        let foreign = call(&double, Method::GET, &path, Some(KEY), Some(other), None)
            .await
            .unwrap();
        let unscoped = call(&double, Method::GET, &path, Some(KEY), None, None)
            .await
            .unwrap();
        let lookup = "/api/user?email=A%40acme.com";
        let by_email = call(&double, Method::GET, lookup, Some(KEY), Some(tenant), None)
            .await
            .unwrap();
        let elsewhere = call(&double, Method::GET, lookup, Some(KEY), Some(other), None)
            .await
            .unwrap();

        assert_eq!(own.status, Status::OK);
        assert_eq!(own.json()["user"]["id"], id.to_string());
        assert_eq!(foreign.status, Status::NOT_FOUND);
        assert!(foreign.body.is_empty());
        assert_eq!(unscoped.status, Status::OK);
        assert_eq!(by_email.json()["user"]["id"], id.to_string());
        assert_eq!(elsewhere.status, Status::NOT_FOUND);
    }

    #[tokio::test]
    async fn duplicates_are_field_errors_keyed_by_field() {
        let (double, tenant, other) = two_tenants().await;
        create(
            &double,
            tenant,
            Uuid::new_v4(),
            user_body("a@acme.com", "ann"),
        )
        .await;

        let clash = create(
            &double,
            tenant,
            Uuid::new_v4(),
            user_body("A@ACME.com", "ANN"),
        )
        .await;
        let other_tenant = create(
            &double,
            other,
            Uuid::new_v4(),
            user_body("a@acme.com", "ann"),
        )
        .await;

        assert_eq!(clash.status, Status::BAD_REQUEST);
        let errors = clash.json()["fieldErrors"].clone();
        assert!(errors.is_object());
        assert_eq!(errors["user.email"][0]["code"], "[duplicate]user.email");
        assert_eq!(
            errors["user.username"][0]["code"],
            "[duplicate]user.username"
        );
        assert_eq!(other_tenant.status, Status::OK);
    }

    #[tokio::test]
    async fn changed_and_deleted_users_free_their_logins() {
        let (double, tenant, _) = two_tenants().await;
        let id = Uuid::new_v4();
        create(&double, tenant, id, user_body("old@acme.com", "old")).await;
        let path = format!("/api/user/{id}");
        let change = json!({ "user": { "email": "New@acme.com" } });
        let get = |query: &'static str| {
            let double = &double;
            async move {
                call(double, Method::GET, query, Some(KEY), Some(tenant), None)
                    .await
                    .unwrap()
            }
        };

        let patched = call(
            &double,
            Method::PATCH,
            &path,
            Some(KEY),
            Some(tenant),
            Some(change),
        )
        .await
        .unwrap();
        let by_old = get("/api/user?email=old%40acme.com").await;
        let by_new = get("/api/user?loginId=NEW%40ACME.COM").await;
        let old_email_again = create(
            &double,
            tenant,
            Uuid::new_v4(),
            user_body("old@acme.com", "other"),
        )
        .await;
        let hard_delete = format!("{path}?hardDelete=true");
        let deleted = call(
            &double,
            Method::DELETE,
            &hard_delete,
            Some(KEY),
            Some(tenant),
            None,
        )
        .await
        .unwrap();
        let after_delete = get("/api/user?email=new%40acme.com").await;
        let username_again = create(
            &double,
            tenant,
            Uuid::new_v4(),
            user_body("n@acme.com", "old"),
        )
        .await;

        assert_eq!(patched.status, Status::OK);
        assert_eq!(by_old.status, Status::NOT_FOUND);
        assert_eq!(by_new.json()["user"]["id"], id.to_string());
        assert_eq!(old_email_again.status, Status::OK);
        assert_eq!(deleted.status, Status::OK);
        assert_eq!(after_delete.status, Status::NOT_FOUND);
        assert_eq!(username_again.status, Status::OK);
    }

    #[tokio::test]
    async fn a_taken_id_is_refused() {
        let (double, tenant, _) = two_tenants().await;
        let id = Uuid::new_v4();
        create(&double, tenant, id, user_body("a@acme.com", "a")).await;

        let again = create(&double, tenant, id, user_body("b@acme.com", "b")).await;

        assert_eq!(again.status, Status::BAD_REQUEST);
        assert_eq!(
            again.json()["fieldErrors"]["userId"][0]["code"],
            "[duplicate]userId"
        );
        assert_eq!(double.users().len(), 1);
    }

    #[tokio::test]
    async fn validation_follows_fusionauth_rules() {
        let (double, tenant, _) = two_tenants().await;
        let id = Uuid::new_v4();

        let blank = create(&double, tenant, id, json!({ "user": { "firstName": "A" } })).await;
        let not_email = create(&double, tenant, id, user_body("nope", "n")).await;
        let no_user = create(&double, tenant, id, json!({ "skipVerification": true })).await;
        let bad_id = call(
            &double,
            Method::POST,
            "/api/user/not-a-uuid",
            Some(KEY),
            Some(tenant),
            Some(user_body("a@acme.com", "a")),
        )
        .await
        .unwrap();

        let blank = blank.json();
        assert_eq!(
            blank["fieldErrors"]["user.email"][0]["code"],
            "[blank]user.email"
        );
        assert_eq!(
            blank["fieldErrors"]["user.username"][0]["code"],
            "[blank]user.username"
        );
        assert_eq!(
            not_email.json()["fieldErrors"]["user.email"][0]["code"],
            "[notEmail]user.email"
        );
        assert_eq!(
            no_user.json()["fieldErrors"]["user"][0]["code"],
            "[missing]user"
        );
        assert_eq!(
            bad_id.json()["fieldErrors"]["userId"][0]["code"],
            "[couldNotConvert]userId"
        );
        assert!(double.users().is_empty());
    }

    #[tokio::test]
    async fn bodies_are_checked_against_the_schema() {
        let (double, tenant, _) = two_tenants().await;
        let id = Uuid::new_v4();
        let cases = [
            json!({ "user": { "email": 42 } }),
            json!({ "user": { "email": "a@acme.com", "data": "flat" } }),
            json!({ "user": { "email": "a@acme.com", "emial": "typo" } }),
            json!({ "skipVerification": "yes", "user": { "email": "a@acme.com" } }),
            json!({ "sendSetPasswordIdentityType": "pigeon", "user": { "email": "a@acme.com" } }),
            json!([]),
        ];

        for body in cases {
            let answer = create(&double, tenant, id, body.clone()).await;
            assert_eq!(answer.status, Status::BAD_REQUEST, "{body}");
            assert_eq!(
                answer.json()["generalErrors"][0]["code"],
                "[invalid]",
                "{body}"
            );
        }
        assert!(double.users().is_empty());
    }

    #[tokio::test]
    async fn created_users_look_like_fusionauth_users() {
        let (double, tenant, _) = two_tenants().await;
        let id = Uuid::new_v4();
        let body = json!({
            "skipVerification": true,
            "user": { "email": "Zoe@Acme.com", "username": "zoe", "password": "secret-pw" }
        });

        let answer = create(&double, tenant, id, body).await;

        let user = answer.json()["user"].clone();
        assert_eq!(user["id"], id.to_string());
        assert_eq!(user["email"], "zoe@acme.com");
        assert_eq!(user["active"], true);
        assert_eq!(user["verified"], true);
        assert_eq!(user["usernameStatus"], "ACTIVE");
        assert!(user["insertInstant"].is_i64());
        assert!(user["registrations"].is_array());
        assert!(!answer.body.contains("secret-pw"));
    }

    #[tokio::test]
    async fn patch_merges_put_replaces_and_delete_is_soft_then_hard() {
        let (double, tenant, _) = two_tenants().await;
        let id = Uuid::new_v4();
        let body =
            json!({ "user": { "email": "a@acme.com", "firstName": "A", "data": { "x": 1 } } });
        create(&double, tenant, id, body).await;
        let path = format!("/api/user/{id}");
        let patch = json!({ "user": { "lastName": "B", "data": { "y": 2 } } });
        let put = json!({ "user": { "email": "c@acme.com" } });

        call(&double, Method::PATCH, &path, Some(KEY), None, Some(patch))
            .await
            .unwrap();
        let patched = double.user(id).unwrap();
        call(&double, Method::PUT, &path, Some(KEY), None, Some(put))
            .await
            .unwrap();
        let replaced = double.user(id).unwrap();
        let soft = call(&double, Method::DELETE, &path, Some(KEY), None, None)
            .await
            .unwrap();
        let deactivated = double.user(id).unwrap();
        let reactivate = format!("{path}?reactivate=true");
        call(&double, Method::PUT, &reactivate, Some(KEY), None, None)
            .await
            .unwrap();
        let reactivated = double.user(id).unwrap();
        let hard = format!("{path}?hardDelete=true");
        call(&double, Method::DELETE, &hard, Some(KEY), None, None)
            .await
            .unwrap();
        let gone = call(&double, Method::DELETE, &path, Some(KEY), None, None)
            .await
            .unwrap();

        assert_eq!(patched["firstName"], "A");
        assert_eq!(patched["lastName"], "B");
        assert_eq!(patched["data"], json!({ "x": 1, "y": 2 }));
        assert_eq!(replaced["email"], "c@acme.com");
        assert!(replaced.get("firstName").is_none());
        assert_eq!(soft.status, Status::OK);
        assert!(soft.body.is_empty());
        assert_eq!(deactivated["active"], false);
        assert_eq!(reactivated["active"], true);
        assert!(double.users().is_empty());
        assert_eq!(gone.status, Status::NOT_FOUND);
    }

    #[tokio::test]
    async fn registrations_follow_fusionauth_rules() {
        let (double, tenant, _) = two_tenants().await;
        let application = Uuid::new_v4();
        double.add_application(tenant, application);
        let id = Uuid::new_v4();
        create(&double, tenant, id, user_body("a@acme.com", "a")).await;
        let register = |user: Uuid, application: Uuid| {
            let path = format!("/api/user/registration/{user}");
            let body =
                json!({ "registration": { "applicationId": application, "roles": ["user"] } });
            let double = &double;
            async move {
                call(double, Method::POST, &path, Some(KEY), None, Some(body))
                    .await
                    .unwrap()
            }
        };

        let first = register(id, application).await;
        let duplicate = register(id, application).await;
        let no_user = register(Uuid::new_v4(), application).await;
        let no_application = register(id, Uuid::new_v4()).await;

        assert_eq!(first.status, Status::OK);
        assert_eq!(
            first.json()["registration"]["applicationId"],
            application.to_string()
        );
        assert_eq!(
            duplicate.json()["fieldErrors"]["registration"][0]["code"],
            "[duplicate]registration"
        );
        assert_eq!(no_user.status, Status::NOT_FOUND);
        assert!(no_user.body.is_empty());
        assert_eq!(no_application.status, Status::BAD_REQUEST);
        assert_eq!(double.registrations().len(), 1);
        assert_eq!(
            double.user(id).unwrap()["registrations"][0]["roles"],
            json!(["user"])
        );
    }

    #[tokio::test]
    async fn a_combined_registration_creates_the_user_too() {
        let (double, tenant, _) = two_tenants().await;
        let application = Uuid::new_v4();
        double.add_application(tenant, application);
        let id = Uuid::new_v4();
        let body = json!({
            "registration": { "applicationId": application },
            "user": { "email": "a@acme.com" },
            "skipVerification": true
        });
        let path = format!("/api/user/registration/{id}");

        let answer = call(
            &double,
            Method::POST,
            &path,
            Some(KEY),
            Some(tenant),
            Some(body),
        )
        .await
        .unwrap();

        assert_eq!(answer.status, Status::OK);
        assert_eq!(answer.json()["user"]["id"], id.to_string());
        assert_eq!(double.registrations().len(), 1);
    }

    #[tokio::test]
    async fn a_status_fault_answers_once_and_writes_nothing() {
        let (double, tenant, _) = two_tenants().await;
        double.set_fault(Fault::next(1, FaultKind::Status(504)));
        let id = Uuid::new_v4();

        let faulted = create(&double, tenant, id, user_body("a@acme.com", "a")).await;
        let written = double.user(id);
        let next = create(&double, tenant, id, user_body("a@acme.com", "a")).await;

        assert_eq!(faulted.status, Status::GATEWAY_TIMEOUT);
        assert_eq!(
            faulted.json()["generalErrors"][0]["code"],
            "[WebhookTransactionException]"
        );
        assert!(written.is_none());
        assert_eq!(next.status, Status::OK);
    }

    #[tokio::test]
    async fn a_dropped_connection_sends_no_answer_but_keeps_the_write() {
        let (double, tenant, _) = two_tenants().await;
        double.set_fault(Fault::next(1, FaultKind::DropAfterCommit));
        let id = Uuid::new_v4();
        let path = format!("/api/user/{id}");
        let body = Some(user_body("a@acme.com", "a"));

        let dropped = call(&double, Method::POST, &path, Some(KEY), Some(tenant), body).await;
        let after = call(&double, Method::GET, &path, Some(KEY), Some(tenant), None)
            .await
            .unwrap();

        let error = dropped
            .err()
            .expect("the connection should close without an answer");
        assert!(!error.is_timeout());
        assert!(error.status().is_none());
        assert_eq!(after.status, Status::OK);
    }

    #[tokio::test]
    async fn faults_can_target_one_endpoint_and_last_until_cleared() {
        let (double, tenant, _) = two_tenants().await;
        double.set_fault(Fault::always(FaultKind::Status(503)).on(Method::GET, "/api/user/"));
        let id = Uuid::new_v4();
        let path = format!("/api/user/{id}");

        let created = create(&double, tenant, id, user_body("a@acme.com", "a")).await;
        let first = call(&double, Method::GET, &path, Some(KEY), None, None)
            .await
            .unwrap();
        let second = call(&double, Method::GET, &path, Some(KEY), None, None)
            .await
            .unwrap();
        double.clear_faults();
        let cleared = call(&double, Method::GET, &path, Some(KEY), None, None)
            .await
            .unwrap();

        assert_eq!(created.status, Status::OK);
        assert_eq!(first.status, Status::SERVICE_UNAVAILABLE);
        assert_eq!(second.status, Status::SERVICE_UNAVAILABLE);
        assert_eq!(cleared.status, Status::OK);
    }

    #[tokio::test]
    async fn rate_limiting_sends_retry_after() {
        let (double, _, _) = two_tenants().await;
        let retry_after = Duration::from_millis(1500);
        double.set_fault(Fault::next(1, FaultKind::RateLimited { retry_after }));
        let url = format!("{}/api/user/{}", double.base_url(), Uuid::new_v4());

        let response = reqwest::Client::new()
            .get(url)
            .header("Authorization", KEY)
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), Status::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "2");
    }

    #[tokio::test]
    async fn requests_are_recorded_with_headers_and_body() {
        let (double, tenant, _) = two_tenants().await;
        let id = Uuid::new_v4();

        create(&double, tenant, id, user_body("a@acme.com", "a")).await;
        call(
            &double,
            Method::GET,
            "/api/user?email=a%40acme.com",
            Some(KEY),
            Some(tenant),
            None,
        )
        .await
        .unwrap();

        let requests = double.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, Method::POST);
        assert_eq!(requests[0].path, format!("/api/user/{id}"));
        assert_eq!(requests[0].header("Authorization"), Some(KEY));
        assert_eq!(
            requests[0].header("X-FusionAuth-TenantId"),
            Some(tenant.to_string().as_str())
        );
        assert_eq!(requests[0].json().unwrap()["user"]["email"], "a@acme.com");
        assert_eq!(requests[1].query.as_deref(), Some("email=a%40acme.com"));
    }

    #[tokio::test]
    async fn seeded_users_are_found_by_login_id() {
        let (double, tenant, _) = two_tenants().await;
        let id = double.insert_user(
            tenant,
            json!({ "email": "Seed@Acme.com", "username": "seed" }),
        );

        let by_login = call(
            &double,
            Method::GET,
            "/api/user?loginId=SEED",
            Some(KEY),
            Some(tenant),
            None,
        )
        .await
        .unwrap();

        assert_eq!(by_login.json()["user"]["id"], id.to_string());
        assert_eq!(double.user(id).unwrap()["email"], "seed@acme.com");
    }
}
