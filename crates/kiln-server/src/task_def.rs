//! A stored task's definition (reference §6.7): the rules a definition must meet before it is
//! stored, and its sealing. The whole definition is sealed with the server key, bound to the
//! task's name, so secrets (`--set-secret` values, secret build args, the git access token)
//! are never stored readable and one task's sealed blob cannot pass for another's; the
//! redacted copy beside it is what the API shows. The webhook secret is sealed the same way.

use chrono::{DateTime, Utc};
use kiln_api::task::{BaseImageTriggerType, TaskDefinition, TaskStatus, TimerSpec, UpdateTask};
use kiln_api::{MAX_TIMEOUT_SECS, MIN_TIMEOUT_SECS};
use kiln_plan::plan::{GitSsh, PrivateKeyError};

use crate::secret_box::{SecretBox, SecretBoxError};
use crate::store::{TaskRecord, TaskWrite, TimerRecord};
use crate::trigger::cron::{CronError, Schedule};

/// Longest task or timer name.
pub const MAX_NAME_LEN: usize = 50;

/// Why a definition, a name or a timer is refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskDefError {
    #[error("{what} name {name:?} is invalid: use 1-{MAX_NAME_LEN} letters, digits, '-' or '_'")]
    Name { what: &'static str, name: String },
    #[error(transparent)]
    Context(#[from] crate::task_run::TaskRunError),
    #[error("timeout must be between {MIN_TIMEOUT_SECS} and {MAX_TIMEOUT_SECS} seconds, not {0}")]
    Timeout(u64),
    #[error("timer {name}: {source}")]
    Cron { name: String, source: CronError },
    #[error("timers {first} and {second} have the same schedule {schedule:?}")]
    SameSchedule { first: String, second: String, schedule: String },
    #[error("two timers are named {0}")]
    SameTimerName(String),
    #[error(transparent)]
    Sealed(#[from] SecretBoxError),
    #[error("the stored definition of task {task} cannot be read: {source}")]
    Corrupt { task: String, source: serde_json::Error },
    #[error("gitSshKey: {0}")]
    SshKey(#[from] PrivateKeyError),
    #[error(
        "{file}: ACR reserves .{ext} for task files but runs only YAML ones (.yaml, .yml); \
         a Dockerfile needs another name"
    )]
    ReservedExtension { file: String, ext: String },
}

fn purpose(task: &str, what: &str) -> String {
    format!("kiln task/{task}/{what}")
}

/// §1.4: whether `-f FILE` names a task file (else a Dockerfile). ACR reserves more
/// extensions for task files than YAML, but runs only YAML: those are refused.
pub fn is_task_file(file: &str) -> Result<bool, TaskDefError> {
    const RESERVED: [&str; 15] = [
        "toml", "json", "sh", "bash", "zsh", "ps1", "ps", "cmd", "bat", "ts", "js", "php", "py",
        "rb", "lua",
    ];
    let ext = std::path::Path::new(file)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "yaml" | "yml" => Ok(true),
        e if RESERVED.contains(&e) => {
            Err(TaskDefError::ReservedExtension { file: file.to_string(), ext: ext.clone() })
        }
        _ => Ok(false),
    }
}

/// Checks a task or timer name.
pub fn check_name(what: &'static str, name: &str) -> Result<(), TaskDefError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(TaskDefError::Name { what, name: name.to_string() }) }
}

/// Checks what can be checked without running: the context, the timeout and an SSH key. (The token's use
/// is checked by making the task's run request, [`crate::task_run::request_for`], and a task
/// file kept in the task by planning it; the caller does both.)
pub fn check(def: &TaskDefinition) -> Result<(), TaskDefError> {
    crate::task_run::classify(&def.context)?;
    if !(MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&def.timeout_secs) {
        return Err(TaskDefError::Timeout(def.timeout_secs));
    }
    if let Some(key) = &def.git_ssh_key {
        GitSsh::check_private_key(key)?;
    }
    Ok(())
}

/// §5.1: without a git context there is nothing to trigger on; source triggers are forced off.
pub fn normalise(def: &mut TaskDefinition) {
    if !def.has_git_context() {
        def.commit_trigger_enabled = false;
        def.pull_request_trigger_enabled = false;
    }
}

/// Parses timers, checking names and that schedules differ (§5.3).
pub fn check_timers(timers: &[TimerSpec]) -> Result<Vec<Schedule>, TaskDefError> {
    let mut schedules = Vec::with_capacity(timers.len());
    for (i, timer) in timers.iter().enumerate() {
        check_name("timer", &timer.name)?;
        let schedule = Schedule::parse(&timer.schedule)
            .map_err(|source| TaskDefError::Cron { name: timer.name.clone(), source })?;
        if let Some(other) = timers[..i].iter().find(|t| t.name == timer.name) {
            return Err(TaskDefError::SameTimerName(other.name.clone()));
        }
        if let Some(other) = timers[..i].iter().find(|t| t.schedule.trim() == timer.schedule.trim())
        {
            return Err(TaskDefError::SameSchedule {
                first: other.name.clone(),
                second: timer.name.clone(),
                schedule: timer.schedule.clone(),
            });
        }
        schedules.push(schedule);
    }
    Ok(schedules)
}

/// A timer row for `spec`, first firing at its next occurrence after `now`.
pub fn timer_record(
    task: &str,
    spec: &TimerSpec,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> TimerRecord {
    TimerRecord {
        task_name: task.to_string(),
        name: spec.name.clone(),
        schedule: spec.schedule.clone(),
        enabled: spec.status.is_enabled(),
        next_fire_at: schedule.next_after(now),
    }
}

/// What the store writes for `def`.
pub fn seal(
    secrets: &SecretBox,
    task: &str,
    def: &TaskDefinition,
) -> Result<TaskWrite, TaskDefError> {
    let json = |d: &TaskDefinition| {
        serde_json::to_string(d)
            .map_err(|source| TaskDefError::Corrupt { task: task.to_string(), source })
    };
    let base_image_trigger = match (def.base_image_trigger_enabled, def.base_image_trigger_type) {
        (false, _) => "Disabled",
        (true, BaseImageTriggerType::Runtime) => "Runtime",
        (true, BaseImageTriggerType::All) => "All",
    };
    Ok(TaskWrite {
        status: def.status.as_str().to_string(),
        base_image_trigger: base_image_trigger.to_string(),
        definition: json(&def.redacted())?,
        sealed: secrets.seal(&purpose(task, "definition"), json(def)?.as_bytes())?,
    })
}

/// The whole definition of a stored task.
pub fn open(secrets: &SecretBox, task: &TaskRecord) -> Result<TaskDefinition, TaskDefError> {
    let bytes = secrets.open(&purpose(&task.name, "definition"), &task.sealed)?;
    kiln_api::legacy::read(&bytes)
        .map_err(|source| TaskDefError::Corrupt { task: task.name.clone(), source })
}

/// A new webhook secret for `task`: the secret and its sealed form.
pub fn new_webhook_secret(
    secrets: &SecretBox,
    task: &str,
) -> Result<(String, Vec<u8>), TaskDefError> {
    let secret = random_webhook_secret()?;
    let sealed = secrets.seal(&purpose(task, "webhook"), secret.as_bytes())?;
    Ok((secret, sealed))
}

/// A webhook secret's text: 24 random bytes in hex.
pub fn random_webhook_secret() -> Result<String, TaskDefError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| SecretBoxError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The webhook secret of a stored task.
pub fn webhook_secret(secrets: &SecretBox, task: &TaskRecord) -> Result<String, TaskDefError> {
    let bytes = secrets.open(&purpose(&task.name, "webhook"), &task.webhook_secret)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `def` with `update` applied (`az acr task update`: only the fields given change; values
/// named again replace the stored ones).
pub fn apply(def: &mut TaskDefinition, update: UpdateTask) {
    let UpdateTask {
        context,
        step,
        values,
        platform,
        agent_pool_name,
        docker_api,
        timeout_secs,
        status,
        commit_trigger_enabled,
        pull_request_trigger_enabled,
        base_image_trigger_enabled,
        base_image_trigger_type,
        git_access_token,
        git_ssh_key,
        credentials,
        remove_credentials,
    } = update;
    if let Some(c) = context {
        def.context = c;
    }
    if let Some(s) = step {
        def.step = s;
    }
    if !values.is_empty() {
        def.values.retain(|v| !values.iter().any(|n| n.name == v.name));
        def.values.extend(values);
    }
    if let Some(p) = platform {
        def.platform = p;
    }
    if let Some(pool) = agent_pool_name {
        def.agent_pool_name = (!pool.is_empty()).then_some(pool);
    }
    if let Some(mode) = docker_api {
        def.docker_api = mode;
    }
    if let Some(t) = timeout_secs {
        def.timeout_secs = t;
    }
    if let Some(s) = status {
        def.status = s;
    }
    if let Some(b) = commit_trigger_enabled {
        def.commit_trigger_enabled = b;
    }
    if let Some(b) = pull_request_trigger_enabled {
        def.pull_request_trigger_enabled = b;
    }
    if let Some(b) = base_image_trigger_enabled {
        def.base_image_trigger_enabled = b;
    }
    if let Some(t) = base_image_trigger_type {
        def.base_image_trigger_type = t;
    }
    if let Some(token) = git_access_token {
        def.git_access_token = (!token.is_empty()).then_some(token);
    }
    if let Some(key) = git_ssh_key {
        def.git_ssh_key = (!key.is_empty()).then_some(key);
    }
    def.credentials.retain(|c| {
        !remove_credentials.contains(&c.login_server)
            && !credentials.iter().any(|n| n.login_server == c.login_server)
    });
    def.credentials.extend(credentials);
}

/// Whether the task acts on triggers.
pub fn is_enabled(def: &TaskDefinition) -> bool {
    def.status == TaskStatus::Enabled
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use kiln_api::Argument;
    use kiln_api::task::TaskStep;

    #[test]
    fn task_files_go_by_extension_others_are_dockerfiles() {
        assert!(is_task_file("acb.yaml").unwrap());
        assert!(is_task_file("ci/Build.YML").unwrap());
        assert!(!is_task_file("Dockerfile").unwrap());
        assert!(!is_task_file("docker/app.dockerfile").unwrap());
        let err = is_task_file("build.sh").unwrap_err().to_string();
        assert!(
            err.contains("build.sh: ACR reserves .sh for task files but runs only YAML"),
            "{err}"
        );
    }

    fn def(context: &str) -> TaskDefinition {
        serde_json::from_value(serde_json::json!({
            "contextPath": context,
            "step": {"type": "EncodedTask",
                "encodedTaskContent": kiln_api::base64_text::encode("steps:\n  - cmd: busybox true\n")},
        }))
        .unwrap()
    }

    #[test]
    fn task_def_defaults_follow_az_acr_task_create() {
        let d = def("https://h/o/r.git");
        assert_eq!(d.timeout_secs, 3600);
        assert!(d.commit_trigger_enabled && !d.pull_request_trigger_enabled);
        assert!(d.base_image_trigger_enabled);
        assert_eq!(d.base_image_trigger_type, BaseImageTriggerType::Runtime);
        assert_eq!(d.status, TaskStatus::Enabled);
        let mut null = def("/dev/null");
        normalise(&mut null);
        assert!(!null.commit_trigger_enabled, "source triggers are off without a git context");
    }

    #[test]
    fn task_def_rejects_bad_contexts_names_timeouts_and_tokens() {
        assert!(check(&def("/dev/null")).is_ok());
        assert!(check(&def("git://127.0.0.1/r.git#main:app")).is_ok());
        let err = check(&def("./local")).unwrap_err().to_string();
        assert!(err.contains("a task's context is a git URL"), "{err}");
        assert!(check(&def("git@github.com:o/r.git#main")).is_ok());
        let err = check(&def("git@github.com#main")).unwrap_err().to_string();
        assert_eq!(
            err,
            "context \"git@github.com#main\": an SSH remote is git@host:path or \
             ssh://[user@]host[:port]/path"
        );
        let mut t = def("/dev/null");
        t.timeout_secs = 10;
        assert!(matches!(check(&t), Err(TaskDefError::Timeout(10))));
        let mut token = def("git://h/r.git");
        token.git_access_token = Some("x".into());
        let made = crate::task_run::request_for(
            &token,
            &crate::task_run::Firing::Manual(&Default::default()),
        );
        assert!(matches!(made, Err(crate::task_run::TaskRunError::TokenWithoutHttp(_))));
        assert!(check_name("task", "build-app_2").is_ok());
        assert!(check_name("task", "a/b").is_err());
        assert!(check_name("task", "").is_err());
    }

    #[test]
    fn task_def_timers_need_distinct_names_and_schedules() {
        let t = |name: &str, schedule: &str| TimerSpec {
            name: name.into(),
            schedule: schedule.into(),
            status: TaskStatus::Enabled,
        };
        assert_eq!(check_timers(&[t("t1", "* * * * *"), t("t2", "0 * * * *")]).unwrap().len(), 2);
        let err = check_timers(&[t("t1", "* * * * * *")]).unwrap_err().to_string();
        assert!(err.starts_with("timer t1:") && err.contains("6 fields"), "{err}");
        assert!(matches!(
            check_timers(&[t("a", "* * * * *"), t("b", "* * * * *")]),
            Err(TaskDefError::SameSchedule { .. })
        ));
        assert!(matches!(
            check_timers(&[t("a", "* * * * *"), t("a", "1 * * * *")]),
            Err(TaskDefError::SameTimerName(_))
        ));
    }

    #[test]
    fn task_def_sealed_whole_redacted_in_the_clear_and_bound_to_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = SecretBox::open_or_create(dir.path()).unwrap();
        let mut d = def("https://h/o/r.git");
        d.git_access_token = Some("tok-123".into());
        d.values.push(Argument { name: "pw".into(), value: Some("hunter2".into()), secret: true });
        let write = seal(&secrets, "app", &d).unwrap();
        assert!(!write.definition.contains("tok-123") && !write.definition.contains("hunter2"));
        let sealed_text = String::from_utf8_lossy(&write.sealed);
        assert!(!sealed_text.contains("tok-123") && !sealed_text.contains("hunter2"));
        let record = |name: &str| TaskRecord {
            name: name.into(),
            status: write.status.clone(),
            base_image_trigger: write.base_image_trigger.clone(),
            definition: write.definition.clone(),
            sealed: write.sealed.clone(),
            webhook_secret: Vec::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert_eq!(open(&secrets, &record("app")).unwrap(), d);
        assert!(open(&secrets, &record("other")).is_err(), "a blob is bound to its task");
    }

    #[test]
    fn task_def_update_merges_values_and_clears_the_token() {
        let mut d = def("https://h/o/r.git");
        d.values = vec![
            Argument { name: "a".into(), value: Some("1".into()), secret: false },
            Argument { name: "b".into(), value: Some("2".into()), secret: false },
        ];
        d.git_access_token = Some("t".into());
        apply(
            &mut d,
            UpdateTask {
                values: vec![Argument { name: "a".into(), value: Some("9".into()), secret: true }],
                git_access_token: Some(String::new()),
                step: Some(TaskStep::FileTask { task_file: "x.yaml".into(), values_file: None }),
                ..Default::default()
            },
        );
        let names: Vec<_> =
            d.values.iter().map(|v| (v.name.as_str(), v.value.as_deref())).collect();
        assert_eq!(names, [("b", Some("2")), ("a", Some("9"))]);
        assert_eq!(d.git_access_token, None);
    }

    #[test]
    fn a_patch_of_the_base_image_status_changes_only_that() {
        let update: UpdateTask = serde_json::from_value(
            json!({"trigger": {"baseImageTrigger": {"status": "Disabled"}}}),
        )
        .unwrap();
        assert_eq!(
            update,
            UpdateTask { base_image_trigger_enabled: Some(false), ..Default::default() }
        );
        let mut def: TaskDefinition =
            serde_json::from_value(json!({"contextPath": "https://h/o/r.git#main",
            "step": {"type": "FileTask", "taskFilePath": "acb.yaml"}}))
            .unwrap();
        let before = def.clone();
        apply(&mut def, update.clone());
        assert_eq!(
            def,
            TaskDefinition { base_image_trigger_enabled: false, ..before },
            "only the base image trigger's status changed"
        );
        // And it is sent as it was read.
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            json!({"trigger": {"baseImageTrigger": {"name": "defaultBaseimageTriggerName",
                "status": "Disabled"}}})
        );
    }
}
