//! The `roster` command line: run the service, migrate, and administer tenants, keys and
//! groups.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;
use tenancy::scope::TenantDb;

use anyhow::Context;
use chrono::{Duration as ChronoDuration, Utc};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use sqlx::PgPool;
use tenancy::audit::{self, AuditEvent};
use tenancy::cache::KeyCache;
use tenancy::keys::IssuedKey;
use tenancy::tenants::FusionAuthSettings;
use tenancy::{tenants, Tenant};

use uuid::Uuid;

use crate::admin::auth::Access;
use crate::admin::token::{self, TokenRequest};
use crate::config::{
    AdminAuthConfig, FusionAuthConfig, LogConfig, MigrateConfig, Secret, ServeConfig, StoreConfig,
};
use crate::directory::groups::{self, Group, NewGroup};
use crate::fusionauth::double::FusionAuthDouble;
use crate::fusionauth::{validate_base_url, UrlPolicy};
use crate::state::{connect_redis, sealer};
use crate::{openapi, server, telemetry};

/// Multi-tenant SCIM 2.0 provisioning from Microsoft Entra ID into FusionAuth.
#[derive(Debug, Parser)]
#[command(name = "roster", version)]
struct Cli {
    #[command(flatten)]
    log: LogConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the SCIM and admin APIs.
    Serve(ServeConfig),
    /// Bring the control schema and every tenant schema up to date.
    Migrate(MigrateConfig),
    /// Print the OpenAPI document.
    Openapi,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage service-account API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Mint a development admin API token, signed with `ROSTER_JWT_HS256_SECRET`.
    AdminToken(AdminTokenArgs),
    /// Manage a tenant's groups (the admin API offers the same).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Local demo: migrate, create or reuse the `demo` tenant connected to a local FusionAuth
    /// double, issue a key, print it and an admin token, serve.
    Dev(ServeConfig),
    /// Run the FusionAuth test double (for load tests and demos; never in production).
    FusionauthDouble {
        #[arg(long, default_value = "127.0.0.1:9011")]
        listen: std::net::SocketAddr,
        /// The API key the double accepts.
        #[arg(long, env = "ROSTER_FUSIONAUTH_API_KEY", hide_env_values = true)]
        api_key: Secret,
        /// The FusionAuth tenant id the double knows.
        #[arg(long)]
        tenant_id: Uuid,
    },
}

#[derive(Debug, Args)]
struct AdminTokenArgs {
    /// The token's subject, recorded as the actor of every change made with it
    /// (default `cli:<user>`).
    #[arg(long)]
    sub: Option<String>,
    /// `read` grants `roster:read`; `write` grants `roster:write` (read and write).
    #[arg(long, value_enum, default_value = "read")]
    role: Role,
    /// Confine the token to this tenant's slug.
    #[arg(long)]
    tenant: Option<String>,
    /// Minutes until the token expires.
    #[arg(long, default_value_t = 60)]
    ttl_minutes: u32,
    #[command(flatten)]
    auth: AdminAuthConfig,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Role {
    Read,
    Write,
}

impl From<Role> for Access {
    fn from(role: Role) -> Self {
        match role {
            Role::Read => Access::Read,
            Role::Write => Access::Write,
        }
    }
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant with its own schema.
    Create {
        /// `[a-z0-9][a-z0-9-]{1,62}`, used in `/scim/v2/<slug>`.
        slug: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        store: StoreConfig,
    },
    /// Connect a tenant to its FusionAuth; the API key is read from ROSTER_FUSIONAUTH_API_KEY
    /// so that it stays out of shell history, and stored sealed.
    SetFusionauth {
        slug: String,
        /// e.g. `https://auth.example.com`
        #[arg(long)]
        base_url: String,
        /// The FusionAuth tenant id sent as `X-FusionAuth-TenantId`.
        #[arg(long)]
        tenant_id: Uuid,
        /// Register every provisioned user with this application.
        #[arg(long)]
        application_id: Option<Uuid>,
        #[arg(long, env = "ROSTER_FUSIONAUTH_API_KEY", hide_env_values = true)]
        api_key: Secret,
        #[command(flatten)]
        fusionauth: FusionAuthConfig,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// Disconnect a tenant from FusionAuth: it runs in shadow mode (users in Roster only).
    ClearFusionauth {
        slug: String,
        #[command(flatten)]
        store: StoreConfig,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Issue a key for a service account; the key is printed once.
    Issue {
        slug: String,
        /// The service account the key belongs to, e.g. `entra-provisioning`.
        #[arg(long)]
        name: String,
        /// Days until the key expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// Revoke a key by id or visible prefix; every replica refuses it within 2 seconds.
    Revoke {
        slug: String,
        key: String,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// List a tenant's keys (never the keys themselves).
    List {
        slug: String,
        #[command(flatten)]
        store: StoreConfig,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group.
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        /// The External Group ID: the Entra group's Object ID.
        #[arg(long)]
        external_id: Option<String>,
        /// Turn Sync Enabled on; with an External Group ID the group is visible over SCIM.
        #[arg(long)]
        sync: bool,
        /// A permission the group grants its members; repeat for several.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// List a tenant's groups with their member counts.
    List {
        slug: String,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// Change a group; only what is given changes, all in one transaction.
    Update {
        slug: String,
        group_id: Uuid,
        /// A new display name.
        #[arg(long)]
        name: Option<String>,
        /// A new External Group ID (the Entra group's Object ID).
        #[arg(long, conflicts_with = "clear_external_id")]
        external_id: Option<String>,
        /// Remove the External Group ID: the group stops being synced.
        #[arg(long)]
        clear_external_id: bool,
        /// Sync Enabled, `true` or `false`.
        #[arg(long)]
        sync: Option<bool>,
        /// Replaces the group's permissions; repeat for several.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Remove every permission.
        #[arg(long, conflicts_with = "permissions")]
        clear_permissions: bool,
        #[command(flatten)]
        store: StoreConfig,
    },
    /// Delete a group; its members who are left in no synced group join Basic User.
    Delete {
        slug: String,
        group_id: Uuid,
        #[command(flatten)]
        store: StoreConfig,
    },
}

/// What `roster group update` changes.
#[derive(Debug, Default)]
struct GroupUpdate {
    name: Option<String>,
    /// `Some(None)` clears the External Group ID.
    external_id: Option<Option<String>>,
    sync: Option<bool>,
    permissions: Option<BTreeSet<String>>,
}

impl GroupUpdate {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.external_id.is_none()
            && self.sync.is_none()
            && self.permissions.is_none()
    }
}

/// Parses the command line, runs the command, and turns failures into a message and exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(config) => server::serve(&config).await,
        Command::Migrate(config) => migrate(&config).await,
        Command::Openapi => {
            println!("{}", openapi::spec_json());
            Ok(())
        }
        Command::Tenant(command) => tenant(command).await,
        Command::Key(command) => key(command).await,
        Command::AdminToken(args) => admin_token(&args),
        Command::Group(command) => group(command).await,
        Command::Dev(config) => dev(config).await,
        Command::FusionauthDouble {
            listen,
            api_key,
            tenant_id,
        } => run_fusionauth_double(listen, &api_key, tenant_id).await,
    }
}

fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
    )
}

async fn connect(store: &StoreConfig) -> anyhow::Result<PgPool> {
    let pool = tenancy::db::connect(&store.db())
        .await
        .context("cannot connect to Postgres")?;
    tenancy::migrate::ensure_control_current(&pool).await?;
    Ok(pool)
}

async fn migrate(config: &MigrateConfig) -> anyhow::Result<()> {
    let pool = tenancy::db::connect(&config.store.db())
        .await
        .context("cannot connect to Postgres")?;
    tenancy::migrate::migrate_control(&pool).await?;
    let report = tenancy::migrate::migrate_tenants(
        &pool,
        &tenancy::migrate::TENANT,
        config.migrate_concurrency,
    )
    .await?;
    println!(
        "control schema current; tenants migrated: {}, already current: {}, failed: {}",
        report.migrated,
        report.already_current,
        report.failed.len()
    );
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} tenant(s) failed to migrate; run `roster migrate` again to resume",
            report.failed.len()
        );
    }
    Ok(())
}

async fn tenant(command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create { slug, name, store } => {
            let pool = connect(&store).await?;
            let tenant = create_tenant(&pool, &slug, &name).await?;
            println!("created tenant {} ({})", tenant.slug, tenant.id);
        }
        TenantCommand::List { store } => {
            let pool = connect(&store).await?;
            let mut after: Option<String> = None;
            println!("{:<40} {:<10} {:<36} NAME", "SLUG", "STATUS", "ID");
            loop {
                let page = tenants::list(&pool, after.as_deref(), 500).await?;
                for t in &page {
                    let status = format!("{:?}", t.status).to_lowercase();
                    println!("{:<40} {:<10} {:<36} {}", t.slug, status, t.id, t.name);
                }
                match page.last() {
                    Some(last) if page.len() == 500 => after = Some(last.slug.clone()),
                    _ => break,
                }
            }
        }
        TenantCommand::SetFusionauth {
            slug,
            base_url,
            tenant_id,
            application_id,
            api_key,
            fusionauth,
            store,
        } => {
            let pool = connect(&store).await?;
            let tenant = tenants::require_by_slug(&pool, &slug).await?;
            let connection = FusionAuthConnection {
                base_url: &base_url,
                api_key: &api_key,
                tenant_id,
                application_id,
            };
            connect_fusionauth(&pool, &tenant, &fusionauth, connection).await?;
            println!(
                "{} now provisions into FusionAuth at {base_url}",
                tenant.slug
            );
        }
        TenantCommand::ClearFusionauth { slug, store } => {
            let pool = connect(&store).await?;
            let tenant = tenants::require_by_slug(&pool, &slug).await?;
            tenants::set_fusionauth(&pool, tenant.id, None).await?;
            audit::record(
                &pool,
                AuditEvent {
                    actor: &cli_actor(),
                    action: "tenant.fusionauth.clear",
                    tenant_id: Some(tenant.id),
                    target: Some(tenant.slug.clone()),
                    detail: json!({}),
                },
            )
            .await?;
            println!(
                "{} runs in shadow mode: users are stored in Roster only",
                tenant.slug
            );
        }
    }
    Ok(())
}

/// A FusionAuth connection as given on the command line.
struct FusionAuthConnection<'a> {
    base_url: &'a str,
    api_key: &'a Secret,
    tenant_id: Uuid,
    application_id: Option<Uuid>,
}

/// Validates and stores a tenant's FusionAuth connection, the key sealed.
async fn connect_fusionauth(
    pool: &PgPool,
    tenant: &Tenant,
    config: &FusionAuthConfig,
    connection: FusionAuthConnection<'_>,
) -> anyhow::Result<()> {
    let policy = UrlPolicy {
        allow_private: config.fusionauth_allow_private_urls,
    };
    let base_url = validate_base_url(connection.base_url, policy)
        .map_err(|e| anyhow::anyhow!("the FusionAuth base URL is refused: {e}"))?;
    let sealer = sealer(config)?
        .context("ROSTER_KEY_ENCRYPTION_KEY is required to store a FusionAuth API key")?;
    let settings = FusionAuthSettings {
        base_url: base_url.to_string().trim_end_matches('/').to_owned(),
        sealed_api_key: sealer.seal(connection.api_key.expose())?,
        tenant_id: connection.tenant_id,
        application_id: connection.application_id,
    };
    tenants::set_fusionauth(pool, tenant.id, Some(&settings)).await?;
    audit::record(
        pool,
        AuditEvent {
            actor: &cli_actor(),
            action: "tenant.fusionauth.set",
            tenant_id: Some(tenant.id),
            target: Some(tenant.slug.clone()),
            detail: json!({
                "base_url": settings.base_url,
                "fusionauth_tenant_id": settings.tenant_id,
                "application_id": settings.application_id,
            }),
        },
    )
    .await?;
    Ok(())
}

async fn run_fusionauth_double(
    listen: std::net::SocketAddr,
    api_key: &Secret,
    tenant_id: Uuid,
) -> anyhow::Result<()> {
    let double = FusionAuthDouble::start_on(listen).await?;
    double.add_tenant(tenant_id);
    double.add_api_key(api_key.expose(), None);
    println!("FusionAuth double listening on {}", double.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn create_tenant(pool: &PgPool, slug: &str, name: &str) -> anyhow::Result<Tenant> {
    let tenant = tenants::create(pool, slug, name).await?;
    audit::record(
        pool,
        AuditEvent {
            actor: &cli_actor(),
            action: "tenant.create",
            tenant_id: Some(tenant.id),
            target: Some(tenant.slug.clone()),
            detail: json!({ "name": tenant.name }),
        },
    )
    .await?;
    Ok(tenant)
}

async fn key(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Issue {
            slug,
            name,
            expires_in_days,
            store,
        } => {
            let pool = connect(&store).await?;
            let tenant = tenants::require_by_slug(&pool, &slug).await?;
            let expires_at =
                expires_in_days.map(|days| Utc::now() + ChronoDuration::days(i64::from(days)));
            let issued = issue_key(&pool, &tenant, &name, expires_at).await?;
            println!("key {} for {} / {}", issued.prefix, tenant.slug, name);
            println!("{}", issued.secret);
            eprintln!("(shown once: store it now; Roster keeps only a hash)");
        }
        KeyCommand::Revoke { slug, key, store } => {
            let pool = connect(&store).await?;
            let tenant = tenants::require_by_slug(&pool, &slug).await?;
            let revoked = tenancy::keys::revoke(&pool, tenant.id, &key).await?;
            audit::record(
                &pool,
                AuditEvent {
                    actor: &cli_actor(),
                    action: "key.revoke",
                    tenant_id: Some(tenant.id),
                    target: Some(revoked.prefix.clone()),
                    detail: json!({ "key_id": revoked.id }),
                },
            )
            .await?;
            let redis = connect_redis(store.redis_url.expose()).await?;
            KeyCache::new(pool, redis).invalidate_all().await;
            println!("revoked key {} of {}", revoked.prefix, tenant.slug);
        }
        KeyCommand::List { slug, store } => {
            let pool = connect(&store).await?;
            let tenant = tenants::require_by_slug(&pool, &slug).await?;
            println!(
                "{:<14} {:<24} {:<22} {:<22} STATE",
                "PREFIX", "SERVICE ACCOUNT", "CREATED", "LAST USED"
            );
            for k in tenancy::keys::list(&pool, tenant.id).await? {
                let state = match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(at)) if at <= Utc::now() => "expired",
                    _ => "active",
                };
                let last_used = k
                    .last_used_at
                    .map_or("never".to_owned(), |at| at.to_rfc3339());
                println!(
                    "{:<14} {:<24} {:<22} {:<22} {state}",
                    k.prefix,
                    k.service_account,
                    k.created_at.format("%Y-%m-%d %H:%M:%S"),
                    last_used
                );
            }
        }
    }
    Ok(())
}

async fn issue_key(
    pool: &PgPool,
    tenant: &Tenant,
    service_account: &str,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> anyhow::Result<IssuedKey> {
    let issued = tenancy::keys::issue(pool, tenant.id, service_account, expires_at).await?;
    audit::record(
        pool,
        AuditEvent {
            actor: &cli_actor(),
            action: "key.issue",
            tenant_id: Some(tenant.id),
            target: Some(issued.prefix.clone()),
            detail: json!({ "service_account": service_account, "expires_at": expires_at }),
        },
    )
    .await?;
    Ok(issued)
}

fn admin_token(args: &AdminTokenArgs) -> anyhow::Result<()> {
    let subject = args.sub.clone().unwrap_or_else(cli_actor);
    let request = TokenRequest {
        subject: &subject,
        access: args.role.into(),
        tenant: args.tenant.as_deref(),
        ttl: Duration::from_secs(u64::from(args.ttl_minutes) * 60),
    };
    let token = token::mint_hs256(&args.auth, &request)?;
    println!("{token}");
    eprintln!(
        "(expires in {} minutes; send it as `Authorization: Bearer <token>` or paste it into \
         Authorize at /docs)",
        args.ttl_minutes
    );
    Ok(())
}

/// Gives a `roster dev` process an HS256 secret when none is configured; true when it did.
fn ensure_dev_jwt_secret(auth: &mut AdminAuthConfig) -> bool {
    if auth
        .jwt_hs256_secret
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        return false;
    }
    let Ok(secret) = token::generate_dev_secret().parse();
    auth.jwt_hs256_secret = Some(secret);
    true
}

async fn group(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create {
            slug,
            name,
            external_id,
            sync,
            permissions,
            store,
        } => {
            let new = NewGroup {
                display_name: name,
                external_id,
                sync_enabled: sync,
                permissions: permissions.into_iter().collect(),
            };
            let group = create_group(&store, &slug, &new).await?;
            println!("created group {} ({})", group.id, group.display_name);
        }
        GroupCommand::List { slug, store } => list_groups(&store, &slug).await?,
        GroupCommand::Update {
            slug,
            group_id,
            name,
            external_id,
            clear_external_id,
            sync,
            permissions,
            clear_permissions,
            store,
        } => {
            let update = GroupUpdate {
                name,
                external_id: external_id.map(Some).or(clear_external_id.then_some(None)),
                sync,
                permissions: (clear_permissions || !permissions.is_empty())
                    .then(|| permissions.into_iter().collect()),
            };
            let group = update_group(&store, &slug, group_id, update).await?;
            println!("updated group {} ({})", group.id, group.display_name);
        }
        GroupCommand::Delete {
            slug,
            group_id,
            store,
        } => {
            let group = delete_group(&store, &slug, group_id).await?;
            println!("deleted group {} ({})", group.id, group.display_name);
        }
    }
    Ok(())
}

/// The tenant's pool and record for a group command.
async fn group_tenant(store: &StoreConfig, slug: &str) -> anyhow::Result<(PgPool, Tenant)> {
    let pool = connect(store).await?;
    let tenant = tenants::require_by_slug(&pool, slug).await?;
    Ok((pool, tenant))
}

/// Journal request id for the safety-net moves a CLI change causes.
fn cli_request_id() -> String {
    format!("cli-{}", Uuid::now_v7().simple())
}

fn group_detail(group: &Group) -> serde_json::Value {
    json!({
        "name": group.display_name,
        "external_id": group.external_id,
        "sync_enabled": group.sync_enabled,
        "permissions": group.permissions,
    })
}

async fn create_group(store: &StoreConfig, slug: &str, new: &NewGroup) -> anyhow::Result<Group> {
    let (pool, tenant) = group_tenant(store, slug).await?;
    let mut tx = tenancy::scope::begin(&pool, &tenant.schema).await?;
    let group = groups::create(&mut tx.db(), new).await?;
    audit_group(&mut tx.db(), &tenant, "group.create", &group).await?;
    tx.commit().await?;
    Ok(group)
}

async fn list_groups(store: &StoreConfig, slug: &str) -> anyhow::Result<()> {
    const PAGE: i64 = 500;
    let (pool, tenant) = group_tenant(store, slug).await?;
    println!(
        "{:<36} {:<8} {:>8} {:<20} {:<36} NAME [PERMISSIONS]",
        "ID", "SYNC", "MEMBERS", "LAST SYNCED", "EXTERNAL ID"
    );
    let mut offset = 0;
    loop {
        let mut tx = tenancy::scope::begin(&pool, &tenant.schema).await?;
        let page = groups::list_with_member_counts(&mut tx.db(), offset, PAGE).await?;
        tx.commit().await?;
        for row in &page {
            let group = &row.group;
            let sync = match (group.is_basic_user, group.is_synced(), group.sync_enabled) {
                (true, _, _) => "system",
                (_, true, _) => "synced",
                (_, false, true) => "no-id",
                _ => "off",
            };
            let last_synced = group.last_synced_at.map_or("never".to_owned(), |at| {
                at.format("%Y-%m-%d %H:%M:%S").to_string()
            });
            println!(
                "{:<36} {sync:<8} {:>8} {last_synced:<20} {:<36} {} [{}]",
                group.id,
                row.member_count,
                group.external_id.as_deref().unwrap_or("-"),
                group.display_name,
                group.permissions.join(", ")
            );
        }
        if i64::try_from(page.len()).unwrap_or(PAGE) < PAGE {
            return Ok(());
        }
        offset += PAGE;
    }
}

async fn update_group(
    store: &StoreConfig,
    slug: &str,
    group_id: Uuid,
    update: GroupUpdate,
) -> anyhow::Result<Group> {
    if update.is_empty() {
        anyhow::bail!(
            "nothing to change: give --name, --external-id, --clear-external-id, --sync, \
             --permission or --clear-permissions"
        );
    }
    let (pool, tenant) = group_tenant(store, slug).await?;
    let request_id = cli_request_id();
    let mut tx = tenancy::scope::begin(&pool, &tenant.schema).await?;
    let mut group = groups::get(&mut tx.db(), group_id)
        .await?
        .context("no such group in this tenant")?;
    if let Some(name) = &update.name {
        group = groups::rename(&mut tx.db(), group_id, name).await?;
    }
    if let Some(external_id) = &update.external_id {
        group =
            groups::set_external_id(&mut tx.db(), group_id, external_id.as_deref(), &request_id)
                .await?;
    }
    if let Some(enabled) = update.sync {
        group = groups::set_sync(&mut tx.db(), group_id, enabled, &request_id).await?;
    }
    if let Some(permissions) = &update.permissions {
        group = groups::set_permissions(&mut tx.db(), group_id, permissions).await?;
    }
    audit_group(&mut tx.db(), &tenant, "group.update", &group).await?;
    tx.commit().await?;
    Ok(group)
}

async fn delete_group(store: &StoreConfig, slug: &str, group_id: Uuid) -> anyhow::Result<Group> {
    let (pool, tenant) = group_tenant(store, slug).await?;
    let mut tx = tenancy::scope::begin(&pool, &tenant.schema).await?;
    let group = groups::delete(&mut tx.db(), group_id, &cli_request_id()).await?;
    audit_group(&mut tx.db(), &tenant, "group.delete", &group).await?;
    tx.commit().await?;
    Ok(group)
}

/// Records a group change in the admin audit, in the change's own transaction.
async fn audit_group(
    db: &mut TenantDb<'_>,
    tenant: &Tenant,
    action: &str,
    group: &Group,
) -> anyhow::Result<()> {
    audit::record(
        &mut *db.conn,
        AuditEvent {
            actor: &cli_actor(),
            action,
            tenant_id: Some(tenant.id),
            target: Some(group.id.to_string()),
            detail: group_detail(group),
        },
    )
    .await?;
    Ok(())
}

async fn dev(mut config: ServeConfig) -> anyhow::Result<()> {
    let generated_secret = ensure_dev_jwt_secret(&mut config.admin_auth);
    let admin_token = token::mint_hs256(
        &config.admin_auth,
        &TokenRequest {
            subject: &cli_actor(),
            access: Access::Write,
            tenant: None,
            ttl: Duration::from_secs(12 * 60 * 60),
        },
    )?;
    migrate(&MigrateConfig {
        store: config.store.clone(),
        migrate_concurrency: 4,
    })
    .await?;
    let pool = connect(&config.store).await?;
    let tenant = match tenants::get_by_slug(&pool, "demo").await? {
        Some(tenant) => tenant,
        None => create_tenant(&pool, "demo", "Demo tenant").await?,
    };
    let issued = issue_key(&pool, &tenant, "entra-demo", None).await?;
    let double = connect_demo_fusionauth(&pool, &tenant, &mut config).await?;

    let running = server::start(&config).await?;
    let base = &running.state.public_url;
    println!();
    println!("Roster is running at {base}");
    println!("  SCIM base URL (tenant from key): {base}/scim/v2");
    println!(
        "  SCIM base URL (per tenant):      {base}/scim/v2/{}",
        tenant.slug
    );
    println!("  Secret token for tenant demo:    {}", issued.secret);
    println!("  API docs:                        {base}/docs");
    println!("  FusionAuth (test double):        {}", double.base_url());
    println!("  Admin token (roster:write, 12 h): {admin_token}");
    if generated_secret {
        println!(
            "  (signed with a JWT secret generated for this process: set \
             ROSTER_JWT_HS256_SECRET to keep admin tokens valid across restarts)"
        );
    }
    println!();
    println!(
        "Try: curl -H 'Authorization: Bearer {}' {base}/scim/v2/ServiceProviderConfig",
        issued.secret
    );
    println!("     curl -H 'Authorization: Bearer {admin_token}' {base}/admin/v1/tenants");
    println!();
    server::wait_for_shutdown(running).await
}

/// Starts the FusionAuth double on a free loopback port and connects the demo tenant to it,
/// so the quickstart provisions end to end with no real FusionAuth.
async fn connect_demo_fusionauth(
    pool: &PgPool,
    tenant: &Tenant,
    config: &mut ServeConfig,
) -> anyhow::Result<FusionAuthDouble> {
    let fusionauth = &mut config.fusionauth;
    fusionauth.fusionauth_allow_private_urls = true;
    if fusionauth.key_encryption_key.is_none() {
        use base64::Engine as _;
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        fusionauth.key_encryption_key = Some(encoded.parse()?);
        eprintln!("(dev: no ROSTER_KEY_ENCRYPTION_KEY set; using a random one for this run)");
    }
    let double = FusionAuthDouble::start().await?;
    let fa_tenant = Uuid::new_v4();
    let api_key = format!("dev-{}", Uuid::new_v4().simple());
    double.add_tenant(fa_tenant);
    double.add_api_key(&api_key, None);
    let connection = FusionAuthConnection {
        base_url: &double.base_url(),
        api_key: &api_key.parse()?,
        tenant_id: fa_tenant,
        application_id: None,
    };
    connect_fusionauth(pool, tenant, fusionauth, connection).await?;
    Ok(double)
}
