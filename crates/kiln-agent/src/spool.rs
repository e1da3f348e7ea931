//! A held run's log bytes between the log writer and the control plane: what the writer
//! formatted (already masked) waits here, with the marks of when it arrived, until the server
//! acknowledged storing it. Appending never waits for the network, so a run's steps keep
//! running while the server is unreachable (issue 12, partitions).
//!
//! The newest bytes are kept in memory up to [`SpoolLimits::memory`]; beyond that they are
//! appended to a file in the run's directory, which holds the older, not yet acknowledged part
//! and is emptied once that part is stored. The file is never synced: an agent that crashes
//! loses its leases anyway (the server settles its runs), so what it spooled has no reader.
//! When memory and file together hold [`SpoolLimits::disk`] bytes more than memory alone may
//! (the file's sent bytes count until it is emptied, so its size is bounded too), appending
//! waits for acknowledgements, as the whole run used to wait for the network.
//! Marks are capped at [`MAX_MARKS`]: a long backlog stores coarser arrival times, not more
//! memory. Offsets are the run's log offsets: the spool starts at the log's stored length.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kiln_api::agent::LogMark;
use tokio::sync::Notify;

/// Arrival marks kept at most (a few hundred KiB); beyond, bytes share the last mark's time.
pub(crate) const MAX_MARKS: usize = 16 * 1024;

/// How much a run's spool may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes kept in memory before they go to the file.
    pub memory: usize,
    /// Bytes the file may hold.
    pub disk: u64,
}

impl Default for SpoolLimits {
    /// 8 MiB in memory, 1 GiB on disk.
    fn default() -> Self {
        Self { memory: 8 << 20, disk: 1 << 30 }
    }
}

/// One part to send: bytes from `offset` on, with their marks (offsets within `data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) offset: u64,
    pub(crate) data: Vec<u8>,
    pub(crate) marks: Vec<LogMark>,
}

/// A run's spool, shared by the writer (which appends) and the sender (which drains).
#[derive(Debug)]
pub(crate) struct Spool {
    state: Mutex<State>,
    limits: SpoolLimits,
    path: PathBuf,
    /// Bytes were appended, or the spool was closed: the sender looks again.
    data: Notify,
    /// Bytes were acknowledged, or sending ended: a waiting writer looks again.
    room: Notify,
}

#[derive(Debug)]
struct State {
    /// The log offset of the file's first byte; the file holds `[base, base + file_len)`,
    /// memory the bytes after it.
    base: u64,
    file_len: u64,
    memory: Vec<u8>,
    /// Absolute offsets, ascending.
    marks: VecDeque<LogMark>,
    /// The length the server stored.
    acked: u64,
    file: Option<File>,
    /// The file cannot be written (it failed once): memory alone holds the backlog.
    no_file: bool,
    /// No more bytes will come.
    closed: bool,
    /// Sending ended (stored or not): appends are dropped.
    ended: bool,
}

impl State {
    fn end(&self) -> u64 {
        self.base + self.file_len + self.memory.len() as u64
    }

    fn pending(&self) -> u64 {
        self.end() - self.acked
    }

    /// Bytes memory and file hold: the file's sent bytes count until it is emptied.
    fn held(&self) -> u64 {
        self.file_len + self.memory.len() as u64
    }
}

impl Spool {
    /// An empty spool at log offset `start`, spilling to `path` (created when first needed).
    pub(crate) fn new(start: u64, limits: SpoolLimits, path: PathBuf) -> Self {
        Self {
            state: Mutex::new(State {
                base: start,
                file_len: 0,
                memory: Vec::new(),
                marks: VecDeque::new(),
                acked: start,
                file: None,
                no_file: false,
                closed: false,
                ended: false,
            }),
            limits,
            path,
            data: Notify::new(),
            room: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `bytes` (with marks by offset within them), waiting while the spool is full.
    pub(crate) async fn append(&self, bytes: &[u8], marks: &[LogMark]) {
        if bytes.is_empty() {
            return;
        }
        loop {
            let room = self.room.notified();
            {
                let mut state = self.state();
                if state.ended {
                    return;
                }
                let bound =
                    self.limits.memory as u64 + if state.no_file { 0 } else { self.limits.disk };
                if state.held() == 0 || state.held() + bytes.len() as u64 <= bound {
                    self.push(&mut state, bytes, marks);
                    break;
                }
            }
            room.await;
        }
        self.data.notify_one();
    }

    fn push(&self, state: &mut State, bytes: &[u8], marks: &[LogMark]) {
        let at = state.end();
        for mark in marks {
            if state.marks.len() < MAX_MARKS {
                state.marks.push_back(LogMark { offset: at + mark.offset, at: mark.at });
            }
        }
        state.memory.extend_from_slice(bytes);
        if state.memory.len() > self.limits.memory && !state.no_file {
            self.spill(state);
        }
    }

    /// Moves memory's bytes to the end of the file (one append).
    fn spill(&self, state: &mut State) {
        let written = match &state.file {
            Some(file) => file.write_all_at(&state.memory, state.file_len),
            None => self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| {
                    File::options()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&self.path)
                })
                .and_then(|file| {
                    file.write_all_at(&state.memory, state.file_len)?;
                    state.file = Some(file);
                    Ok(())
                }),
        };
        match written {
            Ok(()) => {
                state.file_len += state.memory.len() as u64;
                state.memory.clear();
            }
            Err(e) => {
                tracing::warn!("log spool {}: {e}; keeping the log in memory", self.path.display());
                state.no_file = true;
            }
        }
    }

    /// No more bytes will be appended.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.data.notify_one();
    }

    /// Sending ended: later appends are dropped, a waiting writer goes on.
    pub(crate) fn end(&self) {
        self.state().ended = true;
        self.room.notify_one();
    }

    /// The next part (at most `max` bytes from the acknowledged length), waiting for bytes;
    /// `None` once the spool is closed and everything was acknowledged.
    pub(crate) async fn next_part(&self, max: usize) -> std::io::Result<Option<Part>> {
        loop {
            let data = self.data.notified();
            {
                let state = self.state();
                if state.pending() > 0 {
                    return self.read(&state, max).map(Some);
                }
                if state.closed {
                    return Ok(None);
                }
            }
            data.await;
        }
    }

    fn read(&self, state: &State, max: usize) -> std::io::Result<Part> {
        let offset = state.acked;
        let file_end = state.base + state.file_len;
        let data = if offset < file_end {
            let len = (file_end - offset).min(max as u64) as usize;
            let mut buf = vec![0; len];
            let file = state.file.as_ref().ok_or_else(|| std::io::Error::other("no spool file"))?;
            file.read_exact_at(&mut buf, offset - state.base)?;
            buf
        } else {
            let from = (offset - file_end) as usize;
            let to = (from + max).min(state.memory.len());
            state.memory[from..to].to_vec()
        };
        let end = offset + data.len() as u64;
        let marks = state
            .marks
            .iter()
            .take_while(|m| m.offset < end)
            .filter(|m| m.offset >= offset)
            .map(|m| LogMark { offset: m.offset - offset, at: m.at })
            .collect();
        Ok(Part { offset, data, marks })
    }

    /// The server stored the log up to `length`: those bytes (and marks) go.
    pub(crate) fn acked(&self, length: u64) {
        {
            let mut state = self.state();
            state.acked = length.clamp(state.acked, state.end());
            let acked = state.acked;
            while state.marks.front().is_some_and(|m| m.offset < acked) {
                state.marks.pop_front();
            }
            if state.file_len > 0 && acked >= state.base + state.file_len {
                // The file's part is stored: the file starts over, empty.
                state.base += state.file_len;
                state.file_len = 0;
                if let Some(Err(e)) = state.file.as_ref().map(|f| f.set_len(0)) {
                    tracing::warn!("log spool {}: {e}", self.path.display());
                }
            }
            if state.file_len == 0 {
                let stored = (acked - state.base) as usize;
                state.memory.drain(..stored);
                state.base = acked;
            }
        }
        self.room.notify_one();
    }

    /// Everything appended so far was acknowledged, or sending ended.
    pub(crate) async fn drained(&self) {
        loop {
            let room = self.room.notified();
            {
                let state = self.state();
                if state.ended || state.pending() == 0 {
                    return;
                }
            }
            room.await;
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.state().file.take().is_some()
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!("removing the log spool {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    fn mark(offset: u64, ms: i64) -> LogMark {
        LogMark { offset, at: DateTime::from_timestamp_millis(ms).expect("time") }
    }

    /// Drains `spool` as a server storing every part would, returning what it stored.
    async fn drain(spool: &Spool, max: usize) -> (Vec<u8>, Vec<LogMark>) {
        let (mut stored, mut marks) = (Vec::new(), Vec::new());
        while let Some(part) = spool.next_part(max).await.expect("read") {
            let base = part.offset;
            marks.extend(part.marks.iter().map(|m| LogMark { offset: base + m.offset, ..*m }));
            stored.extend_from_slice(&part.data);
            spool.acked(part.offset + part.data.len() as u64);
        }
        (stored, marks)
    }

    #[tokio::test]
    async fn bytes_beyond_the_memory_limit_go_through_the_file_in_order_and_the_file_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.spool");
        let spool = Spool::new(5, SpoolLimits { memory: 10, disk: 1000 }, path.clone());
        let mut expected = Vec::new();
        for i in 0..40u8 {
            let line = format!("line {i}\n");
            expected.extend_from_slice(line.as_bytes());
            spool.append(line.as_bytes(), &[mark(0, i64::from(i))]).await;
        }
        assert!(path.exists(), "the backlog beyond 10 bytes is on disk");
        assert!(spool.state().memory.len() <= 10 + 8, "memory holds at most one append more");
        spool.close();
        let (stored, marks) = drain(&spool, 7).await;
        assert_eq!(stored, expected);
        assert_eq!(marks.len(), 40);
        assert_eq!(marks[1], mark(5 + 7, 1), "marks keep their log offsets");
        drop(spool);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_resend_starts_at_the_acknowledged_length_and_a_full_spool_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = SpoolLimits { memory: 4, disk: 4 };
        let spool = std::sync::Arc::new(Spool::new(0, limits, dir.path().join("s")));
        spool.append(b"abcdef", &[]).await;
        let part = spool.next_part(4).await.expect("read").expect("a part");
        assert_eq!((part.offset, part.data.as_slice()), (0, &b"abcd"[..]));
        // The server stored only two bytes: the next part starts there.
        spool.acked(2);
        let part = spool.next_part(4).await.expect("read").expect("a part");
        assert_eq!((part.offset, part.data.as_slice()), (2, &b"cdef"[..]));
        // The file holds its 6 bytes, sent or not, until it is emptied: 6 + 6 > 8, so the
        // append waits until the rest is acknowledged.
        let writer = tokio::spawn({
            let spool = spool.clone();
            async move { spool.append(b"ghijkl", &[]).await }
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        spool.acked(6);
        writer.await.expect("append");
        spool.close();
        assert_eq!(drain(&spool, 100).await.0, b"ghijkl");
    }
}
