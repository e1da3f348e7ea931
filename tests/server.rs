//! `kiln serve` and the `kiln` client end to end: the real binary as server and as CLI, over
//! loopback HTTP, with a fresh data directory (SQLite file, uploads) per server, on the real
//! engine and registries that `scripts/test-env.sh` starts.
//!
//! Each test starts its own server with its own run-ID prefix, so runs of parallel tests never
//! share container names on the one engine.

#[path = "support/server.rs"]
mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{Server, queued_id, registry, text};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The run ID from `Queued a run with ID: <id>`.
/// Containers the engine still has for `run`.
fn containers_of(run: &str) -> String {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=kiln.run={run}")])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The registry's digest of `repo:tag` (HEAD of the manifest, or of the manifest list).
fn registry_digest(repo: &str, tag: &str) -> String {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = agent
        .head(format!("http://{}/v2/{repo}/manifests/{tag}", registry()))
        .header(
            "accept",
            "application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .call()
        .expect("registry");
    assert_eq!(resp.status().as_u16(), 200, "{repo}:{tag} is in the registry");
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .expect("digest header")
        .to_string()
}

/// Waits until the run's followed log contains `needle` (the follow ends with the run, so a
/// run that never prints it fails the test instead of hanging).
fn wait_for_log(server: &Server, id: &str, needle: &str) {
    let mut child = server
        .kiln()
        .args(["logs", id, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kiln logs");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(needle) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains(needle), "the log never showed {needle:?}:\n{seen}");
}

/// `kiln build ARGS CONTEXT` through `server`, which must succeed: its output and run ID.
fn quick_build(server: &Server, args: &[&str], context: &std::path::Path) -> (String, String) {
    let out = server.kiln().arg("build").args(args).arg(context).output().expect("kiln build");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    (all, queued_id(&out))
}

#[test]
fn quick_build_pushes_the_image_and_records_its_digest() {
    let server = Server::start("eqb", 1);
    let context = repo().join("examples/quick-build");
    let (all, id) = quick_build(
        &server,
        &["-t", "e2e-quick:{{.Run.ID}}", "--build-arg", "GREETING=e2e"],
        &context,
    );
    assert!(all.contains(&format!("Run ID: {id} was successful after")), "{all}");
    let run = server.show(&id);
    assert_eq!(run["status"], "Succeeded", "{run}");
    assert_eq!(run["runType"], "QuickBuild", "{run}");
    let image = &run["outputImages"][0];
    assert_eq!(image["repository"], "e2e-quick", "{run}");
    assert_eq!(image["tag"], id.as_str(), "{run}");
    assert_eq!(image["registry"], registry().as_str(), "{run}");
    assert_eq!(image["digest"], registry_digest("e2e-quick", &id).as_str(), "{run}");
    assert_eq!(containers_of(&id), "");
}

#[test]
fn a_multi_platform_quick_build_records_its_manifest_list() {
    let server = Server::start("emp", 1);
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(context.path().join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    let args = ["--platform", "linux/amd64,linux/arm64", "-t", "e2e-multi:{{.Run.ID}}"];
    let (all, id) = quick_build(&server, &args, context.path());
    let run = server.show(&id);
    assert_eq!(run["status"], "Succeeded", "{run}");
    assert_eq!(run["platform"]["architecture"], "amd64", "{run}");
    let image = &run["outputImages"][0];
    assert_eq!(image["tag"], id.as_str(), "{run}");
    assert_eq!(image["digest"], registry_digest("e2e-multi", &id).as_str(), "{run}");
    assert!(all.contains("manifest list of 2 platforms"), "{all}");

    // The platforms are checked as `--platform` is, before anything is queued.
    let out = server.run(&["build", "--platform", "linux/amd64,linux/arm65", "--no-push", "."]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unknown architecture \"arm65\""), "{}", text(&out));
}

#[test]
fn runs_from_a_file_a_command_and_stdin() {
    let server = Server::start("erun", 2);
    let dir = repo().join("examples/env-workdir");
    let out = server.kiln().args(["run", "-f"]).arg(dir.join("acb.yaml")).arg(&dir).output();
    let out = out.expect("kiln run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("step env wins"), "{}", text(&out));

    let out = server.run(&["run", "--cmd", "busybox echo hello-from-cmd", "/dev/null"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hello-from-cmd"), "{}", text(&out));
    let id = queued_id(&out);
    assert_eq!(server.show(&id)["runType"], "QuickRun");

    let mut child = server
        .kiln()
        .args(["run", "-f", "-", "--set", "who=stdin", "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln run -f -");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"steps:\n  - cmd: busybox echo hello-{{.Values.who}}\n")
        .expect("task on stdin");
    let out = child.wait_with_output().expect("kiln run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("hello-stdin"), "{}", text(&out));
}

#[test]
fn a_failing_run_exits_1_with_acr_wording_and_the_log_is_complete() {
    let server = Server::start("efail", 1);
    let out =
        server.run(&["run", "--cmd", "busybox sh -c 'echo before-exit; exit 3'", "/dev/null"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let id = queued_id(&out);
    assert!(all.contains(&format!("Run ID: {id} failed after")), "{all}");
    assert!(all.contains("Error: failed to run step ID: acb_step_0"), "{all}");
    // The stored log as `kiln logs` prints it after the run has the step's output, once.
    let logs = server.run(&["logs", &id]);
    let log = String::from_utf8_lossy(&logs.stdout);
    assert!(log.starts_with("Waiting for an agent..."), "{log}");
    assert_eq!(log.matches("before-exit").count(), 1, "{log}");
    // The step's output ends with its closing line, timestamped as ACR's own lines.
    let closing = log
        .lines()
        .find_map(|l| l.strip_prefix("acb_step_0 | ").filter(|t| t.contains("marked as failed")))
        .unwrap_or_else(|| panic!("no closing line: {log}"));
    assert!(
        chrono::NaiveDateTime::parse_from_str(&closing[..19], "%Y/%m/%d %H:%M:%S").is_ok()
            && closing[20..]
                .starts_with("Step ID: acb_step_0 marked as failed (elapsed time in seconds: "),
        "{log}"
    );
    assert_eq!(server.show(&id)["status"], "Failed");
}

#[test]
fn secrets_never_reach_the_stored_or_streamed_log() {
    let server = Server::start("esec", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("acb.yaml");
    std::fs::write(
        &file,
        "steps:\n  - cmd: busybox sh -c 'echo pw={{.Values.pw}}; printf hun; printf \"ter2\\n\"; echo multi-{{.Values.pw}}-line'\n",
    )
    .expect("task");
    let out = server
        .kiln()
        .args(["run", "-f"])
        .arg(&file)
        .args(["--set-secret", "pw=hunter2", "/dev/null"])
        .output()
        .expect("kiln run");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("hunter2"), "streamed log leaked the secret:\n{all}");
    assert!(all.contains("pw=***"), "{all}");
    let id = queued_id(&out);
    let stored = server.run(&["logs", &id]);
    let stored = String::from_utf8_lossy(&stored.stdout);
    assert!(!stored.contains("hunter2"), "{stored}");
    assert!(stored.contains("multi-***-line"), "{stored}");
    // Split across two writes of the container.
    assert!(stored.contains("***"), "{stored}");
    let run = server.show(&id);
    assert!(!run.to_string().contains("hunter2"), "the run record shows the secret: {run}");
    // The stored request keeps it sealed: no file of the data directory has it in the clear.
    for name in ["kiln.db", "kiln.db-wal"] {
        let bytes = std::fs::read(server.data.join(name)).unwrap_or_default();
        assert!(!bytes.windows(7).any(|w| w == b"hunter2"), "{name} holds the secret");
    }
}

#[test]
fn a_bad_task_file_is_refused_with_its_position_and_queues_nothing() {
    let server = Server::start("ebad", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "steps:\n  - cmd: busybox true\n    when: [nope]\n").expect("task");
    let out = server.kiln().args(["run", "-f"]).arg(&file).arg("/dev/null").output();
    let out = out.expect("kiln run");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("bad.yaml:3:"), "the error names file, line and column:\n{all}");
    assert!(!all.contains("Queued a run"), "{all}");
    let list = server.run(&["list-runs", "-o", "json"]);
    assert!(list.status.success(), "{}", text(&list));
    assert_eq!(serde_json::from_slice::<Value>(&list.stdout).expect("json"), Value::Array(vec![]));
}

#[test]
fn tokens_are_required_and_wrong_ones_change_nothing() {
    let server = Server::start("etok", 0);
    let task = serde_json::json!({
        "type": "EncodedTaskRunRequest", "source": {"kind": "none"},
        "encodedTaskContent": "c3RlcHM6CiAgLSBjbWQ6IGJ1c3lib3ggdHJ1ZQo="
    })
    .to_string();
    for token in [None, Some("kiln_wrong")] {
        let (status, body) = server.http("POST", "/runs", token, task.as_bytes());
        assert_eq!(status, 401, "{body}");
        let (status, _) = server.http("POST", "/uploads", token, b"not even gzip");
        assert_eq!(status, 401);
    }
    assert!(
        !server.data.join("uploads").exists()
            || std::fs::read_dir(server.data.join("uploads")).expect("dir").next().is_none()
    );
    let out = server.kiln().env("KILN_TOKEN", "kiln_wrong").args(["list-runs"]).output();
    let out = out.expect("kiln");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(all.trim().lines().count(), 1, "one clear line: {all}");
    assert!(all.contains("token"), "{all}");
    // With the right token, nothing was queued by the rejected calls.
    let (status, body) = server.http("GET", "/runs", Some(&server.token), b"");
    assert_eq!((status, body.as_str()), (200, r#"{"value":[],"nextLink":null}"#));
    // The API document is public.
    let (status, body) = server.http("GET", "/openapi.json", None, b"");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("OpenAPI JSON");
    assert!(doc["paths"]["/runs"].is_object(), "{doc}");
}

#[test]
fn a_truncated_upload_is_refused_and_leaves_nothing() {
    let server = Server::start("eupl", 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let data = vec![b'x'; 100_000];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "big.txt", &data[..]).expect("tar");
        tar.finish().expect("tar");
    }
    let whole = gz.finish().expect("gzip");
    let (status, body) =
        server.http("POST", "/uploads", Some(&server.token), &whole[..whole.len() / 2]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a complete .tar.gz"), "{body}");
    let left: Vec<_> = std::fs::read_dir(server.data.join("uploads"))
        .map(|d| d.map_while(Result::ok).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let (status, body) = server.http("POST", "/uploads", Some(&server.token), &whole);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn unknown_runs_and_an_unreachable_server_are_one_clear_line() {
    let server = Server::start("eunk", 0);
    for args in [&["show-run", "nope1"][..], &["logs", "nope1"], &["cancel-run", "nope1"]] {
        let out = server.run(args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
        assert!(all.contains("run nope1 not found"), "{args:?}: {all}");
        assert_eq!(all.trim().lines().count(), 1, "{args:?}: {all}");
    }
    let out = server.kiln().env("KILN_SERVER", "http://127.0.0.1:9").args(["list-runs"]).output();
    let out = out.expect("kiln");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("cannot reach the kiln server at http://127.0.0.1:9"), "{all}");
    assert_eq!(all.trim().lines().count(), 1, "{all}");
}

#[test]
fn cancel_stops_a_running_run_and_removes_its_containers() {
    let server = Server::start("ecan", 1);
    let out = server.run(&[
        "run",
        "--no-wait",
        "--cmd",
        "busybox sh -c 'echo cancel-me-now; sleep 600'",
        "/dev/null",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = queued_id(&out);
    wait_for_log(&server, &id, "cancel-me-now");
    let out = server.run(&["cancel-run", &id]);
    assert!(out.status.success(), "{}", text(&out));
    // Following the log ends when the run does.
    let follow = server.run(&["logs", &id, "--follow"]);
    assert!(follow.status.success(), "{}", text(&follow));
    let run = server.show(&id);
    assert_eq!(run["status"], "Canceled", "{run}");
    assert_eq!(containers_of(&id), "");
    // A queued run is canceled at once.
    let out = server.run(&["run", "--no-wait", "--cmd", "busybox sleep 600", "/dev/null"]);
    let blocker = queued_id(&out);
    let out = server.run(&["run", "--no-wait", "--cmd", "busybox true", "/dev/null"]);
    let queued = queued_id(&out);
    assert!(server.run(&["cancel-run", &queued]).status.success());
    assert_eq!(server.show(&queued)["status"], "Canceled");
    assert!(server.run(&["cancel-run", &blocker]).status.success());
}

#[test]
fn a_step_timeout_fails_the_run_and_says_so() {
    let server = Server::start("etim", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("acb.yaml");
    std::fs::write(&file, "steps:\n  - id: slow\n    cmd: busybox sleep 60\n    timeout: 1\n")
        .expect("task");
    let out = server.kiln().args(["run", "-f"]).arg(&file).arg("/dev/null").output();
    let out = out.expect("kiln run");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("timed out after 1"), "{all}");
    let id = queued_id(&out);
    assert_eq!(containers_of(&id), "");
}

#[test]
fn kill_9_during_a_run_then_restart_finishes_it_honestly_and_runs_the_queue() {
    let server = Server::start("ekill", 1);
    // A context of its own, so the run has a context copy as well as a workspace.
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(context.path().join("file.txt"), "x").expect("context file");
    let out = server.run(&[
        "run",
        "--no-wait",
        "--cmd",
        "busybox sh -c 'echo in-flight; sleep 600'",
        context.path().to_str().expect("utf-8 path"),
    ]);
    let in_flight = queued_id(&out);
    let out = server.run(&["run", "--no-wait", "--cmd", "busybox echo after-restart", "/dev/null"]);
    let queued = queued_id(&out);
    wait_for_log(&server, &in_flight, "in-flight");
    // Checked before the kill: once its owner is dead, any server of a test running alongside
    // may sweep the container at its start.
    assert_ne!(containers_of(&in_flight), "", "the run has a container");
    let work_dirs = [format!("kiln-{in_flight}"), format!("ctx-{in_flight}")];
    // The embedded agent's own directory, `<data>/agents/<its name>/work`.
    let present = |data: &std::path::Path| -> Vec<String> {
        let agent = std::fs::read_dir(data.join("agents")).expect("agents").next().expect("one");
        let work = agent.expect("entry").path().join("work");
        work_dirs.iter().filter(|d| work.join(d).exists()).cloned().collect()
    };
    assert_eq!(present(&server.data), work_dirs, "the run has a workspace and a context copy");
    let prefix = server.prefix.clone();
    let (data, token, dir) = server.kill9();

    let mut server = Server::spawn(&prefix, &data, 1, Some(token));
    server._dir = dir;
    let run = server.show(&in_flight);
    assert_eq!(run["status"], "Error", "{run}");
    assert!(
        run["runErrorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("server stopped during the run"),
        "{run}"
    );
    assert_eq!(containers_of(&in_flight), "", "restart removes the dead run's containers");
    assert_eq!(present(&data), Vec::<String>::new(), "restart removes the dead run's directories");
    // The stored log survived up to the last persisted byte.
    let log = server.run(&["logs", &in_flight]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("in-flight"), "{}", text(&log));
    // The queued run still runs, once.
    let follow = server.run(&["logs", &queued, "--follow"]);
    assert_eq!(String::from_utf8_lossy(&follow.stdout).matches("after-restart").count(), 1);
    assert_eq!(server.show(&queued)["status"], "Succeeded");
    let list = server.run(&["list-runs", "-o", "json", "--top", "0"]);
    let runs: Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "nothing lost or duplicated: {runs}");
}

#[test]
fn logs_follow_from_a_late_connection_gets_everything_once() {
    let server = Server::start("elog", 1);
    let out = server.run(&[
        "run",
        "--no-wait",
        "--cmd",
        "busybox sh -c 'for i in $(seq 1 2000); do echo line-$i; done'",
        "/dev/null",
    ]);
    let id = queued_id(&out);
    let follow = server.run(&["logs", &id, "--follow"]);
    assert!(follow.status.success(), "{}", text(&follow));
    let log = String::from_utf8_lossy(&follow.stdout);
    for i in [1, 999, 2000] {
        assert_eq!(log.matches(&format!("line-{i}\n")).count(), 1, "line-{i}:\n{log}");
    }
    let lines: Vec<u32> = log
        .lines()
        .filter_map(|l| l.rsplit_once("line-").and_then(|(_, n)| n.parse().ok()))
        .collect();
    assert_eq!(lines, (1..=2000).collect::<Vec<_>>(), "in order, no gaps, no duplicates");
    // The whole log equals what a plain read returns.
    let plain = server.run(&["logs", &id]);
    assert_eq!(plain.stdout, follow.stdout);
    // list-runs shows it with ACR's columns.
    let table = server.run(&["list-runs"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("RUN ID"), "{table}");
    assert!(table.contains(&id) && table.contains("Succeeded"), "{table}");
}

/// A git repository with `files`, committed on branch `main`.
fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("file");
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["-c", "user.name=kiln", "-c", "user.email=kiln@localhost", "commit", "-qm", "ctx"],
    ] {
        let status = Command::new("git").args(args).current_dir(dir.path()).status();
        assert!(status.expect("git").success(), "git {args:?}");
    }
    dir
}

#[test]
fn git_sources_build_and_run_from_the_repository() {
    let server = Server::start("egit", 1);
    let repo = git_repo(&[
        ("Dockerfile", "FROM busybox\nCOPY msg.txt /msg.txt\nCMD [\"cat\", \"/msg.txt\"]\n"),
        ("msg.txt", "from-git\n"),
        ("acb.yaml", "steps:\n  - cmd: busybox cat /workspace/msg.txt\n"),
    ]);
    let url = format!("file://{}#main", repo.path().display());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    // The task file is read from the fetched repository, as ACR's FileTaskRunRequest does.
    let out = server
        .kiln()
        .current_dir(elsewhere.path())
        .args(["run", "-f", "acb.yaml", &url])
        .output()
        .expect("kiln run");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("from-git"), "{all}");

    let out = server.run(&["build", "-t", "e2e-git:{{.Run.ID}}", &url]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let id = queued_id(&out);
    let run = server.show(&id);
    assert_eq!(run["outputImages"][0]["digest"], registry_digest("e2e-git", &id).as_str(), "{run}");
}

#[test]
fn a_busy_port_fails_the_start_without_spending_the_admin_token() {
    let busy = Server::start("ebusy", 0);
    let addr = busy.url.trim_start_matches("http://").to_string();
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--workers", "0", "--addr", &addr, "--data-dir"])
        .arg(data.path())
        .output()
        .expect("kiln serve");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains(&format!("cannot listen on {addr}")), "{all}");
    assert_eq!(all.matches("Address already in use").count(), 1, "said once: {all}");
    assert!(!all.contains("admin token"), "{all}");
    // The next start on a free port prints the token (the harness insists on it).
    let server = Server::spawn("ebusy", data.path(), 0, None);
    assert!(server.token.starts_with("kiln_"));
}

#[test]
fn a_quick_build_logs_in_to_an_authenticated_registry_and_never_logs_the_password() {
    let registry = std::env::var("KILN_TEST_AUTH_REGISTRY").unwrap_or("127.0.0.1:5001".into());
    let user = std::env::var("KILN_TEST_REGISTRY_USER").unwrap_or("kiln".into());
    let password =
        std::env::var("KILN_TEST_REGISTRY_PASSWORD").unwrap_or("kiln-test-password".into());
    let secrets = tempfile::tempdir().expect("tempdir");
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).expect("password file");
    let password_file = password_file.to_string_lossy().into_owned();
    let server = Server::start_with(
        "eauth",
        1,
        &[
            "--registry",
            &registry,
            "--registry-user",
            &user,
            "--registry-password-file",
            &password_file,
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), "FROM busybox\nRUN echo built\n").expect("file");
    let (_, id) = quick_build(&server, &["-t", "e2e-auth:{{.Run.ID}}"], dir.path());
    let run = server.show(&id);
    assert_eq!(run["outputImages"][0]["registry"], registry.as_str(), "{run}");
    assert!(run["outputImages"][0]["digest"].as_str().unwrap_or_default().starts_with("sha256:"));
    // A step that prints the password finds it masked in the streamed and the stored log.
    let out = server.run(&["run", "--cmd", &format!("busybox echo pw={password}"), "/dev/null"]);
    let all = text(&out);
    assert!(all.contains("pw=***") && !all.contains(&password), "{all}");
    let id = queued_id(&out);
    let stored = server.run(&["logs", &id]);
    assert!(!String::from_utf8_lossy(&stored.stdout).contains(&password));
}

/// `len` bytes that do not compress (xorshift), so an archive of them is as large as they are.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn requests_over_the_servers_limits_are_refused_naming_the_limit_and_exit_1() {
    let limits = ["--max-upload-mb", "1", "--max-context-mb", "2"];
    let server =
        Server::start_with("elim", 0, &[&["--registry", &registry()][..], &limits].concat());
    let uploads = || {
        std::fs::read_dir(server.data.join("uploads"))
            .map(|d| d.map_while(Result::ok).map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let task = "steps:\n  - cmd: busybox true\n";
    let context = |name: &str, bytes: Vec<u8>| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("acb.yaml"), task).expect("write");
        std::fs::write(dir.path().join(name), bytes).expect("write");
        dir
    };
    let noisy = context("noise.bin", noise(2 * 1024 * 1024));
    let zeros = context("zeros.bin", vec![0; 3 * 1024 * 1024]);
    let big_task = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(big_task.path(), format!("{task}# {}\n", "x".repeat(3 * 1024 * 1024)))
        .expect("write");
    let big_task = big_task.path().to_str().expect("utf-8").to_string();
    let cases = [
        // An archive over --max-upload-mb.
        (
            vec!["run", "--no-wait", noisy.path().to_str().expect("utf-8")],
            "the upload is larger than the server's limit of 1 MiB (--max-upload-mb)",
        ),
        // A small archive that unpacks beyond --max-context-mb.
        (
            vec!["run", "--no-wait", zeros.path().to_str().expect("utf-8")],
            "the unpacked context is larger than the server's limit of 2 MiB (--max-context-mb)",
        ),
        // A run request over the JSON limit: refused by the server...
        (
            vec!["run", "--no-wait", "-f", &big_task, "/dev/null"],
            "the request is larger than the server's limit of 2 MiB",
        ),
        // ... and by the client before it uploads a context the run would never use.
        (
            vec!["run", "--no-wait", "-f", &big_task, zeros.path().to_str().expect("utf-8")],
            "is larger than the server's limit of 2 MiB",
        ),
    ];
    for (args, error) in cases {
        let out = server.run(&args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
        assert!(all.contains(error), "{args:?}: {all}");
        assert!(!all.contains("dropped"), "{args:?}: {all}");
        assert_eq!(uploads(), Vec::<PathBuf>::new(), "{args:?}: nothing left behind");
    }
    let (status, body) = server.http("GET", "/runs", Some(&server.token), b"");
    assert_eq!((status, body.as_str()), (200, r#"{"value":[],"nextLink":null}"#));
}
