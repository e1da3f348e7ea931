//! Stored JSON of older releases: run requests (in the clear and sealed) and task definitions
//! (redacted and sealed) written before the API's one vocabulary (issue 11) used snake_case
//! keys, a platform string, a `no_push` flag and a task file's text in `task`; definitions
//! also kept flat trigger settings (snake_case, then camelCase) where ACR nests a `trigger`.
//!
//! Why a converter on read and not a rewrite at store open: half of what is stored is sealed
//! with the server key, which the store does not hold, and a database restored from an old
//! backup must read as well as one that was migrated. So the stored form is "the current wire
//! form, or the old one"; every read of stored JSON goes through [`read_request`],
//! [`read`] or [`upgrade_keys`], which turn the old form into the current one. New
//! writes store the current form, which passes through unchanged (no current key is an old
//! key), so reading is idempotent.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::RunRequest;
use super::task::TaskStatus;

/// A stored run request, in either form.
pub fn read_request(json: &str) -> serde_json::Result<RunRequest> {
    // Every run listed or long-polled reads its request: the current form parses directly
    // (an old one cannot, its `type` tags are gone), only an old one is rebuilt.
    serde_json::from_str(json)
        .or_else(|_| serde_json::from_value(upgrade_request(serde_json::from_str(json)?)))
}

/// Any other stored document of the API's types (a [`TaskDefinition`](super::task::TaskDefinition), a sealed request's
/// envelope), its keys upgraded.
pub fn read<T: DeserializeOwned>(json: &[u8]) -> serde_json::Result<T> {
    serde_json::from_value(upgrade_keys(serde_json::from_slice(json)?))
}

/// A run request's old `type` names (`DockerBuild`, `FileTask`, `EncodedTask`) become ACR's,
/// then its keys are upgraded.
pub fn upgrade_request(mut request: Value) -> Value {
    if let Some(kind) = request.get_mut("type") {
        let new = match kind.as_str() {
            Some("DockerBuild") => Some("DockerBuildRequest"),
            Some("FileTask") => Some("FileTaskRunRequest"),
            Some("EncodedTask") => Some("EncodedTaskRunRequest"),
            _ => None,
        };
        if let Some(new) = new {
            *kind = Value::from(new);
        }
    }
    upgrade_keys(request)
}

/// Renames every old key in `value`, at any depth, converting the values whose representation
/// changed. Only fixed field names are keys in these documents (user-given names are values),
/// so renaming by key is exact.
pub fn upgrade_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, value) in map {
                let (key, value) = upgrade_field(key, upgrade_keys(value));
                out.insert(key, value);
            }
            if out.contains_key("step") {
                nest_triggers(&mut out);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(upgrade_keys).collect()),
        other => other,
    }
}

fn upgrade_field(key: String, value: Value) -> (String, Value) {
    let renamed = match key.as_str() {
        "images" => "imageNames",
        "dockerfile" => "dockerFilePath",
        "build_args" => "arguments",
        "timeout_secs" => "timeout",
        "task_file" => "taskFilePath",
        "values_file" => "valuesFilePath",
        "task_name" => "taskFileName",
        "context" => "contextPath",
        "git_access_token" => "contextAccessToken",
        "git_ssh_key" => "gitSshKey",
        "commit_trigger_enabled" => "commitTriggerEnabled",
        "pull_request_trigger_enabled" => "pullRequestTriggerEnabled",
        "base_image_trigger_enabled" => "baseImageTriggerEnabled",
        "base_image_trigger_type" => "baseImageTriggerType",
        "login_server" => "loginServer",
        "secret" if value.is_boolean() => "isSecret",
        "no_push" => return ("isPushEnabled".into(), Value::from(value.as_bool() != Some(true))),
        "task" if value.is_string() => return ("encodedTaskContent".into(), encode(&value)),
        "values_content" => return ("encodedValuesContent".into(), encode(&value)),
        "platform" if value.is_string() => {
            let platform = super::Platform::parse(value.as_str().unwrap_or_default());
            return (key, serde_json::to_value(platform).unwrap_or(value));
        }
        _ => return (key, value),
    };
    (renamed.to_string(), value)
}

/// A definition's (an object with a `step`: `baseImageTriggerType` is also a key inside the
/// nested object) flat trigger settings (`commitTriggerEnabled`, … of the releases before
/// ACR's nested `trigger`) become that object; a setting absent stays absent (its default),
/// except that the source trigger lists both events once either is given.
fn nest_triggers(map: &mut Map<String, Value>) {
    let mut take = |key: &str| map.remove(key);
    let (commit, pull_request) = (take("commitTriggerEnabled"), take("pullRequestTriggerEnabled"));
    let (base_image, base_image_type) =
        (take("baseImageTriggerEnabled"), take("baseImageTriggerType"));
    let mut trigger = Map::new();
    if commit.is_some() || pull_request.is_some() {
        let on = |flag: Option<Value>, default| flag.and_then(|f| f.as_bool()).unwrap_or(default);
        let events: Vec<&str> =
            [(on(commit, true), "commit"), (on(pull_request, false), "pullrequest")]
                .into_iter()
                .filter_map(|(on, event)| on.then_some(event))
                .collect();
        let status = TaskStatus::from(!events.is_empty()).as_str();
        trigger.insert(
            "sourceTriggers".into(),
            json!([{"sourceTriggerEvents": events, "status": status}]),
        );
    }
    if base_image.is_some() || base_image_type.is_some() {
        let mut base = Map::new();
        if let Some(on) = base_image.and_then(|b| b.as_bool()) {
            base.insert("status".into(), Value::from(TaskStatus::from(on).as_str()));
        }
        if let Some(kind) = base_image_type {
            base.insert("baseImageTriggerType".into(), kind);
        }
        trigger.insert("baseImageTrigger".into(), Value::Object(base));
    }
    if !trigger.is_empty() {
        map.insert("trigger".into(), Value::Object(trigger));
    }
}

fn encode(text: &Value) -> Value {
    match text.as_str() {
        Some(text) => Value::from(super::base64_text::encode(text)),
        None => text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::task::{BaseImageTriggerType, TaskDefinition, TaskStep};
    use crate::{Argument, Platform, Source};

    #[test]
    fn legacy_requests_of_every_kind_read_as_the_current_shape() {
        let build = json!({"type": "DockerBuild", "source": {"kind": "none"},
            "images": ["app:1"], "dockerfile": "d/Dockerfile", "no_push": true,
            "build_args": [{"name": "K", "value": "v", "secret": true}],
            "platform": "linux/arm64/v8", "timeout_secs": 600});
        let RunRequest::DockerBuild(b) = read_request(&build.to_string()).unwrap() else {
            panic!("not a build")
        };
        assert_eq!(b.images, ["app:1"]);
        assert_eq!(b.dockerfile, "d/Dockerfile");
        assert!(!b.is_push_enabled);
        assert_eq!(
            b.build_args,
            [Argument { name: "K".into(), value: Some("v".into()), secret: true }]
        );
        assert_eq!(b.platform, Some(Platform::parse("linux/arm64/v8")));
        assert_eq!(b.timeout_secs, Some(600));

        let encoded = json!({"type": "EncodedTask", "source": {"kind": "none"},
            "task": "steps:\n  - cmd: busybox true\n", "task_name": "<stdin>",
            "values_content": "a: 1\n", "values": []});
        let RunRequest::EncodedTask(e) = read_request(&encoded.to_string()).unwrap() else {
            panic!("not an encoded task")
        };
        assert_eq!(e.task, "steps:\n  - cmd: busybox true\n");
        assert_eq!(
            (e.task_name.as_str(), e.values_content.as_deref()),
            ("<stdin>", Some("a: 1\n"))
        );

        let file = json!({"type": "FileTask", "source": {"kind": "git", "url": "git://h/r"},
            "task_file": "ci/acb.yaml", "values_file": "v.yaml", "values": []});
        let RunRequest::FileTask(f) = read_request(&file.to_string()).unwrap() else {
            panic!("not a file task")
        };
        assert_eq!(f.source, Source::Git { url: "git://h/r".into() });
        assert_eq!(
            (f.task_file.as_str(), f.values_file.as_deref()),
            ("ci/acb.yaml", Some("v.yaml"))
        );
    }

    #[test]
    fn legacy_definitions_read_as_the_current_shape() {
        let old = json!({"context": "https://h/o/r.git#main", "platform": "linux/amd64",
            "timeout_secs": 900, "status": "Enabled", "commit_trigger_enabled": false,
            "pull_request_trigger_enabled": true, "base_image_trigger_enabled": true,
            "base_image_trigger_type": "All", "git_access_token": "tok",
            "values": [{"name": "s", "value": "x", "secret": true}],
            "credentials": [{"login_server": "r:5001", "username": "u", "password": "p"}],
            "step": {"type": "Docker", "dockerfile": "Dockerfile", "images": ["a:1"],
                "no_push": false, "build_args": []}});
        let def = read::<TaskDefinition>(old.to_string().as_bytes()).unwrap();
        assert_eq!(def.context, "https://h/o/r.git#main");
        assert_eq!((def.timeout_secs, def.platform.to_string().as_str()), (900, "linux/amd64"));
        assert!(!def.commit_trigger_enabled && def.pull_request_trigger_enabled);
        assert!(def.base_image_trigger_enabled);
        assert_eq!(def.base_image_trigger_type, BaseImageTriggerType::All);
        assert_eq!(def.git_access_token.as_deref(), Some("tok"));
        assert!(def.values[0].secret);
        assert_eq!(def.credentials[0].login_server, "r:5001");
        assert!(matches!(def.step, TaskStep::Docker { is_push_enabled: true, .. }));
    }

    #[test]
    fn flat_camel_case_trigger_settings_read_as_the_nested_trigger() {
        let step = json!({"type": "EncodedTask", "encodedTaskContent": "c3RlcHM6IFtdCg=="});
        let flat = json!({"contextPath": "https://h/o/r.git#main", "step": step,
            "commitTriggerEnabled": false, "pullRequestTriggerEnabled": false,
            "baseImageTriggerEnabled": false, "baseImageTriggerType": "All"});
        let def = read::<TaskDefinition>(flat.to_string().as_bytes()).unwrap();
        assert!(!def.commit_trigger_enabled && !def.pull_request_trigger_enabled);
        assert!(!def.base_image_trigger_enabled);
        assert_eq!(def.base_image_trigger_type, BaseImageTriggerType::All);
        // A setting absent keeps its default: only the pull request event given.
        let partial = json!({"contextPath": "https://h/o/r.git#main", "step": step,
            "pullRequestTriggerEnabled": true});
        let def = read::<TaskDefinition>(partial.to_string().as_bytes()).unwrap();
        assert!(def.commit_trigger_enabled && def.pull_request_trigger_enabled);
        assert!(def.base_image_trigger_enabled);
        assert_eq!(def.base_image_trigger_type, BaseImageTriggerType::Runtime);
    }

    #[test]
    fn current_documents_pass_through_unchanged() {
        let def: TaskDefinition = read(
            json!({"contextPath": "/dev/null", "step": {"type": "EncodedTask",
                "encodedTaskContent": crate::base64_text::encode("steps: []\n")}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let current = serde_json::to_value(&def).unwrap();
        assert_eq!(upgrade_keys(current.clone()), current);
        let TaskStep::EncodedTask { task, .. } = &def.step else { panic!("not encoded") };
        assert_eq!(task, "steps: []\n");
    }
}
