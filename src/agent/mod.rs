//! The embedded worker pool of `kiln serve` (issue 5): worker loops that claim queued runs from
//! the [`Store`], prepare them, execute them on the local Docker engine with `kiln_worker`, and
//! record their logs and results.
//!
//! The server talks to it through [`Agent`]: [`Agent::wake`] when it queued a run (so dispatch
//! does not wait for a poll), [`Agent::cancel`] when a user cancelled one, [`Agent::shutdown`]
//! when it stops. Runs queued by other processes are found by polling once a second.
//!
//! Modules: [`run`] (one held run, from claim to finish), `prepare` (request → context → plan),
//! `git_ssh` (the SSH identity of a run's git fetches), `log_writer` (events → masked, batched,
//! fenced log appends), `spare` (each worker loop's pre-created run network, which keeps
//! `docker network create` off dispatch), `leftovers` (what crashed runs left: engine objects
//! of dead owners, work directories of ended runs).

mod git_ssh;
mod leftovers;
mod log_writer;
mod prepare;
mod run;
mod spare;

#[cfg(test)]
mod tests;

pub use git_ssh::{GitSshError, GitSshFiles};
pub use leftovers::Removed as Leftovers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiln_worker::Engine;
use kiln_worker::plan::RegistryCredential;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::log_hub::LogHub;
use crate::run_id::RunId;
use crate::secret_box::SecretBox;
use crate::store::{Store, StoreError};
use crate::uploads::ContextLimit;

/// How often an idle worker looks for runs queued by other processes.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Default lease: a worker that stops heartbeating loses its run after this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Concurrent runs; 0 = this server only queues.
    pub workers: usize,
    /// Uploads are read from `uploads::path(data_dir, id)`; run contexts and workspaces are
    /// created under `data_dir/work`.
    pub data_dir: PathBuf,
    /// `{{.Run.Registry}}` and the registry of quick-build tags that name none.
    pub default_registry: Option<String>,
    /// Logins for every run; their passwords are masked.
    pub credentials: Vec<RegistryCredential>,
    /// Image aliases from the configuration.
    pub images: BTreeMap<String, String>,
    /// Where SSH git contexts' identity and known hosts come from.
    pub git_ssh: GitSshFiles,
    /// Lease length; heartbeats go every third of it.
    pub lease_ttl: Duration,
    /// How large a run's context may be once unpacked or fetched.
    pub max_context: ContextLimit,
}

impl AgentConfig {
    /// Two workers, a 30 s lease, no registry, credentials or aliases.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            workers: 2,
            data_dir,
            default_registry: None,
            credentials: Vec::new(),
            images: BTreeMap::new(),
            git_ssh: GitSshFiles::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            max_context: ContextLimit::from_mb(ContextLimit::DEFAULT_MB),
        }
    }

    /// Where run contexts and workspaces go.
    pub(crate) fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }

    /// Where this server's owner lock file goes ([`kiln_worker::owner`]).
    fn owners_dir(&self) -> PathBuf {
        self.data_dir.join("owners")
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the Docker engine is unreachable: {0}")]
    Engine(#[from] kiln_worker::EngineError),
    #[error("recovering runs of a previous server failed: {0}")]
    Store(#[from] StoreError),
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    SecretKey(#[from] crate::secret_box::SecretBoxError),
    #[error(transparent)]
    Owner(#[from] kiln_worker::owner::OwnerError),
}

/// A run a local worker holds, and how to stop it.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) cancel: CancellationToken,
    /// The stop was asked for by a user (not by a shutdown): the run ends as Canceled.
    pub(crate) by_user: Arc<AtomicBool>,
}

impl Held {
    fn new() -> Self {
        Self { cancel: CancellationToken::new(), by_user: Arc::new(AtomicBool::new(false)) }
    }

    pub(crate) fn cancel_by_user(&self) {
        self.by_user.store(true, Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// What the worker loops share.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) hub: LogHub,
    pub(crate) config: AgentConfig,
    pub(crate) engine: Option<Engine>,
    /// Opens the sealed run requests.
    pub(crate) secrets: SecretBox,
    wake: Notify,
    /// Stop claiming; held runs are cancelled through their own tokens.
    stopping: CancellationToken,
    held: Mutex<HashMap<RunId, Held>>,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Held>> {
        // The map stays valid whatever panicked while holding it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a claimed run; a shutdown that began meanwhile cancels it at once.
    pub(crate) fn hold(&self, run: &RunId) -> Held {
        let held = Held::new();
        self.held().insert(run.clone(), held.clone());
        if self.stopping.is_cancelled() {
            held.cancel.cancel();
        }
        held
    }

    pub(crate) fn release(&self, run: &RunId) {
        self.held().remove(run);
    }
}

/// The worker pool. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    shared: Arc<Shared>,
    loops: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("workers", &self.shared.config.workers).finish()
    }
}

impl Agent {
    /// Crash recovery first: every run a previous server left in flight ends as Error (its
    /// followers are released; not on a shared database, see [`Store::is_shared`]), then what ended runs left is removed ([`leftovers`]: engine
    /// objects of dead kiln processes, work directories). Then `workers` worker loops start.
    /// With `workers == 0` it connects to nothing.
    pub async fn start(
        store: Store,
        hub: LogHub,
        config: AgentConfig,
    ) -> Result<Agent, AgentError> {
        // On a shared database the runs in flight may be other servers'; those of a server
        // that died end when their leases expire (the janitor).
        let in_flight =
            if store.is_shared() { Vec::new() } else { store.fail_in_flight_runs().await? };
        for run in in_flight {
            tracing::warn!(run = %run, "run was in flight when the previous server stopped");
            hub.finish(&run);
        }
        let engine = if config.workers > 0 {
            // Before connecting, which would claim the process's owner elsewhere.
            kiln_worker::owner::claim(&config.owners_dir())?;
            let engine = Engine::connect().await?;
            let work = config.work_dir();
            std::fs::create_dir_all(&work)
                .map_err(|source| AgentError::WorkDir { path: work, source })?;
            Some(engine)
        } else {
            None
        };
        let removed = leftovers::remove(&store, engine.as_ref(), &config.work_dir()).await;
        if removed != Leftovers::default() {
            tracing::info!(?removed, "removed what crashed runs left");
        }
        let workers = config.workers;
        let secrets = SecretBox::open_or_create(&config.data_dir)?;
        let shared = Arc::new(Shared {
            store,
            hub,
            config,
            engine,
            secrets,
            wake: Notify::new(),
            stopping: CancellationToken::new(),
            held: Mutex::new(HashMap::new()),
        });
        let host = hostname();
        let pid = std::process::id();
        let loops = (0..workers)
            .map(|n| tokio::spawn(worker_loop(shared.clone(), format!("{host}/{pid}/{n}"))))
            .collect();
        Ok(Agent { shared, loops: Arc::new(Mutex::new(loops)) })
    }

    /// Removes what ended runs left ([`leftovers`]); the janitor calls it on every pass, so
    /// runs whose lease expired, and kiln processes that died since the start, are covered.
    pub async fn remove_leftovers(&self) -> Leftovers {
        let shared = &self.shared;
        leftovers::remove(&shared.store, shared.engine.as_ref(), &shared.config.work_dir()).await
    }

    /// A run was just queued: an idle worker claims it now.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// The store already has `cancel_requested`; stop the run now if a local worker holds it
    /// (otherwise its holder learns it from its next heartbeat).
    pub fn cancel(&self, run: &RunId) {
        if let Some(held) = self.shared.held().get(run) {
            held.cancel_by_user();
        }
    }

    /// Stops claiming, cancels the runs held here (they end as Error, "the server stopped
    /// during the run") and waits until their records are finished.
    pub async fn shutdown(self) {
        self.shared.stopping.cancel();
        for held in self.shared.held().values() {
            held.cancel.cancel();
        }
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in loops {
            if let Err(e) = handle.await {
                tracing::error!("a worker loop ended abnormally: {e}");
            }
        }
    }
}

/// Claims runs while there are any, then waits for a wake-up or the poll interval. Keeps a
/// spare run network ready for the next run and removes it when stopping.
async fn worker_loop(shared: Arc<Shared>, worker_id: String) {
    let mut spare = spare::Spare::new(shared.engine.clone());
    while !shared.stopping.is_cancelled() {
        match shared.store.claim_next(&worker_id, shared.config.lease_ttl).await {
            Ok(Some(claim)) => {
                run::run_claimed(&shared, claim, &mut spare).await;
                // Drain: look again at once, more may be queued.
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(worker = %worker_id, "claiming a run failed: {e}"),
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = shared.stopping.cancelled() => {}
        }
    }
    spare.discard().await;
}

/// This host's name, for worker IDs (only informative: leases are what matter).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}
