//! The CLI's contract with its user, end to end against a real `kiln serve`: one exit-status
//! rule for every command (0 success, 1 refused or failed, 2 usage or local input), one line
//! per error, checks before uploads, the run commands `az acr task` has, what cancel and logs
//! say, and login through a terminal.

#[path = "support/server.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::process::{Command, Output, Stdio};

use support::{Server, queued_id, text};

/// `out` exited with `code` and said `needle`.
fn exits(out: &Output, code: i32, needle: &str, what: &str) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(code), "{what}: {all}");
    assert!(all.contains(needle), "{what}: {needle:?} not in: {all}");
}

/// Queues a one-command run without waiting; its ID.
fn queue(server: &Server) -> String {
    let out = server.run(&["run", "--cmd", "busybox true", "--no-wait", "/dev/null"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    queued_id(&out)
}

#[test]
fn every_command_exits_1_when_refused_and_2_on_local_mistakes() {
    // No workers: nothing queued here ever starts.
    let server = Server::start("ecx", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\n").expect("Dockerfile");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "steps:\n  - cmd: busybox true\n    timeOut: x\n    when: [nope]\n")
        .expect("bad task");
    let (ctx, empty, bad) =
        (ctx.display().to_string(), empty.display().to_string(), bad.display().to_string());
    let missing_task = format!("cannot find the task file missing.yaml (tried {ctx}/missing.yaml");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["logs", "nosuch"], 1, "run nosuch not found"),
        (vec!["show-run", "nosuch"], 1, "run nosuch not found"),
        (vec!["cancel-run", "nosuch"], 1, "run nosuch not found"),
        (vec!["task", "logs", "--run-id", "nosuch"], 1, "run nosuch not found"),
        (vec!["task", "show-run", "--run-id", "nosuch"], 1, "run nosuch not found"),
        (vec!["task", "cancel-run", "--run-id", "nosuch"], 1, "run nosuch not found"),
        (vec!["task", "list-runs", "-n", "nosuch"], 1, "task nosuch not found"),
        (vec!["list-runs", "--task", "nosuch"], 1, "task nosuch not found"),
        (vec!["task", "show", "-n", "nosuch"], 1, "task nosuch not found"),
        (vec!["task", "run", "-n", "nosuch"], 1, "task nosuch not found"),
        (vec!["build", "-t", "Bad:Tag", &ctx], 2, "-t Bad:Tag: "),
        (vec!["build", "-t", "ok:1", &empty], 2, "cannot find the Dockerfile Dockerfile"),
        (vec!["build", "-f", "Dockerfile.dev", &ctx], 2, "Dockerfile.dev"),
        (vec!["build", "/nonexistent/ctx"], 2, "the context /nonexistent/ctx is not a directory"),
        (vec!["run", "-f", "missing.yaml", &ctx], 2, &missing_task),
        (vec!["run", "-f", &bad, "/dev/null"], 2, "invalid"),
        (vec!["run", "-f", &bad, &ctx], 2, "invalid"),
        (vec!["exec", "-f", &bad], 2, "invalid"),
        (vec!["list-runs", "--status", "done"], 2, "expected one of"),
        (vec!["show-run"], 2, "RUN_ID"),
        (vec!["task", "show-run", "ka1", "--run-id", "ka1"], 2, "cannot be used with"),
    ];
    for (args, code, needle) in &cases {
        let out = server.run(args);
        exits(&out, *code, needle, &args.join(" "));
        if *code == 1 {
            assert_eq!(text(&out).trim().lines().count(), 1, "{args:?}: {}", text(&out));
        }
    }
    // Nothing was uploaded by the commands refused before their upload.
    let uploads = server.data.join("uploads");
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "uploads were sent");

    // What is sent goes to the kiln server, and says so.
    let out = server.run(&["run", "--cmd", "busybox true", "--no-wait", &ctx]);
    exits(&out, 0, &format!(") to the kiln server at {}...", server.url), "upload");
    assert!(!text(&out).contains("registry"), "{}", text(&out));

    let unreachable =
        server.kiln().env("KILN_SERVER", "http://127.0.0.1:9").arg("list-runs").output();
    exits(&unreachable.expect("kiln"), 1, "cannot reach the kiln server", "unreachable");
    let wrong = server.kiln().env("KILN_TOKEN", "kiln_wrong").arg("list-runs").output();
    exits(&wrong.expect("kiln"), 1, "the server rejected the API token", "wrong token");
    let none = server.kiln().env_remove("KILN_TOKEN").arg("list-runs").output().expect("kiln");
    exits(&none, 1, "not logged in", "no token");
    assert!(!text(&none).contains("rejected"), "{}", text(&none));
}

#[test]
fn an_error_cause_is_said_once() {
    let server = Server::start("ecy", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), "FROM busybox\n").expect("Dockerfile");
    std::fs::write(dir.path().join(".dockerignore"), "[\n").expect(".dockerignore");
    let out = server.run(&["build", "-t", "x:1", &dir.path().display().to_string()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("invalid ignore file"), "{all}");
    assert_eq!(all.matches("syntax error in pattern").count(), 1, "said once: {all}");
}

#[test]
fn cancel_and_logs_say_what_happened_and_queued_cancels_close_their_log() {
    let server = Server::start("ecz", 0);
    let id = queue(&server);
    // The log of a run that has not ended says so, and how to follow it.
    let out = server.run(&["logs", &id]);
    exits(
        &out,
        0,
        &format!("Run {id} is still queued: follow its log with `kiln logs {id} --follow`"),
        "logs",
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Waiting for an agent..."));

    let out = server.run(&["task", "cancel-run", "--run-id", &id]);
    exits(&out, 0, &format!("Run {id} canceled"), "cancel");
    let out = server.run(&["cancel-run", &id]);
    exits(&out, 1, "already finished", "second cancel");
    assert_eq!(text(&out).trim().lines().count(), 1, "{}", text(&out));

    let out = server.run(&["logs", &id]);
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    exits(&out, 0, "", "logs");
    let last = log.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("Run ID: {id} was canceled after "))
            && last.ends_with("Error: the run was canceled while waiting for an agent"),
        "{log}"
    );
    assert!(!text(&out).contains("still"), "{}", text(&out));
    let out = server.run(&["task", "show-run", "--run-id", &id, "-o", "json"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(run["status"], "Canceled", "{run}");
    assert_eq!(run["runErrorMessage"], "the run was canceled while waiting for an agent", "{run}");
    assert_eq!(run["logLength"].as_u64(), Some(log.len() as u64), "{run}");
    // The closing line is in the log the API serves, once.
    let (status, stored) = server.http("GET", &format!("/runs/{id}/log"), Some(&server.token), b"");
    assert_eq!(status, 200);
    assert_eq!(stored, log);

    let listed = server.run(&["task", "list-runs", "-o", "tsv"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("{id}\t")),
        "{}",
        text(&listed)
    );
}

/// Runs `kiln ARGS` on a terminal (`script` gives it a pty), typing `input` once `prompt`
/// shows and the terminal no longer echoes; everything the terminal showed, and the exit status.
fn on_terminal(server: &Server, args: &str, prompt: &str, input: &str) -> (String, Option<i32>) {
    // `tty` names the terminal first, so its echo flag can be read from here.
    let command = format!("tty; exec {} {args}", env!("CARGO_BIN_EXE_kiln"));
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KILN_SERVER", &server.url)
        .env_remove("KILN_TOKEN")
        .env("KILN_CLIENT_CONFIG", server.data.join("client.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut shown = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&shown).contains(prompt) {
        let n = stdout.read(&mut buf).expect("read the terminal");
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&shown));
        shown.extend_from_slice(&buf[..n]);
    }
    let tty = String::from_utf8_lossy(&shown).lines().next().unwrap_or_default().trim().to_string();
    // The prompt is written just before echo goes off: type only once it is off.
    let echo_off = (0..10_000).any(|_| {
        let mode = Command::new("stty").args(["-a", "-F", &tty]).output().expect("stty");
        let mode = String::from_utf8_lossy(&mode.stdout).into_owned();
        assert!(mode.contains("echo"), "no terminal mode for {tty}: {mode}");
        mode.split_whitespace().any(|flag| flag == "-echo")
    });
    assert!(echo_off, "the prompt left echo on");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("type");
    stdout.read_to_end(&mut shown).expect("read the terminal");
    drop(stdin);
    let status = child.wait().expect("script");
    (String::from_utf8_lossy(&shown).into_owned(), status.code())
}

#[test]
fn login_asks_for_the_token_without_echo_whoami_names_it_and_logout_forgets_it() {
    let server = Server::start("eca", 0);
    let kiln = |args: &[&str]| server.kiln().env_remove("KILN_TOKEN").args(args).output();
    exits(&kiln(&["whoami"]).expect("kiln"), 1, "not logged in", "whoami before login");

    let prompt = format!("API token for {}: ", server.url);
    let (shown, code) = on_terminal(&server, "login", &prompt, "kiln_wrong\n");
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("the server rejected the API token"), "{shown}");
    let (shown, code) = on_terminal(&server, "login", &prompt, &format!("{}\n", server.token));
    assert_eq!(code, Some(0), "{shown}");
    assert!(!shown.contains(&server.token), "the token was echoed: {shown}");
    assert!(shown.contains(&format!("Login succeeded for {} as admin (admin)", server.url)));

    let out = kiln(&["whoami"]).expect("kiln");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert_eq!(all, format!("Token:  admin\nRole:   admin\nServer: {}\n", server.url));
    let (status, body) = server.http("GET", "/whoami", Some(&server.token), b"");
    assert_eq!((status, body.as_str()), (200, r#"{"name":"admin","role":"admin"}"#));

    exits(&kiln(&["logout"]).expect("kiln"), 0, "Logged out of", "logout");
    exits(&kiln(&["whoami"]).expect("kiln"), 1, "not logged in", "whoami after logout");
    exits(&kiln(&["logout"]).expect("kiln"), 0, "Not logged in", "second logout");
}

#[test]
fn every_line_keeps_its_arrival_time_beside_the_log() {
    let server = Server::start("ect", 1);
    let out = server.run(&["run", "--cmd", "busybox echo hello-timed", "/dev/null"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let id = queued_id(&out);
    let plain = String::from_utf8(server.run(&["logs", &id]).stdout).expect("utf-8");
    let out = server.run(&["logs", &id, "--timestamps"]);
    assert!(out.status.success(), "{}", text(&out));
    let timed = String::from_utf8(out.stdout).expect("utf-8");
    // The stored log is untouched: each timed line is a plain line after its time, in order.
    let mut last = None;
    let mut stripped = Vec::new();
    for line in timed.lines() {
        let (time, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}: {timed}"));
        let time =
            chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(last.is_none_or(|l| l <= time), "out of order: {timed}");
        last = Some(time);
        stripped.push(rest);
    }
    assert_eq!(stripped, plain.lines().collect::<Vec<_>>(), "{timed}");
    // Container output stays as written; kiln's own lines carry ACR's stamp in the text.
    let output = plain.lines().find(|l| l.ends_with("| hello-timed")).expect(&plain);
    assert_eq!(output.split_once(" | ").map(|(_, text)| text), Some("hello-timed"), "{plain}");
    let executing = plain.lines().find(|l| l.contains("Executing step ID: ")).expect(&plain);
    let stamp = executing.split_once(" | ").map(|(_, t)| &t[..19]).expect(executing);
    assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y/%m/%d %H:%M:%S").is_ok(), "{plain}");
    // Offsets stay the plain log's: from a line's offset, the timed log starts with that line.
    let offset = plain.find(output).expect("offset");
    let path = format!("/runs/{id}/log?offset={offset}&timestamps=true");
    let (status, body) = server.http("GET", &path, Some(&server.token), b"");
    assert_eq!(status, 200, "{body}");
    let first = body.lines().next().and_then(|l| l.split_once(' ')).map(|(_, rest)| rest);
    assert_eq!(first, Some(output), "{body}");
    let out = server.run(&["logs", &id, "--timestamps", "--follow"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn rerun_runs_the_same_request_again_as_a_linked_run() {
    let server = Server::start("ecr", 1);
    let out = server.run(&["run", "--cmd", "busybox echo hello-again", "--no-wait", "/dev/null"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = queued_id(&out);
    assert_eq!(server.finished(&first)["status"], "Succeeded");
    let out = server.run(&["rerun", &first]);
    exits(&out, 0, &format!("(a re-run of {first})"), "rerun");
    let second = queued_id(&out);
    assert_ne!(second, first);
    let run = server.finished(&second);
    assert_eq!((&run["status"], &run["rerunOf"]), (&"Succeeded".into(), &first.clone().into()));
    let out = server.run(&["logs", &second]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-again"), "{}", text(&out));
    exits(&server.run(&["rerun", "nosuch"]), 1, "run nosuch not found", "unknown run");

    // The run list's filters, from the CLI.
    let ids = |filter: &[&str]| {
        let out = server.run(&[&["list-runs", "-o", "json"][..], filter].concat());
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let ids: Vec<String> = runs
            .as_array()
            .expect("a list")
            .iter()
            .map(|r| r["runId"].as_str().unwrap().into())
            .collect();
        ids
    };
    assert_eq!(ids(&["--trigger", "Manual"]), [second.as_str(), first.as_str()]);
    assert_eq!(ids(&["--search", &second]), [second.as_str()]);
    assert!(ids(&["--agent-pool", "nosuch"]).is_empty());
    assert!(ids(&["--branch", "main"]).is_empty(), "a /dev/null run has no branch");
}
