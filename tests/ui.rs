//! The web app end to end in a real browser: `web/tests/e2e.mjs` (Playwright's playwright-core
//! driving Debian's Chromium) against a real `kiln serve` with a real engine, filled here with a
//! finished run (ANSI colours and HTML markup in its log), a running run, and a task with a
//! secret. The script signs in, sees a run queued meanwhile appear and succeed live with its
//! steps listed, filters runs, checks colours, inert markup and line links, re-runs, watches
//! live lines and cancels, runs a task with an override, opens a log of a few MB by byte range
//! (its end, a far line link, fullscreen), checks every page on a phone-sized viewport for
//! horizontal overflow, and runs axe-core on every page; this test asserts its report: every
//! step passed, no console error, no serious or
//! critical accessibility violation. Screenshots go to `docs/` (see `docs/ui.md`).

#[path = "support/server.rs"]
mod support;

use std::process::{Command, Stdio};

use support::{Server, queued_id, text};

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const COLOURS: &str = r#"version: v1.1.0
steps:
  - id: colours
    cmd: busybox sh -c 'printf "plain\n\033[31mred-text\033[0m\nthird line\n<script>window.pwned=1</script><img src=x onerror=window.pwned=2>\n"'
"#;

const TICKS: &str = r#"version: v1.1.0
steps:
  - id: ticks
    cmd: busybox sh -c 'i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo tick-$i; sleep 1; done'
"#;

/// A log of a few MB (80,000 numbered lines): the run page must read it by range.
const BIG: &str = r#"version: v1.1.0
steps:
  - id: big
    cmd: busybox awk 'BEGIN { for (i = 1; i <= 80000; i++) printf "bigline %06d ..........................................\n", i }'
"#;

const GREETER: &str = r#"version: v1.1.0
steps:
  - id: greet
    cmd: busybox echo greeting={{.Values.greeting}}
"#;

#[test]
fn ui_signs_in_lists_follows_cancels_reruns_and_runs_a_task_in_a_browser() {
    let server = Server::start("kui", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = |name: &str, task: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, task).expect("task file");
        let out = server.run(&["run", "-f", file.to_str().unwrap(), "--no-wait", "/dev/null"]);
        assert!(out.status.success(), "{}", text(&out));
        queued_id(&out)
    };
    let done = queue("colours.yaml", COLOURS);
    assert_eq!(server.finished(&done)["status"], "Succeeded");
    let long = queue("ticks.yaml", TICKS);
    let big = queue("big.yaml", BIG);
    assert_eq!(server.finished(&big)["status"], "Succeeded");
    let greeter = dir.path().join("greeter.yaml");
    std::fs::write(&greeter, GREETER).expect("task file");
    let out = server.run(&[
        "task",
        "create",
        "-n",
        "greeter",
        "-c",
        "/dev/null",
        "-f",
        greeter.to_str().unwrap(),
        "--set",
        "greeting=hello",
        "--set-secret",
        "password=hunter2",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let shots = repo().join("docs");
    let out = Command::new("node")
        .arg("tests/e2e.mjs")
        .current_dir(repo().join("web"))
        .env("KILN_URL", &server.url)
        .env("KILN_TOKEN", &server.token)
        .env("DONE", &done)
        .env("LONG", &long)
        .env("BIG", &big)
        .env("TASK", "greeter")
        .env("SHOTS", &shots)
        .stdin(Stdio::null())
        .output()
        .expect("node (scripts/build-web.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{e}: no report from e2e.mjs:\n{}", text(&out)));
    assert_eq!(report["ok"], true, "{report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["consoleErrors"], serde_json::json!([]), "{report:#}");
    for (page, violations) in report["axe"].as_object().expect("axe results") {
        assert_eq!(violations, &serde_json::json!([]), "{page}: {report:#}");
    }
    assert_eq!(report["axe"].as_object().unwrap().len(), 6, "every page checked: {report:#}");
}
