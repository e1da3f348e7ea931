//! Several `kiln serve` processes on one PostgreSQL database (issue 12), end to end: real
//! servers sharing a fresh database of the test environment's PostgreSQL
//! (`KILN_TEST_POSTGRES_URL`) and one data directory (the secret key and uploads), the real
//! engine. Any server takes submissions and deliveries; each run runs once, each delivery
//! queues once, and a log follower on one server hears what an agent writes through the other.
//! An agent given both servers carries its run on through the other when one is killed. A watch
//! of the run list on one server sees a run submitted to and run by the other, live.
//! (Timer occurrences across two servers: `timers_two_servers_one_database_fire_once` in
//! `src/server/timers.rs`, which drives the timer loop with chosen instants.)

#[path = "support/agent.rs"]
mod agent;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/server.rs"]
mod support;
#[path = "support/webhooks.rs"]
mod webhooks;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use base64::Engine as _;
use postgres::Pair;
use serde_json::{Value, json};
use support::{Server, text};

fn encoded_run(task_file: &str) -> Value {
    json!({"type": "EncodedTaskRunRequest", "source": {"kind": "none"},
        "encodedTaskContent": base64::engine::general_purpose::STANDARD.encode(task_file)})
}

fn submit(server: &Server, task_file: &str) -> String {
    let (status, queued) = server.api("POST", "/runs", encoded_run(task_file));
    assert_eq!(status, 201, "{queued}");
    queued["runId"].as_str().expect("runId").to_string()
}

fn log(server: &Server, id: &str) -> String {
    let auth = format!("Bearer {}", server.token);
    server.http_with("GET", &format!("/runs/{id}/log"), &[("authorization", &auth)], b"").1
}

#[test]
fn two_servers_run_every_run_exactly_once() {
    const RUNS: usize = 60;
    let pair = Pair::start("once", 1, 1);
    let ids: Vec<String> = (0..RUNS)
        .map(|i| {
            let server = if i % 2 == 0 { &pair.a } else { &pair.b };
            submit(server, &format!("steps:\n  - cmd: busybox echo run-{i}\n"))
        })
        .collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), RUNS, "one counter issues the IDs of both servers: {ids:?}");
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for (i, id) in ids.iter().enumerate() {
        // Read through the server the run was not submitted to.
        let other = if i % 2 == 0 { &pair.b } else { &pair.a };
        let run = other.finished(id);
        *outcomes.entry(run["status"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        let text = log(other, id);
        assert_eq!(text.matches("marked as successful").count(), 1, "ran once: {text}");
        assert_eq!(text.matches(&format!("| run-{i}\n")).count(), 1, "{text}");
    }
    assert_eq!(outcomes, [("Succeeded".to_string(), RUNS)].into(), "{outcomes:?}");
    let (status, listed) = pair.a.api("GET", "/runs?top=0", Value::Null);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["value"].as_array().map(Vec::len), Some(RUNS), "{listed}");
}

#[test]
fn one_webhook_delivery_to_two_servers_queues_one_run() {
    let pair = Pair::start("hook", 0, 0);
    let repo = "http://127.0.0.1:9/kiln/app.git";
    let (status, task) = pair.a.api(
        "POST",
        "/tasks",
        json!({"name": "app", "contextPath": format!("{repo}#main"),
               "step": {"type": "FileTask", "taskFilePath": "acb.yaml"}}),
    );
    assert_eq!(status, 201, "{task}");
    let secret = task["webhook"]["secret"].as_str().expect("webhook secret");
    let delivery = webhooks::github_push(repo, "main", &"a1".repeat(20)).signed(secret);
    let mut headers = delivery.header_pairs();
    headers.push(("content-type", "application/json"));
    // The same delivery (same ID) to both servers at once, several times over.
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let sends: Vec<_> = [&pair.a, &pair.b, &pair.a, &pair.b]
            .into_iter()
            .map(|server| {
                let headers = &headers;
                let body = &delivery.body;
                s.spawn(move || server.http_with("POST", "/webhooks/app", headers, body))
            })
            .collect();
        sends.into_iter().map(|h| h.join().expect("delivery")).collect()
    });
    let queued = answers.iter().filter(|(status, _)| *status == 202).count();
    let duplicates = answers.iter().filter(|(_, body)| body.contains("duplicate")).count();
    assert_eq!((queued, duplicates), (1, 3), "{answers:?}");
    for server in [&pair.a, &pair.b] {
        let (status, runs) = server.api("GET", "/runs?task=app&top=0", Value::Null);
        assert_eq!(status, 200, "{runs}");
        assert_eq!(runs["value"].as_array().map(Vec::len), Some(1), "{runs}");
    }
}

#[test]
fn a_follower_on_one_server_hears_a_run_on_the_other_live_and_cancels_it_there() {
    // Only A has a worker: the run executes there; B only takes the submission and the follower.
    let pair = Pair::start("follow", 1, 0);
    let id = submit(&pair.b, "steps:\n  - cmd: busybox sh -c 'echo first-line; sleep 120'\n");
    let mut follower = pair
        .b
        .kiln()
        .args(["logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln logs --follow");
    let mut lines = BufReader::new(follower.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a log line");
        let first = line.ends_with("| first-line");
        seen.push(line);
        if first {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.ends_with("| first-line")), "{seen:?}");
    // The line arrived while the step still runs: it was followed, not read after the end.
    assert_eq!(pair.b.show(&id)["status"], "Running");
    let out = pair.b.run(&["cancel-run", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let rest: Vec<String> = lines.map(|l| l.expect("a log line")).collect();
    follower.wait().expect("follower exit");
    let run = pair.a.finished(&id);
    assert_eq!(run["status"], "Canceled", "{run}");
    assert!(rest.iter().any(|l| l.contains("was canceled")), "the follower saw the end: {rest:?}");
}

/// `GET /runs` as server-sent events, read one event at a time (each read blocks until the event
/// arrived; keep-alive comments are skipped).
struct Watch(Box<dyn BufRead + Send>);

impl Watch {
    fn open(server: &Server, path: &str) -> Watch {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let response = agent
            .get(format!("{}{path}", server.url))
            .header("authorization", format!("Bearer {}", server.token))
            .header("accept", "text/event-stream")
            .call()
            .expect("the watch opens");
        Watch(Box::new(BufReader::new(response.into_body().into_reader())))
    }

    /// `(event, data)` of the next event.
    fn next(&mut self) -> (String, String) {
        let (mut event, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).expect("a line") > 0, "the watch ended");
            match line.trim_end_matches('\n').split_once(':') {
                Some(("event", value)) => event = value.trim_start().to_string(),
                Some(("data", value)) => data.push_str(value.trim_start()),
                None if !event.is_empty() => return (event, data),
                _ => {}
            }
        }
    }
}

impl Watch {
    /// Reads `run` events of run `id` until one satisfies `done`; returns it.
    fn until(&mut self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next();
            assert_eq!(event, "run", "{data}");
            let run: Value = serde_json::from_str(&data).expect("a run record");
            assert_eq!(run["runId"], id, "{run}");
            if done(&run) {
                return run;
            }
        }
    }
}

/// A step's ID and status in a run record.
fn steps(run: &Value) -> Vec<(String, String)> {
    let steps = run["steps"].as_array().expect("steps");
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    steps.iter().map(|s| (text(&s["id"]), text(&s["status"]))).collect()
}

#[test]
fn a_watch_on_one_server_sees_a_run_submitted_to_and_run_by_the_other_live() {
    // Only A has a worker; the watch is on B.
    let pair = Pair::start("watch", 1, 0);
    let mut watch = Watch::open(&pair.b, "/runs");
    assert_eq!(watch.next(), ("ready".to_string(), "0".to_string()));
    let task = "steps:\n  - id: hello\n    cmd: busybox echo hi\n  \
                - id: wait\n    cmd: busybox sleep 120\n    when: [hello]\n";
    let id = submit(&pair.a, task);
    // The run waits in its second step until it is cancelled: B sees it there, live.
    let running = watch
        .until(&id, |run| run["status"] == "Running" && run["steps"][1]["status"] == "running");
    assert_eq!(running["steps"][1]["dependsOn"], json!(["hello"]), "{running}");
    assert_eq!(steps(&running)[0].1, "successful", "{running}");
    let out = pair.a.run(&["cancel-run", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let canceled = watch.until(&id, |run| run["status"] == "Canceled");
    let (_, stored) = pair.b.api("GET", &format!("/runs/{id}"), Value::Null);
    assert_eq!(canceled, stored, "the same record as GET /runs/{{id}}");
    let want = [("hello", "successful"), ("wait", "canceled")].map(|(i, s)| (i.into(), s.into()));
    assert_eq!(steps(&canceled), want, "{canceled}");
}

#[test]
fn three_remote_agents_on_two_servers_run_300_runs_each_exactly_once() {
    let pair = Pair::start("mr", 0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let agents: Vec<agent::AgentProcess> =
        [("ag-1", &pair.a), ("ag-2", &pair.b), ("ag-3", &pair.a)]
            .into_iter()
            .map(|(name, server)| {
                let token = agent::create_agent(&pair.a, name, &[]);
                let home = dir.path().join(name);
                std::fs::create_dir_all(&home).expect("dir");
                agent::AgentProcess::start(server, &home, &token, &["--capacity", "2"])
            })
            .collect();
    let n = 300;
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let server = if i % 2 == 0 { &pair.a } else { &pair.b };
            submit(server, &format!("steps:\n  - cmd: busybox echo once-{i}\n"))
        })
        .collect();
    let mut by_agent = std::collections::BTreeMap::<String, usize>::new();
    for (i, id) in ids.iter().enumerate() {
        let run = pair.b.finished(id);
        assert_eq!(run["status"], "Succeeded", "{run}");
        *by_agent.entry(run["agentName"].as_str().unwrap_or_default().to_string()).or_default() +=
            1;
        let log = log(&pair.a, id);
        assert_eq!(log.matches(&format!("| once-{i}\n")).count(), 1, "{log}");
    }
    assert_eq!(by_agent.values().sum::<usize>(), n, "{by_agent:?}");
    let (status, listed) = pair.a.api("GET", "/runs?top=0", Value::Null);
    assert_eq!(status, 200);
    assert_eq!(listed["value"].as_array().map(Vec::len), Some(n), "no run doubled or lost");
    drop(agents);
}

#[test]
fn an_agent_given_two_servers_carries_its_run_through_the_other_when_one_is_killed() {
    let mut pair = Pair::start("fo", 0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = agent::create_agent(&pair.a, "ag-fo", &[]);
    // A first: the agent leases from A until A is gone.
    let servers = format!("{},{}", pair.a.url, pair.b.url);
    let worker = agent::AgentProcess::start(&pair.a, dir.path(), &token, &["--server", &servers]);
    let id = submit(
        &pair.b,
        "steps:\n  - cmd: busybox sh -c 'echo before-failover; \
         while [ ! -f /workspace/go ]; do sleep 0.1; done; echo after-failover'\n",
    );
    agent::wait_for_line(&pair.b, &id, "before-failover");
    pair.a.crash();
    // The step finishes with A gone: its log and result reach the store through B.
    std::fs::write(worker.data.join("work").join(format!("kiln-{id}")).join("go"), b"")
        .expect("the run's workspace");
    let run = pair.b.finished(&id);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str()),
        (Some("Succeeded"), Some("ag-fo")),
        "{run}"
    );
    let text = log(&pair.b, &id);
    for line in ["| before-failover\n", "| after-failover\n", "marked as successful"] {
        assert_eq!(text.matches(line).count(), 1, "{line:?} once: {text}");
    }
    // Later runs go through B, the one server left.
    let next = submit(&pair.b, "steps:\n  - cmd: busybox echo after-the-crash\n");
    let run = pair.b.finished(&next);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str()),
        (Some("Succeeded"), Some("ag-fo")),
        "{run}"
    );
    assert_eq!(log(&pair.b, &next).matches("| after-the-crash\n").count(), 1);
    let (status, listed) = pair.b.api("GET", "/runs?top=0", Value::Null);
    assert_eq!(status, 200, "{listed}");
    let statuses: Vec<&str> = listed["value"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(statuses, ["Succeeded", "Succeeded"], "none lost, none doubled: {listed}");
    assert_eq!(agent::containers_of(&id) + &agent::containers_of(&next), "");
    drop(worker);
}
