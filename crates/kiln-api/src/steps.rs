//! A run's steps as the API shows them (`steps` of a run record): each step's status, times,
//! exit code and `when` dependencies, and the [`StepBoard`] an agent keeps of them from the
//! worker's events and reports whole (`POST /agent/runs/{id}/steps`). ACR has no per-step REST
//! record, so the fields are named plainly.

use chrono::{DateTime, Utc};
use kiln_plan::event::{Event, StepStatus as Verdict};
use kiln_plan::plan::StepId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a step is: not started, running, or how it ended (ACR's log words: `successful`,
/// `failed`, `skipped`; kiln's `ignored` and `canceled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waiting for the steps it depends on (or for the run to start).
    Pending,
    Running,
    Successful,
    Failed,
    /// Failed, but `ignoreErrors` let the run go on.
    Ignored,
    /// Never started: a dependency failed or the run ended first.
    Skipped,
    /// Stopped because the run ended while it ran.
    Canceled,
}

impl From<Verdict> for StepStatus {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Successful => StepStatus::Successful,
            Verdict::Failed => StepStatus::Failed,
            Verdict::Ignored => StepStatus::Ignored,
            Verdict::Skipped => StepStatus::Skipped,
            Verdict::Canceled => StepStatus::Canceled,
        }
    }
}

/// One step of a run. Unknown fields are ignored, as in the run record that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The step's `id` in the task file (`acb_step_N` when it has none).
    pub id: String,
    pub status: StepStatus,
    /// When its first container (or build) started.
    #[serde(default, with = "super::millis::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, with = "super::millis::option", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finish_time: Option<DateTime<Utc>>,
    /// The exit code of its last container, when one ran to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The steps it waits for (its `when`; without one, the step before it).
    pub depends_on: Vec<String>,
}

/// A run's steps, in task-file order, kept up to date from the worker's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepBoard(Vec<Step>);

impl StepBoard {
    /// Every step of the plan pending, each with what it depends on.
    pub fn new<'a>(steps: impl IntoIterator<Item = (&'a StepId, &'a [StepId])>) -> Self {
        Self(
            steps
                .into_iter()
                .map(|(id, depends_on)| Step {
                    id: id.to_string(),
                    status: StepStatus::Pending,
                    start_time: None,
                    finish_time: None,
                    exit_code: None,
                    depends_on: depends_on.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        )
    }

    /// Notes `event`, which happened `now`; `true` when a step changed.
    pub fn observe(&mut self, event: &Event, now: DateTime<Utc>) -> bool {
        match event {
            Event::StepStarted { step, .. } => self.update(step, |s| {
                s.status = StepStatus::Running;
                // A retry or repetition goes on running since the first start.
                s.start_time.get_or_insert(now);
                s.finish_time = None;
            }),
            Event::StepFinished { step, status, exit_code, .. } => self.update(step, |s| {
                s.status = (*status).into();
                s.finish_time = Some(now);
                s.exit_code = *exit_code;
            }),
            _ => false,
        }
    }

    /// The steps as they are now.
    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    fn update(&mut self, id: &StepId, change: impl FnOnce(&mut Step)) -> bool {
        let Some(step) = self.0.iter_mut().find(|s| s.id == id.as_str()) else { return false };
        let before = step.clone();
        change(step);
        *step != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("time")
    }

    #[test]
    fn the_board_follows_starts_and_ends() {
        let (a, b) = (StepId::new("a"), StepId::new("b"));
        let after_a = [a.clone()];
        let mut board = StepBoard::new([(&a, &[][..]), (&b, &after_a[..])]);
        assert!(board.steps().iter().all(|s| s.status == StepStatus::Pending));
        assert_eq!(board.steps()[1].depends_on, ["a"]);
        assert!(board.observe(&Event::StepStarted { step: a.clone(), attempt: 1 }, at(10)));
        // A second attempt keeps the first start.
        assert!(!board.observe(&Event::StepStarted { step: a.clone(), attempt: 2 }, at(20)));
        let failed = Event::StepFinished {
            step: a.clone(),
            status: Verdict::Failed,
            exit_code: Some(3),
            elapsed_ms: 25,
            error: None,
        };
        assert!(board.observe(&failed, at(35)));
        let skipped = Event::StepFinished {
            step: b.clone(),
            status: Verdict::Skipped,
            exit_code: None,
            elapsed_ms: 0,
            error: None,
        };
        assert!(board.observe(&skipped, at(36)));
        let unknown = Event::StepStarted { step: StepId::new("c"), attempt: 1 };
        assert!(!board.observe(&unknown, at(40)));
        let json = serde_json::to_value(board.steps()).expect("JSON");
        assert_eq!(
            json,
            serde_json::json!([
                {"id": "a", "status": "failed", "startTime": "1970-01-01T00:00:00.010Z",
                 "finishTime": "1970-01-01T00:00:00.035Z", "exitCode": 3, "dependsOn": []},
                {"id": "b", "status": "skipped", "finishTime": "1970-01-01T00:00:00.036Z",
                 "dependsOn": ["a"]}
            ])
        );
    }
}
