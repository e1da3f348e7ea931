//! `kiln agent …` and `kiln agent-pool list` end to end (issue 12): the real binary as server
//! and as CLI over loopback HTTP, a fresh data directory per server, no workers (nothing here
//! runs a step). The store-level rules (deleting an agent ends its runs, fencing) are tested in
//! `src/store/tests.rs` and `src/server/tests.rs`.

#[path = "support/server.rs"]
mod support;

use serde_json::{Value, json};
use support::{Server, json, ok, refused, text};

/// `kiln agent create …`: the agent's JSON, and the token from the last line of stdout.
fn create(server: &Server, args: &[&str]) -> (Value, String) {
    let out = server.run(&[&["agent", "create"], args].concat());
    let stdout = ok(&out);
    let (agent, token) = stdout.trim_end().rsplit_once('\n').expect("the agent, then the token");
    let agent: Value = serde_json::from_str(agent).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(token.starts_with("kiln_agent_") && !token.contains(' '), "alone: {token:?}");
    assert_eq!(text(&out).matches(token).count(), 1, "shown once: {}", text(&out));
    (agent, token.to_string())
}

/// Whether any file of the server's data directory holds `needle`.
fn on_disk(server: &Server, needle: &str) -> bool {
    std::fs::read_dir(&server.data).expect("data dir").map_while(Result::ok).any(|entry| {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

#[test]
fn agents_are_created_listed_shown_updated_and_deleted_through_the_cli() {
    let server = Server::start("eag", 0);
    let (agent, token) =
        create(&server, &["--name", "arm-1", "--pool", "arm", "--labels", "disk=ssd,zone=b"]);
    assert_eq!(agent["name"], "arm-1", "{agent}");
    assert_eq!(agent["pool"], "arm", "{agent}");
    assert_eq!(agent["labels"], json!({"disk": "ssd", "zone": "b"}), "{agent}");
    assert_eq!(agent["runsInHand"], 0, "{agent}");
    assert_eq!(agent["platforms"], json!([]), "{agent}");
    assert!(agent.get("token").is_none(), "the token is on its own line only: {agent}");
    assert!(!on_disk(&server, &token), "only the token's hash is stored");

    // The table form of create, for a second agent without a pool.
    let out = server.run(&["agent", "create", "-n", "box", "-o", "table"]);
    let stdout = ok(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "Name:          box", "{stdout}");
    assert!(lines.last().is_some_and(|l| l.starts_with("kiln_agent_")), "{stdout}");

    let table = ok(&server.run(&["agent", "list"]));
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(
        rows[0],
        "NAME   KIND    POOL  LABELS           PLATFORMS  CAPACITY  RUNS IN HAND  VERSION  \
         LAST SEEN",
        "{table}"
    );
    let arm = format!("arm-1  remote  arm   disk=ssd,zone=b{}0", " ".repeat(23));
    assert_eq!(rows[2], arm, "{table}");
    assert_eq!(rows[3], format!("box    remote{}0", " ".repeat(46)), "{table}");
    let tsv = ok(&server.run(&["agent", "list", "-o", "tsv"]));
    assert_eq!(tsv, "arm-1\tremote\tarm\tdisk=ssd,zone=b\t\t\t0\t\t\nbox\tremote\t\t\t\t\t0\t\t\n");
    let listed = json(&server.run(&["agent", "list", "-o", "json"]));
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["arm-1", "box"], "{listed}");

    let shown = json(&server.run(&["agent", "show", "--name", "arm-1"]));
    assert_eq!(shown, agent, "show gives what create gave");
    let table = ok(&server.run(&["agent", "show", "-n", "arm-1", "-o", "table"]));
    assert!(table.contains("Pool:          arm\n"), "{table}");
    assert!(table.contains("Labels:        disk=ssd,zone=b\n"), "{table}");

    // Only what is given changes; "" takes the agent out of its pool.
    let updated = json(&server.run(&["agent", "update", "-n", "arm-1", "--pool", "big"]));
    assert_eq!((&updated["pool"], &updated["labels"]["disk"]), (&json!("big"), &json!("ssd")));
    let updated = json(&server.run(&["agent", "update", "-n", "arm-1", "--labels", "gpu=none"]));
    assert_eq!((&updated["pool"], &updated["labels"]), (&json!("big"), &json!({"gpu": "none"})));
    let pools = ok(&server.run(&["agent-pool", "list"]));
    assert_eq!(pools, "NAME  AGENTS  QUEUED RUNS\n----  ------  -----------\nbig   1       0\n");
    let pools = json(&server.run(&["agent-pool", "list", "-o", "json"]));
    assert_eq!(pools, json!([{"name": "big", "agentCount": 1, "queuedRunCount": 0}]));
    let updated =
        json(&server.run(&["agent", "update", "-n", "arm-1", "--pool", "", "--labels", ""]));
    assert!(updated.get("pool").is_none(), "{updated}");
    assert_eq!(updated["labels"], json!({}), "{updated}");
    assert_eq!(ok(&server.run(&["agent-pool", "list", "-o", "tsv"])), "");

    // Deleting asks, as `task delete` does; the token stops working at once.
    let out = server.run(&["agent", "delete", "-n", "arm-1"]);
    refused(&out, 2, "deleting agent arm-1 needs confirmation: pass --yes");
    let (status, _) = server.http("GET", "/agent/whoami", Some(&token), b"");
    assert_eq!(status, 200, "not deleted without --yes");
    let out = server.run(&["agent", "delete", "-n", "arm-1", "--yes"]);
    ok(&out);
    assert!(text(&out).contains("Deleted agent arm-1."), "{}", text(&out));
    let (status, _) = server.http("GET", "/agent/whoami", Some(&token), b"");
    assert_eq!(status, 401, "a deleted agent's token is refused");
    refused(&server.run(&["agent", "show", "-n", "arm-1"]), 1, "agent arm-1 not found");
    refused(&server.run(&["agent", "delete", "-n", "arm-1", "-y"]), 1, "agent arm-1 not found");
}

#[test]
fn an_agent_token_passes_only_the_agent_protocol_and_an_api_token_not_that() {
    let server = Server::start("eat", 0);
    let (_, token) = create(&server, &["-n", "lonely", "--pool", "p1", "--labels", "os=linux"]);

    let (status, body) = server.http("GET", "/agent/whoami", Some(&token), b"");
    assert_eq!(status, 200, "{body}");
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me, json!({"name": "lonely", "pool": "p1", "labels": {"os": "linux"}}));
    let (status, body) = server.http("GET", "/agent/whoami", Some(&server.token), b"");
    assert_eq!(status, 401, "the admin's token is no agent's: {body}");
    let (status, _) = server.http("GET", "/agent/whoami", None, b"");
    assert_eq!(status, 401);

    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let run = json!({"type": "EncodedTaskRunRequest", "source": {"kind": "none"},
        "encodedTaskContent": "c3RlcHM6CiAgLSBjbWQ6IGJ1c3lib3ggZWNobyBoaQo="});
    let task = json!({"name": "t", "contextPath": "/dev/null",
        "step": {"type": "EncodedTask", "encodedTaskContent": "c3RlcHM6IFtdCg=="}});
    for (method, path, body) in [
        ("GET", "/runs", Value::Null),
        ("POST", "/runs", run),
        ("GET", "/tasks", Value::Null),
        ("POST", "/tasks", task),
        ("GET", "/whoami", Value::Null),
        ("GET", "/agents", Value::Null),
        ("POST", "/agents", json!({"name": "sneaky"})),
        ("GET", "/agentPools", Value::Null),
    ] {
        let (status, answer) =
            server.http_with(method, path, &headers, body.to_string().as_bytes());
        assert_eq!(status, 401, "{method} {path}: {answer}");
    }
    let (_, runs) = server.api("GET", "/runs", Value::Null);
    assert_eq!(runs["value"], json!([]), "nothing was queued");
    let (_, agents) = server.api("GET", "/agents", Value::Null);
    assert_eq!(agents["value"].as_array().map(Vec::len), Some(1), "{agents}");

    // The CLI with an agent token is refused like any bad token.
    let out = server.kiln().env("KILN_TOKEN", &token).args(["list-runs"]).output().unwrap();
    refused(&out, 1, "the server rejected the API token");
}

#[test]
fn taken_names_bad_names_and_bad_labels_are_refused_clearly() {
    let server = Server::start("ear", 0);
    create(&server, &["-n", "dup"]);
    refused(&server.run(&["agent", "create", "-n", "dup"]), 1, "an agent named dup already exists");
    let (status, body) = server.api("POST", "/agents", json!({"name": "dup"}));
    assert_eq!((status, &body["error"]["code"]), (409, &json!("AgentExists")), "{body}");

    // Checked before anything is sent: exit status 2.
    refused(
        &server.run(&["agent", "create", "-n", "a/b"]),
        2,
        "agent name \"a/b\" is invalid: use 1-50 letters, digits, '-' or '_'",
    );
    refused(
        &server.run(&["agent", "create", "-n", "ok", "--pool", "p q"]),
        2,
        "pool name \"p q\" is invalid",
    );
    let out = server.run(&["agent", "create", "-n", "ok", "--labels", "disk"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("label \"disk\" is not key=value"), "{}", text(&out));
    let out = server.run(&["agent", "update", "-n", "dup", "--labels", "a=1,a=2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("label a is given twice"), "{}", text(&out));
    refused(&server.run(&["agent", "update", "-n", "dup"]), 2, "nothing to change");

    // The server checks the same rules for every client.
    for (body, needle) in [
        (json!({"name": "a b"}), "agent name \"a b\" is invalid"),
        (json!({"name": "ok", "pool": ""}), "pool name \"\" is invalid"),
        (json!({"name": "ok", "labels": {"bad key": "v"}}), "label key \"bad key\" is invalid"),
        (json!({"name": "ok", "extra": 1}), "unknown field `extra`"),
    ] {
        let (status, answer) = server.api("POST", "/agents", body.clone());
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {answer}");
    }
    let (status, answer) = server.api("PATCH", "/agents/nope", json!({"pool": "x"}));
    assert_eq!((status, &answer["error"]["code"]), (404, &json!("AgentNotFound")), "{answer}");
    refused(
        &server.run(&["agent", "update", "-n", "nope", "--pool", "x"]),
        1,
        "agent nope not found",
    );
    let (_, agents) = server.api("GET", "/agents", Value::Null);
    assert_eq!(agents["value"].as_array().map(Vec::len), Some(1), "nothing else was stored");
}

#[test]
fn the_embedded_agent_is_listed_as_its_servers_and_only_that_server_changes_it() {
    let server = Server::start("eem", 2);
    // A run it took: the agent has asked for work, so it has reported what it runs.
    let out = server.run(&["run", "--cmd", "busybox true", "/dev/null"]);
    ok(&out);
    let ran = server.show(&support::queued_id(&out));
    let name = ran["agentName"].as_str().expect("the embedded agent's name").to_string();

    let listed = json(&server.run(&["agent", "list", "-o", "json"]));
    let agent = &listed.as_array().expect("a list")[..];
    assert_eq!(agent.len(), 1, "{listed}");
    let agent = &agent[0];
    assert_eq!(agent["name"], name.as_str(), "{agent}");
    assert_eq!(agent["kind"], "embedded", "{agent}");
    assert!(
        agent["server"].as_str().is_some_and(|s| s.ends_with(&format!(" pid {}", server.pid()))),
        "{agent}"
    );
    assert_eq!((&agent["capacity"], &agent["runsInHand"]), (&json!(2), &json!(0)), "{agent}");
    // The engine's own platform, then those the kernel emulates: the test environment
    // registers qemu-aarch64 in binfmt_misc with the F flag.
    let declared: Vec<Value> = agent["platforms"].as_array().expect("platforms").clone();
    assert_eq!(declared[0], json!({"os": "linux", "architecture": "amd64"}), "{agent}");
    assert!(declared.contains(&json!({"os": "linux", "architecture": "arm64"})), "{agent}");
    assert!(agent.get("pool").is_none() && agent["lastSeen"].is_string(), "{agent}");
    assert_eq!(agent["version"], env!("CARGO_PKG_VERSION"), "{agent}");
    assert_eq!(json(&server.run(&["agent", "show", "-n", &name])), *agent);
    let table = ok(&server.run(&["agent", "list"]));
    let row: Vec<&str> = table.lines().nth(2).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..2], [name.as_str(), "embedded"], "{table}");
    assert!(row[2].starts_with("linux/amd64,") && row[2].contains("linux/arm64"), "{table}");
    // It takes runs of no pool, so it is in none.
    assert_eq!(ok(&server.run(&["agent-pool", "list", "-o", "tsv"])), "");

    let owner = "is the embedded agent of the server process";
    refused(&server.run(&["agent", "delete", "-n", &name, "-y"]), 1, owner);
    let out = server.run(&["agent", "update", "-n", &name, "--pool", "big"]);
    refused(&out, 1, "kiln serve --agent-name");
    assert_eq!(json(&server.run(&["agent", "show", "-n", &name]))["kind"], "embedded");
}
