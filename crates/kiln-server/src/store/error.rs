//! The store's error type: every way a store call can fail, typed so the server can map each to
//! an HTTP status (not found, conflict, stale lease) without parsing messages.

use kiln_api::status::RunStatus;
use kiln_task::run_id::RunId;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No run has this ID.
    #[error("run {0} not found")]
    NotFound(RunId),
    /// The caller's lease epoch is no longer the run's (the lease expired, was taken over, or the
    /// run finished): a worker that lost its lease cannot report into the run any more.
    #[error(
        "run {run}: lease epoch {epoch} is stale (the run's epoch is {current}, status {status})"
    )]
    StaleLease { run: RunId, epoch: i64, current: i64, status: RunStatus },
    /// `cancel_run` on a run that already reached a terminal status.
    #[error("run {run} already finished with status {status}")]
    AlreadyFinished { run: RunId, status: RunStatus },
    /// A status change the lifecycle does not allow (e.g. `finish` with a non-terminal status).
    #[error("run {run}: {reason}")]
    InvalidTransition { run: RunId, reason: String },
    /// Log bytes sent for an offset past the stored end: the part before it is missing.
    #[error("run {run}: log part at offset {offset} leaves a gap (the log has {stored} bytes)")]
    LogGap { run: RunId, offset: u64, stored: u64 },
    #[error("task {0} not found")]
    TaskNotFound(String),
    #[error("a task named {0} already exists")]
    TaskExists(String),
    #[error("task {task} has no timer named {timer}")]
    TimerNotFound { task: String, timer: String },
    #[error("task {task} already has a timer named {timer}")]
    TimerExists { task: String, timer: String },
    #[error("agent {0} not found")]
    AgentNotFound(String),
    #[error("an agent named {0} already exists")]
    AgentExists(String),
    /// The agent is a server's embedded one: that server process owns its row.
    #[error(
        "agent {name} is the embedded agent of the server process {server}: change it with that \
         server's `kiln serve --agent-name` or `--workers` (0 runs none)"
    )]
    AgentEmbedded { name: String, server: String },
    /// The operating system gave no randomness for a new token.
    #[error("no randomness for a new token: {0}")]
    Randomness(String),
    /// A stored value could not be read back (hand-edited or corrupted database).
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    #[error("cannot create or secure the data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;
