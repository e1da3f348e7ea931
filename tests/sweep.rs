//! The start-of-run sweep of what crashed runs left. It has a test binary of its own because any
//! other `kiln exec` running at the same time would sweep the planted leftovers first.

#[path = "support/exec.rs"]
mod support;

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use support::{kiln, leftovers, run_id, text, write_task};

/// Every `kiln exec` sweeps: the tests of this binary take turns, so one's exec does not sweep
/// what the other planted before the other's own exec is checked.
static ENGINE: Mutex<()> = Mutex::new(());

/// Creates a stopped container of `run` owned by the instance whose lock file is `lock`.
fn plant(run: &str, id: &str, lock: &Path) {
    let out = Command::new("docker")
        .args(["create", "--label", &format!("kiln.run={run}")])
        .args(["--label", &format!("kiln.owner={id}")])
        .args(["--label", &format!("kiln.owner-lock={}", lock.display())])
        .args(["busybox:latest", "true"])
        .output()
        .expect("docker create");
    assert!(out.status.success(), "{}", text(&out));
}

/// A worker that starts removes what a crashed predecessor left — judged by its instance lock,
/// not its PID: here the PID in the lock file is alive (this test process, as for a zombie or a
/// reused PID) but nobody holds the lock — and leaves alone what a live instance owns.
#[test]
fn a_new_run_sweeps_what_crashed_runs_left() {
    let _turn = ENGINE.lock().unwrap_or_else(PoisonError::into_inner);
    let owners = tempfile::tempdir().expect("tempdir");
    let crashed = run_id("crashed");
    let alive = run_id("alive");
    let lock = |run: &str| owners.path().join(format!("kiln-owner-{run}.lock"));
    // Owner IDs are hex, unique to this test process.
    let [crashed_id, alive_id] = [0xc, 0xa].map(|n| format!("{:x}{n:x}", std::process::id()));
    let (crashed_lock, alive_lock) = (lock(&crashed_id), lock(&alive_id));
    std::fs::write(&crashed_lock, format!("pid {}\n", std::process::id())).expect("lock file");
    let held = File::create(&alive_lock).expect("lock file");
    held.try_lock().expect("the live instance's lock");
    plant(&crashed, &crashed_id, &crashed_lock);
    plant(&alive, &alive_id, &alive_lock);
    assert_ne!(leftovers(&crashed), "");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_task(dir.path(), "steps:\n  - cmd: busybox true\n");
    let out = kiln().args(["exec", "-f"]).arg(&file).output().expect("kiln");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("objects left by crashed kiln runs"), "{}", text(&out));
    assert_eq!(leftovers(&crashed), "");
    assert_ne!(leftovers(&alive), "", "a live instance's run was swept");
    Command::new("docker").args(["rm", "-f"]).arg(leftovers(&alive).trim()).output().expect("rm");
}

/// `kill -9` of a `kiln exec` that its parent has not reaped leaves a zombie with the same PID;
/// the next `kiln exec` still removes its run's container, because the kernel released the
/// dead instance's lock.
#[test]
fn a_zombie_exec_run_is_swept_by_the_next_one() {
    let _turn = ENGINE.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let task = "steps:\n  - id: long\n    cmd: busybox sh -c 'echo step-is-running; sleep 600'\n";
    let file = write_task(dir.path(), task);
    let run = run_id("zombie");
    let mut child = kiln()
        .args(["exec", "-f"])
        .arg(&file)
        .args(["--run-id", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kiln exec");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    // Its output proves the container exists: no creation is still in flight at the kill.
    let started = stdout.lines().map_while(Result::ok).any(|l| l.contains("step-is-running"));
    assert!(started, "the step never started");
    // SIGKILL, then wait for the death without reaping (WNOWAIT): the PID stays taken by the
    // zombie while the next exec sweeps.
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
    let options = rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
    rustix::process::waitid(rustix::process::WaitId::Pid(pid), options).expect("waitid");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).expect("stat");
    assert!(stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')), "a zombie: {stat}");

    let next = write_task(dir.path(), "steps:\n  - cmd: busybox true\n");
    let out = kiln().args(["exec", "-f"]).arg(&next).output().expect("kiln");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(leftovers(&run), "", "the zombie's run was not swept: {}", text(&out));
    child.wait().expect("reap");
}
