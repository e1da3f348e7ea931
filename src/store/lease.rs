//! Leases: how a worker takes a queued run, keeps it (heartbeats), and reports into it, fenced by
//! an epoch (issue 5: "a worker whose lease was taken away cannot report into the run any more").
//!
//! Every claim and every expiry bumps the run's `epoch`. A worker's writes (`set_status`,
//! `append_log`, `finish`, `heartbeat`) name the epoch of its claim and only apply while the run
//! still has that epoch and is still Started/Running; otherwise they fail with
//! [`StoreError::StaleLease`]. Each fenced write is one conditional `UPDATE`, so the check and the
//! write cannot be separated by another writer.
//!
//! PostgreSQL: `claim_next`'s subquery gets `FOR UPDATE SKIP LOCKED`; the rest is the same SQL.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::run_id::RunId;

use super::runs::{OutputImage, RunRecord, RunRow};
use super::status::RunStatus;
use super::{
    Db, Store, StoreError, StoreResult, duration_millis, from_millis, now_millis, on_db, to_millis,
};

/// The error message of a run that was in flight when its lease expired or the server restarted.
pub const SERVER_STOPPED_MESSAGE: &str = "the server stopped during the run";

/// A run a worker now holds, and the epoch its writes must name.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub run: RunRecord,
    pub epoch: i64,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub lease_expires_at: DateTime<Utc>,
    /// `cancel_run` was called: stop the run and finish it as Canceled.
    pub cancel_requested: bool,
}

impl Store {
    /// Takes the oldest queued run for `worker_id`: Queued → Started, epoch + 1, lease until
    /// `now + lease_ttl`. A single statement, so two claimers never get the same run. `None` when
    /// nothing is queued.
    pub async fn claim_next(
        &self,
        worker_id: &str,
        lease_ttl: Duration,
    ) -> StoreResult<Option<Claim>> {
        let now = now_millis();
        let expires = now.saturating_add(duration_millis(lease_ttl));
        // PostgreSQL: a claimer skips the queued row another one has locked, instead of waiting
        // for it and then finding it taken.
        let skip_locked = match self.db() {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE runs SET status = 'Started', epoch = epoch + 1, lease_owner = $1,
                lease_expires_at = $2, started_at = $3, updated_at = $3
             WHERE id = (SELECT id FROM runs WHERE status = 'Queued' ORDER BY counter
                LIMIT 1{skip_locked})
               AND status = 'Queued'
             RETURNING *"
        );
        let row: Option<RunRow> = on_db!(self.db(), |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(worker_id)
                .bind(expires)
                .bind(now)
                .fetch_optional(pool)
                .await
        })?;
        match row {
            Some(row) => {
                let run = RunRecord::try_from(row)?;
                Ok(Some(Claim { epoch: run.epoch, run }))
            }
            None => Ok(None),
        }
    }

    /// Extends the lease to now + `ttl`. Fenced.
    pub async fn heartbeat(
        &self,
        run: &RunId,
        epoch: i64,
        ttl: Duration,
    ) -> StoreResult<Heartbeat> {
        let expires = now_millis().saturating_add(duration_millis(ttl));
        let row: Option<(i64, bool)> = on_db!(self.db(), |pool| sqlx::query_as(
            "UPDATE runs SET lease_expires_at = $3
             WHERE id = $1 AND epoch = $2 AND status IN ('Started', 'Running')
             RETURNING lease_expires_at, cancel_requested",
        )
        .bind(run.as_str())
        .bind(epoch)
        .bind(expires)
        .fetch_optional(pool)
        .await)?;
        match row {
            Some((expires, cancel_requested)) => {
                Ok(Heartbeat { lease_expires_at: from_millis(expires)?, cancel_requested })
            }
            None => Err(self.fence_error(run, epoch).await),
        }
    }

    /// Moves a held run to a non-terminal status (in practice Started → Running). Terminal
    /// statuses go through [`Store::finish`]. Fenced.
    pub async fn set_status(
        &self,
        run: &RunId,
        epoch: i64,
        status: RunStatus,
    ) -> StoreResult<RunRecord> {
        if status != RunStatus::Running {
            let reason = if status.is_terminal() {
                format!("status {status} is terminal: use finish")
            } else {
                format!("a worker cannot set status {status}")
            };
            return Err(StoreError::InvalidTransition { run: run.clone(), reason });
        }
        let row: Option<RunRow> = on_db!(self.db(), |pool| sqlx::query_as(
            "UPDATE runs SET status = $3, updated_at = $4
             WHERE id = $1 AND epoch = $2 AND status IN ('Started', 'Running')
             RETURNING *",
        )
        .bind(run.as_str())
        .bind(epoch)
        .bind(status.as_str())
        .bind(now_millis())
        .fetch_optional(pool)
        .await)?;
        self.fenced(row, run, epoch).await
    }

    /// Ends a held run with a terminal `status`, its error message, the images it pushed and its
    /// dependency report (opaque JSON); releases the lease. Fenced.
    pub async fn finish(
        &self,
        run: &RunId,
        epoch: i64,
        status: RunStatus,
        error: Option<&str>,
        output_images: &[OutputImage],
        dependencies: Option<&str>,
    ) -> StoreResult<RunRecord> {
        if !status.is_terminal() {
            let reason = format!("finish needs a terminal status, not {status}");
            return Err(StoreError::InvalidTransition { run: run.clone(), reason });
        }
        let images = serde_json::to_string(output_images)
            .map_err(|e| StoreError::Corrupt(format!("output images: {e}")))?;
        let row: Option<RunRow> = on_db!(self.db(), |pool| sqlx::query_as(
            "UPDATE runs SET status = $3, error_message = $4, output_images = $5,
                dependencies = $6, finished_at = $7, updated_at = $7, lease_owner = NULL,
                lease_expires_at = NULL
             WHERE id = $1 AND epoch = $2 AND status IN ('Started', 'Running')
             RETURNING *",
        )
        .bind(run.as_str())
        .bind(epoch)
        .bind(status.as_str())
        .bind(error)
        .bind(images)
        .bind(dependencies)
        .bind(now_millis())
        .fetch_optional(pool)
        .await)?;
        let record = self.fenced(row, run, epoch).await?;
        self.notify(&super::StoreEvent::Ended(run.clone())).await;
        Ok(record)
    }

    /// Every Started/Running run whose lease expired at or before `now` becomes Error with
    /// [`SERVER_STOPPED_MESSAGE`]; its epoch is bumped, so the old holder's writes fail from
    /// here on. Returns the IDs, oldest first.
    pub async fn expire_leases(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunId>> {
        let ids: Vec<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE runs SET status = 'Error', error_message = $2, epoch = epoch + 1,
                finished_at = $1, updated_at = $1, lease_owner = NULL, lease_expires_at = NULL
             WHERE status IN ('Started', 'Running') AND lease_expires_at <= $1
             RETURNING id",
        )
        .bind(to_millis(now))
        .bind(SERVER_STOPPED_MESSAGE)
        .fetch_all(pool)
        .await)?;
        Ok(self.sorted_ids(ids))
    }

    /// Every Started/Running run that has been going for its `timeout_secs` at `now` becomes
    /// Timeout ("run timed out after N seconds"); fenced like [`Store::expire_leases`]. The
    /// server's backstop for a worker that does not enforce the run timeout itself.
    pub async fn expire_timeouts(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunId>> {
        let ids: Vec<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE runs SET status = 'Timeout',
                error_message = 'run timed out after ' || timeout_secs || ' seconds',
                epoch = epoch + 1, finished_at = $1, updated_at = $1, lease_owner = NULL,
                lease_expires_at = NULL
             WHERE status IN ('Started', 'Running') AND started_at + timeout_secs * 1000 <= $1
             RETURNING id",
        )
        .bind(to_millis(now))
        .fetch_all(pool)
        .await)?;
        Ok(self.sorted_ids(ids))
    }

    /// What a restarted server does first: every Started/Running run, whatever its lease,
    /// becomes Error with [`SERVER_STOPPED_MESSAGE`] (its worker died with the old server).
    /// Fenced like [`Store::expire_leases`].
    pub async fn fail_in_flight_runs(&self) -> StoreResult<Vec<RunId>> {
        let ids: Vec<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE runs SET status = 'Error', error_message = $2, epoch = epoch + 1,
                finished_at = $1, updated_at = $1, lease_owner = NULL, lease_expires_at = NULL
             WHERE status IN ('Started', 'Running')
             RETURNING id",
        )
        .bind(now_millis())
        .bind(SERVER_STOPPED_MESSAGE)
        .fetch_all(pool)
        .await)?;
        Ok(self.sorted_ids(ids))
    }

    /// IDs ordered by their counter (RETURNING order is unspecified).
    fn sorted_ids(&self, ids: Vec<String>) -> Vec<RunId> {
        let mut ids: Vec<RunId> = ids.into_iter().map(RunId::new).collect();
        ids.sort_by_key(|id| (self.prefix().counter_of(id), id.clone()));
        ids
    }

    /// Why a fenced write matched no row: the run does not exist, or the epoch is stale / the run
    /// is no longer held.
    /// The run a fenced `UPDATE … RETURNING *` returned, or why it matched nothing.
    async fn fenced(&self, row: Option<RunRow>, run: &RunId, epoch: i64) -> StoreResult<RunRecord> {
        match row {
            Some(row) => row.try_into(),
            None => Err(self.fence_error(run, epoch).await),
        }
    }

    pub(crate) async fn fence_error(&self, run: &RunId, epoch: i64) -> StoreError {
        match self.find_run(run).await {
            Ok(Some(current)) => StoreError::StaleLease {
                run: run.clone(),
                epoch,
                current: current.epoch,
                status: current.status,
            },
            Ok(None) => StoreError::NotFound(run.clone()),
            Err(e) => e,
        }
    }
}
