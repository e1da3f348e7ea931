//! Remote agents end to end (issue 12): `kiln serve --workers 0` and separate `kiln agent run`
//! processes on the same real engine, talking over loopback HTTP with agent tokens made by
//! `kiln agent create`. Runs route by pool and platform, cancels reach a running agent through
//! its watch call, a killed agent's run is settled by the server and its successor removes
//! what it left, and the agent protocol refuses bad input without storing any of it.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/server.rs"]
mod support;

use std::path::PathBuf;

use agent::{AgentProcess, containers_of, create_agent, log_of, wait_for_line};
use base64::Engine as _;
use serde_json::{Value, json};
use support::{Server, queued_id, text};

#[test]
fn a_remote_agent_runs_quick_runs_and_builds_and_its_name_is_on_the_record() {
    let server = Server::start("zra", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = create_agent(&server, "edge-1", &[]);
    let agent = AgentProcess::start(&server, dir.path(), &token, &[]);
    assert_eq!(agent.name, "edge-1");

    let out = server.run(&["run", "--cmd", "busybox echo hello-from-the-agent", "/dev/null"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hello-from-the-agent"), "{}", text(&out));
    let id = queued_id(&out);
    let run = server.show(&id);
    assert_eq!(run["status"], "Succeeded", "{run}");
    assert_eq!(run["agentName"], "edge-1", "{run}");
    // The agent reported its step over HTTP before it finished the run.
    let steps = run["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{run}");
    assert_eq!((&steps[0]["status"], &steps[0]["exitCode"]), (&json!("successful"), &json!(0)));

    // A local context goes up to the server and down to the agent.
    let context = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/quick-build");
    let image = "remote-agent-build:{{.Run.ID}}";
    let out = server.kiln().args(["build", "-t", image]).arg(&context).output().expect("kiln");
    assert!(out.status.success(), "{}", text(&out));
    let id = queued_id(&out);
    let run = server.show(&id);
    assert_eq!(run["status"], "Succeeded", "{run}");
    assert_eq!(run["outputImages"][0]["tag"], id.as_str(), "{run}");
    assert_eq!(containers_of(&id), "");
    // The agent's work directory holds nothing of ended runs (kiln's init for fast-path step
    // containers, shared by every run, stays).
    let work: Vec<_> = std::fs::read_dir(agent.data.join("work"))
        .expect("work dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|name| name != ".kiln-init")
        .collect();
    assert!(work.is_empty(), "{work:?}");
}

#[test]
fn runs_wait_for_an_agent_of_their_pool_and_platform_then_run_there() {
    let server = Server::start("zrb", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = AgentProcess::start(
        &server,
        &dir.path().join("p"),
        &{
            std::fs::create_dir_all(dir.path().join("p")).expect("dir");
            create_agent(&server, "plain", &[])
        },
        // Not the engine's platforms: the test environment emulates arm64 too.
        &["--platform", "linux/amd64"],
    );
    let queue = |image: &str, args: &[&str]| {
        let out = server
            .kiln()
            .args(["run", "--no-wait"])
            .args(args)
            .args(["--cmd", &format!("{image} echo routed"), "/dev/null"])
            .output()
            .expect("kiln");
        assert!(out.status.success(), "{}", text(&out));
        queued_id(&out)
    };
    // An arm64 run's containers are arm64: the test environment's arm64 image, emulated.
    let arm64_image = std::env::var("KILN_TEST_ARM64_IMAGE")
        .expect("KILN_TEST_ARM64_IMAGE (run scripts/test-env.sh and source its env file)");
    let arm = queue(&arm64_image, &["--platform", "linux/arm64"]);
    let gpu = queue("busybox", &["--agent-pool", "gpu"]);
    let any = queue("busybox", &[]);
    // The plain agent took the newest run, so it looked past the two older ones.
    let run = server.finished(&any);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str()),
        (Some("Succeeded"), Some("plain"))
    );
    for id in [&arm, &gpu] {
        let run = server.show(id);
        assert_eq!(run["status"], "Queued", "{run}");
    }
    let arm_log = log_of(&server, &arm);
    assert!(arm_log.contains("Waiting for an agent (platform linux/arm64)..."), "{arm_log}");
    // The record says it too, and why: in the JSON and in show-run's table.
    let waiting = "Waiting for an agent (platform linux/arm64): no agent runs linux/arm64 (they \
                   run linux/amd64)";
    assert_eq!(server.show(&arm)["waitingReason"], waiting);
    let shown = server.run(&["show-run", &arm, "-o", "table"]);
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(text(&shown).contains(&format!("\n{waiting}...\n")), "{}", text(&shown));
    let gpu_log = log_of(&server, &gpu);
    assert!(
        gpu_log.contains("Waiting for an agent (pool gpu, platform linux/amd64)..."),
        "{gpu_log}"
    );
    assert_eq!(
        server.show(&gpu)["waitingReason"],
        "Waiting for an agent (pool gpu, platform linux/amd64): no agent is registered in pool gpu"
    );

    std::fs::create_dir_all(dir.path().join("a")).expect("dir");
    let arm_token = create_agent(&server, "arm", &[]);
    let _arm_agent = AgentProcess::start(
        &server,
        &dir.path().join("a"),
        &arm_token,
        &["--platform", "linux/arm64"],
    );
    let run = server.finished(&arm);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str()),
        (Some("Succeeded"), Some("arm"))
    );
    assert_eq!(run.get("waitingReason"), Some(&Value::Null), "{run}");
    assert!(
        !text(&server.run(&["show-run", &arm, "-o", "table"])).contains("Waiting for an agent")
    );
    assert_eq!(server.show(&gpu)["status"], "Queued");

    std::fs::create_dir_all(dir.path().join("g")).expect("dir");
    let gpu_token = create_agent(&server, "gpu-1", &["--pool", "gpu"]);
    let _gpu_agent = AgentProcess::start(&server, &dir.path().join("g"), &gpu_token, &[]);
    let run = server.finished(&gpu);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str(), run["agentPoolName"].as_str()),
        (Some("Succeeded"), Some("gpu-1"), Some("gpu"))
    );
    drop(plain);
}

#[test]
fn a_cancel_reaches_a_remote_agent_at_once_and_its_containers_go() {
    let server = Server::start("zrc", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = create_agent(&server, "canceller", &[]);
    let _agent = AgentProcess::start(&server, dir.path(), &token, &[]);
    let out = server.run(&[
        "run",
        "--no-wait",
        "--cmd",
        "busybox sh -c 'echo long-step-started; sleep 600'",
        "/dev/null",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = queued_id(&out);
    wait_for_line(&server, &id, "long-step-started");
    let out = server.run(&["cancel-run", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let run = server.finished(&id);
    assert_eq!(run["status"], "Canceled", "{run}");
    assert_eq!(containers_of(&id), "");
}

#[test]
fn a_killed_agents_run_ends_as_error_and_its_successor_removes_what_it_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    std::fs::create_dir_all(&data).expect("dir");
    let server = Server::spawn_with(
        "zrd",
        &data,
        0,
        None,
        &["--registry", &support::registry(), "--agent-lease", "3"],
    );
    let token = create_agent(&server, "doomed", &[]);
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("dir");
    let agent = AgentProcess::start(&server, &agent_dir, &token, &[]);
    let out = server.run(&[
        "run",
        "--no-wait",
        "--cmd",
        "busybox sh -c 'echo doomed-step-started; sleep 600'",
        "/dev/null",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = queued_id(&out);
    wait_for_line(&server, &id, "doomed-step-started");
    agent.kill9();

    // The lease runs out: the run had started a step, so it ends as Error, once.
    let run = server.finished(&id);
    assert_eq!(run["status"], "Error", "{run}");
    assert_eq!(run["runErrorMessage"], "agent doomed stopped responding during the run", "{run}");
    // Its successor (same token, same data directory) removes what it left before it leases
    // (any kiln process sweeping the engine may have removed it already: its owner is dead).
    let _successor = AgentProcess::start(&server, &agent_dir, &token, &[]);
    assert_eq!(containers_of(&id), "");
    let log = log_of(&server, &id);
    assert_eq!(log.matches("doomed-step-started").count(), 1, "{log}");
}

#[test]
fn the_agent_protocol_refuses_bad_input_and_stores_none_of_it() {
    let server = Server::start("zre", 0);
    let token = create_agent(&server, "prober", &[]);
    let call = |method: &str, path: &str, token: Option<&str>, body: Value| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let (status, text) = server.http_with(method, path, &headers, body.to_string().as_bytes());
        (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)))
    };
    let lease_body = json!({"platforms": ["linux/amd64"], "capacity": 1, "wait": 0});
    assert_eq!(call("POST", "/agent/leases", Some("kiln_agent_wrong"), lease_body.clone()).0, 401);
    assert_eq!(call("POST", "/agent/leases", Some(&server.token), lease_body.clone()).0, 401);
    assert_eq!(call("POST", "/agent/leases", Some(&token), lease_body.clone()).0, 204);

    let out = server.run(&["run", "--no-wait", "--cmd", "busybox true", "/dev/null"]);
    let id = queued_id(&out);
    let (status, lease) = call("POST", "/agent/leases", Some(&token), lease_body);
    assert_eq!(status, 200, "{lease}");
    assert_eq!(lease["runId"], id.as_str());
    let epoch = lease["epoch"].as_i64().expect("epoch");
    let start = lease["logLength"].as_u64().expect("logLength");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let log_path = format!("/agent/runs/{id}/log");
    let part =
        |offset: u64, data: &[u8]| json!({"epoch": epoch, "offset": offset, "data": b64(data)});

    let (status, ack) = call("PUT", &log_path, Some(&token), part(start, b"first\n"));
    assert_eq!((status, ack["length"].as_u64()), (200, Some(start + 6)), "{ack}");
    // Resent after a lost answer: stored once, the same length answered.
    let (status, ack) = call("PUT", &log_path, Some(&token), part(start, b"first\n"));
    assert_eq!((status, ack["length"].as_u64()), (200, Some(start + 6)), "{ack}");
    // Overlapping: only the new tail is stored.
    let (status, ack) = call("PUT", &log_path, Some(&token), part(start + 3, b"st\nsecond\n"));
    assert_eq!((status, ack["length"].as_u64()), (200, Some(start + 13)), "{ack}");
    let (status, body) = call("PUT", &log_path, Some(&token), part(start + 100, b"gap\n"));
    assert_eq!((status, body["error"]["code"].as_str()), (416, Some("LogGap")), "{body}");
    let big = vec![b'x'; 1024 * 1024 + 1];
    let (status, body) = call("PUT", &log_path, Some(&token), part(start + 13, &big));
    assert_eq!(status, 413, "{body}");
    let unordered = json!({"epoch": epoch, "offset": start + 13, "data": b64(b"ab"),
        "times": [{"offset": 1, "at": "2026-01-01T00:00:00.000Z"}, {"offset": 0, "at": "2026-01-01T00:00:00.000Z"}]});
    assert_eq!(call("PUT", &log_path, Some(&token), unordered).0, 400);
    let stale = json!({"epoch": epoch + 1, "offset": start + 13, "data": b64(b"stale\n")});
    let (status, body) = call("PUT", &log_path, Some(&token), stale);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("LeaseLost")), "{body}");
    let heartbeat = format!("/agent/runs/{id}/heartbeat");
    assert_eq!(call("POST", &heartbeat, Some(&token), json!({"epoch": epoch - 1})).0, 409);
    assert_eq!(call("POST", &heartbeat, Some(&token), json!({"epoch": epoch})).0, 200);
    // Step reports: fenced, checked, and each replaces the one before.
    let steps = format!("/agent/runs/{id}/steps");
    let report = |epoch: i64, status: &str| {
        json!({"epoch": epoch, "steps": [{"id": "one", "status": status,
            "startTime": "2026-01-01T00:00:00.000Z", "dependsOn": []}]})
    };
    assert_eq!(call("POST", &steps, Some(&token), report(epoch + 1, "running")).0, 409);
    assert_eq!(call("POST", &steps, Some(&token), report(epoch, "done")).0, 400);
    assert_eq!(call("POST", &steps, Some(&token), report(epoch, "pending")).0, 200);
    assert_eq!(call("POST", &steps, Some(&token), report(epoch, "running")).0, 200);
    let finish = format!("/agent/runs/{id}/finish");
    assert_eq!(
        call("POST", &finish, Some(&token), json!({"epoch": epoch, "status": "Running"})).0,
        400
    );
    assert_eq!(
        call("POST", &finish, Some(&token), json!({"epoch": epoch, "status": "Succeeded"})).0,
        200
    );
    assert_eq!(
        call("POST", &finish, Some(&token), json!({"epoch": epoch, "status": "Failed"})).0,
        409
    );

    let run = server.show(&id);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str()),
        (Some("Succeeded"), Some("prober"))
    );
    assert_eq!(run["steps"], report(epoch, "running")["steps"], "{run}");
    assert_eq!(call("POST", &steps, Some(&token), report(epoch, "successful")).0, 409);
    let log = log_of(&server, &id);
    assert!(log.ends_with("first\nsecond\n"), "{log}");
    assert!(!log.contains("gap") && !log.contains("stale") && !log.contains("xxx"), "{log}");
}

#[test]
fn a_server_restart_does_not_stop_a_remote_agents_run_nor_lose_its_log() {
    let server = Server::start("zrf", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = create_agent(&server, "steadfast", &[]);
    let agent = AgentProcess::start(&server, dir.path(), &token, &[]);
    let out = server.run(&[
        "run",
        "--no-wait",
        "--cmd",
        "busybox sh -c 'echo before-restart; while [ ! -f /workspace/go ]; do sleep 0.1; done; \
         echo after-restart'",
        "/dev/null",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = queued_id(&out);
    wait_for_line(&server, &id, "before-restart");
    let addr = server.url.trim_start_matches("http://").to_string();
    let prefix = server.prefix.clone();
    let (data, admin, keep) = server.kill9();
    // The step finishes while no server listens; the agent keeps its log and result.
    std::fs::write(agent.data.join("work").join(format!("kiln-{id}")).join("go"), b"")
        .expect("the run's workspace");
    let registry = support::registry();
    let mut server =
        Server::spawn_on(&prefix, &data, 0, Some(admin), &addr, &["--registry", &registry]);
    server._dir = keep;
    let run = server.finished(&id);
    assert_eq!(
        (run["status"].as_str(), run["agentName"].as_str()),
        (Some("Succeeded"), Some("steadfast"))
    );
    let log = log_of(&server, &id);
    assert_eq!(log.matches("before-restart").count(), 1, "{log}");
    assert_eq!(log.matches("after-restart").count(), 1, "{log}");
    assert_eq!(containers_of(&id), "");
}

#[test]
fn an_agent_with_a_wrong_token_or_plain_http_to_another_host_stops_with_a_clear_error() {
    let server = Server::start("zrg", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "kiln_agent_0000").expect("token file");
    let agent = |url: &str| {
        let mut cmd = server.kiln();
        cmd.env("KILN_SERVER", url).args(["agent", "run", "--token-file"]).arg(&token_file);
        cmd.arg("--data-dir").arg(dir.path().join("data")).output().expect("kiln agent run")
    };
    let out = agent(&server.url);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("missing or invalid agent token"), "{}", text(&out));
    // Leases carry secrets: plain http to another machine is refused before anything is sent.
    let out = agent("http://192.0.2.1:8080");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("plain http"), "{}", text(&out));
}
