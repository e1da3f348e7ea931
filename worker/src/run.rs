//! A run's lifecycle: set up an isolated environment, drive the step graph, tear it all down.
//!
//! Isolation is what ACR lacks on a shared daemon (reference §9 item 20): each run gets its own
//! workspace directory, its own network (step IDs resolve as DNS aliases on it), run-unique
//! container, network and volume names, and the `kiln.run` label on everything, so that two
//! runs of the same plan can share an engine and the end of a run — whatever way it ends —
//! removes exactly what it created.
//!
//! Failure handling follows ACR (§3.1): the first failure without `ignoreErrors` ends the run;
//! running steps are killed, dependants never start, and the run error names the step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use kiln_plan::event::{Event, RunStatus, StepStatus};
use kiln_plan::mask::Secrets;
use kiln_plan::plan::{Action, Plan, PlanStep, RunId, StepId};
use kiln_plan::step_path::{self, StepPath};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cleanup;
use crate::delegate::Built;
use crate::docker_api::{DockerApiMode, RunDockerApi, RunScope};
use crate::engine::Engine;
use crate::events::Events;
use crate::exec;
use crate::image::{self, engine_message};
use crate::init;
use crate::lane::{RunLanes, SandboxSetup};
use crate::lookahead::Lookahead;
use crate::names;
use crate::owner::Owner;
use crate::schedule::Schedule;
use crate::spare::{self, SpareNetwork};
use crate::step::{self, StepOutcome, millis};
use crate::volume::SecretVolumes;
use crate::workspace::Workspace;

/// How to run a plan, beyond the plan itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Directory under which the run's workspace (`kiln-<run id>`) is created; it is
    /// bind-mounted at `/workspace` in every step and removed when the run ends.
    pub workspace_root: PathBuf,
    /// Copied into the workspace before the first step (the build context of `az acr run .`).
    pub context_dir: Option<PathBuf>,
    /// The context directory is the caller's scratch copy (an extracted upload, a fetched
    /// source): it is moved into the workspace, not copied, so a context is on disk once.
    pub move_context: bool,
    /// Limit for the whole run (ACR's run `--timeout`); on expiry the run ends as `Timeout`.
    pub timeout: Option<Duration>,
    /// A network created ahead of the run (see [`crate::spare`]) to use as the run's own
    /// network instead of creating one, which saves a `docker network create` before the
    /// first step. The run owns it from here: its teardown removes it, whether or not the plan
    /// used it (a plan with its own default network does not).
    pub network: Option<SpareNetwork>,
    /// Images pulled before the first step even if the engine has them: a run triggered by a
    /// base-image update must build on the tag's new digest, not on the engine's old copy.
    pub refresh_images: Vec<String>,
    /// What `cmd` steps get of the engine at `/var/run/docker.sock` ([`DockerApiMode`]).
    pub docker_api: DockerApiMode,
    /// How many fast-path step containers may wait prepared ahead of need at a time
    /// ([`crate::lookahead`]); 0 prepares none ahead (a step then prepares its own when ready).
    pub lookahead: usize,
    /// Every `cmd` step takes the classic path (create, attach, start, wait) instead of the
    /// fast one (`kiln_plan::step_path`): for comparing the two, and as a way out.
    pub classic_steps: bool,
}

/// Prepared containers per run unless [`RunOptions::lookahead`] says otherwise: enough to keep
/// a chain of short steps fed on a small engine, few enough to stay cheap on a wide graph.
pub const DEFAULT_LOOKAHEAD: usize = 4;

impl RunOptions {
    pub fn new(workspace_root: impl Into<PathBuf>) -> Self {
        RunOptions {
            workspace_root: workspace_root.into(),
            context_dir: None,
            move_context: false,
            timeout: None,
            network: None,
            refresh_images: Vec::new(),
            docker_api: DockerApiMode::default(),
            lookahead: DEFAULT_LOOKAHEAD,
            classic_steps: false,
        }
    }
}

/// The result of a run, also reported piecewise as events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: RunId,
    pub status: RunStatus,
    /// Why the run did not succeed (`failed to run step ID: <id>: <error>` for a step failure).
    pub error: Option<String>,
    pub elapsed: Duration,
    /// Every step of the plan, in plan order.
    pub steps: Vec<StepSummary>,
    /// What could not be removed at the end; the run's status does not depend on it.
    pub cleanup_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSummary {
    pub id: StepId,
    pub status: StepStatus,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub elapsed: Duration,
    /// The path the step's first container took (`kiln_plan::step_path`; retries and
    /// repetitions take the classic one); `None` for build and push steps, and for steps that
    /// ended before they had a container.
    pub path: Option<StepPath>,
}

/// What every step of a run shares.
pub(crate) struct RunContext<'a> {
    pub(crate) docker: &'a Docker,
    /// Labelled on everything the run creates.
    pub(crate) owner: &'static Owner,
    pub(crate) plan: &'a Plan,
    pub(crate) events: Events,
    pub(crate) workspace: &'a Workspace,
    /// The engine socket and config every `cmd` step mounts.
    pub(crate) docker_api: &'a RunDockerApi,
    pub(crate) volumes: SecretVolumes,
    /// Plan network name → engine name, for the networks the plan declares.
    networks: HashMap<String, String>,
    /// Engine name of the network steps without `network` join.
    default_network: String,
    /// Container removals running off the steps' critical path; awaited before teardown.
    pub(crate) removals: TaskTracker,
    /// What the run's builds made ([`Built`]).
    pub(crate) built: &'a Mutex<Built>,
    /// kiln's init on the host for fast-path containers; `None` when every step takes the
    /// classic path.
    pub(crate) init_path: Option<&'a Path>,
    /// Fast-path containers prepared ahead of need.
    pub(crate) lookahead: Lookahead,
    /// The network namespaces chains of steps share.
    pub(crate) lanes: RunLanes,
}

impl RunContext<'_> {
    /// The engine network a step joins: its own `network` (a plan network by its run-unique
    /// name, anything else such as `host` verbatim), else the run's default network.
    pub(crate) fn network_for<'s>(&'s self, step: &'s PlanStep) -> &'s str {
        match step.network.as_deref() {
            Some(name) => self.networks.get(name).map_or(name, String::as_str),
            None => &self.default_network,
        }
    }
}

/// Executes `plan` on `engine`, sending events to `events` (bounded: a slow consumer slows the
/// run down instead of growing memory; a consumer that hangs up does not stop the run).
/// Cancelling `cancel` kills running steps; the run then ends as `Canceled`. Never panics on
/// engine or plan problems: they end the run with status `Error`.
pub async fn execute(
    engine: &Engine,
    plan: &Plan,
    options: RunOptions,
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
) -> RunSummary {
    let started = Instant::now();
    let events = Events::new(events, Secrets::new(&plan.masked));
    let docker = engine.docker();
    let run_id = &plan.run_id;
    events.send(Event::RunStarted { run_id: run_id.clone() }).await;

    let mut outcomes: Vec<Option<StepOutcome>> = vec![None; plan.steps.len()];
    let built = Mutex::new(Built::default());
    let (status, error, workspace, mut docker_api) =
        match prepare(docker, engine.owner(), plan, &options, &events).await {
            Err(message) => (RunStatus::Error, Some(message), None, None),
            Ok(prepared) => match start_docker_api(engine, plan, &options, &prepared).await {
                Err(e) => (RunStatus::Error, Some(e.to_string()), Some(prepared.workspace), None),
                Ok(docker_api) => {
                    let lanes = RunLanes::new(
                        plan,
                        prepared.init_path.as_ref().map(|init_path| SandboxSetup {
                            docker: docker.clone(),
                            init_path: init_path.clone(),
                            network: prepared.default_network.clone(),
                            labels: names::run_labels(run_id, engine.owner()),
                            platform: plan.platform.clone(),
                        }),
                    );
                    let ctx = RunContext {
                        docker,
                        owner: engine.owner(),
                        plan,
                        events: events.clone(),
                        workspace: &prepared.workspace,
                        docker_api: &docker_api,
                        volumes: SecretVolumes::new(run_id, engine.owner(), &plan.volumes),
                        networks: prepared.networks,
                        default_network: prepared.default_network,
                        removals: TaskTracker::new(),
                        built: &built,
                        init_path: prepared.init_path.as_deref(),
                        lookahead: Lookahead::new(options.lookahead),
                        lanes,
                    };
                    let (status, error) =
                        drive(&ctx, prepared.schedule, &options, &cancel, &mut outcomes).await;
                    ctx.lookahead.discard(docker, &ctx.removals).await;
                    ctx.lanes.settle().await;
                    ctx.removals.close();
                    ctx.removals.wait().await;
                    (status, error, Some(prepared.workspace), Some(docker_api))
                }
            },
        };

    let mut steps = Vec::with_capacity(plan.steps.len());
    for (step, outcome) in plan.steps.iter().zip(outcomes) {
        let outcome = match outcome {
            Some(outcome) => outcome,
            None => {
                let skipped = StepOutcome {
                    status: StepStatus::Skipped,
                    exit_code: None,
                    error: None,
                    elapsed: Duration::ZERO,
                    path: None,
                };
                events
                    .send(Event::StepFinished {
                        step: step.id.clone(),
                        status: skipped.status,
                        exit_code: None,
                        elapsed_ms: 0,
                        error: None,
                    })
                    .await;
                skipped
            }
        };
        steps.push(StepSummary {
            id: step.id.clone(),
            status: outcome.status,
            exit_code: outcome.exit_code,
            error: outcome.error,
            elapsed: outcome.elapsed,
            path: outcome.path,
        });
    }
    if status == RunStatus::Succeeded {
        // ACR prints these for a successful run only, in task-file order (§3.1).
        for step in &steps {
            events
                .system(
                    Some(&step.id),
                    kiln_plan::event::step_marked(&step.id, "successful", millis(step.elapsed)),
                )
                .await;
        }
    }

    // The run's socket closes first, so no step can create anything the sweep would miss.
    if let Some(docker_api) = &mut docker_api {
        docker_api.stop().await;
    }
    // Containers first: detached ones may still be writing into the workspace.
    let mut cleanup_errors = tear_down(docker, run_id, options.network.as_ref(), &events).await;
    let untagged = built.into_inner().unwrap_or_else(PoisonError::into_inner).untagged;
    for error in cleanup::remove_untagged(docker, &untagged).await {
        events.system(None, format!("Warning: cleanup could not remove {error}")).await;
        cleanup_errors.push(error);
    }
    if let Some(docker_api) = docker_api {
        for error in docker_api.finish(docker).await {
            events.system(None, format!("Warning: cleanup could not restore {error}")).await;
            cleanup_errors.push(error);
        }
    }
    if let Some(workspace) = workspace
        && let Err(e) = workspace.remove().await
    {
        events.system(None, format!("Warning: {e}")).await;
        cleanup_errors.push(e.to_string());
    }

    let elapsed = started.elapsed();
    events
        .send(Event::RunFinished {
            run_id: run_id.clone(),
            status,
            elapsed_ms: millis(elapsed),
            error: error.clone(),
        })
        .await;
    RunSummary { run_id: run_id.clone(), status, error, elapsed, steps, cleanup_errors }
}

/// What a run needs before its first step.
struct Prepared {
    schedule: Schedule,
    workspace: Workspace,
    networks: HashMap<String, String>,
    default_network: String,
    init_path: Option<PathBuf>,
}

/// Checks the plan and creates the workspace and networks. Errors are final run errors; what
/// was created before one is removed by the run's teardown.
async fn prepare(
    docker: &Docker,
    owner: &Owner,
    plan: &Plan,
    options: &RunOptions,
    events: &Events,
) -> Result<Prepared, String> {
    let schedule = Schedule::new(plan.steps.iter().map(|s| (&s.id, s.depends_on.as_slice())))
        .map_err(|e| e.to_string())?;
    for image in &options.refresh_images {
        image::pull(docker, image, plan.platform.as_deref(), &plan.credentials, events, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    // Independent of each other, and most are engine round trips: overlap them.
    let (workspace, networks, init_path, ()) = tokio::join!(
        Workspace::create(
            &options.workspace_root,
            &plan.run_id,
            options.context_dir.as_deref(),
            options.move_context
        ),
        create_networks(docker, owner, plan, options.network.as_ref(), events),
        install_init(options, events),
        pull_missing_images(docker, plan, events),
    );
    // Networks that were created are removed by the teardown (by label, or by name for a
    // handed-over one); a workspace that was created is removed here.
    match (workspace, networks) {
        (Ok(workspace), Ok((networks, default_network))) => {
            Ok(Prepared { schedule, workspace, networks, default_network, init_path })
        }
        (Err(e), _) => Err(e.to_string()),
        (Ok(workspace), Err(message)) => {
            if let Err(e) = workspace.remove().await {
                events.system(None, format!("Warning: {e}")).await;
            }
            Err(message)
        }
    }
}

/// kiln's init for fast-path containers, beside the workspaces; `None` (every step classic)
/// when the run asks for the classic path, the host cannot run it, or it cannot be written.
async fn install_init(options: &RunOptions, events: &Events) -> Option<PathBuf> {
    if options.classic_steps || !init::runs_here() {
        return None;
    }
    match init::install(&options.workspace_root).await {
        Ok(path) => Some(path),
        Err(e) => {
            let message = format!("Warning: cannot write kiln's init ({e}); steps run classic");
            events.system(None, message).await;
            None
        }
    }
}

/// Pulls, all at once, the `cmd` steps' images the engine lacks, so that no step waits for a
/// pull and look-ahead can prepare their containers. The pull's lines are the first step's
/// that uses the image, as they were when that step pulled. A pull that fails here is left to
/// the step, which pulls again and reports the failure as its own. Images a build step of the
/// run tags are not pulled (the build makes them), and steps with `pull` set pull for
/// themselves, as ACR's do.
async fn pull_missing_images(docker: &Docker, plan: &Plan, events: &Events) {
    let built = |image: &str| {
        plan.steps.iter().any(|s| match &s.action {
            Action::Build { args } => {
                args.iter().any(|a| a == image || a.ends_with(&format!("={image}")))
            }
            _ => false,
        })
    };
    let mut first_use: Vec<(&str, &StepId)> = Vec::new();
    for step in plan.steps.iter().filter(|s| s.pull.is_none()) {
        if let Action::Cmd { image, .. } = &step.action
            && !first_use.iter().any(|(seen, _)| seen == image)
            && !built(image)
        {
            first_use.push((image, &step.id));
        }
    }
    let platform = plan.platform.as_deref();
    let pulls = first_use.into_iter().map(|(image, step)| async move {
        if let Ok(None) = image::present(docker, image, platform).await {
            let _ =
                image::pull(docker, image, platform, &plan.credentials, events, Some(step)).await;
        }
    });
    futures_util::future::join_all(pulls).await;
}

/// The run's Docker API, beside its workspace, on its default network.
async fn start_docker_api(
    engine: &Engine,
    plan: &Plan,
    options: &RunOptions,
    prepared: &Prepared,
) -> Result<RunDockerApi, crate::docker_api::DockerApiError> {
    let workspace = prepared.workspace.host_dir();
    // The workspace's root, made absolute when the workspace was created.
    let root = workspace.parent().unwrap_or(workspace);
    let scope = RunScope {
        docker: engine.docker(),
        engine_host: engine.host(),
        owner: engine.owner(),
        run: &plan.run_id,
        workspace,
        default_network: &prepared.default_network,
        steps: plan.steps.iter().map(|s| s.id.to_string()).collect(),
        networks: prepared.networks.values().cloned().collect(),
        credentials: &plan.credentials,
    };
    RunDockerApi::start(options.docker_api, root, scope).await
}

/// Creates the plan's networks under run-unique names, and the run's own network unless the
/// plan names a default one (or a network was handed over for it: `spare`). Unlike ACR,
/// declaring networks without `isDefault` does not leave steps without step-ID DNS (reference
/// §9 item 11): they still get the run network.
async fn create_networks(
    docker: &Docker,
    owner: &Owner,
    plan: &Plan,
    spare: Option<&SpareNetwork>,
    events: &Events,
) -> Result<(HashMap<String, String>, String), String> {
    let mut networks = HashMap::new();
    let mut default = None;
    for declared in &plan.networks {
        let name = if declared.skip_creation {
            declared.name.clone()
        } else {
            let name = names::declared_network(&plan.run_id, &declared.name);
            let driver = declared.driver.clone().unwrap_or_else(|| "bridge".into());
            create_network(docker, owner, &plan.run_id, &name, &driver, declared.ipv6, events)
                .await?;
            name
        };
        if declared.is_default {
            // The last default wins, as in ACR.
            default = Some(name.clone());
        }
        networks.insert(declared.name.clone(), name);
    }
    let default = match (default, spare) {
        (Some(name), _) => name,
        (None, Some(spare)) => {
            let name = spare.name().to_string();
            events.system(None, format!("Using Docker network: {name}, driver: 'bridge'")).await;
            name
        }
        (None, None) => {
            let name = names::run_network(&plan.run_id);
            create_network(docker, owner, &plan.run_id, &name, "bridge", false, events).await?;
            name
        }
    };
    Ok((networks, default))
}

async fn create_network(
    docker: &Docker,
    owner: &Owner,
    run: &RunId,
    name: &str,
    driver: &str,
    ipv6: bool,
    events: &Events,
) -> Result<(), String> {
    events.system(None, format!("Creating Docker network: {name}, driver: '{driver}'")).await;
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some(driver.to_string()),
            enable_ipv6: ipv6.then_some(true),
            labels: Some(names::run_labels(run, owner)),
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| format!("cannot create network {name}: {}", engine_message(e)))
}

/// Runs the step graph to its end and returns the run's status and error.
async fn drive(
    ctx: &RunContext<'_>,
    mut schedule: Schedule,
    options: &RunOptions,
    cancel: &CancellationToken,
    outcomes: &mut [Option<StepOutcome>],
) -> (RunStatus, Option<String>) {
    let steps = &ctx.plan.steps;
    if cancel.is_cancelled() {
        return (RunStatus::Canceled, Some("the run was canceled".to_string()));
    }
    // Fires for a step failure, a run timeout and (as a child) for `cancel`: every running
    // step watches it.
    let abort = cancel.child_token();
    let launch = |i: usize| {
        let abort = &abort;
        async move { (i, step::run(ctx, &steps[i], abort).await) }
    };
    let mut running: FuturesUnordered<_> = schedule.initial().into_iter().map(launch).collect();
    let mut ended: Option<(RunStatus, String)> = None;
    let deadline = async {
        match options.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let mut deadline = std::pin::pin!(deadline);

    while !running.is_empty() {
        tokio::select! {
            // First: a step kicks before its command runs, so the kick of a step that has
            // finished is handled before its dependants start, and they find their containers.
            biased;
            () = ctx.lookahead.kicked(), if ended.is_none() => look_ahead(ctx, &schedule),
            Some((i, outcome)) = running.next() => {
                if ended.is_none() {
                    if outcome.status.lets_dependants_run() {
                        running.extend(schedule.release(i).into_iter().map(launch));
                        look_ahead(ctx, &schedule);
                    } else if outcome.status == StepStatus::Failed {
                        let error = outcome.error.as_deref().unwrap_or("failed");
                        ended = Some((
                            RunStatus::Failed,
                            format!("failed to run step ID: {}: {error}", steps[i].id),
                        ));
                        abort.cancel();
                    }
                }
                outcomes[i] = Some(outcome);
            }
            () = cancel.cancelled(), if ended.is_none() => {
                ended = Some((RunStatus::Canceled, "the run was canceled".to_string()));
            }
            () = &mut deadline, if ended.is_none() => {
                let secs = options.timeout.unwrap_or_default().as_secs();
                ended = Some((RunStatus::Timeout, format!("the run timed out after {secs} s")));
                abort.cancel();
            }
            else => break,
        }
    }
    if ended.is_none() && cancel.is_cancelled() {
        // Canceled between the last step finishing and the loop noticing: the work is done,
        // but the caller asked to stop before the run ended, so say so.
        ended = Some((RunStatus::Canceled, "the run was canceled".to_string()));
    }
    match ended {
        Some((status, error)) => (status, Some(error)),
        None => (RunStatus::Succeeded, None),
    }
}

/// Prepares containers for the fast-path steps that come next, up to the run's limit. Steps
/// with secret volumes or `pull` are left to prepare their own when they run: their volume is
/// filled, or their image pulled, only then.
fn look_ahead(ctx: &RunContext<'_>, schedule: &Schedule) {
    let Some(init_path) = ctx.init_path else { return };
    for i in schedule.upcoming() {
        if !ctx.lookahead.has_room() {
            return;
        }
        let step = &ctx.plan.steps[i];
        let Action::Cmd { image, args } = &step.action else { continue };
        if step_path::plan_path(step) != Some(StepPath::Fast)
            || !step.volume_mounts.is_empty()
            || step.pull.is_some()
            || ctx.lookahead.holds(&step.id)
        {
            continue;
        }
        let Ok(create) = step::step_create(ctx, step, image, args, Vec::new()) else { continue };
        let name = names::step_container(&ctx.plan.run_id, &step.id, 1);
        let warm = exec::warm_create(create, init_path);
        ctx.lookahead.prepare(ctx.docker, &step.id, name, warm, ctx.lanes.attach(&step.id));
    }
}

/// Removes everything labelled with the run: detached and kept containers, networks, secret
/// volumes, and anything an interrupted creation left behind; then the network handed to the
/// run, which carries no run label (its containers are gone by then).
async fn tear_down(
    docker: &Docker,
    run: &RunId,
    network: Option<&SpareNetwork>,
    events: &Events,
) -> Vec<String> {
    let mut errors = match cleanup::sweep_run(docker, run).await {
        Ok(report) => report.errors,
        Err(e) => vec![e.to_string()],
    };
    if let Some(network) = network
        && let Err(message) = spare::remove(docker, network.name()).await
    {
        // Worded like the sweep's errors: `<name>: <engine message>`.
        errors.push(format!("{}: {message}", network.name()));
    }
    for error in &errors {
        events.system(None, format!("Warning: cleanup could not remove {error}")).await;
    }
    errors
}
