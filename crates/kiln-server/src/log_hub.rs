//! Wake-ups for log followers: the in-process signal that a run's stored log grew or the run
//! ended, so an HTTP follower reads the new bytes at once instead of polling.
//!
//! The hub carries no log bytes. Writers persist a chunk first and then [`LogHub::publish`] the
//! new length; followers read from the store. So a follower sees exactly what is stored, in
//! order, with nothing skipped or repeated, and a missed wake-up costs at most one poll interval
//! (followers also re-read the store on a timer). Writers in other servers on a shared
//! PostgreSQL database reach this hub through the store's notifications
//! ([`crate::store::events`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_task::run_id::RunId;
use tokio::sync::watch;

/// What a follower learns from a wake-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// Bytes stored so far.
    pub len: u64,
    /// The run is terminal: nothing more will be written.
    pub finished: bool,
}

/// One watch channel per run with followers or a writer. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LogHub {
    runs: Arc<Mutex<HashMap<RunId, watch::Sender<LogProgress>>>>,
}

impl LogHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver for `run`'s progress. Subscribe **before** reading the store, so a write
    /// between the read and the wait is not missed.
    pub fn subscribe(&self, run: &RunId) -> watch::Receiver<LogProgress> {
        self.with(|runs| {
            runs.entry(run.clone())
                .or_insert_with(|| watch::channel(LogProgress::default()).0)
                .subscribe()
        })
    }

    /// `run`'s stored log is now `len` bytes long.
    pub fn publish(&self, run: &RunId, len: u64) {
        self.send(run, |p| p.len = p.len.max(len));
    }

    /// `run` reached a terminal status; followers finish once they have read everything. The
    /// entry is dropped: later followers read a finished run from the store alone.
    pub fn finish(&self, run: &RunId) {
        self.send(run, |p| p.finished = true);
        self.with(|runs| runs.remove(run));
    }

    /// Drops the entries nobody follows any more (a follower that subscribed just as its run
    /// finished leaves one behind, since receivers do not unsubscribe).
    pub fn prune(&self) {
        self.with(|runs| runs.retain(|_, tx| tx.receiver_count() > 0));
    }

    fn send(&self, run: &RunId, update: impl FnOnce(&mut LogProgress)) {
        self.with(|runs| {
            if let Some(tx) = runs.get(run) {
                tx.send_modify(update);
                if tx.receiver_count() == 0 {
                    // Nobody listens; a new follower re-creates the entry.
                    runs.remove(run);
                }
            }
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<RunId, watch::Sender<LogProgress>>) -> T) -> T {
        // A poisoned map is still a valid map: wake-ups are hints, never state.
        f(&mut self.runs.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wake_on_growth_and_on_finish() {
        let hub = LogHub::new();
        let run = RunId::new("ka1");
        let mut rx = hub.subscribe(&run);
        hub.publish(&run, 10);
        rx.changed().await.expect("woken");
        assert_eq!(*rx.borrow_and_update(), LogProgress { len: 10, finished: false });
        hub.finish(&run);
        rx.changed().await.expect("woken");
        assert!(rx.borrow().finished);
        // The entry is gone; publishing to a run nobody follows is a no-op.
        hub.publish(&run, 20);
        assert!(hub.runs.lock().expect("lock").is_empty());
        // A follower gone without a wake-up is pruned.
        drop(hub.subscribe(&RunId::new("ka2")));
        let kept = hub.subscribe(&RunId::new("ka3"));
        hub.prune();
        assert_eq!(hub.runs.lock().expect("lock").len(), 1);
        drop(kept);
    }
}
