//! Builds the HTTP service and runs it until a shutdown signal, then drains.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::middleware::CatchPanic;
use poem::{Endpoint, EndpointExt, Route, Server};
use tenancy::db::Db;
use tokio::task::JoinHandle;

use crate::config::ServeConfig;
use crate::request_line::LenientRequestLines;
use crate::state::{connect_redis, AppState};
use crate::telemetry::AccessLog;
use crate::{admin, openapi, scim};

/// The whole service as one endpoint.
pub fn app(state: AppState) -> impl Endpoint {
    let api = openapi::service().server(state.public_url.clone());
    let limit = state.body_limit;
    Route::new()
        .nest("/scim", scim::routes(limit))
        .nest("/docs", api.swagger_ui())
        .at("/openapi.json", api.spec_endpoint())
        .nest(
            "/",
            api.with(limit.middleware())
                .catch_all_error(|error| async move { admin::error::render(error) }),
        )
        .with(CatchPanic::new())
        .with(AccessLog)
        .data(state)
}

/// A server bound to its port and running in the background.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    maintenance: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests and waits for the server to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _already_stopping = shutdown.send(());
        }
        self.maintenance.abort();
        self.task.await??;
        Ok(())
    }
}

/// Connects to Postgres and Redis, checks the control schema, binds and starts serving.
pub async fn start(config: &ServeConfig) -> anyhow::Result<Running> {
    crate::metrics::install();
    let db = Db::connect(&config.store.db())
        .await
        .context("cannot connect to Postgres")?;
    tenancy::migrate::ensure_control_current(db.control()).await?;
    warn_about_tenants_behind(db.control()).await?;
    let redis = connect_redis(config.store.redis_url.expose()).await?;

    let acceptor = TcpListener::bind(config.listen)
        .into_acceptor()
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|addr| addr.as_socket_addr().copied())
        .context("the listener has no address")?;

    let mut config = config.clone();
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{addr}"));
    }
    let state = AppState::new(&config, db, redis)?;
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let server = Server::new_with_acceptor(LenientRequestLines(acceptor));
    let endpoint = app(state.clone());
    let task = tokio::spawn(async move {
        server
            .run_with_graceful_shutdown(
                endpoint,
                async move {
                    let _ = signal.await;
                },
                Some(grace),
            )
            .await
    });
    let maintenance = tokio::spawn(prune_journals(state.db.clone()));
    tracing::info!(listen = %addr, "serving");
    Ok(Running {
        addr,
        state,
        shutdown: Some(shutdown),
        task,
        maintenance,
    })
}

/// Runs until SIGTERM or Ctrl-C, then drains for up to the grace period.
pub async fn serve(config: &ServeConfig) -> anyhow::Result<()> {
    wait_for_shutdown(start(config).await?).await
}

/// Waits for SIGTERM or Ctrl-C, then drains `running` for up to the grace period.
pub async fn wait_for_shutdown(running: Running) -> anyhow::Result<()> {
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.stop().await
}

/// Prunes every tenant's journal by its retention, a minute after start and hourly after.
async fn prune_journals(db: Db) {
    let mut hourly = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    loop {
        hourly.tick().await;
        match crate::directory::journal::prune(&db).await {
            Ok(pruned) => tracing::info!(entries = pruned, "journal pruned"),
            Err(e) => tracing::warn!(error = %e, "journal pruning failed; retrying in an hour"),
        }
    }
}

async fn warn_about_tenants_behind(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let behind = tenancy::migrate::tenants_behind(pool, &tenancy::migrate::TENANT).await?;
    if behind > 0 {
        tracing::warn!(
            tenants = behind,
            "tenant schemas are behind: run `roster migrate`"
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
