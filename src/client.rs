//! The HTTP client of `kiln serve`, used by `kiln build`, `run`, `logs`, `show-run`,
//! `list-runs`, `cancel-run`, `login`, `whoami`, `task …`, `agent …` and `agent-pool …`.
//!
//! It owns three things the commands share: where the server is and which token to send
//! ([`ClientConfig`], [`Settings`]), the calls themselves ([`Client`], one method per route of
//! [`kiln_api::paths`], speaking only [`kiln_api`]'s wire types), and the typed failures a
//! user can act on ([`ClientError`]) — the CLI turns each into one line, never an HTTP dump.
//!
//! [`Connection`] says how the server is reached beyond its URL: the CA to trust for `https://`
//! and whether plain `http://` may go to another machine ([`kiln_server::transport`]'s rule).
//!
//! The client is blocking (`ureq`): a CLI does one thing at a time, and a blocking reader is the
//! simplest way to copy a streamed log to stdout. Following a log survives dropped connections:
//! [`follow_log`] reconnects with `offset=` the bytes already written, so nothing is printed
//! twice; it is written over an opener and a byte sink so the logic is tested without a server.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_api::agents::{Agent, AgentPool, CreateAgent, CreatedAgent, UpdateAgent};
use kiln_api::task::{CreateTask, Task, TaskRunRequest, Timer, TimerSpec, UpdateTask, UpdateTimer};
use kiln_api::{self as api, ErrorBody, LOG_OFFSET_HEADER, List, Run, RunQuery, RunRequest, paths};
use kiln_task::diagnostic::Diagnostic;
use serde::{Deserialize, Serialize};
use ureq::http::Response;
use ureq::{Body, SendBody};

use kiln_server::transport::{self, TransportError};

/// Sent with bodies the server may refuse for their size: it answers 413 before the body is
/// sent, so the answer is read instead of the connection breaking under the upload.
const EXPECT_CONTINUE: &str = "100-continue";

/// The server when nothing names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// How long one `GET /runs/{id}?wait=` long-poll may hold (the server answers earlier when the
/// run ends).
pub const WAIT_SECS: u64 = 60;

/// Everything that can go wrong talking to the server, as the user should read it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the kiln server at {server}: {reason} \
         (is `kiln serve` running? set --server or KILN_SERVER)"
    )]
    Unreachable { server: String, reason: String },
    #[error("the server rejected the API token: set KILN_TOKEN or run `kiln login`")]
    Unauthorized,
    /// A valid token that may not do this (a user token where an admin's is needed).
    #[error("{error}")]
    Forbidden { error: String },
    /// The server wants a token and this client has none.
    #[error("not logged in to {server}: run `kiln login` (or set KILN_TOKEN)")]
    NotLoggedIn { server: String },
    #[error("run {id} not found")]
    RunNotFound { id: String },
    /// A task, a timer or another named thing the server does not have.
    #[error("{error}")]
    NotFound { error: String },
    #[error("{error}")]
    InvalidTask { error: String, diagnostics: Vec<Diagnostic> },
    #[error("the server refused the request: {error}")]
    BadRequest { error: String },
    /// A body over one of the server's limits; the server's message names the limit.
    #[error("{error}")]
    TooLarge { error: String },
    #[error("{error}")]
    Conflict { error: String },
    #[error("the server answered {status}: {error}")]
    Server { status: u16, error: String },
    /// The TLS handshake failed: most often a certificate this client does not trust.
    #[error("no trusted TLS connection to the kiln server at {server}: {reason}")]
    Tls { server: String, reason: String },
    /// This client's TLS settings (an unreadable CA file) or a URL the transport rule refuses.
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the connection to the kiln server at {server} dropped: {reason}")]
    Dropped { server: String, reason: String },
    #[error("the server's answer to {what} is not what kiln expects: {reason}")]
    Decode { what: String, reason: String },
    #[error("cannot read the client configuration {path}: {reason}")]
    ConfigRead { path: PathBuf, reason: String },
    #[error("cannot write the client configuration {path}: {source}")]
    ConfigWrite { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("cannot write the log: {0}")]
    Output(#[source] io::Error),
}

impl ClientError {
    /// Failures a retry may cure: the server restarted or the network hiccuped.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. } | ClientError::Dropped { .. })
    }

    /// Failures of this machine's own files (the client configuration, a file to send or the
    /// output), not of the server.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ClientError::ConfigRead { .. }
                | ClientError::ConfigWrite { .. }
                | ClientError::Transport(_)
                | ClientError::ReadFile { .. }
                | ClientError::Output(_)
        )
    }
}

/// The client configuration file: `server = "..."`, `token = "..."`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where the client configuration lives: `$KILN_CLIENT_CONFIG`, else
/// `$XDG_CONFIG_HOME/kiln/client.toml`, else `~/.config/kiln/client.toml`. `env` reads a
/// variable (the process environment outside tests); empty values count as unset.
pub fn config_path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(path) = var("KILN_CLIENT_CONFIG") {
        return Some(PathBuf::from(path));
    }
    if let Some(dir) = var("XDG_CONFIG_HOME") {
        return Some(Path::new(&dir).join("kiln/client.toml"));
    }
    var("HOME").map(|home| Path::new(&home).join(".config/kiln/client.toml"))
}

impl ClientConfig {
    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<ClientConfig, ClientError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ClientConfig::default()),
            Err(e) => {
                return Err(ClientError::ConfigRead {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        toml::from_str(&text).map_err(|e| ClientError::ConfigRead {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })
    }

    /// Writes the file readable by its owner only: it holds an API token.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let err = |source| ClientError::ConfigWrite { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let text = toml::to_string(self)
            .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        // `mode` only applies to a new file: an existing one may have been readable by others.
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        Ok(())
    }
}

/// The server and token one command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub server: String,
    pub token: Option<String>,
}

impl Settings {
    /// Server: `--server`, else `KILN_SERVER`, else the file, else [`DEFAULT_SERVER`].
    /// Token: `KILN_TOKEN`, else the file.
    pub fn resolve(
        flag_server: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        file: &ClientConfig,
    ) -> Settings {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let server = flag_server
            .map(str::to_string)
            .or_else(|| var("KILN_SERVER"))
            .or_else(|| file.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let token = var("KILN_TOKEN").or_else(|| file.token.clone().filter(|t| !t.is_empty()));
        Settings { server: normalize_server(&server), token }
    }
}

/// `host:8080/` → `http://host:8080`: routes are appended to it.
pub fn normalize_server(server: &str) -> String {
    let server = server.trim().trim_end_matches('/');
    if server.contains("://") { server.to_string() } else { format!("http://{server}") }
}

/// How a client reaches its server beyond the URL (`--ca-file`, `--insecure`,
/// `--connect-timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The PEM CA certificates to trust for `https://`, instead of the public web's roots.
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to a server that is not this machine.
    pub insecure: bool,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

/// The connect timeout when none is given.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Connection {
    fn default() -> Self {
        Connection { ca_file: None, insecure: false, connect_timeout: CONNECT_TIMEOUT }
    }
}

/// A connection to one server.
pub struct Client {
    agent: ureq::Agent,
    server: String,
    token: Option<String>,
}

impl Client {
    /// A client of `settings.server`; refused before anything is sent when the URL breaks the
    /// transport rule or the CA file cannot be read.
    pub fn new(settings: &Settings, connection: &Connection) -> Result<Client, ClientError> {
        transport::check_server_url(&settings.server, connection.insecure)?;
        let mut tls = ureq::tls::TlsConfig::builder()
            .unversioned_rustls_crypto_provider(transport::crypto_provider());
        if let Some(path) = &connection.ca_file {
            let certs = transport::load_certificates("the CA file", path)?;
            let certs: Vec<_> =
                certs.iter().map(|c| ureq::tls::Certificate::from_der(c).to_owned()).collect();
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            // Error statuses carry an `ErrorBody` the user must see.
            .http_status_as_error(false)
            .timeout_connect(Some(connection.connect_timeout))
            .tls_config(tls.build())
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.new_agent(),
            server: settings.server.clone(),
            token: settings.token.clone(),
        })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    /// `POST /uploads`: the packed context. `progress` is told how many bytes were sent so far.
    pub fn upload(
        &self,
        path: &Path,
        size: u64,
        progress: impl FnMut(u64),
    ) -> Result<api::Upload, ClientError> {
        let file = fs::File::open(path)
            .map_err(|source| ClientError::ReadFile { path: path.to_path_buf(), source })?;
        let mut reader = Progress { inner: file, sent: 0, report: progress };
        let request = self
            .authorize(self.agent.post(self.url(paths::UPLOADS)))
            .header("Content-Type", "application/gzip")
            .header("Content-Length", size.to_string())
            .header("Expect", EXPECT_CONTINUE);
        let response = request.send(SendBody::from_reader(&mut reader));
        self.json(self.check(response, None)?, "the upload")
    }

    /// `POST /runs`.
    pub fn create_run(&self, request: &RunRequest) -> Result<Run, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode {
            what: "the run request".to_string(),
            reason: e.to_string(),
        })?;
        let response = self
            .authorize(self.agent.post(self.url(paths::RUNS)))
            .header("Content-Type", "application/json")
            .header("Expect", EXPECT_CONTINUE)
            .send(body);
        self.json(self.check(response, None)?, "the run request")
    }

    /// `GET /runs?…`: the first page, at most `top` runs (the server's 15 by default).
    pub fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>, ClientError> {
        let mut request = self.authorize(self.agent.get(self.url(paths::RUNS)));
        // Every filter that is set, by its wire name: the query's own serialisation.
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(query) {
            for (name, value) in fields {
                request = match value {
                    serde_json::Value::String(text) => request.query(name, text),
                    other => request.query(name, other.to_string()),
                };
            }
        }
        let page: List<Run> = self.json(self.check(request.call(), None)?, "the run list")?;
        Ok(page.value)
    }

    /// `GET /runs/{id}`, long-polling up to `wait` seconds for the run to end.
    pub fn get_run(&self, id: &str, wait: Option<u64>) -> Result<Run, ClientError> {
        let mut request = self.authorize(self.agent.get(self.url(&paths::run(id))));
        if let Some(wait) = wait {
            request = request.query("wait", wait.to_string());
        }
        self.json(self.check(request.call(), Some(id))?, "the run")
    }

    /// The run once it is terminal: long-polls, riding out a few dropped connections.
    pub fn wait_for_run(&self, id: &str) -> Result<Run, ClientError> {
        let mut failures = 0;
        loop {
            match self.get_run(id, Some(WAIT_SECS)) {
                Ok(run) if run.status.is_terminal() => return Ok(run),
                Ok(_) => failures = 0,
                Err(e) if e.is_transient() && failures < RECONNECTS => {
                    std::thread::sleep(backoff(failures));
                    failures += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `POST /runs/{id}/cancel`.
    pub fn cancel_run(&self, id: &str) -> Result<Run, ClientError> {
        let response = self.authorize(self.agent.post(self.url(&paths::cancel(id)))).send_empty();
        self.json(self.check(response, Some(id))?, "the cancel request")
    }

    /// `POST /runs/{id}/rerun`: the new run.
    pub fn rerun(&self, id: &str) -> Result<Run, ClientError> {
        let response = self.authorize(self.agent.post(self.url(&paths::rerun(id)))).send_empty();
        self.json(self.check(response, Some(id))?, "the re-run")
    }

    /// `POST /tasks`.
    pub fn create_task(&self, task: &CreateTask) -> Result<Task, ClientError> {
        self.send(self.agent.post(self.url(paths::TASKS)), task, "the task")
    }

    /// `GET /tasks`.
    pub fn list_tasks(&self) -> Result<Vec<Task>, ClientError> {
        let response = self.authorize(self.agent.get(self.url(paths::TASKS))).call();
        self.every_page(response, "the task list")
    }

    /// `GET /tasks/{name}`: the task with its webhook's URL and secret.
    pub fn get_task(&self, name: &str) -> Result<Task, ClientError> {
        let response =
            self.authorize(self.agent.get(self.url(&paths::task(&segment(name))))).call();
        self.json(self.check(response, None)?, "the task")
    }

    /// `PATCH /tasks/{name}`: only the fields `update` holds change.
    pub fn update_task(&self, name: &str, update: &UpdateTask) -> Result<Task, ClientError> {
        self.send(self.agent.patch(self.url(&paths::task(&segment(name)))), update, "the task")
    }

    /// `DELETE /tasks/{name}`.
    pub fn delete_task(&self, name: &str) -> Result<(), ClientError> {
        let response =
            self.authorize(self.agent.delete(self.url(&paths::task(&segment(name))))).call();
        self.check(response, None).map(drop)
    }

    /// `POST /tasks/{name}/runs`: a manual run with `overrides`.
    pub fn run_task(&self, name: &str, overrides: &TaskRunRequest) -> Result<Run, ClientError> {
        let url = self.url(&paths::task_runs(&segment(name)));
        self.send(self.agent.post(url), overrides, "the task run request")
    }

    /// `POST /tasks/{task}/timers`: the task's timers after the addition.
    pub fn add_timer(&self, task: &str, timer: &TimerSpec) -> Result<Vec<Timer>, ClientError> {
        let body = self.body(timer, "the timer")?;
        let response = self
            .authorize(self.agent.post(self.url(&paths::timers(&segment(task)))))
            .header("Content-Type", "application/json")
            .send(body);
        self.every_page(response, "the timers")
    }

    /// `GET /tasks/{task}/timers`.
    pub fn list_timers(&self, task: &str) -> Result<Vec<Timer>, ClientError> {
        let response =
            self.authorize(self.agent.get(self.url(&paths::timers(&segment(task))))).call();
        self.every_page(response, "the timers")
    }

    /// `PATCH /tasks/{task}/timers/{timer}`: the task's timers after the change.
    pub fn update_timer(
        &self,
        task: &str,
        timer: &str,
        update: &UpdateTimer,
    ) -> Result<Vec<Timer>, ClientError> {
        let body = self.body(update, "the timer update")?;
        let url = self.url(&paths::timer(&segment(task), &segment(timer)));
        let response = self
            .authorize(self.agent.patch(url))
            .header("Content-Type", "application/json")
            .send(body);
        self.every_page(response, "the timers")
    }

    /// `DELETE /tasks/{task}/timers/{timer}`: the task's timers after the removal.
    pub fn remove_timer(&self, task: &str, timer: &str) -> Result<Vec<Timer>, ClientError> {
        let url = self.url(&paths::timer(&segment(task), &segment(timer)));
        let response = self.authorize(self.agent.delete(url)).call();
        self.every_page(response, "the timers")
    }

    /// `POST /agents` (admin): the agent and its token, shown this once.
    pub fn create_agent(&self, agent: &CreateAgent) -> Result<CreatedAgent, ClientError> {
        self.send(self.agent.post(self.url(paths::AGENTS)), agent, "the agent")
    }

    /// `GET /agents` (admin).
    pub fn list_agents(&self) -> Result<Vec<Agent>, ClientError> {
        let response = self.authorize(self.agent.get(self.url(paths::AGENTS))).call();
        self.every_page(response, "the agent list")
    }

    /// `GET /agents/{name}` (admin).
    pub fn get_agent(&self, name: &str) -> Result<Agent, ClientError> {
        let response =
            self.authorize(self.agent.get(self.url(&paths::agent(&segment(name))))).call();
        self.json(self.check(response, None)?, "the agent")
    }

    /// `PATCH /agents/{name}` (admin): only the fields `update` holds change.
    pub fn update_agent(&self, name: &str, update: &UpdateAgent) -> Result<Agent, ClientError> {
        self.send(self.agent.patch(self.url(&paths::agent(&segment(name)))), update, "the agent")
    }

    /// `DELETE /agents/{name}` (admin): the runs it holds end as Error.
    pub fn delete_agent(&self, name: &str) -> Result<(), ClientError> {
        let response =
            self.authorize(self.agent.delete(self.url(&paths::agent(&segment(name))))).call();
        self.check(response, None).map(drop)
    }

    /// `GET /agentPools` (admin).
    pub fn list_agent_pools(&self) -> Result<Vec<AgentPool>, ClientError> {
        let response = self.authorize(self.agent.get(self.url(paths::AGENT_POOLS))).call();
        self.every_page(response, "the agent pool list")
    }

    /// `GET /runs/{id}/log?offset=&follow=`: the offset the body starts at and the body.
    pub fn open_log(
        &self,
        id: &str,
        offset: u64,
        follow: bool,
    ) -> Result<(u64, impl Read + use<>), ClientError> {
        let request = self
            .authorize(self.agent.get(self.url(&paths::log(id))))
            .query("offset", offset.to_string())
            .query("follow", follow.to_string());
        let response = self.check(request.call(), Some(id))?;
        let start = response
            .headers()
            .get(LOG_OFFSET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(offset);
        Ok((start, response.into_body().into_reader()))
    }

    /// `GET /runs/{id}/log?timestamps=true`: the log so far, each line after its arrival time.
    pub fn timed_log(&self, id: &str) -> Result<Vec<u8>, ClientError> {
        let request =
            self.authorize(self.agent.get(self.url(&paths::log(id)))).query("timestamps", "true");
        let mut response = self.check(request.call(), Some(id))?;
        response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| transport_error(&self.server, e))
    }

    /// Copies the run's log from byte `have` into `sink`; with `follow`, until the run ends,
    /// reconnecting when the connection drops. Returns the bytes of log written in total.
    pub fn copy_log(
        &self,
        id: &str,
        have: u64,
        follow: bool,
        sink: &mut dyn Write,
    ) -> Result<u64, ClientError> {
        let server = self.server.clone();
        let mut sleep = std::thread::sleep;
        follow_log(|offset| self.open_log(id, offset, follow), have, sink, &mut sleep, &server)
    }

    /// `GET /whoami`: the name and role of the token this client sends.
    pub fn whoami(&self) -> Result<api::WhoAmI, ClientError> {
        let response = self.authorize(self.agent.get(self.url(paths::WHOAMI))).call();
        self.json(self.check(response, None)?, "the token check")
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Result<(), ClientError> {
        self.check(self.agent.get(self.url(paths::HEALTH)).call(), None).map(|_| ())
    }

    /// A request body as JSON.
    fn body<T: Serialize>(&self, value: &T, what: &str) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(value)
            .map_err(|e| ClientError::Decode { what: what.to_string(), reason: e.to_string() })
    }

    /// `request` with `body` as JSON; the answer read as `T`.
    fn send<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
        body: &B,
        what: &str,
    ) -> Result<T, ClientError> {
        let body = self.body(body, what)?;
        let response =
            self.authorize(request).header("Content-Type", "application/json").send(body);
        self.json(self.check(response, None)?, what)
    }

    /// Turns transport failures and error statuses into [`ClientError`]s.
    fn check(
        &self,
        response: Result<Response<Body>, ureq::Error>,
        run_id: Option<&str>,
    ) -> Result<Response<Body>, ClientError> {
        let mut response = response.map_err(|e| transport_error(&self.server, e))?;
        let status = response.status().as_u16();
        if status < 400 {
            return Ok(response);
        }
        if status == 401 && self.token.is_none() {
            return Err(ClientError::NotLoggedIn { server: self.server.clone() });
        }
        let text =
            response.body_mut().with_config().limit(1 << 20).read_to_string().unwrap_or_default();
        Err(status_error(status, &text, run_id))
    }

    /// A list answer's items, following `nextLink` to the last page.
    fn every_page<T: serde::de::DeserializeOwned>(
        &self,
        first: Result<Response<Body>, ureq::Error>,
        what: &str,
    ) -> Result<Vec<T>, ClientError> {
        let mut page: List<T> = self.json(self.check(first, None)?, what)?;
        let mut items = std::mem::take(&mut page.value);
        while let Some(next) = page.next_link.take() {
            let response = self.authorize(self.agent.get(self.url(&next))).call();
            page = self.json(self.check(response, None)?, what)?;
            items.append(&mut page.value);
        }
        Ok(items)
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        mut response: Response<Body>,
        what: &str,
    ) -> Result<T, ClientError> {
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| transport_error(&self.server, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode { what: what.to_string(), reason: e.to_string() })
    }
}

/// A name as one URL path segment: anything but unreserved characters percent-encoded, so a
/// name with `/` or `?` reaches the server as the name it is (which the server then refuses).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Counts bytes as ureq reads the upload.
struct Progress<R, F> {
    inner: R,
    sent: u64,
    report: F,
}

impl<R: Read, F: FnMut(u64)> Read for Progress<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.report)(self.sent);
        Ok(n)
    }
}

/// A transport failure in the user's words: refused, unknown host, timed out, dropped, or a
/// TLS handshake that failed.
fn transport_error(server: &str, error: ureq::Error) -> ClientError {
    let unreachable =
        |reason: String| ClientError::Unreachable { server: server.to_string(), reason };
    let tls =
        |e: &rustls::Error| ClientError::Tls { server: server.to_string(), reason: tls_reason(e) };
    if let ureq::Error::Io(e) = &error
        && let Some(e) = e.get_ref().and_then(|e| e.downcast_ref())
    {
        return tls(e);
    }
    match error {
        ureq::Error::Rustls(e) => tls(&e),
        ureq::Error::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => unreachable("connection refused".to_string()),
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => {
                ClientError::Dropped { server: server.to_string(), reason: e.to_string() }
            }
            _ => unreachable(e.to_string()),
        },
        ureq::Error::HostNotFound => unreachable("host not found".to_string()),
        ureq::Error::ConnectionFailed => unreachable("connection failed".to_string()),
        ureq::Error::Timeout(t) => unreachable(format!("timed out ({t})")),
        ureq::Error::BadUri(uri) => unreachable(format!("invalid server URL {uri:?}")),
        other => ClientError::Dropped { server: server.to_string(), reason: other.to_string() },
    }
}

/// Why a handshake failed, with what the user can do about it.
fn tls_reason(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert) => format!(
            "its certificate is not trusted ({cert}); give the CA that signed it with \
             --ca-file or KILN_CA_FILE"
        ),
        rustls::Error::InvalidMessage(_) => format!("{error} (does the server serve https?)"),
        other => other.to_string(),
    }
}

/// An error status and its body (`ErrorBody`, or whatever a proxy sent) as a [`ClientError`].
fn status_error(status: u16, body: &str, run_id: Option<&str>) -> ClientError {
    let parsed: Option<ErrorBody> = serde_json::from_str(body).ok();
    let error = match &parsed {
        Some(b) => b.error.message.clone(),
        // One line of a non-JSON body, never the whole page.
        None => body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string(),
    };
    let error = if error.is_empty() { format!("HTTP {status}") } else { error };
    match status {
        401 => ClientError::Unauthorized,
        403 => ClientError::Forbidden { error },
        404 => match run_id {
            Some(id) => ClientError::RunNotFound { id: id.to_string() },
            None => ClientError::NotFound { error },
        },
        400 | 422 => match parsed {
            Some(b) if !b.error.details.is_empty() => {
                ClientError::InvalidTask { error: b.error.message, diagnostics: b.error.details }
            }
            _ => ClientError::BadRequest { error },
        },
        409 => ClientError::Conflict { error },
        413 => ClientError::TooLarge { error },
        _ => ClientError::Server { status, error },
    }
}

/// Consecutive failed reconnects before following gives up.
pub const RECONNECTS: u32 = 8;

/// 0.5 s doubling to 8 s: a restarting server gets about half a minute.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(4)))
}

/// How one log body ended.
#[derive(Debug)]
pub enum LogEnd {
    /// The server closed the body: the log is complete (or, without follow, read so far).
    Complete,
    /// The connection broke mid-body.
    Dropped(io::Error),
}

/// Copies one log body, which starts at byte `start` of the log, into `sink`, which already
/// holds bytes `0..*have`: bytes the sink has are skipped, so a reconnect never prints
/// anything twice. `*have` advances with every byte written. A sink error is returned as
/// `Err`; a read error ends the body as [`LogEnd::Dropped`].
pub fn copy_log_body(
    body: &mut dyn Read,
    start: u64,
    have: &mut u64,
    sink: &mut dyn Write,
) -> io::Result<LogEnd> {
    // A body starting past what we have means the server no longer holds the gap; go on
    // from where it starts rather than wait for bytes that will not come.
    let mut position = start;
    if position > *have {
        *have = position;
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(LogEnd::Complete),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(LogEnd::Dropped(e)),
        };
        let chunk = &buf[..n];
        let end = position + n as u64;
        if end > *have {
            let skip = usize::try_from(have.saturating_sub(position)).unwrap_or(n).min(n);
            sink.write_all(&chunk[skip..])?;
            // Live output: a line must show when it arrives, not when a buffer fills.
            sink.flush()?;
            *have = end;
        }
        position = end;
    }
}

/// Follows a log through reconnects: `open(offset)` opens a body from `offset` and returns
/// the offset it really starts at. Up to [`RECONNECTS`] consecutive failures (connection
/// refused or dropped) are retried after `sleep(backoff)`; any progress resets the count.
/// Returns the total bytes the sink holds.
pub fn follow_log<R: Read>(
    mut open: impl FnMut(u64) -> Result<(u64, R), ClientError>,
    mut have: u64,
    sink: &mut dyn Write,
    sleep: &mut dyn FnMut(Duration),
    server: &str,
) -> Result<u64, ClientError> {
    let mut failures = 0;
    loop {
        let before = have;
        let failure = match open(have) {
            Ok((start, mut body)) => {
                match copy_log_body(&mut body, start, &mut have, sink)
                    .map_err(ClientError::Output)?
                {
                    LogEnd::Complete => return Ok(have),
                    LogEnd::Dropped(e) => {
                        ClientError::Dropped { server: server.to_string(), reason: e.to_string() }
                    }
                }
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        if have > before {
            failures = 0;
        }
        if failures >= RECONNECTS {
            return Err(failure);
        }
        sleep(backoff(failures));
        failures += 1;
    }
}

/// `hh:mm:ss`, the DURATION column (hours may pass 99).
pub fn format_duration(delta: chrono::TimeDelta) -> String {
    let secs = delta.num_seconds().max(0);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Cursor;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn config_path_precedence() {
        let all = [
            ("KILN_CLIENT_CONFIG", "/etc/k.toml"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(config_path(env(&all)), Some(PathBuf::from("/etc/k.toml")));
        assert_eq!(config_path(env(&all[1..])), Some(PathBuf::from("/xdg/kiln/client.toml")));
        assert_eq!(
            config_path(env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/home/u")])),
            Some(PathBuf::from("/home/u/.config/kiln/client.toml"))
        );
        assert_eq!(config_path(env(&[])), None);
    }

    #[test]
    fn server_and_token_precedence() {
        let file = ClientConfig {
            server: Some("http://file:1".to_string()),
            token: Some("file-token".to_string()),
        };
        let both = env(&[("KILN_SERVER", "http://env:2"), ("KILN_TOKEN", "env-token")]);
        let s = Settings::resolve(Some("http://flag:3/"), &both, &file);
        assert_eq!(s, Settings { server: "http://flag:3".into(), token: Some("env-token".into()) });
        let s = Settings::resolve(None, &both, &file);
        assert_eq!(s.server, "http://env:2");
        let s = Settings::resolve(None, env(&[("KILN_TOKEN", "")]), &file);
        assert_eq!(
            s,
            Settings { server: "http://file:1".into(), token: Some("file-token".into()) }
        );
        let s = Settings::resolve(None, env(&[]), &ClientConfig::default());
        assert_eq!(s, Settings { server: DEFAULT_SERVER.into(), token: None });
        assert_eq!(normalize_server("kiln.local:8080"), "http://kiln.local:8080");
    }

    #[test]
    fn config_file_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/kiln/client.toml");
        assert_eq!(ClientConfig::load(&path).unwrap(), ClientConfig::default());
        let config =
            ClientConfig { server: Some("http://k:8080".into()), token: Some("s3cret".into()) };
        config.save(&path).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap(), config);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // An existing, too-open file is tightened on save.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        config.save(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&path, "server = [").unwrap();
        assert!(matches!(ClientConfig::load(&path), Err(ClientError::ConfigRead { .. })));
    }

    #[test]
    fn durations_are_hh_mm_ss() {
        assert_eq!(format_duration(chrono::TimeDelta::seconds(19)), "00:00:19");
        assert_eq!(format_duration(chrono::TimeDelta::seconds(3723)), "01:02:03");
        assert_eq!(format_duration(chrono::TimeDelta::seconds(360_000)), "100:00:00");
        assert_eq!(format_duration(chrono::TimeDelta::seconds(-5)), "00:00:00");
    }

    #[test]
    fn error_statuses_become_typed_errors() {
        let body = r#"{"error":{"code":"InvalidTaskFile","message":"acb.yaml is invalid","details":[{"severity":"error","line":3,"col":5,"field":"steps[0]","message":"bad"}]}}"#;
        match status_error(400, body, None) {
            ClientError::InvalidTask { diagnostics, .. } => {
                assert_eq!(diagnostics.len(), 1);
                assert_eq!(
                    diagnostics[0].display("acb.yaml").to_string(),
                    "acb.yaml:3:5: error: steps[0]: bad"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(status_error(401, "", None), ClientError::Unauthorized));
        assert_eq!(
            status_error(404, "{\"error\":\"x\"}", Some("ka9")).to_string(),
            "run ka9 not found"
        );
        assert!(matches!(status_error(413, "", None), ClientError::TooLarge { .. }));
        let e = status_error(
            403,
            r#"{"error":{"code":"Forbidden","message":"this needs an admin token"}}"#,
            None,
        );
        assert_eq!(e.to_string(), "this needs an admin token");
        let e = status_error(
            404,
            r#"{"error":{"code":"TaskNotFound","message":"task nightly not found","details":[]}}"#,
            None,
        );
        assert_eq!(e.to_string(), "task nightly not found");
        assert!(!e.is_local());
        let e = status_error(502, "<html>\n<h1>Bad Gateway</h1>\n</html>", None);
        assert_eq!(e.to_string(), "the server answered 502: <html>");
        let e = status_error(
            409,
            r#"{"error":{"code":"RunAlreadyFinished","message":"run ka9 already finished"}}"#,
            Some("ka9"),
        );
        assert_eq!(e.to_string(), "run ka9 already finished");
    }

    /// A body that yields its bytes, then fails (a dropped connection) or ends.
    struct Flaky {
        data: Cursor<Vec<u8>>,
        fail_at_end: bool,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Small reads, so a drop can land mid-line.
            let max = buf.len().min(3);
            let n = self.data.read(&mut buf[..max])?;
            if n == 0 && self.fail_at_end {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            Ok(n)
        }
    }

    #[test]
    fn copy_skips_bytes_the_sink_already_has() {
        let mut sink = b"hello ".to_vec();
        let mut have = 6;
        // The server resent from 3 (say it ignored part of the offset): only new bytes land.
        let end =
            copy_log_body(&mut Cursor::new(b"lo world".to_vec()), 3, &mut have, &mut sink).unwrap();
        assert!(matches!(end, LogEnd::Complete));
        assert_eq!(sink, b"hello world");
        assert_eq!(have, 11);
    }

    #[test]
    fn follow_reconnects_at_the_offset_received_so_far() {
        let log = b"line one\nline two\nline three\n".to_vec();
        let mut offsets = Vec::new();
        let mut sleeps = Vec::new();
        let mut sink = Vec::new();
        let total = follow_log(
            |offset| {
                offsets.push(offset);
                let start = offset as usize;
                // Each connection drops after 10 bytes, except the one that reaches the end.
                let end = (start + 10).min(log.len());
                let body = Flaky {
                    data: Cursor::new(log[start..end].to_vec()),
                    fail_at_end: end < log.len(),
                };
                Ok((offset, body))
            },
            0,
            &mut sink,
            &mut |d| sleeps.push(d),
            "http://k",
        )
        .unwrap();
        assert_eq!(sink, log);
        assert_eq!(total, log.len() as u64);
        assert_eq!(offsets, [0, 10, 20]);
        // Progress before each drop kept the backoff at its first step.
        assert_eq!(sleeps, [backoff(0), backoff(0)]);
    }

    #[test]
    fn follow_gives_up_after_repeated_failures_without_progress() {
        let mut calls = 0;
        let mut sink = Vec::new();
        let err = follow_log::<Cursor<Vec<u8>>>(
            |_| {
                calls += 1;
                Err(ClientError::Unreachable {
                    server: "http://k".into(),
                    reason: "connection refused".into(),
                })
            },
            0,
            &mut sink,
            &mut |_| {},
            "http://k",
        )
        .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }));
        assert_eq!(calls, RECONNECTS + 1);
    }

    #[test]
    fn follow_stops_on_errors_a_retry_cannot_cure() {
        let mut sink = Vec::new();
        let err = follow_log::<Cursor<Vec<u8>>>(
            |_| Err(ClientError::RunNotFound { id: "ka9".into() }),
            0,
            &mut sink,
            &mut |_| panic!("no retry"),
            "http://k",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "run ka9 not found");
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(segment("nightly_build-2"), "nightly_build-2");
        assert_eq!(segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    #[test]
    fn refused_connections_read_as_unreachable() {
        let e = transport_error(
            "http://127.0.0.1:1",
            ureq::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused)),
        );
        assert_eq!(
            e.to_string(),
            "cannot reach the kiln server at http://127.0.0.1:1: connection refused \
             (is `kiln serve` running? set --server or KILN_SERVER)"
        );
    }
}
