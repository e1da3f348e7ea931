//! `kiln serve`: the control plane's HTTP API (issue 5) in front of the store, the log hub and
//! the embedded agent.
//!
//! * [`state`] — what handlers share; [`auth`] — the bearer-token layer; [`error`] — the one
//!   error type and its JSON answer;
//! * [`runs`] — submit/list/get/cancel; [`uploads`] — context archives; [`logs`] — plain,
//!   followed and SSE logs; [`openapi`] — the generated API document; [`page`] — the run page
//!   for browsers;
//! * [`janitor`] — retention and the backstops for lost or overrunning runs.
//!
//! [`serve`] is the whole server process (startup order, printing the admin token and the
//! listening line, graceful shutdown); [`router`] is the app alone, so tests run it in-process.

pub mod auth;
pub mod error;
pub mod janitor;
pub mod logs;
pub mod openapi;
pub mod page;
pub mod runs;
pub mod state;
pub mod uploads;

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
use axum::middleware;
use axum::routing::{get, post};
use chrono::TimeDelta;
use kiln_worker::plan::RegistryCredential;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentConfig, AgentError};
use crate::api::paths;
use crate::log_hub::LogHub;
use crate::run_id::RunIdPrefix;
use crate::store::{Store, StoreError};

pub use error::ApiError;
pub use state::{AppState, Settings};

/// How long open connections (log followers) may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `kiln serve` is started with.
#[derive(Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub run_id_prefix: RunIdPrefix,
    pub default_registry: Option<String>,
    pub credentials: Vec<RegistryCredential>,
    pub images: BTreeMap<String, String>,
    pub workers: usize,
    pub log_retention: TimeDelta,
    pub max_upload_bytes: u64,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("starting the agent: {0}")]
    Agent(#[from] AgentError),
    // The cause is in the message and not a `source`, so the CLI prints it once.
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: SocketAddr, cause: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The HTTP app. Every route but `/healthz`, `/openapi.json` and the (data-free) run page needs
/// a token.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route(paths::UPLOADS, post(uploads::upload))
        .route(paths::RUNS, post(runs::submit).get(runs::list))
        .route("/runs/{id}", get(runs::get))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/log", get(logs::log))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::OPENAPI, get(openapi::openapi_json))
        .route("/ui/runs/{id}", get(page::run_page))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
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

/// Runs the server until `shutdown` completes: store (migrations) → listen → agent (which
/// recovers runs a previous process left) → admin token (printed on first start) → janitor →
/// `kiln listening on http://ADDR` printed → serve → stop the agent.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = Store::open(&config.data_dir, config.run_id_prefix.clone()).await?;
    // Listen before anything is created: a busy port must not cost the first start its
    // one-time admin token. Connections wait in the backlog until serving starts.
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|cause| ServeError::Bind { addr: config.addr, cause })?;
    let hub = LogHub::new();
    let agent_config = AgentConfig {
        workers: config.workers,
        data_dir: config.data_dir.clone(),
        default_registry: config.default_registry.clone(),
        credentials: config.credentials.clone(),
        images: config.images.clone(),
        ..AgentConfig::new(config.data_dir.clone())
    };
    let agent = Agent::start(store.clone(), hub.clone(), agent_config).await?;
    if let Some(token) = store.ensure_admin_token().await? {
        say(&format!("admin token: {token}"))?;
    }
    let stop = CancellationToken::new();
    let janitor = janitor::Janitor {
        store: store.clone(),
        hub: hub.clone(),
        data_dir: config.data_dir.clone(),
        log_retention: config.log_retention,
        upload_max_age: janitor::UPLOAD_MAX_AGE,
    }
    .spawn(janitor::INTERVAL, chrono::Utc::now, stop.clone());
    let state = AppState {
        store: store.clone(),
        hub,
        agent: agent.clone(),
        settings: Arc::new(Settings {
            data_dir: config.data_dir.clone(),
            default_registry: config.default_registry.clone(),
            images: config.images.clone(),
            max_upload_bytes: config.max_upload_bytes,
        }),
    };
    let addr = listener.local_addr()?;
    say(&format!("kiln listening on http://{addr}"))?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "serving");

    let signalled = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        signalled.cancel();
    });
    let serving =
        axum::serve(listener, router(state)).with_graceful_shutdown(stop.clone().cancelled_owned());
    let result = tokio::select! {
        result = serving => result.map_err(ServeError::Io),
        () = async { stop.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after the shutdown signal; closing them");
            Ok(())
        }
    };
    stop.cancel();
    let _ = janitor.await;
    agent.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    result
}

/// One line on stdout, flushed (scripts and tests wait for these lines).
fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
