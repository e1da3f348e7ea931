//! Wake-ups between servers that share a PostgreSQL database: the store NOTIFYs that a run was
//! queued, that a run's log grew, that a run ended or that a held run is to be cancelled, and
//! every server LISTENs
//! ([`Store::listen`]) and passes what it hears to its own log hub and agent. So a follower on
//! server B hears an agent writing through server A at once, and B's idle workers claim a run
//! submitted to A without waiting for their poll. Like the in-process hub these are hints, never
//! state: readers still read the store, and a missed notification (a reconnect) costs one
//! recheck interval. On SQLite (one server) nothing is sent and there is nothing to hear.
//!
//! A notification inside a transaction is delivered when it commits, and not at all when it rolls
//! back, so nobody is woken for a run or bytes that do not exist.
//!
//! `Queued` is the exception: it is sent after the commit, by one task per server that merges
//! the hints given meanwhile into one ([`QueuedHints`]). PostgreSQL lets one notifying
//! transaction at a time commit (the notification queue's lock is held through the commit's
//! WAL flush), so a `pg_notify` in every submission made submissions through all servers
//! commit one by one; with pgbench, 8 clients inserting runs went 2.6–3.8× faster without it.

use std::sync::Arc;

use kiln_task::run_id::RunId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

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
}

impl StoreEvent {
    /// `queued`, `log <run> <len>`, `ended <run>` or `cancel <run>` (run IDs have no spaces).
    fn payload(&self) -> String {
        match self {
            Self::Queued => "queued".to_string(),
            Self::Log { run, len } => format!("log {run} {len}"),
            Self::Ended(run) => format!("ended {run}"),
            Self::CancelRequested(run) => format!("cancel {run}"),
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

/// The sender of [`StoreEvent::Queued`] on PostgreSQL: hints given while it sends become the
/// next single notification (a waiting server claims every queued run it may take, so one
/// wake-up serves any number of runs).
#[derive(Debug, Clone)]
pub(super) struct QueuedHints(Arc<Notify>);

impl QueuedHints {
    /// Starts the sender on `pool`; it ends when the pool is closed ([`QueuedHints::stop`]).
    pub(super) fn start(pool: PgPool) -> Self {
        let wake = Arc::new(Notify::new());
        let hints = Self(wake.clone());
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                if pool.is_closed() {
                    return;
                }
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(StoreEvent::Queued.payload())
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!("telling the other servers of queued runs failed: {e}");
                }
            }
        });
        hints
    }

    /// Asks for one notification after this call (a permit stored while the sender is busy).
    pub(super) fn give(&self) {
        self.0.notify_one();
    }

    /// Lets the sender see the closed pool and end.
    pub(super) fn stop(&self) {
        self.0.notify_one();
    }
}

/// The notifications of the store's database, from when [`Store::listen`] returned.
pub struct StoreEvents(PgListener);

impl StoreEvents {
    /// The next event. A lost connection is re-established (what was sent meanwhile is lost);
    /// an error is one the reconnect could not mend.
    pub async fn next(&mut self) -> StoreResult<StoreEvent> {
        loop {
            let notification = self.0.recv().await?;
            match StoreEvent::parse(notification.payload()) {
                Some(event) => return Ok(event),
                None => tracing::warn!(payload = notification.payload(), "unknown store event"),
            }
        }
    }
}

impl Store {
    /// Tells the other servers (PostgreSQL; nothing on SQLite) that runs were queued, once the
    /// writes that queued them are committed. Never waits.
    pub(super) fn hint_queued(&self) {
        if let Some(hints) = &self.queued_hints {
            hints.give();
        }
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
        Ok(Some(StoreEvents(listener)))
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
            StoreEvent::CancelRequested(run),
        ] {
            assert_eq!(StoreEvent::parse(&event.payload()), Some(event));
        }
        for bad in
            ["", "queued x", "log ka1", "log ka1 -3", "log ka1 3 4", "ended", "cancel", "other ka1"]
        {
            assert_eq!(StoreEvent::parse(bad), None, "{bad:?}");
        }
    }
}
