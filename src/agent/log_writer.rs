//! A held run's log on its way to the control plane: the agent's own lines and the worker's
//! events, masked, formatted with the shared [`crate::run_log`] formatter, batched, and sent as
//! log parts addressed by byte offset (fenced on the lease epoch). The control plane answers the
//! length it stored, so a part resent after a lost answer is stored once: followers never see a
//! gap or a duplicate, across reconnects too.
//!
//! Masking happens again here, on each step's raw output stream before it is cut into lines:
//! the store is where a leaked secret would persist, so it does not rely on the worker having
//! masked (a worker may be older or buggy), and a secret split across two events or
//! containing a newline is still caught whole. Masking happens here, on the agent, so no
//! secret leaves the machine that ran the step.
//!
//! Memory is bounded: one batch (about [`BATCH_BYTES`] plus one event) and the assembler's
//! partial lines; while a batch is being sent (and resent while the control plane is
//! unreachable, for as long as the lease could still be alive), the worker's bounded event
//! channel makes the run wait.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_worker::Event;
use kiln_worker::mask::{MaskedStream, Secrets};
use kiln_worker::plan::StepId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Backoff;
use super::control::{Control, ControlError};
use crate::api::agent::{LogMark, LogPart, MAX_LOG_PART};
use crate::run_id::RunId;
use crate::run_log::{self, Dependencies, LineAssembler, StepEnds, StreamKey};

/// A batch is written once it reaches this size or the event channel is empty.
pub(crate) const BATCH_BYTES: usize = 256 * 1024;

/// What ended the writing of a run's log early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The lease was taken away: another party owns the run's record now.
    Lease,
    /// The control plane was unreachable for longer than the lease lasts: it has taken the
    /// run away by now.
    Unreachable,
}

/// Writes one held run's log.
pub(crate) struct LogWriter {
    control: Arc<dyn Control>,
    run: RunId,
    epoch: i64,
    /// The stored length of the run's log: where the next part starts.
    offset: u64,
    /// How long sending may fail before the lease must be presumed gone.
    patience: Duration,
    secrets: Secrets,
    masked: Vec<String>,
    /// Per step and stream; a handful of entries.
    streams: Vec<(StreamKey, MaskedStream)>,
    lines: LineAssembler,
    ends: StepEnds,
    batch: Vec<u8>,
    /// When the batch's parts arrived (offsets within the batch).
    times: Vec<LogMark>,
    last_time: Option<DateTime<Utc>>,
    lost: Option<Lost>,
    /// Cancelled when the lease is lost: the run must stop, nobody will record it.
    cancel: CancellationToken,
}

impl LogWriter {
    pub(crate) fn new(
        control: Arc<dyn Control>,
        run: RunId,
        epoch: i64,
        offset: u64,
        patience: Duration,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            control,
            run,
            epoch,
            offset,
            patience,
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
            self.times.push(LogMark { offset: before as u64, at });
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

    /// Sends the batch (in parts of at most [`MAX_LOG_PART`]) and goes on from the length the
    /// control plane stored. Unreachable, it resends with backoff for as long as the lease can
    /// still be alive; a refusal (the lease is gone) stops the run and all further writing.
    pub(crate) async fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let times = std::mem::take(&mut self.times);
        if self.lost.is_none() {
            let mut start = 0;
            while start < batch.len() && self.lost.is_none() {
                let end = (start + MAX_LOG_PART).min(batch.len());
                let marks = times
                    .iter()
                    .filter(|t| (start as u64..end as u64).contains(&t.offset))
                    .map(|t| LogMark { offset: t.offset - start as u64, at: t.at })
                    .collect();
                self.send(&batch[start..end], marks).await;
                start = end;
            }
        }
        // Reuse the allocation for the next batch.
        self.batch = batch;
        self.batch.clear();
    }

    /// One part, at the current offset, until it is stored or cannot be.
    async fn send(&mut self, data: &[u8], times: Vec<LogMark>) {
        let give_up = tokio::time::Instant::now() + self.patience;
        let mut backoff = Backoff::default();
        loop {
            let part = LogPart {
                epoch: self.epoch,
                offset: self.offset,
                data: data.to_vec(),
                times: times.clone(),
            };
            match self.control.append_log(self.run.clone(), part).await {
                Ok(ack) => {
                    self.offset = ack.length;
                    return;
                }
                Err(ControlError::Stale { .. }) => {
                    tracing::warn!(run = %self.run, "lease lost: the run's log is no longer written");
                    return self.stop(Lost::Lease);
                }
                Err(e) if e.is_transient() && tokio::time::Instant::now() < give_up => {
                    tracing::warn!(run = %self.run, "sending log output failed (retrying): {e}");
                    backoff.wait().await;
                }
                Err(e) if e.is_transient() => {
                    tracing::error!(run = %self.run, "the control plane stayed unreachable: {e}");
                    return self.stop(Lost::Unreachable);
                }
                Err(e) => {
                    tracing::error!(run = %self.run, bytes = data.len(), "log output refused: {e}");
                    return;
                }
            }
        }
    }

    fn stop(&mut self, why: Lost) {
        self.lost = Some(why);
        self.cancel.cancel();
    }
}

/// Now, to the millisecond the store keeps.
fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}
