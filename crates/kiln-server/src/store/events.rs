//! Wake-ups between servers that share a PostgreSQL database: the store NOTIFYs that a run was
//! queued, that a run's log grew, that a run ended, that a held run is to be cancelled or that a
//! run's record changed, and every server LISTENs ([`Store::listen`]) and passes what it hears to
//! its own log hub, run watchers and agent. So a follower on server B hears an agent writing
//! through server A at once, and B's idle workers claim a run submitted to A without waiting for
//! their poll. Like the in-process hub these are hints, never state: readers still read the
//! store, and a missed notification (a reconnect) costs one recheck interval (a run watcher's
//! client sees the change at its next change or reconnect). On SQLite (one server) nothing is
//! sent and there is nothing to hear.
//!
//! A notification inside a transaction is delivered when it commits, and not at all when it rolls
//! back, so nobody is woken for a run or bytes that do not exist.
//!
//! `Queued` and `RunChanged` are the exceptions: they are sent after the commit, by one task per
//! server that merges the hints given meanwhile into one statement ([`Hints`]). PostgreSQL lets
//! one notifying transaction at a time commit (the notification queue's lock is held through the
//! commit's WAL flush), so a `pg_notify` in every submission made submissions through all servers
//! commit one by one; with pgbench, 8 clients inserting runs went 2.6–3.8× faster without it.
//!
//! Run changes also go to this server's own watchers at once, through an in-process broadcast
//! ([`Store::watch_runs`]) that every store function writing a run record feeds
//! ([`Store::runs_changed`]), on both backends. A server does not hear its own `RunChanged`
//! back: each store names itself in the payload (`origin`) and skips its own.

use std::sync::{Arc, Mutex, PoisonError};

use kiln_task::run_id::RunId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};

use super::{Db, Store, StoreResult, Tx, on_tx};

/// The one channel every server listens on.
const CHANNEL: &str = "kiln_events";

/// What a server hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A run was queued.
    Queued,
    /// The run's stored log is now `len` bytes long.
    Log { run: RunId, len: u64 },
    /// The run reached a terminal status.
    Ended(RunId),
    /// Cancelling the run was asked for while an agent held it.
    CancelRequested(RunId),
    /// The run's record changed (queued, taken, its status, its steps, its end), written by
    /// the store instance `origin`.
    RunChanged { run: RunId, origin: u64 },
}

impl StoreEvent {
    /// `queued`, `log <run> <len>`, `ended <run>`, `cancel <run>` or `changed <origin> <run>`
    /// (run IDs have no spaces).
    fn payload(&self) -> String {
        match self {
            Self::Queued => "queued".to_string(),
            Self::Log { run, len } => format!("log {run} {len}"),
            Self::Ended(run) => format!("ended {run}"),
            Self::CancelRequested(run) => format!("cancel {run}"),
            Self::RunChanged { run, origin } => format!("changed {origin} {run}"),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        let mut words = payload.split(' ');
        let event = match (words.next()?, words.next(), words.next()) {
            ("queued", None, None) => Self::Queued,
            ("log", Some(run), Some(len)) => {
                Self::Log { run: RunId::new(run), len: len.parse().ok()? }
            }
            ("ended", Some(run), None) => Self::Ended(RunId::new(run)),
            ("cancel", Some(run), None) => Self::CancelRequested(RunId::new(run)),
            ("changed", Some(origin), Some(run)) => {
                Self::RunChanged { run: RunId::new(run), origin: origin.parse().ok()? }
            }
            _ => return None,
        };
        words.next().is_none().then_some(event)
    }
}

/// Sends `event` when `tx` commits (PostgreSQL; nothing on SQLite).
pub(super) async fn notify_in(tx: &mut Tx, event: &StoreEvent) -> StoreResult<()> {
    if let Tx::Postgres(_) = tx {
        on_tx!(&mut *tx, |c| sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(event.payload())
            .execute(c)
            .await
            .map(drop))?;
    }
    Ok(())
}

/// The hints given since the sender last sent.
#[derive(Debug, Default)]
struct Pending {
    queued: bool,
    changed: Vec<RunId>,
}

/// The sender of [`StoreEvent::Queued`] and [`StoreEvent::RunChanged`] on PostgreSQL: hints
/// given while it sends become its next single statement (a waiting server claims every queued
/// run it may take, so one `queued` serves any number of runs; each changed run is named once).
#[derive(Debug, Clone)]
pub(super) struct Hints {
    wake: Arc<Notify>,
    pending: Arc<Mutex<Pending>>,
}

impl Hints {
    /// Starts the sender on `pool` for the store `origin`; it ends when the pool is closed
    /// ([`Hints::stop`]).
    pub(super) fn start(pool: PgPool, origin: u64) -> Self {
        let hints = Self { wake: Arc::new(Notify::new()), pending: Arc::default() };
        let sender = hints.clone();
        tokio::spawn(async move {
            loop {
                sender.wake.notified().await;
                if pool.is_closed() {
                    return;
                }
                let payloads = sender.take(origin);
                if payloads.is_empty() {
                    continue;
                }
                let sent = sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
                    .bind(CHANNEL)
                    .bind(payloads)
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(
                        "telling the other servers of queued or changed runs failed: {e}"
                    );
                }
            }
        });
        hints
    }

    /// The payloads of what was given since the last call, each changed run once.
    fn take(&self, origin: u64) -> Vec<String> {
        let Pending { queued, mut changed } = std::mem::take(&mut *self.lock());
        changed.sort_unstable();
        changed.dedup();
        let queued = queued.then_some(StoreEvent::Queued);
        let changed = changed.into_iter().map(|run| StoreEvent::RunChanged { run, origin });
        queued.into_iter().chain(changed).map(|e| e.payload()).collect()
    }

    /// Asks for one `queued` notification after this call (a permit stored while the sender is
    /// busy).
    fn give_queued(&self) {
        self.lock().queued = true;
        self.wake.notify_one();
    }

    /// Asks for a `changed` notification of each of `runs` after this call.
    fn give_changed(&self, runs: &[RunId]) {
        self.lock().changed.extend_from_slice(runs);
        self.wake.notify_one();
    }

    /// Lets the sender see the closed pool and end.
    pub(super) fn stop(&self) {
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Hints are not state: a poisoned list is still a list.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The notifications of the store's database, from when [`Store::listen`] returned, but the
/// listening store's own `RunChanged` (its watchers heard those in-process).
pub struct StoreEvents {
    listener: PgListener,
    origin: u64,
}

impl StoreEvents {
    /// The next event. A lost connection is re-established (what was sent meanwhile is lost);
    /// an error is one the reconnect could not mend.
    pub async fn next(&mut self) -> StoreResult<StoreEvent> {
        loop {
            let notification = self.listener.recv().await?;
            match StoreEvent::parse(notification.payload()) {
                Some(StoreEvent::RunChanged { origin, .. }) if origin == self.origin => {}
                Some(event) => return Ok(event),
                None => tracing::warn!(payload = notification.payload(), "unknown store event"),
            }
        }
    }
}

impl Store {
    /// Tells the other servers (PostgreSQL; nothing on SQLite) that `runs` were queued, and
    /// every watcher that they changed ([`Store::runs_changed`]), once the writes that queued
    /// them are committed. Never waits.
    pub(super) fn hint_queued(&self, runs: &[RunId]) {
        if let Some(hints) = &self.hints {
            hints.give_queued();
        }
        self.runs_changed(runs);
    }

    /// The one way a change of run records is announced, called by every store function that
    /// writes one once the write is committed: this server's watchers hear it at once, the other
    /// servers on PostgreSQL through the next `changed` notifications. Never waits.
    pub(super) fn runs_changed(&self, runs: &[RunId]) {
        if runs.is_empty() {
            return;
        }
        if let Some(hints) = &self.hints {
            hints.give_changed(runs);
        }
        for run in runs {
            self.relay_run_changed(run.clone());
        }
    }

    /// Tells this server's watchers that `run` changed: what the relay of the other servers'
    /// notifications calls.
    pub fn relay_run_changed(&self, run: RunId) {
        // Err only means nobody watches.
        let _ = self.changes.send(run);
    }

    /// The runs whose records change from now on (by this server or, on PostgreSQL, another),
    /// each maybe more than once. Hints, not state: a watcher reads the store for what changed,
    /// and one that lags behind ([`broadcast::error::RecvError::Lagged`]) reads it anew.
    pub fn watch_runs(&self) -> broadcast::Receiver<RunId> {
        self.changes.subscribe()
    }

    /// Sends `event` now (PostgreSQL; nothing on SQLite), for writes made outside a transaction.
    /// The write stands whether or not the hint goes out, so a failure is only logged.
    pub(super) async fn notify(&self, event: &StoreEvent) {
        if let Db::Postgres(pool) = self.db() {
            let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(event.payload());
            if let Err(e) = sent.execute(pool).await {
                tracing::warn!(?event, "notifying the other servers failed: {e}");
            }
        }
    }

    /// Listens to what other servers on this database write; `None` on SQLite, where no other
    /// server can write.
    pub async fn listen(&self) -> StoreResult<Option<StoreEvents>> {
        let Db::Postgres(pool) = self.db() else { return Ok(None) };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(StoreEvents { listener, origin: self.origin }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_event_payloads_round_trip() {
        let run = RunId::new("ka1z");
        for event in [
            StoreEvent::Queued,
            StoreEvent::Log { run: run.clone(), len: 12345 },
            StoreEvent::Ended(run.clone()),
            StoreEvent::CancelRequested(run.clone()),
            StoreEvent::RunChanged { run, origin: u64::MAX },
        ] {
            assert_eq!(StoreEvent::parse(&event.payload()), Some(event));
        }
        for bad in [
            "",
            "queued x",
            "log ka1",
            "log ka1 -3",
            "log ka1 3 4",
            "ended",
            "cancel",
            "other ka1",
            "changed ka1",
            "changed x ka1",
        ] {
            assert_eq!(StoreEvent::parse(bad), None, "{bad:?}");
        }
    }
}
