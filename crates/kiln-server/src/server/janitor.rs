//! Housekeeping the server does on a timer (once at start, then every minute): log retention
//! (§6.4, 30 days by default), removal of stale uploads (older than a day) and of webhook
//! delivery IDs older than the log retention (git hosts redeliver within hours), and the backstops
//! for runs whose agent vanished (expired leases, also checked every second by the dispatcher)
//! or overran (run timeouts). Runs the janitor ends are announced on the log hub so their
//! followers finish. What dead runs left on an agent's machine is that agent's to remove (the
//! embedded one's too), so the server never depends on the agent.
//!
//! [`Janitor::sweep`] takes "now" as an argument, so tests check retention by passing a time in
//! the future instead of sleeping.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use kiln_task::run_id::RunId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::dispatch::{DispatchError, Dispatcher};
use crate::log_hub::LogHub;
use crate::store::lease::Expired;
use crate::store::{Store, StoreError};
use kiln_api::uploads;

/// How often the janitor sweeps.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Uploads older than this are deleted (a run takes its context when it starts).
pub const UPLOAD_MAX_AGE: TimeDelta = TimeDelta::days(1);

#[derive(Debug, thiserror::Error)]
pub enum JanitorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("cleaning the uploads directory: {0}")]
    Io(#[from] std::io::Error),
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sweep {
    pub log_chunks_deleted: u64,
    pub uploads_deleted: usize,
    pub deliveries_deleted: u64,
    pub expired_leases: Expired,
    pub timed_out: Vec<RunId>,
}

#[derive(Debug, Clone)]
pub struct Janitor {
    pub store: Store,
    pub hub: LogHub,
    pub dispatch: std::sync::Arc<Dispatcher>,
    pub data_dir: PathBuf,
    /// Logs of runs finished longer ago than this are deleted.
    pub log_retention: TimeDelta,
    pub upload_max_age: TimeDelta,
}

impl Janitor {
    /// One pass, as if the time were `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Sweep, JanitorError> {
        let log_chunks_deleted = self.store.expire_logs(now - self.log_retention).await?;
        let deliveries_deleted = self.store.forget_deliveries(now - self.log_retention).await?;
        let expired_leases = self.dispatch.expire(now).await?;
        let timed_out = self.store.expire_timeouts(now).await?;
        for run in &timed_out {
            self.hub.finish(run);
        }
        if !timed_out.is_empty() {
            self.dispatch.changed();
        }
        self.hub.prune();
        let uploads_deleted = self.delete_old_uploads(now).await?;
        Ok(Sweep {
            log_chunks_deleted,
            uploads_deleted,
            deliveries_deleted,
            expired_leases,
            timed_out,
        })
    }

    /// Deletes uploads (and abandoned partial uploads) last modified before `now - max age`.
    async fn delete_old_uploads(&self, now: DateTime<Utc>) -> std::io::Result<usize> {
        let dir = uploads::dir(&self.data_dir);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let cutoff = now - self.upload_max_age;
        let mut deleted = 0;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.ends_with(".tar.gz") || name.ends_with(".tmp")) {
                continue;
            }
            let modified: DateTime<Utc> = entry.metadata().await?.modified()?.into();
            if modified < cutoff {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(deleted)
    }

    /// Sweeps now and then every `interval` (times from `clock`) until `stop` is cancelled. A
    /// failed sweep is logged and the next one tries again.
    pub fn spawn(
        self,
        interval: Duration,
        clock: fn() -> DateTime<Utc>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match self.sweep(clock()).await {
                    Ok(sweep) if sweep != Sweep::default() => tracing::info!(?sweep, "janitor"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "janitor sweep failed"),
                }
            }
        })
    }
}
