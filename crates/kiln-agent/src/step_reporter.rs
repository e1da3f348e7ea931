//! A held run's steps on their way to the control plane: the [`StepBoard`] kept from the worker's
//! events, reported whole (fenced on the lease epoch) by a task of its own whenever it changed,
//! so consuming events never waits for the network. A board not sent yet is superseded by a
//! newer one: only the latest matters, and a report replaces the one before on the server.
//!
//! An unreachable server is retried with backoff for as long as the lease may live. Anything
//! else ends the reporting only: the steps are a view of the run, and the log and the final
//! record are what lose the lease ([`crate::log_writer`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kiln_api::agent::StepReport;
use kiln_api::control::{Control, ControlError};
use kiln_api::steps::{Step, StepBoard};
use kiln_plan::event::Event;
use kiln_task::run_id::RunId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Backoff;

/// Reports one held run's steps.
pub(crate) struct StepReporter {
    board: StepBoard,
    latest: watch::Sender<Vec<Step>>,
    sender: JoinHandle<()>,
}

impl StepReporter {
    /// Starts reporting `board` (every step pending) for the lease `epoch` on `run`.
    pub(crate) fn new(
        control: Arc<dyn Control>,
        run: RunId,
        epoch: i64,
        patience: Duration,
        board: StepBoard,
    ) -> Self {
        let (latest, boards) = watch::channel(board.steps().to_vec());
        let sender = tokio::spawn(send_all(control, run, epoch, patience, boards));
        Self { board, latest, sender }
    }

    /// Notes a worker event; a changed board is reported.
    pub(crate) fn observe(&mut self, event: &Event) {
        if self.board.observe(event, Utc::now()) {
            self.latest.send_replace(self.board.steps().to_vec());
        }
    }

    /// Waits until the latest board is reported (or cannot be), so the run's final record,
    /// written next, comes with its steps' final states.
    pub(crate) async fn close(self) {
        drop(self.latest);
        if let Err(e) = self.sender.await {
            tracing::error!("the step reporter failed: {e}");
        }
    }
}

/// Sends each board the channel holds (the first at once) until the reporter closes it.
async fn send_all(
    control: Arc<dyn Control>,
    run: RunId,
    epoch: i64,
    patience: Duration,
    mut boards: watch::Receiver<Vec<Step>>,
) {
    loop {
        let steps = boards.borrow_and_update().clone();
        if !send(control.as_ref(), &run, StepReport { epoch, steps }, patience).await {
            return;
        }
        if boards.changed().await.is_err() {
            return;
        }
    }
}

/// One report, until it is stored (true) or cannot be.
async fn send(control: &dyn Control, run: &RunId, report: StepReport, patience: Duration) -> bool {
    let give_up = tokio::time::Instant::now() + patience;
    let mut backoff = Backoff::default();
    loop {
        match control.report_steps(run.clone(), report.clone()).await {
            Ok(()) => return true,
            Err(e @ ControlError::Unavailable(_)) if tokio::time::Instant::now() < give_up => {
                tracing::warn!(run = %run, "reporting the run's steps failed (retrying): {e}");
                backoff.wait().await;
            }
            Err(e) => {
                tracing::warn!(run = %run, "the run's steps are no longer reported: {e}");
                return false;
            }
        }
    }
}
