//! The HTTP API's wire types: what the CLI sends to `kiln serve` and what it answers. One
//! definition serves the server (axum extractors, the OpenAPI document) and the client, so the
//! two cannot drift apart.
//!
//! Requests mirror ACR's run requests (reference §6.7): a Docker build ([`DockerBuildRequest`],
//! `az acr build`), a task file inside the context ([`FileTaskRequest`], `az acr run -f F ctx`)
//! and a task file sent in the request ([`EncodedTaskRequest`], `az acr run -f F /dev/null`,
//! `-f -`, `--cmd`). Records use §6.2's field names.
//!
//! One vocabulary: every field is camelCase, with ACR's REST name where the concept is ACR's
//! (`imageNames`, `dockerFilePath`, `arguments`, `isSecret`, `timeout`, …); a platform is always
//! a [`Platform`] object, a timeout always seconds named `timeout`, every timestamp RFC 3339 with
//! milliseconds ([`millis`]), lists a [`List`] and errors an [`ErrorBody`]. Stored requests and
//! definitions of older releases are read through [`legacy`].
//!
//! As a crate, kiln-api owns what the server, the agent and the client must agree on: these
//! wire types, the run [`status`] vocabulary the wire shows, and the agent's [`control::Control`]
//! link, so that the server (its in-process link) and the agent can both name it while neither
//! depends on the other. With them, the pure rules both sides apply to a run: a request
//! becomes a task file ([`request`]), a run's log lines are formatted ([`run_log`]), its steps'
//! states are kept from the worker's events ([`steps`]), and an
//! upload ID names an archive and a context has a size limit ([`uploads`]). It must not know the store, axum, Docker or an HTTP client (no sqlx,
//! axum, reqwest, bollard): the agent depends on it and must stay free of those. Stored records
//! become these types on the store's side (`From<&RunRecord> for Run` and the like).

use chrono::{DateTime, Utc};
use kiln_task::diagnostic::Diagnostic;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::{RunStatus, RunType};

pub use kiln_plan::docker_api::DockerApiMode;
pub use kiln_plan::report::Dependency;

pub mod agent;
pub mod agents;
pub mod control;
pub mod legacy;
pub mod request;
pub mod run_log;
pub mod status;
pub mod steps;
pub mod task;
mod task_wire;
pub mod uploads;

pub use task::TriggerDetail;

/// Routes, shared by the router and the client.
pub mod paths {
    pub const UPLOADS: &str = "/uploads";
    pub const RUNS: &str = "/runs";
    pub const OPENAPI: &str = "/openapi.json";
    pub const HEALTH: &str = "/healthz";
    pub const TASKS: &str = "/tasks";
    pub const REGISTRY_EVENTS: &str = "/registry/events";
    pub const WHOAMI: &str = "/whoami";
    /// The browser session: `POST` signs in, `GET` reads it, `DELETE` signs out.
    pub const SESSION: &str = "/session";
    pub const AGENTS: &str = "/agents";
    pub const AGENT_POOLS: &str = "/agentPools";
    /// What an agent token sees of itself; the agent protocol's routes live under `/agent/`
    /// too, where only agent tokens pass.
    pub const AGENT_WHOAMI: &str = "/agent/whoami";
    pub const AGENT_SESSIONS: &str = "/agent/sessions";
    pub const AGENT_LEASES: &str = "/agent/leases";
    pub const AGENT_WATCH: &str = "/agent/watch";
    /// `/agent/runs/{id}/heartbeat|status|log|finish`.
    pub const AGENT_RUNS: &str = "/agent/runs";
    pub const AGENT_UPLOADS: &str = "/agent/uploads";

    pub fn run(id: &str) -> String {
        format!("/runs/{id}")
    }
    pub fn cancel(id: &str) -> String {
        format!("/runs/{id}/cancel")
    }
    pub fn rerun(id: &str) -> String {
        format!("/runs/{id}/rerun")
    }
    pub fn log(id: &str) -> String {
        format!("/runs/{id}/log")
    }
    pub fn task(name: &str) -> String {
        format!("/tasks/{name}")
    }
    pub fn task_runs(name: &str) -> String {
        format!("/tasks/{name}/runs")
    }
    pub fn timers(task: &str) -> String {
        format!("/tasks/{task}/timers")
    }
    pub fn timer(task: &str, timer: &str) -> String {
        format!("/tasks/{task}/timers/{timer}")
    }
    pub fn agent(name: &str) -> String {
        format!("/agents/{name}")
    }
    /// A task's webhook: public, authenticated by the delivery's signature.
    pub fn webhook(task: &str) -> String {
        format!("/webhooks/{task}")
    }
}

/// Largest JSON request body the server reads (a run request with its task file, a task
/// definition); the client checks a run request against it before uploading its context.
pub const MAX_JSON_BYTES: usize = 2 * 1024 * 1024;

/// Bounds of a run's timeout in seconds (§6.6).
pub const MIN_TIMEOUT_SECS: u64 = 300;
pub const MAX_TIMEOUT_SECS: u64 = 28_800;

/// Where a run's files come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// No context (`/dev/null`): the run's `/workspace` starts empty.
    None,
    /// A `.tar.gz` uploaded with `POST /uploads` (a local directory the CLI packed).
    Upload { id: String },
    /// A git repository: `https://host/org/repo.git#ref:folder`, `git@…`, `git://…`.
    Git { url: String },
    /// An http(s) URL of a tarball.
    Tarball { url: String },
}

/// A named value; `isSecret` ones are masked in logs and never shown back
/// (`--set-secret`, `--secret-build-arg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Argument {
    pub name: String,
    /// `None` for a build arg given without `=`: Docker reads it from the build environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, rename = "isSecret")]
    pub secret: bool,
}

/// What to run. Tagged by `type` with ACR's run request kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum RunRequest {
    #[serde(rename = "DockerBuildRequest")]
    DockerBuild(DockerBuildRequest),
    #[serde(rename = "FileTaskRunRequest")]
    FileTask(FileTaskRequest),
    #[serde(rename = "EncodedTaskRunRequest")]
    EncodedTask(EncodedTaskRequest),
}

/// `kiln build`: the server synthesises ACR's quick-build task (a `build` step, then a `push`
/// step with `when: [build]` when push is enabled and an image is named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerBuildRequest {
    pub source: Source,
    /// `-t` references; may contain templates (`app:{{.Run.ID}}`). Without a registry host
    /// they get the server's default registry.
    #[serde(default, rename = "imageNames")]
    pub images: Vec<String>,
    /// The Dockerfile's path inside the context.
    #[serde(default = "default_dockerfile", rename = "dockerFilePath")]
    pub dockerfile: String,
    /// Build arguments (`--build-arg`, `--secret-build-arg`).
    #[serde(default, rename = "arguments")]
    pub build_args: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Where the run is dispatched and what it builds for (ACR's); with `platforms`, the first
    /// of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// kiln: every platform to build when there are several (`kiln build --platform
    /// linux/amd64,linux/arm64`): each is built, and each tag is pushed as one manifest list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
    /// Push the images after the build (`--no-push` turns it off).
    #[serde(default = "yes")]
    pub is_push_enabled: bool,
    /// Seconds.
    #[serde(default, rename = "timeout", skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// The agent pool to run in (`--agent-pool`); absent: any agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_pool_name: Option<String>,
}

pub(crate) fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

pub(crate) fn yes() -> bool {
    true
}

/// `kiln run -f FILE SOURCE` where FILE lives in the (remote) context: read when the run starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileTaskRequest {
    pub source: Source,
    /// The task file's path inside the context (default `acb.yaml`).
    #[serde(default = "default_task_file", rename = "taskFilePath")]
    pub task_file: String,
    /// A values file's path inside the context.
    #[serde(default, rename = "valuesFilePath", skip_serializing_if = "Option::is_none")]
    pub values_file: Option<String>,
    /// `--set` / `--set-secret`, in order (later wins).
    #[serde(default)]
    pub values: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Seconds.
    #[serde(default, rename = "timeout", skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// The agent pool to run in (`--agent-pool`); absent: any agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_pool_name: Option<String>,
    /// kiln: what `cmd` steps get of the engine (`--docker-api`); absent: the agent's own
    /// setting. Only an admin token may ask for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_api: Option<DockerApiMode>,
}

pub(crate) fn default_task_file() -> String {
    "acb.yaml".to_string()
}

/// A task file sent in the request (`-f local.yaml`, `-f -`, `--cmd`): validated when it is
/// submitted, so a bad file is a 400 naming line and column and no run is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncodedTaskRequest {
    pub source: Source,
    /// The task file's text; base64 on the wire, as in ACR.
    #[serde(rename = "encodedTaskContent", with = "base64_text")]
    #[schema(value_type = String, format = Byte)]
    pub task: String,
    /// Its name in messages (`acb.yaml`, `<stdin>`, `--cmd`).
    #[serde(default = "default_task_file", rename = "taskFileName")]
    pub task_name: String,
    /// A values file's text (YAML); base64 on the wire.
    #[serde(
        default,
        rename = "encodedValuesContent",
        with = "base64_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = Byte)]
    pub values_content: Option<String>,
    #[serde(default)]
    pub values: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Seconds.
    #[serde(default, rename = "timeout", skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// The agent pool to run in (`--agent-pool`); absent: any agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_pool_name: Option<String>,
    /// kiln: what `cmd` steps get of the engine (`--docker-api`); absent: the agent's own
    /// setting. Only an admin token may ask for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_api: Option<DockerApiMode>,
}

impl RunRequest {
    pub fn source(&self) -> &Source {
        match self {
            RunRequest::DockerBuild(r) => &r.source,
            RunRequest::FileTask(r) => &r.source,
            RunRequest::EncodedTask(r) => &r.source,
        }
    }

    /// Points the request at `source` (the CLI checks a request before its upload exists).
    pub fn set_source(&mut self, source: Source) {
        match self {
            RunRequest::DockerBuild(r) => r.source = source,
            RunRequest::FileTask(r) => r.source = source,
            RunRequest::EncodedTask(r) => r.source = source,
        }
    }

    pub fn timeout_secs(&self) -> Option<u64> {
        match self {
            RunRequest::DockerBuild(r) => r.timeout_secs,
            RunRequest::FileTask(r) => r.timeout_secs,
            RunRequest::EncodedTask(r) => r.timeout_secs,
        }
    }

    pub fn agent_pool(&self) -> Option<&str> {
        match self {
            RunRequest::DockerBuild(r) => r.agent_pool_name.as_deref(),
            RunRequest::FileTask(r) => r.agent_pool_name.as_deref(),
            RunRequest::EncodedTask(r) => r.agent_pool_name.as_deref(),
        }
    }

    /// The Docker API the request asks for (a Docker build has no `cmd` steps).
    pub fn docker_api(&self) -> Option<DockerApiMode> {
        match self {
            RunRequest::DockerBuild(_) => None,
            RunRequest::FileTask(r) => r.docker_api,
            RunRequest::EncodedTask(r) => r.docker_api,
        }
    }

    pub fn platform(&self) -> Option<&Platform> {
        match self {
            RunRequest::DockerBuild(r) => r.platform.as_ref(),
            RunRequest::FileTask(r) => r.platform.as_ref(),
            RunRequest::EncodedTask(r) => r.platform.as_ref(),
        }
    }

    /// §6.2: QuickBuild / QuickRun for a quick run, AutoBuild / AutoRun for a task's run; a
    /// Docker build is a build.
    pub fn run_type(&self, of_task: bool) -> RunType {
        match (self, of_task) {
            (RunRequest::DockerBuild(_), false) => RunType::QuickBuild,
            (RunRequest::DockerBuild(_), true) => RunType::AutoBuild,
            (_, false) => RunType::QuickRun,
            (_, true) => RunType::AutoRun,
        }
    }

    /// Every secret value in the request, for masking.
    pub fn secret_values(&self) -> Vec<String> {
        let args = match self {
            RunRequest::DockerBuild(r) => &r.build_args,
            RunRequest::FileTask(r) => &r.values,
            RunRequest::EncodedTask(r) => &r.values,
        };
        args.iter().filter(|a| a.secret).filter_map(|a| a.value.clone()).collect()
    }

    /// The request with every secret value replaced by `***` and credentials removed from
    /// its source URL, for storing in the clear and showing back.
    pub fn redacted(&self) -> RunRequest {
        let mut copy = self.clone();
        let (args, source) = match &mut copy {
            RunRequest::DockerBuild(r) => (&mut r.build_args, &mut r.source),
            RunRequest::FileTask(r) => (&mut r.values, &mut r.source),
            RunRequest::EncodedTask(r) => (&mut r.values, &mut r.source),
        };
        redact_arguments(args);
        if let Source::Git { url } | Source::Tarball { url } = source {
            *url = kiln_plan::remote::redact(url);
        }
        copy
    }
}

/// Replaces the value of every secret argument with [`task::REDACTED`].
pub(crate) fn redact_arguments(args: &mut [Argument]) {
    for a in args.iter_mut().filter(|a| a.secret) {
        if a.value.is_some() {
            a.value = Some(task::REDACTED.to_string());
        }
    }
}

/// `POST /uploads` answer: the stored context archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Upload {
    pub id: String,
    pub size: u64,
    pub sha256: String,
}

/// §6.2 platform: the same object in requests, tasks and runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The operating systems a run's platform may name (ACR's `--platform` OS values).
const PLATFORM_OS: &[&str] = &["linux", "windows"];

/// The architectures (OCI image-spec `architecture` values; ACR's `x86` is `386`).
const PLATFORM_ARCH: &[&str] = &["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"];

/// Why a platform is not one a run can ask for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error(
        "unknown OS {0:?}; expected os/arch[/variant] with os one of {known}, e.g. linux/arm64",
        known = PLATFORM_OS.join(", ")
    )]
    Os(String),
    #[error("unknown architecture {0:?}; expected one of {known}", known = PLATFORM_ARCH.join(", "))]
    Architecture(String),
    #[error("expected os/arch[/variant], e.g. linux/arm/v7")]
    Variant,
}

impl Platform {
    /// A `--platform` flag, checked: `os[/arch[/variant]]` with a known OS and architecture
    /// (`linux` alone is `linux/amd64`, as in ACR). A typo such as `arm64` alone (an OS named
    /// "arm64") would otherwise queue a run that no agent can ever take.
    pub fn from_flag(text: &str) -> Result<Platform, String> {
        let platform = Platform::parse(text);
        platform.check().map_err(|e| format!("{text:?}: {e}"))?;
        Ok(platform)
    }

    /// The vocabulary of [`Platform::from_flag`], for a platform that came as an object (the
    /// HTTP API's run requests and tasks), so both ways in refuse the same values.
    pub fn check(&self) -> Result<(), PlatformError> {
        if !PLATFORM_OS.contains(&self.os.as_str()) {
            return Err(PlatformError::Os(self.os.clone()));
        }
        if !PLATFORM_ARCH.contains(&self.architecture.as_str()) {
            return Err(PlatformError::Architecture(self.architecture.clone()));
        }
        if self.variant.as_deref().is_some_and(|v| v.is_empty() || v.contains('/')) {
            return Err(PlatformError::Variant);
        }
        Ok(())
    }

    /// From `os/arch[/variant]`.
    pub fn parse(text: &str) -> Platform {
        let mut parts = text.splitn(3, '/');
        let os = parts.next().unwrap_or_default().to_string();
        let architecture = parts.next().unwrap_or("amd64").to_string();
        let variant = parts.next().map(str::to_string);
        Platform { os, architecture, variant }
    }
}

/// `os/arch[/variant]`, as `--platform` and the store write it.
impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// An image a run pushed (§6.2 `outputImages[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// Default run timeout (§6.6).
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;
/// Default platform (§6.2).
pub const DEFAULT_PLATFORM: &str = "linux/amd64";

/// A run record (§6.2), as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub run_id: String,
    pub status: RunStatus,
    pub run_type: RunType,
    /// `Manual`, `Commit`, `Pull Request`, `Timer`, `Image Update`.
    pub trigger: String,
    /// What exactly triggered it (§6.2 `sourceTrigger`, `timerTrigger`, `imageUpdateTrigger`).
    #[serde(flatten)]
    pub trigger_detail: TriggerDetail,
    /// The task's name; absent for quick runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(with = "millis")]
    pub create_time: DateTime<Utc>,
    #[serde(default, with = "millis::option", skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, with = "millis::option", skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<DateTime<Utc>>,
    #[serde(with = "millis")]
    pub last_updated_time: DateTime<Utc>,
    pub platform: Platform,
    /// Seconds.
    pub timeout: u64,
    pub output_images: Vec<Image>,
    /// The engine's dependency report (§6.3): one entry per image a build step tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<Dependency>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_error_message: Option<String>,
    /// Bytes of log stored so far.
    pub log_length: u64,
    /// The agent pool the run must run in (ACR's `agentPoolName`); absent: any agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_pool_name: Option<String>,
    /// The agent that took the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// While the run is Queued, what it waits for: `Waiting for an agent (pool P, platform
    /// os/arch)`, the first line of its log; null once an agent took it.
    #[serde(default)]
    pub waiting_reason: Option<String>,
    /// The request, secrets shown as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RunRequest>,
    /// The run this one repeats (`POST /runs/{id}/rerun`): same request, queued again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
    /// Its steps in task-file order, as its agent last reported them; empty until the agent
    /// has planned the run.
    #[serde(default)]
    pub steps: Vec<steps::Step>,
}

impl Run {
    /// finish − start, when both are known (the CLI's DURATION).
    pub fn duration(&self) -> Option<chrono::TimeDelta> {
        Some(self.finish_time? - self.start_time?)
    }
}

/// `GET /runs` query (§6.5 `list-runs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// `repository:tag`: runs that pushed this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The TRIGGER column: `Manual`, `Commit`, `Pull Request`, `Timer` or `Image Update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Runs the agent of this name took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Runs that asked for this agent pool.
    #[serde(default, rename = "agentPool", skip_serializing_if = "Option::is_none")]
    pub agent_pool: Option<String>,
    /// Runs triggered by a commit or pull request on this branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A substring of the run ID, the task's name or the triggering commit (any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// At most this many per page, newest first (default 15; 0 = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
    /// Where the page starts: the opaque token of a previous page's `nextLink`.
    #[serde(default, rename = "skipToken", skip_serializing_if = "Option::is_none")]
    pub skip_token: Option<String>,
}

/// `GET /runs/{id}` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunWait {
    /// Long-poll: answer once the run is terminal or after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

/// `GET /runs/{id}/log` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogQuery {
    /// Byte offset to start from (a reconnecting follower passes what it has).
    #[serde(default)]
    pub offset: u64,
    /// Keep the response open and stream new bytes until the run ends.
    #[serde(default)]
    pub follow: bool,
    /// Prefix every line with when it arrived (RFC 3339, UTC, milliseconds, then a space);
    /// offsets stay those of the plain log. Not with `follow`.
    #[serde(default)]
    pub timestamps: bool,
    /// Read at most this many bytes from `offset` (a bounded read of the log so far; not with
    /// `follow`). The `Range: bytes=a-b` header does the same with HTTP's own answer (206).
    #[serde(default)]
    pub length: Option<u64>,
}

/// A list answer: one page of `value`, newest first where order matters, and where the next
/// page is (`null` on the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    pub value: Vec<T>,
    /// An absolute-path URL (`/runs?top=15&skipToken=…`) of the next page.
    #[serde(default)]
    pub next_link: Option<String>,
}

impl<T> List<T> {
    /// Everything in one page.
    pub fn all(value: Vec<T>) -> List<T> {
        List { value, next_link: None }
    }
}

/// Every error answer (ACR's shape): `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What failed: a PascalCase `code` for programs (`TaskNotFound`, `InvalidTaskFile`,
/// `BadRequest`, `Unauthorized`, `PayloadTooLarge`, …), one line for humans, and for a bad task
/// file its diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<Diagnostic>,
}

/// `GET /whoami`: the token a request was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// The token's name.
    pub name: String,
    pub role: TokenRole,
}

/// `POST /session`: sign a browser in with an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignIn {
    pub token: String,
}

/// A browser session (`POST /session`, `GET /session`): the token it was signed in with and
/// the CSRF token every state-changing request made with the session cookie must send as
/// `X-CSRF-Token`. The session's ID travels only in its HttpOnly cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The token's name.
    pub name: String,
    pub role: TokenRole,
    pub csrf_token: String,
    #[serde(with = "millis")]
    pub expiry_time: DateTime<Utc>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum TokenRole {
    Admin,
    User,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::User => "user",
        }
    }
}

/// Response header of `GET /runs/{id}/log`: the byte offset the body starts at.
pub const LOG_OFFSET_HEADER: &str = "x-kiln-log-offset";

/// Response header of `GET`/`HEAD /runs/{id}/log`: how many bytes the stored log has (as
/// appended), so a reader can size a view or ask for its last part without reading it all.
pub const LOG_LENGTH_HEADER: &str = "x-kiln-log-length";

/// Timestamps on the wire: RFC 3339, UTC, always with milliseconds (what the store keeps), so
/// every time in every document has the same precision.
pub mod millis {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// The API's one timestamp form: RFC 3339, UTC, milliseconds.
    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    /// The same for an optional time.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

/// Text carried base64-encoded (standard alphabet), as ACR's `encodedTaskContent` and
/// `encodedValuesContent` are; the Rust side holds the decoded UTF-8 text.
pub mod base64_text {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(text: &str) -> String {
        STANDARD.encode(text)
    }

    pub fn decode(encoded: &str) -> Result<String, String> {
        let bytes = STANDARD.decode(encoded.trim()).map_err(|e| format!("not base64: {e}"))?;
        String::from_utf8(bytes).map_err(|_| "the decoded text is not UTF-8".to_string())
    }

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(text))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        decode(&String::deserialize(d)?).map_err(D::Error::custom)
    }

    /// The same for optional text.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
            match text {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|e| super::decode(&e).map_err(D::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Platform;

    #[test]
    fn platform_flags_name_a_known_os_and_architecture_or_say_which_part_is_wrong() {
        let flag = |text| Platform::from_flag(text).map(|p| p.to_string());
        assert_eq!(flag("linux").as_deref(), Ok("linux/amd64"));
        assert_eq!(flag("linux/arm/v7").as_deref(), Ok("linux/arm/v7"));
        assert_eq!(flag("windows/amd64").as_deref(), Ok("windows/amd64"));
        assert!(flag("arm64").unwrap_err().contains("unknown OS \"arm64\""));
        assert!(flag("linux/aarch64").unwrap_err().contains("unknown architecture \"aarch64\""));
        assert!(flag("linux/arm/").unwrap_err().contains("os/arch[/variant]"));
        assert!(flag("").unwrap_err().contains("unknown OS"));
    }
}
