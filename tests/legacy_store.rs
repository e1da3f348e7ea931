//! A data directory written by a release from before the API's one vocabulary (issue 11),
//! opened by this one: `tests/fixtures/legacy-store/` was made by `make.sh` there with a main
//! build. Its run request and task definition are stored (in the clear and sealed) in the old
//! snake_case shape; this release lists and shows them in the current shape and runs both,
//! with the secrets they were stored with.

#[path = "support/server.rs"]
mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::{Value, json};
use support::Server;

const FIXTURE: &str = "tests/fixtures/legacy-store";

/// A copy of the fixture's data directory (the key made private again: git keeps no modes).
fn legacy_data_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in ["kiln.db", "secret.key"] {
        std::fs::copy(Path::new(FIXTURE).join(file), dir.path().join(file)).expect("copy");
    }
    let key = dir.path().join("secret.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let token = std::fs::read_to_string(Path::new(FIXTURE).join("token")).expect("token");
    (dir, token.trim().to_string())
}

fn log(server: &Server, id: &str) -> String {
    server.http("GET", &format!("/runs/{id}/log"), Some(&server.token), b"").1
}

#[test]
fn a_store_of_the_old_shape_lists_shows_and_runs_with_its_secrets() {
    let (dir, token) = legacy_data_dir();
    let server = Server::spawn("lg", dir.path(), 1, Some(token));

    // The quick run queued by the old release: listed and shown in the current shape, and run
    // (its sealed request opened) with its secret value.
    let (status, runs) = server.api("GET", "/runs", Value::Null);
    assert_eq!(status, 200, "{runs}");
    let listed = &runs["value"][0];
    assert_eq!(listed["runId"], "lg1", "{runs}");
    let request = &listed["request"];
    assert_eq!(request["type"], "EncodedTaskRunRequest", "{request}");
    assert_eq!(request["taskFileName"], "legacy.yaml", "{request}");
    assert_eq!(request["timeout"], 600, "{request}");
    assert_eq!(request["platform"], json!({"os": "linux", "architecture": "amd64"}));
    assert_eq!(request["values"], json!([{"name": "pw", "value": "***", "isSecret": true}]));
    assert!(request["encodedTaskContent"].is_string(), "{request}");
    let quick = server.finished("lg1");
    let text = log(&server, "lg1");
    assert_eq!(quick["status"], "Succeeded", "{quick}\n{text}");
    assert!(text.contains("quick-secret-ok"), "{text}");
    assert!(!text.contains("hunter2-legacy"), "{text}");

    // The task: shown in the current shape, secrets still write-only, its timer kept.
    let (status, task) = server.api("GET", "/tasks/legacy", Value::Null);
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["contextPath"], "/dev/null", "{task}");
    assert_eq!(task["timeout"], 900, "{task}");
    assert_eq!(task["platform"]["os"], "linux", "{task}");
    assert_eq!(task["step"]["taskFileName"], "task.yaml", "{task}");
    assert_eq!(task["values"][0]["isSecret"], true, "{task}");
    assert_eq!(task["values"][0]["value"], "***", "{task}");
    assert_eq!(task["credentials"][0]["loginServer"], "127.0.0.1:5001", "{task}");
    assert_eq!(task["credentials"][0]["password"], "***", "{task}");
    assert_eq!(task["timers"][0]["name"], "nightly", "{task}");
    assert_eq!(task["timers"][0]["status"], "Enabled", "{task}");
    let (status, tasks) = server.api("GET", "/tasks", Value::Null);
    assert_eq!((status, tasks["value"][0]["name"].as_str()), (200, Some("legacy")), "{tasks}");

    // It runs with the secret sealed by the old release.
    let (status, run) = server.api("POST", "/tasks/legacy/runs", json!({}));
    assert_eq!(status, 201, "{run}");
    let id = run["runId"].as_str().expect("run id").to_string();
    let run = server.finished(&id);
    let text = log(&server, &id);
    assert_eq!(run["status"], "Succeeded", "{run}\n{text}");
    assert!(text.contains("task-secret-ok"), "{text}");

    // An update rewrites the definition in the current shape and keeps the old secret.
    let (status, task) = server.api("PATCH", "/tasks/legacy", json!({"timeout": 1200}));
    assert_eq!((status, &task["timeout"]), (200, &json!(1200)), "{task}");
    let (_, run) = server.api("POST", "/tasks/legacy/runs", json!({}));
    let id = run["runId"].as_str().expect("run id").to_string();
    let run = server.finished(&id);
    assert_eq!(run["status"], "Succeeded", "{run}\n{}", log(&server, &id));
}
