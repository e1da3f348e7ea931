//! An agent cut off from its server (issue 12): the agent runs in a network namespace of its
//! own and reaches a TLS `kiln serve` only over a veth pair, whose link the test takes down and
//! up again. Both ends share the host's engine (a Unix socket, which the cut does not touch).
//!
//! Cut for less than the lease: the run goes on, its log arrives once and whole after the link
//! is back. Cut for longer: the server settles the run when the lease runs out, and the agent,
//! refused on its return, stops the run and removes its containers, then takes new work.

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

    /// `kiln agent run` inside the namespace, trusting the test CA.
    fn agent(&self, name: &str) -> AgentProcess {
        let token = create_agent(&self.server, name, &[]);
        let cmd = self.ns.command(env!("CARGO_BIN_EXE_kiln"));
        let ca = self.ca.cert.to_str().expect("path");
        let extra = ["--ca-file", ca, "--connect-timeout", "2"];
        AgentProcess::start_with(cmd, &self.server, self.dir.path(), &token, &extra)
    }

    fn queue(&self, command: &str) -> String {
        let out = self.server.run(&["run", "--no-wait", "--cmd", command, "/dev/null"]);
        assert!(out.status.success(), "{}", text(&out));
        queued_id(&out)
    }
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

/// Blocks until the engine reports `event` for a container of `run` (an engine event, not a
/// poll). Events from [`EngineEvent::start`] on count, also those the engine had before
/// `docker events` subscribed (`--since`).
struct EngineEvent(std::process::Child);

impl EngineEvent {
    fn start(run: &str, event: &str) -> EngineEvent {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let child = Command::new("docker")
            .args(["events", "--since", &format!("{since:.3}"), "--format", "{{.Status}}"])
            .args(["--filter", "type=container"])
            .args(["--filter", &format!("label=kiln.run={run}")])
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
    let agent = cut.agent("islander");
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

#[test]
fn an_agent_cut_off_for_longer_than_its_lease_stops_its_run_and_takes_new_work() {
    let cut = Cut::new("zpb", "3");
    let agent = cut.agent("castaway");
    let id = cut.queue("busybox sh -c 'echo marooned-step-started; sleep 600'");
    wait_for_line(&cut.server, &id, "marooned-step-started");
    cut.ns.link_down();
    // The server settles the run when the lease runs out, without the agent.
    let run = finished(&cut.server, &id);
    assert_eq!(run["status"], "Error", "{run}");
    assert_eq!(run["runErrorMessage"], "agent castaway stopped responding during the run");
    let destroyed = EngineEvent::start(&id, "destroy");
    cut.ns.link_up();
    // Back in touch, the agent is refused (its lease is gone): it stops the run and removes it.
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
    drop(agent);
}
