//! A held run's log on its way into the store: the agent's own lines and the worker's events,
//! masked, formatted with the shared [`crate::run_log`] formatter, batched, appended (fenced on
//! the lease epoch), and only then announced to followers through the [`LogHub`].
//!
//! Masking happens again here, on each step's raw output stream before it is cut into lines:
//! the store is where a leaked secret would persist, so it does not rely on the worker having
//! masked (a remote worker may be older or buggy), and a secret split across two events or
//! containing a newline is still caught whole.
//!
//! Memory is bounded: one batch (about [`BATCH_BYTES`] plus one event) and the assembler's
//! partial lines; while a batch is being written, the worker's bounded event channel makes the
//! run wait.

use chrono::{DateTime, Utc};
use kiln_worker::Event;
use kiln_worker::mask::{MaskedStream, Secrets};
use kiln_worker::plan::StepId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::log_hub::LogHub;
use crate::run_id::RunId;
use crate::run_log::{self, Dependencies, LineAssembler, StepEnds, StreamKey};
use crate::store::{LogTime, Store, StoreError};

/// A batch is written once it reaches this size or the event channel is empty.
pub(crate) const BATCH_BYTES: usize = 256 * 1024;

/// What ended the writing of a run's log early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The lease was taken away (`StaleLease`): another party owns the run's record now.
    Lease,
}

/// Writes one held run's log.
pub(crate) struct LogWriter {
    store: Store,
    hub: LogHub,
    run: RunId,
    epoch: i64,
    secrets: Secrets,
    masked: Vec<String>,
    /// Per step and stream; a handful of entries.
    streams: Vec<(StreamKey, MaskedStream)>,
    lines: LineAssembler,
    ends: StepEnds,
    batch: Vec<u8>,
    /// When the batch's parts arrived (offsets within the batch).
    times: Vec<LogTime>,
    last_time: Option<DateTime<Utc>>,
    lost: Option<Lost>,
    /// Cancelled when the lease is lost: the run must stop, nobody will record it.
    cancel: CancellationToken,
}

impl LogWriter {
    pub(crate) fn new(
        store: Store,
        hub: LogHub,
        run: RunId,
        epoch: i64,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            store,
            hub,
            run,
            epoch,
            secrets: Secrets::default(),
            masked: Vec::new(),
            streams: Vec::new(),
            lines: LineAssembler::new(&[]),
            ends: StepEnds::default(),
            batch: Vec::new(),
            times: Vec::new(),
            last_time: None,
            lost: None,
            cancel,
        }
    }

    /// Adds values to mask from here on.
    pub(crate) fn mask(&mut self, values: impl IntoIterator<Item = String>) {
        self.masked.extend(values.into_iter().filter(|v| !v.is_empty()));
        self.secrets = Secrets::new(&self.masked);
    }

    /// The plan's steps are known: lines get their `step | ` prefix padded to these IDs.
    pub(crate) fn steps(&mut self, order: &[StepId]) {
        self.lines = LineAssembler::new(order);
    }

    /// One line of the agent's own, unprefixed and timestamped like ACR's agent lines (masked).
    pub(crate) fn line(&mut self, text: &str) {
        let now = now_ms();
        let before = self.batch.len();
        self.write_plain(&run_log::stamped(text, now));
        self.mark(before, now);
    }

    /// One line as it is (masked): the closing block (report, outcome) that readers take
    /// apart, as ACR's client prints it.
    pub(crate) fn plain(&mut self, text: &str) {
        let before = self.batch.len();
        self.write_plain(text);
        self.mark(before, now_ms());
    }

    fn write_plain(&mut self, text: &str) {
        self.batch.extend_from_slice(self.secrets.text(text).as_bytes());
        self.batch.push(b'\n');
    }

    /// The batch's bytes from `before` on arrived `at`: noted when they are new and the time
    /// (to the millisecond) differs from the last note, so a burst costs one row.
    fn mark(&mut self, before: usize, at: DateTime<Utc>) {
        if self.batch.len() > before && self.last_time.is_none_or(|last| last != at) {
            self.times.push(LogTime { offset: before as u64, at });
            self.last_time = Some(at);
        }
    }

    /// `text` with every registered secret masked (for the run's stored error message).
    pub(crate) fn mask_text(&self, text: &str) -> String {
        self.secrets.text(text)
    }

    /// Why writing stopped early, if it did.
    pub(crate) fn lost(&self) -> Option<Lost> {
        self.lost
    }

    /// Formats one worker event into the batch and notes its results in `dependencies`.
    fn event(&mut self, event: &Event, dependencies: &mut Dependencies) {
        dependencies.observe(event);
        let now = now_ms();
        let before = self.batch.len();
        self.event_lines(event, now);
        self.mark(before, now);
    }

    /// The lines `event` brings, arrived `now`.
    fn event_lines(&mut self, event: &Event, now: DateTime<Utc>) {
        for (step, text) in self.ends.observe(event) {
            let text = self.secrets.text(&run_log::stamped(&text, now));
            let _ = run_log::write_line(&mut self.batch, self.lines.width(), Some(&step), &text);
        }
        let Event::Log { step, stream, data } = event else { return };
        let key = (step.clone(), *stream);
        let index = match self.streams.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.streams.push((key, self.secrets.stream()));
                self.streams.len() - 1
            }
        };
        let safe = self.streams[index].1.push(data).into_owned();
        let (lines, batch) = (&mut self.lines, &mut self.batch);
        let width = lines.width();
        lines.push(step.as_ref(), *stream, &safe, |step, text| {
            // Writing into a Vec cannot fail.
            let _ = run_log::write_line(batch, width, step, &run_log::shown(*stream, text, now));
        });
    }

    /// Consumes the worker's events until the run ends (the sender is dropped), writing a
    /// batch whenever the channel runs dry or the batch is full.
    pub(crate) async fn consume(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
        dependencies: &mut Dependencies,
    ) {
        while let Some(event) = events.recv().await {
            self.event(&event, dependencies);
            while self.batch.len() < BATCH_BYTES {
                match events.try_recv() {
                    Ok(event) => self.event(&event, dependencies),
                    Err(_) => break,
                }
            }
            self.flush().await;
        }
    }

    /// The run is over: held-back bytes and unfinished lines go into the batch.
    pub(crate) fn end_streams(&mut self) {
        let before = self.batch.len();
        for ((step, stream), mut masker) in std::mem::take(&mut self.streams) {
            let rest = masker.finish();
            if !rest.is_empty() {
                let (lines, batch) = (&mut self.lines, &mut self.batch);
                let width = lines.width();
                lines.push(step.as_ref(), stream, &rest, |step, text| {
                    let _ = run_log::write_line(batch, width, step, text);
                });
            }
        }
        let (lines, batch) = (&mut self.lines, &mut self.batch);
        let width = lines.width();
        lines.flush(|step, text| {
            let _ = run_log::write_line(batch, width, step, text);
        });
        self.mark(before, now_ms());
    }

    /// Persists the batch with one append, then wakes followers. After a lost lease nothing
    /// more is written; a database error drops the batch (the run goes on, and the error is
    /// logged for the operator).
    pub(crate) async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if self.lost.is_some() {
            self.times.clear();
            return;
        }
        let times = std::mem::take(&mut self.times);
        match self.store.append_log_timed(&self.run, self.epoch, &batch, &times).await {
            Ok(chunk) => self.hub.publish(&self.run, chunk.offset + chunk.len),
            Err(StoreError::StaleLease { .. }) => {
                tracing::warn!(run = %self.run, "lease lost: the run's log is no longer written");
                self.lost = Some(Lost::Lease);
                self.cancel.cancel();
            }
            Err(e) => {
                tracing::error!(run = %self.run, bytes = batch.len(), "storing log output failed: {e}");
            }
        }
        // Reuse the allocation for the next batch.
        self.batch = batch;
        self.batch.clear();
    }
}

/// Now, to the millisecond the store keeps.
fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}
