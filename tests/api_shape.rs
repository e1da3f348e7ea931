//! `/openapi.json` describes exactly what the server sends: real answers of a live `kiln serve`
//! (every JSON GET endpoint, the answers of the writes, and error answers) validated with
//! `jsonschema` against the document's own response schemas, `$ref`s resolved into
//! `#/components/schemas`. Object schemas are closed for the check (`unevaluatedProperties:
//! false`), so a field the document does not declare fails as surely as a wrong type; and every
//! timestamp carries milliseconds.

#[path = "support/server.rs"]
mod support;

use std::collections::HashSet;
use std::process::Stdio;

use serde_json::{Value, json};
use support::{Server, queued_id, text};

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The document with its component schemas closed.
struct Document {
    doc: Value,
    components: Value,
}

impl Document {
    fn fetch(server: &Server) -> Document {
        let (status, body) = server.http("GET", "/openapi.json", None, b"");
        assert_eq!(status, 200, "{body}");
        let doc: Value = serde_json::from_str(&body).expect("OpenAPI JSON");
        let mut components = doc["components"].clone();
        let schemas = components["schemas"].as_object_mut().expect("component schemas");
        let members = all_of_members(&Value::Object(schemas.clone()));
        for (name, schema) in schemas.iter_mut() {
            close(schema, members.contains(name));
        }
        Document { doc, components }
    }

    /// Checks `answer` against the schema the document gives `method path` for `status`.
    fn check(&self, method: &str, path: &str, status: u16, answer: &Value) {
        let errors = self.errors(method, path, status, answer);
        assert!(errors.is_empty(), "{method} {path} {status}: {errors:#?}\n{answer:#}");
        millisecond_timestamps(answer);
    }

    /// What the schema finds wrong with `answer`.
    fn errors(&self, method: &str, path: &str, status: u16, answer: &Value) -> Vec<String> {
        let declared = &self.doc["paths"][path][method]["responses"][status.to_string()];
        let schema = &declared["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path}: no JSON schema for {status} in the document");
        let mut root = schema.clone();
        close(&mut root, false);
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["components"] = self.components.clone();
        let validator = jsonschema::validator_for(&root).expect("a valid schema");
        validator.iter_errors(answer).map(|e| format!("{} at {}", e, e.instance_path)).collect()
    }
}

/// Component names used directly as a member of an `allOf` (a flattened struct): closing them
/// would refuse the fields of the other members.
fn all_of_members(node: &Value) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        match node {
            Value::Object(map) => {
                for member in map.get("allOf").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(r) = member["$ref"].as_str() {
                        names.insert(r.trim_start_matches("#/components/schemas/").to_string());
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    names
}

/// Adds `unevaluatedProperties: false` to every object schema that is not itself a member of an
/// `allOf` (whose parent is closed instead, seeing all members' properties).
fn close(node: &mut Value, member: bool) {
    let Value::Object(map) = node else { return };
    let object = map.contains_key("properties") || map.contains_key("allOf");
    if object && !member && !map.contains_key("additionalProperties") {
        map.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "allOf" => child.as_array_mut().into_iter().flatten().for_each(|c| close(c, true)),
            "oneOf" | "anyOf" => {
                child.as_array_mut().into_iter().flatten().for_each(|c| close(c, member))
            }
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
                .for_each(|c| close(c, false)),
            "items" | "additionalProperties" => close(child, false),
            _ => {}
        }
    }
}

/// Every RFC 3339 time in `answer` has exactly milliseconds (`…:05.123Z`).
fn millisecond_timestamps(answer: &Value) {
    match answer {
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            let fraction = s.rsplit_once('.').map(|(_, f)| f);
            assert!(
                fraction.is_some_and(|f| f.len() == 4 && f.ends_with('Z')),
                "{s:?} is not a millisecond UTC timestamp"
            );
        }
        Value::Array(items) => items.iter().for_each(millisecond_timestamps),
        Value::Object(map) => map.values().for_each(millisecond_timestamps),
        _ => {}
    }
}

#[test]
fn every_answer_matches_the_openapi_document() {
    let server = Server::start("ash", 1);
    let doc = Document::fetch(&server);
    let get = |path: &str| {
        let (status, body) = server.api("GET", path, Value::Null);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    };

    // A Docker build that pushes: a run with output images and a dependency report.
    let out = server
        .kiln()
        .args(["build", "--no-wait", "-t", "kiln-api-shape:{{.Run.ID}}"])
        .arg(repo().join("examples/quick-build"))
        .stdin(Stdio::null())
        .output()
        .expect("kiln build");
    assert!(out.status.success(), "{}", text(&out));
    let built = queued_id(&out);
    let run = server.finished(&built);
    assert_eq!(run["status"], "Succeeded", "{run}");
    assert!(run["dependencies"][0]["runtimeDependency"].is_object(), "{run}");
    // The log keeps ACR's printed report (its keys, as YAML).
    let log = server.http("GET", &format!("/runs/{built}/log"), Some(&server.token), b"").1;
    assert!(
        log.contains("\n  runtime-dependency:\n") && !log.contains("runtimeDependency"),
        "{log}"
    );
    doc.check("get", "/runs/{id}", 200, &get(&format!("/runs/{built}")));
    doc.check("get", "/runs/{id}", 200, &get(&format!("/runs/{built}?wait=1")));
    // The check itself refuses what the document does not say: the old object-typed report,
    // an undeclared field, a field of a flattened part given the wrong type.
    let mut wrong = run.clone();
    wrong["dependencies"] = json!({"image": null});
    assert!(!doc.errors("get", "/runs/{id}", 200, &wrong).is_empty());
    let mut wrong = run.clone();
    wrong["run_id"] = json!("x");
    assert!(!doc.errors("get", "/runs/{id}", 200, &wrong).is_empty());
    let mut wrong = run.clone();
    wrong["dependencies"][0]["gitHeadRevision"] = json!("abc");
    assert!(!doc.errors("get", "/runs/{id}", 200, &wrong).is_empty());

    // A quick run of a task file sent in the request, with a secret value.
    let encoded = json!({"type": "EncodedTaskRunRequest", "source": {"kind": "none"},
        "encodedTaskContent": "c3RlcHM6CiAgLSBjbWQ6IGJ1c3lib3ggdHJ1ZQo=",
        "values": [{"name": "pw", "value": "s3cret", "isSecret": true}],
        "platform": {"os": "linux", "architecture": "amd64"}, "timeout": 600});
    let (status, queued) = server.api("POST", "/runs", encoded);
    doc.check("post", "/runs", status, &queued);
    assert_eq!(status, 201);

    // A task with timers, a secret and a login; its manual run; its timers.
    let task = json!({"name": "shape", "contextPath": "/dev/null",
        "step": {"type": "EncodedTask", "encodedTaskContent": "c3RlcHM6CiAgLSBjbWQ6IGJ1c3lib3ggdHJ1ZQo="},
        "values": [{"name": "pw", "value": "s3cret", "isSecret": true}],
        "credentials": [{"loginServer": "127.0.0.1:5001", "username": "u", "password": "p"}],
        "timers": [{"name": "nightly", "schedule": "0 3 * * *"}]});
    let (status, created) = server.api("POST", "/tasks", task.clone());
    doc.check("post", "/tasks", status, &created);
    assert_eq!(status, 201);
    let (status, timers) = server.api(
        "POST",
        "/tasks/shape/timers",
        json!({"name": "hourly", "schedule": "0 * * * *", "status": "Disabled"}),
    );
    doc.check("post", "/tasks/{name}/timers", status, &timers);
    let (status, updated) = server.api("PATCH", "/tasks/shape", json!({"timeout": 900}));
    doc.check("patch", "/tasks/{name}", status, &updated);
    // A git context has ACR's nested source trigger (none without one, as above).
    let git = json!({"name": "shape-git", "contextPath": "https://127.0.0.1:9/o/r.git#main",
        "step": {"type": "FileTask", "taskFilePath": "acb.yaml"},
        "trigger": {"sourceTriggers": [{"sourceTriggerEvents": ["pullrequest"]}]}});
    let (status, created) = server.api("POST", "/tasks", git);
    doc.check("post", "/tasks", status, &created);
    assert_eq!(created["trigger"]["sourceTriggers"][0]["status"], "Enabled", "{created}");
    let patch = json!({"trigger": {"baseImageTrigger": {"status": "Disabled"}}});
    let (status, updated) = server.api("PATCH", "/tasks/shape-git", patch);
    doc.check("patch", "/tasks/{name}", status, &updated);
    assert_eq!(updated["trigger"]["baseImageTrigger"]["status"], "Disabled", "{updated}");
    assert_eq!(updated["trigger"]["sourceTriggers"], created["trigger"]["sourceTriggers"]);
    let (status, timers) =
        server.api("PATCH", "/tasks/shape/timers/hourly", json!({"status": "Enabled"}));
    doc.check("patch", "/tasks/{name}/timers/{timer}", status, &timers);
    let (status, run) = server.api("POST", "/tasks/shape/runs", json!({}));
    doc.check("post", "/tasks/{name}/runs", status, &run);
    let task_run = run["runId"].as_str().expect("run id").to_string();
    server.finished(&task_run);

    // Every JSON GET.
    doc.check("get", "/runs", 200, &get("/runs"));
    doc.check("get", "/runs", 200, &get("/runs?top=1"));
    doc.check("get", "/runs", 200, &get("/runs?task=shape&top=0"));
    doc.check("get", "/runs/{id}", 200, &get(&format!("/runs/{task_run}")));
    doc.check("get", "/tasks", 200, &get("/tasks"));
    let shown = get("/tasks/shape");
    doc.check("get", "/tasks/{name}", 200, &shown);
    let mut wrong = shown.clone();
    wrong["timeout_secs"] = json!(900);
    assert!(!doc.errors("get", "/tasks/{name}", 200, &wrong).is_empty(), "closed over allOf");
    doc.check("get", "/tasks/{name}/timers", 200, &get("/tasks/shape/timers"));

    // Errors: unauthorized, not found, an invalid task file, conflicts, bad input.
    let (status, body) = server.http("GET", "/runs", None, b"");
    doc.check("get", "/runs", status, &serde_json::from_str(&body).expect("JSON"));
    assert_eq!(status, 401);
    let (status, missing) = server.api("GET", "/runs/ash999", Value::Null);
    doc.check("get", "/runs/{id}", status, &missing);
    assert_eq!((status, &missing["error"]["code"]), (404, &json!("RunNotFound")));
    let (status, missing) = server.api("GET", "/tasks/nope", Value::Null);
    doc.check("get", "/tasks/{name}", status, &missing);
    assert_eq!((status, &missing["error"]["code"]), (404, &json!("TaskNotFound")));
    let bad = json!({"type": "EncodedTaskRunRequest", "source": {"kind": "none"},
        "taskFileName": "bad.yaml",
        "encodedTaskContent": "c3RlcHM6CiAgLSBjbWQ6IGJ1c3lib3ggdHJ1ZQogICAgd2hlbjogWyJub3BlIl0K"});
    let (status, invalid) = server.api("POST", "/runs", bad);
    doc.check("post", "/runs", status, &invalid);
    assert_eq!((status, &invalid["error"]["code"]), (400, &json!("InvalidTaskFile")), "{invalid}");
    assert!(invalid["error"]["details"][0]["line"].is_number(), "{invalid}");
    let (status, taken) = server.api("POST", "/tasks", task);
    doc.check("post", "/tasks", status, &taken);
    assert_eq!((status, &taken["error"]["code"]), (409, &json!("TaskExists")));
    let (status, done) = server.api("POST", &format!("/runs/{built}/cancel"), Value::Null);
    doc.check("post", "/runs/{id}/cancel", status, &done);
    assert_eq!((status, &done["error"]["code"]), (409, &json!("RunAlreadyFinished")));
    let (status, timeout) = server.api(
        "POST",
        "/runs",
        json!({"type": "FileTaskRunRequest", "source": {"kind": "none"}, "timeout": 5}),
    );
    doc.check("post", "/runs", status, &timeout);
    assert_eq!((status, &timeout["error"]["code"]), (400, &json!("BadRequest")));
}

#[test]
fn agent_registry_answers_match_the_openapi_document() {
    let server = Server::start("asa", 0);
    let doc = Document::fetch(&server);
    let body = json!({"name": "shape-agent", "pool": "arm", "labels": {"disk": "ssd"}});
    let (status, created) = server.api("POST", "/agents", body.clone());
    doc.check("post", "/agents", status, &created);
    assert_eq!(status, 201, "{created}");
    let (status, taken) = server.api("POST", "/agents", body);
    doc.check("post", "/agents", status, &taken);
    assert_eq!((status, &taken["error"]["code"]), (409, &json!("AgentExists")));
    let (status, bad) = server.api("POST", "/agents", json!({"name": "a b"}));
    doc.check("post", "/agents", status, &bad);
    let (status, agents) = server.api("GET", "/agents", Value::Null);
    doc.check("get", "/agents", status, &agents);
    let (status, agent) = server.api("GET", "/agents/shape-agent", Value::Null);
    doc.check("get", "/agents/{name}", status, &agent);
    let (status, missing) = server.api("GET", "/agents/nope", Value::Null);
    doc.check("get", "/agents/{name}", status, &missing);
    let (status, updated) =
        server.api("PATCH", "/agents/shape-agent", json!({"labels": {"zone": "b"}}));
    doc.check("patch", "/agents/{name}", status, &updated);
    let (status, pools) = server.api("GET", "/agentPools", Value::Null);
    doc.check("get", "/agentPools", status, &pools);
    assert_eq!(pools["value"], json!([{"name": "arm", "agentCount": 1, "queuedRunCount": 0}]));

    let token = created["token"].as_str().expect("the token");
    let (status, me) = server.http("GET", "/agent/whoami", Some(token), b"");
    doc.check("get", "/agent/whoami", status, &serde_json::from_str(&me).expect("JSON"));
    let (status, refused) = server.http("GET", "/agent/whoami", Some(&server.token), b"");
    doc.check("get", "/agent/whoami", status, &serde_json::from_str(&refused).expect("JSON"));
    assert_eq!(status, 401);
    let (status, gone) = server.http("DELETE", "/agents/shape-agent", Some(&server.token), b"");
    assert_eq!((status, gone.as_str()), (204, ""));
    assert!(doc.doc["paths"]["/agents/{name}"]["delete"]["responses"]["204"].is_object());
}
