//! The seam from a step to the build and push modules (`crate::build`, `crate::push`): what
//! they need from the run, and the events their results become.
//!
//! Those modules report output through a synchronous callback (`&dyn Fn(&[u8])`), called from
//! inside their own futures, in the same task as the consumer: the callback can neither block
//! (it would block the task that drains it) nor await. [`LogPipe`] bridges the two without
//! losing output: the callback always appends, and [`LogPipe::throttle`] stops polling the
//! build/push future while the buffer is over capacity, so the engine's stream is not read and
//! the producer waits for the consumer (back-pressure). Memory stays bounded by the capacity
//! plus what one poll of the job decodes from bytes the engine already delivered.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Poll, Waker};

use bollard::Docker;
use kiln_plan::event::{Event, LogStream};
use kiln_plan::plan::{Plan, PlanStep, StepId};
use tokio::sync::Notify;

use crate::build::{self, BuildRequest};
use crate::events::Events;
use crate::push;
use crate::workspace::CONTAINER_PATH;

/// Output a delegated step may have waiting for the event channel before its job is paused.
const PIPE_CAPACITY: usize = 1024 * 1024;

/// What a build or push step does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Job<'a> {
    Build { args: &'a [String] },
    Push { images: &'a [String] },
}

/// What the build and push modules get from the run besides their own arguments.
pub(crate) struct Request<'a> {
    pub(crate) docker: &'a Docker,
    pub(crate) plan: &'a Plan,
    pub(crate) step: &'a PlanStep,
    /// The run workspace on the host (`/workspace` in step containers).
    pub(crate) workspace: &'a Path,
    /// What the run's builds made, for its later push steps and its teardown.
    pub(crate) built: &'a Mutex<Built>,
}

/// What a run's build steps leave for its later steps and its teardown.
#[derive(Debug, Default)]
pub(crate) struct Built {
    /// IDs of images built without a tag: nothing can name them after the run, so its
    /// teardown removes them (images carry no run label to find them by).
    pub(crate) untagged: Vec<String>,
    /// Multi-platform images (`--platform a,b`) by tag (`:latest` added), with their
    /// platforms: a push of the tag pushes each platform's image and then their manifest list.
    pub(crate) multi_platform: HashMap<String, Vec<String>>,
}

/// Runs a build or push job. On success, returns the events describing its results
/// (`ImageBuilt`, `DependencyReport`, `ImagePushed`), which the step emits.
pub(crate) async fn run(
    job: Job<'_>,
    request: &Request<'_>,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<Vec<Event>, String> {
    let Request { docker, plan, step, workspace, built } = *request;
    match job {
        Job::Build { args } => {
            let working_dir = host_working_dir(workspace, step.working_directory.as_deref());
            let build = BuildRequest {
                step_id: step.id.as_str(),
                args,
                env: &step.env,
                working_dir: &working_dir,
                workspace,
                credentials: &plan.credentials,
                git_ssh: plan.git_ssh.as_ref(),
                context_limit: plan.context_limit,
                platform: plan.platform.as_deref(),
                cache: step.cache.then_some(build::cache::Scope {
                    registry: plan.registry.as_deref(),
                    task_name: plan.task_name.as_deref(),
                }),
            };
            let outcome = build::run(docker, &build, log).await.map_err(|e| e.to_string())?;
            {
                let mut built = built.lock().unwrap_or_else(PoisonError::into_inner);
                if outcome.images.is_empty() {
                    built.untagged.push(outcome.image_id.clone());
                }
                if !outcome.platforms.is_empty() {
                    for image in &outcome.images {
                        built.multi_platform.insert(image.clone(), outcome.platforms.clone());
                    }
                }
            }
            let mut events: Vec<Event> = outcome
                .images
                .iter()
                .map(|image| Event::ImageBuilt {
                    step: step.id.clone(),
                    image: image.clone(),
                    digest: None,
                })
                .collect();
            // The report as ACR prints it (kebab-case keys): what the log shows and the run keeps.
            let report = serde_json::to_value(kiln_plan::report::printed(&outcome.dependencies))
                .map_err(|e| e.to_string())?;
            events.push(Event::DependencyReport { step: step.id.clone(), report });
            Ok(events)
        }
        Job::Push { images } => {
            let multi_platform =
                built.lock().unwrap_or_else(PoisonError::into_inner).multi_platform.clone();
            let pushed = push::run(docker, images, &multi_platform, &plan.credentials, log)
                .await
                .map_err(|e| e.to_string())?;
            Ok(pushed
                .into_iter()
                .map(|p| Event::ImagePushed {
                    step: step.id.clone(),
                    image: p.image,
                    digest: p.digest,
                })
                .collect())
        }
    }
}

/// The host directory behind a step's working directory (`/workspace/sub` ⇒ `<workspace>/sub`);
/// one outside the workspace falls back to the workspace itself, where the build module's
/// confinement check reports a context outside it.
fn host_working_dir(workspace: &Path, dir: Option<&str>) -> PathBuf {
    let inside = dir
        .and_then(|d| d.strip_prefix(CONTAINER_PATH))
        .map(|rest| rest.trim_start_matches('/'))
        .filter(|rest| !rest.is_empty());
    match inside {
        Some(rest) => workspace.join(rest),
        None => workspace.to_path_buf(),
    }
}

/// A bounded buffer between a synchronous log callback and the asynchronous event channel.
#[derive(Debug, Default)]
pub(crate) struct LogPipe {
    state: Mutex<PipeState>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct PipeState {
    pending: Vec<u8>,
    closed: bool,
    /// The throttled job, parked while `pending` is over capacity.
    producer: Option<Waker>,
    /// Largest `pending` seen (tests check the bound).
    peak: usize,
}

impl LogPipe {
    /// The callback side: never blocks and never drops; [`LogPipe::throttle`] keeps the
    /// buffer bounded by pausing the producer.
    pub(crate) fn write(&self, bytes: &[u8]) {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.pending.extend_from_slice(bytes);
            state.peak = state.peak.max(state.pending.len());
        }
        self.wake.notify_one();
    }

    /// Polls `job` (the future whose callback writes into this pipe) only while the buffer
    /// has room: a full buffer parks the job until [`LogPipe::forward`] takes the output.
    pub(crate) async fn throttle<F: Future>(&self, job: F) -> F::Output {
        let mut job = pin!(job);
        std::future::poll_fn(|cx| {
            {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.pending.len() >= PIPE_CAPACITY {
                    state.producer = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            job.as_mut().poll(cx)
        })
        .await
    }

    /// No more writes will come; [`LogPipe::forward`] returns once the buffer is empty.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.wake.notify_one();
    }

    /// The event side: sends buffered output as stdout log events of `step` until closed.
    pub(crate) async fn forward(&self, events: &Events, step: &StepId) {
        let mut mask = events.masker();
        loop {
            let (chunk, closed, producer) = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let chunk = std::mem::take(&mut state.pending);
                (chunk, state.closed, state.producer.take())
            };
            // Room again: the job may go on producing while this chunk is sent.
            if let Some(producer) = producer {
                producer.wake();
            }
            let mut safe = mask.push(&chunk).into_owned();
            if closed {
                safe.extend(mask.finish());
            }
            if !safe.is_empty() {
                events.log(Some(step), LogStream::Stdout, &safe).await;
            }
            if closed {
                return;
            }
            // notify_one stores a permit when nobody waits, so a write between the take above
            // and this await is not missed.
            self.wake.notified().await;
        }
    }

    #[cfg(test)]
    fn peak(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn pipe_forwards_everything_in_order() {
        let (tx, mut rx) = mpsc::channel(64);
        let events = Events::new(tx, kiln_plan::mask::Secrets::default());
        let pipe = LogPipe::default();
        let step = StepId::new("b");
        let producer = async {
            for i in 0..100u8 {
                pipe.write(&[i]);
                tokio::task::yield_now().await;
            }
            pipe.close();
        };
        tokio::join!(producer, pipe.forward(&events, &step));
        drop(events);
        let mut received = Vec::new();
        while let Some(Event::Log { data, .. }) = rx.recv().await {
            received.extend(data);
        }
        assert_eq!(received, (0..100u8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_stalled_consumer_pauses_the_producer_and_loses_nothing() {
        // A one-slot channel: the consumer takes one event per turn while the producer writes
        // four times what the pipe holds; the producer must wait instead of dropping output or
        // growing the buffer.
        let (tx, mut rx) = mpsc::channel(1);
        let events = Events::new(tx, kiln_plan::mask::Secrets::default());
        let pipe = LogPipe::default();
        let step = StepId::new("b");
        let piece = vec![b'x'; 64 * 1024];
        let pieces = 4 * PIPE_CAPACITY / piece.len();
        let producer = async {
            pipe.throttle(async {
                for _ in 0..pieces {
                    pipe.write(&piece);
                    tokio::task::yield_now().await;
                }
            })
            .await;
            pipe.close();
        };
        let consumer = async {
            let mut received = 0;
            while let Some(Event::Log { data, .. }) = rx.recv().await {
                received += data.len();
            }
            received
        };
        let run = async {
            tokio::join!(producer, pipe.forward(&events, &step));
            drop(events);
        };
        let ((), received) = tokio::join!(run, consumer);
        assert_eq!(received, pieces * piece.len());
        assert!(pipe.peak() < PIPE_CAPACITY + piece.len(), "peak {}", pipe.peak());
    }
}
