//! The task file's model after parsing: every property of ACR's task and step schema with the
//! engine's defaults applied (reference §1.2, §1.3, §3).
//!
//! Positions are those of the file the user wrote, kept where a later stage (the step graph, the
//! plan, warnings about aliases) must point at a node.

use kiln_plan::plan::{EnvVar, StepId};

use super::preprocess::Version;
use crate::diagnostic::Pos;

/// ACR's default `stepTimeout` in seconds.
pub const DEFAULT_STEP_TIMEOUT: u64 = 600;
/// ACR's engine retries after 5 s by default (its docs say 0; the engine is what runs).
pub const DEFAULT_RETRY_DELAY: u64 = 5;
/// Every step's working directory unless the task or step says otherwise.
pub const WORKSPACE: &str = "/workspace";
/// The DAG's synthetic root; no step may take this ID.
pub const ROOT_ID: &str = "acb_root";

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// `v1.0.0` when the file has none.
    pub version: Version,
    pub step_timeout: u64,
    /// Absolute; the default for every step.
    pub working_directory: String,
    /// Task-level env after ACR's comma split.
    pub env: Vec<EnvVar>,
    pub secrets: Vec<Secret>,
    pub networks: Vec<Network>,
    pub volumes: Vec<Volume>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub id: At<String>,
    pub keyvault: Option<String>,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub driver: Option<String>,
    pub ipv6: bool,
    pub skip_creation: bool,
    pub is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: At<String>,
    /// File name → decoded content.
    pub secret: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub name: At<String>,
    pub mount_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// The `docker build` argument string.
    Build(String),
    /// Image references, each with a tag or digest, duplicates dropped.
    Push(Vec<String>),
    /// `image args…` as written.
    Cmd(String),
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Build(_) => "build",
            StepKind::Push(_) => "push",
            StepKind::Cmd(_) => "cmd",
        }
    }
}

/// What a step waits for (reference §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// No `when`: the step before it in the file, or the start for the first step.
    Previous,
    /// `when: ["-"]`: the start of the run.
    Start,
    /// `when: [a, b]`: all of these.
    After(Vec<At<String>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: StepId,
    /// Where the step's list item starts.
    pub pos: Pos,
    /// Where `id:` was written, if it was.
    pub id_pos: Option<Pos>,
    pub kind: At<StepKind>,
    pub when: When,
    pub timeout: u64,
    pub start_delay: u64,
    pub retries: u32,
    pub retry_delay: u64,
    pub retry_on_errors: Vec<String>,
    pub repeat: u32,
    pub ignore_errors: bool,
    pub detach: bool,
    pub keep: bool,
    pub entry_point: Option<String>,
    /// Task env merged with the step's own; the step's keys win.
    pub env: At<Vec<EnvVar>>,
    /// Absolute, or `None` with `disableWorkingDirectoryOverride`.
    pub working_directory: Option<String>,
    pub network: Option<String>,
    pub ports: Vec<String>,
    pub expose: Vec<String>,
    pub privileged: bool,
    pub user: Option<String>,
    pub isolation: Option<String>,
    pub cpus: Option<String>,
    pub pull: bool,
    pub cmd_download_retries: u32,
    pub cmd_download_retry_delay: u64,
    pub volume_mounts: Vec<VolumeMount>,
    pub cache: bool,
}
