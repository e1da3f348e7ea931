//! One step from start to finish: start delay, timeout, repetitions, retries, ignoreErrors.
//!
//! The layering is ACR's (reference §8.5): `repeat + 1` repetitions, each retried up to
//! `retries` times (only when the attempt's output contains one of `retry_on_errors`, if any),
//! all under one `timeout` that starts after `start_delay`. On expiry, or when the run aborts,
//! the running container is killed rather than abandoned. Push steps get neither retries nor
//! repetitions, as in ACR (the push module retries each image itself).
//!
//! Each attempt gets its own container name, so a `keep` or `detach` step can be retried or
//! repeated without colliding with its earlier containers (reference §9 item 12).
//!
//! A `cmd` step's first attempt runs by `exec` in the container prepared ahead for it
//! (`exec`, `lookahead`) when there is one and nothing needs the classic path
//! (`kiln_plan::step_path`); every other attempt gets a classic container (`container`).
//! Either way the attempt has a fresh container of its own, with the same settings.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bollard::models::ImageInspect;
use kiln_plan::event::{Event, LogStream, StepStatus};
use kiln_plan::plan::{Action, PlanStep, Pull};
use kiln_plan::step_path::{self, Classic, StepPath};
use tokio_util::sync::CancellationToken;

use crate::container::{self, Exit, Setup};
use crate::delegate::{self, Job, LogPipe, Request};
use crate::exec;
use crate::image;
use crate::init;
use crate::lane;
use crate::names;
use crate::run::RunContext;
use crate::workspace::container_working_dir;

/// How a step ended, for the run's bookkeeping and summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepOutcome {
    pub(crate) status: StepStatus,
    pub(crate) exit_code: Option<i64>,
    pub(crate) error: Option<String>,
    pub(crate) elapsed: Duration,
    /// The path the step's first container took (later attempts are classic); `None` for
    /// build and push steps, and for a step that ended before it had a container.
    pub(crate) path: Option<StepPath>,
}

/// Why an attempt (or the whole step) failed.
#[derive(Debug)]
struct Failure {
    message: String,
    exit_code: Option<i64>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Failure { message: message.into(), exit_code: None }
    }
}

/// One attempt's coordinates: its number (for the container name), the output watch that
/// decides about retrying, and the stop signal.
struct Attempt<'a, 'p> {
    number: u32,
    /// Which path the step's first container took, for its summary.
    path: &'a Mutex<Option<StepPath>>,
    watch: &'a mut OutputWatch<'p>,
    stop: &'a CancellationToken,
}

/// Runs `step` and emits its `StepFinished` event. `abort` fires when the run ends early
/// (another step failed, cancel, run timeout); the step then stops and reports `canceled`.
pub(crate) async fn run(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    abort: &CancellationToken,
) -> StepOutcome {
    let started = Instant::now();
    let path = Mutex::new(None);
    let id = &step.id;
    let network = ctx.network_for(step);
    ctx.events
        .system(
            Some(id),
            format!(
                "Executing step ID: {id}. Timeout(sec): {}, Working directory: '{}', Network: '{network}'",
                step.timeout_secs,
                step.working_directory
                    .as_deref()
                    .map(container_working_dir)
                    .unwrap_or_default(),
            ),
        )
        .await;
    if let Some(isolation) = step.isolation.as_deref().filter(|i| *i != "default") {
        ctx.events
            .system(
                Some(id),
                format!(
                    "Warning: isolation '{isolation}' applies to Windows containers only; \
                     ignoring it on this Linux engine"
                ),
            )
            .await;
    }

    let result = if wait_start_delay(ctx, step, abort).await {
        run_under_timeout(ctx, step, &path, abort).await
    } else {
        Err((Failure::new("the run ended before the step started"), false))
    };

    let (status, exit_code, error) = match result {
        Ok(code) => (StepStatus::Successful, code, None),
        Err((failure, timed_out)) => {
            let message = if timed_out {
                format!("timed out after {} s", step.timeout_secs)
            } else {
                ctx.events.mask(&failure.message)
            };
            let status = if abort.is_cancelled() && !timed_out {
                StepStatus::Canceled
            } else if step.ignore_errors {
                ctx.events
                    .system(
                        Some(id),
                        format!(
                            "Step ID: {id} encountered an error: {message}, but is set to ignore errors. Continuing..."
                        ),
                    )
                    .await;
                StepStatus::Ignored
            } else {
                StepStatus::Failed
            };
            (status, failure.exit_code, Some(message))
        }
    };
    let path = path.into_inner().unwrap_or_else(PoisonError::into_inner);
    let outcome = StepOutcome { status, exit_code, error, elapsed: started.elapsed(), path };
    ctx.events
        .send(Event::StepFinished {
            step: id.clone(),
            status: outcome.status,
            exit_code: outcome.exit_code,
            elapsed_ms: millis(outcome.elapsed),
            error: outcome.error.clone(),
        })
        .await;
    outcome
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sleeps `start_delay` (outside the step timeout, as in ACR). False if the run aborted first.
async fn wait_start_delay(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    abort: &CancellationToken,
) -> bool {
    if step.start_delay_secs == 0 {
        return true;
    }
    ctx.events
        .system(
            Some(&step.id),
            format!(
                "Waiting {} seconds before starting step ID: {}",
                step.start_delay_secs, step.id
            ),
        )
        .await;
    sleep_unless(Duration::from_secs(step.start_delay_secs), abort).await
}

/// Sleeps unless `stop` fires first; true if the whole sleep happened.
async fn sleep_unless(duration: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = stop.cancelled() => false,
    }
}

/// The step's work under its timeout (0 = none). The error carries whether the timeout hit.
async fn run_under_timeout(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    path: &Mutex<Option<StepPath>>,
    abort: &CancellationToken,
) -> Result<Option<i64>, (Failure, bool)> {
    // Cancelling `stop` kills whatever runs now; it also fires when the run aborts.
    let stop = abort.child_token();
    let mut work = std::pin::pin!(repeat_with_retries(ctx, step, path, &stop));
    if step.timeout_secs == 0 {
        return work.await.map_err(|f| (f, false));
    }
    tokio::select! {
        result = &mut work => result.map_err(|f| (f, false)),
        () = tokio::time::sleep(Duration::from_secs(step.timeout_secs)) => {
            stop.cancel();
            // Let the attempt kill its container and drain its output before reporting.
            let result = work.await;
            Err((result.err().unwrap_or_else(|| Failure::new("timed out")), true))
        }
    }
}

async fn repeat_with_retries(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    path: &Mutex<Option<StepPath>>,
    stop: &CancellationToken,
) -> Result<Option<i64>, Failure> {
    let (repetitions, retries) = match step.action {
        Action::Push { .. } => (0, 0),
        _ => (step.repeat, step.retries),
    };
    if let (Action::Cmd { image, .. }, Some(pull)) = (&step.action, &step.pull) {
        explicit_pull(ctx, step, image, pull, stop).await?;
    }
    let mut attempt = 0;
    let mut last_code = None;
    let mut failures = Vec::new();
    for _ in 0..=repetitions {
        let mut retries_left = retries;
        loop {
            attempt += 1;
            ctx.events.send(Event::StepStarted { step: step.id.clone(), attempt }).await;
            let mut watch = OutputWatch::new(&step.retry_on_errors);
            let mut current = Attempt { number: attempt, path, watch: &mut watch, stop };
            let failure = match run_attempt(ctx, step, &mut current).await {
                Ok(code) => {
                    last_code = code;
                    break;
                }
                Err(failure) => failure,
            };
            if stop.is_cancelled() {
                return Err(failure);
            }
            if retries_left > 0 && watch.allows_retry() {
                retries_left -= 1;
                ctx.events
                    .system(
                        Some(&step.id),
                        format!(
                            "Container failed during run: {}, waiting {} seconds before retrying...",
                            step.id, step.retry_delay_secs
                        ),
                    )
                    .await;
                if !sleep_unless(Duration::from_secs(step.retry_delay_secs), stop).await {
                    return Err(failure);
                }
                continue;
            }
            if retries_left > 0 {
                ctx.events
                    .system(
                        Some(&step.id),
                        format!(
                            "Container failed during run: {}; its output contains none of retryOnErrors, not retrying",
                            step.id
                        ),
                    )
                    .await;
            }
            last_code = failure.exit_code;
            failures.push(failure);
            break;
        }
    }
    match failures.len() {
        0 => Ok(last_code),
        1 => Err(failures.remove(0)),
        n => Err(Failure {
            message: format!(
                "{n} of {} repetitions failed: {}",
                repetitions + 1,
                failures.iter().map(|f| f.message.as_str()).collect::<Vec<_>>().join("; ")
            ),
            exit_code: last_code,
        }),
    }
}

/// `pull: true`: pull even when present, with its own retries (`cmdDownloadRetries`).
async fn explicit_pull(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    image: &str,
    pull: &Pull,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let mut tries_left = pull.retries;
    loop {
        let pulled = tokio::select! {
            result = image::pull(ctx.docker, image, ctx.plan.platform.as_deref(), &ctx.plan.credentials, &ctx.events, Some(&step.id)) => result,
            () = stop.cancelled() => return Err(Failure::new(format!("pulling {image} was interrupted"))),
        };
        match pulled {
            Ok(()) => return Ok(()),
            Err(e) if tries_left > 0 => {
                tries_left -= 1;
                ctx.events
                    .system(
                        Some(&step.id),
                        format!(
                            "{e}, waiting {} seconds before retrying...",
                            pull.retry_delay_secs
                        ),
                    )
                    .await;
                if !sleep_unless(Duration::from_secs(pull.retry_delay_secs), stop).await {
                    return Err(Failure::new(e.to_string()));
                }
            }
            Err(e) => return Err(Failure::new(e.to_string())),
        }
    }
}

async fn run_attempt(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    attempt: &mut Attempt<'_, '_>,
) -> Result<Option<i64>, Failure> {
    let result = match &step.action {
        Action::Cmd { image, args } => run_container(ctx, step, image, args, attempt).await,
        Action::Build { args } => run_delegated(ctx, step, Job::Build { args }, attempt).await,
        Action::Push { images } => run_delegated(ctx, step, Job::Push { images }, attempt).await,
    };
    if let Err(failure) = &result {
        // Engine errors count as output for retryOnErrors, as `docker run` prints them.
        attempt.watch.feed(LogStream::Stderr, failure.message.as_bytes());
    }
    result
}

async fn run_container(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    image: &str,
    args: &[String],
    attempt: &mut Attempt<'_, '_>,
) -> Result<Option<i64>, Failure> {
    let stop = attempt.stop;
    let id = &step.id;
    let platform = ctx.plan.platform.as_deref();
    let mut present = image::present(ctx.docker, image, platform)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    if present.is_none() {
        tokio::select! {
            result = image::pull(ctx.docker, image, platform, &ctx.plan.credentials, &ctx.events, Some(id)) => {
                result.map_err(|e| Failure::new(e.to_string()))?;
            }
            () = stop.cancelled() => return Err(Failure::new(format!("pulling {image} was interrupted"))),
        }
        present = image::present(ctx.docker, image, platform)
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
    }

    let mut volume_binds = Vec::new();
    for mount in &step.volume_mounts {
        let volume = ctx
            .volumes
            .prepare(ctx.docker, &mount.name, image)
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        volume_binds.push(format!("{volume}:{}", mount.mount_path));
    }
    let mut create = step_create(ctx, step, image, args, volume_binds)
        .map_err(|e| Failure::new(e.to_string()))?;
    lane::attach(&mut create, ctx.lanes.attach(id).await);
    let name = names::step_container(&ctx.plan.run_id, id, attempt.number);
    let command = fast_command(ctx, step, args, present.as_ref());
    // Only a first attempt's container is prepared ahead; one prepared now would cost what a
    // classic container costs, plus the exec.
    let warm = match command {
        Ok(_) if attempt.number == 1 => take_prepared(ctx, step, present.as_ref()).await,
        _ => {
            discard_prepared(ctx, step).await;
            None
        }
    };
    let path = match (&warm, &command) {
        (Some(_), _) => StepPath::Fast,
        (None, Err(reason)) => StepPath::Classic(*reason),
        (None, Ok(_)) => StepPath::Classic(Classic::NotPrepared),
    };
    attempt.path.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(path);
    ctx.events.system(Some(id), format!("Launching container with name: {name}")).await;

    if step.detach {
        container::start_detached(ctx.docker, &name, create)
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        ctx.lookahead.kick();
        ctx.events
            .system(Some(id), format!("Successfully started detached container: {name}"))
            .await;
        return Ok(None);
    }
    let output = container::Output {
        events: &ctx.events,
        step: id,
        observe: &mut |stream, bytes| attempt.watch.feed(stream, bytes),
    };
    let exit = match (warm, command) {
        (Some(warm), Ok(argv)) => {
            ctx.lookahead.kick();
            let command =
                exec::Command { argv, user: step.user.as_deref(), privileged: step.privileged };
            exec::run(ctx.docker, &warm, command, output, stop, &ctx.removals).await
        }
        _ => {
            // Prepare what comes next only once this container runs: ahead-of-need work must
            // not compete with the start of a step that is ready now.
            let started = || ctx.lookahead.kick();
            match container::create_container(ctx.docker, &name, create).await {
                Ok(()) => {
                    let removals = &ctx.removals;
                    container::run(ctx.docker, &name, step.keep, output, stop, removals, &started)
                        .await
                }
                Err(e) => Err(e),
            }
        }
    }
    .map_err(|e| Failure::new(e.to_string()))?;
    match exit {
        Exit::Code(0) => {
            ctx.events.system(Some(id), format!("Successfully executed container: {name}")).await;
            Ok(Some(0))
        }
        Exit::Code(code) => {
            Err(Failure { message: format!("exit status {code}"), exit_code: Some(code) })
        }
        Exit::Stopped => Err(Failure::new(format!("container {name} was killed"))),
    }
}

/// The classic create request for `step`'s container, on the run's network (its lane's
/// namespace is a later choice, [`lane::attach`]); a prepared container's is made from it
/// ([`exec::warm_create`]), so both paths give a step the same settings.
pub(crate) fn step_create(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    image: &str,
    args: &[String],
    volume_binds: Vec<String>,
) -> Result<container::Create, container::ContainerError> {
    let mut binds = vec![ctx.workspace.bind()];
    binds.extend(ctx.docker_api.binds().iter().cloned());
    binds.extend(volume_binds);
    container::create_body(
        step,
        Setup {
            image,
            args,
            labels: names::step_labels(&ctx.plan.run_id, &step.id, ctx.owner),
            binds,
            env: ctx.docker_api.env(),
            network: ctx.network_for(step),
            platform: ctx.plan.platform.as_deref(),
        },
    )
}

/// The command the fast path runs for `step` in `image`, or why the step takes the classic
/// path (the run's choice, the plan's, or the image's).
fn fast_command(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    args: &[String],
    image: Option<&ImageInspect>,
) -> Result<Vec<String>, Classic> {
    if ctx.init_path.is_none() {
        return Err(if init::runs_here() { Classic::Forced } else { Classic::ForeignHost });
    }
    let plan = step_path::plan_path(step).unwrap_or(StepPath::Classic(Classic::Forced));
    let Some(image) = image else { return Err(Classic::NotPrepared) };
    if let StepPath::Classic(reason) =
        step_path::image_path(plan, image.os.as_deref(), init::runs_here())
    {
        return Err(reason);
    }
    let config = image.config.as_ref();
    let list = |field: Option<&Vec<String>>| field.cloned().unwrap_or_default();
    step_path::command(
        step.entry_point.as_deref(),
        args,
        &list(config.and_then(|c| c.entrypoint.as_ref())),
        &list(config.and_then(|c| c.cmd.as_ref())),
    )
    .ok_or(Classic::NoCommand)
}

/// The container prepared ahead of need for `step`, if its image is still the tag's (a build
/// or pull in the run may have moved the tag since).
async fn take_prepared(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    image: Option<&ImageInspect>,
) -> Option<exec::Warm> {
    let warm = ctx.lookahead.take(&step.id).await?;
    if warm.image_id.as_str() == image.and_then(|i| i.id.as_deref()).unwrap_or_default() {
        return Some(warm);
    }
    // The attempt needs the name back, so wait for the removal.
    let _ = container::remove(ctx.docker, &warm.name).await;
    None
}

/// Removes a container prepared ahead for a step that turned out to take the classic path
/// (its image's settings, or a later attempt): the step's container needs its name.
async fn discard_prepared(ctx: &RunContext<'_>, step: &PlanStep) {
    if let Some(warm) = ctx.lookahead.take(&step.id).await {
        let _ = container::remove(ctx.docker, &warm.name).await;
    }
}

async fn run_delegated(
    ctx: &RunContext<'_>,
    step: &PlanStep,
    job: Job<'_>,
    attempt: &mut Attempt<'_, '_>,
) -> Result<Option<i64>, Failure> {
    let stop = attempt.stop;
    let request = Request {
        docker: ctx.docker,
        plan: ctx.plan,
        step,
        workspace: ctx.workspace.host_dir(),
        built: ctx.built,
    };
    let pipe = LogPipe::default();
    let watch = Mutex::new(&mut *attempt.watch);
    let log = |bytes: &[u8]| {
        watch.lock().unwrap_or_else(PoisonError::into_inner).feed(LogStream::Stdout, bytes);
        pipe.write(bytes);
    };
    let work = async {
        let result = tokio::select! {
            result = pipe.throttle(delegate::run(job, &request, &log)) => result,
            // Dropping the job's future closes its engine connections, which ends the build
            // or push on the engine side.
            () = stop.cancelled() => Err("interrupted".to_string()),
        };
        pipe.close();
        result
    };
    let (result, ()) = tokio::join!(work, pipe.forward(&ctx.events, &step.id));
    let reported = result.map_err(Failure::new)?;
    for event in reported {
        ctx.events.send(event).await;
    }
    Ok(None)
}

/// Decides whether a failed attempt may be retried under `retry_on_errors`: true when no
/// patterns are set, or when the attempt's output contained one of them.
///
/// ACR searches the attempt's whole output; kiln streams it through and keeps, per stream,
/// only the last `longest pattern - 1` bytes, which is all a match straddling two chunks
/// needs, so memory stays bounded whatever the step prints.
#[derive(Debug)]
pub(crate) struct OutputWatch<'a> {
    patterns: &'a [String],
    /// Unmatched tails of stdout and stderr (other streams count as stderr).
    tails: [Vec<u8>; 2],
    matched: bool,
}

impl<'a> OutputWatch<'a> {
    pub(crate) fn new(patterns: &'a [String]) -> Self {
        OutputWatch {
            patterns,
            tails: [Vec::new(), Vec::new()],
            // Go's strings.Contains(s, "") is true: an empty pattern matches any output.
            matched: patterns.iter().any(String::is_empty),
        }
    }

    pub(crate) fn feed(&mut self, stream: LogStream, bytes: &[u8]) {
        if self.matched || self.patterns.is_empty() {
            return;
        }
        let tail = &mut self.tails[usize::from(stream != LogStream::Stdout)];
        tail.extend_from_slice(bytes);
        if self.patterns.iter().any(|p| contains(tail, p.as_bytes())) {
            self.matched = true;
            self.tails = [Vec::new(), Vec::new()];
            return;
        }
        let keep = self.patterns.iter().map(String::len).max().unwrap_or(0).saturating_sub(1);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }

    pub(crate) fn allows_retry(&self) -> bool {
        self.patterns.is_empty() || self.matched
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_patterns_always_retries() {
        let none = patterns(&[]);
        let watch = OutputWatch::new(&none);
        assert!(watch.allows_retry());
    }

    #[test]
    fn retries_only_when_a_pattern_appears() {
        let p = patterns(&["connection refused", "503"]);
        let mut watch = OutputWatch::new(&p);
        watch.feed(LogStream::Stdout, b"starting\nfatal: bad input\n");
        assert!(!watch.allows_retry());
        watch.feed(LogStream::Stderr, b"upstream said 503\n");
        assert!(watch.allows_retry());
    }

    #[test]
    fn matches_across_chunk_boundaries_with_a_bounded_tail() {
        let p = patterns(&["connection refused"]);
        let mut watch = OutputWatch::new(&p);
        watch.feed(LogStream::Stderr, &vec![b'x'; 100_000]);
        watch.feed(LogStream::Stderr, b"error: connec");
        assert!(watch.tails[1].len() < "connection refused".len());
        watch.feed(LogStream::Stderr, b"tion refused\n");
        assert!(watch.allows_retry());
    }

    #[test]
    fn streams_do_not_combine_into_false_matches() {
        let p = patterns(&["abcd"]);
        let mut watch = OutputWatch::new(&p);
        watch.feed(LogStream::Stdout, b"ab");
        watch.feed(LogStream::Stderr, b"cd");
        assert!(!watch.allows_retry());
        watch.feed(LogStream::Stdout, b"cd");
        assert!(watch.allows_retry());
    }

    #[test]
    fn empty_pattern_matches_like_go() {
        let p = patterns(&[""]);
        assert!(OutputWatch::new(&p).allows_retry());
    }

    #[test]
    fn contains_finds_substrings() {
        assert!(contains(b"hello world", b"o w"));
        assert!(!contains(b"hello", b"hello!"));
        assert!(contains(b"", b""));
    }
}
