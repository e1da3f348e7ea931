//! kiln's parser against the task files in the repository: every example and every valid case
//! loads and plans; every invalid case is rejected with the message its header names (the same
//! cases `tests/schema.rs` runs through the JSON Schema, so schema and parser agree). Then the
//! `kiln validate` / `kiln render` binaries, as a user runs them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::TimeZone as _;
use kiln_plan::plan::{Action, RunId};
use kiln_task::config::Config;
use kiln_task::diagnostic::Diagnostics;
use kiln_task::plan::{Planned, plan_file};
use kiln_task::render::{RunVars, TemplateData};
use kiln_task::task::load::LoadOptions;
use kiln_task::values::{Values, merge_values};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no task files in {}", dir.display());
    files
}

/// Loads a task file the way `kiln render` does, with the values file next to it if any.
fn plan(path: &Path, strict: bool) -> Result<Planned, Diagnostics> {
    let text = fs::read_to_string(path).expect("task file");
    let dir = path.parent().expect("parent");
    let values = match dir.join("values.yaml") {
        v if v.exists() => Values::load(&v).expect("values file"),
        _ => Values::default(),
    };
    let mut run = RunVars::new(
        RunId::new("ka1"),
        chrono::Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).single().expect("date"),
    );
    run.registry = "127.0.0.1:5000".into();
    let data =
        TemplateData { run, values: merge_values(values, &[]).values, secrets: BTreeMap::new() };
    let images = Config::default().image_aliases();
    let opts = LoadOptions {
        data: &data,
        images: &images,
        base_dir: dir,
        alias_fetch_timeout: std::time::Duration::from_millis(500),
    };
    plan_file(&text, &opts, Vec::new(), strict)
}

#[test]
fn every_example_plans_without_a_warning() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("acb.yaml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 6, "{dirs:?}");
    for dir in dirs {
        let planned = plan(&dir.join("acb.yaml"), true)
            .unwrap_or_else(|d| panic!("{}: {d:#?}", dir.display()));
        assert!(!planned.plan.steps.is_empty());
    }
}

#[test]
fn every_valid_case_plans() {
    for path in yaml_files(&repo().join("tests/cases/valid")) {
        if let Err(d) = plan(&path, false) {
            panic!("{}: {d:#?}", path.display());
        }
    }
}

/// The value of a `# name: value` header line of a case.
fn header<'t>(text: &'t str, name: &str, path: &Path) -> &'t str {
    let prefix = format!("# {name}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{}: no `{prefix}` header", path.display()))
}

#[test]
fn every_acr_parity_case_plans() {
    for path in yaml_files(&repo().join("tests/cases/acr")) {
        let text = fs::read_to_string(&path).expect("case");
        header(&text, "after", &path);
        let warns = header(&text, "warns", &path);
        let planned = plan(&path, false).unwrap_or_else(|d| panic!("{}: {d:#?}", path.display()));
        let warnings: Vec<&str> = planned.diagnostics.iter().map(|d| d.message.as_str()).collect();
        if warns == "none" {
            assert!(warnings.is_empty(), "{}: {warnings:#?}", path.display());
        } else {
            assert!(
                warnings.iter().any(|w| w.contains(warns)),
                "{}: {warnings:#?}",
                path.display()
            );
        }
    }
}

#[test]
fn every_invalid_case_is_rejected_with_its_message() {
    for path in yaml_files(&repo().join("tests/cases/invalid")) {
        let text = fs::read_to_string(&path).expect("case");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` header", path.display()));
        // Unknown keys are warnings (ACR ignores them); `--strict` makes them errors.
        let diags = match plan(&path, true) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(d) => d,
        };
        let hit = diags.iter().find(|d| d.is_error() && d.message.contains(expect));
        let hit = hit
            .unwrap_or_else(|| panic!("{}: no error says {expect:?}: {diags:#?}", path.display()));
        assert!(hit.pos.is_some(), "{}: error without a position: {hit:?}", path.display());
    }
}

#[test]
fn plans_carry_defaults_and_dependencies() {
    let planned = plan(&repo().join("examples/parallel/acb.yaml"), false).expect("plan");
    let join = planned.plan.steps.iter().find(|s| s.depends_on.len() > 1).expect("a join step");
    assert!(join.timeout_secs > 0 && join.retry_delay_secs == 5, "{join:?}");
    assert!(planned.plan.steps.iter().any(|s| s.depends_on.is_empty()));
}

fn kiln(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("run kiln");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_reports_file_line_column_and_exit_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("acb.yaml");
    fs::write(&file, "# a comment\nsteps:\n  - cmd: busybox true\n    timeOut: 5\n  - id: b\n    cmd: busybox true\n    retries: -1\n").unwrap();
    let f = file.to_str().unwrap();

    let (code, _, err) = kiln(&["validate", "-f", f]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{f}:4:5: warning: steps[0]: unknown step property `timeOut`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:7:14: error: steps[1].retries: step must specify retries >= 0")),
        "{err}"
    );

    let (code, out, _) = kiln(&["validate", "-f", f, "--output", "json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["valid"], false);
    assert_eq!(json["diagnostics"][1]["line"], 7);
    assert_eq!(json["diagnostics"][1]["severity"], "error");

    fs::write(&file, "steps:\n  - cmd: busybox true\n    timeOut: 5\n").unwrap();
    assert_eq!(kiln(&["validate", "-f", f]).0, 0);
    assert_eq!(kiln(&["validate", "-f", f, "--strict"]).0, 1);
}

#[test]
fn render_shows_values_run_variables_and_the_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("acb.yaml");
    fs::write(
        &file,
        "version: v1.1.0\nsteps:\n  - id: build\n    build: -t $Registry/app:$ID .\n  - cmd: busybox echo {{.Values.greeting}}\n    when: [\"-\"]\n  - push: [\"$Registry/app:$ID\"]\n    when: [build]\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = kiln(&[
        "render",
        "-f",
        f,
        "--set",
        "greeting=hi",
        "--run-id",
        "ka7",
        "--registry",
        "r.local",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let steps = json["plan"]["steps"].as_array().expect("steps");
    assert_eq!(
        steps[0]["action"]["build"]["args"],
        serde_json::json!(["-t", "r.local/app:ka7", "."])
    );
    assert_eq!(steps[1]["action"]["cmd"]["args"], serde_json::json!(["echo", "hi"]));
    assert_eq!(steps[2]["depends_on"], serde_json::json!(["build"]));
    assert_eq!(steps[2]["action"]["push"]["images"], serde_json::json!(["r.local/app:ka7"]));

    let (code, out, _) = kiln(&["render", "-f", f, "--run-id", "ka7", "--registry", "r.local"]);
    assert_eq!(code, 0);
    assert!(out.contains("build: -t r.local/app:ka7 ."), "{out}");
    assert!(out.contains("after build"), "{out}");

    // Secret values are masked in what render prints.
    let (code, out, _) =
        kiln(&["render", "-f", f, "--set-secret", "greeting=hunter2", "-o", "json"]);
    assert_eq!(code, 0);
    assert!(!out.contains("hunter2") && out.contains("***"), "{out}");

    // A missing value renders empty, as in ACR, and is reported.
    let (code, _, err) = kiln(&["render", "-f", f]);
    assert_eq!(code, 0);
    assert!(err.contains(&format!("{f}:5:")) && err.contains(".Values.greeting"), "{err}");
}

#[test]
fn render_shows_which_path_each_cmd_step_takes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("acb.yaml");
    fs::write(
        &file,
        "version: v1.1.0\nsteps:\n  - id: quick\n    cmd: busybox true\n  - id: web\n    cmd: busybox httpd -f\n    detach: true\n  - id: img\n    build: -t app .\n  - id: a1\n    cmd: busybox true\n  - id: a2\n    cmd: busybox true\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = kiln(&["render", "-f", f]);
    assert_eq!(code, 0, "{err}");
    let line = |id: &str| {
        let at = out.find(&format!("  {id} ")).unwrap_or_else(|| panic!("{id} in {out}"));
        out[at..].lines().take(2).collect::<Vec<_>>().join("\n")
    };
    assert!(line("quick").contains("path: fast"), "{out}");
    assert!(line("web").contains("path: classic (detach)"), "{out}");
    assert!(!line("img").contains("path:"), "{out}");
    // Steps of one chain share a network namespace; the first step starts with the run.
    assert!(line("a1").contains("network: lane 1") && line("a2").contains("lane 1"), "{out}");
    assert!(!line("quick").contains("lane"), "{out}");
    let (code, out, _) = kiln(&["render", "-f", f, "-o", "json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        json["paths"],
        serde_json::json!({"quick": "fast", "web": "classic (detach)", "a1": "fast", "a2": "fast"})
    );
    assert_eq!(json["lanes"], serde_json::json!([["a1", "a2"]]));
}

#[test]
fn bad_flags_and_files_are_one_clear_line() {
    let (code, _, err) = kiln(&["validate", "-f", "/nonexistent/acb.yaml"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read task file /nonexistent/acb.yaml"), "{err}");
    let example = repo().join("examples/parallel/acb.yaml");
    let (code, _, err) = kiln(&["validate", "-f", example.to_str().unwrap(), "--set", "novalue"]);
    assert_ne!(code, 0);
    assert!(err.contains("novalue"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let plan = plan(&example, false).expect("plan");
    assert!(matches!(plan.plan.steps[0].action, Action::Cmd { .. }));
}
