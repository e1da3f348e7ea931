//! What the `kiln exec` tests share: the binary, run IDs unique to this test process, and what
//! the engine still holds for a run.
#![allow(dead_code)] // each includer uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn setting(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

pub fn registry() -> String {
    setting("KILN_TEST_REGISTRY", "127.0.0.1:5000")
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
