//! Tasks fired by their triggers, end to end: the real `kiln serve` with real git servers
//! (`git http-backend` behind token auth, `git daemon`, file://), deliveries in each git host's
//! own format and signature, a CNCF distribution registry sending push notifications, and the
//! real engine. (Timer firing is driven with chosen instants in `src/server/timers.rs`; the
//! wall-clock behaviour is measured by `cargo bench --bench triggers`.)

#[path = "support/git.rs"]
mod git;
#[path = "support/registry.rs"]
mod registry_support;
#[path = "support/server.rs"]
mod support;
#[path = "support/webhooks.rs"]
mod webhooks;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;
use webhooks::Delivery;

const TOKEN: &str = "glpat-s3cr3t-t0ken";

fn log(server: &Server, id: &str) -> String {
    let auth = format!("Bearer {}", server.token);
    server.http_with("GET", &format!("/runs/{id}/log"), &[("authorization", &auth)], b"").1
}

/// The task's runs, newest first.
fn runs_of(server: &Server, task: &str) -> Vec<Value> {
    let (status, runs) = server.api("GET", &format!("/runs?task={task}&top=0"), Value::Null);
    assert_eq!(status, 200, "{runs}");
    runs["value"].as_array().cloned().unwrap_or_default()
}

/// Waits (bounded) until the task has `n` runs; they are returned newest first.
fn wait_for_runs(server: &Server, task: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = runs_of(server, task);
        if runs.len() >= n {
            return runs;
        }
        assert!(Instant::now() < deadline, "task {task} has {} runs, not {n}", runs.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_task(server: &Server, body: Value) -> Value {
    let (status, task) = server.api("POST", "/tasks", body);
    assert_eq!(status, 201, "{task}");
    task
}

/// POSTs a delivery to the task's webhook URL.
fn deliver(server: &Server, task: &Value, delivery: &Delivery) -> (u16, Value) {
    let url = task["webhook"]["url"].as_str().expect("webhook url");
    let path = url.strip_prefix(&server.url).expect("the webhook URL is this server's");
    let mut headers = delivery.header_pairs();
    headers.push(("content-type", "application/json"));
    let (status, text) = server.http_with("POST", path, &headers, &delivery.body);
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn secret(task: &Value) -> String {
    task["webhook"]["secret"].as_str().expect("webhook secret").to_string()
}

const TASK_FILE: &str = "version: v1.1.0\nsteps:\n  - cmd: busybox cat /workspace/msg.txt\n  - cmd: busybox echo commit={{.Run.Commit}} branch={{.Run.Branch}}\n";

#[test]
fn pushes_build_each_commit_once_through_a_private_http_repository() {
    let server = Server::start("wpush", 2);
    let root = git::Root::new();
    let http = git::GitHttp::start(root.path(), Some(TOKEN));
    let bare = root.bare("app");
    let repo = git::Repo::init();
    repo.commit_file("acb.yaml", TASK_FILE, "task");
    let mut commits = Vec::new();
    for version in ["v1", "v2", "v3"] {
        let sha = repo.commit_file("msg.txt", &format!("message {version}\n"), version);
        repo.push(&bare, "main:main");
        commits.push((version, sha));
    }
    let url = http.url("app");
    let task = create_task(
        &server,
        json!({"name": "app", "contextPath": format!("{url}#main"),
               "step": {"type": "FileTask", "taskFilePath": "acb.yaml"},
               "contextAccessToken": TOKEN}),
    );
    assert_eq!(task["contextAccessToken"], "***", "{task}");
    let secret = secret(&task);

    // The deliveries of three pushes arrive after the last push (each names its own commit):
    // every run builds the commit its push named (ACR built the oldest: Azure/acr#152).
    let deliveries = [
        webhooks::github_push(&url, "main", &commits[0].1).signed(&secret),
        webhooks::gitlab_push(&url, "main", &commits[1].1).signed(&secret),
        webhooks::gitea_push(&url, "main", &commits[2].1).signed(&secret),
    ];
    let mut ids = Vec::new();
    for delivery in &deliveries {
        let (status, answer) = deliver(&server, &task, delivery);
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["status"], "queued", "{answer}");
        ids.push(answer["runId"].as_str().expect("run id").to_string());
    }
    for ((version, sha), id) in commits.iter().zip(&ids) {
        let run = server.finished(id);
        let text = log(&server, id);
        assert_eq!(run["status"], "Succeeded", "{run}\n{text}");
        assert!(text.contains(&format!("message {version}")), "{text}");
        assert!(text.contains(&format!("commit={sha} branch=main")), "{text}");
        assert_eq!(run["trigger"], "Commit", "{run}");
        assert_eq!(run["sourceTrigger"]["commitId"], sha.as_str(), "{run}");
        assert_eq!(run["sourceTrigger"]["eventType"], "commit", "{run}");
        assert_eq!(run["sourceTrigger"]["branchName"], "main", "{run}");
        assert!(!text.contains(TOKEN) && !run.to_string().contains(TOKEN), "{run}\n{text}");
    }
    let (_, provider) = (0, runs_of(&server, "app"));
    let providers: Vec<&str> =
        provider.iter().map(|r| r["sourceTrigger"]["providerType"].as_str().unwrap()).collect();
    assert_eq!(providers, ["Gitea", "GitLab", "GitHub"]);

    // A redelivery, and the same commit in a fresh delivery, queue nothing.
    let (status, answer) = deliver(&server, &task, &deliveries[0]);
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    let again = webhooks::github_push(&url, "main", &commits[2].1).signed(&secret);
    let (status, answer) = deliver(&server, &task, &again);
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    // Another branch, a ping: nothing to build.
    let other = webhooks::github_push(&url, "feature", &commits[2].1).signed(&secret);
    let (status, answer) = deliver(&server, &task, &other);
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")), "{answer}");
    assert!(answer["reason"].as_str().unwrap().contains("follows main"), "{answer}");
    let (status, _) = deliver(&server, &task, &webhooks::github_ping(&url).signed(&secret));
    assert_eq!(status, 200);

    // Bad inputs: a wrong signature, no signature, malformed JSON, an unknown task.
    let forged = webhooks::github_push(&url, "main", "f".repeat(40).as_str()).signed("guess");
    let (status, forged_answer) = deliver(&server, &task, &forged);
    assert_eq!(status, 401, "{forged_answer}");
    assert!(
        forged_answer["error"]["message"].as_str().unwrap().contains("bad signature"),
        "{forged_answer}"
    );
    let unsigned = webhooks::github_push(&url, "main", "e".repeat(40).as_str());
    let (status, unsigned_answer) = deliver(&server, &task, &unsigned);
    assert_eq!(status, 401, "{unsigned_answer}");
    let mut malformed = webhooks::github_push(&url, "main", &commits[0].1);
    malformed.body = b"{\"ref\": \"refs/heads/main\",".to_vec();
    let (status, answer) = deliver(&server, &task, &malformed.signed(&secret));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("not valid JSON"), "{answer}");
    let stranger = json!({"webhook": {"url": format!("{}/webhooks/nobody", server.url)}});
    // An unknown task answers as a known one does, so the URL does not reveal task names.
    assert_eq!(deliver(&server, &stranger, &deliveries[0]), (401, forged_answer));
    assert_eq!(deliver(&server, &stranger, &unsigned), (401, unsigned_answer));
    assert_eq!(runs_of(&server, "app").len(), 3, "nothing else was queued");
    assert!(http.rejected() > 0 || http.requests() > 0);
}

#[test]
fn pull_requests_build_their_head_refs() {
    let server = Server::start("wpull", 2);
    let root = git::Root::new();
    let daemon = git::GitDaemon::start(root.path());
    let bare = root.bare("lib");
    let repo = git::Repo::init();
    repo.commit_file("acb.yaml", TASK_FILE, "task");
    repo.commit_file("msg.txt", "on main\n", "main");
    repo.push(&bare, "main:main");
    repo.branch("topic");
    repo.checkout("topic");
    let github_head = repo.commit_file("msg.txt", "pull request 1\n", "pr 1");
    repo.push(&bare, "topic:refs/pull/1/head");
    let gitlab_head = repo.commit_file("msg.txt", "merge request 2\n", "mr 2");
    repo.push(&bare, "topic:refs/merge-requests/2/head");
    let url = daemon.url("lib");
    // Through the CLI this time, as an admin sets up a hook.
    let context = format!("{url}#main");
    let out = server.run(&["task", "create", "-n", "lib", "-c", &context, "-f", "acb.yaml"]);
    assert!(out.status.success(), "{}", support::text(&out));
    let out =
        server.run(&["task", "update", "-n", "lib", "--pull-request-trigger-enabled", "true"]);
    assert!(out.status.success(), "{}", support::text(&out));
    let out = server.run(&["task", "show", "-n", "lib", "-o", "json"]);
    let task: Value = serde_json::from_slice(&out.stdout).expect("task JSON");
    // The update named one event; the commit event stays on.
    let events = &task["trigger"]["sourceTriggers"][0]["sourceTriggerEvents"];
    assert_eq!(*events, json!(["commit", "pullrequest"]), "{task}");
    let secret = secret(&task);
    let cases = [
        (webhooks::github_pull_request(&url, 1, &github_head, "main", "opened"), "pull request 1"),
        (webhooks::gitlab_merge_request(&url, 2, &gitlab_head, "main", "open"), "merge request 2"),
    ];
    for (delivery, expected) in cases {
        let (status, answer) = deliver(&server, &task, &delivery.signed(&secret));
        assert_eq!(status, 202, "{answer}");
        let id = answer["runId"].as_str().unwrap();
        let run = server.finished(id);
        let text = log(&server, id);
        assert_eq!(run["status"], "Succeeded", "{run}\n{text}");
        assert!(text.contains(expected), "{text}");
        assert_eq!(run["trigger"], "Pull Request", "{run}");
    }
    // A request into another branch builds nothing; nor does one when the trigger is off.
    let elsewhere = webhooks::github_pull_request(&url, 3, &github_head, "release", "opened");
    let (status, answer) = deliver(&server, &task, &elsewhere.signed(&secret));
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")), "{answer}");
    let (status, _) = server.api(
        "PATCH",
        "/tasks/lib",
        json!({"trigger": {"sourceTriggers": [{"sourceTriggerEvents": ["commit"]}]}}),
    );
    assert_eq!(status, 200);
    let again = webhooks::github_pull_request(&url, 1, &gitlab_head, "main", "synchronize");
    let (status, answer) = deliver(&server, &task, &again.signed(&secret));
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")), "{answer}");
    assert_eq!(runs_of(&server, "lib").len(), 2);
    let out = server.run(&["task", "list-runs", "-n", "lib", "-o", "tsv"]);
    let listed = support::text(&out);
    let triggers: Vec<&str> = listed.lines().filter_map(|l| l.split('\t').nth(4)).collect();
    assert_eq!(triggers, ["Pull Request", "Pull Request"], "{listed}");
}

#[test]
fn a_context_that_does_not_resolve_ends_its_run_in_error() {
    let server = Server::start("wgone", 1);
    let task = create_task(
        &server,
        json!({"name": "gone", "contextPath": "http://127.0.0.1:9/nothing.git#main",
               "step": {"type": "FileTask"}, "contextAccessToken": TOKEN}),
    );
    assert_eq!(task["name"], "gone");
    let (status, run) = server.api("POST", "/tasks/gone/runs", json!({}));
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["trigger"], "Manual");
    assert_eq!(run["runType"], "AutoRun");
    let id = run["runId"].as_str().unwrap();
    let run = server.finished(id);
    assert_eq!(run["status"], "Error", "{run}");
    let message = run["runErrorMessage"].as_str().unwrap();
    assert!(message.contains("cannot fetch the source: git fetch of"), "{message}");
    assert!(message.contains("127.0.0.1:9/nothing.git"), "{message}");
    assert!(!message.contains(TOKEN) && !log(&server, id).contains(TOKEN), "{message}");
    // The stored run keeps the token sealed: not in the database file in the clear.
    let db = std::fs::read(server.data.join("kiln.db")).unwrap();
    let wal = std::fs::read(server.data.join("kiln.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "token stored in the clear"
        );
    }
}

/// A Dockerfile task on a file:// repository that builds `FROM <registry>/<base>` and pushes.
fn base_image_task(server: &Server, name: &str, registry: &str, base: &str) -> git::Root {
    let root = git::Root::new();
    let bare = root.bare(name);
    let repo = git::Repo::init();
    repo.commit_file("Dockerfile", &format!("FROM {registry}/{base}\nRUN echo built\n"), "df");
    repo.push(&bare, "main:main");
    create_task(
        server,
        json!({"name": name, "contextPath": format!("{}#main", root.file_url(name)),
               "step": {"type": "Docker", "imageNames": [format!("{registry}/{name}-app:{{{{.Run.ID}}}}")]}}),
    );
    root
}

/// Pushes a new image (different content each call) as `reference`.
fn push_new_content(reference: &str, label: &str) -> String {
    push_new_content_as(None, reference, label)
}

/// [`push_new_content`] with the docker CLI configuration in `config` (a registry login).
fn push_new_content_as(config: Option<&std::path::Path>, reference: &str, label: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM busybox\nLABEL kiln.test={label}\n"),
    )
    .unwrap();
    registry_support::docker(&["build", "-q", "-t", reference, &dir.path().to_string_lossy()]);
    let Some(config) = config else { return registry_support::docker_push(reference) };
    let out = std::process::Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(["push", reference])
        .output()
        .expect("docker push");
    let text = support::text(&out);
    assert!(out.status.success(), "{text}");
    let digest = text.split_whitespace().skip_while(|w| *w != "digest:").nth(1);
    digest.unwrap_or_else(|| panic!("no digest: {text}")).to_string()
}

fn image_update_runs(server: &Server, task: &str) -> Vec<Value> {
    runs_of(server, task).into_iter().filter(|r| r["trigger"] == "Image Update").collect()
}

#[test]
fn registry_notifications_trigger_once_per_base_image_change() {
    let server = Server::start("wbase", 2);
    let auth = format!("Bearer {}", server.token);
    let registry = registry_support::NotifyingRegistry::start(
        &format!("{}/registry/events", server.url),
        &auth,
    );
    let base = format!("{}/kiln-base:1", registry.addr);
    let first = push_new_content(&base, "one");
    let _repo = base_image_task(&server, "onbase", &registry.addr, "kiln-base:1");
    let (status, run) = server.api("POST", "/tasks/onbase/runs", json!({}));
    assert_eq!(status, 201, "{run}");
    let run = server.finished(run["runId"].as_str().unwrap());
    assert_eq!(
        run["status"],
        "Succeeded",
        "{run}\n{}",
        log(&server, run["runId"].as_str().unwrap())
    );
    let (_, task) = server.api("GET", "/tasks/onbase", Value::Null);
    let deps = &task["baseImageDependencies"];
    assert_eq!(deps[0]["type"], "RunTime", "{task}");
    assert_eq!(deps[0]["repository"], "kiln-base", "{task}");
    assert_eq!(deps[0]["digest"], first.as_str(), "{task}");

    // An identical re-push moves nothing. The registry sends its events in order, so once the
    // run of the next (real) change exists, the re-push's event was handled before it.
    registry_support::docker_push(&base);
    let second = push_new_content(&base, "two");
    assert_ne!(first, second);
    let runs = wait_for_runs(&server, "onbase", 2);
    let updates = image_update_runs(&server, "onbase");
    assert_eq!(updates.len(), 1, "{runs:?}");
    let id = updates[0]["runId"].as_str().unwrap();
    let run = server.finished(id);
    let text = log(&server, id);
    assert_eq!(run["status"], "Succeeded", "{run}\n{text}");
    assert_eq!(run["imageUpdateTrigger"]["images"][0]["digest"], second.as_str(), "{run}");
    assert!(text.contains(&format!("Pulling image: {base}")), "the new base is pulled:\n{text}");
    let (_, task) = server.api("GET", "/tasks/onbase", Value::Null);
    assert_eq!(task["baseImageDependencies"][0]["digest"], second.as_str(), "{task}");

    // A notification without the token is refused, a malformed one rejected; neither changes
    // anything.
    let (status, _) = server.http_with("POST", "/registry/events", &[], b"{\"events\":[]}");
    assert_eq!(status, 401);
    let (status, answer) = server.http_with(
        "POST",
        "/registry/events",
        &[("authorization", &auth)],
        b"{\"events\": [",
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("line 1"), "the error says where: {answer}");
    assert_eq!(runs_of(&server, "onbase").len(), 2, "{}", registry.log().len());
}

#[test]
fn polling_notices_a_moved_base_image_tag() {
    let registry = support::registry();
    let server =
        Server::start_with("wpoll", 1, &["--registry", &registry, "--base-image-poll", "1"]);
    let unique = format!("kiln-poll-{}", std::process::id());
    let base = format!("{registry}/{unique}:1");
    push_new_content(&base, "first");
    let _repo = base_image_task(&server, "polled", &registry, &format!("{unique}:1"));
    let (_, run) = server.api("POST", "/tasks/polled/runs", json!({}));
    let run = server.finished(run["runId"].as_str().unwrap());
    assert_eq!(run["status"], "Succeeded", "{run}");
    let moved = push_new_content(&base, "second");
    let runs = wait_for_runs(&server, "polled", 2);
    assert_eq!(runs[0]["trigger"], "Image Update", "{runs:?}");
    assert_eq!(runs[0]["imageUpdateTrigger"]["images"][0]["digest"], moved.as_str());
    let run = server.finished(runs[0]["runId"].as_str().unwrap());
    assert_eq!(run["status"], "Succeeded", "{run}");

    // A tag that moves while no server runs is noticed by the first poll after the start, not
    // an interval later (an hour here).
    let prefix = server.prefix.clone();
    let (data, token, dir) = server.kill9();
    let moved = push_new_content(&base, "third");
    let args = ["--registry", registry.as_str(), "--base-image-poll", "3600"];
    let mut server = Server::spawn_with(&prefix, &data, 1, Some(token), &args);
    server._dir = dir;
    let runs = wait_for_runs(&server, "polled", 3);
    assert_eq!(runs[0]["trigger"], "Image Update", "{runs:?}");
    assert_eq!(runs[0]["imageUpdateTrigger"]["images"][0]["digest"], moved.as_str());
}

#[test]
fn a_task_pushes_with_its_own_registry_login_and_never_shows_the_password() {
    let registry = std::env::var("KILN_TEST_AUTH_REGISTRY").unwrap_or("127.0.0.1:5001".into());
    let user = std::env::var("KILN_TEST_REGISTRY_USER").unwrap_or("kiln".into());
    let password =
        std::env::var("KILN_TEST_REGISTRY_PASSWORD").unwrap_or("kiln-test-password".into());
    let server = Server::start_with("wcred", 1, &[]);
    let root = git::Root::new();
    let bare = root.bare("pushed");
    let repo = git::Repo::init();
    repo.commit_file("Dockerfile", "FROM busybox\nRUN echo built\n", "df");
    repo.push(&bare, "main:main");
    let task = create_task(
        &server,
        json!({"name": "pushed", "contextPath": format!("{}#main", root.file_url("pushed")),
               "step": {"type": "Docker", "imageNames": [format!("{registry}/kiln-cred:{{{{.Run.ID}}}}")]},
               "credentials": [{"loginServer": registry, "username": user, "password": password}]}),
    );
    assert_eq!(task["credentials"][0]["password"], "***", "{task}");
    let (status, run) = server.api("POST", "/tasks/pushed/runs", json!({}));
    assert_eq!(status, 201, "{run}");
    let id = run["runId"].as_str().unwrap();
    let run = server.finished(id);
    let text = log(&server, id);
    assert_eq!(run["status"], "Succeeded", "{run}\n{text}");
    assert_eq!(run["runType"], "AutoBuild", "{run}");
    assert_eq!(run["outputImages"][0]["repository"], "kiln-cred", "{run}");
    let (_, shown) = server.api("GET", "/tasks/pushed", Value::Null);
    let (_, listed) = server.api("GET", "/tasks", Value::Null);
    for seen in [text, run.to_string(), shown.to_string(), listed.to_string()] {
        assert!(!seen.contains(&password), "the password shows: {seen}");
    }
    // Removing the login makes the next push fail: the login was what let it through.
    let (status, task) =
        server.api("PATCH", "/tasks/pushed", json!({"removeCredentials": [registry]}));
    assert_eq!(status, 200, "{task}");
    assert!(task.get("credentials").is_none(), "{task}");
    let (_, run) = server.api("POST", "/tasks/pushed/runs", json!({}));
    let run = server.finished(run["runId"].as_str().unwrap());
    assert_eq!(run["status"], "Failed", "{run}");
}

#[test]
fn polling_asks_a_private_registry_with_the_tasks_login() {
    let registry = std::env::var("KILN_TEST_AUTH_REGISTRY").unwrap_or("127.0.0.1:5001".into());
    let user = std::env::var("KILN_TEST_REGISTRY_USER").unwrap_or("kiln".into());
    let password =
        std::env::var("KILN_TEST_REGISTRY_PASSWORD").unwrap_or("kiln-test-password".into());
    let config = tempfile::tempdir().unwrap();
    let mut login = std::process::Command::new("docker")
        .arg("--config")
        .arg(config.path())
        .args(["login", &registry, "-u", &user, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker login");
    std::io::Write::write_all(&mut login.stdin.take().unwrap(), password.as_bytes()).unwrap();
    assert!(login.wait().unwrap().success());
    let base = format!("{registry}/kiln-private-{}:1", std::process::id());
    push_new_content_as(Some(config.path()), &base, "first");

    // The server has no login for this registry: the task's own is what the poll must use.
    let server = Server::start_with("wpriv", 1, &["--base-image-poll", "1"]);
    let root = git::Root::new();
    let bare = root.bare("private");
    let repo = git::Repo::init();
    repo.commit_file("Dockerfile", &format!("FROM {base}\nRUN echo built\n"), "df");
    repo.push(&bare, "main:main");
    create_task(
        &server,
        json!({"name": "private", "contextPath": format!("{}#main", root.file_url("private")),
               "step": {"type": "Docker", "imageNames": []},
               "credentials": [{"loginServer": registry, "username": user, "password": password}]}),
    );
    let (_, run) = server.api("POST", "/tasks/private/runs", json!({}));
    let id = run["runId"].as_str().unwrap().to_string();
    let run = server.finished(&id);
    assert_eq!(run["status"], "Succeeded", "{run}\n{}", log(&server, &id));
    let moved = push_new_content_as(Some(config.path()), &base, "second");
    let runs = wait_for_runs(&server, "private", 2);
    assert_eq!(runs[0]["trigger"], "Image Update", "{runs:?}");
    assert_eq!(runs[0]["imageUpdateTrigger"]["images"][0]["digest"], moved.as_str());
    let id = runs[0]["runId"].as_str().unwrap().to_string();
    let run = server.finished(&id);
    let text = log(&server, &id);
    assert_eq!(run["status"], "Succeeded", "{run}\n{text}");
    assert!(!text.contains(&password), "{text}");
}
