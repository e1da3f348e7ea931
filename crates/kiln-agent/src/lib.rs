//! The agent: worker loops that lease runs from the control plane, prepare them, execute them
//! on the local Docker engine with `kiln_worker`, and report their logs and results (issue 5,
//! made remote in issue 12).
//!
//! The agent knows no store and no server: it talks to the control plane only through a
//! [`Control`] link — the server's dispatcher in-process for `kiln serve --workers N`, HTTP for
//! `kiln agent run` ([`remote`]) — so there is one way to execute a run. Leasing is a long-poll
//! (a waiting loop gets a submitted run at once); one watch call per agent carries cancels and
//! lost leases to the held runs as they happen.
//!
//! Modules: `kiln_api::control` (the link), [`run`] (one held run, from lease to finish), `prepare`
//! (lease → context → plan), `log_writer` (events → masked, batched, offset-addressed log
//! parts), `spool` (a run's log bytes until the server stored them: memory, then a file),
//! `step_reporter` (events → the run's step states, reported whole as they change),
//! `spare` (each worker loop's pre-created run network, which keeps `docker network
//! create` off dispatch), `leftovers` (what dead runs left: engine objects of dead owners,
//! work directories of runs this agent does not hold).

mod leftovers;
mod log_writer;
mod prepare;
pub mod remote;
mod run;
mod spare;
mod spool;
mod step_reporter;

#[cfg(test)]
mod tests;

pub use leftovers::Removed as Leftovers;
pub use spool::SpoolLimits;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiln_api::agent::{HeldRun, LeaseRequest, MAX_WAIT_SECS};
use kiln_api::control::Control;
use kiln_task::run_id::RunId;
use kiln_worker::{DockerApiMode, Engine};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Default lease: an agent that stops heartbeating loses its run after this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// How often an agent removes what dead runs left ([`leftovers`]) after its start.
const LEFTOVERS_INTERVAL: Duration = Duration::from_secs(60);

/// The first and the longest pause after a failed call to the control plane.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's name, in messages and in the records of the runs it takes.
    pub name: String,
    /// Runs executed at once.
    pub capacity: usize,
    /// Run contexts and workspaces are created under `data_dir/work`, the owner lock under
    /// `data_dir/owners`.
    pub data_dir: PathBuf,
    /// Platforms offered (`os/arch[/variant]`); empty: what the engine runs, natively and
    /// emulated ([`Engine::platforms`]).
    pub platforms: Vec<String>,
    /// The error of a run this agent stops because it is shutting down.
    pub stopped_message: String,
    /// How much of a run's log may wait for the control plane, in memory and on disk.
    pub log_spool: SpoolLimits,
    /// What `cmd` steps get of this machine's engine (`--docker-api`) when the run does not
    /// say: a task's `dockerApi` wins.
    pub docker_api: DockerApiMode,
    /// How many fast-path step containers a run may keep prepared ahead of need
    /// (`kiln_worker::RunOptions::lookahead`).
    pub lookahead: usize,
}

impl AgentConfig {
    /// Two runs at once, the engine's platforms.
    pub fn new(name: impl Into<String>, data_dir: PathBuf) -> Self {
        let name = name.into();
        Self {
            stopped_message: format!("agent {name} stopped during the run"),
            name,
            capacity: 2,
            data_dir,
            platforms: Vec::new(),
            log_spool: SpoolLimits::default(),
            docker_api: DockerApiMode::default(),
            lookahead: kiln_worker::DEFAULT_LOOKAHEAD,
        }
    }

    /// Where run contexts and workspaces go.
    pub(crate) fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work")
    }

    /// Where this process's owner lock file goes ([`kiln_worker::owner`]).
    fn owners_dir(&self) -> PathBuf {
        self.data_dir.join("owners")
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the Docker engine is unreachable: {0}")]
    Engine(#[from] kiln_worker::EngineError),
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Owner(#[from] kiln_worker::owner::OwnerError),
}

/// A run a local worker holds, and how to stop it.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) epoch: i64,
    pub(crate) cancel: CancellationToken,
    /// The stop was asked for by a user (not by a shutdown): the run ends as Canceled.
    pub(crate) by_user: Arc<AtomicBool>,
}

impl Held {
    fn new(epoch: i64) -> Self {
        Self { epoch, cancel: CancellationToken::new(), by_user: Arc::new(AtomicBool::new(false)) }
    }

    pub(crate) fn cancel_by_user(&self) {
        self.by_user.store(true, Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// What the worker loops share.
pub(crate) struct Shared {
    pub(crate) control: Arc<dyn Control>,
    pub(crate) config: AgentConfig,
    pub(crate) engine: Engine,
    platforms: Vec<String>,
    /// Stop leasing; held runs are cancelled through their own tokens.
    stopping: CancellationToken,
    held: Mutex<HashMap<RunId, Held>>,
    /// The set of held runs changed: the watch call restarts with the new set.
    held_changed: Notify,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Held>> {
        // The map stays valid whatever panicked while holding it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What dead runs left, removed: everything under the work directory but the held runs'.
    async fn remove_leftovers(&self) -> Leftovers {
        let held = |run: &RunId| self.held().contains_key(run);
        leftovers::remove(&self.engine, &self.config.work_dir(), &held).await
    }

    /// Registers a leased run; a shutdown that began meanwhile cancels it at once.
    pub(crate) fn hold(&self, run: &RunId, epoch: i64) -> Held {
        let held = Held::new(epoch);
        self.held().insert(run.clone(), held.clone());
        if self.stopping.is_cancelled() {
            held.cancel.cancel();
        }
        self.held_changed.notify_one();
        held
    }

    pub(crate) fn release(&self, run: &RunId) {
        self.held().remove(run);
        self.held_changed.notify_one();
    }
}

/// The agent. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    shared: Arc<Shared>,
    loops: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.shared.config.name)
            .field("capacity", &self.shared.config.capacity)
            .finish()
    }
}

impl Agent {
    /// Claims this process's owner lock, connects to the engine and removes what dead
    /// processes left ([`leftovers`]: nothing is held yet, so every work directory is a
    /// predecessor's), then starts `capacity` worker loops and the watch loop. The caller has
    /// told the control plane that a new process of this agent started (so it ended what the
    /// predecessor held).
    pub async fn start(
        control: Arc<dyn Control>,
        config: AgentConfig,
    ) -> Result<Agent, AgentError> {
        // Before connecting, which would claim the process's owner elsewhere.
        kiln_worker::owner::claim(&config.owners_dir())?;
        let engine = Engine::connect().await?;
        let work = config.work_dir();
        std::fs::create_dir_all(&work)
            .map_err(|source| AgentError::WorkDir { path: work.clone(), source })?;
        let platforms = if config.platforms.is_empty() {
            engine.platforms().await?
        } else {
            config.platforms.clone()
        };
        let removed = leftovers::remove(&engine, &work, &|_| false).await;
        if removed != Leftovers::default() {
            tracing::info!(?removed, "removed what dead runs left");
        }
        let capacity = config.capacity;
        let shared = Arc::new(Shared {
            control,
            config,
            engine,
            platforms,
            stopping: CancellationToken::new(),
            held: Mutex::new(HashMap::new()),
            held_changed: Notify::new(),
        });
        let mut loops: Vec<JoinHandle<()>> =
            (0..capacity).map(|n| tokio::spawn(worker_loop(shared.clone(), n))).collect();
        loops.push(tokio::spawn(watch_loop(shared.clone())));
        loops.push(tokio::spawn(leftovers_loop(shared.clone())));
        Ok(Agent { shared, loops: Arc::new(Mutex::new(loops)) })
    }

    /// The platforms this agent offers.
    pub fn platforms(&self) -> &[String] {
        &self.shared.platforms
    }

    /// Removes what dead runs left ([`leftovers`]); done every [`LEFTOVERS_INTERVAL`], so runs
    /// whose lease expired, and kiln processes that died since the start, are covered.
    pub async fn remove_leftovers(&self) -> Leftovers {
        self.shared.remove_leftovers().await
    }

    /// Stops leasing, cancels the runs held here (they end as Error with the configured
    /// stopped message) and waits until their records are finished.
    pub async fn shutdown(self) {
        self.shared.stopping.cancel();
        for held in self.shared.held().values() {
            held.cancel.cancel();
        }
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in loops {
            if let Err(e) = handle.await {
                tracing::error!("an agent loop ended abnormally: {e}");
            }
        }
    }
}

/// Leases runs while there are any (each call waits for one), executing them one at a time.
/// Keeps a spare run network ready for the next run and removes it when stopping.
async fn worker_loop(shared: Arc<Shared>, n: usize) {
    let mut spare = spare::Spare::new(Some(shared.engine.clone()));
    let mut backoff = Backoff::default();
    while !shared.stopping.is_cancelled() {
        let request = LeaseRequest {
            platforms: shared.platforms.clone(),
            capacity: u32::try_from(shared.config.capacity).unwrap_or(u32::MAX),
            in_hand: u32::try_from(shared.held().len()).unwrap_or(u32::MAX),
            version: env!("CARGO_PKG_VERSION").to_string(),
            wait: MAX_WAIT_SECS,
        };
        let leased = tokio::select! {
            leased = shared.control.lease(request) => leased,
            () = shared.stopping.cancelled() => break,
        };
        match leased {
            Ok(Some(lease)) => {
                backoff.reset();
                run::run_leased(&shared, lease, &mut spare).await;
            }
            Ok(None) => backoff.reset(),
            Err(e) => {
                tracing::warn!(agent = %shared.config.name, worker = n, "leasing a run failed: {e}");
                tokio::select! {
                    () = backoff.wait() => {}
                    () = shared.stopping.cancelled() => {}
                }
            }
        }
    }
    spare.discard().await;
}

/// Removes what dead runs left every [`LEFTOVERS_INTERVAL`] until the agent stops (the start
/// did it once already).
async fn leftovers_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(LEFTOVERS_INTERVAL);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shared.stopping.cancelled() => return,
        }
        let removed = shared.remove_leftovers().await;
        if removed != Leftovers::default() {
            tracing::info!(?removed, "removed what dead runs left");
        }
    }
}

/// Carries cancels and lost leases to the held runs: one watch call over all of them,
/// restarted whenever the set changes.
async fn watch_loop(shared: Arc<Shared>) {
    let mut backoff = Backoff::default();
    while !shared.stopping.is_cancelled() {
        let changed = shared.held_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let runs: Vec<HeldRun> = shared
            .held()
            .iter()
            .map(|(id, h)| HeldRun { run_id: id.to_string(), epoch: h.epoch })
            .collect();
        if runs.is_empty() {
            tokio::select! {
                () = changed => {}
                () = shared.stopping.cancelled() => {}
            }
            continue;
        }
        let reply = tokio::select! {
            reply = shared.control.watch(runs, MAX_WAIT_SECS) => reply,
            () = changed => continue,
            () = shared.stopping.cancelled() => break,
        };
        match reply {
            Ok(reply) => {
                backoff.reset();
                let held = shared.held();
                for id in &reply.canceled {
                    if let Some(h) = held.get(&RunId::new(id.as_str())) {
                        h.cancel_by_user();
                    }
                }
                for id in &reply.lost {
                    if let Some(h) = held.get(&RunId::new(id.as_str())) {
                        tracing::warn!(run = %id, "lease lost; stopping the run");
                        h.cancel.cancel();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(agent = %shared.config.name, "watching held runs failed: {e}");
                tokio::select! {
                    () = backoff.wait() => {}
                    () = shared.stopping.cancelled() => {}
                }
            }
        }
    }
}

/// Exponential pauses between failed calls to the control plane.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: BACKOFF.0 }
    }
}

impl Backoff {
    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF.0;
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(BACKOFF.1);
    }
}
