//! `kiln serve`: the control plane's HTTP API (issue 5) in front of the store and the log hub,
//! with the link an embedded agent takes runs through ([`LocalLink`]; the binary starts that
//! agent, so the server does not depend on it).
//!
//! * [`state`] — what handlers share; [`auth`] — the bearer-token layer; [`session`] — browser
//!   sign-in with a session cookie and its CSRF rules; [`error`] — the one
//!   error type and its JSON answer;
//! * [`runs`] — submit/list/get/cancel; [`run_watch`] — the run list as a live event stream;
//!   [`uploads`] — context archives; [`logs`] — plain,
//!   followed and SSE logs; [`openapi`] — the generated API document; [`app`] — the web app,
//!   embedded;
//! * [`tasks`] — task and timer management and manual task runs; [`webhooks`] — git hosts'
//!   deliveries; [`timers`] — the loop that fires timer triggers; [`base_images`] — registry
//!   polling and push notifications for base-image triggers;
//! * [`agents`] — the agent registry (admin tokens only);
//! * [`janitor`] — retention and the backstops for lost or overrunning runs.
//!
//! [`serve`] is the whole server process (startup order, printing the admin token and the
//! listening line, graceful shutdown); [`router`] is the app alone, so tests run it in-process.

pub mod agent_api;
pub mod agents;
pub mod app;
pub mod auth;
pub mod base_images;
pub mod dispatch;
pub mod error;
pub mod git_ssh;
pub mod headers;
pub mod janitor;
pub mod limits;
pub mod logs;
pub mod openapi;
pub mod run_watch;
pub mod runs;
pub mod session;
pub mod state;
pub mod tasks;
pub mod timers;
pub mod uploads;
pub mod webhooks;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, patch, post, put};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use chrono::TimeDelta;
use futures_util::future::BoxFuture;
use kiln_api::paths;
use kiln_plan::plan::RegistryCredential;
use kiln_task::run_id::RunIdPrefix;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::log_hub::LogHub;
use crate::secret_box::SecretBox;
use crate::store::{DatabaseUrl, Store, StoreError, StoreEvent, StoreEvents};
use kiln_api::uploads::ContextLimit;

pub use git_ssh::GitSshFiles;

use crate::store::lease::{Claimant, SERVER_STOPPED_MESSAGE};
pub use dispatch::LocalLink;
use dispatch::{DispatchError, Dispatcher, RunSettings};
pub use error::ApiError;
pub use state::{AppState, Settings};

/// How long open connections (log followers) may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `kiln serve` is started with.
#[derive(Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// `--database`: `None` is the SQLite file in the data directory.
    pub database: Option<DatabaseUrl>,
    pub run_id_prefix: RunIdPrefix,
    pub default_registry: Option<String>,
    pub credentials: Vec<RegistryCredential>,
    pub images: BTreeMap<String, String>,
    pub workers: usize,
    /// The embedded agent's name (its runs' `agentName`).
    pub agent_name: String,
    /// How long an agent's lease lasts without a heartbeat (`--agent-lease`).
    pub lease_ttl: Duration,
    pub log_retention: TimeDelta,
    pub max_upload_bytes: u64,
    /// How large a run's context may be once unpacked (`--max-context-mb`).
    pub max_context: ContextLimit,
    /// The server's address as git hosts reach it (webhook URLs); `http(s)://ADDR` by default.
    pub public_url: Option<String>,
    /// How often registries are asked whether watched base-image tags moved.
    pub base_image_poll: Duration,
    /// The certificate and key HTTPS is served with (`--tls-cert`, `--tls-key`); plain HTTP
    /// without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where SSH git contexts' identity and known hosts come from.
    pub git_ssh: GitSshFiles,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("starting the agent: {0}")]
    Agent(Box<dyn std::error::Error + Send + Sync>),
    // The cause is in the message and not a `source`, so the CLI prints it once.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    SecretKey(#[from] crate::secret_box::SecretBoxError),
}

/// The HTTP app. Every route but `/healthz`, `/openapi.json`, sign-in and the (data-free) web app needs
/// a token: an API token (an admin's for the agent registry), or under `/agent/` an agent
/// token, which passes nowhere else. Every answer carries the security headers ([`headers`]) and every error answer the
/// JSON error shape ([`error::json_errors`]).
pub fn router(state: AppState) -> Router {
    let json_routes = Router::new()
        .route(paths::RUNS, post(runs::submit).get(runs::list))
        .route("/runs/{id}", get(runs::get))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/rerun", post(runs::rerun))
        .route("/runs/{id}/log", get(logs::log))
        .route(paths::TASKS, post(tasks::create).get(tasks::list))
        .route(paths::REGISTRY_EVENTS, post(base_images::registry_events))
        .route(paths::WHOAMI, get(auth::whoami))
        .route(paths::SESSION, delete(session::sign_out))
        .route("/tasks/{name}", get(tasks::get).patch(tasks::update).delete(tasks::delete))
        .route("/tasks/{name}/runs", post(tasks::run))
        .route("/tasks/{name}/timers", post(tasks::add_timer).get(tasks::list_timers))
        .route(
            "/tasks/{name}/timers/{timer}",
            patch(tasks::update_timer).delete(tasks::remove_timer),
        )
        .merge(admin_routes())
        .layer(DefaultBodyLimit::max(kiln_api::MAX_JSON_BYTES))
        .route_layer(middleware::from_fn(limits::json_body));
    let protected = Router::new()
        .route(paths::UPLOADS, post(uploads::upload))
        .merge(json_routes)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    let agent_routes = Router::new()
        .route(paths::AGENT_SESSIONS, post(agent_api::start_session))
        .route(paths::AGENT_WHOAMI, get(auth::agent_whoami))
        .route(paths::AGENT_LEASES, post(agent_api::lease))
        .route(paths::AGENT_WATCH, post(agent_api::watch))
        .route("/agent/runs/{id}/heartbeat", post(agent_api::heartbeat))
        .route("/agent/runs/{id}/status", post(agent_api::status))
        .route("/agent/runs/{id}/steps", post(agent_api::steps))
        .route("/agent/runs/{id}/log", put(agent_api::append_log))
        .route("/agent/runs/{id}/finish", post(agent_api::finish))
        .layer(DefaultBodyLimit::max(agent_api::MAX_AGENT_BODY))
        .route("/agent/uploads/{id}", get(agent_api::upload))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_agent_token));
    let app = Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::OPENAPI, get(openapi::openapi_json))
        .route(paths::SESSION, post(session::sign_in).get(session::get))
        .route("/", get(app::index))
        .route("/ui/{*page}", get(app::ui))
        .route("/assets/{file}", get(app::assets))
        .route(
            "/webhooks/{task}",
            post(webhooks::deliver).layer(DefaultBodyLimit::max(webhooks::MAX_DELIVERY_BYTES)),
        )
        .merge(protected)
        .merge(agent_routes)
        .fallback(not_found)
        .layer(middleware::from_fn(error::json_errors));
    headers::secure(app).with_state(state)
}

/// The routes only an admin token passes (inside [`auth::require_token`]).
fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(paths::AGENTS, post(agents::create).get(agents::list))
        .route("/agents/{name}", get(agents::get).patch(agents::update).delete(agents::delete))
        .route(paths::AGENT_POOLS, get(agents::pools))
        .route_layer(middleware::from_fn(auth::require_admin))
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "The server is up", body = String)))]
pub async fn health() -> &'static str {
    "ok"
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::Rejected {
        status: axum::http::StatusCode::NOT_FOUND,
        message: format!("no such endpoint: {}", uri.path()),
    }
}

/// What stops a started embedded agent (ending the runs it holds) once the server stopped.
pub type StopAgent = BoxFuture<'static, ()>;

/// Starts the embedded agent of `--workers N` (N > 0) on the in-process link: the binary's,
/// so that the server does not depend on the agent.
pub type StartAgent = Box<
    dyn FnOnce(LocalLink) -> BoxFuture<'static, Result<StopAgent, ServeError>> + Send + 'static,
>;

/// Runs the server until `shutdown` completes: store (migrations) → listen → agent (`start_agent`,
/// which recovers runs a previous process left) → admin token (printed on first start) → janitor
/// → `kiln listening on http(s)://ADDR` printed → serve (HTTPS with [`ServeConfig::tls`]) → stop
/// the agent.
pub async fn serve(
    config: ServeConfig,
    start_agent: StartAgent,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store =
        Store::open_with(&config.data_dir, config.database.as_ref(), config.run_id_prefix.clone())
            .await?;
    // Listen before anything is created: a busy port must not cost the first start its
    // one-time admin token. Connections wait in the backlog until serving starts.
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|cause| ServeError::Bind { addr: config.addr, cause })?;
    let hub = LogHub::new();
    let secrets = Arc::new(SecretBox::open_or_create(&config.data_dir)?);
    let dispatch = Arc::new(Dispatcher::new(
        store.clone(),
        hub.clone(),
        secrets.clone(),
        RunSettings {
            default_registry: config.default_registry.clone(),
            credentials: config.credentials.clone(),
            images: config.images.clone(),
            git_ssh: config.git_ssh.clone(),
            max_context: config.max_context,
        },
        config.data_dir.clone(),
        config.lease_ttl,
    ));
    let agent = start_embedded_agent(&config, &store, &dispatch, start_agent).await?;
    if let Some(token) = store.ensure_admin_token().await? {
        say(&format!("admin token: {token}"))?;
    }
    let stop = CancellationToken::new();
    let expiry = dispatch.clone().spawn_expiry(stop.clone());
    let relay = store.listen().await?.map(|events| {
        let (store, hub, dispatch) = (store.clone(), hub.clone(), dispatch.clone());
        tokio::spawn(relay_store_events(events, store, hub, dispatch, stop.clone()))
    });
    let janitor = janitor::Janitor {
        store: store.clone(),
        hub: hub.clone(),
        dispatch: dispatch.clone(),
        data_dir: config.data_dir.clone(),
        log_retention: config.log_retention,
        upload_max_age: janitor::UPLOAD_MAX_AGE,
    }
    .spawn(janitor::INTERVAL, chrono::Utc::now, stop.clone());
    let timers_changed = Arc::new(Notify::new());
    let timer_loop = {
        let dispatch = dispatch.clone();
        timers::spawn(
            store.clone(),
            secrets.clone(),
            timers_changed.clone(),
            move || dispatch.queued(),
            stop.clone(),
        )
    };
    let poller = {
        let dispatch = dispatch.clone();
        base_images::spawn(
            store.clone(),
            secrets.clone(),
            config.credentials.clone(),
            config.base_image_poll,
            move || dispatch.queued(),
            stop.clone(),
        )
    };
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let state = AppState {
        store: store.clone(),
        hub,
        dispatch,
        secrets,
        timers: timers_changed,
        settings: Arc::new(Settings {
            public_url: config.public_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}")),
            data_dir: config.data_dir.clone(),
            default_registry: config.default_registry.clone(),
            images: config.images.clone(),
            max_upload_bytes: config.max_upload_bytes,
            max_context: config.max_context,
        }),
    };
    say(&format!("kiln listening on {scheme}://{addr}"))?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");
    if config.tls.is_none()
        && crate::transport::check_server_url(&format!("http://{addr}"), false).is_err()
    {
        tracing::warn!(
            %addr,
            "plain HTTP where other machines reach it: tokens and run secrets cross the \
             network in the clear (serve TLS with --tls-cert and --tls-key)"
        );
    }

    // One way to serve, with or without TLS: a shutdown signal stops accepting and gives open
    // connections (log followers) SHUTDOWN_GRACE to finish before they are closed.
    let handle = axum_server::Handle::new();
    let signalled = stop.clone();
    let draining = handle.clone();
    let waiting = state.dispatch.clone();
    tokio::spawn(async move {
        shutdown.await;
        signalled.cancel();
        // Long-polling agents are answered now, so the drain below does not wait for them.
        waiting.stop();
        draining.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let server = axum_server::from_tcp(listener.into_std()?)?.handle(handle).accept_error_handler(
        // A client that does not trust the certificate (or speaks plain HTTP to HTTPS) fails
        // in the handshake, before any request: only this line tells the operator why.
        |peer: Option<&SocketAddr>, e: &std::io::Error| {
            tracing::debug!(peer = ?peer, error = %e, "connection not accepted");
        },
    );
    let app = router(state).into_make_service();
    let result = match config.tls {
        Some(tls) => {
            server.acceptor(RustlsAcceptor::new(RustlsConfig::from_config(tls))).serve(app).await
        }
        None => server.serve(app).await,
    }
    .map_err(ServeError::Io);
    stop.cancel();
    let _ = janitor.await;
    let _ = timer_loop.await;
    let _ = poller.await;
    let _ = expiry.await;
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    if let Some(stop_agent) = agent {
        stop_agent.await;
    }
    store.close().await;
    tracing::info!("stopped");
    result
}

/// The embedded agent of `--workers N` (none for 0): an agent like any other, linked to the
/// dispatcher in-process and shown in the registry as this process's. Its predecessor's runs
/// (a server killed mid-run) are settled first; `start` starts it.
async fn start_embedded_agent(
    config: &ServeConfig,
    store: &Store,
    dispatch: &Arc<Dispatcher>,
    start: StartAgent,
) -> Result<Option<StopAgent>, ServeError> {
    // An embedded agent asks for work at least this often while its server runs.
    let alive = config.lease_ttl + Duration::from_secs(kiln_api::agent::MAX_WAIT_SECS);
    if config.workers == 0 {
        // What this name ran here before is gone; a live server's agent of the same name stays.
        store.remove_embedded_agent(&config.agent_name, alive).await?;
        return Ok(None);
    }
    let server = format!("{} pid {}", kiln_api::agents::hostname(), std::process::id());
    let version = env!("CARGO_PKG_VERSION");
    let workers = u64::try_from(config.workers).unwrap_or(u64::MAX);
    let registered =
        store.register_embedded_agent(&config.agent_name, &server, version, workers, alive).await?;
    if let Some((other, seen)) = registered.other_server {
        tracing::warn!(
            agent = %config.agent_name,
            "the server process {other} ran an embedded agent of this name until {seen}: if it \
             still runs, both share one agent (runs, leases and the registry row); give each \
             server its own --agent-name"
        );
    }
    dispatch.start_session(&config.agent_name, SERVER_STOPPED_MESSAGE).await.map_err(
        |e| match e {
            DispatchError::Store(e) => ServeError::Store(e),
            e => ServeError::Io(std::io::Error::other(e.to_string())),
        },
    )?;
    let link = LocalLink {
        dispatcher: dispatch.clone(),
        agent: Claimant { name: config.agent_name.clone(), pool: None, platforms: Vec::new() },
    };
    Ok(Some(start(link).await?))
}

/// One line on stdout, flushed (scripts and tests wait for these lines).
fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Passes what other servers on the shared database wrote to this server's log followers, run
/// watchers and agent, until `stop` (see [`crate::store::events`]).
async fn relay_store_events(
    mut events: StoreEvents,
    store: Store,
    hub: LogHub,
    dispatch: Arc<Dispatcher>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = stop.cancelled() => return,
        };
        match event {
            Ok(StoreEvent::Queued) => dispatch.queued(),
            Ok(StoreEvent::Log { run, len }) => hub.publish(&run, len),
            Ok(StoreEvent::Ended(run)) => {
                hub.finish(&run);
                dispatch.changed();
            }
            Ok(StoreEvent::CancelRequested(_)) => dispatch.changed(),
            Ok(StoreEvent::RunChanged { run, .. }) => store.relay_run_changed(run),
            Err(e) => {
                // Followers and workers fall back to their rechecks meanwhile.
                tracing::warn!("listening to the other servers failed: {e}; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}
