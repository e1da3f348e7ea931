//! A `kiln serve` child process for end-to-end tests and benchmarks: started on a loopback port
//! with its own data directory and run-ID prefix, with the admin token it printed and a CLI
//! command pointed at it.
#![allow(dead_code)] // each includer uses its own part

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

pub fn registry() -> String {
    std::env::var("KILN_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_string())
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A command's stdout, once it succeeded.
pub fn ok(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}:\n{}", out.status.code(), text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stdout as JSON, once it succeeded.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap_or_else(|e| panic!("{e}:\n{}", text(out)))
}

/// A refusal: exit status `code` and one line naming `needle`.
pub fn refused(out: &Output, code: i32, needle: &str) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(code), "{all}");
    assert_eq!(all.trim().lines().count(), 1, "one line: {all}");
    assert!(all.contains(needle), "{needle:?} not in: {all}");
}

/// The run ID a client command printed (`Queued a run with ID: …`).
pub fn queued_id(out: &Output) -> String {
    let all = text(out);
    all.lines()
        .find_map(|l| l.strip_prefix("Queued a run with ID: "))
        .unwrap_or_else(|| panic!("no run queued:\n{all}"))
        .trim()
        .to_string()
}

/// The lines `child` prints on its (piped) stdout, as they come. The pipe is drained for the
/// child's whole life, also after the test stopped listening, so the child never blocks on it.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// A running `kiln serve` with its data directory.
pub struct Server {
    child: Child,
    pub url: String,
    pub token: String,
    pub data: PathBuf,
    pub prefix: String,
    /// The CA a TLS server's certificate is signed by, which its CLI commands trust.
    pub ca_file: Option<PathBuf>,
    pub _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// The server process's ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A server with a fresh data directory and `workers` workers.
    pub fn start(prefix: &str, workers: usize) -> Server {
        Server::start_with(prefix, workers, &["--registry", &registry()])
    }

    /// Like [`Server::start`], with these registry arguments (`--registry`, its login).
    pub fn start_with(prefix: &str, workers: usize, registry_args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        let mut server = Server::spawn_with(prefix, &data, workers, None, registry_args);
        server._dir = Some(dir);
        server
    }

    /// Starts `kiln serve` on `data`; `token` is the admin token when the data directory has one
    /// already (it is printed on the first start only).
    pub fn spawn(prefix: &str, data: &Path, workers: usize, token: Option<String>) -> Server {
        Server::spawn_with(prefix, data, workers, token, &["--registry", &registry()])
    }

    pub fn spawn_with(
        prefix: &str,
        data: &Path,
        workers: usize,
        token: Option<String>,
        registry_args: &[&str],
    ) -> Server {
        Server::spawn_on(prefix, data, workers, token, "127.0.0.1:0", registry_args)
    }

    /// A server with a fresh data directory listening on `addr` (a port of 0 picks one), with
    /// these further arguments (`--tls-cert …`, `--registry …`).
    pub fn start_on(prefix: &str, workers: usize, addr: &str, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        let mut server = Server::spawn_on(prefix, &data, workers, None, addr, args);
        server._dir = Some(dir);
        server
    }

    pub fn spawn_on(
        prefix: &str,
        data: &Path,
        workers: usize,
        token: Option<String>,
        addr: &str,
        args: &[&str],
    ) -> Server {
        let config = data.join("kiln.toml");
        std::fs::write(&config, format!("run_id_prefix = \"{prefix}\"\n")).expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("server.log"))
            .expect("server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--config")
            .arg(&config)
            .args(["serve", "--addr", addr, "--data-dir"])
            .arg(data)
            .args(args)
            .args(["--workers", &workers.to_string()])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("kiln serve");
        let rx = stdout_lines(&mut child);
        let mut token = token;
        let url = loop {
            let line = rx.recv().unwrap_or_else(|_| {
                let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
                panic!("kiln serve exited before listening:\n{log}")
            });
            if let Some(t) = line.strip_prefix("admin token: ") {
                assert!(token.is_none(), "the admin token is printed on the first start only");
                token = Some(t.to_string());
            }
            if let Some(url) = line.strip_prefix("kiln listening on ") {
                break url.to_string();
            }
        };
        Server {
            child,
            url,
            token: token.expect("an admin token on the first start"),
            data: data.to_path_buf(),
            prefix: prefix.to_string(),
            ca_file: None,
            _dir: None,
        }
    }

    /// The `kiln` CLI pointed at this server, with no client config file of the user's.
    pub fn kiln(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        self.client_env(&mut cmd);
        cmd
    }

    /// Points `cmd` (a `kiln` CLI, however started) at this server, as [`Server::kiln`] does.
    pub fn client_env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if let Some(ca) = &self.ca_file {
            cmd.env("KILN_CA_FILE", ca);
        }
        cmd.env("KILN_SERVER", &self.url)
            .env("KILN_TOKEN", &self.token)
            .env("KILN_CLIENT_CONFIG", self.data.join("client.toml"))
            .stdin(Stdio::null())
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.kiln().args(args).output().expect("kiln")
    }

    pub fn show(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["show-run", id, "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("show-run JSON")
    }

    /// A raw HTTP call with `token` (none: no Authorization header).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| ("authorization", a)).into_iter().collect();
        self.http_with(method, path, &headers, body)
    }

    /// A raw HTTP call with these headers (a git host's delivery, a registry's notification).
    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("{}{path}", self.url);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(body.to_vec()).expect("request");
        let mut resp = agent.run(req).expect("HTTP");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string();
        (status, text.unwrap_or_else(|e| panic!("reading the answer to {method} {path}: {e}")))
    }

    /// An API call with the admin token and a JSON body; the status and the JSON answer.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {}", self.token);
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let (status, text) = self.http_with(method, path, &headers, body.to_string().as_bytes());
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// The run once it is terminal (long-polls `GET /runs/{id}?wait=`; gives up after 3 min).
    pub fn finished(&self, id: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            let (status, run) =
                self.api("GET", &format!("/runs/{id}?wait=30"), serde_json::Value::Null);
            assert_eq!(status, 200, "{run}");
            if !matches!(run["status"].as_str(), Some("Queued" | "Started" | "Running")) {
                return run;
            }
            assert!(std::time::Instant::now() < deadline, "run {id} did not finish: {run}");
        }
    }

    pub fn kill9(mut self) -> (PathBuf, String, Option<tempfile::TempDir>) {
        self.crash();
        (self.data.clone(), self.token.clone(), self._dir.take())
    }

    /// SIGKILL, as a crash would end it; the process is gone (and reaped) on return.
    pub fn crash(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A process already reaped (crashed) has no ID any more: its number may be another's.
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
