//! What a task runs when something fires it (reference §5): the stored definition plus the
//! firing (a git event, a timer occurrence, a base-image change, a manual run) become one run
//! request and its §6.2 trigger record.
//!
//! * A push builds the commit it names, not the branch's head at fetch time: several pushes in
//!   quick succession each build their own commit (ACR built the oldest: Azure/acr#152).
//! * A pull request builds its head ref (`pull/N/head` on GitHub and Gitea,
//!   `merge-requests/N/head` on GitLab), as ACR checks out `pull/<n>/head`.
//! * Other firings build the context as the task names it (its branch, shallow).
//! * The git access token goes into the fetch URL as its password, which the worker masks in
//!   every line and error; the stored run keeps it only sealed ([`crate::queue`]).
//! * A manual run may name another file of the task's own kind (`-f`) or build stage
//!   (`--target`), as `az acr task run` does.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use kiln_api::task::{
    ImageUpdateTrigger, SourceTrigger, TaskDefinition, TaskRunRequest, TaskStep, TimerTrigger,
};
use kiln_api::{
    Argument, DockerBuildRequest, EncodedTaskRequest, FileTaskRequest, Image, RunRequest, Source,
    TriggerDetail,
};
use kiln_plan::remote::{self, Remote};

use crate::queue::{self, Origin};
use crate::secret_box::SecretBox;
use crate::store::NewRun;
use crate::trigger::webhook::{Provider, SourceEvent};

/// The branch a task follows when its context names none (ACR's default, §5.1).
pub const DEFAULT_BRANCH: &str = "master";

/// What fires a task's run.
#[derive(Debug, Clone, PartialEq)]
pub enum Firing<'a> {
    Manual(&'a TaskRunRequest),
    Source { provider: Provider, delivery: Option<String>, event: &'a SourceEvent },
    Timer { name: &'a str, occurrence: DateTime<Utc> },
    ImageUpdate { images: Vec<Image> },
}

/// Why a task cannot make its run request.
#[derive(Debug, thiserror::Error)]
pub enum TaskRunError {
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    #[error("context {context:?}: {reason}")]
    Context { context: String, reason: String },
    #[error("a git access token needs an http(s) git context, not {0}")]
    TokenWithoutHttp(String),
    #[error("an SSH key needs an SSH git context (git@host:path, ssh://…), not {0}")]
    KeyWithoutSsh(String),
    #[error("{0}")]
    Override(String),
}

/// What a task's context names: something to download, or nothing (`/dev/null`). A task keeps
/// no uploaded directory for later runs, so a local path is refused.
pub fn classify(context: &str) -> Result<Option<Remote>, TaskRunError> {
    let error = |reason: String| TaskRunError::Context { context: remote::redact(context), reason };
    let detected = remote::detect(context).map_err(|e| match e {
        remote::DetectError::Invalid { reason, .. } => error(reason),
        e => error(e.to_string()),
    })?;
    if detected.is_none() && context != "/dev/null" {
        return Err(error(
            "a task's context is a git URL (https://host/org/repo.git#branch:folder, \
             git://…), a tarball URL or /dev/null, not a local directory"
                .to_string(),
        ));
    }
    Ok(detected)
}

/// The task's context as the worker fetches it, after `reference` replaced the context's own
/// ref (when given) and the token was put into the URL. An SSH key travels beside the request
/// ([`crate::queue::Origin`]), never in it.
fn source(
    def: &TaskDefinition,
    context: &str,
    reference: Option<&str>,
) -> Result<Source, TaskRunError> {
    let detected = classify(context)?;
    if def.git_ssh_key.is_some() && remote::ssh_host(context).is_none() {
        return Err(TaskRunError::KeyWithoutSsh(remote::redact(context)));
    }
    match detected {
        None => Ok(Source::None),
        Some(Remote::Tarball { url }) => Ok(Source::Tarball { url }),
        Some(Remote::Git { url, reference: own, subdir }) => {
            let url = match &def.git_access_token {
                Some(token) => with_token(&url, token)?,
                None => url,
            };
            let reference = reference.map(str::to_string).or(own).unwrap_or_default();
            let url = match subdir {
                Some(subdir) => format!("{url}#{reference}:{subdir}"),
                None if reference.is_empty() => url,
                None => format!("{url}#{reference}"),
            };
            Ok(Source::Git { url })
        }
    }
}

/// `https://host/…` → `https://kiln:<token>@host/…` (percent-encoded; any user name works with
/// GitHub, GitLab and Gitea tokens).
fn with_token(url: &str, token: &str) -> Result<String, TaskRunError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(TaskRunError::TokenWithoutHttp(remote::redact(url)));
    };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(TaskRunError::TokenWithoutHttp(remote::redact(url)));
    }
    // An existing user part gives way to the token.
    let host_and_path = match rest.split_once('/') {
        Some((authority, path)) => {
            format!("{}/{path}", authority.rsplit_once('@').map_or(authority, |(_, h)| h))
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    let encoded: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://kiln:{encoded}@{host_and_path}"))
}

/// The branch the task's context names (`…repo.git#branch:folder`), if any.
pub fn context_branch(def: &TaskDefinition) -> Option<String> {
    match remote::detect(&def.context) {
        Ok(Some(Remote::Git { reference: Some(r), .. })) => {
            Some(r.strip_prefix("refs/heads/").unwrap_or(&r).to_string())
        }
        _ => None,
    }
}

/// The branch a task follows: its context's, else the repository's default branch as the
/// delivery names it, else [`DEFAULT_BRANCH`] (§5.1).
pub fn followed_branch(def: &TaskDefinition, default_branch: Option<&str>) -> String {
    context_branch(def).unwrap_or_else(|| default_branch.unwrap_or(DEFAULT_BRANCH).to_string())
}

/// Later arguments replace earlier ones of the same name.
pub fn overlay(base: &[Argument], over: &[Argument]) -> Vec<Argument> {
    let mut merged: Vec<Argument> =
        base.iter().filter(|a| !over.iter().any(|o| o.name == a.name)).cloned().collect();
    merged.extend(over.iter().cloned());
    merged
}

fn task_file_kind(file: &str) -> Result<bool, TaskRunError> {
    crate::task_def::is_task_file(file).map_err(|e| TaskRunError::Override(format!("--file {e}")))
}

/// The task's step with a manual run's `-f` and `--target` applied. `-f` names another file of
/// the step's own kind: a Dockerfile build stays a build, a task file stays a task file.
fn step_override(step: &TaskStep, overrides: &TaskRunRequest) -> Result<TaskStep, TaskRunError> {
    let mut step = step.clone();
    match &mut step {
        TaskStep::Docker { dockerfile, target, .. } => {
            if let Some(file) = &overrides.file {
                if task_file_kind(file)? {
                    return Err(TaskRunError::Override(format!(
                        "--file {file:?} is a task file, but this task builds a Dockerfile"
                    )));
                }
                *dockerfile = file.clone();
            }
            if let Some(stage) = &overrides.target {
                *target = Some(stage.clone());
            }
        }
        TaskStep::FileTask { task_file, .. } => {
            if let Some(file) = &overrides.file {
                if !task_file_kind(file)? {
                    return Err(TaskRunError::Override(format!(
                        "--file {file:?} is not a task file (.yaml, .yml, .toml), but this task \
                         runs one"
                    )));
                }
                *task_file = file.clone();
            }
        }
        TaskStep::EncodedTask { .. } => {
            if overrides.file.is_some() {
                return Err(TaskRunError::Override(
                    "--file: this task keeps its task file in itself (--cmd, or a /dev/null \
                     context); change it with `kiln task update --file`"
                        .to_string(),
                ));
            }
        }
    }
    if overrides.target.is_some() && !matches!(step, TaskStep::Docker { .. }) {
        return Err(TaskRunError::Override(
            "--target names a Dockerfile stage, and this task runs a task file".to_string(),
        ));
    }
    Ok(step)
}

/// The run request and trigger record of `def` fired by `firing`.
pub fn request_for(
    def: &TaskDefinition,
    firing: &Firing<'_>,
) -> Result<(RunRequest, TriggerDetail), TaskRunError> {
    let mut detail = TriggerDetail::default();
    let mut values = def.values.clone();
    let mut extra_build_args: &[Argument] = &[];
    let mut context = def.context.as_str();
    let mut step = Cow::Borrowed(&def.step);
    let mut manual = None;
    let reference = match firing {
        Firing::Manual(overrides) => {
            manual = Some(*overrides);
            values = overlay(&values, &overrides.values);
            extra_build_args = &overrides.build_args;
            step = Cow::Owned(step_override(&def.step, overrides)?);
            if let Some(c) = &overrides.context {
                context = c;
            }
            None
        }
        Firing::Source { provider, delivery, event } => {
            let (pr, branch, repository, reference) = match event {
                SourceEvent::Push { branch, commit, repository, .. } => {
                    (None, branch, repository, commit.clone())
                }
                SourceEvent::PullRequest { number, base_branch, repository, .. } => {
                    let reference = match provider {
                        Provider::GitLab => format!("merge-requests/{number}/head"),
                        Provider::GitHub | Provider::Gitea => format!("pull/{number}/head"),
                    };
                    (Some(number.to_string()), base_branch, repository, reference)
                }
            };
            detail.source_trigger = Some(SourceTrigger {
                id: delivery.clone(),
                event_type: event.event_type().to_string(),
                commit_id: event.commit().to_string(),
                pull_request_id: pr,
                repository_url: repository.clone(),
                branch_name: branch.clone(),
                provider_type: format!("{provider:?}"),
            });
            Some(reference)
        }
        Firing::Timer { name, occurrence } => {
            detail.timer_trigger = Some(TimerTrigger {
                timer_trigger_name: name.to_string(),
                schedule_occurrence: *occurrence,
            });
            None
        }
        Firing::ImageUpdate { images } => {
            detail.image_update_trigger =
                Some(ImageUpdateTrigger { timestamp: Utc::now(), images: images.clone() });
            None
        }
    };
    let source = source(def, context, reference.as_deref())?;
    let platform = Some(manual.and_then(|o| o.platform.clone()).unwrap_or(def.platform.clone()));
    let timeout_secs = Some(def.timeout_secs);
    let agent_pool_name = match manual.and_then(|o| o.agent_pool_name.clone()) {
        Some(pool) => (!pool.is_empty()).then_some(pool),
        None => def.agent_pool_name.clone(),
    };
    let request = match step.as_ref() {
        TaskStep::Docker { dockerfile, images, is_push_enabled, build_args, target } => {
            RunRequest::DockerBuild(DockerBuildRequest {
                source,
                images: images.clone(),
                dockerfile: dockerfile.clone(),
                build_args: overlay(build_args, extra_build_args),
                target: target.clone(),
                platform,
                platforms: Vec::new(),
                is_push_enabled: *is_push_enabled,
                timeout_secs,
                agent_pool_name,
            })
        }
        TaskStep::FileTask { task_file, values_file } => RunRequest::FileTask(FileTaskRequest {
            source,
            task_file: task_file.clone(),
            values_file: values_file.clone(),
            values,
            platform,
            timeout_secs,
            agent_pool_name,
            docker_api: def.docker_api,
        }),
        TaskStep::EncodedTask { task, task_name, values_content } => {
            RunRequest::EncodedTask(EncodedTaskRequest {
                source,
                task: task.clone(),
                task_name: task_name.clone(),
                values_content: values_content.clone(),
                values,
                platform,
                timeout_secs,
                agent_pool_name,
                docker_api: def.docker_api,
            })
        }
    };
    Ok((request, detail))
}

/// The stored run of task `name` fired by `firing`, as a trigger queues it: the definition
/// was checked when it was stored, so the task file is planned when the run starts.
pub fn new_run(
    secrets: &SecretBox,
    name: &str,
    def: &TaskDefinition,
    firing: &Firing<'_>,
) -> Result<NewRun, TaskRunError> {
    let (request, trigger) = request_for(def, firing)?;
    Ok(queue::new_run(secrets, &request, Origin::task(name, def, trigger))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::task::{BaseImageTriggerType, TaskStatus};

    fn def(context: &str, token: Option<&str>) -> TaskDefinition {
        TaskDefinition {
            context: context.to_string(),
            step: TaskStep::FileTask { task_file: "acb.yaml".to_string(), values_file: None },
            values: vec![Argument { name: "a".into(), value: Some("1".into()), secret: false }],
            platform: kiln_api::Platform::parse("linux/amd64"),
            agent_pool_name: None,
            docker_api: None,
            timeout_secs: 3600,
            status: TaskStatus::Enabled,
            commit_trigger_enabled: true,
            pull_request_trigger_enabled: true,
            base_image_trigger_enabled: true,
            base_image_trigger_type: BaseImageTriggerType::Runtime,
            git_access_token: token.map(str::to_string),
            git_ssh_key: None,
            credentials: Vec::new(),
        }
    }

    fn url(request: &RunRequest) -> String {
        match request.source() {
            Source::Git { url } => url.clone(),
            other => panic!("not git: {other:?}"),
        }
    }

    #[test]
    fn task_run_push_builds_its_commit_in_the_folder_with_the_token() {
        let def = def("https://git.example/org/app.git#main:svc", Some("t@k/n"));
        let event = SourceEvent::Push {
            branch: "main".into(),
            commit: "abc123".into(),
            repository: "https://git.example/org/app.git".into(),
            default_branch: None,
        };
        let firing = Firing::Source {
            provider: Provider::GitHub,
            delivery: Some("d1".into()),
            event: &event,
        };
        let (request, detail) = request_for(&def, &firing).unwrap();
        assert_eq!(url(&request), "https://kiln:t%40k%2Fn@git.example/org/app.git#abc123:svc");
        assert_eq!(detail.column(), "Commit");
        let source = detail.source_trigger.unwrap();
        assert_eq!((source.commit_id.as_str(), source.branch_name.as_str()), ("abc123", "main"));
        // What is stored in the clear has no token.
        assert!(!serde_json::to_string(&request.redacted()).unwrap().contains("t%40k"));
    }

    #[test]
    fn task_run_pull_request_ref_depends_on_the_host() {
        let def = def("git://127.0.0.1/app.git", None);
        let event = SourceEvent::PullRequest {
            number: 7,
            commit: "def".into(),
            base_branch: "master".into(),
            repository: "x".into(),
        };
        for (provider, expected) in [
            (Provider::GitHub, "git://127.0.0.1/app.git#pull/7/head"),
            (Provider::Gitea, "git://127.0.0.1/app.git#pull/7/head"),
            (Provider::GitLab, "git://127.0.0.1/app.git#merge-requests/7/head"),
        ] {
            let firing = Firing::Source { provider, delivery: None, event: &event };
            let (request, detail) = request_for(&def, &firing).unwrap();
            assert_eq!(url(&request), expected);
            assert_eq!(detail.column(), "Pull Request");
        }
    }

    #[test]
    fn task_run_manual_overrides_values_and_keeps_the_branch() {
        let def = def("https://h/r.git#dev", None);
        let overrides = TaskRunRequest {
            values: vec![Argument { name: "a".into(), value: Some("2".into()), secret: true }],
            ..Default::default()
        };
        let (request, detail) = request_for(&def, &Firing::Manual(&overrides)).unwrap();
        assert_eq!(url(&request), "https://h/r.git#dev");
        assert_eq!(detail.column(), "Manual");
        let RunRequest::FileTask(file) = request else { panic!("file task") };
        assert_eq!(file.values, overrides.values);
        assert_eq!(
            request_for(&def, &Firing::Manual(&overrides)).unwrap().0.run_type(true).as_str(),
            "AutoRun"
        );
    }

    #[test]
    fn task_run_manual_platform_and_pool_override_the_task_and_timers_keep_the_task_own() {
        let def = TaskDefinition {
            agent_pool_name: Some("builders".into()),
            ..def("https://h/r.git", None)
        };
        let placed = |firing: &Firing<'_>| {
            let (request, _) = request_for(&def, firing).unwrap();
            (request.platform().map(ToString::to_string), request.agent_pool().map(str::to_string))
        };
        let arm = TaskRunRequest {
            platform: Some(kiln_api::Platform::parse("linux/arm64")),
            agent_pool_name: Some("arm".into()),
            ..Default::default()
        };
        assert_eq!(placed(&Firing::Manual(&arm)), (Some("linux/arm64".into()), Some("arm".into())));
        let any = TaskRunRequest { agent_pool_name: Some(String::new()), ..Default::default() };
        assert_eq!(placed(&Firing::Manual(&any)), (Some("linux/amd64".into()), None));
        let timer = Firing::Timer { name: "t", occurrence: Utc::now() };
        assert_eq!(placed(&timer), (Some("linux/amd64".into()), Some("builders".into())));
    }

    #[test]
    fn task_run_manual_file_and_target_stay_of_the_task_kind() {
        let run = |def: &TaskDefinition, file: Option<&str>, target: Option<&str>| {
            let overrides = TaskRunRequest {
                file: file.map(str::to_string),
                target: target.map(str::to_string),
                ..Default::default()
            };
            request_for(def, &Firing::Manual(&overrides)).map(|(request, _)| request)
        };
        let build = TaskDefinition {
            step: TaskStep::Docker {
                dockerfile: "Dockerfile".into(),
                images: vec!["app:1".into()],
                is_push_enabled: true,
                build_args: Vec::new(),
                target: None,
            },
            ..def("https://h/r.git", None)
        };
        let RunRequest::DockerBuild(request) =
            run(&build, Some("ci/Other.dockerfile"), Some("test")).unwrap()
        else {
            panic!("a build stays a build")
        };
        assert_eq!(request.dockerfile, "ci/Other.dockerfile");
        assert_eq!(request.target.as_deref(), Some("test"));
        let err = run(&build, Some("ci/acb.yaml"), None).unwrap_err().to_string();
        assert!(err.contains("\"ci/acb.yaml\" is a task file, but this task builds a Dockerfile"));

        let file_task = def("https://h/r.git", None);
        let RunRequest::FileTask(request) = run(&file_task, Some("ci/nightly.yml"), None).unwrap()
        else {
            panic!("a task file stays a task file")
        };
        assert_eq!(request.task_file, "ci/nightly.yml");
        let err = run(&file_task, Some("Dockerfile"), None).unwrap_err().to_string();
        assert!(err.contains("is not a task file"), "{err}");
        let err = run(&file_task, Some("build.sh"), None).unwrap_err().to_string();
        assert!(err.contains("--file build.sh: ACR reserves .sh"), "{err}");
        let err = run(&file_task, None, Some("test")).unwrap_err().to_string();
        assert!(err.contains("--target names a Dockerfile stage"), "{err}");

        let encoded = TaskDefinition {
            step: TaskStep::EncodedTask {
                task: "steps: []".into(),
                task_name: "acb.yaml".into(),
                values_content: None,
            },
            ..def("/dev/null", None)
        };
        let err = run(&encoded, Some("other.yaml"), None).unwrap_err().to_string();
        assert!(err.contains("kiln task update --file"), "{err}");
    }

    #[test]
    fn task_run_ssh_key_needs_an_ssh_context_and_stays_out_of_the_request() {
        let key = Some("-----BEGIN OPENSSH PRIVATE KEY-----\nk\n".to_string());
        let ssh = TaskDefinition { git_ssh_key: key.clone(), ..def("git@h:o/r.git#main", None) };
        let (request, _) = request_for(&ssh, &Firing::Manual(&TaskRunRequest::default())).unwrap();
        assert_eq!(url(&request), "git@h:o/r.git#main");
        assert!(!serde_json::to_string(&request).unwrap().contains("PRIVATE KEY"));
        for context in ["https://h/o/r.git", "/dev/null"] {
            let other = TaskDefinition { git_ssh_key: key.clone(), ..def(context, None) };
            let manual = Firing::Manual(&TaskRunRequest::default());
            assert!(matches!(request_for(&other, &manual), Err(TaskRunError::KeyWithoutSsh(_))));
        }
    }

    #[test]
    fn task_run_timer_and_dev_null() {
        let null = def("/dev/null", None);
        let at = Utc::now();
        let (request, detail) =
            request_for(&null, &Firing::Timer { name: "t1", occurrence: at }).unwrap();
        assert_eq!(request.source(), &Source::None);
        assert_eq!(detail.column(), "Timer");
        assert_eq!(detail.timer_trigger.unwrap().schedule_occurrence, at);
        let token =
            TaskDefinition { git_access_token: Some("x".into()), ..def("git://h/r.git", None) };
        assert!(matches!(
            request_for(&token, &Firing::Timer { name: "t", occurrence: at }),
            Err(TaskRunError::TokenWithoutHttp(_))
        ));
    }

    #[test]
    fn task_run_followed_branch() {
        assert_eq!(followed_branch(&def("https://h/r.git#dev:x", None), Some("main")), "dev");
        assert_eq!(followed_branch(&def("https://h/r.git", None), Some("main")), "main");
        assert_eq!(followed_branch(&def("https://h/r.git", None), None), "master");
    }
}
