//! Trigger claims: each trigger queues its run in the same transaction that records the
//! trigger as spent, so the database, not a process's memory, decides that a timer
//! occurrence, a git event or a base-image change runs once, whichever server sees it and
//! however often it is delivered (peers run duplicates: Woodpecker#2888, #5364, Azure/acr#398).
//!
//! * timers: compare-and-set of the stored next fire time;
//! * git events: a unique delivery ID and a unique task + event type + commit;
//! * base images: compare-and-set of the stored digest.

use chrono::{DateTime, Utc};
use kiln_plan::report::DigestKind;
use kiln_task::run_id::RunId;

use super::runs::{NewRun, RunRecord, insert_run};
use super::tasks::{TimerRecord, TimerRow, insert_event};
use super::{Store, StoreError, StoreResult, on_db, on_tx, to_millis};

/// History kind of a timer occurrence that passed while no server was running.
pub const TIMER_MISSED: &str = "TimerMissed";

/// One timer occurrence to claim: the timer's next fire time moves from `expected` to `next`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerClaim {
    pub task_name: String,
    pub timer_name: String,
    pub expected: DateTime<Utc>,
    pub next: Option<DateTime<Utc>>,
    /// Occurrences recorded in the task's history as missed.
    pub missed: Vec<DateTime<Utc>>,
    /// The run of the occurrence that fires, if one does.
    pub run: Option<NewRun>,
}

/// What became of a [`TimerClaim`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// This caller moved the timer on (and queued the run, if any).
    Claimed(Option<Box<RunRecord>>),
    /// Someone else already did: nothing was written.
    Lost,
}

/// What became of a git event.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceOutcome {
    Queued(Box<RunRecord>),
    /// This delivery ID was seen before.
    DuplicateDelivery,
    /// A run for this task, event type and commit exists already.
    DuplicateCommit,
}

/// A base image a task's images were built on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImageRecord {
    pub task_name: String,
    pub registry: String,
    pub repository: String,
    pub tag: String,
    /// `RunTime` or `BuildTime`.
    pub kind: String,
    /// The digest the tag pointed at (or a local image ID, see `digest_kind`); empty when not
    /// known yet.
    pub digest: String,
    /// What `digest` is. `None` for an empty digest, and in rows of older releases, which kept
    /// registry digests only.
    pub digest_kind: Option<DigestKind>,
}

impl BaseImageRecord {
    /// The stored digest if a registry's tag can be compared with it: a base first seen as a
    /// local image ID has its registry digest recorded at the first poll, without a run.
    pub fn repo_digest(&self) -> Option<&str> {
        let local = self.digest_kind == Some(DigestKind::ImageId);
        (!local && !self.digest.is_empty()).then_some(self.digest.as_str())
    }
}

impl Store {
    /// Enabled timers of enabled tasks whose next fire time is at or before `now`.
    pub async fn due_timers(&self, now: DateTime<Utc>) -> StoreResult<Vec<TimerRecord>> {
        let rows: Vec<TimerRow> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT t.* FROM timers t JOIN tasks k ON k.name = t.task_name
             WHERE t.enabled AND k.status = 'Enabled' AND t.next_fire_at <= $1
             ORDER BY t.next_fire_at",
        )
        .bind(to_millis(now))
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(TimerRecord::try_from).collect()
    }

    /// The tasks that have a due timer at `now` (one query for a whole minute's worth).
    pub async fn tasks_with_due_timers(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<super::TaskRecord>> {
        let rows: Vec<super::tasks::TaskRow> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT * FROM tasks WHERE status = 'Enabled' AND name IN (
                SELECT task_name FROM timers WHERE enabled AND next_fire_at <= $1)",
        )
        .bind(to_millis(now))
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(super::TaskRecord::try_from).collect()
    }

    /// The earliest next fire time of an enabled timer of an enabled task.
    pub async fn next_timer_fire(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let next: Option<i64> = on_db!(self.db(), |pool| sqlx::query_scalar(
            "SELECT MIN(t.next_fire_at) FROM timers t JOIN tasks k ON k.name = t.task_name
             WHERE t.enabled AND k.status = 'Enabled'",
        )
        .fetch_one(pool)
        .await)?;
        next.map(super::from_millis).transpose()
    }

    /// Claims timer occurrences in one transaction (a minute's worth of timers is one commit).
    pub async fn claim_timers(&self, claims: Vec<TimerClaim>) -> StoreResult<Vec<ClaimOutcome>> {
        let mut outcomes = Vec::with_capacity(claims.len());
        let mut tx = self.begin().await?;
        for claim in claims {
            let moved = on_tx!(&mut tx, |c| sqlx::query(
                "UPDATE timers SET next_fire_at = $4
                 WHERE task_name = $1 AND name = $2 AND next_fire_at = $3",
            )
            .bind(&claim.task_name)
            .bind(&claim.timer_name)
            .bind(to_millis(claim.expected))
            .bind(claim.next.map(to_millis))
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
            if moved == 0 {
                outcomes.push(ClaimOutcome::Lost);
                continue;
            }
            for at in &claim.missed {
                let detail = format!(
                    "timer {} missed its occurrence at {} (the server was not running); not replayed",
                    claim.timer_name,
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                insert_event(&mut tx, &claim.task_name, Utc::now(), TIMER_MISSED, &detail).await?;
            }
            let run = match claim.run {
                Some(new) => Some(Box::new(insert_run(&mut tx, self.prefix(), new).await?)),
                None => None,
            };
            outcomes.push(ClaimOutcome::Claimed(run));
        }
        tx.commit().await?;
        let queued: Vec<RunId> = outcomes
            .iter()
            .filter_map(|o| match o {
                ClaimOutcome::Claimed(Some(run)) => Some(run.id.clone()),
                _ => None,
            })
            .collect();
        if !queued.is_empty() {
            self.hint_queued(&queued);
        }
        Ok(outcomes)
    }

    /// Queues the run of a git event unless its delivery or its task + event + commit was seen.
    pub async fn queue_source_event(
        &self,
        task: &str,
        delivery_id: Option<&str>,
        event_type: &str,
        commit: &str,
        run: NewRun,
    ) -> StoreResult<SourceOutcome> {
        let mut tx = self.begin().await?;
        if let Some(id) = delivery_id {
            let new = on_tx!(&mut tx, |c| {
                sqlx::query(
                    "INSERT INTO deliveries (delivery_id, task_name, received_at)
                     VALUES ($1, $2, $3)
                     ON CONFLICT (delivery_id) DO NOTHING",
                )
                .bind(id)
                .bind(task)
                .bind(super::now_millis())
                .execute(c)
                .await
                .map(|done| done.rows_affected())
            })?;
            if new == 0 {
                return Ok(SourceOutcome::DuplicateDelivery);
            }
        }
        let new = on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO source_events (task_name, event_type, commit_id, run_id)
             VALUES ($1, $2, $3, '')
             ON CONFLICT (task_name, event_type, commit_id) DO NOTHING",
        )
        .bind(task)
        .bind(event_type)
        .bind(commit)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        if new == 0 {
            // The delivery is still recorded, so its redelivery is a duplicate delivery.
            tx.commit().await?;
            return Ok(SourceOutcome::DuplicateCommit);
        }
        let record = insert_run(&mut tx, self.prefix(), run).await?;
        on_tx!(&mut tx, |c| sqlx::query(
            "UPDATE source_events SET run_id = $4
             WHERE task_name = $1 AND event_type = $2 AND commit_id = $3",
        )
        .bind(task)
        .bind(event_type)
        .bind(commit)
        .bind(record.id.as_str())
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        if let Some(id) = delivery_id {
            on_tx!(&mut tx, |c| sqlx::query(
                "UPDATE deliveries SET run_id = $2 WHERE delivery_id = $1"
            )
            .bind(id)
            .bind(record.id.as_str())
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
        }
        tx.commit().await?;
        self.hint_queued(std::slice::from_ref(&record.id));
        Ok(SourceOutcome::Queued(Box::new(record)))
    }

    /// Forgets delivery IDs received before `before` (the task + event + commit key stays, so
    /// a very late redelivery still queues nothing).
    pub async fn forget_deliveries(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done =
            on_db!(self.db(), |pool| sqlx::query("DELETE FROM deliveries WHERE received_at < $1")
                .bind(to_millis(before))
                .execute(pool)
                .await
                .map(|done| done.rows_affected()))?;
        Ok(done)
    }

    /// Replaces a task's base images with those of its latest successful run.
    pub async fn set_base_images(&self, task: &str, images: &[BaseImageRecord]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |c| sqlx::query("DELETE FROM base_images WHERE task_name = $1")
            .bind(task)
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
        for image in images {
            on_tx!(&mut tx, |c| sqlx::query(
                "INSERT INTO base_images (task_name, registry, repository, tag, kind, digest,
                    digest_kind)
                 SELECT $1, $2, $3, $4, $5, $6, $7
                 WHERE EXISTS (SELECT 1 FROM tasks WHERE name = $1)
                 ON CONFLICT (task_name, registry, repository, tag) DO NOTHING",
            )
            .bind(task)
            .bind(&image.registry)
            .bind(&image.repository)
            .bind(&image.tag)
            .bind(&image.kind)
            .bind(&image.digest)
            .bind(image.digest_kind.map(DigestKind::as_str))
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A task's base images.
    pub async fn base_images(&self, task: &str) -> StoreResult<Vec<BaseImageRecord>> {
        self.base_images_of(Some(task)).await
    }

    /// The base images of `task`, or of every task, by task (runtime first, then by image).
    pub(super) async fn base_images_of(
        &self,
        task: Option<&str>,
    ) -> StoreResult<Vec<BaseImageRecord>> {
        let rows: Vec<BaseImageRow> = on_db!(self.db(), |pool| {
            sqlx::query_as(
                "SELECT task_name, registry, repository, tag, kind, digest, digest_kind
                 FROM base_images
                 WHERE $1 IS NULL OR task_name = $1
                 ORDER BY task_name, kind DESC, registry, repository, tag",
            )
            .bind(task)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(base_image).collect()
    }

    /// Every watched base image (pollers group them by image): those of enabled tasks whose
    /// base-image trigger covers the dependency's kind.
    pub async fn watched_base_images(&self) -> StoreResult<Vec<BaseImageRecord>> {
        let rows: Vec<BaseImageRow> = on_db!(self.db(), |pool| {
            sqlx::query_as(
                "SELECT b.task_name, b.registry, b.repository, b.tag, b.kind, b.digest,
                    b.digest_kind
                 FROM base_images b JOIN tasks k ON k.name = b.task_name
                 WHERE k.status = 'Enabled' AND (k.base_image_trigger = 'All'
                    OR (k.base_image_trigger = 'Runtime' AND b.kind = 'RunTime'))
                 ORDER BY b.registry, b.repository, b.tag, b.task_name",
            )
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(base_image).collect()
    }

    /// Claims a base-image change for one task: each of `changes` (a watched image and its
    /// tag's new digest) moves from its stored digest to the new one, and `run` is queued
    /// with them. [`ClaimOutcome::Lost`] when another server claimed the change first.
    pub async fn claim_base_image_change(
        &self,
        changes: &[(BaseImageRecord, String)],
        run: Option<NewRun>,
    ) -> StoreResult<ClaimOutcome> {
        let mut tx = self.begin().await?;
        for (image, digest) in changes {
            let moved = on_tx!(&mut tx, |c| sqlx::query(
                "UPDATE base_images SET digest = $6, digest_kind = 'repo-digest'
                 WHERE task_name = $1 AND registry = $2 AND repository = $3 AND tag = $4
                   AND digest = $5",
            )
            .bind(&image.task_name)
            .bind(&image.registry)
            .bind(&image.repository)
            .bind(&image.tag)
            .bind(&image.digest)
            .bind(digest)
            .execute(c)
            .await
            .map(|done| done.rows_affected()))?;
            if moved == 0 {
                return Ok(ClaimOutcome::Lost);
            }
        }
        let run = match run {
            Some(new) => Some(Box::new(insert_run(&mut tx, self.prefix(), new).await?)),
            None => None,
        };
        tx.commit().await?;
        if let Some(run) = &run {
            self.hint_queued(std::slice::from_ref(&run.id));
        }
        Ok(ClaimOutcome::Claimed(run))
    }
}

type BaseImageRow = (String, String, String, String, String, String, Option<String>);

fn base_image(row: BaseImageRow) -> StoreResult<BaseImageRecord> {
    let (task_name, registry, repository, tag, kind, digest, digest_kind) = row;
    let digest_kind = match digest_kind.as_deref() {
        None => None,
        Some(text) => Some(DigestKind::parse(text).ok_or_else(|| {
            StoreError::Corrupt(format!("base image {repository}:{tag}: digest kind {text:?}"))
        })?),
    };
    Ok(BaseImageRecord { task_name, registry, repository, tag, kind, digest, digest_kind })
}
