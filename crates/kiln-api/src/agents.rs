//! The agent registry's wire types (issue 12), named after ACR's agent pools (`az acr
//! agentpool`): the admin API's agents and pools (`/agents`, `/agentPools`), the one answer that
//! carries a new agent's token, and what an agent token sees of itself (`/agent/whoami`). What
//! an agent and the control plane exchange is [`super::agent`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Platform, millis};

/// Where an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AgentKind {
    /// A `kiln agent run` process with its own token.
    Remote,
    /// The agent inside a `kiln serve --workers N` process: no token, changed only through
    /// that server's `--agent-name` and `--workers`.
    Embedded,
}

/// A registered agent and what it last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub name: String,
    pub kind: AgentKind,
    /// The server process an embedded agent runs in (`HOST pid N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The pool whose runs it takes; absent: runs that name no pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The platforms it reported it runs (empty until it first connects).
    #[serde(default)]
    pub platforms: Vec<Platform>,
    /// How many runs it takes at once, as it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
    /// Runs it holds now (Started or Running).
    pub runs_in_hand: u64,
    /// Its kiln version, as it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When it last asked for work.
    #[serde(default, with = "millis::option", skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(with = "millis")]
    pub creation_date: DateTime<Utc>,
}

/// `POST /agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// 1-50 letters, digits, `-` or `_` (the task-name rule).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,50}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,50}$")]
    pub pool: Option<String>,
    /// Keys of 1-63 letters, digits, `-`, `_`, `.` or `/`; values up to 255 bytes.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `PATCH /agents/{name}`: only what is given changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgent {
    /// The new pool; `""` takes the agent out of its pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Replaces every label (`{}` removes them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `POST /agents`' answer: the agent and its token, which is shown this once (only its hash
/// is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedAgent {
    #[serde(flatten)]
    pub agent: Agent,
    /// `kiln_agent_…`: what `kiln agent run --token-file` reads.
    pub token: String,
}

/// A pool: the agents that name it and the queued runs that ask for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentPool {
    pub name: String,
    pub agent_count: u64,
    pub queued_run_count: u64,
}

/// `GET /agent/whoami`: the agent an agent token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentWhoAmI {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// This host's name (the default agent name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}
