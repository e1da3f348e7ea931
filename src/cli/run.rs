//! `kiln run`: run a task file or a single command once on the server, like `az acr run`
//! (§5.4, §7.2).
//!
//! A task file found on this machine is sent in the request (an encoded task), so the server
//! validates it before queueing and a bad file is reported with line and column at once. Only
//! when the context is a git or tarball URL and the file is not here is its path sent, to be
//! read from the fetched context when the run starts (as ACR's file task run).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use kiln_api::{
    Argument, DockerApiMode, EncodedTaskRequest, FileTaskRequest, Platform, RunRequest, Source,
};
use kiln_task::config::Config;
use kiln_task::values::{SetFlag, SetValue};

use super::remote::{self, ServerOptions, SourceArg, WaitArgs};
use kiln_api::request::{CheckError, check, cmd_request};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task file (default `acb.yaml`); `-` reads it from standard input. For a local
    /// SOURCE it is looked up in SOURCE first, then here.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "cmd")]
    file: Option<String>,
    /// A YAML file of values, read as `{{.Values.name}}`.
    #[arg(long, value_name = "FILE")]
    values: Option<String>,
    /// A value, overriding the values file (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// A secret value: like --set, and masked in the run's log (repeatable).
    #[arg(long = "set-secret", value_name = "NAME=VALUE")]
    set_secret: Vec<String>,
    /// Run one container instead of a task file: "IMAGE ARGS…".
    #[arg(long, value_name = "IMAGE ARGS")]
    cmd: Option<String>,
    /// Limit on the run, in seconds (with --cmd also the step's limit).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The platform to run on, `os/arch[/variant]`.
    #[arg(long, value_name = "PLATFORM", value_parser = Platform::from_flag)]
    platform: Option<Platform>,
    /// The agent pool to run in (default: any agent).
    #[arg(long, value_name = "POOL")]
    agent_pool: Option<String>,
    /// What `cmd` steps get at /var/run/docker.sock: `off`, `scoped` (the run's own Docker
    /// API) or `host` (the engine's own socket; admin token only). Default: the agent's.
    #[arg(long, value_name = "off|scoped|host")]
    docker_api: Option<DockerApiMode>,
    #[command(flatten)]
    wait: WaitArgs,
    /// The context: a local directory, a git URL, a tarball URL, or `/dev/null` for none.
    #[arg(value_name = "SOURCE")]
    source: String,
}

pub fn run(args: RunArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let client = remote::connect(server)?;
    let source_arg = SourceArg::classify(&args.source)?;
    let values = set_values(&args.set, &args.set_secret)?;
    let local_dir = match &source_arg {
        SourceArg::Local(dir) => Some(dir.as_path()),
        _ => None,
    };
    if let Some(dir) = local_dir {
        remote::check_local_context(dir)?;
    }

    // Read local files before packing, so a typo fails before an upload.
    let task = match &args.cmd {
        Some(_) => None,
        None => {
            let file = args.file.clone().unwrap_or_else(|| "acb.yaml".to_string());
            Some(read_task(&file, local_dir, source_arg.is_remote())?)
        }
    };
    let values_content = match &args.values {
        Some(path) => read_local(path, local_dir)?
            .map(|(_, text)| text)
            .map(Ok)
            .or_else(|| {
                (!source_arg.is_remote())
                    .then(|| not_found("values file", path, local_dir))
                    .map(Err)
            })
            .transpose()?,
        None => None,
    };

    // A local context is uploaded once the request has passed the checks made here.
    let source = remote::remote_source(&source_arg).unwrap_or(Source::None);
    let platform = args.platform;
    let (mut request, name) = match (args.cmd, task) {
        (Some(cmd), _) => {
            let mut request = cmd_request(&cmd, args.timeout, source);
            request.values_content = values_content;
            request.values = values;
            request.platform = platform;
            request.agent_pool_name = args.agent_pool.clone();
            request.docker_api = args.docker_api;
            (RunRequest::EncodedTask(request), "--cmd".to_string())
        }
        (None, Some(Task::Local { name, text })) => (
            RunRequest::EncodedTask(EncodedTaskRequest {
                source,
                task: text,
                task_name: name.clone(),
                values_content,
                values,
                platform,
                timeout_secs: args.timeout,
                agent_pool_name: args.agent_pool.clone(),
                docker_api: args.docker_api,
            }),
            name,
        ),
        (None, Some(Task::InContext { path })) => {
            // A values file not found here is read from the context too.
            let values_file = match (&args.values, values_content.is_some()) {
                (Some(path), false) => Some(path.clone()),
                _ => None,
            };
            let mut values = values;
            if let (Some(text), Some(path)) = (&values_content, &args.values) {
                // The request has no room for a local values file's text with a file task:
                // its values travel as --set values instead, which the file's own override.
                values = [flatten_values(text, path)?, values].concat();
            }
            (
                RunRequest::FileTask(FileTaskRequest {
                    source,
                    task_file: path.clone(),
                    values_file,
                    values,
                    platform,
                    timeout_secs: args.timeout,
                    agent_pool_name: args.agent_pool.clone(),
                    docker_api: args.docker_api,
                }),
                path,
            )
        }
        (None, None) => anyhow::bail!("give a task file with -f or a command with --cmd"),
    };
    // The server's own check of a task sent in the request, here, before any upload: a bad
    // file costs no packing. (The server checks again with its registry and aliases.)
    let images = Config::default().image_aliases();
    match check(&request, None, &images) {
        Err(CheckError::Invalid { diagnostics, .. }) if diagnostics.has_errors() => {
            return Ok(remote::invalid(&name, diagnostics));
        }
        Err(CheckError::Request(e)) => return Err(e.into()),
        // Warnings are the server's to report, with the run.
        Ok(()) | Err(CheckError::Invalid { .. }) => {}
    }
    if let SourceArg::Local(dir) = &source_arg {
        // A request the server would refuse for its size is refused before the upload, which
        // would be left unused.
        request.set_source(remote::upload_placeholder());
        remote::check_request_size(&request)?;
        request.set_source(remote::upload_context(&client, dir, None, "run_archive_")?.0);
    }
    remote::submit(&client, &request, &name, args.wait)
}

/// Where the task comes from.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    /// Read here: sent in the request.
    Local { name: String, text: String },
    /// Read by the server from the remote context.
    InContext { path: String },
}

/// `-f FILE`: `-` is stdin; for a local context FILE is looked up in it first (as az resolves
/// it against the uploaded context), then relative to here; for a remote context a FILE not
/// found here is the context's.
fn read_task(file: &str, local_dir: Option<&Path>, remote: bool) -> anyhow::Result<Task> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the task from stdin")?;
        return Ok(Task::Local { name: "<stdin>".to_string(), text });
    }
    match read_local(file, local_dir)? {
        Some((_, text)) => Ok(Task::Local { name: file.to_string(), text }),
        None if remote => Ok(Task::InContext { path: file.to_string() }),
        None => Err(not_found("task file", file, local_dir)),
    }
}

/// `cannot find the task file x (tried ctx/x, x)`: a missing file, with every path looked at.
fn not_found(what: &str, path: &str, local_dir: Option<&Path>) -> anyhow::Error {
    let tried: Vec<String> = candidates(path, local_dir).map(|p| p.display().to_string()).collect();
    anyhow::anyhow!("cannot find the {what} {path} (tried {})", tried.join(", "))
}

/// Where `path` is looked for: in `local_dir` first, then as given.
fn candidates(path: &str, local_dir: Option<&Path>) -> impl Iterator<Item = PathBuf> {
    local_dir.map(|d| d.join(path)).into_iter().chain([PathBuf::from(path)])
}

/// A file's text, looked up in `local_dir` first, then as given; `None` when in neither.
fn read_local(path: &str, local_dir: Option<&Path>) -> anyhow::Result<Option<(PathBuf, String)>> {
    for candidate in candidates(path, local_dir) {
        if candidate.is_file() {
            let text = std::fs::read_to_string(&candidate)
                .with_context(|| format!("cannot read {}", candidate.display()))?;
            return Ok(Some((candidate, text)));
        }
    }
    Ok(None)
}

/// `--set` then `--set-secret`, as `kiln validate` orders them (a later one wins).
pub(super) fn set_values(set: &[String], set_secret: &[String]) -> anyhow::Result<Vec<Argument>> {
    let sets = set
        .iter()
        .map(|a| SetValue::parse(SetFlag::Set, a))
        .chain(set_secret.iter().map(|a| SetValue::parse(SetFlag::SetSecret, a)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sets
        .into_iter()
        .map(|s| Argument { name: s.name, value: Some(s.value), secret: s.secret })
        .collect())
}

/// A local values file's top-level scalars as values, for a file task whose request cannot
/// carry the file's text.
fn flatten_values(text: &str, path: &str) -> anyhow::Result<Vec<Argument>> {
    let parsed: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("values file {path}: {e}"))?;
    let Some(map) = parsed.as_object() else {
        anyhow::bail!("values file {path}: expected a mapping of names to values");
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            serde_json::Value::Bool(_) | serde_json::Value::Number(_) => value.to_string(),
            _ => anyhow::bail!(
                "values file {path}: `{name}` is not a plain value; with a remote context, \
                 put the values file in the context instead"
            ),
        };
        out.push(Argument { name: name.clone(), value: Some(value), secret: false });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_file_is_looked_up_in_a_local_context_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acb.yaml"), "steps: []\n").unwrap();
        assert_eq!(
            read_task("acb.yaml", Some(dir.path()), false).unwrap(),
            Task::Local { name: "acb.yaml".into(), text: "steps: []\n".into() }
        );
        let err = read_task("missing.yaml", Some(dir.path()), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot find the task file missing.yaml (tried {}, missing.yaml)",
                dir.path().join("missing.yaml").display()
            )
        );
    }

    #[test]
    fn a_task_file_missing_here_is_read_from_a_remote_context() {
        assert_eq!(
            read_task("ci/acb.yaml", None, true).unwrap(),
            Task::InContext { path: "ci/acb.yaml".into() }
        );
    }

    #[test]
    fn sets_keep_their_secret_flag() {
        let values = set_values(&["a=1".into(), "b=x=y".into()], &["pw=s3".into()]).unwrap();
        let names: Vec<_> =
            values.iter().map(|a| (a.name.as_str(), a.value.as_deref(), a.secret)).collect();
        assert_eq!(
            names,
            [("a", Some("1"), false), ("b", Some("x=y"), false), ("pw", Some("s3"), true)]
        );
        assert!(set_values(&["novalue".into()], &[]).is_err());
    }

    #[test]
    fn local_values_flatten_for_a_file_task() {
        let values = flatten_values("tag: v1\nreplicas: 3\n", "values.yaml").unwrap();
        let pairs: Vec<_> =
            values.iter().map(|a| (a.name.as_str(), a.value.as_deref().unwrap_or(""))).collect();
        assert_eq!(pairs, [("replicas", "3"), ("tag", "v1")]);
        assert!(flatten_values("a:\n  b: 1\n", "v.yaml").is_err());
    }
}
