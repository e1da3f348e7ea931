//! One held run, from claim to finished record: heartbeats (which carry cancellation and detect
//! a lost lease), preparation, execution with `kiln_worker`, the log, and the final record.
//!
//! The record is written once, at the end, fenced on the claim's epoch: if the lease was taken
//! away meanwhile, someone else already recorded the run and this worker only cleans up.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kiln_worker::image_ref::ImageRef;
use kiln_worker::plan::StepId;
use kiln_worker::{Engine, RunOptions, RunStatus as WorkerStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::run_log::{self, Dependencies};
use crate::store::lease::SERVER_STOPPED_MESSAGE;
use crate::store::{BaseImageRecord, Claim, OutputImage, RunStatus, StoreError};
use crate::trigger::base_image;

use super::log_writer::LogWriter;
use super::prepare::{self, Settings};
use super::spare::Spare;
use super::{Held, Shared};

/// Events the worker may have in flight before it waits for the log writer.
const EVENT_CHANNEL: usize = 256;

/// Runs a claimed run to its finished record.
pub(super) async fn run_claimed(shared: &Shared, claim: Claim, spare: &mut Spare) {
    let Claim { run, epoch } = claim;
    let held = shared.hold(&run.id);
    let done = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat(
        shared.store.clone(),
        run.id.clone(),
        epoch,
        shared.config.lease_ttl,
        held.clone(),
        done.clone(),
    ));
    let run_dir = super::leftovers::context_dir(&shared.config.work_dir(), &run.id);
    let mut log = LogWriter::new(
        shared.store.clone(),
        shared.hub.clone(),
        run.id.clone(),
        epoch,
        held.cancel.clone(),
    );
    log.mask(shared.config.credentials.iter().map(|c| c.password.clone()));

    let (status, error, dependencies) =
        execute(shared, &run, epoch, &run_dir, &held, &mut log, spare).await;

    done.cancel();
    if let Err(e) = heartbeat.await {
        tracing::error!(run = %run.id, "heartbeat task failed: {e}");
    }
    // A stop the user did not ask for is the server going away, whatever the worker saw.
    let (status, error) = if status == RunStatus::Canceled && !held.by_user.load(Ordering::SeqCst) {
        (RunStatus::Error, Some(SERVER_STOPPED_MESSAGE.to_string()))
    } else {
        (status, error)
    };
    let error = error.map(|e| log.mask_text(&e));
    if log.lost().is_none() {
        let images = output_images(&dependencies);
        let report = dependencies.report().map(|r| r.to_string());
        match shared
            .store
            .finish(&run.id, epoch, status, error.as_deref(), &images, report.as_deref())
            .await
        {
            Ok(_) => {
                if let (Some(task), RunStatus::Succeeded, Some(report)) =
                    (&run.task_name, status, dependencies.report())
                {
                    track_base_images(&shared.store, task, &report).await;
                }
            }
            Err(StoreError::StaleLease { .. }) => {
                tracing::warn!(run = %run.id, "run was finished by someone else (lease lost)");
            }
            Err(e) => tracing::error!(run = %run.id, "recording the run's result failed: {e}"),
        }
        shared.hub.finish(&run.id);
    }
    shared.release(&run.id);
    if let Err(e) = tokio::fs::remove_dir_all(&run_dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(run = %run.id, "removing {} failed: {e}", run_dir.display());
    }
}

/// Prepares and executes the run, writing its log; returns its status, error and results.
/// A run that needs a network of its own gets `spare`'s.
async fn execute(
    shared: &Shared,
    run: &crate::store::RunRecord,
    epoch: i64,
    run_dir: &Path,
    held: &Held,
    log: &mut LogWriter,
    spare: &mut Spare,
) -> (RunStatus, Option<String>, Dependencies) {
    let mut dependencies = Dependencies::default();
    let fail = |message: String| (RunStatus::Error, Some(message), Dependencies::default());
    let Some(engine) = &shared.engine else {
        return fail("this server has no workers".to_string());
    };
    let settings = Settings {
        secrets: &shared.secrets,
        default_registry: shared.config.default_registry.as_deref(),
        images: &shared.config.images,
        git_ssh: &shared.config.git_ssh,
        max_context: shared.config.max_context,
    };
    let ready = match prepare::prepare(run, &shared.config.data_dir, run_dir, &settings, log).await
    {
        Ok(ready) => ready,
        Err(e) => {
            let message = without_server_paths(&e.to_string(), &shared.config.data_dir);
            log.plain(&run_log::outcome_line(run.id.as_str(), RunStatus::Error, 0, Some(&message)));
            log.flush().await;
            return fail(message);
        }
    };
    let mut plan = ready.plan;
    // The task's own logins first: they win over the server's for the same registry.
    plan.masked.extend(ready.credentials.iter().map(|c| c.password.clone()));
    plan.credentials.extend(ready.credentials);
    plan.credentials.extend(shared.config.credentials.iter().cloned());
    plan.masked.extend(shared.config.credentials.iter().map(|c| c.password.clone()));
    plan.masked.extend(ready.secrets);
    plan.git_ssh = ready.git_ssh;
    plan.context_limit = Some(shared.config.max_context.bytes);
    log.mask(plan.masked.iter().cloned());
    let order: Vec<StepId> = plan.steps.iter().map(|s| s.id.clone()).collect();
    log.steps(&order);
    // Lines written so far are stored before the steps start, so followers see them first.
    log.flush().await;
    match shared.store.set_status(&run.id, epoch, RunStatus::Running).await {
        Ok(_) => {}
        Err(StoreError::StaleLease { .. }) => held.cancel.cancel(),
        Err(e) => tracing::error!(run = %run.id, "marking the run Running failed: {e}"),
    }

    let mut options = RunOptions::new(shared.config.work_dir());
    options.context_dir = ready.context_dir;
    // The context was unpacked or fetched for this run alone, next to the workspaces.
    options.move_context = true;
    if let Some(update) = crate::queue::trigger_detail(run).image_update_trigger {
        options.refresh_images = update
            .images
            .iter()
            .map(|i| base_image::pull_reference(&i.registry, &i.repository, &i.tag))
            .collect();
    }
    options.timeout = Some(Duration::from_secs(run.timeout_secs));
    if plan.uses_run_network() {
        options.network = spare.take().await;
        // The next run's, made now so it is ready when that run comes; the engine creates it
        // alongside this run's containers without holding them up noticeably.
        spare.refill();
    }
    let (tx, mut rx) = mpsc::channel(EVENT_CHANNEL);
    let (summary, ()) = tokio::join!(
        run_plan(engine, &plan, options, tx, held.cancel.clone()),
        log.consume(&mut rx, &mut dependencies),
    );
    log.end_streams();
    if summary.status == WorkerStatus::Succeeded
        && let Some(report) = dependencies.report()
    {
        log.plain("");
        log.line(run_log::DEPENDENCIES_HEADER);
        log.plain(&run_log::dependency_text(&report));
    }
    let error = summary.error.map(|e| without_server_paths(&e, &shared.config.data_dir));
    log.plain("");
    log.plain(&run_log::outcome_line(
        run.id.as_str(),
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
    plan: &kiln_worker::plan::Plan,
    options: RunOptions,
    events: mpsc::Sender<kiln_worker::Event>,
    cancel: CancellationToken,
) -> kiln_worker::RunSummary {
    kiln_worker::execute(engine, plan, options, events, cancel).await
}

/// §6.2 `outputImages`: every pushed image, split into registry, repository and tag.
fn output_images(dependencies: &Dependencies) -> Vec<OutputImage> {
    dependencies
        .pushed()
        .iter()
        .filter_map(|(image, digest)| {
            let parsed = ImageRef::parse(image).ok()?;
            Some(OutputImage {
                registry: parsed.registry_host().to_string(),
                repository: parsed.repository(),
                tag: parsed.tag.clone().unwrap_or_else(|| "latest".to_string()),
                digest: digest.clone(),
            })
        })
        .collect()
}

/// Keeps the base images of a task's successful build for its base-image trigger (§5.2: a
/// task must run once before its base images are watched).
async fn track_base_images(store: &crate::store::Store, task: &str, report: &serde_json::Value) {
    let images: Vec<BaseImageRecord> = base_image::from_report(report)
        .into_iter()
        .map(|b| BaseImageRecord {
            task_name: task.to_string(),
            registry: b.registry,
            repository: b.repository,
            tag: b.tag,
            kind: b.kind.to_string(),
            digest: b.digest,
            digest_kind: b.digest_kind,
        })
        .collect();
    if let Err(e) = store.set_base_images(task, &images).await {
        tracing::error!(task, "recording the task's base images failed: {e}");
    }
}

/// Extends the lease every third of its length; a cancel request cancels the run, a lost
/// lease cancels it too (nobody may record it from here).
async fn heartbeat(
    store: crate::store::Store,
    run: crate::run_id::RunId,
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
        match store.heartbeat(&run, epoch, ttl).await {
            Ok(beat) if beat.cancel_requested => held.cancel_by_user(),
            Ok(_) => {}
            Err(StoreError::StaleLease { .. }) => {
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
