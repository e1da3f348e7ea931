//! The run's event channel: how the worker's tasks send [`Event`]s, masked and in bounded pieces.
//!
//! The events themselves are `kiln_plan::event` (the control plane reads them too); this is the
//! sending side, which only the worker has.

use kiln_plan::event::{Event, LogStream, MAX_LOG_CHUNK};
use kiln_plan::mask::{MaskedStream, Secrets};
use kiln_plan::plan::StepId;
use tokio::sync::mpsc;

/// The run's event channel, shared by every task of the run, with the run's secrets to mask.
///
/// A consumer that hangs up does not stop the run: events are then dropped, and the run still
/// finishes and cleans up, which is what a worker whose client went away must do.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: mpsc::Sender<Event>,
    secrets: Secrets,
}

impl Events {
    pub(crate) fn new(tx: mpsc::Sender<Event>, secrets: Secrets) -> Self {
        Self { tx, secrets }
    }

    /// A masker for one stream of output, to pass each piece through before [`Events::log`].
    pub(crate) fn masker(&self) -> MaskedStream {
        self.secrets.stream()
    }

    /// `text` with the run's secrets masked, for messages that leave the worker.
    pub(crate) fn mask(&self, text: &str) -> String {
        self.secrets.text(text)
    }

    pub(crate) async fn send(&self, event: Event) {
        // Err only means the receiver is gone; see the type's doc.
        let _ = self.tx.send(event).await;
    }

    /// Sends `data` as log events of at most [`MAX_LOG_CHUNK`] bytes each. `data` must have
    /// gone through a [`Events::masker`] already.
    pub(crate) async fn log(&self, step: Option<&StepId>, stream: LogStream, data: &[u8]) {
        for piece in data.chunks(MAX_LOG_CHUNK) {
            self.send(Event::Log { step: step.cloned(), stream, data: piece.to_vec() }).await;
        }
    }

    /// One system line (masked; a newline is appended).
    pub(crate) async fn system(&self, step: Option<&StepId>, line: impl Into<String>) {
        let mut line = self.mask(&line.into());
        line.push('\n');
        self.log(step, LogStream::System, line.as_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_logs_are_split_into_bounded_events() {
        let (tx, mut rx) = mpsc::channel(8);
        let events = Events::new(tx, Secrets::default());
        let data = vec![b'x'; MAX_LOG_CHUNK * 2 + 1];
        let sender = tokio::spawn(async move {
            events.log(None, LogStream::Stdout, &data).await;
        });
        let mut sizes = Vec::new();
        while let Some(Event::Log { data, .. }) = rx.recv().await {
            sizes.push(data.len());
        }
        sender.await.expect("sender finished");
        assert_eq!(sizes, vec![MAX_LOG_CHUNK, MAX_LOG_CHUNK, 1]);
    }
}
