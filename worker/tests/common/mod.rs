//! Helpers shared by the integration tests: a real engine (started by `scripts/test-env.sh`),
//! plans of busybox `cmd` steps, event collection, and the check that a run left nothing behind.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use kiln_plan::event::{Event, LogStream, StepStatus};
use kiln_plan::plan::{Action, Plan, PlanStep, RunId, StepId};
use kiln_worker::names::RUN_LABEL;
use kiln_worker::owner::{OWNER_LABEL, OWNER_LOCK_LABEL};
use kiln_worker::{Engine, RunOptions, RunSummary, execute};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Upper bound on anything a test waits for; never a synchronisation device.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A fact about the test environment: the process environment first, then the file
/// `scripts/test-env.sh` writes (`$KILN_TEST_STATE_DIR/env`), then `default`.
pub fn setting(key: &str, default: &str) -> String {
    if let Ok(value) = std::env::var(key) {
        return value;
    }
    let dir = std::env::var("KILN_TEST_STATE_DIR").unwrap_or_else(|_| "/var/lib/kiln-test".into());
    std::fs::read_to_string(PathBuf::from(dir).join("env"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
        })
        .unwrap_or_else(|| default.to_string())
}

pub fn image() -> String {
    setting("KILN_TEST_IMAGE", "busybox:latest")
}

pub async fn engine() -> Engine {
    let host = setting("DOCKER_HOST", kiln_worker::engine::DEFAULT_HOST);
    Engine::connect_to(&host).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Owner labels of an instance that is gone although its PID still runs, as for a zombie or a
/// reused PID: its lock file in `dir` names this (live) test process, and nobody holds it.
pub fn gone_owner(dir: &std::path::Path, name: &str) -> HashMap<String, String> {
    let id = format!("{:x}{:x}", std::process::id(), name.bytes().map(u64::from).sum::<u64>());
    let lock = dir.join(format!("kiln-owner-{id}.lock"));
    std::fs::write(&lock, format!("pid {}\n", std::process::id())).expect("lock file");
    HashMap::from([
        (OWNER_LABEL.to_string(), id),
        (OWNER_LOCK_LABEL.to_string(), lock.display().to_string()),
    ])
}

/// A run ID unique to this test and this test process.
pub fn run_id(test: &str) -> RunId {
    RunId::new(format!("t{}-{test}", std::process::id()))
}

/// A `cmd` step running `sh -c script` in the test image.
pub fn sh(id: &str, script: &str) -> PlanStep {
    cmd(id, &["sh", "-c", script])
}

pub fn cmd(id: &str, args: &[&str]) -> PlanStep {
    PlanStep {
        timeout_secs: 120,
        retry_delay_secs: 0,
        ..PlanStep::new(
            StepId::new(id),
            Action::Cmd { image: image(), args: args.iter().map(|a| a.to_string()).collect() },
        )
    }
}

pub fn after(mut step: PlanStep, deps: &[&str]) -> PlanStep {
    step.depends_on = deps.iter().map(|d| StepId::new(*d)).collect();
    step
}

/// A detached web server (`web`, busybox httpd serving `/workspace/www` after `setup`) and a
/// `probe` step that fetches its index page by the service's step ID.
pub fn web_service_and_probe() -> (PlanStep, PlanStep) {
    let mut web =
        after(cmd("web", &["httpd", "-f", "-p", "8080", "-h", "/workspace/www"]), &["setup"]);
    web.detach = true;
    let probe = after(
        sh(
            "probe",
            "for i in $(seq 100); do timeout 2 wget -q -O - http://web:8080/index.html && exit 0; sleep 0.2; done; exit 1",
        ),
        &["web"],
    );
    (web, probe)
}

pub fn plan(run: &RunId, steps: Vec<PlanStep>) -> Plan {
    Plan::new(run.clone(), steps)
}

/// Script fragment: wait (bounded by the step timeout) until the test or another step creates
/// `/workspace/<name>`.
pub fn wait_for_file(name: &str) -> String {
    format!("until [ -e /workspace/{name} ]; do sleep 0.1; done")
}

/// A run in progress, observed live.
pub struct Live {
    pub events: mpsc::Receiver<Event>,
    pub seen: Vec<Event>,
    pub cancel: CancellationToken,
    pub workspace: PathBuf,
    handle: tokio::task::JoinHandle<RunSummary>,
    _root: tempfile::TempDir,
    run: RunId,
}

pub fn start(engine: &Engine, plan: Plan) -> Live {
    start_with(engine, plan, |_| {})
}

pub fn start_with(engine: &Engine, plan: Plan, adjust: impl FnOnce(&mut RunOptions)) -> Live {
    let root = tempfile::tempdir().expect("workspace root");
    let mut options = RunOptions::new(root.path());
    adjust(&mut options);
    let workspace = root.path().canonicalize().expect("root").join(format!("kiln-{}", plan.run_id));
    // Small on purpose: the run must cope with a consumer that is behind.
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = plan.run_id.clone();
    let engine = engine.clone();
    let token = cancel.clone();
    let handle = tokio::spawn(async move { execute(&engine, &plan, options, tx, token).await });
    Live { events: rx, seen: Vec::new(), cancel, workspace, handle, _root: root, run }
}

impl Live {
    /// Reads events until one matches; panics if the run ends or PATIENCE passes first.
    pub async fn until(&mut self, what: &str, matches: impl Fn(&Event) -> bool) {
        let wait = async {
            while let Some(event) = self.events.recv().await {
                let hit = matches(&event);
                self.seen.push(event);
                if hit {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(PATIENCE, wait).await {
            Ok(true) => {}
            Ok(false) => panic!("run ended before {what}: {:#?}", self.seen),
            Err(_) => panic!("no {what} within {PATIENCE:?}"),
        }
    }

    pub async fn until_finished(&mut self, step: &str) {
        self.until(
            &format!("{step} finished"),
            |e| matches!(e, Event::StepFinished { step: s, .. } if s.as_str() == step),
        )
        .await;
    }

    /// Creates `/workspace/<name>` to release a step waiting in [`wait_for_file`].
    pub fn touch(&self, name: &str) {
        std::fs::write(self.workspace.join(name), b"").expect("touch in workspace");
    }

    /// Drains the remaining events, awaits the summary and checks the run left nothing.
    pub async fn finish(mut self, engine: &Engine) -> Finished {
        let drain = async {
            while let Some(event) = self.events.recv().await {
                self.seen.push(event);
            }
        };
        tokio::time::timeout(PATIENCE, drain).await.expect("run finishes within PATIENCE");
        let summary = self.handle.await.expect("execute does not panic");
        assert_clean(engine, &self.run).await;
        assert!(!self.workspace.exists(), "workspace removed");
        Finished { summary, events: self.seen }
    }
}

pub struct Finished {
    pub summary: RunSummary,
    pub events: Vec<Event>,
}

/// Runs a plan to its end (with leftovers checked).
pub async fn run_plan(engine: &Engine, plan: Plan) -> Finished {
    start(engine, plan).finish(engine).await
}

impl Finished {
    pub fn status(&self, step: &str) -> StepStatus {
        self.summary
            .steps
            .iter()
            .find(|s| s.id.as_str() == step)
            .unwrap_or_else(|| panic!("no step {step}"))
            .status
    }

    pub fn error(&self, step: &str) -> Option<String> {
        self.summary.steps.iter().find(|s| s.id.as_str() == step).and_then(|s| s.error.clone())
    }

    pub fn output(&self, step: &str, stream: LogStream) -> String {
        output(&self.events, step, stream)
    }

    pub fn stdout(&self, step: &str) -> String {
        self.output(step, LogStream::Stdout)
    }

    pub fn system(&self, step: &str) -> String {
        self.output(step, LogStream::System)
    }

    pub fn attempts(&self, step: &str) -> Vec<u32> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StepStarted { step: s, attempt } if s.as_str() == step => Some(*attempt),
                _ => None,
            })
            .collect()
    }

    /// For assertion messages.
    pub fn dump(&self) -> String {
        format!("{:#?}\n{}", self.summary, run_log(&self.events))
    }
}

pub fn output(events: &[Event], step: &str, stream: LogStream) -> String {
    let bytes: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Event::Log { step: Some(s), stream: st, data }
                if s.as_str() == step && *st == stream =>
            {
                Some(data.as_slice())
            }
            _ => None,
        })
        .flatten()
        .copied()
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// All log lines of a run, prefixed with their step, for failure messages.
pub fn run_log(events: &[Event]) -> String {
    let mut text = String::new();
    for event in events {
        if let Event::Log { step, data, .. } = event {
            let step = step.as_ref().map_or("-", |s| s.as_str());
            for line in String::from_utf8_lossy(data).lines() {
                text.push_str(&format!("[{step}] {line}\n"));
            }
        }
    }
    text
}

/// No container, network or volume labelled with `run` remains.
pub async fn assert_clean(engine: &Engine, run: &RunId) {
    let left = leftovers(engine, run).await;
    assert!(left.is_empty(), "run {run} left {left:?}");
}

pub async fn leftovers(engine: &Engine, run: &RunId) -> Vec<String> {
    let docker = engine.docker();
    let filters = HashMap::from([("label".to_string(), vec![format!("{RUN_LABEL}={run}")])]);
    let mut left = Vec::new();
    for c in docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .expect("list containers")
    {
        left.push(format!("container {:?}", c.names));
    }
    for n in docker
        .list_networks(Some(ListNetworksOptions { filters: Some(filters.clone()) }))
        .await
        .expect("list networks")
    {
        left.push(format!("network {:?}", n.name));
    }
    for v in docker
        .list_volumes(Some(ListVolumesOptions { filters: Some(filters) }))
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
    {
        left.push(format!("volume {}", v.name));
    }
    left
}

pub fn container_name(run: &RunId, step: &str, attempt: u32) -> String {
    format!("kiln-{run}-{step}-{attempt}")
}
