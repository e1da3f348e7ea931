//! Trigger benchmarks (issue 6), each next to a baseline measured in the same run:
//!
//! * webhook → run Started: a signed GitHub push delivery for a task on a local git
//!   repository, from the client's send to the run's `startTime` (goal p50 ≤ 200 ms), and the
//!   delivery's answer time (goal < 100 ms); baseline: the same task run by hand
//!   (`POST /tasks/{name}/runs`) → Started.
//! * timers: 1,000 tasks with a timer due every minute, on a server that only queues
//!   (`--workers 0`), over two minute boundaries: every occurrence must be queued once (none
//!   missed or doubled) and within 1 s of its minute; baseline: the same server queueing
//!   1,000 runs submitted over HTTP by 8 clients.
//!
//! `cargo bench --bench triggers` (needs `scripts/test-env.sh`'s engine and busybox image;
//! the timer part waits for two minute boundaries, about 2 minutes). One part:
//! `cargo bench --bench triggers -- webhook` or `-- timers`. Sizes: `KILN_BENCH_SAMPLES` (20),
//! `KILN_BENCH_TASKS` (1000).

#[path = "../tests/support/git.rs"]
mod git;
#[path = "../tests/support/server.rs"]
mod support;
#[path = "../tests/support/webhooks.rs"]
mod webhooks;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike as _, Utc};
use serde_json::{Value, json};
use support::Server;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("a time: {value}"))
}

fn webhook() {
    let samples = setting("KILN_BENCH_SAMPLES", 20);
    let server = Server::start("bhook", 1);
    let root = git::Root::new();
    let bare = root.bare("app");
    let repo = git::Repo::init();
    repo.commit_file("acb.yaml", "steps:\n  - cmd: busybox true\n", "task");
    repo.push(&bare, "main:main");
    let url = root.file_url("app");
    let (status, task) = server.api(
        "POST",
        "/tasks",
        json!({"name": "app", "context": format!("{url}#main"), "step": {"type": "FileTask"}}),
    );
    assert_eq!(status, 201, "{task}");
    let secret = task["webhook"]["secret"].as_str().unwrap().to_string();
    let (mut answered, mut started, mut manual) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..samples + 1 {
        let sha = repo.commit_file("n.txt", &i.to_string(), "change");
        repo.push(&bare, "main:main");
        let delivery = webhooks::github_push(&url, "main", &sha).signed(&secret);
        let mut headers = delivery.header_pairs();
        headers.push(("content-type", "application/json"));
        let sent = Utc::now();
        let clock = Instant::now();
        let (status, answer) = server.http_with("POST", "/webhooks/app", &headers, &delivery.body);
        let answer_ms = clock.elapsed().as_secs_f64() * 1e3;
        assert_eq!(status, 202, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        let run = server.finished(answer["runId"].as_str().unwrap());
        assert_eq!(run["status"], "Succeeded", "{run}");
        let to_start = (time(&run["startTime"]) - sent).num_microseconds().unwrap() as f64 / 1e3;

        let sent = Utc::now();
        let (status, run) = server.api("POST", "/tasks/app/runs", json!({}));
        assert_eq!(status, 201, "{run}");
        let run = server.finished(run["runId"].as_str().unwrap());
        let by_hand = (time(&run["startTime"]) - sent).num_microseconds().unwrap() as f64 / 1e3;
        // The first round warms the engine and the caches.
        if i > 0 {
            answered.push(answer_ms);
            started.push(to_start);
            manual.push(by_hand);
        }
    }
    let p = |v: &mut Vec<f64>| (percentile(v, 0.5), percentile(v, 0.9));
    let (a50, a90) = p(&mut answered);
    let (s50, s90) = p(&mut started);
    let (m50, m90) = p(&mut manual);
    println!("webhook ({samples} pushes, each a new commit, file:// repository, 1 worker):");
    println!("  delivery answered (202):      p50 {a50:7.1} ms  p90 {a90:7.1} ms   goal < 100 ms");
    println!(
        "  delivery sent → run Started:  p50 {s50:7.1} ms  p90 {s90:7.1} ms   goal p50 ≤ 200 ms"
    );
    println!("  baseline, manual task run → Started: p50 {m50:7.1} ms  p90 {m90:7.1} ms");
    println!("  ratio webhook / manual (p50): {:.2}", s50 / m50);
}

fn timers() {
    let tasks = setting("KILN_BENCH_TASKS", 1000);
    let server = Server::start("btime", 0);
    // Creating the tasks must not straddle a minute boundary, so all first fire together.
    while Utc::now().second() > 40 {
        thread::sleep(Duration::from_millis(200));
    }
    let created = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= tasks {
                        return;
                    }
                    let (status, body) = server.api(
                        "POST",
                        "/tasks",
                        json!({"name": format!("t{i}"), "context": "/dev/null",
                               "step": {"type": "EncodedTask", "task": "steps:\n  - cmd: busybox true\n"},
                               "timers": [{"name": "every-minute", "schedule": "* * * * *"}]}),
                    );
                    assert_eq!(status, 201, "{body}");
                }
            });
        }
    });
    let create_secs = created.elapsed().as_secs_f64();
    let now = Utc::now();
    let first =
        now.with_second(0).unwrap().with_nanosecond(0).unwrap() + chrono::TimeDelta::minutes(1);
    let last = first + chrono::TimeDelta::minutes(1);
    println!("timers: {tasks} tasks created in {create_secs:.1} s; waiting for {first} and {last}");
    let until = (last + chrono::TimeDelta::seconds(3) - Utc::now()).to_std().unwrap();
    thread::sleep(until);

    let (_, runs) = server.api("GET", "/runs?top=0", Value::Null);
    let runs = runs.as_array().expect("runs");
    let mut per_occurrence: HashMap<(String, DateTime<Utc>), usize> = HashMap::new();
    let mut lags = Vec::new();
    for run in runs {
        assert_eq!(run["trigger"], "Timer", "{run}");
        let occurrence = time(&run["timerTrigger"]["scheduleOccurrence"]);
        *per_occurrence
            .entry((run["task"].as_str().unwrap().to_string(), occurrence))
            .or_default() += 1;
        lags.push((time(&run["createTime"]) - occurrence).num_microseconds().unwrap() as f64 / 1e3);
    }
    let doubled = per_occurrence.values().filter(|n| **n > 1).count();
    let per_minute = |m: DateTime<Utc>| per_occurrence.keys().filter(|(_, o)| *o == m).count();
    let (fired_first, fired_last) = (per_minute(first), per_minute(last));
    let missed = 2 * tasks - fired_first - fired_last;
    let (l50, l99, max) =
        (percentile(&mut lags, 0.5), percentile(&mut lags, 0.99), percentile(&mut lags, 1.0));

    // Baseline: the same number of runs queued through the API by 8 clients.
    let body = json!({"type": "EncodedTask", "source": {"kind": "none"},
                      "task": "steps:\n  - cmd: busybox true\n"});
    let clock = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < tasks {
                    let (status, run) = server.api("POST", "/runs", body.clone());
                    assert_eq!(status, 201, "{run}");
                }
            });
        }
    });
    let api_ms = clock.elapsed().as_secs_f64() * 1e3;
    println!(
        "  occurrences fired: {fired_first} at {first}, {fired_last} at {last} (expected {tasks} each)"
    );
    println!("  missed {missed}, doubled {doubled}   goal: none");
    println!(
        "  lag occurrence → run queued: p50 {l50:.1} ms  p99 {l99:.1} ms  max {max:.1} ms   goal ≤ 1000 ms"
    );
    println!("  baseline: {tasks} runs queued via POST /runs, 8 clients: {api_ms:.0} ms");
    println!("  ratio (slowest timer run queued / API batch): {:.2}", max / api_ms);

    // Listing: every task with its timers and history, against listing as many runs.
    let list = |path: &str| {
        let mut samples: Vec<f64> = (0..11)
            .map(|_| {
                let clock = Instant::now();
                let (status, body) = server.api("GET", path, Value::Null);
                assert_eq!(status, 200, "{body}");
                let listed = body.as_array().map(Vec::len);
                assert_eq!(listed, Some(tasks), "{path}: {:.300}", body.to_string());
                clock.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        percentile(&mut samples, 0.5)
    };
    let (tasks_ms, runs_ms) = (list("/tasks"), list(&format!("/runs?top={tasks}")));
    println!("  GET /tasks ({tasks} tasks): p50 {tasks_ms:.1} ms");
    println!("  baseline: GET /runs?top={tasks}: p50 {runs_ms:.1} ms");
    println!("  ratio tasks / runs listing: {:.2}", tasks_ms / runs_ms);
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("webhook") {
        webhook();
    }
    if wanted("timers") {
        timers();
    }
}
