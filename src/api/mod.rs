//! The HTTP API's wire types: what the CLI sends to `kiln serve` and what it answers. One
//! definition serves the server (axum extractors, the OpenAPI document) and the client, so the
//! two cannot drift apart.
//!
//! Requests mirror ACR's run requests (reference §6.7): a Docker build ([`DockerBuildRequest`],
//! `az acr build`), a task file inside the context ([`FileTaskRequest`], `az acr run -f F ctx`)
//! and a task file sent in the request ([`EncodedTaskRequest`], `az acr run -f F /dev/null`,
//! `-f -`, `--cmd`). Records use §6.2's field names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::diagnostic::Diagnostic;
use crate::store::{OutputImage, RunRecord, RunStatus, RunType};

pub mod task;

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

    pub fn run(id: &str) -> String {
        format!("/runs/{id}")
    }
    pub fn cancel(id: &str) -> String {
        format!("/runs/{id}/cancel")
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
    /// A task's webhook: public, authenticated by the delivery's signature.
    pub fn webhook(task: &str) -> String {
        format!("/webhooks/{task}")
    }
}

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

/// A named value; `secret` ones are masked in logs and never shown back
/// (`--set-secret`, `--secret-build-arg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Argument {
    pub name: String,
    /// `None` for a build arg given without `=`: Docker reads it from the build environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

/// What to run. Tagged by `type`, like ACR's run request kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum RunRequest {
    DockerBuild(DockerBuildRequest),
    FileTask(FileTaskRequest),
    EncodedTask(EncodedTaskRequest),
}

/// `kiln build`: the server synthesises ACR's quick-build task (a `build` step, then a `push`
/// step with `when: [build]` unless `no_push` or no image is named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DockerBuildRequest {
    pub source: Source,
    /// `-t` references; may contain templates (`app:{{.Run.ID}}`). Without a registry host
    /// they get the server's default registry.
    #[serde(default)]
    pub images: Vec<String>,
    /// The Dockerfile's path inside the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    #[serde(default)]
    pub build_args: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default)]
    pub no_push: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

pub(crate) fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

/// `kiln run -f FILE SOURCE` where FILE lives in the (remote) context: read when the run starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileTaskRequest {
    pub source: Source,
    /// The task file's path inside the context (default `acb.yaml`).
    #[serde(default = "default_task_file")]
    pub task_file: String,
    /// A values file's path inside the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_file: Option<String>,
    /// `--set` / `--set-secret`, in order (later wins).
    #[serde(default)]
    pub values: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

pub(crate) fn default_task_file() -> String {
    "acb.yaml".to_string()
}

/// A task file sent in the request (`-f local.yaml`, `-f -`, `--cmd`): validated when it is
/// submitted, so a bad file is a 400 naming line and column and no run is queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EncodedTaskRequest {
    pub source: Source,
    /// The task file's text.
    pub task: String,
    /// Its name in messages (`acb.yaml`, `<stdin>`, `--cmd`).
    #[serde(default = "default_task_file")]
    pub task_name: String,
    /// A values file's text (YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_content: Option<String>,
    #[serde(default)]
    pub values: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
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

    pub fn platform(&self) -> Option<&str> {
        match self {
            RunRequest::DockerBuild(r) => r.platform.as_deref(),
            RunRequest::FileTask(r) => r.platform.as_deref(),
            RunRequest::EncodedTask(r) => r.platform.as_deref(),
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
            *url = kiln_worker::build::remote::redact(url);
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

/// §6.2 platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// From `os/arch[/variant]`.
    pub fn parse(text: &str) -> Platform {
        let mut parts = text.splitn(3, '/');
        let os = parts.next().unwrap_or_default().to_string();
        let architecture = parts.next().unwrap_or("amd64").to_string();
        let variant = parts.next().map(str::to_string);
        Platform { os, architecture, variant }
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

impl From<&OutputImage> for Image {
    fn from(i: &OutputImage) -> Self {
        Image {
            registry: i.registry.clone(),
            repository: i.repository.clone(),
            tag: i.tag.clone(),
            digest: i.digest.clone(),
        }
    }
}

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
    pub create_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<DateTime<Utc>>,
    pub last_updated_time: DateTime<Utc>,
    pub platform: Platform,
    pub timeout: u64,
    pub output_images: Vec<Image>,
    /// The engine's dependency report (§6.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub dependencies: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_error_message: Option<String>,
    /// Bytes of log stored so far.
    pub log_length: u64,
    /// The request, secrets shown as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RunRequest>,
}

impl Run {
    /// The API view of a stored run. The stored request is redacted; a request that no longer
    /// parses (an older format) is left out rather than failing the read.
    pub fn from_record(record: &RunRecord) -> Run {
        Run {
            run_id: record.id.to_string(),
            status: record.status,
            run_type: record.run_type,
            trigger: record.trigger.clone(),
            trigger_detail: crate::queue::trigger_detail(record),
            task: record.task_name.clone(),
            create_time: record.created_at,
            start_time: record.started_at,
            finish_time: record.finished_at,
            last_updated_time: record.updated_at,
            platform: Platform::parse(&record.platform),
            timeout: record.timeout_secs,
            output_images: record.output_images.iter().map(Image::from).collect(),
            dependencies: record.dependencies.as_deref().and_then(|d| serde_json::from_str(d).ok()),
            run_error_message: record.error_message.clone(),
            log_length: record.log_len,
            request: serde_json::from_str::<RunRequest>(&record.request).ok().map(|r| r.redacted()),
        }
    }

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
    /// At most this many, newest first (default 15; 0 = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<usize>,
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
}

/// Every error answer: one line for humans, and for a bad task file its diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub diagnostics: Vec<Diagnostic>,
}

/// `GET /whoami`: the token a request was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// The token's name.
    pub name: String,
    pub role: TokenRole,
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
