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
use kiln_api::task::TaskDefinition;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
    let definitions: HashMap<String, TaskDefinition> = store
        .tasks_with_due_timers(now)
        .await?
        .iter()
        .filter_map(|record| match task_def::open(secrets, record) {
            Ok(def) => Some((record.name.clone(), def)),
            Err(e) => {
                tracing::error!(task = %record.name, "{e}");
                None
            }
        })
        .collect();
    let mut claims = Vec::with_capacity(due.len());
    for t in due {
        let Some(expected) = t.next_fire_at else { continue };
        let (decision, run) = match Schedule::parse(&t.schedule) {
            Ok(schedule) => {
                let decision = timer::decide(&schedule, Some(expected), now);
                let def = definitions.get(&t.task_name);
                let run = match (decision.fire, def) {
                    (Some(occurrence), Some(def)) => {
                        let firing = Firing::Timer { name: &t.name, occurrence };
                        task_run::new_run(secrets, &t.task_name, def, &firing)
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::queue;
    use crate::store::TimerRecord;
    use kiln_api::task::{TaskDefinition, TimerSpec};
    use kiln_task::run_id::RunIdPrefix;

    struct Fixture {
        dir: tempfile::TempDir,
        secrets: SecretBox,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let secrets = SecretBox::open_or_create(dir.path()).unwrap();
            Fixture { dir, secrets }
        }

        /// A store on the fixture's database file: a second call is a restarted server (or
        /// a second one sharing the database).
        async fn store(&self) -> Store {
            Store::open(self.dir.path(), RunIdPrefix::new("tt").unwrap()).await.unwrap()
        }

        async fn task(&self, store: &Store, name: &str, timers: &[(&str, &str, DateTime<Utc>)]) {
            let def: TaskDefinition = serde_json::from_value(serde_json::json!({
                "contextPath": "/dev/null",
                "step": {"type": "EncodedTask",
                    "encodedTaskContent": kiln_api::base64_text::encode("steps:\n  - cmd: busybox true\n")},
            }))
            .unwrap();
            let write = task_def::seal(&self.secrets, name, &def).unwrap();
            let (_, webhook) = task_def::new_webhook_secret(&self.secrets, name).unwrap();
            let timers: Vec<TimerRecord> = timers
                .iter()
                .map(|(timer, schedule, next)| {
                    let spec = TimerSpec {
                        name: timer.to_string(),
                        schedule: schedule.to_string(),
                        status: kiln_api::task::TaskStatus::Enabled,
                    };
                    let schedule = Schedule::parse(schedule).unwrap();
                    TimerRecord {
                        next_fire_at: Some(*next),
                        ..task_def::timer_record(name, &spec, &schedule, *next)
                    }
                })
                .collect();
            store.create_task(name, write, webhook, &timers).await.unwrap();
        }
    }

    fn at(h: u32, m: u32, s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s).unwrap() + chrono::TimeDelta::milliseconds(ms)
    }

    #[tokio::test]
    async fn timers_fire_each_occurrence_once_across_restarts_and_record_missed_ones() {
        let f = Fixture::new();
        let store = f.store().await;
        f.task(&store, "nightly", &[("t1", "* * * * *", at(10, 0, 0, 0))]).await;

        assert!(tick(&store, &f.secrets, at(9, 59, 59, 900)).await.unwrap().is_empty());
        let runs = tick(&store, &f.secrets, at(10, 0, 0, 300)).await.unwrap();
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!((run.trigger.as_str(), run.task_name.as_deref()), ("Timer", Some("nightly")));
        let detail = queue::trigger_detail(run).timer_trigger.unwrap();
        assert_eq!(detail.timer_trigger_name, "t1");
        assert_eq!(detail.schedule_occurrence, at(10, 0, 0, 0));
        assert!(tick(&store, &f.secrets, at(10, 0, 0, 400)).await.unwrap().is_empty());

        // A restart: the next fire time is stored, so the occurrence that fired stays fired.
        store.close().await;
        let store = f.store().await;
        assert!(tick(&store, &f.secrets, at(10, 0, 30, 0)).await.unwrap().is_empty());
        // Down from 10:00:30 to 10:05:10: 10:05 fires (10 s late), 10:01-10:04 are history.
        let runs = tick(&store, &f.secrets, at(10, 5, 10, 0)).await.unwrap();
        assert_eq!(runs.len(), 1);
        let occurrence = queue::trigger_detail(&runs[0]).timer_trigger.unwrap().schedule_occurrence;
        assert_eq!(occurrence, at(10, 5, 0, 0));
        let history = store.task_events("nightly", 10).await.unwrap();
        let missed: Vec<&str> = history.iter().map(|e| e.detail.as_str()).collect();
        assert_eq!(missed.len(), 4, "{missed:?}");
        assert!(missed.iter().all(|d| d.contains("not replayed")));
        assert!(missed[0].contains("10:04:00") && missed[3].contains("10:01:00"), "{missed:?}");
        let everything = crate::store::RunFilter { top: 0, ..Default::default() };
        assert_eq!(store.list_runs(&everything).await.unwrap().len(), 2);
    }

    /// On SQLite (two stores on one file) and, when the test environment has it, on PostgreSQL
    /// (two pools on one database, as two servers have).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timers_two_servers_one_database_fire_once() {
        let f = Fixture::new();
        for db in crate::store::test_db::backends().await {
            let (a, b) = (db.open_prefixed("tt").await, db.open_prefixed("tt").await);
            let names: Vec<String> = (0..20).map(|i| format!("task-{i}")).collect();
            for name in &names {
                let timers =
                    [("t1", "* * * * *", at(10, 0, 0, 0)), ("t2", "*/2 * * * *", at(10, 0, 0, 0))];
                f.task(&a, name, &timers).await;
            }
            let now = at(10, 0, 0, 200);
            let (ra, rb) = tokio::join!(tick(&a, &f.secrets, now), tick(&b, &f.secrets, now));
            let fired = ra.unwrap().len() + rb.unwrap().len();
            assert_eq!(fired, 40, "each of 20 tasks' two timers fires once");
            let everything = crate::store::RunFilter { top: 0, ..Default::default() };
            assert_eq!(a.list_runs(&everything).await.unwrap().len(), 40);
            db.drop().await;
        }
    }

    #[tokio::test]
    async fn timers_disabled_timers_and_tasks_do_not_fire() {
        let f = Fixture::new();
        let store = f.store().await;
        f.task(&store, "a", &[("t1", "* * * * *", at(10, 0, 0, 0))]).await;
        let mut timer = store.timers("a").await.unwrap().remove(0);
        timer.enabled = false;
        store.update_timer(&timer).await.unwrap();
        assert!(tick(&store, &f.secrets, at(10, 0, 1, 0)).await.unwrap().is_empty());

        f.task(&store, "b", &[("t1", "* * * * *", at(10, 0, 0, 0))]).await;
        let record = store.get_task("b").await.unwrap();
        let mut def = task_def::open(&f.secrets, &record).unwrap();
        def.status = kiln_api::task::TaskStatus::Disabled;
        store.update_task("b", task_def::seal(&f.secrets, "b", &def).unwrap()).await.unwrap();
        assert!(tick(&store, &f.secrets, at(10, 0, 1, 0)).await.unwrap().is_empty());
        assert_eq!(store.next_timer_fire().await.unwrap(), None);
    }
}
