//! The agent's one view of the control plane: leasing runs, heartbeats, log parts, step states,
//! the end of a run, cancels, and the context archives of uploads. Two links implement it — the server's own
//! dispatcher in-process (`kiln serve --workers N`) and `RemoteControl` (the agent's `remote.rs`) over
//! HTTP (`kiln agent run`) — so a run executes through exactly one code path wherever the agent
//! is (issue 12). The agent knows no store: everything it needs comes in the [`Lease`].

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use kiln_task::run_id::RunId;

use crate::agent::{
    Beat, HeldRun, Lease, LeaseRequest, LogAck, LogPart, RunOutcome, StepReport, WatchReply,
};

/// Why the control plane did not take an agent's call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The run's lease was taken away (expired, agent deleted, run ended): write nothing more.
    #[error("the lease on run {run} is gone")]
    Stale { run: RunId },
    /// The call itself is wrong (a gap in the log, an unknown upload, a bad status): retrying it
    /// unchanged cannot succeed.
    #[error("{0}")]
    Refused(String),
    /// The server could not be reached or failed: the same call may succeed later.
    #[error("{0}")]
    Unavailable(String),
}

impl ControlError {
    /// Worth retrying unchanged.
    pub fn is_transient(&self) -> bool {
        matches!(self, ControlError::Unavailable(_))
    }
}

pub type ControlResult<T> = Result<T, ControlError>;

/// The control plane as an agent sees it. Every run-scoped call names the lease's epoch.
pub trait Control: Send + Sync + 'static {
    /// A queued run this agent may take, waiting up to `request.wait` seconds for one.
    fn lease(&self, request: LeaseRequest) -> BoxFuture<'_, ControlResult<Option<Lease>>>;

    /// Extends the lease; tells whether a user cancelled the run.
    fn heartbeat(&self, run: RunId, epoch: i64) -> BoxFuture<'_, ControlResult<Beat>>;

    /// The run's steps start.
    fn running(&self, run: RunId, epoch: i64) -> BoxFuture<'_, ControlResult<()>>;

    /// Stores log bytes at their offset; answers the stored length.
    fn append_log(&self, run: RunId, part: LogPart) -> BoxFuture<'_, ControlResult<LogAck>>;

    /// Replaces the run's steps with `report`'s.
    fn report_steps(&self, run: RunId, report: StepReport) -> BoxFuture<'_, ControlResult<()>>;

    /// Records the run's end and results; the lease ends with it.
    fn finish(&self, run: RunId, outcome: RunOutcome) -> BoxFuture<'_, ControlResult<()>>;

    /// Waits (up to `wait` seconds) until one of `runs` is cancelled or lost.
    fn watch(&self, runs: Vec<HeldRun>, wait: u64) -> BoxFuture<'_, ControlResult<WatchReply>>;

    /// The context archive of upload `id`, as a file: the server's own copy for an in-process
    /// link, else downloaded to `scratch`.
    fn upload<'a>(
        &'a self,
        id: &'a str,
        max_bytes: u64,
        scratch: &'a Path,
    ) -> BoxFuture<'a, ControlResult<PathBuf>>;
}
