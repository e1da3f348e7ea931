//! Run status and run type (reference §6.1, §6.2): the closed vocabularies stored as text in
//! the `runs` table, with their parsing, so the rest of the store never handles raw strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A run's status. Terminal = Succeeded, Failed, Canceled, Error, Timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RunStatus {
    Queued,
    Started,
    Running,
    Succeeded,
    Failed,
    Canceled,
    Error,
    Timeout,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Queued,
        RunStatus::Started,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Canceled,
        RunStatus::Error,
        RunStatus::Timeout,
    ];

    /// Whether the run is over: nothing changes a terminal run's status again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Started | RunStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "Queued",
            RunStatus::Started => "Started",
            RunStatus::Running => "Running",
            RunStatus::Succeeded => "Succeeded",
            RunStatus::Failed => "Failed",
            RunStatus::Canceled => "Canceled",
            RunStatus::Error => "Error",
            RunStatus::Timeout => "Timeout",
        }
    }
}

impl From<kiln_plan::event::RunStatus> for RunStatus {
    /// The worker's verdict on a run it executed (always terminal).
    fn from(status: kiln_plan::event::RunStatus) -> Self {
        match status {
            kiln_plan::event::RunStatus::Succeeded => RunStatus::Succeeded,
            kiln_plan::event::RunStatus::Failed => RunStatus::Failed,
            kiln_plan::event::RunStatus::Canceled => RunStatus::Canceled,
            kiln_plan::event::RunStatus::Timeout => RunStatus::Timeout,
            kiln_plan::event::RunStatus::Error => RunStatus::Error,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of the enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

impl FromStr for RunStatus {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownName { kind: "run status", value: s.to_string() })
    }
}

/// How the run came about (§6.2 `runType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RunType {
    QuickBuild,
    QuickRun,
    AutoBuild,
    AutoRun,
}

impl RunType {
    pub const ALL: [RunType; 4] =
        [RunType::QuickBuild, RunType::QuickRun, RunType::AutoBuild, RunType::AutoRun];

    pub fn as_str(self) -> &'static str {
        match self {
            RunType::QuickBuild => "QuickBuild",
            RunType::QuickRun => "QuickRun",
            RunType::AutoBuild => "AutoBuild",
            RunType::AutoRun => "AutoRun",
        }
    }
}

impl fmt::Display for RunType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunType {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunType::ALL
            .into_iter()
            .find(|run_type| run_type.as_str() == s)
            .ok_or_else(|| UnknownName { kind: "run type", value: s.to_string() })
    }
}
