//! Tasks (§6.7) and their timers and history. The store keeps what the server hands it: the
//! definition as opaque JSON (redacted) and the sealed whole, the sealed webhook secret; it
//! never sees a secret in the clear.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::triggers::BaseImageRecord;
use super::{Store, StoreError, StoreResult, Tx, from_millis, now_millis, on_db, on_tx, to_millis};

/// Task history entries worth keeping per task (older ones are dropped as new ones come).
pub const HISTORY_KEPT: i64 = 200;

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub name: String,
    /// `Enabled` or `Disabled`.
    pub status: String,
    /// `Disabled`, `Runtime` or `All`.
    pub base_image_trigger: String,
    /// The definition, secrets redacted, as JSON text.
    pub definition: String,
    /// The whole definition, sealed.
    pub sealed: Vec<u8>,
    pub webhook_secret: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A timer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    pub task_name: String,
    pub name: String,
    pub schedule: String,
    pub enabled: bool,
    /// The next occurrence nobody has fired yet; `None` when the schedule never fires again.
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// What [`Store::task_parts`] gives for one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskParts {
    pub timers: Vec<TimerRecord>,
    pub base_images: Vec<BaseImageRecord>,
    /// Newest first.
    pub history: Vec<TaskEventRecord>,
}

/// A history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEventRecord {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}

#[derive(sqlx::FromRow)]
pub(super) struct TaskRow {
    name: String,
    status: String,
    base_image_trigger: String,
    definition: String,
    sealed: Vec<u8>,
    webhook_secret: Vec<u8>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TaskRow> for TaskRecord {
    type Error = StoreError;
    fn try_from(row: TaskRow) -> StoreResult<Self> {
        Ok(TaskRecord {
            name: row.name,
            status: row.status,
            base_image_trigger: row.base_image_trigger,
            definition: row.definition,
            sealed: row.sealed,
            webhook_secret: row.webhook_secret,
            created_at: from_millis(row.created_at)?,
            updated_at: from_millis(row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TimerRow {
    pub(super) task_name: String,
    pub(super) name: String,
    pub(super) schedule: String,
    pub(super) enabled: bool,
    pub(super) next_fire_at: Option<i64>,
}

impl TryFrom<TimerRow> for TimerRecord {
    type Error = StoreError;
    fn try_from(row: TimerRow) -> StoreResult<Self> {
        Ok(TimerRecord {
            task_name: row.task_name,
            name: row.name,
            schedule: row.schedule,
            enabled: row.enabled,
            next_fire_at: row.next_fire_at.map(from_millis).transpose()?,
        })
    }
}

/// The fields of a task a create or an update writes.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskWrite {
    pub status: String,
    pub base_image_trigger: String,
    pub definition: String,
    pub sealed: Vec<u8>,
}

impl Store {
    /// Creates a task with its timers; [`StoreError::TaskExists`] if the name is taken.
    pub async fn create_task(
        &self,
        name: &str,
        write: TaskWrite,
        webhook_secret: Vec<u8>,
        timers: &[TimerRecord],
    ) -> StoreResult<TaskRecord> {
        let now = now_millis();
        let mut tx = self.begin().await?;
        let row: Option<TaskRow> = on_tx!(&mut tx, |c| sqlx::query_as(
            "INSERT INTO tasks (name, status, base_image_trigger, definition, sealed,
                webhook_secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (name) DO NOTHING
             RETURNING *",
        )
        .bind(name)
        .bind(&write.status)
        .bind(&write.base_image_trigger)
        .bind(&write.definition)
        .bind(&write.sealed)
        .bind(&webhook_secret)
        .bind(now)
        .fetch_optional(c)
        .await)?;
        let row = row.ok_or_else(|| StoreError::TaskExists(name.to_string()))?;
        for timer in timers {
            insert_timer(&mut tx, name, timer).await?;
        }
        tx.commit().await?;
        row.try_into()
    }

    /// Replaces a task's definition.
    pub async fn update_task(&self, name: &str, write: TaskWrite) -> StoreResult<TaskRecord> {
        let row: Option<TaskRow> = on_db!(self.db(), |pool| {
            sqlx::query_as(
                "UPDATE tasks SET status = $2, base_image_trigger = $3, definition = $4,
                    sealed = $5, updated_at = $6
                 WHERE name = $1
                 RETURNING *",
            )
            .bind(name)
            .bind(&write.status)
            .bind(&write.base_image_trigger)
            .bind(&write.definition)
            .bind(&write.sealed)
            .bind(now_millis())
            .fetch_optional(pool)
            .await
        })?;
        row.ok_or_else(|| StoreError::TaskNotFound(name.to_string()))?.try_into()
    }

    /// The task, or [`StoreError::TaskNotFound`].
    pub async fn get_task(&self, name: &str) -> StoreResult<TaskRecord> {
        let row: Option<TaskRow> =
            on_db!(self.db(), |pool| sqlx::query_as("SELECT * FROM tasks WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await)?;
        row.ok_or_else(|| StoreError::TaskNotFound(name.to_string()))?.try_into()
    }

    /// Every task, by name.
    pub async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let rows: Vec<TaskRow> =
            on_db!(self.db(), |pool| sqlx::query_as("SELECT * FROM tasks ORDER BY name")
                .fetch_all(pool)
                .await)?;
        rows.into_iter().map(TaskRecord::try_from).collect()
    }

    /// Deletes a task with its timers, history and trigger state; its runs stay.
    pub async fn delete_task(&self, name: &str) -> StoreResult<()> {
        let done = on_db!(self.db(), |pool| sqlx::query("DELETE FROM tasks WHERE name = $1")
            .bind(name)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::TaskNotFound(name.to_string()));
        }
        Ok(())
    }

    /// A task's timers, by name.
    pub async fn timers(&self, task: &str) -> StoreResult<Vec<TimerRecord>> {
        self.timers_of(Some(task)).await
    }

    /// The timers of `task`, or of every task, by task and name.
    async fn timers_of(&self, task: Option<&str>) -> StoreResult<Vec<TimerRecord>> {
        let rows: Vec<TimerRow> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT * FROM timers WHERE $1 IS NULL OR task_name = $1 ORDER BY task_name, name",
        )
        .bind(task)
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(TimerRecord::try_from).collect()
    }

    /// What a task's API view shows besides its definition: timers, base images and the last
    /// `history` history entries, for `task` or for every task (keyed by task name). Three
    /// queries whatever the number of tasks, so listing many tasks stays one round of reads.
    pub async fn task_parts(
        &self,
        task: Option<&str>,
        history: i64,
    ) -> StoreResult<BTreeMap<String, TaskParts>> {
        let mut parts: BTreeMap<String, TaskParts> = BTreeMap::new();
        for timer in self.timers_of(task).await? {
            parts.entry(timer.task_name.clone()).or_default().timers.push(timer);
        }
        for image in self.base_images_of(task).await? {
            parts.entry(image.task_name.clone()).or_default().base_images.push(image);
        }
        for (name, event) in self.task_events_of(task, history).await? {
            parts.entry(name).or_default().history.push(event);
        }
        Ok(parts)
    }

    /// Adds a timer; [`StoreError::TimerExists`] if the task has one of that name.
    pub async fn add_timer(&self, timer: &TimerRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_timer(&mut tx, &timer.task_name, timer).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rewrites a timer's schedule, state and next fire time.
    pub async fn update_timer(&self, timer: &TimerRecord) -> StoreResult<()> {
        let done = on_db!(self.db(), |pool| sqlx::query(
            "UPDATE timers SET schedule = $3, enabled = $4, next_fire_at = $5
             WHERE task_name = $1 AND name = $2",
        )
        .bind(&timer.task_name)
        .bind(&timer.name)
        .bind(&timer.schedule)
        .bind(timer.enabled)
        .bind(timer.next_fire_at.map(to_millis))
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::TimerNotFound {
                task: timer.task_name.clone(),
                timer: timer.name.clone(),
            });
        }
        Ok(())
    }

    pub async fn remove_timer(&self, task: &str, name: &str) -> StoreResult<()> {
        let done = on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM timers WHERE task_name = $1 AND name = $2"
        )
        .bind(task)
        .bind(name)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::TimerNotFound {
                task: task.to_string(),
                timer: name.to_string(),
            });
        }
        Ok(())
    }

    /// The task's most recent history entries, newest first.
    pub async fn task_events(&self, task: &str, limit: i64) -> StoreResult<Vec<TaskEventRecord>> {
        let events = self.task_events_of(Some(task), limit).await?;
        Ok(events.into_iter().map(|(_, event)| event).collect())
    }

    /// The `limit` most recent history entries of `task`, or of every task, newest first per
    /// task, with the task's name.
    async fn task_events_of(
        &self,
        task: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<(String, TaskEventRecord)>> {
        let rows: Vec<(String, i64, String, String)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT task_name, at, kind, detail FROM (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY task_name ORDER BY id DESC) AS recent
                FROM task_events WHERE $1 IS NULL OR task_name = $1) AS events
             WHERE recent <= $2 ORDER BY task_name, recent",
        )
        .bind(task)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
        rows.into_iter()
            .map(|(name, at, kind, detail)| {
                Ok((name, TaskEventRecord { at: from_millis(at)?, kind, detail }))
            })
            .collect()
    }
}

async fn insert_timer(tx: &mut Tx, task: &str, timer: &TimerRecord) -> StoreResult<()> {
    let done = on_tx!(&mut *tx, |c| sqlx::query(
        "INSERT INTO timers (task_name, name, schedule, enabled, next_fire_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (task_name, name) DO NOTHING",
    )
    .bind(task)
    .bind(&timer.name)
    .bind(&timer.schedule)
    .bind(timer.enabled)
    .bind(timer.next_fire_at.map(to_millis))
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    if done == 0 {
        return Err(StoreError::TimerExists { task: task.to_string(), timer: timer.name.clone() });
    }
    Ok(())
}

/// Records a history entry inside `tx` and drops entries beyond [`HISTORY_KEPT`].
pub(super) async fn insert_event(
    tx: &mut Tx,
    task: &str,
    at: DateTime<Utc>,
    kind: &str,
    detail: &str,
) -> StoreResult<()> {
    on_tx!(&mut *tx, |c| sqlx::query(
        "INSERT INTO task_events (task_name, at, kind, detail) VALUES ($1, $2, $3, $4)"
    )
    .bind(task)
    .bind(to_millis(at))
    .bind(kind)
    .bind(detail)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    on_tx!(&mut *tx, |c| sqlx::query(
        "DELETE FROM task_events WHERE task_name = $1 AND id <= (
            SELECT id FROM task_events WHERE task_name = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(task)
    .bind(HISTORY_KEPT)
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}
