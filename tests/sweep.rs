//! The start-of-run sweep of what crashed runs left. It has a test binary of its own because any
//! other `kiln exec` running at the same time would sweep the planted leftovers first.

#[path = "support/exec.rs"]
mod support;

use std::process::Command;
use support::{kiln, leftovers, run_id, text, write_task};

/// A worker that starts removes what a crashed predecessor left (its owner process is gone) and
/// leaves alone what a live process owns.
#[test]
fn a_new_run_sweeps_what_crashed_runs_left() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let dead = {
        let mut child = Command::new("true").spawn().expect("true");
        let pid = child.id();
        child.wait().expect("wait");
        pid
    };
    let crashed = run_id("crashed");
    let alive = run_id("alive");
    for (run, pid) in [(&crashed, dead), (&alive, std::process::id())] {
        let owner = format!("kiln.owner={}/{pid}", host.trim());
        let out = Command::new("docker")
            .args([
                "create",
                "--label",
                &format!("kiln.run={run}"),
                "--label",
                &owner,
                "busybox:latest",
                "true",
            ])
            .output()
            .expect("docker create");
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_ne!(leftovers(&crashed), "");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_task(dir.path(), "steps:\n  - cmd: busybox true\n");
    let out = kiln().args(["exec", "-f"]).arg(&file).output().expect("kiln");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("objects left by crashed kiln runs"), "{}", text(&out));
    assert_eq!(leftovers(&crashed), "");
    assert_ne!(leftovers(&alive), "", "a live process's run was swept");
    Command::new("docker").args(["rm", "-f"]).arg(leftovers(&alive).trim()).output().expect("rm");
}
