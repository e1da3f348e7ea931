//! The control plane's persistent state: runs, their leases, their logs and API tokens, in one
//! SQLite file under the data directory (issue 5) or in a PostgreSQL database that several
//! servers share (issue 12).
//!
//! One idea per module: [`db`] (the two backends and the macros that run a query on either),
//! [`events`] (wake-ups between servers on one PostgreSQL database),
//! [`status`] (the run status/type vocabularies), [`runs`] (creating,
//! reading, listing and cancelling runs, with the persisted run-ID counter), [`lease`] (workers
//! claiming runs, heartbeats and the fencing epoch that every worker write checks), [`logs`]
//! (append-only log chunks with contiguous sequence numbers and byte offsets), [`tokens`] (API
//! tokens stored as SHA-256 hashes), [`sessions`] (browser sign-ins), [`agents`] (the agents that lease runs, with their own
//! tokens), [`tasks`] (tasks, their timers and history), [`triggers`]
//! (the claims that make each trigger queue its run once) and [`error`].
//!
//! Conventions, so both backends run the same SQL (`migrations/` and its PostgreSQL twins in
//! `migrations/postgres/` differ only in dialect):
//! * plain SQL with `$1` placeholders; every write that must be atomic is a single statement or
//!   a transaction whose first statement is a write (so SQLite takes the write lock up front and
//!   never has to upgrade a read lock, which is what makes concurrent writers deadlock-free);
//! * times are stored as Unix milliseconds (UTC, `BIGINT`): ordered, portable, and exact;
//!   the API exposes them as [`chrono::DateTime<Utc>`] (RFC 3339 on the wire is the server's job);
//! * enums are stored as their names (`TEXT`), JSON as `TEXT`;
//! * concurrency is the database's: single-statement compare-and-sets and unique keys, which
//!   PostgreSQL's READ COMMITTED re-checks after a concurrent writer commits, so the claims stay
//!   exactly-once across servers (`claim_next` takes each candidate with one such
//!   compare-and-set, so claimers never wait on each other's row locks).

pub mod agents;
pub mod db;
pub mod error;
pub mod events;
pub mod lease;
pub mod logs;
pub mod runs;
pub mod sessions;
pub mod tasks;
pub mod tokens;
pub mod triggers;

#[cfg(test)]
pub(crate) mod test_db;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_task::run_id::RunIdPrefix;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use agents::{AgentRecord, AgentUpdate, EmbeddedRegistration, PoolRecord};
pub use db::{BadDatabaseUrl, DatabaseUrl};
pub(crate) use db::{Db, Tx, on_db, on_tx};
pub use error::{StoreError, StoreResult};
pub use events::{StoreEvent, StoreEvents};
pub use lease::{Claim, Heartbeat};
pub use logs::{LogChunk, LogData, LogTime};
pub use runs::{NewRun, OutputImage, RunFilter, RunRecord};
pub use sessions::{NewSession, SessionInfo};
pub use tasks::{TaskEventRecord, TaskParts, TaskRecord, TaskWrite, TimerRecord};
pub use tokens::TokenInfo;
pub use triggers::{BaseImageRecord, ClaimOutcome, SourceOutcome, TimerClaim};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "kiln.db";

/// How long a connection waits for another writer before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections in the pool: SQLite serialises writers anyway; a few let readers (log
/// followers, list calls) proceed alongside a writer under WAL.
const MAX_CONNECTIONS: u32 = 4;

/// Connections per server to PostgreSQL, which runs writers side by side.
const PG_MAX_CONNECTIONS: u32 = 16;

/// Run changes a watcher may fall behind by before it is told it lagged (and reads anew).
const RUN_CHANGES: usize = 1024;

/// The store. Cheap to clone (a connection pool); safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    prefix: RunIdPrefix,
    url: DatabaseUrl,
    /// PostgreSQL's sender of `Queued` and `RunChanged` hints; `None` on SQLite.
    hints: Option<events::Hints>,
    /// This server's watchers of run changes ([`Store::watch_runs`]).
    changes: tokio::sync::broadcast::Sender<kiln_task::run_id::RunId>,
    /// Names this store in the `RunChanged` it sends, so its own relay skips them.
    origin: u64,
}

impl Store {
    /// Opens (creating if needed) `data_dir/kiln.db`: [`Store::open_with`] the default database.
    pub async fn open(data_dir: &Path, prefix: RunIdPrefix) -> StoreResult<Self> {
        Self::open_with(data_dir, None, prefix).await
    }

    /// Makes the data directory (private, 0700) and [`Store::connect`]s to `database`, by
    /// default the SQLite file `kiln.db` in it.
    pub async fn open_with(
        data_dir: &Path,
        database: Option<&DatabaseUrl>,
        prefix: RunIdPrefix,
    ) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir)
            .and_then(|()| private_dir(data_dir))
            .map_err(|source| StoreError::DataDir { path: data_dir.to_path_buf(), source })?;
        let default = DatabaseUrl::Sqlite(data_dir.join(DB_FILE));
        Self::connect(database.unwrap_or(&default), prefix).await
    }

    /// Connects to `url` and applies the embedded migrations of its backend. A SQLite file is
    /// created if missing (0600, WAL mode, foreign keys, a busy timeout). Run IDs are `prefix` +
    /// the persisted counter; the prefix of a registry should never change (see
    /// [`RunIdPrefix`]), and every server sharing a database must use the same one.
    pub async fn connect(url: &DatabaseUrl, prefix: RunIdPrefix) -> StoreResult<Self> {
        let db = match url {
            DatabaseUrl::Sqlite(path) => {
                private_files(path)
                    .map_err(|source| StoreError::DataDir { path: path.clone(), source })?;
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(BUSY_TIMEOUT);
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("../../migrations").run(&pool).await?;
                Db::Sqlite(pool)
            }
            DatabaseUrl::Postgres(url) => {
                // One connection first: its error (refused, authentication, no such database)
                // says what the pool's retries until a timeout would not.
                let probe = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
                sqlx::Connection::close(probe).await?;
                let pool =
                    PgPoolOptions::new().max_connections(PG_MAX_CONNECTIONS).connect(url).await?;
                // sqlx takes an advisory lock: servers starting together migrate once.
                sqlx::migrate!("../../migrations/postgres").run(&pool).await?;
                Db::Postgres(pool)
            }
        };
        // Random, so two processes (or two stores of one process, as tests open) never share it.
        let origin = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0_u8);
        let hints = match &db {
            Db::Postgres(pool) => Some(events::Hints::start(pool.clone(), origin)),
            Db::Sqlite(_) => None,
        };
        let (changes, _) = tokio::sync::broadcast::channel(RUN_CHANGES);
        Ok(Self { db, prefix, url: url.clone(), hints, changes, origin })
    }

    /// Closes every connection (checkpointing SQLite's WAL). The store is unusable afterwards.
    pub async fn close(&self) {
        self.db.close().await;
        if let Some(hints) = &self.hints {
            hints.stop();
        }
    }

    /// The database this store was opened on.
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn prefix(&self) -> &RunIdPrefix {
        &self.prefix
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) async fn begin(&self) -> StoreResult<Tx> {
        Ok(self.db.begin().await?)
    }
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Makes the database with its WAL and shared-memory files (0600) private to the server's
/// user, tightening them when an older start left them readable. The database is created empty
/// here, with its mode, because SQLite creates files by the umask and gives `-wal` and `-shm`
/// the database's own mode.
fn private_files(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(db)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Unix milliseconds of `t`, as stored.
pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The stored milliseconds back as a time; out-of-range values are corrupt data, not a panic.
pub(crate) fn from_millis(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

pub(crate) fn now_millis() -> i64 {
    to_millis(Utc::now())
}

/// A `Duration` as whole milliseconds, saturating (a TTL of centuries is still a TTL).
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
