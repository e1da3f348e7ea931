//! Tasks on the wire (reference §6.7, vocabulary of `az acr task`): the definition a client
//! creates and updates, the task as `task show` answers it, a manual run's overrides, and what
//! triggered a run (§6.2 `sourceTrigger`, `timerTrigger`, `imageUpdateTrigger`).
//!
//! A definition holds secrets (`--set-secret` values, the git access token). The server keeps
//! it sealed and answers with [`TaskDefinition::redacted`]; secrets are write-only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Argument, Image, redact_arguments};

/// Shown instead of a secret.
pub const REDACTED: &str = "***";

/// Whether a task (or a timer) acts on its triggers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TaskStatus {
    #[default]
    Enabled,
    Disabled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Enabled => "Enabled",
            TaskStatus::Disabled => "Disabled",
        }
    }
}

/// Which base images trigger a task (§5.2 `--base-image-trigger-type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum BaseImageTriggerType {
    /// The final stage's base only.
    #[default]
    Runtime,
    /// Every `FROM` image.
    All,
}

/// What a task runs (§6.7 step variants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type")]
pub enum TaskStep {
    /// A Dockerfile build, pushed unless `no_push` (`--file` that is not a task file).
    Docker {
        #[serde(default = "super::default_dockerfile")]
        dockerfile: String,
        #[serde(default)]
        images: Vec<String>,
        #[serde(default)]
        no_push: bool,
        #[serde(default)]
        build_args: Vec<Argument>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// A task file read from the context when the run starts.
    FileTask {
        #[serde(default = "super::default_task_file")]
        task_file: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values_file: Option<String>,
    },
    /// A task file kept in the task (`--cmd`, or `--file` with a `/dev/null` context).
    EncodedTask {
        task: String,
        #[serde(default = "super::default_task_file")]
        task_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values_content: Option<String>,
    },
}

/// A timer trigger (§5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimerSpec {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,50}$")]
    pub name: String,
    /// 5-field cron, UTC.
    pub schedule: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// A registry login a task's runs use (`az acr task credential add`); the password is
/// write-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistryLogin {
    /// `host[:port]`.
    pub login_server: String,
    pub username: String,
    pub password: String,
}

/// A task's recipe and trigger settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskDefinition {
    /// A git URL (`https://host/org/repo.git#branch:folder`, `git://…`), a tarball URL, or
    /// `/dev/null`.
    pub context: String,
    pub step: TaskStep,
    /// `--set` / `--set-secret` values.
    #[serde(default)]
    pub values: Vec<Argument>,
    #[serde(default = "default_platform")]
    pub platform: String,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub status: TaskStatus,
    #[serde(default = "enabled")]
    pub commit_trigger_enabled: bool,
    #[serde(default)]
    pub pull_request_trigger_enabled: bool,
    #[serde(default = "enabled")]
    pub base_image_trigger_enabled: bool,
    #[serde(default)]
    pub base_image_trigger_type: BaseImageTriggerType,
    /// Token for a private repository; write-only (shown as `***`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_access_token: Option<String>,
    /// OpenSSH private key (unencrypted) for an SSH git context, e.g. the repository's deploy
    /// key; it wins over the server's `--git-ssh-key`. Write-only (shown as `***`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ssh_key: Option<String>,
    /// Registry logins for the task's runs, besides the server's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<RegistryLogin>,
}

fn default_platform() -> String {
    crate::store::runs::DEFAULT_PLATFORM.to_string()
}

fn default_timeout() -> u64 {
    crate::store::runs::DEFAULT_TIMEOUT_SECS
}

impl TaskDefinition {
    /// The definition with every secret replaced by [`REDACTED`].
    pub fn redacted(&self) -> TaskDefinition {
        let mut copy = self.clone();
        redact_arguments(&mut copy.values);
        if let TaskStep::Docker { build_args, .. } = &mut copy.step {
            redact_arguments(build_args);
        }
        for secret in [&mut copy.git_access_token, &mut copy.git_ssh_key] {
            if secret.is_some() {
                *secret = Some(REDACTED.to_string());
            }
        }
        for login in &mut copy.credentials {
            login.password = REDACTED.to_string();
        }
        copy.context = kiln_worker::build::remote::redact(&copy.context);
        copy
    }

    /// Every secret value, for masking in logs.
    pub fn secret_values(&self) -> Vec<String> {
        let build_args = match &self.step {
            TaskStep::Docker { build_args, .. } => build_args.as_slice(),
            _ => &[],
        };
        let mut secrets: Vec<String> = self
            .values
            .iter()
            .chain(build_args)
            .filter(|a| a.secret)
            .filter_map(|a| a.value.clone())
            .collect();
        secrets.extend(self.git_access_token.clone());
        secrets.extend(self.credentials.iter().map(|c| c.password.clone()));
        secrets
    }

    /// Source triggers need a git context (§5.1: forced off for `/dev/null`).
    pub fn has_git_context(&self) -> bool {
        matches!(
            kiln_worker::build::remote::detect(&self.context),
            Ok(Some(kiln_worker::build::remote::Remote::Git { .. }))
        )
    }
}

/// `POST /tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateTask {
    /// 1-50 letters, digits, `-` or `_` (the pattern is `task_def::check_name`'s rule).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,50}$")]
    pub name: String,
    #[serde(flatten)]
    pub definition: TaskDefinition,
    /// `--schedule`; unnamed ones are given `t1`, `t2`, … by the client.
    #[serde(default)]
    pub timers: Vec<TimerSpec>,
}

/// `PATCH /tasks/{name}`: only the fields given change. Lists replace the stored list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UpdateTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<TaskStep>,
    /// Merged into the stored values by name (a value named again replaces the old one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_trigger_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_trigger_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image_trigger_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image_trigger_type: Option<BaseImageTriggerType>,
    /// A new token; an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_access_token: Option<String>,
    /// A new SSH private key; an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ssh_key: Option<String>,
    /// Logins added, or replaced by login server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<RegistryLogin>,
    /// Login servers whose logins are removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_credentials: Vec<String>,
}

/// `PATCH /tasks/{name}/timers/{timer}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateTimer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A timer as `task show` and `timer list` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timer {
    pub name: String,
    pub schedule: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_time: Option<DateTime<Utc>>,
}

/// Where a git host delivers to, and the secret it signs with (admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

/// A base image the task's last successful run built on (§5.2 `baseImageDependencies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BaseImageDependency {
    /// `RunTime` or `BuildTime`.
    #[serde(rename = "type")]
    pub kind: String,
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// Something that happened to a task besides a run (a missed timer occurrence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskEvent {
    pub time: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}

/// A task as the API shows it; secrets redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub name: String,
    #[serde(flatten)]
    pub definition: TaskDefinition,
    pub timers: Vec<Timer>,
    pub webhook: Webhook,
    pub base_image_dependencies: Vec<BaseImageDependency>,
    /// The most recent events, newest first.
    pub history: Vec<TaskEvent>,
    pub creation_date: DateTime<Utc>,
    pub last_updated_time: DateTime<Utc>,
}

/// `POST /tasks/{name}/runs`: a manual run, optionally with overrides (§5.4 `az acr task run`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskRunRequest {
    /// `--set` / `--set-secret`, over the task's own (later wins).
    #[serde(default)]
    pub values: Vec<Argument>,
    /// `--arg` / `--secret-arg` for a Docker build task.
    #[serde(default)]
    pub build_args: Vec<Argument>,
    /// Another context for this run (`-c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Another Dockerfile or task file in the context (`-f`), of the task's own kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Another build stage (`--target`) for a Dockerfile build task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The answer to a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAnswer {
    /// `queued`, `duplicate` or `ignored`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// §6.2 `sourceTrigger`: the git event a run builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceTrigger {
    /// The delivery's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `commit` or `pullrequest`.
    pub event_type: String,
    pub commit_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_id: Option<String>,
    pub repository_url: String,
    pub branch_name: String,
    /// `GitHub`, `GitLab` or `Gitea`.
    pub provider_type: String,
}

/// §6.2 `timerTrigger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimerTrigger {
    pub timer_trigger_name: String,
    pub schedule_occurrence: DateTime<Utc>,
}

/// §6.2 `imageUpdateTrigger`: the base images whose tags moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageUpdateTrigger {
    pub timestamp: DateTime<Utc>,
    pub images: Vec<Image>,
}

/// What caused a run; at most one field is set, none for a manual run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_trigger: Option<SourceTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_trigger: Option<TimerTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_update_trigger: Option<ImageUpdateTrigger>,
}

impl TriggerDetail {
    /// The CLI's TRIGGER column (§6.2): the source event, else `Timer`, else `Image Update`,
    /// else `Manual`.
    pub fn column(&self) -> &'static str {
        match (&self.source_trigger, &self.timer_trigger, &self.image_update_trigger) {
            (Some(s), _, _) if s.event_type == "pullrequest" => "Pull Request",
            (Some(_), _, _) => "Commit",
            (None, Some(_), _) => "Timer",
            (None, None, Some(_)) => "Image Update",
            (None, None, None) => "Manual",
        }
    }
}
