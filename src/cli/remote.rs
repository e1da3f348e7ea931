//! What the commands that talk to `kiln serve` share: connecting with the user's settings,
//! classifying a SOURCE argument, packing and uploading a local context, and queueing a run
//! then following it to its verdict the way `az acr build` / `az acr run` do (§6.1).

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Once;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_api::status::RunStatus;
use kiln_api::{MAX_JSON_BYTES, Run, RunRequest, Source};
use kiln_plan::remote::{self, DetectError, Remote};
use kiln_task::diagnostic::Diagnostics;

use super::task_file::{print_diagnostics, summary};
use crate::client::{
    CONNECT_TIMEOUT, Client, ClientConfig, ClientError, Connection, Settings, config_path,
};
use crate::pack::{self, human_size};
use kiln_api::run_log;
use kiln_api::uploads;

/// `--no-logs` / `--no-wait`, as in az.
#[derive(Debug, Clone, Copy, Args)]
pub(super) struct WaitArgs {
    /// Do not show the run's log; still wait for the run and report how it ended.
    #[arg(long)]
    no_logs: bool,
    /// Return as soon as the run is queued.
    #[arg(long)]
    no_wait: bool,
}

/// Where the server is and how it is reached: the options every client command shares.
#[derive(Debug, Clone, Args)]
pub struct ServerOptions {
    /// The kiln server the client commands talk to (else KILN_SERVER, the client
    /// configuration, http://127.0.0.1:8080). `kiln agent run` takes several servers sharing
    /// one database, comma-separated: it moves to the next when one is unreachable.
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,
    /// Trust the server's certificate if this CA (PEM) signed it, instead of the public web's
    /// roots: for a server with a private CA's certificate.
    #[arg(long, global = true, env = "KILN_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Allow plain http:// to a server that is not this machine (the token then crosses the
    /// network in the clear).
    #[arg(long, global = true)]
    insecure: bool,
    /// Seconds opening a connection to the server may take.
    #[arg(long, global = true, env = "KILN_CONNECT_TIMEOUT", value_name = "SECONDS",
          default_value_t = CONNECT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
}

impl ServerOptions {
    /// The servers an agent leases from (`--server`, `KILN_SERVER`, the client configuration:
    /// one URL, or several servers sharing one database, comma-separated) and an async HTTP
    /// client for them: each URL passes [`transport::check_server_url`], the client trusts
    /// `--ca-file` and gives up connecting after `--connect-timeout`.
    pub(super) fn agent_client(&self) -> anyhow::Result<(Vec<String>, reqwest::Client)> {
        let (settings, _) = settings(self)?;
        let servers: Vec<String> =
            settings.server.split(',').map(|url| url.trim().to_string()).collect();
        for url in &servers {
            kiln_server::transport::check_server_url(url, self.insecure)?;
        }
        let client = kiln_server::transport::http_client_builder(self.ca_file.as_deref())?
            .connect_timeout(Duration::from_secs(self.connect_timeout))
            .build()?;
        Ok((servers, client))
    }

    fn connection(&self) -> Connection {
        Connection {
            ca_file: self.ca_file.clone(),
            insecure: self.insecure,
            connect_timeout: Duration::from_secs(self.connect_timeout),
        }
    }
}

/// The user's settings: `--server`, the environment, the client configuration file.
pub(super) fn settings(
    options: &ServerOptions,
) -> Result<(Settings, Option<PathBuf>), ClientError> {
    let path = config_path(|name| std::env::var(name).ok());
    let file = match &path {
        Some(p) => ClientConfig::load(p)?,
        None => ClientConfig::default(),
    };
    let settings =
        Settings::resolve(options.server.as_deref(), |name| std::env::var(name).ok(), &file);
    Ok((settings, path))
}

pub(super) fn connect(options: &ServerOptions) -> Result<Client, ClientError> {
    connect_with(&settings(options)?.0, options)
}

/// A client of `settings` (a token that is not the saved one, as `kiln login` checks).
pub(super) fn connect_with(
    settings: &Settings,
    options: &ServerOptions,
) -> Result<Client, ClientError> {
    Client::new(settings, &options.connection())
}

/// A SOURCE argument (§5.4 "Remote contexts").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SourceArg {
    None,
    Git(String),
    Tarball(String),
    Local(PathBuf),
}

impl SourceArg {
    /// `/dev/null` is no context; URLs are classified by the worker's own rules (the ones the
    /// agent fetches them with): git URLs end in `.git` (optionally `#ref:folder`), or are
    /// `git://`, `file://` or Azure DevOps repositories; another http(s) URL is a tarball;
    /// anything else is a local directory. SSH and OCI sources are refused here, clearly.
    pub(super) fn classify(source: &str) -> Result<SourceArg, DetectError> {
        if source == "/dev/null" {
            return Ok(SourceArg::None);
        }
        Ok(match remote::detect(source)? {
            Some(Remote::Git { .. }) => SourceArg::Git(source.to_string()),
            Some(Remote::Tarball { .. }) => SourceArg::Tarball(source.to_string()),
            None => SourceArg::Local(PathBuf::from(source)),
        })
    }

    pub(super) fn is_remote(&self) -> bool {
        matches!(self, SourceArg::Git(_) | SourceArg::Tarball(_))
    }
}

/// The wire source for a non-local SOURCE.
pub(super) fn remote_source(source: &SourceArg) -> Option<Source> {
    match source {
        SourceArg::None => Some(Source::None),
        SourceArg::Git(url) => Some(Source::Git { url: url.clone() }),
        SourceArg::Tarball(url) => Some(Source::Tarball { url: url.clone() }),
        SourceArg::Local(_) => None,
    }
}

/// The source a packed context will have once uploaded, for measuring a request before.
pub(super) fn upload_placeholder() -> Source {
    Source::Upload { id: "0".repeat(uploads::ID_LEN) }
}

/// Refuses a run request the server would refuse for its size (the 413's own words).
pub(super) fn check_request_size(request: &RunRequest) -> anyhow::Result<()> {
    let size = serde_json::to_vec(request)?.len();
    if size > MAX_JSON_BYTES {
        let error = format!(
            "the request ({}) is larger than the server's limit of {} MiB",
            human_size(size as u64),
            MAX_JSON_BYTES / (1024 * 1024)
        );
        return Err(ClientError::TooLarge { error }.into());
    }
    Ok(())
}

/// A local SOURCE must be a directory: said before anything is packed.
pub(super) fn check_local_context(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("the context {} is not a directory", dir.display());
    }
    Ok(())
}

/// Packs and uploads a local context, telling the user what happens as az does. Returns the
/// source and the Dockerfile's path inside the archive.
pub(super) fn upload_context(
    client: &Client,
    dir: &Path,
    dockerfile: Option<&Path>,
    prefix: &str,
) -> anyhow::Result<(Source, Option<String>)> {
    eprintln!("Packing source code into tar to upload...");
    let packed = pack::pack(dir, dockerfile, prefix)?;
    eprintln!("Uploading archived source code from '{}'...", packed.path().display());
    eprintln!(
        "Sending context ({}) to the kiln server at {}...",
        human_size(packed.size),
        client.server()
    );
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(packed.size), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "Uploading context: {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = client.upload(packed.path(), packed.size, |sent| bar.set_position(sent));
    bar.finish_and_clear();
    let upload = result?;
    Ok((Source::Upload { id: upload.id }, packed.dockerfile))
}

/// Queues `request` and, unless `--no-wait`, follows it to its end. `task_name` names the
/// task file in diagnostics when the server rejects it.
pub(super) fn submit(
    client: &Client,
    request: &RunRequest,
    task_name: &str,
    wait: WaitArgs,
) -> anyhow::Result<ExitCode> {
    queue(client, || client.create_run(request), task_name, wait)
}

/// Queues a run with `create` (a quick run, or a task's manual run) and, unless `--no-wait`,
/// follows it to its end. A task file the server rejects is reported with its diagnostics,
/// named `task_name`, and exit status 2.
pub(super) fn queue(
    client: &Client,
    create: impl FnOnce() -> Result<Run, ClientError>,
    task_name: &str,
    wait: WaitArgs,
) -> anyhow::Result<ExitCode> {
    let run = match create() {
        Ok(run) => run,
        Err(ClientError::InvalidTask { diagnostics, .. }) => {
            return Ok(invalid(task_name, Diagnostics(diagnostics)));
        }
        Err(e) => return Err(e.into()),
    };
    println!("Queued a run with ID: {}", run.run_id);
    if wait.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    follow(client, &run.run_id, !wait.no_logs)
}

/// Reports a task file that does not plan, named `task_name`: a local input error.
pub(super) fn invalid(task_name: &str, diagnostics: Diagnostics) -> ExitCode {
    print_diagnostics(task_name, &diagnostics);
    eprintln!("{task_name}: invalid ({})", summary(&diagnostics));
    ExitCode::from(super::exit::USAGE)
}

/// Shows the log live (when `logs`), waits for the run's end and reports it.
pub(super) fn follow(client: &Client, id: &str, logs: bool) -> anyhow::Result<ExitCode> {
    stop_following_on_interrupt(id);
    let mut stdout = Tail::new(std::io::stdout().lock());
    let mut have = 0;
    if logs {
        have = client.copy_log(id, 0, true, &mut stdout)?;
    }
    let run = client.wait_for_run(id)?;
    // Bytes written after the follow ended (a server that closed the stream early).
    if logs && run.log_length > have {
        client.copy_log(id, have, false, &mut stdout)?;
    }
    stdout.flush().ok();
    let (line, ok) = verdict(&run);
    // A run's stored log ends with this line already; it is printed when the log did not
    // show it (no logs asked for, or a run that ended without an agent: canceled in the queue,
    // or its server died).
    let shown = stdout.last_line().starts_with(&format!("Run ID: {id} "));
    drop(stdout);
    match (ok, shown) {
        (_, true) => {}
        (true, false) => println!("{line}"),
        (false, false) => eprintln!("{line}"),
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The closing line of a followed run, and whether it succeeded.
pub(super) fn verdict(run: &Run) -> (String, bool) {
    let secs = run
        .duration()
        .or_else(|| Some(run.finish_time? - run.create_time))
        .map(|d| d.num_seconds().max(0))
        .unwrap_or(0);
    let line = run_log::outcome_line(
        &run.run_id,
        run.status,
        u64::try_from(secs).unwrap_or(0),
        run.run_error_message.as_deref(),
    );
    (line, run.status == RunStatus::Succeeded)
}

/// A writer that remembers the last complete line written through it.
struct Tail<W> {
    inner: W,
    last: Vec<u8>,
    current: Vec<u8>,
}

/// Longest line [`Tail`] keeps; the outcome line is far shorter.
const TAIL_LINE: usize = 4096;

impl<W: Write> Tail<W> {
    fn new(inner: W) -> Self {
        Self { inner, last: Vec::new(), current: Vec::new() }
    }

    fn last_line(&self) -> String {
        String::from_utf8_lossy(if self.current.is_empty() { &self.last } else { &self.current })
            .into_owned()
    }
}

impl<W: Write> Write for Tail<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                if !self.current.is_empty() {
                    self.last = std::mem::take(&mut self.current);
                }
            } else if self.current.len() < TAIL_LINE {
                self.current.push(b);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Ctrl-C while following stops following, not the run (as with az): say how to pick it up.
fn stop_following_on_interrupt(id: &str) {
    static INSTALLED: Once = Once::new();
    let id = id.to_string();
    INSTALLED.call_once(move || {
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build()
            else {
                return;
            };
            if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
                eprintln!(
                    "\nStopped following run {id}; it keeps running on the server. \
                     Follow it again with `kiln logs {id} --follow`."
                );
                std::process::exit(130);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified_like_az() {
        use SourceArg::*;
        let git = |s: &str| Some(Git(s.to_string()));
        assert_eq!(SourceArg::classify("/dev/null").ok(), Some(None));
        for url in [
            "https://github.com/org/app.git",
            "https://github.com/org/app.git#main:src",
            "https://github.com/org/app.git#refs/pull/1/head",
            "file:///srv/git/app.git",
            "git://example.com/app",
            "https://dev.azure.com/org/proj/_git/app",
            "https://org.visualstudio.com/proj/_git/app#main",
        ] {
            assert_eq!(SourceArg::classify(url).ok(), git(url), "{url}");
        }
        assert_eq!(
            SourceArg::classify("https://example.com/ctx.tar.gz").ok(),
            Some(Tarball("https://example.com/ctx.tar.gz".to_string()))
        );
        assert_eq!(
            SourceArg::classify("http://example.com/app.git.tar.gz").ok(),
            Some(Tarball("http://example.com/app.git.tar.gz".to_string()))
        );
        assert_eq!(SourceArg::classify(".").ok(), Some(Local(PathBuf::from("."))));
        // A local directory named like a repository is still local.
        assert_eq!(SourceArg::classify("app.git").ok(), Some(Local(PathBuf::from("app.git"))));
        assert_eq!(
            SourceArg::classify("git@github.com:org/app.git").ok(),
            Some(Git("git@github.com:org/app.git".to_string()))
        );
        // A malformed SSH remote is said before anything is uploaded.
        let err = SourceArg::classify("git@github.com").unwrap_err();
        assert!(err.to_string().contains("an SSH remote is"), "{err}");
    }

    fn run(status: RunStatus, secs: i64, error: Option<&str>) -> Run {
        let start = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Run {
            run_id: "ka9".into(),
            status,
            run_type: kiln_api::status::RunType::QuickRun,
            trigger: "Manual".into(),
            trigger_detail: Default::default(),
            task: None,
            create_time: start,
            start_time: Some(start),
            finish_time: Some(start + chrono::TimeDelta::seconds(secs)),
            last_updated_time: start,
            platform: kiln_api::Platform::parse("linux/amd64"),
            timeout: 3600,
            output_images: vec![],
            dependencies: None,
            run_error_message: error.map(str::to_string),
            log_length: 0,
            agent_pool_name: None,
            agent_name: None,
            waiting_reason: None,
            request: None,
            rerun_of: None,
            steps: vec![],
        }
    }

    #[test]
    fn verdicts_read_like_az() {
        assert_eq!(
            verdict(&run(RunStatus::Succeeded, 19, None)),
            ("Run ID: ka9 was successful after 19s".to_string(), true)
        );
        assert_eq!(
            verdict(&run(RunStatus::Failed, 9, Some("failed during run, err: exit status 1"))).0,
            "Run ID: ka9 failed after 9s. Error: failed during run, err: exit status 1"
        );
        let mut tail = Tail::new(Vec::new());
        tail.write_all(b"a\nRun ID: ka9 was successful after 1s\n\n").unwrap();
        assert_eq!(tail.last_line(), "Run ID: ka9 was successful after 1s");
        assert_eq!(
            verdict(&run(RunStatus::Canceled, 3, None)).0,
            "Run ID: ka9 was canceled after 3s"
        );
        assert_eq!(
            verdict(&run(RunStatus::Timeout, 300, None)).0,
            "Run ID: ka9 timed out after 300s"
        );
        let (_, ok) = verdict(&run(RunStatus::Error, 1, Some("agent lost")));
        assert!(!ok);
    }
}
