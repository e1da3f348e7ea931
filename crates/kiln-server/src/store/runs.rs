//! Runs: creating a run (issuing its ID from the persisted counter in the same transaction),
//! reading, listing (§6.5 `list-runs`) and cancelling (§6.5 `cancel-run`). The row ↔ record
//! conversion lives here too, so a corrupt row is a typed error rather than a panic.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use kiln_api::status::{RunStatus, RunType};
use kiln_api::{DEFAULT_PLATFORM, DEFAULT_TIMEOUT_SECS};
use kiln_task::run_id::{RunId, format_run_id};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, StoreResult, Tx, from_millis, now_millis, on_db, on_tx};

/// Every run's log starts with ACR's queue line (§6.1); it is stored with the run, so a
/// follower of a queued run sees it at once.
pub const WAITING_LINE: &str = "Waiting for an agent...\n";

/// What a queued run waits for, when that is more than any agent: `Waiting for an agent (pool
/// P, platform os/arch)`. The API's `waitingReason` while the run is Queued.
pub fn waiting_reason(pool: Option<&str>, platform: &str) -> String {
    match pool {
        Some(pool) => format!("Waiting for an agent (pool {pool}, platform {platform})"),
        None if platform != DEFAULT_PLATFORM => {
            format!("Waiting for an agent (platform {platform})")
        }
        None => WAITING_LINE.trim_end_matches("...\n").to_string(),
    }
}

/// The line a run's log starts with: [`waiting_reason`], as ACR's queue line.
pub fn waiting_line(pool: Option<&str>, platform: &str) -> String {
    format!("{}...\n", waiting_reason(pool, platform))
}
/// `runErrorMessage` of a run canceled before an agent took it.
pub const CANCELED_IN_QUEUE: &str = "the run was canceled while waiting for an agent";
/// Default `--top` of `list-runs` (§6.5).
pub const DEFAULT_TOP: usize = 15;

/// What the server knows when it queues a run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    pub run_type: RunType,
    /// What caused the run, as the CLI's TRIGGER column shows it: `Manual`, `Timer`,
    /// `Image Update`, or a source event type.
    pub trigger: String,
    /// The task's name; `None` for quick runs.
    pub task_name: Option<String>,
    /// The run's request as opaque JSON text (the server defines it: task text, values, context),
    /// secrets redacted when `sealed_request` carries them.
    pub request: String,
    /// The whole request, secrets included, sealed with the server key.
    pub sealed_request: Option<Vec<u8>>,
    /// What triggered the run, as opaque JSON text.
    pub trigger_detail: Option<String>,
    pub timeout_secs: u64,
    /// `os/architecture[/variant]`, e.g. `linux/amd64`.
    pub platform: String,
    /// The agent pool it must run in; `None`: any agent.
    pub agent_pool: Option<String>,
    /// The branch of the commit or pull request that triggered it.
    pub branch: Option<String>,
    /// The run this one repeats ([`Store::create_run`] of a re-run).
    pub rerun_of: Option<RunId>,
}

impl NewRun {
    /// A manual run on linux/amd64 with the default timeout.
    pub fn new(run_type: RunType, request: impl Into<String>) -> Self {
        Self {
            run_type,
            trigger: "Manual".to_string(),
            task_name: None,
            request: request.into(),
            sealed_request: None,
            trigger_detail: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            platform: DEFAULT_PLATFORM.to_string(),
            agent_pool: None,
            branch: None,
            rerun_of: None,
        }
    }
}

/// An image a run built and pushed (§6.2 `outputImages[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputImage {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: RunId,
    /// The counter the ID was issued with: strictly increasing in creation order.
    pub counter: u64,
    pub status: RunStatus,
    pub run_type: RunType,
    pub trigger: String,
    pub task_name: Option<String>,
    pub request: String,
    pub sealed_request: Option<Vec<u8>>,
    pub trigger_detail: Option<String>,
    pub timeout_secs: u64,
    pub platform: String,
    pub created_at: DateTime<Utc>,
    /// When a worker claimed it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub error_message: Option<String>,
    pub output_images: Vec<OutputImage>,
    /// The engine's dependency report (§6.3) as opaque JSON text.
    pub dependencies: Option<String>,
    /// Cancellation was asked for while a worker held the run; the worker acts on it.
    pub cancel_requested: bool,
    /// The lease epoch: bumped by every claim and every lease expiry.
    pub epoch: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Bytes of log written so far.
    pub log_len: u64,
    /// The agent pool the run must run in; `None`: any agent.
    pub agent_pool: Option<String>,
    /// The agent that took the run (kept after it ends).
    pub agent_name: Option<String>,
    /// The branch of the commit or pull request that triggered it.
    pub branch: Option<String>,
    /// The run this one repeats.
    pub rerun_of: Option<RunId>,
    /// Its steps as its agent last reported them ([`kiln_api::steps::Step`]s), as opaque JSON
    /// text; `None` before the first report.
    pub steps: Option<String>,
}

/// `list_runs` filter. `top` 0 means none; `Default` is the CLI's 15.
///
/// Each equality filter has an index on `(column, counter)`, so a page walks that index newest
/// first and stops after `top` rows; `search` (a substring of the ID, task, or commit) and
/// `image` can only narrow rows the walk reads, so their pages cost as many rows as it takes to
/// find `top` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub task_name: Option<String>,
    /// `repository:tag` (tag `latest` when omitted): runs that output this image.
    pub image: Option<String>,
    /// The TRIGGER column: `Manual`, `Commit`, `Pull Request`, `Timer`, `Image Update`.
    pub trigger: Option<String>,
    /// The agent that took the run.
    pub agent_name: Option<String>,
    /// The agent pool the run asked for.
    pub agent_pool: Option<String>,
    pub branch: Option<String>,
    /// A substring of the run ID, the task's name or the triggering commit (case-insensitive).
    pub search: Option<String>,
    pub top: usize,
    /// Only runs queued before the run with this counter (a page's continuation: keyset on the
    /// counter, so runs queued meanwhile never shift a later page).
    pub before: Option<u64>,
    /// Only this run: whether it matches the other filters (a watcher of the list asks this of
    /// each run that changed, by the primary key).
    pub run: Option<RunId>,
}

impl Default for RunFilter {
    fn default() -> Self {
        Self {
            status: None,
            task_name: None,
            image: None,
            trigger: None,
            agent_name: None,
            agent_pool: None,
            branch: None,
            search: None,
            top: DEFAULT_TOP,
            before: None,
            run: None,
        }
    }
}

/// The `runs` row as SQL sees it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RunRow {
    id: String,
    counter: i64,
    status: String,
    run_type: String,
    trigger_kind: String,
    task_name: Option<String>,
    request: String,
    sealed_request: Option<Vec<u8>>,
    trigger_detail: Option<String>,
    timeout_secs: i64,
    platform: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
    error_message: Option<String>,
    output_images: String,
    dependencies: Option<String>,
    cancel_requested: bool,
    epoch: i64,
    lease_owner: Option<String>,
    lease_expires_at: Option<i64>,
    log_len: i64,
    agent_pool: Option<String>,
    agent_name: Option<String>,
    branch: Option<String>,
    rerun_of: Option<String>,
    steps: Option<String>,
}

impl RunRow {
    /// Whether the run output `repo:tag` (an unreadable list outputs nothing).
    fn outputs(&self, repo: &str, tag: &str) -> bool {
        serde_json::from_str::<Vec<OutputImage>>(&self.output_images)
            .is_ok_and(|images| images.iter().any(|i| i.repository == repo && i.tag == tag))
    }
}

fn non_negative(field: &str, value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{field} is negative: {value}")))
}

impl TryFrom<RunRow> for RunRecord {
    type Error = StoreError;

    fn try_from(row: RunRow) -> StoreResult<Self> {
        let corrupt =
            |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("run {}: {e}", row.id));
        let status = row.status.parse::<RunStatus>().map_err(|e| corrupt(&e))?;
        let run_type = row.run_type.parse::<RunType>().map_err(|e| corrupt(&e))?;
        let output_images = serde_json::from_str(&row.output_images).map_err(|e| corrupt(&e))?;
        Ok(RunRecord {
            counter: non_negative("counter", row.counter)?,
            status,
            run_type,
            trigger: row.trigger_kind,
            task_name: row.task_name,
            request: row.request,
            sealed_request: row.sealed_request,
            trigger_detail: row.trigger_detail,
            timeout_secs: non_negative("timeout_secs", row.timeout_secs)?,
            platform: row.platform,
            created_at: from_millis(row.created_at)?,
            started_at: row.started_at.map(from_millis).transpose()?,
            finished_at: row.finished_at.map(from_millis).transpose()?,
            updated_at: from_millis(row.updated_at)?,
            error_message: row.error_message,
            output_images,
            dependencies: row.dependencies,
            cancel_requested: row.cancel_requested,
            epoch: row.epoch,
            lease_owner: row.lease_owner,
            lease_expires_at: row.lease_expires_at.map(from_millis).transpose()?,
            log_len: non_negative("log_len", row.log_len)?,
            agent_pool: row.agent_pool,
            agent_name: row.agent_name,
            branch: row.branch,
            rerun_of: row.rerun_of.map(RunId::new),
            steps: row.steps,
            id: RunId::new(row.id),
        })
    }
}

/// A value bound to a [`list_query`] placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// `list_runs`' SQL for `filter` and its binds, `$1`, `$2`, … in order. Only the filters that
/// are set become conditions, each a plain equality (or LIKE), so the planner sees e.g.
/// `agent_name = $1 ORDER BY counter DESC` and walks the `(agent_name, counter)` index from its
/// newest entry, reading a page's rows and no more; a `($1 IS NULL OR col = $1)` form would be
/// planned once for every binding and scan the table. `search` is a LIKE on the ID, the task
/// and the trigger detail (where the commit is), in any case. No LIMIT: callers stop reading.
pub(crate) fn list_query(filter: &RunFilter) -> StoreResult<(String, Vec<Bind>)> {
    let mut sql = String::from("SELECT * FROM runs");
    let mut binds = Vec::new();
    let mut condition = |clause: &str, bind: Bind| {
        binds.push(bind);
        let n = binds.len();
        sql.push_str(if n == 1 { " WHERE " } else { " AND " });
        sql.push_str(&clause.replace("$?", &format!("${n}")));
    };
    let text = |v: &Option<String>| v.clone().map(Bind::Text);
    let equalities = [
        ("status = $?", filter.status.map(|s| Bind::Text(s.as_str().to_string()))),
        ("task_name = $?", text(&filter.task_name)),
        ("trigger_kind = $?", text(&filter.trigger)),
        ("agent_name = $?", text(&filter.agent_name)),
        ("agent_pool = $?", text(&filter.agent_pool)),
        ("branch = $?", text(&filter.branch)),
        ("id = $?", filter.run.as_ref().map(|r| Bind::Text(r.to_string()))),
    ];
    for (clause, bind) in equalities {
        if let Some(bind) = bind {
            condition(clause, bind);
        }
    }
    if let Some(before) = filter.before {
        condition("counter < $?", Bind::Int(to_i64("before", before)?));
    }
    if let Some((repo, _)) = filter.image.as_deref().map(split_image) {
        // Only narrows candidates (`_` in a repository name is a wildcard here, so it can
        // over-match, never under-match); `list_runs` checks the exact image.
        condition("output_images LIKE $?", Bind::Text(format!("%\"repository\":\"{repo}\"%")));
    }
    if let Some(search) = &filter.search {
        let pattern = format!("%{}%", like_literal(&search.to_lowercase()));
        condition(
            "(LOWER(id) LIKE $? ESCAPE '\\' OR LOWER(COALESCE(task_name, '')) LIKE $? ESCAPE '\\' \
             OR LOWER(COALESCE(trigger_detail, '')) LIKE $? ESCAPE '\\')",
            Bind::Text(pattern),
        );
    }
    sql.push_str(" ORDER BY counter DESC");
    Ok((sql, binds))
}

/// `text` matched literally inside a LIKE pattern escaped with `\`.
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Splits `repo:tag` (the tag is after the last `:` that follows the last `/`; `latest` if none).
fn split_image(image: &str) -> (&str, &str) {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], &image[name_start + i + 1..]),
        None => (image, "latest"),
    }
}

fn to_i64(field: &str, value: u64) -> StoreResult<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{field} {value} does not fit the store")))
}

impl Store {
    /// Queues a run, its log holding [`waiting_line`]. Its ID comes from the persisted counter
    /// ([`next_counter`]): IDs are unique and increase across restarts.
    pub async fn create_run(&self, new: NewRun) -> StoreResult<RunRecord> {
        let mut tx = self.begin().await?;
        let run = insert_run(&mut tx, self.prefix(), new).await?;
        tx.commit().await?;
        self.hint_queued(std::slice::from_ref(&run.id));
        Ok(run)
    }

    /// The run, or `None` when no run has this ID.
    pub async fn find_run(&self, id: &RunId) -> StoreResult<Option<RunRecord>> {
        let row: Option<RunRow> =
            on_db!(self.db(), |pool| sqlx::query_as("SELECT * FROM runs WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(pool)
                .await)?;
        row.map(RunRecord::try_from).transpose()
    }

    /// The run, or [`StoreError::NotFound`].
    pub async fn get_run(&self, id: &RunId) -> StoreResult<RunRecord> {
        self.find_run(id).await?.ok_or_else(|| StoreError::NotFound(id.clone()))
    }

    /// Runs matching `filter`, newest first, at most `filter.top` (all when 0).
    pub async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        let image = filter.image.as_deref().map(split_image);
        let (sql, binds) = list_query(filter)?;
        let top = if filter.top == 0 { usize::MAX } else { filter.top };
        // Rows stream newest first and reading stops once `top` matched: a page costs the rows
        // up to its last match, not the table.
        let rows: Vec<RunRow> = on_db!(self.db(), |pool| {
            // Audited: `list_query` builds the text from fixed clauses only; every value is bound.
            let mut query = sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql.clone()));
            for bind in &binds {
                query = match bind {
                    Bind::Text(text) => query.bind(text),
                    Bind::Int(n) => query.bind(n),
                };
            }
            let mut stream = query.fetch(pool);
            let mut rows = Vec::new();
            while let Some(row) = stream.try_next().await? {
                let wanted = image.is_none_or(|(repo, tag)| row.outputs(repo, tag));
                if wanted {
                    rows.push(row);
                    if rows.len() == top {
                        break;
                    }
                }
            }
            Ok::<_, StoreError>(rows)
        })?;
        rows.into_iter().map(RunRecord::try_from).collect()
    }
    /// Cancels a run: a queued run becomes Canceled at once; a started or running one gets
    /// `cancel_requested` (its worker acts on it and finishes it as Canceled). A finished run is
    /// [`StoreError::AlreadyFinished`]; an unknown ID [`StoreError::NotFound`]. Returns the run
    /// as it is afterwards.
    pub async fn cancel_run(&self, id: &RunId) -> StoreResult<RunRecord> {
        let now = now_millis();
        let mut tx = self.begin().await?;
        let row: Option<RunRow> = on_tx!(&mut tx, |c| sqlx::query_as(
            "UPDATE runs SET
                status = CASE WHEN status = 'Queued' THEN 'Canceled' ELSE status END,
                finished_at = CASE WHEN status = 'Queued' THEN $2 ELSE finished_at END,
                error_message = CASE WHEN status = 'Queued' THEN $3 ELSE error_message END,
                cancel_requested = CASE WHEN status = 'Queued' THEN cancel_requested ELSE TRUE END,
                updated_at = $2
             WHERE id = $1 AND status IN ('Queued', 'Started', 'Running')
             RETURNING *",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(CANCELED_IN_QUEUE)
        .fetch_optional(c)
        .await)?;
        let Some(row) = row else {
            tx.rollback().await?;
            let run = self.get_run(id).await?;
            return Err(StoreError::AlreadyFinished { run: run.id, status: run.status });
        };
        let mut record = RunRecord::try_from(row)?;
        // Only a queued run is Canceled at once: no agent will end its log, so this does.
        if record.status == RunStatus::Canceled {
            let waited = (record.finished_at.unwrap_or(record.created_at) - record.created_at)
                .num_seconds()
                .max(0);
            let line = kiln_api::run_log::outcome_line(
                id.as_str(),
                RunStatus::Canceled,
                waited.unsigned_abs(),
                Some(CANCELED_IN_QUEUE),
            );
            let chunk =
                super::logs::append_in(&mut tx, id, format!("\n{line}\n").as_bytes()).await?;
            record.log_len = chunk.offset + chunk.len;
            super::events::notify_in(&mut tx, &super::StoreEvent::Ended(id.clone())).await?;
        } else {
            let event = super::StoreEvent::CancelRequested(id.clone());
            super::events::notify_in(&mut tx, &event).await?;
        }
        tx.commit().await?;
        self.runs_changed(std::slice::from_ref(id));
        Ok(record)
    }
}

/// Inserts a queued run inside `tx`, for callers that queue a run together with other writes
/// (a trigger's claim), who call [`Store::hint_queued`] with it once `tx` is committed. Its first
/// statement is a write, so it may open a transaction.
pub(crate) async fn insert_run(
    tx: &mut Tx,
    prefix: &kiln_task::run_id::RunIdPrefix,
    new: NewRun,
) -> StoreResult<RunRecord> {
    let now = now_millis();
    let timeout_secs = to_i64("timeout_secs", new.timeout_secs)?;
    let counter = next_counter(tx).await?;
    let id = format_run_id(prefix, non_negative("counter", counter)?);
    let waiting = waiting_line(new.agent_pool.as_deref(), &new.platform);
    let row: RunRow = on_tx!(&mut *tx, |c| sqlx::query_as(
        "INSERT INTO runs (id, counter, status, run_type, trigger_kind, task_name, request,
            timeout_secs, platform, created_at, started_at, finished_at, updated_at,
            error_message, output_images, dependencies, cancel_requested, epoch, lease_owner,
            lease_expires_at, log_seq, log_len, trigger_detail, sealed_request, agent_pool,
            branch, rerun_of)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, $10, NULL, '[]', NULL,
            FALSE, 0, NULL, NULL, $11, $12, $13, $14, $15, $16, $17)
         RETURNING *",
    )
    .bind(id.as_str())
    .bind(counter)
    .bind(RunStatus::Queued.as_str())
    .bind(new.run_type.as_str())
    .bind(&new.trigger)
    .bind(&new.task_name)
    .bind(&new.request)
    .bind(timeout_secs)
    .bind(&new.platform)
    .bind(now)
    .bind(1_i64)
    .bind(waiting.len() as i64)
    .bind(&new.trigger_detail)
    .bind(&new.sealed_request)
    .bind(&new.agent_pool)
    .bind(&new.branch)
    .bind(new.rerun_of.as_ref().map(RunId::as_str))
    .fetch_one(c)
    .await)?;
    on_tx!(&mut *tx, |c| sqlx::query(
        "INSERT INTO log_chunks (run_id, seq, byte_offset, data) VALUES ($1, 1, 0, $2)"
    )
    .bind(id.as_str())
    .bind(waiting.as_bytes())
    .execute(c)
    .await
    .map(|done| done.rows_affected()))?;
    row.try_into()
}

impl From<&OutputImage> for kiln_api::Image {
    fn from(i: &OutputImage) -> Self {
        kiln_api::Image {
            registry: i.registry.clone(),
            repository: i.repository.clone(),
            tag: i.tag.clone(),
            digest: i.digest.clone(),
        }
    }
}

/// The next run number. SQLite: the `run_counter` row, gap-free, as its one writer at a time
/// costs nothing more. PostgreSQL: the `run_numbers` sequence, which holds no lock until commit
/// (the row would make every submission of every server wait for the previous one's commit),
/// so a submission that fails after taking its number leaves a gap. Either way numbers are
/// unique and increase in the order they are taken.
async fn next_counter(tx: &mut Tx) -> StoreResult<i64> {
    Ok(match tx {
        Tx::Sqlite(tx) => {
            sqlx::query_scalar("UPDATE run_counter SET last = last + 1 WHERE id = 1 RETURNING last")
                .fetch_one(&mut **tx)
                .await?
        }
        Tx::Postgres(tx) => {
            sqlx::query_scalar("SELECT nextval('run_numbers')").fetch_one(&mut **tx).await?
        }
    })
}

#[cfg(test)]
mod unit {
    use super::split_image;

    #[test]
    fn store_split_image() {
        assert_eq!(split_image("app:v1"), ("app", "v1"));
        assert_eq!(split_image("team/app"), ("team/app", "latest"));
        assert_eq!(split_image("host:5000/app:v2"), ("host:5000/app", "v2"));
        assert_eq!(split_image("host:5000/app"), ("host:5000/app", "latest"));
    }
}
