//! What a run reports while it executes: the [`Event`] stream and the status vocabulary.
//!
//! Events are the worker's only output besides the final `RunSummary` (`kiln-worker`), and they are
//! serde-serializable so a remote worker can ship them as JSON lines. They travel over a
//! **bounded** channel: when the consumer is slow, steps wait for it (Docker buffers the
//! container's output meanwhile) instead of kiln buffering a step's 200 MB of output in memory.

use serde::{Deserialize, Serialize};

use crate::plan::{RunId, StepId};

/// Largest log payload of one [`Event::Log`]; bigger container frames are split so a single
/// event never holds more than this.
pub const MAX_LOG_CHUNK: usize = 64 * 1024;

/// One thing that happened in a run, in the order it happened (per step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: RunId,
    },
    /// A step launches its `attempt`th container (1-based, counting retries and repetitions),
    /// or its build/push for the `attempt`th time.
    StepStarted {
        step: StepId,
        attempt: u32,
    },
    /// Output. `step` is `None` for run-level system lines (network setup, cleanup).
    Log {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<StepId>,
        stream: LogStream,
        /// Raw bytes as the container wrote them (not necessarily UTF-8 nor whole lines);
        /// base64 in JSON.
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    StepFinished {
        step: StepId,
        status: StepStatus,
        /// Exit code of the step's last container, when one ran to completion.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        elapsed_ms: u64,
        /// Why the step failed (also set for `ignored` steps).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    ImageBuilt {
        step: StepId,
        image: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    ImagePushed {
        step: StepId,
        image: String,
        digest: String,
    },
    /// The dependency report of a build step (reference §6.3), as the build module produced it.
    DependencyReport {
        step: StepId,
        report: serde_json::Value,
    },
    RunFinished {
        run_id: RunId,
        status: RunStatus,
        elapsed_ms: u64,
        /// For a failed run: `failed to run step ID: <id>: <error>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// kiln's own lines (ACR's vocabulary: `Executing step ID: …`, `Launching container …`).
    System,
}

/// How a step ended. ACR knows `skipped`, `inprogress`, `successful`, `failed` (§6.1); kiln
/// adds `ignored` (failed, but `ignoreErrors` let the run go on) and `canceled` (stopped because
/// the run ended while the step was running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Successful,
    Failed,
    Ignored,
    /// Never started: a dependency failed or the run ended first.
    Skipped,
    Canceled,
}

impl StepStatus {
    /// Whether dependants may start after this step.
    pub fn lets_dependants_run(self) -> bool {
        matches!(self, StepStatus::Successful | StepStatus::Ignored)
    }
}

/// ACR's closing line of a step, `Step ID: S marked as successful (elapsed time in seconds:
/// 1.180000)`, with `verdict` in place of `successful`; the worker writes it for the steps of a
/// successful run, the log formatter for the others.
pub fn step_marked(step: &StepId, verdict: &str, elapsed_ms: u64) -> String {
    format!(
        "Step ID: {step} marked as {verdict} (elapsed time in seconds: {:.6})",
        std::time::Duration::from_millis(elapsed_ms).as_secs_f64()
    )
}

/// Terminal run statuses, as in ACR's `RunStatus` (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStatus {
    Succeeded,
    /// A step failed without `ignoreErrors`.
    Failed,
    /// The run's cancellation token fired.
    Canceled,
    /// The run-wide timeout (`kiln_worker::RunOptions::timeout`) expired.
    Timeout,
    /// kiln itself could not run the plan (engine, workspace, network or plan problems).
    Error,
}

/// Log bytes as a base64 string in JSON: compact, and arbitrary binary output survives.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let events = vec![
            Event::RunStarted { run_id: RunId::new("ka1") },
            Event::Log {
                step: Some(StepId::new("a")),
                stream: LogStream::Stdout,
                data: vec![0, 159, b'\n'],
            },
            Event::StepFinished {
                step: StepId::new("a"),
                status: StepStatus::Ignored,
                exit_code: Some(3),
                elapsed_ms: 12,
                error: Some("container exited with code 3".into()),
            },
            Event::DependencyReport {
                step: StepId::new("b"),
                report: serde_json::json!([{"image": null}]),
            },
            Event::RunFinished {
                run_id: RunId::new("ka1"),
                status: RunStatus::Succeeded,
                elapsed_ms: 40,
                error: None,
            },
        ];
        for event in events {
            let json = serde_json::to_string(&event).expect("serializes");
            let back: Event = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, event, "{json}");
        }
    }

    #[test]
    fn json_shape_is_readable() {
        let json = serde_json::to_value(Event::Log {
            step: None,
            stream: LogStream::System,
            data: b"hi\n".to_vec(),
        })
        .expect("serializes");
        assert_eq!(json, serde_json::json!({"event": "log", "stream": "system", "data": "aGkK"}));
    }

    #[test]
    fn only_successful_and_ignored_release_dependants() {
        assert!(StepStatus::Successful.lets_dependants_run());
        assert!(StepStatus::Ignored.lets_dependants_run());
        for status in [StepStatus::Failed, StepStatus::Skipped, StepStatus::Canceled] {
            assert!(!status.lets_dependants_run());
        }
    }
}
