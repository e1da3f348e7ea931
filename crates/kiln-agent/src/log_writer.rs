//! A held run's log on its way to the control plane: the agent's own lines and the worker's
//! events, masked, formatted with the shared [`kiln_api::run_log`] formatter, batched into the
//! run's [`Spool`], and sent from there by a task of its own as log parts addressed by byte
//! offset (fenced on the lease epoch). The control plane answers the length it stored and the
//! next part starts there, so a part resent after a lost answer is stored once: followers never
//! see a gap or a duplicate, across reconnects and servers too.
//!
//! Masking happens again here, on each step's raw output stream before it is cut into lines:
//! the store is where a leaked secret would persist, so it does not rely on the worker having
//! masked (a worker may be older or buggy), and a secret split across two events or
//! containing a newline is still caught whole. Masking happens here, on the agent, so no
//! secret leaves the machine that ran the step.
//!
//! Consuming events does not wait for the network: while the control plane is unreachable
//! the steps go on and their output waits in the spool (memory, then disk), resent with backoff
//! for as long as the lease could still be alive. Memory is bounded: one batch (about
//! [`BATCH_BYTES`] plus one event), the assembler's partial lines and the spool's memory limit;
//! only when the spool's disk bound is reached does the worker's bounded event channel make the
//! run wait, as it would for a slow server.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_api::agent::{LogMark, LogPart, MAX_LOG_PART};
use kiln_api::control::{Control, ControlError};
use kiln_plan::event::Event;
use kiln_plan::mask::{MaskedStream, Secrets};
use kiln_plan::plan::StepId;
use kiln_task::run_id::RunId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Backoff;
use super::spool::{Part, Spool};
use super::step_reporter::StepReporter;
use kiln_api::run_log::{self, Dependencies, LineAssembler, StepEnds, StreamKey};

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
    spool: Arc<Spool>,
    /// Sends the spool's bytes; ends when the spool is closed and drained, or sending ended.
    sender: Option<JoinHandle<()>>,
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
    lost: Arc<OnceLock<Lost>>,
}

impl LogWriter {
    /// Starts sending `spool` (which begins at the log's stored length) for the lease `epoch`
    /// on `run`; `cancel` is cancelled when the lease is lost.
    pub(crate) fn new(
        control: Arc<dyn Control>,
        run: RunId,
        epoch: i64,
        spool: Spool,
        patience: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let spool = Arc::new(spool);
        let lost = Arc::new(OnceLock::new());
        let sender = Sender { control, run, epoch, patience, spool: spool.clone(), cancel, lost };
        Self {
            lost: sender.lost.clone(),
            sender: Some(tokio::spawn(sender.send_all())),
            spool,
            secrets: Secrets::default(),
            masked: Vec::new(),
            streams: Vec::new(),
            lines: LineAssembler::new(&[]),
            ends: StepEnds::default(),
            batch: Vec::new(),
            times: Vec::new(),
            last_time: None,
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
        self.lost.get().copied()
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

    /// Consumes the worker's events until the run ends (the sender is dropped), spooling a
    /// batch whenever the channel runs dry or the batch is full; `steps` sees each event too.
    pub(crate) async fn consume(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
        dependencies: &mut Dependencies,
        steps: &mut StepReporter,
    ) {
        while let Some(event) = events.recv().await {
            steps.observe(&event);
            self.event(&event, dependencies);
            while self.batch.len() < BATCH_BYTES {
                match events.try_recv() {
                    Ok(event) => {
                        steps.observe(&event);
                        self.event(&event, dependencies);
                    }
                    Err(_) => break,
                }
            }
            self.spool_batch().await;
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

    /// Moves the batch into the spool (waiting only while the spool is full).
    async fn spool_batch(&mut self) {
        self.spool.append(&self.batch, &self.times).await;
        self.batch.clear();
        self.times.clear();
    }

    /// Spools the batch and waits until everything written so far is stored (or cannot be:
    /// see [`LogWriter::lost`]).
    pub(crate) async fn flush(&mut self) {
        self.spool_batch().await;
        self.spool.drained().await;
    }

    /// Ends the log: what is spooled is sent (or cannot be), then the spool's file goes.
    pub(crate) async fn close(mut self) {
        self.spool.close();
        if let Some(sender) = self.sender.take()
            && let Err(e) = sender.await
        {
            tracing::error!("the log sender failed: {e}");
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Lets the sender end once it sent what is spooled (a writer dropped without close).
        self.spool.close();
    }
}

/// Drains a run's spool to the control plane, part by part from the stored length.
struct Sender {
    control: Arc<dyn Control>,
    run: RunId,
    epoch: i64,
    /// How long sending may fail before the lease must be presumed gone.
    patience: Duration,
    spool: Arc<Spool>,
    /// Cancelled when the lease is lost: the run must stop, nobody will record it.
    cancel: CancellationToken,
    lost: Arc<OnceLock<Lost>>,
}

impl Sender {
    async fn send_all(self) {
        loop {
            let sent = match self.spool.next_part(MAX_LOG_PART).await {
                Ok(Some(part)) => self.send(part).await,
                Ok(None) => false,
                Err(e) => {
                    tracing::error!(run = %self.run, "reading the log spool failed: {e}");
                    false
                }
            };
            if !sent {
                break;
            }
        }
        self.spool.end();
    }

    /// One part, until it is stored (true) or cannot be. Unreachable, it resends with backoff
    /// for as long as the lease can still be alive; a refusal (the lease is gone) stops the
    /// run and all further writing.
    async fn send(&self, part: Part) -> bool {
        let give_up = tokio::time::Instant::now() + self.patience;
        let mut backoff = Backoff::default();
        let bytes = part.data.len();
        let part =
            LogPart { epoch: self.epoch, offset: part.offset, data: part.data, times: part.marks };
        loop {
            match self.control.append_log(self.run.clone(), part.clone()).await {
                Ok(ack) => {
                    self.spool.acked(ack.length);
                    return true;
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
                    tracing::error!(run = %self.run, bytes, "log output refused, no more is sent: {e}");
                    return false;
                }
            }
        }
    }

    fn stop(&self, why: Lost) -> bool {
        let _ = self.lost.set(why);
        self.cancel.cancel();
        false
    }
}

/// Now, to the millisecond the store keeps.
fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}
