//! What the `kiln exec` tests share: the binary, run IDs unique to this test process, and what
//! the engine still holds for a run.
#![allow(dead_code)] // each includer uses its own part

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn setting(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

pub fn registry() -> String {
    setting("KILN_TEST_REGISTRY", "127.0.0.1:5000")
}

/// The test registry behind basic auth.
pub fn auth_registry() -> String {
    setting("KILN_TEST_AUTH_REGISTRY", "127.0.0.1:5001")
}

/// Whether the authenticated registry has `repo:tag`.
pub fn in_auth_registry(repo: &str, tag: &str) -> bool {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let user = setting("KILN_TEST_REGISTRY_USER", "kiln");
    let password = setting("KILN_TEST_REGISTRY_PASSWORD", "kiln-test-password");
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    let resp = agent
        .head(format!("http://{}/v2/{repo}/manifests/{tag}", auth_registry()))
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json")
        .header("authorization", format!("Basic {basic}"))
        .call()
        .expect("registry");
    resp.status().as_u16() == 200
}

/// `kiln exec -f file dir` as run `run`, started, with the authenticated registry as the run's
/// registry, logged in with `password` (given on stdin), plus `extra` arguments.
pub fn spawn_logged_in(
    file: &Path,
    dir: &Path,
    run: &str,
    password: &str,
    extra: &[&str],
) -> Child {
    spawn_logged_in_to(&auth_registry(), file, dir, run, password, extra)
}

/// [`spawn_logged_in`] with `registry` as the run's registry.
pub fn spawn_logged_in_to(
    registry: &str,
    file: &Path,
    dir: &Path,
    run: &str,
    password: &str,
    extra: &[&str],
) -> Child {
    let mut child = kiln()
        .args(["exec", "-f"])
        .arg(file)
        .arg(dir)
        .args(["--run-id", run, "--registry", registry])
        .args(["--registry-user", &setting("KILN_TEST_REGISTRY_USER", "kiln")])
        .arg("--registry-password-stdin")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln");
    child.stdin.take().expect("stdin").write_all(password.as_bytes()).expect("password");
    child
}

/// [`spawn_logged_in`], to its end.
pub fn exec_logged_in(
    file: &Path,
    dir: &Path,
    run: &str,
    password: &str,
    extra: &[&str],
) -> Output {
    spawn_logged_in(file, dir, run, password, extra).wait_with_output().expect("wait")
}

pub fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

pub fn run_id(name: &str) -> String {
    format!("x{}{name}", std::process::id())
}

/// Containers, networks and volumes the engine still has for `run`.
pub fn leftovers(run: &str) -> String {
    let filter = format!("label=kiln.run={run}");
    let mut found = String::new();
    for what in [&["ps", "-aq"][..], &["network", "ls", "-q"], &["volume", "ls", "-q"]] {
        let out = Command::new("docker")
            .args(what)
            .args(["--filter", &filter])
            .output()
            .expect("docker CLI");
        found.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    found
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn write_task(dir: &Path, yaml: &str) -> PathBuf {
    let file = dir.join("acb.yaml");
    std::fs::write(&file, yaml).expect("task file");
    file
}
