//! The agent end to end on the real Docker engine and registries of `scripts/test-env.sh` and a
//! real SQLite store in a temp directory. Completion is awaited through [`LogHub`] wake-ups
//! (re-reading the store on each), bounded by a deadline. Every test has its own run-ID prefix
//! (pid + a letter that is not a hex digit), so parallel tests and binaries never share
//! container, network or label names.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptions;
use flate2::Compression;
use flate2::write::GzEncoder;
use kiln_api::status::{RunStatus, RunType};
use kiln_api::{
    Argument, DockerBuildRequest, EncodedTaskRequest, FileTaskRequest, RunRequest, Source,
};
use kiln_plan::plan::RegistryCredential;
use kiln_task::run_id::{RunId, RunIdPrefix};

use super::{Agent, AgentConfig};
use kiln_api::uploads;
use kiln_server::log_hub::LogHub;
use kiln_server::secret_box::SecretBox;
use kiln_server::server::dispatch::{Dispatcher, LocalLink, RunSettings};
use kiln_server::store::lease::Claimant;
use kiln_server::store::lease::SERVER_STOPPED_MESSAGE;
use kiln_server::store::{NewRun, RunRecord, Store};

/// Longest a test waits for a run; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(180);

/// An agent of no pool on linux/amd64, as the store sees it.
fn amd64(name: &str) -> Claimant {
    Claimant { name: name.to_string(), pool: None, platforms: vec!["linux/amd64".to_string()] }
}

fn setting(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

struct Env {
    dir: tempfile::TempDir,
    store: Store,
    hub: LogHub,
    dispatch: Arc<Dispatcher>,
    agent: Agent,
}

/// A store, a dispatcher with the server's run `settings` (as `tweak` sets them) and an
/// agent linked to it in-process, as `kiln serve --workers N` has them.
async fn env(tag: char, workers: usize, tweak: impl FnOnce(&mut RunSettings)) -> Env {
    assert!(('g'..='z').contains(&tag), "the tag must not be a hex digit");
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("a{:x}{tag}", std::process::id());
    let store =
        Store::open(dir.path(), RunIdPrefix::new(&prefix).expect("prefix")).await.expect("store");
    let hub = LogHub::new();
    let mut settings = RunSettings::default();
    tweak(&mut settings);
    let dispatch = dispatcher(&store, &hub, dir.path(), settings);
    let name = format!("agent-{prefix}");
    let link = LocalLink {
        dispatcher: dispatch.clone(),
        agent: Claimant { name: name.clone(), pool: None, platforms: Vec::new() },
    };
    let config =
        AgentConfig { capacity: workers, ..AgentConfig::new(name, dir.path().to_path_buf()) };
    let agent = Agent::start(Arc::new(link), config).await.expect("agent starts");
    Env { dir, store, hub, dispatch, agent }
}

fn dispatcher(store: &Store, hub: &LogHub, dir: &Path, settings: RunSettings) -> Arc<Dispatcher> {
    let secrets = Arc::new(SecretBox::open_or_create(dir).expect("secret key"));
    Arc::new(Dispatcher::new(
        store.clone(),
        hub.clone(),
        secrets,
        settings,
        dir.to_path_buf(),
        Duration::from_secs(30),
    ))
}

fn encoded(task: &str, values: Vec<Argument>) -> RunRequest {
    RunRequest::EncodedTask(EncodedTaskRequest {
        source: Source::None,
        task: task.to_string(),
        task_name: "acb.yaml".to_string(),
        values_content: None,
        values,
        platform: None,
        timeout_secs: None,
        agent_pool_name: None,
        docker_api: None,
    })
}

impl Env {
    async fn queue(&self, request: &RunRequest, timeout_secs: Option<u64>) -> RunId {
        let mut new =
            NewRun::new(request.run_type(false), serde_json::to_string(request).expect("json"));
        if let Some(t) = timeout_secs {
            new.timeout_secs = t;
        }
        let run = self.store.create_run(new).await.expect("queued");
        self.dispatch.queued();
        run.id
    }

    /// Waits (on hub wake-ups) until `done` holds for the run and its log.
    async fn wait_for(
        &self,
        id: &RunId,
        done: impl Fn(&RunRecord, &str) -> bool,
    ) -> (RunRecord, String) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let mut rx = self.hub.subscribe(id);
            let run = self.store.get_run(id).await.expect("run");
            let log = self.log(id).await;
            if done(&run, &log) {
                return (run, log);
            }
            // Runs finished by another party (the recovery test) wake nobody here; the
            // bounded wait re-reads the store in that case.
            let wait = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_secs(2)),
                rx.changed(),
            );
            let _ = wait.await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} did not get there:\n{run:?}\n{log}"
            );
        }
    }

    async fn finished(&self, id: &RunId) -> (RunRecord, String) {
        self.wait_for(id, |run, _| run.status.is_terminal()).await
    }

    async fn log(&self, id: &RunId) -> String {
        let chunks = self.store.read_log(id, 0, usize::MAX).await.expect("log");
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Writes `files` as an uploaded context; returns its ID.
    fn upload(&self, files: &[(&str, &str)], dir: Option<&Path>) -> String {
        let id = uploads::new_id();
        let path = uploads::path(self.dir.path(), &id).expect("id");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("uploads dir");
        let file = std::fs::File::create(&path).expect("archive");
        let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
        if let Some(dir) = dir {
            tar.append_dir_all(".", dir).expect("append dir");
        }
        for (name, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, text.as_bytes()).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gzip");
        id
    }

    async fn stop(self) {
        self.agent.shutdown().await;
        self.store.close().await;
    }
}

/// Containers the engine still has for `run`.
async fn containers_of(run: &RunId) -> Vec<String> {
    let engine = kiln_worker::Engine::connect().await.expect("engine");
    let filters = HashMap::from([("label".to_string(), vec![format!("kiln.run={run}")])]);
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    let list = engine.docker().list_containers(Some(options)).await.expect("list");
    list.into_iter().filter_map(|c| c.id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_runs_a_task_and_stores_its_log() {
    let env = env('g', 1, |_| {}).await;
    let id = env
        .queue(
            &encoded("steps:\n  - id: hello\n    cmd: busybox echo hello-from-the-step\n", vec![]),
            None,
        )
        .await;
    let (run, log) = env.finished(&id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{log}");
    assert_eq!(run.error_message, None);
    let waiting = log.find("Waiting for an agent...").expect(&log);
    let output = log.find("hello | hello-from-the-step\n").expect(&log);
    assert!(waiting < output, "{log}");
    assert!(log.contains(&format!("Run ID: {id} was successful after")), "{log}");
    assert_eq!(run.log_len as usize, log.len());
    env.stop().await;
}

/// A run gets the worker's pre-created network (named in its log), step IDs resolve on it, and
/// the run's end removes it.
#[tokio::test(flavor = "multi_thread")]
async fn agent_runs_on_a_spare_network_and_removes_it() {
    let env = env('n', 1, |_| {}).await;
    let task = "steps:\n  - id: web\n    cmd: busybox httpd -f -p 8080 -h /etc\n    detach: true\n  \
                - id: probe\n    cmd: busybox sh -c \"for i in $(seq 100); do wget -q -O /dev/null \
                http://web:8080/hostname && echo reached-web && exit 0; sleep 0.2; done; exit 1\"\n";
    let id = env.queue(&encoded(task, vec![]), None).await;
    let (run, log) = env.finished(&id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{log}");
    assert!(log.contains("probe | reached-web\n"), "{log}");
    let network = log
        .lines()
        .find_map(|l| l.split_once("Using Docker network: ").map(|(_, rest)| rest))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no spare network named in the log:\n{log}"))
        .to_string();
    assert!(network.starts_with("kiln-spare-"), "{log}");
    assert!(log.contains(&format!("Network: '{network}'")), "{log}");
    let engine = kiln_worker::Engine::connect().await.expect("engine");
    let gone = engine.docker().inspect_network(&network, None).await;
    assert!(
        matches!(
            gone,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
        ),
        "{gone:?}"
    );
    assert!(containers_of(&id).await.is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_quick_build_from_an_upload_pushes_and_records_images() {
    let registry = setting("KILN_TEST_REGISTRY", "127.0.0.1:5000");
    let env = env('h', 2, |c| c.default_registry = Some(registry.clone())).await;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quick-build");
    let upload = env.upload(&[], Some(&example));
    let request = RunRequest::DockerBuild(DockerBuildRequest {
        source: Source::Upload { id: upload },
        images: vec!["agent-quick:{{.Run.ID}}".to_string()],
        dockerfile: "Dockerfile".to_string(),
        build_args: vec![],
        target: None,
        platform: None,
        platforms: Vec::new(),
        is_push_enabled: true,
        timeout_secs: None,
        agent_pool_name: None,
    });
    let id = env.queue(&request, None).await;
    let (run, log) = env.finished(&id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{log}");
    let downloading = log.find("Downloading source code...").expect(&log);
    assert!(log.contains("Finished downloading source code\n"), "{log}");
    assert!(log.find("Waiting for an agent...").expect(&log) < downloading, "{log}");
    assert!(log.contains("build | "), "{log}");
    assert_eq!(run.output_images.len(), 1, "{run:?}");
    let image = &run.output_images[0];
    assert_eq!(image.registry, registry);
    assert_eq!(image.repository, "agent-quick");
    assert_eq!(image.tag, id.as_str());
    assert!(image.digest.starts_with("sha256:"), "{image:?}");
    assert!(log.contains("The following dependencies were found:\n"), "{log}");
    let deps: serde_json::Value =
        serde_json::from_str(run.dependencies.as_deref().expect("dependencies")).expect("json");
    assert_eq!(deps[0]["image"]["digest"], image.digest.as_str(), "{deps}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_failing_step_fails_the_run_and_reports_every_step() {
    let env = env('i', 1, |_| {}).await;
    let task = "steps:\n  - id: boom\n    cmd: busybox sh -c 'exit 3'\n  \
                - id: after\n    cmd: busybox true\n    when: [boom]\n";
    let id = env.queue(&encoded(task, vec![]), None).await;
    let (run, log) = env.finished(&id).await;
    assert_eq!(run.status, RunStatus::Failed, "{log}");
    let message = run.error_message.clone().expect("message");
    assert!(message.starts_with("failed to run step ID: boom"), "{message}");
    assert!(log.contains(&format!("Run ID: {id} failed after")), "{log}");
    // The record has the steps as the agent last reported them, before it finished the run.
    let steps = kiln_api::Run::from(&run).steps;
    let summary: Vec<_> = steps
        .iter()
        .map(|s| (s.id.as_str(), s.status, s.exit_code, s.depends_on.clone()))
        .collect();
    use kiln_api::steps::StepStatus::{Failed, Skipped};
    assert_eq!(
        summary,
        [("boom", Failed, Some(3), vec![]), ("after", Skipped, None, vec!["boom".to_string()])]
    );
    let boom = &steps[0];
    assert!(boom.start_time.is_some_and(|t| boom.finish_time.is_some_and(|f| t <= f)), "{boom:?}");
    assert_eq!(steps[1].start_time, None);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_never_stores_secrets_even_split_across_writes() {
    let password = setting("KILN_TEST_REGISTRY_PASSWORD", "kiln-test-password");
    let auth_registry = setting("KILN_TEST_AUTH_REGISTRY", "127.0.0.1:5001");
    let env = env('j', 1, |c| {
        c.credentials = vec![RegistryCredential {
            registry: auth_registry,
            username: setting("KILN_TEST_REGISTRY_USER", "kiln"),
            password: password.clone(),
        }];
    })
    .await;
    let secret = "sup3rs3cretvalue";
    let (head, tail) = secret.split_at(7);
    let (p_head, p_tail) = password.split_at(4);
    let task = format!(
        "steps:\n  - id: leak\n    cmd: busybox sh -c \"printf '{head}'; sleep 0; printf '{tail}\\n'; \
         printf '{p_head}'; sleep 0; printf '{p_tail}\\n'; echo {{{{.Values.token}}}}\"\n"
    );
    let values = vec![Argument { name: "token".into(), value: Some(secret.into()), secret: true }];
    let id = env.queue(&encoded(&task, values), None).await;
    let (run, log) = env.finished(&id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{log}");
    assert!(!log.contains(secret), "{log}");
    assert!(!log.contains(&password), "{log}");
    assert!(log.matches("leak | ***").count() >= 3, "{log}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_cancel_stops_a_running_run_and_leaves_no_containers() {
    let env = env('k', 1, |_| {}).await;
    let task = "steps:\n  - id: long\n    cmd: busybox sh -c 'echo started-long-step; sleep 300'\n";
    let id = env.queue(&encoded(task, vec![]), None).await;
    env.wait_for(&id, |_, log| log.contains("long | started-long-step")).await;
    env.store.cancel_run(&id).await.expect("cancel requested");
    env.dispatch.changed();
    let (run, log) = env.finished(&id).await;
    assert_eq!(run.status, RunStatus::Canceled, "{log}");
    assert_eq!(containers_of(&id).await, Vec::<String>::new());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_run_timeout_ends_the_run_as_timeout() {
    let env = env('l', 1, |_| {}).await;
    let task = "steps:\n  - id: slow\n    cmd: busybox sleep 300\n";
    let id = env.queue(&encoded(task, vec![]), Some(2)).await;
    let (run, log) = env.finished(&id).await;
    assert_eq!(run.status, RunStatus::Timeout, "{log}");
    assert_eq!(containers_of(&id).await, Vec::<String>::new());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_file_task_from_an_upload_runs_and_a_bad_one_errors_with_its_position() {
    let env = env('m', 2, |_| {}).await;
    let file_task = |upload: String| {
        RunRequest::FileTask(FileTaskRequest {
            source: Source::Upload { id: upload },
            task_file: "acb.yaml".to_string(),
            values_file: None,
            values: vec![],
            platform: None,
            timeout_secs: None,
            agent_pool_name: None,
            docker_api: None,
        })
    };
    let good = env.upload(
        &[
            (
                "acb.yaml",
                "steps:\n  - id: show\n    cmd: busybox cat /workspace/note.txt\n    bogus: 1\n",
            ),
            ("note.txt", "uploaded-context-file\n"),
        ],
        None,
    );
    let bad = env.upload(
        &[("acb.yaml", "steps:\n  - id: x\n    cmd: busybox true\n    timeout: abc\n")],
        None,
    );
    let good_id = env.queue(&file_task(good), None).await;
    let bad_id = env.queue(&file_task(bad), None).await;

    let (run, log) = env.finished(&good_id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{log}");
    assert!(log.contains("show | uploaded-context-file\n"), "{log}");
    assert!(
        log.contains("acb.yaml:4:5: warning: steps[0]: unknown step property `bogus`"),
        "{log}"
    );

    let (run, log) = env.finished(&bad_id).await;
    assert_eq!(run.status, RunStatus::Error, "{log}");
    let message = run.error_message.expect("message");
    assert!(message.starts_with("acb.yaml:4:14: error: "), "{message}");
    assert!(log.contains(&message), "{log}");

    let missing = env.queue(&file_task(uploads::new_id()), None).await;
    let (run, _) = env.finished(&missing).await;
    assert_eq!(run.status, RunStatus::Error);
    assert!(run.error_message.expect("message").contains("not found"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_session_settles_what_the_agents_dead_predecessor_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("a{:x}n", std::process::id());
    let store =
        Store::open(dir.path(), RunIdPrefix::new(&prefix).expect("prefix")).await.expect("store");
    let request = serde_json::to_string(&encoded("steps: []\n", vec![])).expect("json");
    let running =
        store.create_run(NewRun::new(RunType::QuickRun, request.clone())).await.expect("queued");
    let started =
        store.create_run(NewRun::new(RunType::QuickRun, request.clone())).await.expect("queued");
    let other = store.create_run(NewRun::new(RunType::QuickRun, request)).await.expect("queued");
    let dead = amd64("dead-agent");
    let ttl = Duration::from_secs(30);
    let claim = store.claim_next(&dead, ttl).await.expect("claim").expect("a run");
    store.set_status(&running.id, claim.epoch, RunStatus::Running).await.expect("running");
    store.claim_next(&dead, ttl).await.expect("claim").expect("a run");
    store.claim_next(&amd64("live-agent"), ttl).await.expect("claim").expect("a run");
    let hub = LogHub::new();
    let mut follower = hub.subscribe(&running.id);
    let dispatch = dispatcher(&store, &hub, dir.path(), RunSettings::default());
    dispatch.start_session("dead-agent", SERVER_STOPPED_MESSAGE).await.expect("session");
    let record = store.get_run(&running.id).await.expect("run");
    assert_eq!(record.status, RunStatus::Error);
    assert_eq!(record.error_message.as_deref(), Some(SERVER_STOPPED_MESSAGE));
    follower.changed().await.expect("the follower is woken");
    assert!(follower.borrow().finished);
    // No step had started: another agent may take it.
    assert_eq!(store.get_run(&started.id).await.expect("run").status, RunStatus::Queued);
    assert_eq!(store.get_run(&other.id).await.expect("run").status, RunStatus::Started);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_log_writer_masks_unmasked_events_split_across_events_and_lines() {
    use kiln_plan::event::{Event, LogStream};
    use kiln_plan::plan::StepId;
    use tokio_util::sync::CancellationToken;

    use super::log_writer::LogWriter;
    use super::spool::{Spool, SpoolLimits};
    use super::step_reporter::StepReporter;
    use kiln_api::run_log::Dependencies;
    use kiln_api::steps::StepBoard;

    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("a{:x}o", std::process::id());
    let store =
        Store::open(dir.path(), RunIdPrefix::new(&prefix).expect("prefix")).await.expect("store");
    let run = store.create_run(NewRun::new(RunType::QuickRun, "{}")).await.expect("queued");
    let claim =
        store.claim_next(&amd64("w"), Duration::from_secs(30)).await.expect("claim").expect("run");
    let hub = LogHub::new();
    let mut follower = hub.subscribe(&run.id);
    let link = LocalLink {
        dispatcher: dispatcher(&store, &hub, dir.path(), RunSettings::default()),
        agent: amd64("w"),
    };
    let spool = Spool::new(claim.run.log_len, SpoolLimits::default(), dir.path().join("spool"));
    let link: Arc<dyn kiln_api::control::Control> = Arc::new(link);
    let ttl = Duration::from_secs(30);
    let mut writer = LogWriter::new(
        link.clone(),
        run.id.clone(),
        claim.epoch,
        spool,
        ttl,
        CancellationToken::new(),
    );
    writer.mask(["two\nlines".to_string(), "hunter2".to_string()]);
    let step = StepId::new("s");
    writer.steps(std::slice::from_ref(&step));
    // As a worker that does not mask would send them: secrets cut between events and lines.
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let pieces: [&[u8]; 5] =
        [b"pass=hun", b"ter2 ok\nfirst two", b"\nlines after\n", b"tail hunt", b"er2"];
    for data in pieces {
        let event =
            Event::Log { step: Some(step.clone()), stream: LogStream::Stdout, data: data.to_vec() };
        tx.send(event).await.expect("send");
    }
    drop(tx);
    let mut dependencies = Dependencies::default();
    let board = StepBoard::new([(&step, &[][..])]);
    let mut steps = StepReporter::new(link.clone(), run.id.clone(), claim.epoch, ttl, board);
    writer.consume(&mut rx, &mut dependencies, &mut steps).await;
    steps.close().await;
    writer.end_streams();
    writer.flush().await;
    writer.close().await;
    let stored: Vec<u8> = store
        .read_log(&run.id, 0, usize::MAX)
        .await
        .expect("log")
        .into_iter()
        .flat_map(|c| c.data)
        .collect();
    let log = String::from_utf8(stored).expect("utf-8");
    assert_eq!(
        log,
        "Waiting for an agent...\ns | pass=*** ok\ns | first *** after\ns | tail ***\n"
    );
    // Followers were woken only for what is stored.
    assert_eq!(follower.borrow_and_update().len, log.len() as u64);
    store.close().await;
}

/// `git` in `dir`, which must succeed.
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=kiln", "-c", "user.email=kiln@invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_refuses_contexts_larger_than_the_limit_once_unpacked_or_fetched() {
    let env = env('o', 1, |c| c.max_context = uploads::ContextLimit::from_mb(1)).await;
    let zeros = "\0".repeat(2 * 1024 * 1024);
    let task = "steps:\n  - cmd: busybox true\n";
    let upload = env.upload(&[("acb.yaml", task), ("zeros", &zeros)], None);
    let repo = tempfile::tempdir().expect("tempdir");
    std::fs::write(repo.path().join("acb.yaml"), task).expect("write");
    std::fs::write(repo.path().join("zeros"), &zeros).expect("write");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "big"]);
    let url = format!("file://{}/.git", repo.path().display());
    for source in [Source::Upload { id: upload }, Source::Git { url }] {
        let request = RunRequest::FileTask(FileTaskRequest {
            source: source.clone(),
            task_file: "acb.yaml".to_string(),
            values_file: None,
            values: vec![],
            platform: None,
            timeout_secs: None,
            agent_pool_name: None,
            docker_api: None,
        });
        let id = env.queue(&request, None).await;
        let (run, log) = env.finished(&id).await;
        assert_eq!(run.status, RunStatus::Error, "{source:?}: {log}");
        assert_eq!(
            run.error_message.as_deref(),
            Some("the context unpacks to more than the server's limit of 1 MiB (--max-context-mb)"),
            "{source:?}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn agent_removes_the_work_directories_of_runs_it_does_not_hold() {
    let env = env('y', 0, |_| {}).await;
    // Work directories as crashed runs leave them: the agent holds no run, so they all go.
    let work = env.dir.path().join("work");
    let runs = [RunId::new("ay1"), RunId::new("ay2")];
    let dirs: Vec<_> = runs
        .iter()
        .flat_map(|run| [work.join(format!("kiln-{run}")), work.join(format!("ctx-{run}"))])
        .collect();
    for path in &dirs {
        std::fs::create_dir_all(path.join("sub")).expect("mkdir");
    }
    let removed = env.agent.remove_leftovers().await;
    assert_eq!(removed.work_dirs.len(), 4, "{removed:?}");
    assert!(dirs.iter().all(|p| !p.exists()));
    assert_eq!(env.agent.remove_leftovers().await, super::Leftovers::default());
    env.stop().await;
}
