//! `kiln serve` benchmarks (issue 5), each next to a baseline measured in the same run on the
//! same machine and engine:
//!
//! * submission: `--no-wait` runs accepted over HTTP into SQLite per second (goal ≥ 500/s, none
//!   lost), against the server's own no-op `GET /healthz` rate (the HTTP floor);
//! * shared submission: runs accepted through two servers on one PostgreSQL database (issue 12,
//!   goal ≥ 1,000/s together, none lost or doubled), against one server on SQLite in the same
//!   run (needs `KILN_TEST_POSTGRES_URL`);
//! * dispatch latency: submit → first step container started, idle worker (goal p50 ≤ 50 ms),
//!   against `docker run -d` → started, both read from the engine's own `start` events;
//! * live log latency: a container line's own timestamp → an HTTP follower has it (goal p50
//!   ≤ 50 ms), against the same container's output read live by `docker run`;
//! * log throughput to one follower (goal ≥ 100 MB/s), live and replayed, against `docker run`
//!   and `docker logs` moving the same bytes;
//! * remote agents (issue 12): submit → first step container created through a `kiln agent
//!   run` process against the embedded agent in the same run (goal ≤ 1.2×, p50 ≤ 30 ms), live
//!   log latency through it (goal p50 ≤ 10 ms), and how long after a `kill -9` of the agent its
//!   run's end is recorded, against the lease (goal ≤ TTL + 1 s).
//!
//! `cargo bench --bench server` (needs `scripts/test-env.sh`'s engine and busybox image).
//! Sizes: `KILN_BENCH_RUNS` (default 2000), `KILN_BENCH_SAMPLES` (20), `KILN_BENCH_LOG_MB` (64).

#[path = "../tests/support/agent.rs"]
mod agent_process;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/server.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::Server;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

fn cmd_request(command: &str) -> String {
    use base64::Engine as _;
    let task = format!("steps:\n  - cmd: {command}\n");
    serde_json::json!({
        "type": "EncodedTaskRunRequest",
        "source": {"kind": "none"},
        "encodedTaskContent": base64::engine::general_purpose::STANDARD.encode(task),
    })
    .to_string()
}

fn submit(agent: &ureq::Agent, server: &Server, body: &str) -> String {
    let mut resp = agent
        .post(format!("{}/runs", server.url))
        .header("authorization", format!("Bearer {}", server.token))
        .header("content-type", "application/json")
        .send(body)
        .expect("POST /runs");
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.body_mut().read_to_string());
    let run: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().expect("body")).expect("run JSON");
    run["runId"].as_str().expect("runId").to_string()
}

fn wait_done(agent: &ureq::Agent, server: &Server, id: &str) -> String {
    loop {
        let mut resp = agent
            .get(format!("{}/runs/{id}?wait=60", server.url))
            .header("authorization", format!("Bearer {}", server.token))
            .call()
            .expect("GET run");
        let run: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().expect("body"))
                .expect("run JSON");
        let status = run["status"].as_str().unwrap_or_default().to_string();
        if !matches!(status.as_str(), "Queued" | "Started" | "Running") {
            return status;
        }
    }
}

/// Requests per second of `n` calls of `call` from `threads` threads.
fn rate(n: usize, threads: usize, call: impl Fn(&ureq::Agent) + Sync) -> f64 {
    rate_split(n, threads, |_, agent| call(agent))
}

/// [`rate`], `call` told which thread makes it.
fn rate_split(n: usize, threads: usize, call: impl Fn(usize, &ureq::Agent) + Sync) -> f64 {
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            let call = &call;
            s.spawn(move || {
                let agent = agent();
                for _ in (t..n).step_by(threads) {
                    call(t, &agent);
                }
            });
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}

fn submission() {
    let n = setting("KILN_BENCH_RUNS", 2000);
    let server = Server::start("bsub", 0);
    let threads = 8;
    let healthz = rate(n, threads, |a| {
        let resp = a.get(format!("{}/healthz", server.url)).call().expect("healthz");
        assert_eq!(resp.status().as_u16(), 200);
    });
    let body = cmd_request("busybox true");
    let runs = rate(n, threads, |a| {
        submit(a, &server, &body);
    });
    assert_stored_once(&server, n);
    println!(
        "submission: {runs:.0} runs/s accepted ({n} runs, {threads} clients, all {n} stored); \
         HTTP floor GET /healthz {healthz:.0} req/s; ratio {:.2}",
        runs / healthz
    );
}

/// Every one of the `n` accepted runs is listed, once.
fn assert_stored_once(server: &Server, n: usize) {
    let (status, listed) = server.api("GET", "/runs?top=0", serde_json::Value::Null);
    assert_eq!(status, 200, "{listed}");
    let mut ids: Vec<&str> = listed["value"]
        .as_array()
        .expect("a run list")
        .iter()
        .filter_map(|r| r["runId"].as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "every accepted run is stored, once");
}

/// Submissions through two servers on one PostgreSQL database (8 clients, half on each), and
/// through one server on SQLite in the same run.
fn shared_submission() {
    let n = setting("KILN_BENCH_RUNS", 2000);
    let threads = 8;
    let body = cmd_request("busybox true");
    let sqlite = Server::start("bsql", 0);
    let one = rate(n, threads, |a| {
        submit(a, &sqlite, &body);
    });
    assert_stored_once(&sqlite, n);
    let pair = postgres::Pair::start("bpg", 0, 0);
    let two = rate_split(n, threads, |t, a| {
        submit(a, if t % 2 == 0 { &pair.a } else { &pair.b }, &body);
    });
    assert_stored_once(&pair.b, n);
    println!(
        "shared submission: two servers on one PostgreSQL {two:.0} runs/s ({n} runs, {threads} \
         clients, all {n} stored once); one server on SQLite {one:.0} runs/s; ratio {:.2}",
        two / one
    );
}

/// An engine container event: its time in ns, its action, the container's `kiln.run` label.
type EngineEvent = (i128, String, String);

/// The engine's `create` and `start` events, as the engine timestamps them.
fn container_events() -> (std::process::Child, mpsc::Receiver<EngineEvent>) {
    let mut child = Command::new("docker")
        .args(["events", "--filter", "type=container", "--filter", "event=create"])
        .args(["--filter", "event=start", "--format"])
        .arg("{{.TimeNano}} {{.Action}} {{index .Actor.Attributes \"kiln.run\"}}")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker events");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut parts = line.split_whitespace();
            let time = parts.next().and_then(|t| t.parse().ok()).unwrap_or_default();
            let action = parts.next().unwrap_or_default().to_string();
            let key = parts.next().unwrap_or_default().to_string();
            if tx.send((time, action, key)).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Milliseconds from `t0` to the `create` and to the `start` of the container labelled `key`.
fn created_and_started(events: &mpsc::Receiver<EngineEvent>, key: &str, t0: i128) -> (f64, f64) {
    let mut created = None;
    loop {
        let (time, action, k) = events.recv_timeout(Duration::from_secs(60)).expect("an event");
        if k != key {
            continue;
        }
        let ms = (time - t0) as f64 / 1e6;
        match action.as_str() {
            "create" => created = Some(ms),
            "start" => return (created.expect("create comes before start"), ms),
            _ => {}
        }
    }
}

/// p50 and p90 of `samples`, as text.
fn p50_p90(samples: &mut [f64]) -> (f64, String) {
    let (p50, p90) = (percentile(samples, 0.5), percentile(samples, 0.9));
    (p50, format!("p50 {p50:.1} ms p90 {p90:.1} ms"))
}

fn dispatch() {
    let samples = setting("KILN_BENCH_SAMPLES", 20);
    let server = Server::start("bdis", 1);
    let agent = agent();
    let (mut events, rx) = container_events();
    let body = cmd_request("busybox true");
    // Warm-up: the first run pays for image lookups and the engine's caches.
    let warm = submit(&agent, &server, &body);
    wait_done(&agent, &server, &warm);
    let (mut kiln_create, mut kiln_start) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let t0 = now_ns();
        let id = submit(&agent, &server, &body);
        let (created, started) = created_and_started(&rx, &id, t0);
        kiln_create.push(created);
        kiln_start.push(started);
        wait_done(&agent, &server, &id);
    }
    let (mut docker_create, mut docker_start) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let name = format!("kiln-bench-dispatch-{}-{i}", std::process::id());
        let t0 = now_ns();
        let status = Command::new("docker")
            .args(["run", "-d", "--rm", "--name", &name, "--label", &format!("kiln.run={name}")])
            .args(["busybox", "true"])
            .stdout(Stdio::null())
            .status()
            .expect("docker run");
        assert!(status.success());
        let (created, started) = created_and_started(&rx, &name, t0);
        docker_create.push(created);
        docker_start.push(started);
    }
    let _ = events.kill();
    let _ = events.wait();
    let (ks, kiln_start) = p50_p90(&mut kiln_start);
    let (ds, docker_start) = p50_p90(&mut docker_start);
    let (kc, kiln_create) = p50_p90(&mut kiln_create);
    let (dc, docker_create) = p50_p90(&mut docker_create);
    println!(
        "dispatch, {samples} runs, idle worker: submit -> container started: kiln {kiln_start}, \
         docker run -d {docker_start}, ratio p50 {:.2}; submit -> container created: kiln \
         {kiln_create}, docker run -d {docker_create}, ratio p50 {:.2}",
        ks / ds,
        kc / dc
    );
}

/// A shell loop printing LINES lines, each stamped with the time it was written (`echo` is a
/// builtin, so nothing buffers the line inside the container).
const TICKS: &str = "for i in $(seq 1 LINES); do echo \"$EPOCHREALTIME tick\"; usleep 20000; done";

/// Latencies (ms) of stamped lines read from `reader` as they arrive.
fn stamped_latencies(reader: impl std::io::Read) -> Vec<f64> {
    let mut out = Vec::new();
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        let arrived = now_ns();
        let Some(stamp) = line.split_whitespace().find_map(|w| w.parse::<f64>().ok()) else {
            continue;
        };
        if line.contains("tick") {
            out.push((arrived as f64 - stamp * 1e9) / 1e6);
        }
    }
    out
}

/// Latencies (ms) of `lines` stamped lines of a run on `server`, read by an HTTP follower.
fn follower_latencies(server: &Server, lines: usize) -> Vec<f64> {
    let script = TICKS.replace("LINES", &lines.to_string());
    let agent = agent();
    let body = cmd_request(&format!("busybox sh -c '{script}'"));
    let id = submit(&agent, server, &body);
    let resp = agent
        .get(format!("{}/runs/{id}/log?follow=true", server.url))
        .header("authorization", format!("Bearer {}", server.token))
        .call()
        .expect("follow");
    let kiln = stamped_latencies(resp.into_body().into_reader());
    assert_eq!(wait_done(&agent, server, &id), "Succeeded");
    assert_eq!(kiln.len(), lines, "every line arrived");
    kiln
}

fn log_latency() {
    let lines = setting("KILN_BENCH_SAMPLES", 20) * 10;
    let script = TICKS.replace("LINES", &lines.to_string());
    let server = Server::start("blat", 1);
    let mut kiln = follower_latencies(&server, lines);
    let mut out = Command::new("docker")
        .args(["run", "--rm", "busybox", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker run");
    let mut docker = stamped_latencies(out.stdout.take().expect("stdout"));
    assert!(out.wait().expect("docker run").success());
    assert_eq!((kiln.len(), docker.len()), (lines, lines), "every line arrived");
    let (k50, kiln) = p50_p90(&mut kiln);
    let (d50, docker) = p50_p90(&mut docker);
    println!(
        "live log latency (container line -> reader), {lines} lines: kiln HTTP follower {kiln}; \
         docker run (attached) {docker}; ratio p50 {:.2}",
        k50 / d50
    );
}

/// Bytes per second of draining `reader`.
fn drain_rate(reader: impl std::io::Read) -> (u64, f64) {
    let start = Instant::now();
    let mut reader = reader;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    (total, total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

fn log_throughput() {
    let mb = setting("KILN_BENCH_LOG_MB", 64);
    let script = format!(
        "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu | head -c {}",
        mb << 20
    );
    let server = Server::start("bthr", 1);
    let agent = agent();
    let id = submit(&agent, &server, &cmd_request(&format!("busybox sh -c '{script}'")));
    let follow = |offset: u64| {
        agent
            .get(format!("{}/runs/{id}/log?follow=true&offset={offset}", server.url))
            .header("authorization", format!("Bearer {}", server.token))
            .call()
            .expect("follow")
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader()
    };
    let (live_bytes, live) = drain_rate(follow(0));
    assert_eq!(wait_done(&agent, &server, &id), "Succeeded");
    let (replay_bytes, replay) = drain_rate(follow(0));
    assert_eq!(live_bytes, replay_bytes, "the live follower got every byte");
    let name = format!("kiln-bench-logs-{}", std::process::id());
    let docker = |args: &[&str]| {
        let mut child =
            Command::new("docker").args(args).stdout(Stdio::piped()).spawn().expect("docker");
        let rate = drain_rate(child.stdout.take().expect("stdout")).1;
        assert!(child.wait().expect("docker").success());
        rate
    };
    let docker_live = docker(&["run", "--name", &name, "busybox", "sh", "-c", &script]);
    let docker_replay = docker(&["logs", &name]);
    let _ = Command::new("docker").args(["rm", "-f", &name]).stdout(Stdio::null()).status();
    println!(
        "log throughput ({mb} MiB to one follower): kiln live {live:.0} MB/s, replay {replay:.0} MB/s; \
         docker run (attached) {docker_live:.0} MB/s, docker logs {docker_replay:.0} MB/s; ratios \
         live {:.2}, replay {:.2}",
        live / docker_live,
        replay / docker_replay
    );
}

/// Submit → first step container created, `samples` times alternately through `servers`
/// (warmed up first); each server's p50/p90.
fn created_latencies(servers: &[&Server], samples: usize) -> Vec<Vec<f64>> {
    let agent = agent();
    let (mut events, rx) = container_events();
    let body = cmd_request("busybox true");
    for server in servers {
        let warm = submit(&agent, server, &body);
        wait_done(&agent, server, &warm);
    }
    let mut created = vec![Vec::new(); servers.len()];
    for _ in 0..samples {
        for (i, server) in servers.iter().enumerate() {
            let t0 = now_ns();
            let id = submit(&agent, server, &body);
            created[i].push(created_and_started(&rx, &id, t0).0);
            wait_done(&agent, server, &id);
        }
    }
    let _ = events.kill();
    let _ = events.wait();
    created
}

fn remote() {
    let samples = setting("KILN_BENCH_SAMPLES", 20);
    let registry = support::registry();
    let embedded = Server::start("bre", 1);
    let lease = 3;
    let remote = Server::start_with("brr", 0, &["--registry", &registry, "--agent-lease", "3"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = agent_process::create_agent(&remote, "bench", &[]);
    let process = agent_process::AgentProcess::start(&remote, dir.path(), &token, &[]);
    let mut created = created_latencies(&[&embedded, &remote], samples);
    let (e50, embedded_created) = p50_p90(&mut created[0]);
    let (r50, remote_created) = p50_p90(&mut created[1]);
    println!(
        "remote dispatch, {samples} runs each, idle agents: submit -> container created: remote \
         agent {remote_created}, embedded agent {embedded_created}, ratio p50 {:.2}",
        r50 / e50
    );
    let lines = samples * 10;
    let mut through_remote = follower_latencies(&remote, lines);
    let mut through_embedded = follower_latencies(&embedded, lines);
    let (r50, remote_log) = p50_p90(&mut through_remote);
    let (e50, embedded_log) = p50_p90(&mut through_embedded);
    println!(
        "remote live log latency (container line -> HTTP follower), {lines} lines: remote agent \
         {remote_log}, embedded agent {embedded_log}, ratio p50 {:.2}",
        r50 / e50
    );
    let http = agent();
    let id = submit(&http, &remote, &cmd_request("busybox sh -c 'echo doomed; sleep 600'"));
    agent_process::wait_for_line(&remote, &id, "doomed");
    let killed = chrono::Utc::now();
    process.kill9();
    assert_eq!(wait_done(&http, &remote, &id), "Error");
    let run = remote.show(&id);
    let ended: chrono::DateTime<chrono::Utc> =
        run["finishTime"].as_str().expect("finishTime").parse().expect("RFC 3339");
    let after = (ended - killed).num_milliseconds() as f64 / 1000.0;
    println!(
        "lost agent: kill -9 -> the run's end recorded after {after:.2} s with a {lease} s lease \
         (goal <= {} s); ratio to the lease {:.2}",
        lease + 1,
        after / lease as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    if wanted("submission") {
        submission();
    }
    if wanted("shared") {
        shared_submission();
    }
    if wanted("dispatch") {
        dispatch();
    }
    if wanted("latency") {
        log_latency();
    }
    if wanted("throughput") {
        log_throughput();
    }
    if wanted("remote") {
        remote();
    }
}
