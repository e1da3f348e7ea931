//! **STUB** of the embedded worker pool, written on the `server` branch only so `kiln serve`
//! compiles and its tests run before the agent branch is merged. It has the agent's agreed API
//! (`AgentConfig`, `Agent::start/wake/cancel/shutdown`) and does nothing: no run is ever
//! claimed. At merge the real `src/agent/` replaces this file wholesale.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kiln_worker::plan::RegistryCredential;

use crate::log_hub::LogHub;
use crate::run_id::RunId;
use crate::store::Store;

/// How the worker pool runs (stub: only carried).
#[derive(Clone)]
pub struct AgentConfig {
    pub workers: usize,
    pub data_dir: PathBuf,
    pub default_registry: Option<String>,
    pub credentials: Vec<RegistryCredential>,
    pub images: BTreeMap<String, String>,
    pub lease_ttl: Duration,
}

impl AgentConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            workers: 2,
            data_dir,
            default_registry: None,
            credentials: Vec::new(),
            images: BTreeMap::new(),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

/// Why the pool could not start (stub: never).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent stub: {0}")]
    Stub(String),
}

/// Handle of the worker pool (stub: does nothing).
#[derive(Debug, Clone)]
pub struct Agent;

impl Agent {
    pub async fn start(
        _store: Store,
        _hub: LogHub,
        _config: AgentConfig,
    ) -> Result<Agent, AgentError> {
        Ok(Agent)
    }

    /// A run was queued.
    pub fn wake(&self) {}

    /// Cancellation was requested for a run a worker holds.
    pub fn cancel(&self, _run: &RunId) {}

    pub async fn shutdown(self) {}
}
