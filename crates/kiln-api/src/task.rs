//! Tasks on the wire (reference §6.7, vocabulary of `az acr task`): the definition a client
//! creates and updates, the task as `task show` answers it, a manual run's overrides, and what
//! triggered a run (§6.2 `sourceTrigger`, `timerTrigger`, `imageUpdateTrigger`).
//!
//! A definition holds secrets (`--set-secret` values, the git access token). The server keeps
//! it sealed and answers with [`TaskDefinition::redacted`]; secrets are write-only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Argument, DockerApiMode, Image, Platform, millis, redact_arguments, task_wire};

/// Shown instead of a secret.
pub const REDACTED: &str = "***";

/// Whether a task (or a timer) acts on its triggers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum TaskStatus {
    #[default]
    Enabled,
    Disabled,
}

/// `true` is `Enabled`.
impl From<bool> for TaskStatus {
    fn from(enabled: bool) -> Self {
        if enabled { TaskStatus::Enabled } else { TaskStatus::Disabled }
    }
}

impl TaskStatus {
    pub fn is_enabled(self) -> bool {
        self == TaskStatus::Enabled
    }

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
    /// A Dockerfile build, pushed when `isPushEnabled` (`--file` that is not a task file).
    Docker {
        #[serde(default = "super::default_dockerfile", rename = "dockerFilePath")]
        dockerfile: String,
        #[serde(default, rename = "imageNames")]
        images: Vec<String>,
        #[serde(default = "super::yes", rename = "isPushEnabled")]
        is_push_enabled: bool,
        #[serde(default, rename = "arguments")]
        build_args: Vec<Argument>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// A task file read from the context when the run starts.
    FileTask {
        #[serde(default = "super::default_task_file", rename = "taskFilePath")]
        task_file: String,
        #[serde(default, rename = "valuesFilePath", skip_serializing_if = "Option::is_none")]
        values_file: Option<String>,
    },
    /// A task file kept in the task (`--cmd`, or `--file` with a `/dev/null` context); its
    /// text is base64 on the wire, as in ACR.
    EncodedTask {
        #[serde(rename = "encodedTaskContent", with = "super::base64_text")]
        #[schema(value_type = String, format = Byte)]
        task: String,
        #[serde(default = "super::default_task_file", rename = "taskFileName")]
        task_name: String,
        #[serde(
            default,
            rename = "encodedValuesContent",
            with = "super::base64_text::option",
            skip_serializing_if = "Option::is_none"
        )]
        #[schema(value_type = Option<String>, format = Byte)]
        values_content: Option<String>,
    },
}

/// A timer trigger (§5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerSpec {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,50}$")]
    pub name: String,
    /// 5-field cron, UTC.
    pub schedule: String,
    #[serde(default)]
    pub status: TaskStatus,
}

/// A registry login a task's runs use (`az acr task credential add`); the password is
/// write-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryLogin {
    /// `host[:port]`.
    pub login_server: String,
    pub username: String,
    pub password: String,
}

/// A task's recipe and trigger settings. On the wire the trigger settings are ACR's nested
/// `trigger` object ([`super::task_wire`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "task_wire::Definition", into = "task_wire::Definition")]
pub struct TaskDefinition {
    /// A git URL (`https://host/org/repo.git#branch:folder`, `git://…`), a tarball URL, or
    /// `/dev/null`.
    pub context: String,
    pub step: TaskStep,
    /// `--set` / `--set-secret` values.
    pub values: Vec<Argument>,
    pub platform: Platform,
    /// The agent pool its runs go to (ACR's `agentPoolName`); `None`: any agent.
    pub agent_pool_name: Option<String>,
    /// What its runs' `cmd` steps get of the engine; `None`: the agent's own setting.
    pub docker_api: Option<DockerApiMode>,
    /// Seconds.
    pub timeout_secs: u64,
    pub status: TaskStatus,
    pub commit_trigger_enabled: bool,
    pub pull_request_trigger_enabled: bool,
    pub base_image_trigger_enabled: bool,
    pub base_image_trigger_type: BaseImageTriggerType,
    /// Token for a private repository; write-only.
    pub git_access_token: Option<String>,
    /// OpenSSH private key for an SSH git context; write-only.
    pub git_ssh_key: Option<String>,
    /// Registry logins for the task's runs, besides the server's own.
    pub credentials: Vec<RegistryLogin>,
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
        copy.context = kiln_plan::remote::redact(&copy.context);
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
            kiln_plan::remote::detect(&self.context),
            Ok(Some(kiln_plan::remote::Remote::Git { .. }))
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

/// `PATCH /tasks/{name}`: only the fields given change. Lists replace the stored list. On
/// the wire the trigger settings are ACR's nested `trigger` object ([`super::task_wire`]);
/// the two source trigger events are sent together (one given alone sends the other as off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "task_wire::Update", into = "task_wire::Update")]
pub struct UpdateTask {
    pub context: Option<String>,
    pub step: Option<TaskStep>,
    /// Merged into the stored values by name (a value named again replaces the old one).
    pub values: Vec<Argument>,
    pub platform: Option<Platform>,
    /// A new agent pool; an empty string removes it (any agent).
    pub agent_pool_name: Option<String>,
    /// A new Docker API mode; `Some(None)` removes it (the agent's own setting).
    pub docker_api: Option<Option<DockerApiMode>>,
    /// Seconds.
    pub timeout_secs: Option<u64>,
    pub status: Option<TaskStatus>,
    pub commit_trigger_enabled: Option<bool>,
    pub pull_request_trigger_enabled: Option<bool>,
    pub base_image_trigger_enabled: Option<bool>,
    pub base_image_trigger_type: Option<BaseImageTriggerType>,
    /// A new token; an empty string removes it.
    pub git_access_token: Option<String>,
    /// A new SSH private key; an empty string removes it.
    pub git_ssh_key: Option<String>,
    /// Logins added, or replaced by login server.
    pub credentials: Vec<RegistryLogin>,
    /// Login servers whose logins are removed.
    pub remove_credentials: Vec<String>,
}

/// The schemas are the wire forms'.
macro_rules! wire_schema {
    ($rust:ty => $wire:ty) => {
        impl utoipa::PartialSchema for $rust {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <$wire as utoipa::PartialSchema>::schema()
            }
        }
        impl ToSchema for $rust {
            fn name() -> std::borrow::Cow<'static, str> {
                <$wire as ToSchema>::name()
            }
            fn schemas(
                schemas: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                <$wire as ToSchema>::schemas(schemas)
            }
        }
    };
}
wire_schema!(TaskDefinition => task_wire::Definition);
wire_schema!(UpdateTask => task_wire::Update);

/// `PATCH /tasks/{name}/timers/{timer}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTimer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
}

/// A timer as `task show` and `timer list` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timer {
    pub name: String,
    pub schedule: String,
    pub status: TaskStatus,
    #[serde(default, with = "millis::option", skip_serializing_if = "Option::is_none")]
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
    /// The registry digest, or the engine's image ID of a base no registry knows (see
    /// `digestKind`); empty when unknown.
    pub digest: String,
    /// `repo-digest` or `image-id`; absent when `digest` is empty.
    #[serde(default, rename = "digestKind", skip_serializing_if = "Option::is_none")]
    pub digest_kind: Option<kiln_plan::report::DigestKind>,
}

/// Something that happened to a task besides a run (a missed timer occurrence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskEvent {
    #[serde(with = "millis")]
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
    #[serde(with = "millis")]
    pub creation_date: DateTime<Utc>,
    #[serde(with = "millis")]
    pub last_updated_time: DateTime<Utc>,
}

/// `POST /tasks/{name}/runs`: a manual run, optionally with overrides (§5.4 `az acr task run`,
/// ACR's `overrideTaskStepProperties`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRunRequest {
    /// `--set` / `--set-secret`, over the task's own (later wins).
    #[serde(default)]
    pub values: Vec<Argument>,
    /// `--arg` / `--secret-arg` for a Docker build task.
    #[serde(default, rename = "arguments")]
    pub build_args: Vec<Argument>,
    /// Another context for this run (`-c`).
    #[serde(default, rename = "contextPath", skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Another Dockerfile or task file in the context (`-f`), of the task's own kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Another build stage (`--target`) for a Dockerfile build task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Another platform for this run (`--platform`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Another agent pool for this run (`--agent-pool`, ACR's `agentPoolName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_pool_name: Option<String>,
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
    #[serde(with = "millis")]
    pub schedule_occurrence: DateTime<Utc>,
}

/// §6.2 `imageUpdateTrigger`: the base images whose tags moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageUpdateTrigger {
    #[serde(with = "millis")]
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn changes_with_an_unknown_field_are_refused_not_ignored() {
        assert!(serde_json::from_value::<UpdateTask>(json!({"timeout_secs": 900})).is_err());
        assert!(serde_json::from_value::<UpdateTimer>(json!({"enabled": false})).is_err());
        assert!(serde_json::from_value::<TaskRunRequest>(json!({"build_args": []})).is_err());
        let update: UpdateTask = serde_json::from_value(json!({"timeout": 900})).unwrap();
        assert_eq!(update.timeout_secs, Some(900));
    }
}
