//! An agent cut off from its server (issue 12): the agent runs in a network namespace of its
//! own and reaches a TLS `kiln serve` only over a veth pair, whose link the test takes down and
//! up again. Both ends share the host's engine (a Unix socket, which the cut does not touch).
//!
//! Cut for less than the lease: the run goes on (its output waits in the agent's log spool,
//! beyond a small memory limit on disk), its log arrives once and whole after the link is
//! back. Cut for longer: the server settles the run when the lease runs out, and the agent,
//! refused on its return, stops the run, removes its containers and its spool file, then takes
//! new work.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/server.rs"]
mod support;
#[path = "support/tls.rs"]
mod tls;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agent::{AgentProcess, containers_of, create_agent, log_of, wait_for_line};
use netns::Netns;
use support::{Server, queued_id, registry, text};
use tls::TestCa;

/// A TLS server on the namespace's host address, and an agent inside the namespace.
struct Cut {
    ns: Netns,
    ca: TestCa,
    server: Server,
    dir: tempfile::TempDir,
}

impl Cut {
    fn new(prefix: &str, lease: &str) -> Cut {
        let ns = Netns::new();
        let host = ns.host_addr.to_string();
        let ca = TestCa::new(prefix);
        let cert = ca.server_cert(&[&host]);
        let args = [
            "--tls-cert",
            cert.cert.to_str().expect("path"),
            "--tls-key",
            cert.key.to_str().expect("path"),
            "--registry",
            &registry(),
            "--agent-lease",
            lease,
        ];
        let mut server = Server::start_on(prefix, 0, &format!("{host}:0"), &args);
        server.ca_file = Some(ca.cert.clone());
        Cut { ns, ca, server, dir: tempfile::tempdir().expect("tempdir") }
    }

    /// `kiln agent run` inside the namespace, trusting the test CA, keeping at most
    /// `log_memory` bytes of a run's unsent log in memory.
    fn agent(&self, name: &str, log_memory: usize) -> AgentProcess {
        let token = create_agent(&self.server, name, &[]);
        let cmd = self.ns.command(env!("CARGO_BIN_EXE_kiln"));
        let ca = self.ca.cert.to_str().expect("path");
        let memory = log_memory.to_string();
        let extra = ["--ca-file", ca, "--connect-timeout", "2", "--log-buffer-memory", &memory];
        AgentProcess::start_with(cmd, &self.server, self.dir.path(), &token, &extra)
    }

    fn queue(&self, command: &str) -> String {
        self.queue_args(&["--cmd", command])
    }

    /// Queues the task file `task` (no context).
    fn queue_file(&self, task: &str) -> String {
        let file = self.dir.path().join("acb.yaml");
        std::fs::write(&file, task).expect("task file");
        self.queue_args(&["-f", file.to_str().expect("path")])
    }

    fn queue_args(&self, args: &[&str]) -> String {
        let out = self.server.run(&[&["run", "--no-wait"], args, &["/dev/null"]].concat());
        assert!(out.status.success(), "{}", text(&out));
        queued_id(&out)
    }
}

/// Bytes of unsent log an agent keeps in memory in these tests: far less than the runs print.
const LOG_MEMORY: usize = 64 * 1024;

/// The run's log spool file on the agent's machine (while it spills beyond memory).
fn spool_file(agent: &AgentProcess, run: &str) -> PathBuf {
    agent.data.join("work").join(format!("ctx-{run}")).join("log.spool")
}

/// The run once it ended: `kiln logs --follow` returns then (over TLS, with the test CA).
fn finished(server: &Server, id: &str) -> serde_json::Value {
    let out = server.run(&["logs", id, "--follow"]);
    assert!(out.status.success() || out.status.code() == Some(1), "{}", text(&out));
    server.show(id)
}

/// The run's workspace on the agent's machine (mounted at `/workspace` in its steps).
fn workspace(agent: &AgentProcess, run: &str) -> PathBuf {
    agent.data.join("work").join(format!("kiln-{run}"))
}

/// How long [`EngineEvent::wait`] waits at most (a deadline for a broken agent, not a timing).
const EVENT_DEADLINE_SECS: f64 = 300.0;

/// Blocks until the engine reports `event` for a container of `run` (an engine event, not a
/// poll). Events from [`EngineEvent::start`] on count, also those the engine had before
/// `docker events` subscribed (`--since`).
struct EngineEvent(std::process::Child);

impl EngineEvent {
    fn start(run: &str, event: &str) -> EngineEvent {
        EngineEvent::start_for(run, None, event)
    }

    /// The event for the container of `run`'s step `step` (any step: `None`).
    fn start_for(run: &str, step: Option<&str>, event: &str) -> EngineEvent {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let until = since + EVENT_DEADLINE_SECS;
        let child = Command::new("docker")
            .args(["events", "--since", &format!("{since:.3}"), "--format", "{{.Status}}"])
            .args(["--until", &format!("{until:.3}")])
            .args(["--filter", "type=container"])
            .args(["--filter", &format!("label=kiln.run={run}")])
            .args(
                step.map(|s| ["--filter".to_string(), format!("label=kiln.step={s}")])
                    .iter()
                    .flatten(),
            )
            .args(["--filter", &format!("event={event}")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker events");
        EngineEvent(child)
    }

    fn wait(mut self) {
        let stdout = self.0.stdout.take().expect("stdout");
        let seen = BufReader::new(stdout).lines().map_while(Result::ok).next().is_some();
        let _ = self.0.kill();
        let _ = self.0.wait();
        assert!(seen, "docker events ended without the event");
    }
}

/// Lets the waiting step go on (it waits for `/workspace/go`).
fn release(workspace: &Path) {
    std::fs::write(workspace.join("go"), b"").expect("the run's workspace");
}

#[test]
fn an_agent_cut_off_for_less_than_its_lease_carries_on_and_delivers_its_log_once() {
    let cut = Cut::new("zpa", "30");
    let agent = cut.agent("islander", LOG_MEMORY);
    let id = cut.queue(
        "busybox sh -c 'echo before-the-cut; while [ ! -f /workspace/go ]; do sleep 0.1; done; \
         echo during-the-cut'",
    );
    wait_for_line(&cut.server, &id, "before-the-cut");
    let died = EngineEvent::start(&id, "die");
    cut.ns.link_down();
    // The step goes on and ends while its agent cannot reach the server.
    release(&workspace(&agent, &id));
    died.wait();
    cut.ns.link_up();
    let run = finished(&cut.server, &id);
    assert_eq!(run["status"], "Succeeded", "{run}");
    let log = log_of(&cut.server, &id);
    assert_eq!(log.matches("before-the-cut").count(), 1, "{log}");
    assert_eq!(log.matches("during-the-cut").count(), 1, "{log}");
    assert_eq!(containers_of(&id), "");
}

/// Lines printed by the first step of the spooling test (about 2.5 MB of numbered lines).
const NUMBERED: u32 = 300_000;

#[test]
fn a_cut_off_agents_steps_go_on_while_megabytes_of_log_wait_on_its_disk_then_arrive_once() {
    let cut = Cut::new("zpc", "60");
    let agent = cut.agent("spooler", LOG_MEMORY);
    let id = cut.queue_file(&format!(
        "steps:\n  \
         - id: loud\n    \
           cmd: busybox sh -c 'echo loud-started; while [ ! -f /workspace/go ]; do sleep 0.1; \
         done; seq 1 {NUMBERED}'\n  \
         - id: after\n    \
           cmd: busybox echo after-the-loud-step\n"
    ));
    wait_for_line(&cut.server, &id, "loud-started");
    let second = EngineEvent::start_for(&id, Some("after"), "start");
    cut.ns.link_down();
    release(&workspace(&agent, &id));
    // The second step starts while the link is still down: the first one's megabytes of log
    // did not hold the run up.
    second.wait();
    assert!(spool_file(&agent, &id).exists(), "the unsent log beyond the memory limit is on disk");
    cut.ns.link_up();
    let run = finished(&cut.server, &id);
    assert_eq!(run["status"], "Succeeded", "{run}");
    let log = log_of(&cut.server, &id);
    let numbers: Vec<u32> = log
        .lines()
        .filter_map(|l| l.strip_prefix("loud  | "))
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        numbers.iter().copied().eq(1..=NUMBERED),
        "every line once, in order: {} lines",
        numbers.len()
    );
    assert_eq!(log.matches("after-the-loud-step").count(), 1, "{log}");
    assert_eq!(containers_of(&id), "");
    assert!(!spool_file(&agent, &id).exists());
}

#[test]
fn an_agent_cut_off_for_longer_than_its_lease_stops_its_run_and_takes_new_work() {
    let cut = Cut::new("zpb", "3");
    let agent = cut.agent("castaway", LOG_MEMORY);
    let id = cut.queue(&format!(
        "busybox sh -c 'echo marooned-step-started; while [ ! -f /workspace/go ]; do sleep 0.1; \
         done; seq 1 {NUMBERED}; sleep 600'"
    ));
    wait_for_line(&cut.server, &id, "marooned-step-started");
    let destroyed = EngineEvent::start(&id, "destroy");
    cut.ns.link_down();
    // Output beyond the memory limit while cut off: it waits in the spool file.
    release(&workspace(&agent, &id));
    // The server settles the run when the lease runs out, without the agent.
    let run = finished(&cut.server, &id);
    assert_eq!(run["status"], "Error", "{run}");
    assert_eq!(run["runErrorMessage"], "agent castaway stopped responding during the run");
    cut.ns.link_up();
    // The agent stops the run and removes it: when its log could not be sent for as long as
    // the lease lasts, or when, back in touch, it is refused (its lease is gone).
    destroyed.wait();
    assert_eq!(containers_of(&id), "");
    let after = cut.server.show(&id);
    assert_eq!(after["status"], "Error", "nothing the agent sent after the cut landed: {after}");
    // And it goes on leasing.
    let next = cut.queue("busybox echo after-the-partition");
    let run = finished(&cut.server, &next);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str()),
        (Some("Succeeded"), Some("castaway"))
    );
    // The stopped run's spool went with it (removed before the agent leased again).
    assert!(!spool_file(&agent, &id).exists());
    drop(agent);
}
