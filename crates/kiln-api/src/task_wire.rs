//! The wire form of a task definition and of its update (reference §6.7): ACR's nested
//! `trigger` object (`sourceTriggers`, `baseImageTrigger`) over the flat trigger settings the
//! Rust types keep, so the code that reads those settings does not see the REST shape.
//!
//! ACR's semantics (§5.1): the one source trigger (`defaultSourceTriggerName`) lists the
//! events that are on and is `Enabled` when any is; without a git context there is none.
//! Timers are not here: kiln's `timers` list is already ACR's shape.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::task::{
    BaseImageTriggerType, RegistryLogin, TaskDefinition, TaskStatus, TaskStep, UpdateTask,
};
use super::{Argument, DockerApiMode, Platform};

/// The name of a task's one source trigger (`az acr task create --source-trigger-name`).
const SOURCE_TRIGGER_NAME: &str = "defaultSourceTriggerName";
/// The name of a task's base image trigger (`--base-image-trigger-name`).
const BASE_IMAGE_TRIGGER_NAME: &str = "defaultBaseimageTriggerName";

/// A `trigger` object that kiln's one source trigger cannot hold.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("a task has at most one source trigger; {0} were given")]
    SourceTriggers(usize),
    #[error("an Enabled source trigger lists its sourceTriggerEvents")]
    EnabledWithoutEvents,
}

/// §6.7 `trigger`: what is absent is the default (create) or unchanged (update).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = TaskTrigger)]
struct Trigger {
    /// At most one; none without a git context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_triggers: Option<Vec<SourceTrigger>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_image_trigger: Option<BaseImageTrigger>,
}

/// §5.1 a source trigger: `Disabled` turns every event off; otherwise the events listed are
/// on and the others off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = TaskSourceTrigger)]
struct SourceTrigger {
    /// Always `defaultSourceTriggerName` in answers; a given name is accepted and not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_trigger_events: Option<Vec<SourceTriggerEvent>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<TaskStatus>,
}

/// The git events a source trigger acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum SourceTriggerEvent {
    Commit,
    #[serde(rename = "pullrequest")]
    PullRequest,
}

/// §5.2 the base image trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = TaskBaseImageTrigger)]
struct BaseImageTrigger {
    /// Always `defaultBaseimageTriggerName` in answers; a given name is accepted and not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_image_trigger_type: Option<BaseImageTriggerType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<TaskStatus>,
}

/// The flat settings a `trigger` object gives; `None` where it says nothing.
#[derive(Debug, Default, PartialEq)]
struct Settings {
    commit: Option<bool>,
    pull_request: Option<bool>,
    base_image: Option<bool>,
    base_image_type: Option<BaseImageTriggerType>,
}

impl TryFrom<Trigger> for Settings {
    type Error = TriggerError;

    fn try_from(trigger: Trigger) -> Result<Self, TriggerError> {
        let (commit, pull_request) = match trigger.source_triggers.as_deref() {
            None => (None, None),
            Some([]) => (Some(false), Some(false)),
            Some([source]) => match (source.status, &source.source_trigger_events) {
                (Some(TaskStatus::Disabled), _) => (Some(false), Some(false)),
                (Some(TaskStatus::Enabled), Some(events)) if events.is_empty() => {
                    return Err(TriggerError::EnabledWithoutEvents);
                }
                (_, Some(events)) => (
                    Some(events.contains(&SourceTriggerEvent::Commit)),
                    Some(events.contains(&SourceTriggerEvent::PullRequest)),
                ),
                (Some(TaskStatus::Enabled), None) => {
                    return Err(TriggerError::EnabledWithoutEvents);
                }
                (None, None) => (None, None),
            },
            Some(many) => return Err(TriggerError::SourceTriggers(many.len())),
        };
        let base = trigger.base_image_trigger;
        Ok(Settings {
            commit,
            pull_request,
            base_image: base.as_ref().and_then(|b| b.status).map(TaskStatus::is_enabled),
            base_image_type: base.and_then(|b| b.base_image_trigger_type),
        })
    }
}

impl From<Settings> for Trigger {
    /// An event not given is sent as off: the wire lists every event that is on.
    fn from(settings: Settings) -> Self {
        let source = (settings.commit.is_some() || settings.pull_request.is_some()).then(|| {
            let events: Vec<_> = [
                (settings.commit, SourceTriggerEvent::Commit),
                (settings.pull_request, SourceTriggerEvent::PullRequest),
            ]
            .into_iter()
            .filter_map(|(on, event)| (on == Some(true)).then_some(event))
            .collect();
            SourceTrigger {
                name: Some(SOURCE_TRIGGER_NAME.into()),
                status: Some(TaskStatus::from(!events.is_empty())),
                source_trigger_events: Some(events),
            }
        });
        let base_image = (settings.base_image.is_some() || settings.base_image_type.is_some())
            .then(|| BaseImageTrigger {
                name: Some(BASE_IMAGE_TRIGGER_NAME.into()),
                base_image_trigger_type: settings.base_image_type,
                status: settings.base_image.map(TaskStatus::from),
            });
        Trigger { source_triggers: source.map(|s| vec![s]), base_image_trigger: base_image }
    }
}

/// A task's recipe and trigger settings ([`TaskDefinition`] on the wire).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TaskDefinition)]
pub(super) struct Definition {
    /// A git URL (`https://host/org/repo.git#branch:folder`, `git://…`), a tarball URL, or
    /// `/dev/null`.
    #[serde(rename = "contextPath")]
    context: String,
    step: TaskStep,
    /// `--set` / `--set-secret` values.
    #[serde(default)]
    values: Vec<Argument>,
    #[serde(default = "default_platform")]
    platform: Platform,
    /// The agent pool its runs go to; absent: any agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_pool_name: Option<String>,
    /// What its runs' `cmd` steps get of the engine at `/var/run/docker.sock`; absent: the
    /// agent's own setting (`--docker-api`). Only an admin token may set `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docker_api: Option<DockerApiMode>,
    /// Seconds.
    #[serde(default = "default_timeout", rename = "timeout")]
    timeout_secs: u64,
    #[serde(default)]
    status: TaskStatus,
    /// Absent parts are the defaults: the commit event on, the base image trigger on for
    /// `Runtime`.
    #[serde(default)]
    trigger: Trigger,
    /// Token for a private repository; write-only (shown as `***`).
    #[serde(default, rename = "contextAccessToken", skip_serializing_if = "Option::is_none")]
    git_access_token: Option<String>,
    /// OpenSSH private key (unencrypted) for an SSH git context, e.g. the repository's deploy
    /// key; it wins over the server's `--git-ssh-key`. Write-only (shown as `***`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    git_ssh_key: Option<String>,
    /// Registry logins for the task's runs, besides the server's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    credentials: Vec<RegistryLogin>,
}

fn default_platform() -> Platform {
    Platform::parse(crate::DEFAULT_PLATFORM)
}

fn default_timeout() -> u64 {
    crate::DEFAULT_TIMEOUT_SECS
}

impl TryFrom<Definition> for TaskDefinition {
    type Error = TriggerError;

    fn try_from(wire: Definition) -> Result<Self, TriggerError> {
        let triggers = Settings::try_from(wire.trigger)?;
        Ok(TaskDefinition {
            context: wire.context,
            step: wire.step,
            values: wire.values,
            platform: wire.platform,
            agent_pool_name: wire.agent_pool_name,
            docker_api: wire.docker_api,
            timeout_secs: wire.timeout_secs,
            status: wire.status,
            commit_trigger_enabled: triggers.commit.unwrap_or(true),
            pull_request_trigger_enabled: triggers.pull_request.unwrap_or(false),
            base_image_trigger_enabled: triggers.base_image.unwrap_or(true),
            base_image_trigger_type: triggers.base_image_type.unwrap_or_default(),
            git_access_token: wire.git_access_token,
            git_ssh_key: wire.git_ssh_key,
            credentials: wire.credentials,
        })
    }
}

impl From<TaskDefinition> for Definition {
    fn from(def: TaskDefinition) -> Self {
        let mut trigger = Trigger::from(Settings {
            commit: Some(def.commit_trigger_enabled),
            pull_request: Some(def.pull_request_trigger_enabled),
            base_image: Some(def.base_image_trigger_enabled),
            base_image_type: Some(def.base_image_trigger_type),
        });
        if !def.has_git_context() {
            trigger.source_triggers = Some(Vec::new());
        }
        Definition {
            context: def.context,
            step: def.step,
            values: def.values,
            platform: def.platform,
            agent_pool_name: def.agent_pool_name,
            docker_api: def.docker_api,
            timeout_secs: def.timeout_secs,
            status: def.status,
            trigger,
            git_access_token: def.git_access_token,
            git_ssh_key: def.git_ssh_key,
            credentials: def.credentials,
        }
    }
}

/// `PATCH /tasks/{name}` ([`UpdateTask`] on the wire): only the fields given change. Lists
/// replace the stored list. An unknown field is refused: a misspelt (or older) one would
/// otherwise change nothing.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = UpdateTask)]
pub(super) struct Update {
    #[serde(default, rename = "contextPath", skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<TaskStep>,
    /// Merged into the stored values by name (a value named again replaces the old one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    /// A new agent pool; an empty string removes it (any agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_pool_name: Option<String>,
    /// A new Docker API mode; `null` removes it (the agent's own setting). Only an admin
    /// token may set `host`.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DockerApiMode>, nullable)]
    docker_api: Option<Option<DockerApiMode>>,
    /// Seconds.
    #[serde(default, rename = "timeout", skip_serializing_if = "Option::is_none")]
    timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<TaskStatus>,
    /// Only the parts given change; a source trigger given sets both events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trigger: Option<Trigger>,
    /// A new token; an empty string removes it.
    #[serde(default, rename = "contextAccessToken", skip_serializing_if = "Option::is_none")]
    git_access_token: Option<String>,
    /// A new SSH private key; an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    git_ssh_key: Option<String>,
    /// Logins added, or replaced by login server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    credentials: Vec<RegistryLogin>,
    /// Login servers whose logins are removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    remove_credentials: Vec<String>,
}

/// A field that is present, even as `null` (JSON merge patch: `null` removes, absence keeps).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl TryFrom<Update> for UpdateTask {
    type Error = TriggerError;

    fn try_from(wire: Update) -> Result<Self, TriggerError> {
        let triggers = wire.trigger.map(Settings::try_from).transpose()?.unwrap_or_default();
        Ok(UpdateTask {
            context: wire.context,
            step: wire.step,
            values: wire.values,
            platform: wire.platform,
            agent_pool_name: wire.agent_pool_name,
            docker_api: wire.docker_api,
            timeout_secs: wire.timeout_secs,
            status: wire.status,
            commit_trigger_enabled: triggers.commit,
            pull_request_trigger_enabled: triggers.pull_request,
            base_image_trigger_enabled: triggers.base_image,
            base_image_trigger_type: triggers.base_image_type,
            git_access_token: wire.git_access_token,
            git_ssh_key: wire.git_ssh_key,
            credentials: wire.credentials,
            remove_credentials: wire.remove_credentials,
        })
    }
}

impl From<UpdateTask> for Update {
    fn from(update: UpdateTask) -> Self {
        let settings = Settings {
            commit: update.commit_trigger_enabled,
            pull_request: update.pull_request_trigger_enabled,
            base_image: update.base_image_trigger_enabled,
            base_image_type: update.base_image_trigger_type,
        };
        Update {
            context: update.context,
            step: update.step,
            values: update.values,
            platform: update.platform,
            agent_pool_name: update.agent_pool_name,
            docker_api: update.docker_api,
            timeout_secs: update.timeout_secs,
            status: update.status,
            trigger: (settings != Settings::default()).then(|| Trigger::from(settings)),
            git_access_token: update.git_access_token,
            git_ssh_key: update.git_ssh_key,
            credentials: update.credentials,
            remove_credentials: update.remove_credentials,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definition(context: &str) -> TaskDefinition {
        serde_json::from_value(json!({"contextPath": context,
            "step": {"type": "FileTask", "taskFilePath": "acb.yaml"}}))
        .unwrap()
    }

    #[test]
    fn a_definition_has_acr_s_nested_trigger_and_reads_back() {
        let mut def = definition("https://h/o/r.git#main");
        assert!(def.commit_trigger_enabled && !def.pull_request_trigger_enabled);
        assert!(def.base_image_trigger_enabled);
        def.pull_request_trigger_enabled = true;
        def.base_image_trigger_type = BaseImageTriggerType::All;
        let wire = serde_json::to_value(&def).unwrap();
        assert_eq!(
            wire["trigger"],
            json!({
                "sourceTriggers": [{"name": "defaultSourceTriggerName",
                    "sourceTriggerEvents": ["commit", "pullrequest"], "status": "Enabled"}],
                "baseImageTrigger": {"name": "defaultBaseimageTriggerName",
                    "baseImageTriggerType": "All", "status": "Enabled"},
            })
        );
        for flat in ["commitTriggerEnabled", "baseImageTriggerType"] {
            assert!(wire.get(flat).is_none(), "{flat} in {wire}");
        }
        assert_eq!(serde_json::from_value::<TaskDefinition>(wire).unwrap(), def);

        def.commit_trigger_enabled = false;
        def.pull_request_trigger_enabled = false;
        def.base_image_trigger_enabled = false;
        let wire = serde_json::to_value(&def).unwrap();
        assert_eq!(wire["trigger"]["sourceTriggers"][0]["status"], "Disabled");
        assert_eq!(wire["trigger"]["sourceTriggers"][0]["sourceTriggerEvents"], json!([]));
        assert_eq!(wire["trigger"]["baseImageTrigger"]["status"], "Disabled");
        assert_eq!(serde_json::from_value::<TaskDefinition>(wire).unwrap(), def);
    }

    #[test]
    fn no_source_trigger_without_a_git_context() {
        let mut def = definition("/dev/null");
        def.commit_trigger_enabled = false;
        let wire = serde_json::to_value(&def).unwrap();
        assert_eq!(wire["trigger"]["sourceTriggers"], json!([]));
        assert_eq!(serde_json::from_value::<TaskDefinition>(wire).unwrap(), def);
    }

    #[test]
    fn a_source_trigger_disabled_turns_every_event_off() {
        let def: TaskDefinition = serde_json::from_value(json!({"contextPath": "git://h/r",
            "step": {"type": "FileTask"}, "trigger": {"sourceTriggers": [
                {"sourceTriggerEvents": ["commit"], "status": "Disabled"}]}}))
        .unwrap();
        assert!(!def.commit_trigger_enabled && !def.pull_request_trigger_enabled);
    }

    #[test]
    fn a_patch_of_source_events_sets_both_and_odd_triggers_are_refused() {
        let update: UpdateTask = serde_json::from_value(
            json!({"trigger": {"sourceTriggers": [{"sourceTriggerEvents": ["pullrequest"]}]}}),
        )
        .unwrap();
        assert_eq!(
            (update.commit_trigger_enabled, update.pull_request_trigger_enabled),
            (Some(false), Some(true))
        );
        assert_eq!(update.base_image_trigger_enabled, None);
        let two = json!({"trigger": {"sourceTriggers": [{}, {}]}});
        let err = serde_json::from_value::<UpdateTask>(two).unwrap_err();
        assert!(err.to_string().contains("at most one source trigger"), "{err}");
        let enabled = json!({"trigger": {"sourceTriggers": [{"status": "Enabled"}]}});
        let err = serde_json::from_value::<UpdateTask>(enabled).unwrap_err();
        assert!(err.to_string().contains("sourceTriggerEvents"), "{err}");
        let none = json!({"trigger": {"sourceTriggers": [
            {"status": "Enabled", "sourceTriggerEvents": []}]}});
        let err = serde_json::from_value::<UpdateTask>(none).unwrap_err();
        assert!(err.to_string().contains("sourceTriggerEvents"), "{err}");
        let flat = json!({"commitTriggerEnabled": false});
        assert!(serde_json::from_value::<UpdateTask>(flat).is_err(), "the flat shape is refused");
    }

    #[test]
    fn an_update_tells_a_removed_docker_api_from_an_absent_one() {
        let read = |v: serde_json::Value| serde_json::from_value::<UpdateTask>(v).unwrap();
        assert_eq!(read(json!({})).docker_api, None);
        assert_eq!(read(json!({"dockerApi": null})).docker_api, Some(None));
        assert_eq!(read(json!({"dockerApi": "off"})).docker_api, Some(Some(DockerApiMode::Off)));
        let removed = UpdateTask { docker_api: Some(None), ..Default::default() };
        assert_eq!(serde_json::to_value(&removed).unwrap(), json!({"dockerApi": null}));
        assert_eq!(serde_json::to_value(UpdateTask::default()).unwrap(), json!({}));
    }
}
