//! The fast path (issue 14: `cmd` steps run by `exec` in containers prepared ahead of need) and
//! the classic path (a container created and started per step) give the same outcomes.
//!
//! Each case runs one plan twice on the real engine, once as it comes (its steps behind a
//! first `gate` step, so that look-ahead prepares their containers) and once with
//! `RunOptions::classic_steps`, and compares every step's status, exit code, error and
//! output, with the run IDs taken out. The step summaries' `path` proves which path ran.

mod common;

use bollard::query_parameters::RemoveImageOptions;
use common::*;
use kiln_plan::event::{Event, LogStream, RunStatus, StepStatus};
use kiln_plan::plan::{Action, EnvVar, PlanStep, RunId};
use kiln_plan::step_path::{Classic, StepPath};

/// What a step did, as both paths must report it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    step: String,
    status: StepStatus,
    exit_code: Option<i64>,
    error: Option<String>,
    stdout: String,
    stderr: String,
}

fn seen(done: &Finished, run: &RunId) -> Vec<Seen> {
    let neutral = |text: &str| text.replace(run.as_str(), "RUN");
    done.summary
        .steps
        .iter()
        .map(|s| Seen {
            step: s.id.to_string(),
            status: s.status,
            exit_code: s.exit_code,
            error: s.error.as_deref().map(neutral),
            stdout: neutral(&done.stdout(s.id.as_str())),
            stderr: neutral(&done.output(s.id.as_str(), LogStream::Stderr)),
        })
        .collect()
}

fn path(done: &Finished, step: &str) -> Option<StepPath> {
    done.summary.steps.iter().find(|s| s.id.as_str() == step).and_then(|s| s.path)
}

/// `steps`, each after a first `gate` step, through both paths. Returns both runs, after
/// asserting their outcomes are equal and that every one of `fast` took the fast path (and the
/// classic path when forced).
async fn both(
    name: &str,
    steps: impl Fn() -> Vec<PlanStep>,
    masked: &[&str],
    fast: &[&str],
) -> (Finished, Finished) {
    let engine = engine().await;
    let mut runs = Vec::new();
    for classic in [false, true] {
        let run = run_id(&format!("{name}-{}", if classic { "classic" } else { "fast" }));
        let mut all = vec![sh("gate", "true")];
        all.extend(
            steps().into_iter().map(
                |s| {
                    if s.depends_on.is_empty() { after(s, &["gate"]) } else { s }
                },
            ),
        );
        let mut plan = plan(&run, all);
        plan.masked = masked.iter().map(|m| m.to_string()).collect();
        let done = start_with(&engine, plan, |o| o.classic_steps = classic).finish(&engine).await;
        runs.push((run, done));
    }
    let (classic_run, classic) = runs.pop().expect("classic run");
    let (fast_run, fast_done) = runs.pop().expect("fast run");
    assert_eq!(
        seen(&fast_done, &fast_run),
        seen(&classic, &classic_run),
        "fast:\n{}\nclassic:\n{}",
        fast_done.dump(),
        classic.dump()
    );
    for step in fast {
        assert_eq!(path(&fast_done, step), Some(StepPath::Fast), "{step}: {}", fast_done.dump());
        assert_eq!(path(&classic, step), Some(StepPath::Classic(Classic::Forced)), "{step}");
    }
    (fast_done, classic)
}

#[tokio::test]
async fn exit_codes_and_stream_separation() {
    let steps = || {
        let mut failing = sh("failing", "echo to-out; echo to-err >&2; exit 3");
        failing.ignore_errors = true;
        vec![failing, sh("quiet", "true"), cmd("image-cmd", &[])]
    };
    let (fast, _) = both("exits", steps, &[], &["failing", "quiet", "image-cmd"]).await;
    assert_eq!(fast.status("failing"), StepStatus::Ignored);
    assert_eq!(fast.summary.steps[1].exit_code, Some(3));
    assert_eq!(fast.stdout("failing"), "to-out\n");
    assert_eq!(fast.output("failing", LogStream::Stderr), "to-err\n");
}

#[tokio::test]
async fn env_entry_point_user_and_working_directory() {
    let steps = || {
        let mut shaped = cmd("shaped", &["-c", "echo \"A=$A\"; pwd; id -u; id -g"]);
        shaped.entry_point = Some("/bin/sh".into());
        shaped.env = vec![EnvVar { name: "A".into(), value: "two words; $NOT_EXPANDED".into() }];
        shaped.working_directory = Some("sub/dir".into());
        shaped.user = Some("1234:5678".into());
        let mut image_default = sh("image-default", "pwd; id -u");
        image_default.working_directory = None;
        let mut missing_user = sh("missing-user", "true");
        missing_user.user = Some("nobody-here".into());
        missing_user.ignore_errors = true;
        vec![shaped, image_default, missing_user]
    };
    let (fast, _) = both("shape", steps, &[], &["shaped", "image-default"]).await;
    assert_eq!(
        fast.stdout("shaped"),
        "A=two words; $NOT_EXPANDED\n/workspace/sub/dir\n1234\n5678\n"
    );
    assert_eq!(fast.stdout("image-default"), "/\n0\n");
    // A user the image lacks: the prepared container cannot start, so the step falls back to
    // the classic path and reports the engine's own error.
    assert_eq!(fast.status("missing-user"), StepStatus::Ignored);
}

#[tokio::test]
async fn workspace_is_shared_and_every_step_has_a_fresh_file_system() {
    let steps = || {
        let write = sh("write", "echo shared > /workspace/note; echo private > /tmp/mark");
        let read = after(
            sh("read", "cat /workspace/note; [ -e /tmp/mark ] && echo leaked || echo fresh"),
            &["write"],
        );
        vec![write, read]
    };
    let (fast, _) = both("fs", steps, &[], &["write", "read"]).await;
    assert_eq!(fast.stdout("read"), "shared\nfresh\n");
}

#[tokio::test]
async fn retries_and_repetitions_get_fresh_containers() {
    let script = "[ -e /tmp/seen ] && echo reused; touch /tmp/seen; echo attempt >> /workspace/n";
    let steps = || {
        let mut retried = sh("retried", &format!("{script}; exit 1"));
        retried.retries = 2;
        retried.ignore_errors = true;
        let mut repeated = after(sh("repeated", script), &["retried"]);
        repeated.repeat = 1;
        let count = after(sh("count", "wc -l < /workspace/n"), &["repeated"]);
        vec![retried, repeated, count]
    };
    let (fast, _) = both("attempts", steps, &[], &["retried", "repeated", "count"]).await;
    assert_eq!(fast.attempts("retried"), vec![1, 2, 3]);
    assert_eq!(fast.attempts("repeated"), vec![1, 2]);
    assert_eq!(fast.stdout("count").trim(), "5");
}

#[tokio::test]
async fn timeouts_kill_the_command_and_its_children() {
    let steps = || {
        // The background child keeps the output open: only killing it ends the step.
        let mut slow = sh("slow", "sleep 300 & echo started; sleep 300");
        slow.timeout_secs = 2;
        slow.ignore_errors = true;
        vec![slow, after(sh("next", "echo after"), &["slow"])]
    };
    let (fast, _) = both("timeout", steps, &[], &["slow", "next"]).await;
    assert_eq!(fast.error("slow").as_deref(), Some("timed out after 2 s"));
    assert_eq!(fast.stdout("slow"), "started\n");
}

#[tokio::test]
async fn secrets_are_masked_on_both_streams() {
    let secret = "s3cr3t-value-42";
    let steps = || {
        let mut leaky = sh(
            "leaky",
            "echo \"token=$TOKEN\"; echo \"$TOKEN\" >&2; printf '%s' \"$TOKEN\" | while read -n1 c; do printf '%s' \"$c\"; done; echo",
        );
        leaky.env = vec![EnvVar { name: "TOKEN".into(), value: secret.into() }];
        vec![leaky]
    };
    let (fast, _) = both("masked", steps, &[secret], &["leaky"]).await;
    assert_eq!(fast.stdout("leaky"), "token=***\n***\n");
    assert_eq!(fast.output("leaky", LogStream::Stderr), "***\n");
}

/// A detached service stays a classic container; fast steps reach it, and each other, by step
/// ID.
#[tokio::test]
async fn detached_services_and_step_id_dns() {
    let steps = || {
        let setup =
            sh("setup", "mkdir -p /workspace/www && echo hello > /workspace/www/index.html");
        let (web, probe) = web_service_and_probe();
        let own = after(
            sh("own-name", "ping -c 1 -W 5 own-name >/dev/null && echo resolved"),
            &["setup"],
        );
        vec![setup, web, probe, own]
    };
    let (fast, classic) = both("dns", steps, &[], &["setup", "probe", "own-name"]).await;
    assert_eq!(fast.stdout("probe"), "hello\n");
    assert_eq!(fast.stdout("own-name"), "resolved\n");
    for done in [&fast, &classic] {
        assert!(matches!(path(done, "web"), Some(StepPath::Classic(_))));
    }
    assert_eq!(path(&fast, "web"), Some(StepPath::Classic(Classic::Detach)));
}

/// Cancelling a run while containers wait prepared for later steps leaves nothing behind
/// (`finish` asserts no container, network or volume of the run remains).
#[tokio::test]
async fn a_cancelled_run_removes_its_prepared_containers() {
    let engine = engine().await;
    let run = run_id("cancel-prepared");
    let mut steps = vec![sh("gate", &wait_for_file("go"))];
    steps.extend((0..8).map(|i| after(sh(&format!("later{i}"), "true"), &["gate"])));
    let mut live = start(&engine, plan(&run, steps));
    live.until("the gate's command started", |e| {
        matches!(e, Event::Log { step: Some(s), data, .. }
            if s.as_str() == "gate" && String::from_utf8_lossy(data).contains("Launching container"))
    })
    .await;
    live.cancel.cancel();
    let done = live.finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Canceled, "{}", done.dump());
    assert_eq!(done.status("gate"), StepStatus::Canceled);
    assert_eq!(done.status("later0"), StepStatus::Skipped);
}

/// What a step's command leaves running is killed when the command exits, as when a classic
/// container's command (its PID 1) ends: the next step of the chain, which on the fast path
/// shares its network namespace (`kiln_plan::lane`), can bind the same port.
#[tokio::test]
async fn what_a_command_leaves_running_ends_with_it() {
    let steps = || {
        // busybox httpd forks into the background once it holds the port.
        let first = sh("first", "httpd -p 8080 && echo bound");
        let second = after(sh("second", "httpd -p 8080 && echo bound again"), &["first"]);
        vec![first, second]
    };
    let (fast, _) = both("leftovers", steps, &[], &["first", "second"]).await;
    assert_eq!(fast.stdout("second"), "bound again\n", "{}", fast.dump());
}

/// A child left in the background that holds the output open dies when the command exits, as
/// in a classic container: it does not get to print, and the step does not wait for it (the
/// engine would keep an exec's output open for it for up to ~2 s).
#[tokio::test]
async fn a_background_child_holding_the_output_ends_with_the_command() {
    let steps = || vec![sh("early", "(sleep 1; echo late) & echo early")];
    let (fast, _) = both("background", steps, &[], &["early"]).await;
    assert_eq!(fast.stdout("early"), "early\n", "{}", fast.dump());
}

/// Steps of one chain share one network namespace on the fast path; steps that may run at the
/// same time never do, and each still resolves the others by step ID.
#[tokio::test]
async fn a_chain_shares_a_network_namespace_and_parallel_steps_do_not() {
    let engine = engine().await;
    let run = run_id("lanes");
    let mac = |id: &str| format!("cat /sys/class/net/eth0/address > /workspace/{id}");
    let steps = vec![
        sh("gate", "true"),
        after(sh("a", &mac("a")), &["gate"]),
        after(
            sh("p", &format!("{} && ping -c 1 -W 5 a >/dev/null && echo found a", mac("p"))),
            &["gate"],
        ),
        after(sh("b", &mac("b")), &["a"]),
        after(
            sh(
                "check",
                "cd /workspace && [ \"$(cat a)\" = \"$(cat b)\" ] && echo chain shares; \
                 [ \"$(cat a)\" != \"$(cat p)\" ] && echo parallel apart",
            ),
            &["b", "p"],
        ),
    ];
    let done = start(&engine, plan(&run, steps)).finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("check"), "chain shares\nparallel apart\n", "{}", done.dump());
    assert_eq!(done.stdout("p"), "found a\n");
}

/// A container prepared ahead from an image whose tag a build of the same run then moves is not
/// used: the step runs the image the tag names when its turn comes, as `docker run` would.
#[tokio::test]
async fn a_step_runs_the_image_a_build_moved_its_tag_to() {
    let engine = engine().await;
    let run = run_id("moved");
    let tag = format!("kiln-test/moved-{}:v1", run.as_str().to_lowercase());
    let build = |marker: &str, after_gate: bool| {
        let context = tempfile::tempdir().expect("context");
        let dockerfile = format!("FROM {}\nCOPY marker /marker\n", image());
        std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
        std::fs::write(context.path().join("marker"), marker).expect("marker");
        let mut build = sh("build", "unused");
        build.action = Action::Build { args: vec!["-t".into(), tag.clone(), ".".into()] };
        if after_gate {
            build = after(build, &["gate"]);
        }
        (context, build)
    };
    // The tag exists before the run, so look-ahead prepares `use` from it while `build` runs.
    let (old_context, old) = build("old\n", false);
    let dir = old_context.path().to_path_buf();
    let done =
        start_with(&engine, plan(&run_id("moved-old"), vec![old]), |o| o.context_dir = Some(dir))
            .finish(&engine)
            .await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());

    let (new_context, new) = build("new\n", true);
    let mut use_it = after(sh("use", "unused"), &["build"]);
    use_it.action = Action::Cmd { image: tag.clone(), args: vec!["cat".into(), "/marker".into()] };
    let dir = new_context.path().to_path_buf();
    let steps = vec![sh("gate", "true"), new, use_it];
    let done =
        start_with(&engine, plan(&run, steps), |o| o.context_dir = Some(dir)).finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("use"), "new\n", "{}", done.dump());
    let _ = engine.docker().remove_image(&tag, None::<RemoveImageOptions>, None).await;
}
