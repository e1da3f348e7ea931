//! `kiln task …` end to end: the real binary as server and as CLI, over loopback HTTP, with a
//! fresh data directory per server, on the engine `scripts/test-env.sh` starts (the image of
//! `KILN_TEST_IMAGE`, busybox).

#[path = "support/git.rs"]
mod git;
#[path = "support/server.rs"]
mod support;

use std::path::Path;

use serde_json::Value;
use support::{Server, json, ok, queued_id, refused, text};

fn image() -> String {
    std::env::var("KILN_TEST_IMAGE").unwrap_or_else(|_| "busybox:latest".to_string())
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn assert_nowhere_on_disk(server: &Server, secret: &str) {
    let files = files(&server.data);
    assert!(files.iter().any(|f| f.to_string_lossy().contains(".db")), "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{} holds the secret in the clear", file.display());
    }
}

#[test]
fn a_cmd_task_with_timers_runs_manually_and_keeps_its_secret() {
    let server = Server::start("etk", 1);
    let secret = "sup3r-s3cret-task-value";
    let cmd = format!("{} echo hello-from-task", image());
    let out = server.run(&[
        "task",
        "create",
        "-n",
        "hello",
        "-c",
        "/dev/null",
        "--cmd",
        &cmd,
        "--schedule",
        "0 3 1 1 *",
        "--schedule",
        "30 4 2 1 *",
        "--set",
        "plain=visible",
        "--set-secret",
        &format!("pw={secret}"),
    ]);
    let created = json(&out);
    assert_eq!(created["name"], "hello", "{created}");

    let task = json(&server.run(&["task", "show", "-n", "hello", "-o", "json"]));
    let timers = task["timers"].as_array().expect("timers");
    let names: Vec<&str> = timers.iter().map(|t| t["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["t1", "t2"], "{task}");
    for timer in timers {
        assert!(timer["nextFireTime"].is_string(), "{task}");
    }
    assert_eq!(timers[0]["schedule"], "0 3 1 1 *", "{task}");
    let url = task["webhook"]["url"].as_str().expect("webhook url");
    assert!(url.ends_with("/webhooks/hello"), "{task}");
    let webhook_secret = task["webhook"]["secret"].as_str().expect("webhook secret");
    assert!(webhook_secret.len() >= 16, "{task}");
    assert_eq!(task["step"]["type"], "EncodedTask", "{task}");

    // The table shows the webhook's URL, not its secret.
    let table = ok(&server.run(&["task", "show", "-n", "hello", "-o", "table"]));
    assert!(table.contains(url), "{table}");
    assert!(!table.contains(webhook_secret), "{table}");
    assert!(table.contains("plain=visible"), "{table}");
    let list = ok(&server.run(&["task", "list"]));
    assert!(list.contains("NAME   PLATFORM  STATUS   SOURCE REPOSITORY  TRIGGERS"), "{list}");
    assert!(
        list.contains("hello  linux     Enabled  /dev/null          BASE_IMAGE, TIMER"),
        "{list}"
    );

    let out = server.run(&["task", "run", "-n", "hello"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("hello-from-task"), "{all}");
    let id = queued_id(&out);
    assert!(all.contains(&format!("Run ID: {id} was successful after")), "{all}");

    let runs = ok(&server.run(&["task", "list-runs", "-n", "hello", "-o", "tsv"]));
    let row: Vec<&str> = runs.lines().next().expect("a run").split('\t').collect();
    assert_eq!((row[0], row[1], row[3], row[4]), (id.as_str(), "hello", "Succeeded", "Manual"));
    let table = ok(&server.run(&["task", "list-runs", "-n", "hello"]));
    assert!(table.starts_with("RUN ID"), "{table}");
    assert!(table.contains("Manual"), "{table}");
    assert_eq!(server.show(&id)["runType"], "AutoRun");

    let logs = ok(&server.run(&["task", "logs", "-n", "hello"]));
    assert!(logs.contains("hello-from-task"), "{logs}");
    assert!(logs.contains(&format!("Run ID: {id}")), "{logs}");
    let by_id = ok(&server.run(&["task", "logs", "--run-id", &id]));
    assert_eq!(by_id, logs);

    // The secret value is write-only: not in any answer, not on disk in the clear.
    for args in [
        &["task", "show", "-n", "hello", "-o", "json"][..],
        &["task", "show", "-n", "hello", "-o", "table"],
        &["task", "list", "-o", "json"],
        &["task", "list", "-o", "table"],
        &["task", "list", "-o", "tsv"],
        &["show-run", &id],
    ] {
        let out = text(&server.run(args));
        assert!(!out.contains(secret), "{args:?} shows the secret:\n{out}");
    }
    assert!(text(&server.run(&["task", "show", "-n", "hello", "-o", "table"])).contains("pw=***"));
    assert_nowhere_on_disk(&server, secret);
}

#[test]
fn timers_are_added_changed_listed_and_removed() {
    let server = Server::start("etm", 0);
    let out = server.run(&["task", "create", "-n", "tick", "-c", "/dev/null", "--cmd", "x y"]);
    ok(&out);
    let list = ok(&server.run(&["task", "timer", "list", "-n", "tick"]));
    assert_eq!(
        list,
        "NAME  SCHEDULE  ENABLED  NEXT FIRE (UTC)\n----  --------  -------  ---------------\n"
    );

    let out = server.run(&[
        "task",
        "timer",
        "add",
        "-n",
        "tick",
        "--timer-name",
        "nightly",
        "--schedule",
        "0 2 * * *",
    ]);
    assert!(ok(&out).contains("nightly  0 2 * * *  true"), "{}", text(&out));
    let timers = json(&server.run(&["task", "timer", "list", "-n", "tick", "-o", "json"]));
    assert_eq!(timers[0]["name"], "nightly", "{timers}");
    assert!(
        timers[0]["nextFireTime"].as_str().unwrap_or("").ends_with("T02:00:00.000Z"),
        "{timers}"
    );

    let out = server.run(&[
        "task",
        "timer",
        "update",
        "-n",
        "tick",
        "--timer-name",
        "nightly",
        "--schedule",
        "15 5 * * Mon-Fri",
        "--enabled",
        "false",
    ]);
    ok(&out);
    let list = ok(&server.run(&["task", "timer", "list", "-n", "tick"]));
    let row = list.lines().nth(2).expect("a timer");
    assert_eq!(row, "nightly  15 5 * * Mon-Fri  false", "{list}");
    let tasks = ok(&server.run(&["task", "list", "-o", "tsv"]));
    assert_eq!(tasks, "tick\tlinux\tEnabled\t/dev/null\tBASE_IMAGE\n", "a disabled timer");

    let out = server.run(&["task", "timer", "update", "-n", "tick", "--timer-name", "nightly"]);
    refused(&out, 2, "nothing to change");
    let out = server.run(&[
        "task",
        "timer",
        "add",
        "-n",
        "tick",
        "--timer-name",
        "bad",
        "--schedule",
        "0 2 * *",
    ]);
    refused(&out, 2, "has 4 fields");
    let out = server.run(&["task", "timer", "remove", "-n", "tick", "--timer-name", "nope"]);
    refused(&out, 1, "nope");

    let out = server.run(&["task", "timer", "remove", "-n", "tick", "--timer-name", "nightly"]);
    ok(&out);
    let timers = json(&server.run(&["task", "timer", "list", "-n", "tick", "-o", "json"]));
    assert_eq!(timers, Value::Array(vec![]));
}

#[test]
fn refusals_are_one_line_with_the_right_exit_status() {
    let server = Server::start("eter", 0);
    // A bad schedule is caught before any request: exit 2, the field count named.
    let out = server.run(&[
        "task",
        "create",
        "-n",
        "bad",
        "-c",
        "/dev/null",
        "--cmd",
        "x y",
        "--schedule",
        "* * * * * *",
    ]);
    refused(&out, 2, "has 6 fields");
    assert_eq!(json(&server.run(&["task", "list", "-o", "json"])), Value::Array(vec![]));

    refused(&server.run(&["task", "show", "-n", "nope"]), 1, "task nope not found");
    refused(&server.run(&["task", "run", "-n", "nope"]), 1, "task nope not found");
    refused(&server.run(&["task", "logs", "-n", "nope"]), 1, "task nope not found");

    let create = ["task", "create", "-n", "dup", "-c", "/dev/null", "--cmd", "x y"];
    ok(&server.run(&create));
    refused(&server.run(&create), 1, "already exists");
    refused(&server.run(&["task", "logs", "-n", "dup"]), 1, "has no runs");
    // The server's own checks: a timeout out of range is its 400, one line.
    let out = server.run(&["task", "update", "-n", "dup", "--timeout", "5"]);
    refused(&out, 1, "timeout must be between");

    ok(&server.run(&["task", "update", "-n", "dup", "--status", "Disabled"]));
    let list = ok(&server.run(&["task", "list"]));
    assert!(list.lines().any(|l| l.starts_with("dup ") && l.contains("Disabled")), "{list}");

    // Standard input is no terminal here: deleting needs --yes.
    refused(&server.run(&["task", "delete", "-n", "dup"]), 2, "--yes");
    ok(&server.run(&["task", "show", "-n", "dup"]));
    ok(&server.run(&["task", "delete", "-n", "dup", "--yes"]));
    refused(&server.run(&["task", "show", "-n", "dup"]), 1, "task dup not found");
    refused(&server.run(&["task", "delete", "-n", "dup", "-y"]), 1, "task dup not found");
}

#[test]
fn registry_logins_are_added_listed_and_removed_without_showing_passwords() {
    let server = Server::start("ecrd", 0);
    ok(&server.run(&["task", "create", "-n", "cred", "-c", "/dev/null", "--cmd", "x y"]));
    let password = "pa55-w0rd-never-shown";
    let mut add = server.kiln();
    add.args(["task", "credential", "add", "-n", "cred", "--login-server", "reg.local:5000"])
        .args(["-u", "builder", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = add.spawn().expect("kiln");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(ok(&out).contains("reg.local:5000  builder"), "{}", text(&out));
    let listed = json(&server.run(&["task", "credential", "list", "-n", "cred", "-o", "json"]));
    assert_eq!(listed[0]["password"], "***", "{listed}");
    let shown = ok(&server.run(&["task", "show", "-n", "cred", "-o", "json"]));
    assert!(!shown.contains(password), "{shown}");
    assert_nowhere_on_disk(&server, password);
    let out = server.run(&[
        "task",
        "credential",
        "remove",
        "-n",
        "cred",
        "--login-server",
        "reg.local:5000",
    ]);
    assert!(!ok(&out).contains("reg.local"), "{}", text(&out));
}

/// `task run -f` and `--target` pick another Dockerfile and stage in the task's own context for
/// one run, as `az acr task run` does; a file of the other kind is refused and queues nothing.
#[test]
fn a_manual_run_takes_another_dockerfile_and_stage() {
    let server = Server::start("etf", 1);
    let root = git::Root::new();
    let repo = git::Repo::init();
    let base = image();
    repo.commit_file("Dockerfile", &format!("FROM {base}\nRUN echo from-the-default\n"), "a");
    let other = format!(
        "FROM {base} AS one\nRUN echo built-stage-one\nFROM {base} AS two\nRUN echo built-stage-two\n"
    );
    repo.commit_file("ci/Other.dockerfile", &other, "b");
    repo.push(&root.bare("app"), "main");
    let context = format!("{}#main", root.file_url("app"));
    let tag = "kiln-task-file:{{.Run.ID}}";
    let create = ["task", "create", "-n", "app", "-c", &context, "-f", "Dockerfile", "-t", tag];
    ok(&server.run(&[&create[..], &["--no-push"]].concat()));

    let run = ["task", "run", "-n", "app", "-f", "ci/Other.dockerfile", "--target", "one"];
    let log = ok(&server.run(&run));
    assert!(log.contains("built-stage-one"), "{log}");
    assert!(!log.contains("built-stage-two") && !log.contains("from-the-default"), "{log}");
    // The override was for that run only.
    let log = ok(&server.run(&["task", "run", "-n", "app"]));
    assert!(log.contains("from-the-default"), "{log}");

    let out = server.run(&["task", "run", "-n", "app", "-f", "ci/acb.yaml"]);
    refused(&out, 1, "\"ci/acb.yaml\" is a task file, but this task builds a Dockerfile");
    let runs = json(&server.run(&["task", "list-runs", "-n", "app", "-o", "json"]));
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
}

#[test]
fn a_manual_run_takes_another_platform_and_pool_and_refuses_an_unknown_platform() {
    // No agent: the run stays queued, so its record shows where it would go.
    let server = Server::start("etp", 0);
    let create = ["task", "create", "-n", "app", "-c", "/dev/null", "--cmd", "busybox true"];
    ok(&server.run(&[&create[..], &["--agent-pool", "builders"]].concat()));
    let run = ["task", "run", "-n", "app", "--no-wait", "--platform", "linux/arm64"];
    let id = queued_id(&server.run(&[&run[..], &["--agent-pool", "arm"]].concat()));
    let record = server.show(&id);
    assert_eq!(record["platform"]["architecture"], "arm64", "{record}");
    assert_eq!(record["agentPoolName"], "arm", "{record}");
    // Without overrides the task's own pool and platform apply.
    let id = queued_id(&server.run(&["task", "run", "-n", "app", "--no-wait"]));
    let record = server.show(&id);
    assert_eq!(
        (&record["platform"]["architecture"], &record["agentPoolName"]),
        (&"amd64".into(), &"builders".into()),
        "{record}"
    );

    let out = server.run(&["task", "run", "-n", "app", "--platform", "arm64"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("unknown OS \"arm64\"; expected os/arch[/variant]"),
        "{}",
        text(&out)
    );
    let runs = json(&server.run(&["task", "list-runs", "-n", "app", "-o", "json"]));
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
}

/// A repository whose task file prints `fetched-over-ssh`, served by its own sshd; the context
/// naming its `main` branch.
fn ssh_repository() -> (git::Root, git::SshServer, String) {
    let root = git::Root::new();
    let repo = git::Repo::init();
    repo.commit_file("msg.txt", "fetched-over-ssh\n", "msg");
    repo.commit_file("acb.yaml", "steps:\n  - cmd: busybox cat /workspace/msg.txt\n", "task");
    repo.push(&root.bare("app"), "main");
    let sshd = git::SshServer::start();
    let context = format!("{}#main", sshd.url(&root.bare("app")));
    (root, sshd, context)
}

/// A task on an SSH remote (`ssh://user@host:port/path`): with the server's key but the host not
/// yet in its known_hosts, the run ends in Error with the command that adds it; once that command
/// ran, the next run fetches over SSH, without a restart.
#[test]
fn a_task_on_an_ssh_remote_runs_once_its_host_is_known() {
    let (_root, sshd, context) = ssh_repository();
    let dir = tempfile::tempdir().expect("tempdir");
    let known_hosts = dir.path().join("known_hosts");
    let key = sshd.client_key();
    let args = [
        "--registry",
        &support::registry(),
        "--git-ssh-key",
        key.to_str().expect("UTF-8 path"),
        "--git-known-hosts",
        known_hosts.to_str().expect("UTF-8 path"),
    ];
    let server = Server::start_with("essh", 1, &args);
    ok(&server.run(&["task", "create", "-n", "viassh", "-c", &context, "-f", "acb.yaml"]));

    let out = server.run(&["task", "run", "-n", "viassh"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let advice = format!("ssh-keyscan -p {} 127.0.0.1 >> {}", sshd.port(), known_hosts.display());
    assert!(all.contains(&format!("is not in {}", known_hosts.display())), "{all}");
    assert!(all.contains(&advice), "{all}");
    let keyscan = std::process::Command::new("sh").args(["-c", &advice]).output().expect("sh");
    assert!(keyscan.status.success(), "{}", text(&keyscan));

    let log = ok(&server.run(&["task", "run", "-n", "viassh"]));
    assert!(log.contains("fetched-over-ssh"), "{log}");
    let runs = json(&server.run(&["task", "list-runs", "-n", "viassh", "-o", "json"]));
    let statuses: Vec<&str> = runs
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["Succeeded", "Error"], "{runs}");
}

/// A task's own SSH key (`--ssh-key-file`, e.g. a repository's deploy key) fetches where the
/// server has none. It is write-only and sealed at rest; a task without a key is told what to
/// configure; `--ssh-key-file ""` removes it.
#[test]
fn a_tasks_own_ssh_key_fetches_and_stays_secret() {
    let (_root, sshd, context) = ssh_repository();
    let dir = tempfile::tempdir().expect("tempdir");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).expect("known_hosts");
    let known_hosts = known_hosts.to_str().expect("UTF-8 path");
    let args = ["--registry", &support::registry(), "--git-known-hosts", known_hosts];
    let server = Server::start_with("esshk", 1, &args);
    let key = sshd.client_key();
    let key = key.to_str().expect("UTF-8 path");
    let create = ["task", "create", "-c", &context, "-f", "acb.yaml", "-n"];
    ok(&server.run(&[&create[..], &["keyed", "--ssh-key-file", key]].concat()));
    ok(&server.run(&[&create[..], &["keyless"]].concat()));

    let log = ok(&server.run(&["task", "run", "-n", "keyed"]));
    assert!(log.contains("fetched-over-ssh"), "{log}");
    let out = server.run(&["task", "run", "-n", "keyless"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("an SSH remote needs an SSH key: the task's"), "{}", text(&out));

    let shown = json(&server.run(&["task", "show", "-n", "keyed", "-o", "json"]));
    assert_eq!(shown["gitSshKey"], "***", "{shown}");
    let table = ok(&server.run(&["task", "show", "-n", "keyed", "-o", "table"]));
    assert!(table.contains("Git SSH key:"), "{table}");
    let private = std::fs::read_to_string(key).expect("key");
    let body = private.lines().nth(1).expect("the key's first base64 line");
    assert_nowhere_on_disk(&server, body);

    // Keys an unattended fetch cannot use are refused when given, by the CLI and by the API.
    let locked = dir.path().join("locked");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
        .arg(&locked)
        .output()
        .expect("ssh-keygen");
    assert!(keygen.status.success(), "{}", text(&keygen));
    let locked = locked.to_str().expect("UTF-8 path");
    let out = server.run(&["task", "update", "-n", "keyed", "--ssh-key-file", locked]);
    refused(&out, 2, "the key is protected by a passphrase");
    let (status, answer) = server.api(
        "PATCH",
        "/tasks/keyed",
        serde_json::json!({"gitSshKey": "ssh-ed25519 AAAA a public key"}),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("gitSshKey: not an OpenSSH private key"), "{answer}");
    ok(&server.run(&["task", "update", "-n", "keyed", "--ssh-key-file", ""]));
    let shown = json(&server.run(&["task", "show", "-n", "keyed", "-o", "json"]));
    assert!(shown.get("gitSshKey").is_none(), "{shown}");
}
