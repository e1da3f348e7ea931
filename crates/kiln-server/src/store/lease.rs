//! Leases: how a worker takes a queued run, keeps it (heartbeats), and reports into it, fenced by
//! an epoch (issue 5: "a worker whose lease was taken away cannot report into the run any more").
//!
//! Every claim and every expiry bumps the run's `epoch`. A worker's writes (`set_status`,
//! `set_steps`, `append_log`, `finish`, `heartbeat`) name the epoch of its claim and only apply while the run
//! still has that epoch and is still Started/Running; otherwise they fail with
//! [`StoreError::StaleLease`]. Each fenced write is one conditional `UPDATE`, so the check and the
//! write cannot be separated by another writer.
//!
//! Both backends run the same SQL: a claim is a compare-and-set per candidate run, which needs no
//! row locks held across statements (and so no `FOR UPDATE SKIP LOCKED`) on PostgreSQL either.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_api::status::RunStatus;
use kiln_task::run_id::RunId;

use super::runs::{OutputImage, RunRecord, RunRow};
use super::{
    Store, StoreError, StoreResult, duration_millis, from_millis, now_millis, on_db, to_millis,
};

/// The error message of a run that was in flight when its lease expired or the server restarted.
pub const SERVER_STOPPED_MESSAGE: &str = "the server stopped during the run";

/// Queued runs read per round of [`Store::claim_next`].
const CLAIM_PAGE: i64 = 64;

/// Who claims: an agent's name, pool and platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub name: String,
    pub pool: Option<String>,
    /// `os/arch[/variant]`.
    pub platforms: Vec<String>,
}

impl Claimant {
    /// A run asking for `pool` (`None`: any agent) on `platform` is this agent's to take.
    pub fn may_run(&self, platform: &str, pool: Option<&str>) -> bool {
        self.serves(pool)
            && self.platforms.iter().any(|p| kiln_plan::platform::matches(p, platform))
    }

    /// A run asking for `pool` may come to this agent, whatever its platform.
    fn serves(&self, pool: Option<&str>) -> bool {
        pool.is_none_or(|p| self.pool.as_deref() == Some(p))
    }
}

/// Why none of `agents` (every registered agent, with the platforms it last declared) may take
/// a run of `pool` on `platform`, or `None` when one may.
///
/// Such a run is not refused: the agent it needs may be starting, restarting or about to be
/// registered, and a timer or webhook that fires at night should find the run queued in the
/// morning. That is what GitLab (a "stuck" job naming the tags no runner has) and Woodpecker
/// (pending until an agent with the labels connects) do; ACR's pools are fixed machines, so it
/// has no such case. The reason says which platforms there are, so a typo or a missing
/// emulator is visible without reading agent logs.
pub fn no_agent_reason(pool: Option<&str>, platform: &str, agents: &[Claimant]) -> Option<String> {
    if agents.iter().any(|a| a.may_run(platform, pool)) {
        return None;
    }
    let in_pool = pool.map(|p| format!(" in pool {p}")).unwrap_or_default();
    let serving: Vec<&Claimant> = agents.iter().filter(|a| a.serves(pool)).collect();
    let mut declared: Vec<&str> =
        serving.iter().flat_map(|a| &a.platforms).map(String::as_str).collect();
    declared.sort_unstable();
    declared.dedup();
    Some(if serving.is_empty() {
        format!("no agent is registered{in_pool}")
    } else if declared.is_empty() {
        format!("no agent{in_pool} has connected yet")
    } else {
        format!("no agent{in_pool} runs {platform} (they run {})", declared.join(", "))
    })
}

impl From<&super::AgentRecord> for Claimant {
    fn from(agent: &super::AgentRecord) -> Self {
        Claimant {
            name: agent.name.clone(),
            pool: agent.pool.clone(),
            platforms: agent.platforms.clone(),
        }
    }
}

#[cfg(test)]
impl Claimant {
    /// An agent of no pool on linux/amd64.
    pub(crate) fn amd64(name: &str) -> Claimant {
        Claimant { name: name.to_string(), pool: None, platforms: vec!["linux/amd64".to_string()] }
    }
}

/// A run a worker now holds, and the epoch its writes must name.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub run: RunRecord,
    pub epoch: i64,
}

/// Runs taken from an agent that stopped responding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    /// Had not started a step: queued again.
    pub requeued: Vec<RunId>,
    /// Had started steps: ended as Error.
    pub failed: Vec<RunId>,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub lease_expires_at: DateTime<Utc>,
    /// `cancel_run` was called: stop the run and finish it as Canceled.
    pub cancel_requested: bool,
}

impl Store {
    /// Takes the oldest queued run `agent` may run (its pool, its platforms): Queued → Started,
    /// epoch + 1, lease until `now + lease_ttl`, the agent named in the record. `None` when
    /// nothing it may run is queued.
    ///
    /// Candidates are read oldest first and each is taken with a compare-and-swap `UPDATE …
    /// WHERE status = 'Queued'`, so two claimers (on one server or on several sharing a
    /// database) never get the same run and neither waits for the other's lock; a claimer
    /// that loses a race goes on to the next candidate.
    pub async fn claim_next(
        &self,
        agent: &Claimant,
        lease_ttl: Duration,
    ) -> StoreResult<Option<Claim>> {
        let mut after: i64 = -1;
        loop {
            let candidates: Vec<(String, i64, String, Option<String>)> =
                on_db!(self.db(), |pool| sqlx::query_as(
                    "SELECT id, counter, platform, agent_pool FROM runs
                 WHERE status = 'Queued' AND counter > $1 ORDER BY counter LIMIT $2",
                )
                .bind(after)
                .bind(CLAIM_PAGE)
                .fetch_all(pool)
                .await)?;
            let Some((_, last, _, _)) = candidates.last() else { return Ok(None) };
            after = *last;
            for (id, _, platform, pool) in &candidates {
                if !agent.may_run(platform, pool.as_deref()) {
                    continue;
                }
                let now = now_millis();
                let expires = now.saturating_add(duration_millis(lease_ttl));
                let row: Option<RunRow> = on_db!(self.db(), |pool| sqlx::query_as(
                    "UPDATE runs SET status = 'Started', epoch = epoch + 1, lease_owner = $2,
                        agent_name = $2, lease_expires_at = $3, started_at = $4, updated_at = $4
                     WHERE id = $1 AND status = 'Queued'
                     RETURNING *",
                )
                .bind(id)
                .bind(&agent.name)
                .bind(expires)
                .bind(now)
                .fetch_optional(pool)
                .await)?;
                if let Some(row) = row {
                    let run = RunRecord::try_from(row)?;
                    self.runs_changed(std::slice::from_ref(&run.id));
                    return Ok(Some(Claim { epoch: run.epoch, run }));
                }
            }
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
        let record = self.fenced(row, run, epoch).await?;
        self.runs_changed(std::slice::from_ref(run));
        Ok(record)
    }

    /// Replaces a held run's steps with an agent's report of all of them. Fenced.
    pub async fn set_steps(
        &self,
        run: &RunId,
        epoch: i64,
        steps: &[kiln_api::steps::Step],
    ) -> StoreResult<RunRecord> {
        let steps = serde_json::to_string(steps)
            .map_err(|e| StoreError::Corrupt(format!("steps of run {run}: {e}")))?;
        let row: Option<RunRow> = on_db!(self.db(), |pool| sqlx::query_as(
            "UPDATE runs SET steps = $3, updated_at = $4
             WHERE id = $1 AND epoch = $2 AND status IN ('Started', 'Running')
             RETURNING *",
        )
        .bind(run.as_str())
        .bind(epoch)
        .bind(&steps)
        .bind(now_millis())
        .fetch_optional(pool)
        .await)?;
        let record = self.fenced(row, run, epoch).await?;
        self.runs_changed(std::slice::from_ref(run));
        Ok(record)
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
        self.runs_changed(std::slice::from_ref(run));
        self.notify(&super::StoreEvent::Ended(run.clone())).await;
        Ok(record)
    }

    /// Runs whose lease expired at or before `now` (their agent stopped responding): one that
    /// had not started a step (Started) is queued again for another agent; one that had
    /// (Running) becomes Error, "agent NAME stopped responding during the run" — its pushes may
    /// have happened, so it is never run twice silently. Either way the epoch is bumped, so the
    /// old holder's writes fail from here on.
    pub async fn expire_leases(&self, now: DateTime<Utc>) -> StoreResult<Expired> {
        let now = to_millis(now);
        let requeued: Vec<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE runs SET status = 'Queued', epoch = epoch + 1, started_at = NULL,
                updated_at = $1, lease_owner = NULL, lease_expires_at = NULL, agent_name = NULL,
                steps = NULL
             WHERE status = 'Started' AND lease_expires_at <= $1
             RETURNING id",
        )
        .bind(now)
        .fetch_all(pool)
        .await)?;
        let failed: Vec<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE runs SET status = 'Error',
                error_message = 'agent ' || COALESCE(agent_name, lease_owner, '') ||
                    ' stopped responding during the run',
                epoch = epoch + 1, finished_at = $1, updated_at = $1, lease_owner = NULL,
                lease_expires_at = NULL
             WHERE status = 'Running' AND lease_expires_at <= $1
             RETURNING id",
        )
        .bind(now)
        .fetch_all(pool)
        .await)?;
        self.announce(Expired {
            requeued: self.sorted_ids(requeued),
            failed: self.sorted_ids(failed),
        })
        .await
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
        let ids = self.sorted_ids(ids);
        self.runs_changed(&ids);
        Ok(ids)
    }

    /// What a (re)started agent does first: every run an earlier process of agent `name` still
    /// holds is its dead predecessor's. As with an expired lease, a run with no step started is
    /// queued again; one with steps started becomes Error with `message`. Fenced like
    /// [`Store::expire_leases`].
    pub async fn end_agent_runs(&self, name: &str, message: &str) -> StoreResult<Expired> {
        let now = now_millis();
        let requeued: Vec<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE runs SET status = 'Queued', epoch = epoch + 1, started_at = NULL,
                updated_at = $1, lease_owner = NULL, lease_expires_at = NULL, agent_name = NULL,
                steps = NULL
             WHERE status = 'Started' AND lease_owner = $2
             RETURNING id",
        )
        .bind(now)
        .bind(name)
        .fetch_all(pool)
        .await)?;
        let failed: Vec<String> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "UPDATE runs SET status = 'Error', error_message = $3, epoch = epoch + 1,
                finished_at = $1, updated_at = $1, lease_owner = NULL, lease_expires_at = NULL
             WHERE status = 'Running' AND lease_owner = $2
             RETURNING id",
        )
        .bind(now)
        .bind(name)
        .bind(message)
        .fetch_all(pool)
        .await)?;
        self.announce(Expired {
            requeued: self.sorted_ids(requeued),
            failed: self.sorted_ids(failed),
        })
        .await
    }

    /// Tells the other servers on the database, and watchers, that runs were queued again or
    /// ended.
    async fn announce(&self, expired: Expired) -> StoreResult<Expired> {
        if !expired.requeued.is_empty() {
            self.hint_queued(&expired.requeued);
        }
        self.runs_changed(&expired.failed);
        for run in &expired.failed {
            self.notify(&super::StoreEvent::Ended(run.clone())).await;
        }
        Ok(expired)
    }

    /// IDs ordered by their counter (RETURNING order is unspecified).
    pub(super) fn sorted_ids(&self, ids: Vec<String>) -> Vec<RunId> {
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
