//! The timer loop (reference §5.3): at each due time it claims every due timer occurrence in one
//! transaction and queues their runs. The rules per timer are [`crate::trigger::timer::decide`];
//! exactly-once is the store's compare-and-set of the next fire time
//! ([`crate::store::triggers`]), so a restart or a second server neither repeats nor loses an
//! occurrence, and occurrences missed while no server ran are recorded, never replayed.
//!
//! [`tick`] takes the time as an argument: tests drive it with chosen instants instead of
//! sleeping until a minute turns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::task::TaskDefinition;
use crate::queue::{self, Origin};
use crate::secret_box::SecretBox;
use crate::store::{ClaimOutcome, RunRecord, Store, StoreResult, TimerClaim};
use crate::task_def;
use crate::task_run::{self, Firing};
use crate::trigger::cron::Schedule;
use crate::trigger::timer;

/// The longest the loop sleeps without looking: timers written by another server process are
/// seen within this.
const RECHECK: Duration = Duration::from_secs(5);

/// Claims the timer occurrences due at `now` and queues their runs; returns the runs queued.
/// An occurrence that cannot be queued (the task's definition does not open, its schedule no
/// longer parses) is still claimed, with an error in the server log, so a broken timer cannot
/// keep the loop busy.
pub async fn tick(
    store: &Store,
    secrets: &SecretBox,
    now: DateTime<Utc>,
) -> StoreResult<Vec<RunRecord>> {
    let due = store.due_timers(now).await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut definitions: HashMap<String, Option<TaskDefinition>> = HashMap::new();
    let mut claims = Vec::with_capacity(due.len());
    for t in due {
        let Some(expected) = t.next_fire_at else { continue };
        if !definitions.contains_key(&t.task_name) {
            let def = match store.get_task(&t.task_name).await {
                Ok(record) => task_def::open(secrets, &record)
                    .inspect_err(|e| tracing::error!(task = %t.task_name, "{e}"))
                    .ok(),
                Err(e) => {
                    tracing::error!(task = %t.task_name, "reading the task: {e}");
                    None
                }
            };
            definitions.insert(t.task_name.clone(), def);
        }
        let (decision, run) = match Schedule::parse(&t.schedule) {
            Ok(schedule) => {
                let decision = timer::decide(&schedule, Some(expected), now);
                let def = definitions.get(&t.task_name).and_then(Option::as_ref);
                let run = match (decision.fire, def) {
                    (Some(occurrence), Some(def)) => {
                        new_run(secrets, def, &t.task_name, &t.name, occurrence)
                            .inspect_err(|e| {
                                tracing::error!(task = %t.task_name, timer = %t.name, "cannot queue the timer's run: {e}");
                            })
                            .ok()
                    }
                    _ => None,
                };
                (decision, run)
            }
            Err(e) => {
                tracing::error!(task = %t.task_name, timer = %t.name, "timer stopped: {e}");
                (timer::Decision { fire: None, missed: Vec::new(), next: None }, None)
            }
        };
        claims.push(TimerClaim {
            task_name: t.task_name,
            timer_name: t.name,
            expected,
            next: decision.next,
            missed: decision.missed,
            run,
        });
    }
    let outcomes = store.claim_timers(claims).await?;
    Ok(outcomes
        .into_iter()
        .filter_map(|o| match o {
            ClaimOutcome::Claimed(run) => run.map(|r| *r),
            ClaimOutcome::Lost => None,
        })
        .collect())
}

fn new_run(
    secrets: &SecretBox,
    def: &TaskDefinition,
    task: &str,
    timer: &str,
    occurrence: DateTime<Utc>,
) -> Result<crate::store::NewRun, String> {
    let (request, trigger) = task_run::request_for(def, &Firing::Timer { name: timer, occurrence })
        .map_err(|e| e.to_string())?;
    queue::new_run(secrets, &request, Origin { task_name: Some(task.to_string()), trigger })
        .map_err(|e| e.to_string())
}

/// Runs [`tick`] at every due time until `stop`. `changed` is notified when timers change
/// (so a new timer's first occurrence is not slept through); `queued` is called when runs were
/// queued (the agent's wake-up).
pub fn spawn(
    store: Store,
    secrets: Arc<SecretBox>,
    changed: Arc<Notify>,
    queued: impl Fn() + Send + 'static,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match tick(&store, &secrets, Utc::now()).await {
                Ok(runs) if !runs.is_empty() => {
                    tracing::info!(runs = runs.len(), "timers fired");
                    queued();
                }
                Ok(_) => {}
                Err(e) => tracing::error!("timer loop: {e}"),
            }
            let wait = match store.next_timer_fire().await {
                Ok(Some(next)) => {
                    (next - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(RECHECK)
                }
                Ok(None) => RECHECK,
                Err(e) => {
                    tracing::error!("timer loop: {e}");
                    RECHECK
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = changed.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}
