//! `GET /runs` with `Accept: text/event-stream`: the run list, live, so the web app's runs page
//! shows new runs and status changes without reloading or polling. The stream starts with the
//! filter's first page, then sends each run that is queued or changes while it matches the
//! filter, and `removed` when a run it sent no longer matches (its status left a status filter).
//! `GET /runs/{id}` the same way is the watch of one run (its status, its steps).
//!
//! Wake-ups come from the store ([`Store::watch_runs`]: this server's writes in-process, other
//! servers' through PostgreSQL's notifications) and only say which run to read again. Each
//! record sent is read from the store through the list's own filter narrowed to that run, so a
//! watch shows exactly what `GET /runs` would, in the same representation. A watcher that fell
//! behind the wake-ups reads the first page anew.
//!
//! Events carry no `id:`. The server keeps no history of changes to replay from a
//! `Last-Event-ID`; every connection starts with the first page instead, which is what a
//! reconnecting runs page shows (runs beyond it that changed meanwhile are seen on reload).

use std::collections::HashSet;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use futures_util::{StreamExt as _, stream};
use kiln_api::{self as api, RunQuery};
use kiln_task::run_id::RunId;
use tokio::sync::broadcast::{self, error::RecvError};

use super::error::ApiError;
use super::runs::{run_filter, views};
use crate::store::runs::DEFAULT_TOP;
use crate::store::{RunFilter, Store};

/// The watch of `query`'s runs (its filters; `top` sizes the first page).
pub fn watch_list(store: &Store, query: &RunQuery) -> Result<Response, ApiError> {
    if query.skip_token.is_some() {
        return Err(ApiError::BadRequest(
            "skipToken pages a list; a watch starts at the newest runs".to_string(),
        ));
    }
    Ok(watch(store, RunFilter { top: query.top.unwrap_or(DEFAULT_TOP), ..run_filter(query) }))
}

/// The watch of run `id`, which must exist.
pub async fn watch_run(store: &Store, id: &RunId) -> Result<Response, ApiError> {
    store.get_run(id).await?;
    Ok(watch(store, RunFilter { run: Some(id.clone()), top: 1, ..RunFilter::default() }))
}

/// The watch of the runs `first_page` matches, starting with that page.
fn watch(store: &Store, first_page: RunFilter) -> Response {
    // Subscribed before the first page is read: a change in between is sent after it.
    let watcher = Watcher {
        store: store.clone(),
        changes: store.watch_runs(),
        first_page,
        shown: HashSet::new(),
        resync: true,
    };
    let events = stream::unfold(watcher, |mut watcher| async move {
        match watcher.next().await {
            Ok(Some(events)) => Some((events, watcher)),
            Ok(None) => None,
            Err(e) => {
                // The client's EventSource reconnects and starts again from the first page.
                tracing::warn!(error = %e, "watching runs failed");
                None
            }
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok::<_, Infallible>)));
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// One client's watch.
struct Watcher {
    store: Store,
    changes: broadcast::Receiver<RunId>,
    /// The client's filters, with the first page's size.
    first_page: RunFilter,
    /// The runs sent as matching, so one that stops matching is `removed` (and no other is).
    shown: HashSet<RunId>,
    /// The first page is to be sent (at the start, and after falling behind).
    resync: bool,
}

impl Watcher {
    /// The next events to send; `None` once the store is gone.
    async fn next(&mut self) -> Result<Option<Vec<Event>>, ApiError> {
        if std::mem::take(&mut self.resync) {
            return self.first_page().await.map(Some);
        }
        loop {
            match self.changes.recv().await {
                Ok(run) => {
                    if let Some(event) = self.changed(run).await? {
                        return Ok(Some(vec![event]));
                    }
                }
                Err(RecvError::Lagged(_)) => return self.first_page().await.map(Some),
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// `run` for each run of the first page, oldest first (so a client prepending each ends
    /// with the newest on top), then `ready` with their number (an `EventSource` drops events
    /// without data).
    async fn first_page(&mut self) -> Result<Vec<Event>, ApiError> {
        let records = self.store.list_runs(&self.first_page).await?;
        let mut events = Vec::with_capacity(records.len() + 1);
        for run in views(&self.store, &records).await?.iter().rev() {
            self.shown.insert(RunId::new(&run.run_id));
            events.push(run_event(run)?);
        }
        events.push(Event::default().event("ready").data(records.len().to_string()));
        Ok(events)
    }

    /// What the client is told of a change of `run`: the record when it matches, `removed` when
    /// it was sent before and matches no more, nothing when it never concerned this client.
    async fn changed(&mut self, run: RunId) -> Result<Option<Event>, ApiError> {
        let only = RunFilter { run: Some(run.clone()), top: 1, ..self.first_page.clone() };
        let records = self.store.list_runs(&only).await?;
        if records.is_empty() {
            return Ok(self.shown.remove(&run).then(|| removed_event(&run)));
        }
        let view = views(&self.store, &records).await?.remove(0);
        self.shown.insert(run);
        run_event(&view).map(Some)
    }
}

fn run_event(run: &api::Run) -> Result<Event, ApiError> {
    let json = serde_json::to_string(run).map_err(ApiError::internal)?;
    Ok(Event::default().event("run").data(json))
}

fn removed_event(run: &RunId) -> Event {
    Event::default().event("removed").data(run.as_str())
}
