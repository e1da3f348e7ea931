//! One held run, from claim to finished record: heartbeats (which carry cancellation and detect
//! a lost lease), preparation, execution with `kiln_worker`, the log, the steps' states, and the
//! final record.
//!
//! The record is written once, at the end, fenced on the claim's epoch: if the lease was taken
//! away meanwhile, someone else already recorded the run and this worker only cleans up.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kiln_api::Image;
use kiln_api::agent::{Lease, RunOutcome};
use kiln_api::control::{Control, ControlError};
use kiln_api::status::RunStatus;
use kiln_api::steps::StepBoard;
use kiln_plan::event::RunStatus as WorkerStatus;
use kiln_plan::image_ref::ImageRef;
use kiln_plan::plan::StepId;
use kiln_task::run_id::RunId;
use kiln_worker::{Engine, RunOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::log_writer::LogWriter;
use super::prepare;
use super::spare::Spare;
use super::spool::Spool;
use super::step_reporter::StepReporter;
use super::{Backoff, Held, Shared};
use kiln_api::run_log::{self, Dependencies};
use kiln_plan::base_image;

/// Events the worker may have in flight before it waits for the log writer.
const EVENT_CHANNEL: usize = 256;

/// The run's log spool file, in the run's directory (removed with it).
const SPOOL_FILE: &str = "log.spool";

/// Runs a leased run to its finished record.
pub(super) async fn run_leased(shared: &Shared, lease: Lease, spare: &mut Spare) {
    let run = RunId::new(lease.run_id.as_str());
    let epoch = lease.epoch;
    let ttl = lease_ttl(&lease);
    let held = shared.hold(&run, epoch);
    let done = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat(
        shared.control.clone(),
        run.clone(),
        epoch,
        ttl,
        held.clone(),
        done.clone(),
    ));
    let run_dir = super::leftovers::context_dir(&shared.config.work_dir(), &run);
    let spool = Spool::new(lease.log_length, shared.config.log_spool, run_dir.join(SPOOL_FILE));
    let mut log =
        LogWriter::new(shared.control.clone(), run.clone(), epoch, spool, ttl, held.cancel.clone());

    let (status, error, dependencies) =
        execute(shared, &lease, &run, &run_dir, &held, &mut log, spare).await;

    done.cancel();
    if let Err(e) = heartbeat.await {
        tracing::error!(run = %run, "heartbeat task failed: {e}");
    }
    // A stop the user did not ask for is the agent going away, whatever the worker saw.
    let (status, error) = if status == RunStatus::Canceled && !held.by_user.load(Ordering::SeqCst) {
        (RunStatus::Error, Some(shared.config.stopped_message.clone()))
    } else {
        (status, error)
    };
    let error = error.map(|e| log.mask_text(&e));
    if log.lost().is_none() {
        let outcome = RunOutcome {
            epoch,
            status,
            run_error_message: error,
            output_images: output_images(&dependencies),
            dependencies: dependencies.report(),
        };
        finish(shared.control.as_ref(), &run, outcome, ttl).await;
    }
    log.close().await;
    shared.release(&run);
    if let Err(e) = tokio::fs::remove_dir_all(&run_dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(run = %run, "removing {} failed: {e}", run_dir.display());
    }
}

/// How long the lease lasts without a heartbeat: how long a write may be retried.
fn lease_ttl(lease: &Lease) -> Duration {
    Duration::from_secs(lease.lease_seconds.max(1))
}

/// Records the run's end, resending while the control plane is unreachable for as long as the
/// lease can still be alive.
async fn finish(control: &dyn Control, run: &RunId, outcome: RunOutcome, patience: Duration) {
    let give_up = tokio::time::Instant::now() + patience;
    let mut backoff = Backoff::default();
    loop {
        match control.finish(run.clone(), outcome.clone()).await {
            Ok(()) => return,
            Err(ControlError::Stale { .. }) => {
                return tracing::warn!(run = %run, "run was finished by someone else (lease lost)");
            }
            Err(e) if e.is_transient() && tokio::time::Instant::now() < give_up => {
                tracing::warn!(run = %run, "recording the run's result failed (retrying): {e}");
                backoff.wait().await;
            }
            Err(e) => return tracing::error!(run = %run, "recording the run's result failed: {e}"),
        }
    }
}

/// Prepares and executes the run, writing its log; returns its status, error and results.
/// A run that needs a network of its own gets `spare`'s.
async fn execute(
    shared: &Shared,
    lease: &Lease,
    run: &RunId,
    run_dir: &Path,
    held: &Held,
    log: &mut LogWriter,
    spare: &mut Spare,
) -> (RunStatus, Option<String>, Dependencies) {
    let mut dependencies = Dependencies::default();
    let fail = |message: String| (RunStatus::Error, Some(message), Dependencies::default());
    let data_dir = &shared.config.data_dir;
    let ready = match prepare::prepare(lease, shared.control.as_ref(), run_dir, log).await {
        Ok(ready) => ready,
        Err(e) => {
            let message = without_server_paths(&e.to_string(), data_dir);
            log.plain(&run_log::outcome_line(run.as_str(), RunStatus::Error, 0, Some(&message)));
            log.flush().await;
            return fail(message);
        }
    };
    let mut plan = ready.plan;
    // The task's own logins come first in the lease: they win over the server's.
    plan.masked.extend(ready.credentials.iter().map(|c| c.password.clone()));
    plan.credentials.extend(ready.credentials);
    plan.masked.extend(ready.secrets);
    plan.git_ssh = ready.git_ssh;
    plan.context_limit = Some(lease.max_context_bytes);
    // The record's platform (the request's, else the default): what the dispatcher matched
    // with this agent's, so what its steps must run as.
    plan.platform = Some(lease.platform.clone());
    log.mask(plan.masked.iter().cloned());
    let order: Vec<StepId> = plan.steps.iter().map(|s| s.id.clone()).collect();
    log.steps(&order);
    let board = StepBoard::new(plan.steps.iter().map(|s| (&s.id, s.depends_on.as_slice())));
    let control = shared.control.clone();
    let mut steps = StepReporter::new(control, run.clone(), lease.epoch, lease_ttl(lease), board);
    // Lines written so far are stored before the steps start, so followers see them first.
    log.flush().await;
    match shared.control.running(run.clone(), lease.epoch).await {
        Ok(()) => {}
        Err(ControlError::Stale { .. }) => held.cancel.cancel(),
        Err(e) => tracing::error!(run = %run, "marking the run Running failed: {e}"),
    }

    let mut options = RunOptions::new(shared.config.work_dir());
    options.context_dir = ready.context_dir;
    // The context was unpacked or fetched for this run alone, next to the workspaces.
    options.move_context = true;
    options.lookahead = shared.config.lookahead;
    if let Some(update) = &lease.trigger.image_update_trigger {
        options.refresh_images = update
            .images
            .iter()
            .map(|i| base_image::pull_reference(&i.registry, &i.repository, &i.tag))
            .collect();
    }
    options.timeout = Some(Duration::from_secs(lease.timeout));
    // A task's own setting (which only an admin may widen to `host`) over the machine's default.
    options.docker_api = lease.request.docker_api().unwrap_or(shared.config.docker_api);
    if plan.uses_run_network() {
        options.network = spare.take().await;
        // The next run's, made now so it is ready when that run comes; the engine creates it
        // alongside this run's containers without holding them up noticeably.
        spare.refill();
    }
    let (tx, mut rx) = mpsc::channel(EVENT_CHANNEL);
    let (summary, ()) = tokio::join!(
        run_plan(&shared.engine, &plan, options, tx, held.cancel.clone()),
        log.consume(&mut rx, &mut dependencies, &mut steps),
    );
    steps.close().await;
    log.end_streams();
    if summary.status == WorkerStatus::Succeeded
        && let Some(report) = dependencies.report()
    {
        log.plain("");
        log.line(run_log::DEPENDENCIES_HEADER);
        log.plain(&run_log::dependency_text(&report));
    }
    let error = summary.error.map(|e| without_server_paths(&e, data_dir));
    log.plain("");
    log.plain(&run_log::outcome_line(
        run.as_str(),
        summary.status.into(),
        summary.elapsed.as_secs(),
        error.as_deref(),
    ));
    log.flush().await;
    (summary.status.into(), error, dependencies)
}

/// A run's error as its readers see it (the log, `runErrorMessage`): a path under the server's
/// data directory (a workspace, a download directory) is shown relative to it, since where the
/// server keeps its files is the operator's business, not every API client's.
fn without_server_paths(message: &str, data_dir: &Path) -> String {
    match data_dir.to_str() {
        // Only as a whole path: `<dir>/…` or `<dir>` itself.
        Some(dir) if data_dir.is_absolute() => {
            let under = format!("{}/", dir.trim_end_matches('/'));
            message.replace(&under, "<data dir>/")
        }
        _ => message.to_string(),
    }
}

/// `kiln_worker::execute`, owning its sender so the log writer sees the channel close.
async fn run_plan(
    engine: &Engine,
    plan: &kiln_plan::plan::Plan,
    options: RunOptions,
    events: mpsc::Sender<kiln_plan::event::Event>,
    cancel: CancellationToken,
) -> kiln_worker::RunSummary {
    kiln_worker::execute(engine, plan, options, events, cancel).await
}

/// §6.2 `outputImages`: every pushed image, split into registry, repository and tag.
fn output_images(dependencies: &Dependencies) -> Vec<Image> {
    dependencies
        .pushed()
        .iter()
        .filter_map(|(image, digest)| {
            let parsed = ImageRef::parse(image).ok()?;
            Some(Image {
                registry: parsed.registry_host().to_string(),
                repository: parsed.repository(),
                tag: parsed.tag.clone().unwrap_or_else(|| "latest".to_string()),
                digest: digest.clone(),
            })
        })
        .collect()
}

/// Extends the lease every third of its length; a cancel request cancels the run, a lost
/// lease cancels it too (nobody may record it from here). Cancels usually arrive sooner,
/// through the agent's watch call.
async fn heartbeat(
    control: std::sync::Arc<dyn Control>,
    run: RunId,
    epoch: i64,
    ttl: Duration,
    held: Held,
    done: CancellationToken,
) {
    // A zero TTL (misconfiguration) must not turn this into a busy loop.
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match control.heartbeat(run.clone(), epoch).await {
            Ok(beat) if beat.cancel_requested => held.cancel_by_user(),
            Ok(_) => {}
            Err(ControlError::Stale { .. }) => {
                tracing::warn!(run = %run, "lease lost; stopping the run");
                held.cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(run = %run, "heartbeat failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_errors_name_no_server_paths() {
        let data = Path::new("/var/lib/kiln");
        let message = "cannot prepare /var/lib/kiln/work/kiln-ka1/ctx for the download: denied";
        assert_eq!(
            without_server_paths(message, data),
            "cannot prepare <data dir>/work/kiln-ka1/ctx for the download: denied"
        );
        assert_eq!(without_server_paths("exit status 1", data), "exit status 1");
    }
}
