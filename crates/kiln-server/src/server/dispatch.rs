//! The control plane's side of the agent protocol (issue 12): handing queued runs to agents,
//! and taking their heartbeats, log parts and results into the store. The `/agent/...` HTTP
//! handlers and the embedded agent's in-process link ([`LocalLink`]) both call these functions,
//! so a run is dispatched and recorded the same way wherever its agent runs.
//!
//! Waiting is by notification, never by a poll interval: a lease call waits on [`Dispatcher::queued`]
//! (rung by every submission, trigger and requeue) and a watch on [`Dispatcher::changed`] (rung
//! by every cancel and every run's end), each with the `Notified` future armed before the store
//! is read, so a signal between the read and the wait is not lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use kiln_api::agent::{
    Beat, HeldRun, Lease, LeaseRequest, LogAck, LogPart, MAX_WAIT_SECS, RunOutcome, StepReport,
    WatchReply,
};
use kiln_api::control::{Control, ControlError, ControlResult};
use kiln_api::status::RunStatus;
use kiln_api::task::RegistryLogin;
use kiln_plan::plan::RegistryCredential;
use kiln_task::run_id::RunId;
use tokio::sync::Notify;

use super::git_ssh::GitSshFiles;
use crate::log_hub::LogHub;
use crate::queue::{self, QueueError};
use crate::secret_box::SecretBox;
use crate::store::lease::Claimant;
use crate::store::{BaseImageRecord, LogTime, OutputImage, RunRecord, Store, StoreError};
use kiln_api::uploads::{self, ContextLimit};
use kiln_plan::base_image;

/// How often expired leases are looked for.
pub const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// What the server gives every run it leases, whichever agent takes it.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// `{{.Run.Registry}}` and the registry of quick-build tags that name none.
    pub default_registry: Option<String>,
    /// Logins for every run (after the task's own).
    pub credentials: Vec<RegistryCredential>,
    /// Image aliases.
    pub images: BTreeMap<String, String>,
    /// The server's SSH identity for git contexts.
    pub git_ssh: GitSshFiles,
    /// How large a run's context may be once unpacked or fetched.
    pub max_context: ContextLimit,
}

/// Why a dispatch call failed.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("upload {0} not found (it may have expired)")]
    MissingUpload(String),
}

impl From<DispatchError> for ControlError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Store(StoreError::StaleLease { run, .. }) => ControlError::Stale { run },
            DispatchError::Store(e @ (StoreError::Db(_) | StoreError::Corrupt(_))) => {
                ControlError::Unavailable(e.to_string())
            }
            e => ControlError::Refused(e.to_string()),
        }
    }
}

/// Why a claimed run cannot be leased (it ends as Error with this).
#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error(transparent)]
    Request(#[from] QueueError),
    #[error(transparent)]
    GitSsh(#[from] super::git_ssh::GitSshError),
}

/// Hands runs to agents and records what they report.
pub struct Dispatcher {
    store: Store,
    hub: LogHub,
    secrets: Arc<SecretBox>,
    settings: RunSettings,
    data_dir: PathBuf,
    lease_ttl: Duration,
    queued: Notify,
    changed: Notify,
    /// The server is stopping: waiting calls answer at once.
    stopping: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("lease_ttl", &self.lease_ttl).finish()
    }
}

impl Dispatcher {
    pub fn new(
        store: Store,
        hub: LogHub,
        secrets: Arc<SecretBox>,
        settings: RunSettings,
        data_dir: PathBuf,
        lease_ttl: Duration,
    ) -> Self {
        Self {
            store,
            hub,
            secrets,
            settings,
            data_dir,
            lease_ttl,
            queued: Notify::new(),
            changed: Notify::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The server stops: lease and watch calls stop waiting (agents call again, elsewhere or
    /// once it is back).
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    /// Waits for `signal` until `deadline`; false when the wait ran out or the server stops.
    async fn wait(
        &self,
        signal: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        deadline: tokio::time::Instant,
    ) -> bool {
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, signal) => woken.is_ok(),
            () = self.stopping.cancelled() => false,
        }
    }

    /// The server's own registry logins (`kiln serve --registry-user`), also for the registry
    /// lookups the server makes itself.
    pub fn registry_logins(&self) -> &[RegistryCredential] {
        &self.settings.credentials
    }

    /// A run was queued (or queued again): waiting lease calls look now.
    pub fn queued(&self) {
        self.queued.notify_waiters();
    }

    /// A run was cancelled or ended: waiting watch calls look now.
    pub fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// An agent process starts: whatever an earlier process of the same agent still holds is
    /// its dead predecessor's ([`Store::end_agent_runs`]).
    pub async fn start_session(&self, agent: &str, message: &str) -> Result<(), DispatchError> {
        let ended = self.store.end_agent_runs(agent, message).await?;
        for run in &ended.failed {
            tracing::warn!(run = %run, agent, "run was in flight when its agent stopped");
            self.hub.finish(run);
        }
        if !ended.requeued.is_empty() {
            self.queued();
        }
        if !ended.failed.is_empty() {
            self.changed();
        }
        Ok(())
    }

    /// Records what agent `name` reports as it asks for work (its version, platforms and
    /// capacity, seen now): the registry's view of remote and embedded agents alike.
    pub async fn agent_seen(
        &self,
        name: &str,
        request: &LeaseRequest,
    ) -> Result<(), DispatchError> {
        let capacity = request.capacity.into();
        Ok(self.store.agent_seen(name, &request.version, &request.platforms, capacity).await?)
    }

    /// The oldest run `agent` may take, waiting up to `wait` seconds for one to be queued.
    pub async fn lease(&self, agent: &Claimant, wait: u64) -> Result<Option<Lease>, DispatchError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.min(MAX_WAIT_SECS));
        loop {
            let queued = self.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            while let Some(claim) = self.store.claim_next(agent, self.lease_ttl).await? {
                match self.lease_of(&claim.run, claim.epoch) {
                    Ok(lease) => return Ok(Some(lease)),
                    // A request this server cannot open ends the run; the agent asks again.
                    Err(e) => self.refuse(&claim.run, claim.epoch, &e).await,
                }
            }
            if !self.wait(queued, deadline).await {
                return Ok(None);
            }
        }
    }

    /// Ends a run whose request could not be opened, with the reason as its error.
    async fn refuse(&self, run: &RunRecord, epoch: i64, error: &LeaseError) {
        let message = format!("cannot read the run's request: {error}");
        tracing::error!(run = %run.id, "{message}");
        let outcome = RunOutcome {
            epoch,
            status: RunStatus::Error,
            run_error_message: Some(message),
            output_images: Vec::new(),
            dependencies: None,
        };
        if let Err(e) = self.finish(&run.id, outcome).await {
            tracing::error!(run = %run.id, "recording the refusal failed: {e}");
        }
    }

    /// What an agent needs to run `run`.
    fn lease_of(&self, run: &RunRecord, epoch: i64) -> Result<Lease, LeaseError> {
        let queue::Opened { request, credentials, git_ssh_key } =
            queue::open_request(&self.secrets, run)?;
        let git_ssh = self.settings.git_ssh.identity(git_ssh_key)?;
        let server_logins = self.settings.credentials.iter().map(|c| RegistryLogin {
            login_server: c.registry.clone(),
            username: c.username.clone(),
            password: c.password.clone(),
        });
        Ok(Lease {
            run_id: run.id.to_string(),
            epoch,
            lease_seconds: self.lease_ttl.as_secs().max(1),
            log_length: run.log_len,
            task_name: run.task_name.clone(),
            triggered_by: run.trigger.clone(),
            trigger: queue::trigger_detail(run),
            timeout: run.timeout_secs,
            platform: run.platform.clone(),
            request,
            credentials: credentials.into_iter().chain(server_logins).collect(),
            git_ssh: git_ssh.map(Into::into),
            default_registry: self.settings.default_registry.clone(),
            images: self.settings.images.clone(),
            max_context_bytes: self.settings.max_context.bytes,
        })
    }

    pub async fn heartbeat(&self, run: &RunId, epoch: i64) -> Result<Beat, DispatchError> {
        let beat = self.store.heartbeat(run, epoch, self.lease_ttl).await?;
        Ok(Beat {
            lease_expires_at: beat.lease_expires_at,
            cancel_requested: beat.cancel_requested,
        })
    }

    pub async fn running(&self, run: &RunId, epoch: i64) -> Result<(), DispatchError> {
        self.store.set_status(run, epoch, RunStatus::Running).await?;
        Ok(())
    }

    /// Replaces a held run's steps with the agent's report.
    pub async fn report_steps(
        &self,
        run: &RunId,
        report: &StepReport,
    ) -> Result<(), DispatchError> {
        self.store.set_steps(run, report.epoch, &report.steps).await?;
        Ok(())
    }

    /// Stores a log part and wakes the run's followers.
    pub async fn append_log(&self, run: &RunId, part: &LogPart) -> Result<LogAck, DispatchError> {
        let times: Vec<LogTime> =
            part.times.iter().map(|t| LogTime { offset: t.offset, at: t.at }).collect();
        let chunk =
            self.store.append_log_at(run, part.epoch, part.offset, &part.data, &times).await?;
        let length = chunk.offset + chunk.len;
        if chunk.len > 0 {
            self.hub.publish(run, length);
        }
        Ok(LogAck { length })
    }

    /// Records the run's end; a task's successful build has its base images tracked (§5.2).
    pub async fn finish(&self, run: &RunId, outcome: RunOutcome) -> Result<(), DispatchError> {
        let images: Vec<OutputImage> = outcome.output_images.iter().map(Into::into).collect();
        let report = outcome.dependencies.as_ref().map(ToString::to_string);
        let record = self
            .store
            .finish(
                run,
                outcome.epoch,
                outcome.status,
                outcome.run_error_message.as_deref(),
                &images,
                report.as_deref(),
            )
            .await?;
        self.hub.finish(run);
        self.changed();
        if let (Some(task), RunStatus::Succeeded, Some(report)) =
            (&record.task_name, outcome.status, &outcome.dependencies)
        {
            track_base_images(&self.store, task, report).await;
        }
        Ok(())
    }

    /// Waits up to `wait` seconds until one of `runs` is cancelled or no longer held.
    pub async fn watch(&self, runs: &[HeldRun], wait: u64) -> Result<WatchReply, DispatchError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.min(MAX_WAIT_SECS));
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut reply = WatchReply::default();
            for held in runs {
                let id = RunId::new(held.run_id.as_str());
                match self.store.find_run(&id).await? {
                    Some(r) if r.epoch == held.epoch && !r.status.is_terminal() => {
                        if r.cancel_requested {
                            reply.canceled.push(held.run_id.clone());
                        }
                    }
                    _ => reply.lost.push(held.run_id.clone()),
                }
            }
            if !reply.canceled.is_empty() || !reply.lost.is_empty() {
                return Ok(reply);
            }
            if !self.wait(changed, deadline).await {
                return Ok(reply);
            }
        }
    }

    /// Takes runs from agents whose lease ran out by `now` ([`Store::expire_leases`]), and
    /// tells followers, waiting agents and watchers.
    pub async fn expire(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::store::lease::Expired, DispatchError> {
        let expired = self.store.expire_leases(now).await?;
        for run in &expired.failed {
            self.hub.finish(run);
        }
        if !expired.requeued.is_empty() {
            self.queued();
        }
        if expired != Default::default() {
            self.changed();
        }
        Ok(expired)
    }

    /// Expires leases every [`EXPIRY_INTERVAL`] until `stop`: a lost agent's run is settled
    /// within a second of its lease's end.
    pub fn spawn_expiry(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EXPIRY_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                if let Err(e) = self.expire(chrono::Utc::now()).await {
                    tracing::warn!("expiring leases failed: {e}");
                }
            }
        })
    }

    /// The stored archive of upload `id`.
    pub fn upload_path(&self, id: &str) -> Result<PathBuf, DispatchError> {
        uploads::path(&self.data_dir, id)
            .filter(|p| p.is_file())
            .ok_or_else(|| DispatchError::MissingUpload(id.to_string()))
    }
}

impl From<&kiln_api::Image> for OutputImage {
    fn from(i: &kiln_api::Image) -> Self {
        OutputImage {
            registry: i.registry.clone(),
            repository: i.repository.clone(),
            tag: i.tag.clone(),
            digest: i.digest.clone(),
        }
    }
}

/// Keeps the base images of a task's successful build for its base-image trigger (§5.2: a
/// task must run once before its base images are watched).
async fn track_base_images(store: &Store, task: &str, report: &serde_json::Value) {
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

/// The embedded agent's link: the dispatcher itself, called in-process as `agent` (the agent
/// the server runs with `--workers N`).
pub struct LocalLink {
    pub dispatcher: Arc<Dispatcher>,
    pub agent: Claimant,
}

impl Control for LocalLink {
    fn lease(&self, request: LeaseRequest) -> BoxFuture<'_, ControlResult<Option<Lease>>> {
        Box::pin(async move {
            // The registry shows the embedded agent but is not its authority (it has no token):
            // one the server did not register still leases.
            match self.dispatcher.agent_seen(&self.agent.name, &request).await {
                Err(DispatchError::Store(StoreError::AgentNotFound(_))) | Ok(()) => {}
                Err(e) => return Err(e.into()),
            }
            let agent = Claimant { platforms: request.platforms, ..self.agent.clone() };
            Ok(self.dispatcher.lease(&agent, request.wait).await?)
        })
    }

    fn heartbeat(&self, run: RunId, epoch: i64) -> BoxFuture<'_, ControlResult<Beat>> {
        Box::pin(async move { Ok(self.dispatcher.heartbeat(&run, epoch).await?) })
    }

    fn running(&self, run: RunId, epoch: i64) -> BoxFuture<'_, ControlResult<()>> {
        Box::pin(async move { Ok(self.dispatcher.running(&run, epoch).await?) })
    }

    fn append_log(&self, run: RunId, part: LogPart) -> BoxFuture<'_, ControlResult<LogAck>> {
        Box::pin(async move { Ok(self.dispatcher.append_log(&run, &part).await?) })
    }

    fn report_steps(&self, run: RunId, report: StepReport) -> BoxFuture<'_, ControlResult<()>> {
        Box::pin(async move { Ok(self.dispatcher.report_steps(&run, &report).await?) })
    }

    fn finish(&self, run: RunId, outcome: RunOutcome) -> BoxFuture<'_, ControlResult<()>> {
        Box::pin(async move { Ok(self.dispatcher.finish(&run, outcome).await?) })
    }

    fn watch(&self, runs: Vec<HeldRun>, wait: u64) -> BoxFuture<'_, ControlResult<WatchReply>> {
        Box::pin(async move { Ok(self.dispatcher.watch(&runs, wait).await?) })
    }

    fn upload<'a>(
        &'a self,
        id: &'a str,
        _max_bytes: u64,
        _scratch: &'a Path,
    ) -> BoxFuture<'a, ControlResult<PathBuf>> {
        Box::pin(async move { Ok(self.dispatcher.upload_path(id)?) })
    }
}
