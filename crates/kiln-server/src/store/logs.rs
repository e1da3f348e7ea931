//! Run logs: append-only chunks, each with a contiguous per-run sequence number (1, 2, …) and
//! byte offset, committed before `append_log` returns, so nothing is acknowledged or streamed
//! that is not stored. A follower that reconnects with the offset it has reached reads
//! everything after it, once: no gaps, no duplicates (§6.4's append blob, without the blob).
//!
//! Each chunk may carry arrival times ([`LogTime`], table `log_times`): kept beside the bytes
//! so that offsets stay the log's own and any reader can show when a line arrived.
//!
//! The run row carries the next sequence number and the total length; appending bumps both in
//! the same fenced `UPDATE` that checks the writer's lease, then inserts the chunk, in one
//! transaction.

use chrono::{DateTime, TimeDelta, Utc};
use kiln_task::run_id::RunId;

use super::{Store, StoreError, StoreResult, Tx, from_millis, on_db, on_tx, to_millis};

/// How long logs of finished runs are kept by default (§6.6).
pub const LOG_RETENTION: TimeDelta = TimeDelta::days(30);

/// Where an appended chunk landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogChunk {
    /// 1 for the run's first chunk, then +1 per chunk.
    pub seq: u64,
    /// Byte offset of the chunk's first byte in the run's log.
    pub offset: u64,
    pub len: u64,
}

/// Log bytes read back: `data` starts at byte `offset` of the run's log, inside chunk `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogData {
    pub seq: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl LogData {
    /// The offset just past this data: where the next read starts.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

fn as_u64(field: &str, v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("log {field} is negative: {v}")))
}

/// When a part of a chunk arrived: the bytes from `offset` (within the chunk) on arrived `at`,
/// until the next mark's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTime {
    pub offset: u64,
    pub at: DateTime<Utc>,
}

/// Stores `bytes` as chunk `seq` ending at `end`, which the run row already counts, with its
/// arrival `times`.
async fn insert_chunk(
    tx: &mut Tx,
    run: &RunId,
    seq: i64,
    end: i64,
    bytes: &[u8],
    times: &[LogTime],
) -> StoreResult<LogChunk> {
    let len = bytes.len() as i64;
    let offset = end - len;
    if len > 0 {
        on_tx!(&mut *tx, |c| sqlx::query(
            "INSERT INTO log_chunks (run_id, seq, byte_offset, data) VALUES ($1, $2, $3, $4)",
        )
        .bind(run.as_str())
        .bind(seq)
        .bind(offset)
        .bind(bytes)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        let times = times.iter().filter(|t| t.offset < len as u64);
        if times.clone().next().is_some() {
            on_tx!(&mut *tx, |c| {
                let mut insert =
                    sqlx::QueryBuilder::new("INSERT INTO log_times (run_id, byte_offset, at_ms) ");
                insert.push_values(times, |mut row, time| {
                    row.push_bind(run.as_str())
                        .push_bind(offset.saturating_add(time.offset as i64))
                        .push_bind(to_millis(time.at));
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(c).await.map(|done| done.rows_affected())
            })?;
        }
    }
    Ok(LogChunk { seq: as_u64("seq", seq)?, offset: as_u64("offset", offset)?, len: len as u64 })
}

/// Appends non-empty `bytes` to a run's log inside the caller's transaction, unfenced: for the
/// lines the store itself ends a log with when no agent holds the run (a cancel in the queue).
pub(super) async fn append_in(tx: &mut Tx, run: &RunId, bytes: &[u8]) -> StoreResult<LogChunk> {
    let len = i64::try_from(bytes.len())
        .map_err(|_| StoreError::Corrupt("log chunk too large".to_string()))?;
    let (seq, end): (i64, i64) = on_tx!(&mut *tx, |c| sqlx::query_as(
        "UPDATE runs SET log_seq = log_seq + 1, log_len = log_len + $2 WHERE id = $1
         RETURNING log_seq, log_len",
    )
    .bind(run.as_str())
    .bind(len)
    .fetch_one(c)
    .await)?;
    insert_chunk(tx, run, seq, end, bytes, &[LogTime { offset: 0, at: Utc::now() }]).await
}

impl Store {
    /// Appends `bytes` to the run's log. Fenced on the lease epoch (and the run must be Started
    /// or Running). An empty append stores nothing and returns the current end (`len` 0, `seq`
    /// of the last chunk).
    pub async fn append_log(&self, run: &RunId, epoch: i64, bytes: &[u8]) -> StoreResult<LogChunk> {
        self.append_log_timed(run, epoch, bytes, &[]).await
    }

    /// [`Store::append_log`], keeping when the parts of `bytes` arrived (`times`, offsets
    /// within `bytes`) beside the log, so readers can show each line's time while the log's
    /// bytes and offsets stay as written.
    pub async fn append_log_timed(
        &self,
        run: &RunId,
        epoch: i64,
        bytes: &[u8],
        times: &[LogTime],
    ) -> StoreResult<LogChunk> {
        self.append_fenced(run, epoch, None, bytes, times).await
    }

    /// Stores the log bytes an agent sent for byte `offset` of the run's log, idempotently:
    /// what the store already has (a part resent after a lost acknowledgement) is skipped, the
    /// rest appended; an offset past the stored end is [`StoreError::LogGap`]. The chunk's end
    /// is the stored length, where the agent's next part starts (`len` 0: nothing was new).
    /// Fenced.
    pub async fn append_log_at(
        &self,
        run: &RunId,
        epoch: i64,
        offset: u64,
        bytes: &[u8],
        times: &[LogTime],
    ) -> StoreResult<LogChunk> {
        self.append_fenced(run, epoch, Some(offset), bytes, times).await
    }

    /// The one fenced append: `bytes` for byte `at` of the log (`None`: its end), the part the
    /// store already has skipped; followers on other servers are told in the same transaction.
    async fn append_fenced(
        &self,
        run: &RunId,
        epoch: i64,
        at: Option<u64>,
        bytes: &[u8],
        times: &[LogTime],
    ) -> StoreResult<LogChunk> {
        let mut tx = self.begin().await?;
        // A write first (SQLite's write lock, and the fence), which reads where the log ends.
        let stored: Option<(i64, i64)> = on_tx!(&mut tx, |c| sqlx::query_as(
            "UPDATE runs SET log_seq = log_seq
             WHERE id = $1 AND epoch = $2 AND status IN ('Started', 'Running')
             RETURNING log_seq, log_len",
        )
        .bind(run.as_str())
        .bind(epoch)
        .fetch_optional(c)
        .await)?;
        let Some((last_seq, stored)) = stored else {
            tx.rollback().await?;
            return Err(self.fence_error(run, epoch).await);
        };
        let stored = as_u64("length", stored)?;
        let offset = at.unwrap_or(stored);
        if offset > stored {
            return Err(StoreError::LogGap { run: run.clone(), offset, stored });
        }
        let skip = usize::try_from(stored - offset).unwrap_or(usize::MAX);
        if skip >= bytes.len() {
            return Ok(LogChunk { seq: as_u64("seq", last_seq)?, offset: stored, len: 0 });
        }
        let rest = &bytes[skip..];
        // The mark that covers the first new byte moves to its start; later ones shift.
        let first = times.iter().rposition(|t| t.offset <= skip as u64).unwrap_or(0);
        let times: Vec<LogTime> = times[first.min(times.len())..]
            .iter()
            .map(|t| LogTime { offset: t.offset.saturating_sub(skip as u64), at: t.at })
            .collect();
        let len = i64::try_from(rest.len())
            .map_err(|_| StoreError::Corrupt("log chunk too large".to_string()))?;
        let (seq, end): (i64, i64) = on_tx!(&mut tx, |c| sqlx::query_as(
            "UPDATE runs SET log_seq = log_seq + 1, log_len = log_len + $2 WHERE id = $1
             RETURNING log_seq, log_len",
        )
        .bind(run.as_str())
        .bind(len)
        .fetch_one(c)
        .await)?;
        let chunk = insert_chunk(&mut tx, run, seq, end, rest, &times).await?;
        let event = super::StoreEvent::Log { run: run.clone(), len: chunk.offset + chunk.len };
        super::events::notify_in(&mut tx, &event).await?;
        tx.commit().await?;
        Ok(chunk)
    }

    /// Up to `max_bytes` of the run's log from byte `from_offset` on, in order, as stored chunks
    /// (the first and last trimmed to the range). Empty when there is nothing past the offset
    /// (or the logs expired); [`StoreError::NotFound`] for an unknown run.
    pub async fn read_log(
        &self,
        run: &RunId,
        from_offset: u64,
        max_bytes: usize,
    ) -> StoreResult<Vec<LogData>> {
        let from = i64::try_from(from_offset).unwrap_or(i64::MAX);
        let until = from.saturating_add(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        let rows: Vec<(i64, i64, Vec<u8>)> = on_db!(self.db(), |pool| {
            sqlx::query_as(
            // From the chunk holding `from` (the last one starting at or before it), by the
            // index on (run_id, byte_offset): a read far into a long log touches only the
            // chunks of its range, not every chunk before it.
            "SELECT seq, byte_offset, data FROM log_chunks
             WHERE run_id = $1 AND byte_offset < $3 AND byte_offset >= COALESCE(
                (SELECT MAX(byte_offset) FROM log_chunks WHERE run_id = $1 AND byte_offset <= $2), 0)
             ORDER BY byte_offset",
        )
        .bind(run.as_str())
        .bind(from)
        .bind(until)
        .fetch_all(pool)
        .await
        })?;
        if rows.is_empty() {
            // Distinguish "nothing new" from "no such run".
            self.log_len(run).await?;
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(rows.len());
        for (seq, offset, data) in rows {
            let (seq, offset) = (as_u64("seq", seq)?, as_u64("offset", offset)?);
            let chunk_end = offset + data.len() as u64;
            let start = from_offset.max(offset);
            let end = chunk_end.min(from_offset.saturating_add(max_bytes as u64));
            if start >= end {
                continue;
            }
            let data = data[(start - offset) as usize..(end - offset) as usize].to_vec();
            out.push(LogData { seq, offset: start, data });
        }
        Ok(out)
    }

    /// When the log's bytes from `from_offset` to `until` arrived, in offset order, starting
    /// with the mark that covers `from_offset` (none for bytes stored before any mark, such as
    /// the queue line written with the run).
    pub async fn log_times(
        &self,
        run: &RunId,
        from_offset: u64,
        until: u64,
    ) -> StoreResult<Vec<(u64, DateTime<Utc>)>> {
        let from = i64::try_from(from_offset).unwrap_or(i64::MAX);
        let until = i64::try_from(until).unwrap_or(i64::MAX);
        let rows: Vec<(i64, i64)> = on_db!(self.db(), |pool| sqlx::query_as(
            "SELECT byte_offset, at_ms FROM log_times
             WHERE run_id = $1 AND byte_offset < $3 AND byte_offset >= COALESCE(
                (SELECT MAX(byte_offset) FROM log_times WHERE run_id = $1 AND byte_offset <= $2), 0)
             ORDER BY byte_offset",
        )
        .bind(run.as_str())
        .bind(from)
        .bind(until)
        .fetch_all(pool)
        .await)?;
        rows.into_iter()
            .map(|(offset, at)| Ok((as_u64("time offset", offset)?, from_millis(at)?)))
            .collect()
    }

    /// Bytes of log the run has (as appended; expiry does not shrink it).
    pub async fn log_len(&self, run: &RunId) -> StoreResult<u64> {
        let len: Option<i64> =
            on_db!(self.db(), |pool| sqlx::query_scalar("SELECT log_len FROM runs WHERE id = $1")
                .bind(run.as_str())
                .fetch_optional(pool)
                .await)?;
        as_u64("length", len.ok_or_else(|| StoreError::NotFound(run.clone()))?)
    }

    /// Deletes the log chunks of runs that finished before `older_than` (retention; the server
    /// passes now − [`LOG_RETENTION`]). Returns how many chunks went.
    pub async fn expire_logs(&self, older_than: DateTime<Utc>) -> StoreResult<u64> {
        on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM log_times WHERE run_id IN
                (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1)",
        )
        .bind(to_millis(older_than))
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        let done = on_db!(self.db(), |pool| sqlx::query(
            "DELETE FROM log_chunks WHERE run_id IN
                (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < $1)",
        )
        .bind(to_millis(older_than))
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        Ok(done)
    }
}
