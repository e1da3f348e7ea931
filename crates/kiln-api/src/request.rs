//! From a run request to the task file the pipeline plans (reference §5.4): the server checks
//! an encoded task with it when the request arrives, and the agent plans the run with it when a
//! worker takes the run. One function for both, so what was accepted is what runs.
//!
//! * A Docker build becomes ACR's quick-build task: step `build` (timeout 28800 s), and when it
//!   pushes, step `push` (timeout 3600 s, `when: [build]`).
//! * `--cmd "image args"` becomes ACR's one-step template with the command as a value.
//! * A file task reads its task and values files from the fetched context.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::{Argument, DockerBuildRequest, EncodedTaskRequest, RunRequest, Source};
use chrono::Utc;
use kiln_task::diagnostic::Diagnostics;
use kiln_task::plan::{Planned, plan_file};
use kiln_task::render::{RunVars, TemplateData};
use kiln_task::run_id::RunId;
use kiln_task::task::load::LoadOptions;
use kiln_task::values::{SetValue, Values, ValuesError, merge_values};

/// Build step timeout of a quick build (§6.6).
pub const QUICK_BUILD_STEP_TIMEOUT: u64 = 28_800;
/// Push step timeout of a quick build (§6.6).
pub const QUICK_PUSH_STEP_TIMEOUT: u64 = 3_600;
/// How long `alias.src` URLs may take.
const ALIAS_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request cannot become a task.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot read {what} `{path}` in the context: {source}")]
    ReadFile { what: &'static str, path: String, source: std::io::Error },
    #[error("{what} `{path}` is not a relative path inside the context")]
    OutsideContext { what: &'static str, path: String },
    #[error("a file task needs a context: `{path}` is read from it")]
    NoContext { path: String },
    #[error(transparent)]
    Values(#[from] ValuesError),
    #[error(
        "image `{image}` names no registry and the server has no default registry \
         (start it with --registry HOST[:PORT], or write the registry into the tag)"
    )]
    NoRegistry { image: String },
    #[error("value `{name}` has no value")]
    MissingValue { name: String },
}

/// A task file and what it renders with, ready for [`TaskInput::plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInput {
    /// The file's name in messages.
    pub name: String,
    pub text: String,
    pub values: Values,
    /// Values logs must never show.
    pub masked: Vec<String>,
}

impl TaskInput {
    /// Loads, validates and plans the task for one run.
    pub fn plan(
        &self,
        run: RunVars,
        images: &BTreeMap<String, String>,
        base_dir: &Path,
    ) -> Result<Planned, Diagnostics> {
        let data = TemplateData { run, values: self.values.clone(), secrets: BTreeMap::new() };
        let opts =
            LoadOptions { data: &data, images, base_dir, alias_fetch_timeout: ALIAS_FETCH_TIMEOUT };
        plan_file(&self.text, &opts, self.masked.clone(), false)
    }
}

/// The task `request` runs. `context` is the fetched context directory (needed by file
/// tasks); `default_registry` is prepended to build tags that name none.
pub fn task_input(
    request: &RunRequest,
    context: Option<&Path>,
    default_registry: Option<&str>,
) -> Result<TaskInput, RequestError> {
    match request {
        RunRequest::DockerBuild(build) => quick_build(build, default_registry),
        RunRequest::EncodedTask(task) => {
            let file = match &task.values_content {
                Some(text) => Values::from_yaml(text, "values")?,
                None => Values::default(),
            };
            with_values(task.task_name.clone(), task.task.clone(), file, &task.values)
        }
        RunRequest::FileTask(task) => {
            let Some(dir) = context else {
                return Err(RequestError::NoContext { path: task.task_file.clone() });
            };
            let text = read_in_context(dir, "task file", &task.task_file)?;
            let file = match &task.values_file {
                Some(path) => Values::from_yaml(&read_in_context(dir, "values file", path)?, path)?,
                None => Values::default(),
            };
            with_values(task.task_file.clone(), text, file, &task.values)
        }
    }
}

/// Why [`check`] refused a request.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The task does not load or plan: `diagnostics` say where (sorted).
    #[error("{name} is invalid")]
    Invalid { name: String, diagnostics: Diagnostics },
}

/// Loads and plans the task `request` carries (a Docker build or a task file sent in the
/// request; a file task's file is in its context, checked when the run starts) as a run would,
/// with `registry` as the default registry: the server's check before queueing, and the CLI's
/// before it uploads anything.
pub fn check(
    request: &RunRequest,
    registry: Option<&str>,
    images: &BTreeMap<String, String>,
) -> Result<(), CheckError> {
    if matches!(request, RunRequest::FileTask(_)) {
        return Ok(());
    }
    let input = task_input(request, None, registry)?;
    let mut vars = RunVars::new(RunId::new("validation"), Utc::now());
    if let Some(r) = registry {
        vars.registry = r.to_string();
    }
    match input.plan(vars, images, Path::new(".")) {
        Ok(_) => Ok(()),
        Err(diagnostics) => {
            Err(CheckError::Invalid { name: input.name, diagnostics: diagnostics.sorted() })
        }
    }
}

/// `az acr run --cmd "IMAGE ARGS" /dev/null`: ACR's template with the command as a value.
/// With a timeout it bounds the step as well as the run, as in ACR (§6.6).
pub fn cmd_request(command: &str, timeout_secs: Option<u64>, source: Source) -> EncodedTaskRequest {
    let mut task =
        format!("version: v1.1.0\nsteps:\n  - cmd: {}\n", yaml_string(&escape_template(command)));
    if let Some(t) = timeout_secs {
        task.push_str(&format!("    timeout: {t}\n"));
    }
    EncodedTaskRequest {
        source,
        task,
        task_name: "--cmd".to_string(),
        values_content: None,
        values: Vec::new(),
        platform: None,
        timeout_secs,
        agent_pool_name: None,
        docker_api: None,
    }
}

/// Whether `image`'s first path component is a registry host (has a `.` or `:`, or is
/// `localhost`), as Docker decides it.
pub fn has_registry(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

/// ACR's quick-build task for `build`. Every user string enters the text through
/// [`yaml_string`], so a tag or a build arg cannot inject YAML or split into two arguments;
/// tags alone keep their templates (`app:{{.Run.ID}}`), the rest is literal.
fn quick_build(
    build: &DockerBuildRequest,
    default_registry: Option<&str>,
) -> Result<TaskInput, RequestError> {
    let mut images = Vec::with_capacity(build.images.len());
    for image in &build.images {
        images.push(match default_registry {
            _ if has_registry(image) => image.clone(),
            Some(registry) => format!("{}/{image}", registry.trim_end_matches('/')),
            None if !build.is_push_enabled => image.clone(),
            None => return Err(RequestError::NoRegistry { image: image.clone() }),
        });
    }
    let mut masked = Vec::new();
    let mut args: Vec<String> = Vec::new();
    for image in &images {
        args.extend(["-t".to_string(), shell_words::quote(image).into_owned()]);
    }
    let mut literal = |flag: &str, value: &str| {
        args.push(flag.to_string());
        args.push(escape_template(&shell_words::quote(value)));
    };
    literal("-f", &build.dockerfile);
    for arg in &build.build_args {
        match &arg.value {
            Some(value) => {
                if arg.secret && !value.is_empty() {
                    masked.push(value.clone());
                }
                literal("--build-arg", &format!("{}={value}", arg.name));
            }
            None => literal("--build-arg", &arg.name),
        }
    }
    if let Some(target) = &build.target {
        literal("--target", target);
    }
    // Several platforms go to the build as buildx writes them, `--platform a,b`.
    let platforms: Vec<String> = match (&build.platform, build.platforms.as_slice()) {
        (_, []) => build.platform.iter().map(ToString::to_string).collect(),
        (_, all) => all.iter().map(ToString::to_string).collect(),
    };
    if !platforms.is_empty() {
        literal("--platform", &platforms.join(","));
    }
    args.push(".".to_string());

    let mut text = format!(
        "version: v1.1.0\nsteps:\n  - id: build\n    build: {}\n    timeout: {QUICK_BUILD_STEP_TIMEOUT}\n",
        yaml_string(&args.join(" "))
    );
    if build.is_push_enabled && !images.is_empty() {
        text.push_str("  - id: push\n    push:\n");
        for image in &images {
            text.push_str(&format!("      - {}\n", yaml_string(image)));
        }
        text.push_str(&format!("    timeout: {QUICK_PUSH_STEP_TIMEOUT}\n    when: [build]\n"));
    }
    Ok(TaskInput { name: "quick build".to_string(), text, values: Values::default(), masked })
}

/// `text` as a YAML double-quoted scalar (a JSON string is one), on one line.
fn yaml_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// `text` with every `{{` written as a template that prints `{{`, so rendering leaves it as
/// it was. A Go raw string (backticks) needs no quotes, which [`yaml_string`] would escape.
fn escape_template(text: &str) -> String {
    text.replace("{{", "{{`{{`}}")
}

fn with_values(
    name: String,
    text: String,
    file: Values,
    args: &[Argument],
) -> Result<TaskInput, RequestError> {
    let sets = args
        .iter()
        .map(|a| match &a.value {
            Some(value) => {
                Ok(SetValue { name: a.name.clone(), value: value.clone(), secret: a.secret })
            }
            None => Err(RequestError::MissingValue { name: a.name.clone() }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge_values(file, &sets);
    Ok(TaskInput { name, text, values: merged.values, masked: merged.secrets })
}

/// Reads `path` inside `dir`, refusing absolute paths and `..` (a request must not read the
/// server's files).
fn read_in_context(dir: &Path, what: &'static str, path: &str) -> Result<String, RequestError> {
    let relative = PathBuf::from(path);
    if relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(RequestError::OutsideContext { what, path: path.to_string() });
    }
    std::fs::read_to_string(dir.join(&relative)).map_err(|source| RequestError::ReadFile {
        what,
        path: path.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use kiln_plan::plan::Action;
    use kiln_task::run_id::RunId;

    fn plan(input: &TaskInput) -> kiln_plan::plan::Plan {
        let run = RunVars::new(RunId::new("ka1"), Utc::now());
        match input.plan(run, &BTreeMap::new(), Path::new(".")) {
            Ok(planned) => planned.plan,
            Err(d) => panic!("{input:?}: {d:?}"),
        }
    }

    fn build(images: &[&str]) -> DockerBuildRequest {
        DockerBuildRequest {
            source: Source::None,
            images: images.iter().map(|s| s.to_string()).collect(),
            dockerfile: "Dockerfile".into(),
            build_args: vec![],
            target: None,
            platform: None,
            platforms: Vec::new(),
            is_push_enabled: true,
            timeout_secs: None,
            agent_pool_name: None,
        }
    }

    #[test]
    fn quick_build_is_build_then_push_with_the_default_registry() {
        let request = RunRequest::DockerBuild(build(&["app:{{.Run.ID}}", "127.0.0.1:5000/x:1"]));
        let input = task_input(&request, None, Some("127.0.0.1:5001")).expect("input");
        let plan = plan(&input);
        assert_eq!(plan.steps.len(), 2);
        let Action::Build { args } = &plan.steps[0].action else { panic!("{plan:?}") };
        assert_eq!(
            args,
            &["-t", "127.0.0.1:5001/app:ka1", "-t", "127.0.0.1:5000/x:1", "-f", "Dockerfile", "."]
        );
        assert_eq!(plan.steps[0].timeout_secs, QUICK_BUILD_STEP_TIMEOUT);
        let Action::Push { images } = &plan.steps[1].action else { panic!("{plan:?}") };
        assert_eq!(images, &["127.0.0.1:5001/app:ka1", "127.0.0.1:5000/x:1"]);
        assert_eq!(plan.steps[1].timeout_secs, QUICK_PUSH_STEP_TIMEOUT);
    }

    #[test]
    fn quick_build_args_cannot_inject_yaml_or_split() {
        let mut b = build(&[]);
        b.is_push_enabled = false;
        b.build_args = vec![
            Argument { name: "A".into(), value: Some("x y: 'z'\n- q".into()), secret: false },
            Argument { name: "TOKEN".into(), value: Some("s3cret".into()), secret: true },
            Argument { name: "FROM_ENV".into(), value: None, secret: false },
        ];
        b.target = Some("final".into());
        let input = task_input(&RunRequest::DockerBuild(b), None, None).expect("input");
        assert_eq!(input.masked, vec!["s3cret".to_string()]);
        let plan = plan(&input);
        assert_eq!(plan.steps.len(), 1, "no push step");
        let Action::Build { args } = &plan.steps[0].action else { panic!("{plan:?}") };
        assert_eq!(
            args,
            &[
                "-f",
                "Dockerfile",
                "--build-arg",
                "A=x y: 'z'\n- q",
                "--build-arg",
                "TOKEN=s3cret",
                "--build-arg",
                "FROM_ENV",
                "--target",
                "final",
                "."
            ]
        );
    }

    #[test]
    fn a_push_without_any_registry_is_refused() {
        let err = task_input(&RunRequest::DockerBuild(build(&["app:1"])), None, None)
            .expect_err("no registry");
        assert!(matches!(err, RequestError::NoRegistry { .. }), "{err}");
    }

    #[test]
    fn cmd_request_is_one_step_with_the_command() {
        let request = RunRequest::EncodedTask(cmd_request(
            "busybox echo \"a: b\" 'c'",
            Some(400),
            Source::None,
        ));
        let plan = plan(&task_input(&request, None, None).expect("input"));
        let Action::Cmd { image, args, .. } = &plan.steps[0].action else { panic!("{plan:?}") };
        assert_eq!(image, "busybox");
        assert_eq!(args, &["echo", "a: b", "c"]);
        assert_eq!(plan.steps[0].timeout_secs, 400);
    }

    #[test]
    fn file_tasks_read_inside_the_context_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("acb.yaml"),
            "steps:\n  - cmd: busybox echo {{.Values.x}}\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("v.yaml"), "x: from-file\n").expect("write");
        let mut task = crate::FileTaskRequest {
            source: Source::None,
            task_file: "acb.yaml".into(),
            values_file: Some("v.yaml".into()),
            values: vec![],
            platform: None,
            timeout_secs: None,
            agent_pool_name: None,
            docker_api: None,
        };
        let input =
            task_input(&RunRequest::FileTask(task.clone()), Some(dir.path()), None).expect("input");
        let Action::Cmd { args, .. } = &plan(&input).steps[0].action else { panic!() };
        assert_eq!(args, &["echo", "from-file"]);
        task.task_file = "../etc/passwd".into();
        let err = task_input(&RunRequest::FileTask(task), Some(dir.path()), None).expect_err("..");
        assert!(matches!(err, RequestError::OutsideContext { .. }), "{err}");
    }

    #[test]
    fn registry_detection_follows_docker() {
        assert!(has_registry("127.0.0.1:5000/app"));
        assert!(has_registry("localhost/app"));
        assert!(has_registry("myreg.azurecr.io/team/app:1"));
        assert!(!has_registry("team/app:1"));
        assert!(!has_registry("app:1"));
    }
}
