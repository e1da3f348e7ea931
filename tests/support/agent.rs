//! `kiln agent run` processes for end-to-end tests, and what tests ask of their runs: an
//! agent made with `kiln agent create`, started once it printed that it leases, stopped on
//! drop; the engine's containers of a run; a run's log.
#![allow(dead_code)] // each includer uses its own part

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::support::{Server, stdout_lines, text};

/// Containers the engine still has for `run`.
pub fn containers_of(run: &str) -> String {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=kiln.run={run}")])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kiln agent create` on `server`: the token it printed alone on its last line.
pub fn create_agent(server: &Server, name: &str, extra: &[&str]) -> String {
    let out =
        server.kiln().args(["agent", "create", "--name", name]).args(extra).output().expect("kiln");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.lines().last().expect("a token line").trim().to_string();
    assert!(token.starts_with("kiln_agent_"), "{stdout}");
    token
}

/// A `kiln agent run` process, started once it printed that it leases.
pub struct AgentProcess {
    child: Child,
    /// Its data directory (workspaces, owner lock).
    pub data: PathBuf,
    pub name: String,
}

impl AgentProcess {
    /// Starts an agent for `token` with its own data directory under `dir`.
    pub fn start(server: &Server, dir: &Path, token: &str, extra: &[&str]) -> AgentProcess {
        AgentProcess::start_with(
            Command::new(env!("CARGO_BIN_EXE_kiln")),
            server,
            dir,
            token,
            extra,
        )
    }

    /// [`AgentProcess::start`] with `cmd` as the `kiln` binary (e.g. run inside a namespace).
    pub fn start_with(
        mut cmd: Command,
        server: &Server,
        dir: &Path,
        token: &str,
        extra: &[&str],
    ) -> AgentProcess {
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).expect("token file");
        let data = dir.join("agent-data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .expect("agent log");
        server.client_env(&mut cmd);
        let mut child = cmd
            .env_remove("KILN_TOKEN")
            .args(["agent", "run", "--token-file"])
            .arg(&token_file)
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("kiln agent run");
        let rx = stdout_lines(&mut child);
        let line = rx.recv().unwrap_or_else(|_| {
            let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            panic!("kiln agent run exited before leasing:\n{log}")
        });
        let name = line
            .strip_prefix("kiln agent ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        AgentProcess { child, data, name }
    }

    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// The run's whole log.
pub fn log_of(server: &Server, id: &str) -> String {
    let out = server.run(&["logs", id]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Follows the run's log until `needle` appears (the CLI's follow, line by line).
pub fn wait_for_line(server: &Server, id: &str, needle: &str) {
    let mut follow = server
        .kiln()
        .args(["logs", id, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kiln logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let found = BufReader::new(stdout).lines().map_while(Result::ok).any(|l| l.contains(needle));
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(found, "{needle:?} never appeared in run {id}'s log");
}
