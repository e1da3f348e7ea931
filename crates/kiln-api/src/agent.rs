//! The agent protocol's wire types (issue 12): what an agent — `kiln agent run` on another
//! machine, or a worker embedded in `kiln serve` — and the control plane exchange. One
//! definition serves the server's `/agent/...` routes, their OpenAPI document, the remote agent's
//! HTTP client and the in-process link, so every agent speaks exactly this.
//!
//! A lease hands the agent everything a run needs and nothing it must look up: the opened
//! request (secrets included, so leases only travel over TLS or loopback), the task's and the
//! server's registry logins, the SSH identity for git contexts, the server's default registry
//! and image aliases. Every later write names the lease's `epoch`; a write with a stale epoch is
//! refused (the run was taken away), which is how a lost agent is fenced out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::steps::Step;
use super::task::RegistryLogin;
use super::{Image, RunRequest, TriggerDetail};
use crate::status::RunStatus;

/// The most log bytes one [`LogPart`] may carry (decoded), as GitLab's trace limit: a larger
/// part is refused, not truncated.
pub const MAX_LOG_PART: usize = 1024 * 1024;

/// The longest a lease or watch call waits for something to happen.
pub const MAX_WAIT_SECS: u64 = 30;

/// The answer to `POST /agent/sessions`: who the token says the agent is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSession {
    pub name: String,
    /// The pool whose runs it takes; `None`: runs that name no pool.
    pub pool: Option<String>,
}

/// `POST /agent/leases`: an agent with a free slot asks for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseRequest {
    /// Platforms the agent's engine runs, `os/arch[/variant]` (`linux/amd64`).
    pub platforms: Vec<String>,
    /// Runs the agent executes at once.
    pub capacity: u32,
    /// Runs it holds now.
    #[serde(default)]
    pub in_hand: u32,
    /// `kiln --version` of the agent.
    #[serde(default)]
    pub version: String,
    /// Seconds to wait for a run when none is queued (at most [`MAX_WAIT_SECS`]).
    #[serde(default)]
    pub wait: u64,
}

/// A run the agent now holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub run_id: String,
    /// Every write about this run names it.
    pub epoch: i64,
    /// Heartbeat well within this (the server's `--agent-lease`).
    pub lease_seconds: u64,
    /// The run's log so far (the queue's lines): where the agent's first log part starts.
    pub log_length: u64,
    pub task_name: Option<String>,
    /// The record's trigger column (`{{.Run.TriggeredBy}}`… as ACR names it).
    pub triggered_by: String,
    #[serde(default)]
    pub trigger: TriggerDetail,
    /// Seconds.
    pub timeout: u64,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The whole request, secrets included.
    pub request: RunRequest,
    /// Registry logins, the task's before the server's (the first match wins).
    #[serde(default)]
    pub credentials: Vec<RegistryLogin>,
    #[serde(default)]
    pub git_ssh: Option<GitSshIdentity>,
    /// `{{.Run.Registry}}` and the registry of quick-build tags that name none.
    #[serde(default)]
    pub default_registry: Option<String>,
    /// Image aliases of the server's configuration.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// Of the run's context archive, when the request names an upload
    /// (`GET /agent/uploads/{id}`).
    #[serde(default)]
    pub max_context_bytes: u64,
}

/// The SSH identity a run's git fetches use.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSshIdentity {
    pub private_key: String,
    pub known_hosts: String,
    /// Where the known hosts were read, for the advice of a refusal.
    pub known_hosts_file: String,
}

impl std::fmt::Debug for GitSshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSshIdentity").field("known_hosts_file", &self.known_hosts_file).finish()
    }
}

impl From<kiln_plan::plan::GitSsh> for GitSshIdentity {
    fn from(g: kiln_plan::plan::GitSsh) -> Self {
        Self {
            private_key: g.private_key,
            known_hosts: g.known_hosts,
            known_hosts_file: g.known_hosts_file,
        }
    }
}

impl From<GitSshIdentity> for kiln_plan::plan::GitSsh {
    fn from(g: GitSshIdentity) -> Self {
        Self {
            private_key: g.private_key,
            known_hosts: g.known_hosts,
            known_hosts_file: g.known_hosts_file,
        }
    }
}

/// `POST /agent/runs/{id}/heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fence {
    pub epoch: i64,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Beat {
    #[serde(with = "super::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub lease_expires_at: DateTime<Utc>,
    /// A user cancelled the run: stop it and finish it as Canceled.
    pub cancel_requested: bool,
}

/// `PUT /agent/runs/{id}/log`: log bytes at a byte offset. Resending a part the server already
/// has is harmless: the answer is always the length it has stored, from which the agent goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogPart {
    pub epoch: i64,
    /// Where `data` starts in the run's log.
    pub offset: u64,
    /// Base64 (standard alphabet), at most [`MAX_LOG_PART`] bytes decoded.
    #[serde(with = "base64_bytes")]
    #[schema(value_type = String, format = Byte)]
    pub data: Vec<u8>,
    /// When parts of `data` arrived, by offset within `data` (ascending).
    #[serde(default)]
    pub times: Vec<LogMark>,
}

/// When the bytes of a [`LogPart`] from `offset` on arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogMark {
    pub offset: u64,
    #[serde(with = "super::millis")]
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
}

/// The answer to a [`LogPart`]: the run's stored log length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogAck {
    pub length: u64,
}

/// `POST /agent/runs/{id}/status`: the run's steps start (Started → Running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusUpdate {
    pub epoch: i64,
    pub status: RunStatus,
}

/// `POST /agent/runs/{id}/steps`: the run's steps as the agent knows them now, all of them (a
/// report replaces the one before, so a resent or superseded report is harmless).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepReport {
    pub epoch: i64,
    pub steps: Vec<Step>,
}

/// `POST /agent/runs/{id}/finish`: the run's end and results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunOutcome {
    pub epoch: i64,
    /// A terminal status.
    pub status: RunStatus,
    #[serde(default)]
    pub run_error_message: Option<String>,
    #[serde(default)]
    pub output_images: Vec<Image>,
    /// The dependency report (`runtime-dependency`, …) of a successful run.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub dependencies: Option<serde_json::Value>,
}

/// `POST /agent/watch`: wait until a user cancels one of these runs, or one is taken away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchRequest {
    pub runs: Vec<HeldRun>,
    /// Seconds to wait when nothing happened (at most [`MAX_WAIT_SECS`]).
    #[serde(default)]
    pub wait: u64,
}

/// A run an agent holds, by its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeldRun {
    pub run_id: String,
    pub epoch: i64,
}

/// What happened to watched runs; both empty when the wait ran out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatchReply {
    /// Runs a user cancelled: stop them, finish them as Canceled.
    pub canceled: Vec<String>,
    /// Runs whose lease is gone (expired, the agent deleted, the run ended elsewhere): stop
    /// them and write nothing more.
    pub lost: Vec<String>,
}

/// Bytes carried as base64 (standard alphabet).
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(|e| D::Error::custom(format!("not base64: {e}")))
    }
}
