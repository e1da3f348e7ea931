//! The seam from a step to the build and push modules (`crate::build`, `crate::push`): what
//! they need from the run, and the events their results become.
//!
//! Those modules report output through a synchronous callback (`&dyn Fn(&[u8])`), which cannot
//! wait for a slow event consumer. [`LogPipe`] bridges the two: it buffers up to a fixed amount
//! and forwards it as log events; past that it drops output and says how much, so memory stays
//! bounded either way.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use bollard::Docker;
use tokio::sync::Notify;

use crate::build::{self, BuildRequest};
use crate::event::{Event, Events, LogStream};
use crate::names;
use crate::plan::{Plan, PlanStep, StepId};
use crate::push;
use crate::workspace::CONTAINER_PATH;

/// Output a delegated step may have waiting for the event channel before kiln drops output.
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
}

/// Runs a build or push job. On success, returns the events describing its results
/// (`ImageBuilt`, `DependencyReport`, `ImagePushed`), which the step emits.
pub(crate) async fn run(
    job: Job<'_>,
    request: &Request<'_>,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<Vec<Event>, String> {
    let Request { docker, plan, step, workspace } = *request;
    match job {
        Job::Build { args } => {
            let working_dir = host_working_dir(workspace, step.working_directory.as_deref());
            let labels = names::step_labels(&plan.run_id, &step.id);
            let build = BuildRequest {
                step_id: step.id.as_str(),
                args,
                env: &step.env,
                working_dir: &working_dir,
                workspace,
                labels: &labels,
                credentials: &plan.credentials,
            };
            let outcome = build::run(docker, &build, log).await.map_err(|e| e.to_string())?;
            let mut events: Vec<Event> = outcome
                .images
                .iter()
                .map(|image| Event::ImageBuilt {
                    step: step.id.clone(),
                    image: image.clone(),
                    digest: None,
                })
                .collect();
            let report = serde_json::to_value(&outcome.dependencies).map_err(|e| e.to_string())?;
            events.push(Event::DependencyReport { step: step.id.clone(), report });
            Ok(events)
        }
        Job::Push { images } => {
            let pushed = push::run(docker, images, &plan.credentials, log)
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
    dropped: usize,
    closed: bool,
}

impl LogPipe {
    /// The callback side: never blocks, never grows past [`PIPE_CAPACITY`].
    pub(crate) fn write(&self, bytes: &[u8]) {
        {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let room = PIPE_CAPACITY.saturating_sub(state.pending.len());
            let taken = bytes.len().min(room);
            state.pending.extend_from_slice(&bytes[..taken]);
            state.dropped += bytes.len() - taken;
        }
        self.wake.notify_one();
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
            let (chunk, dropped, closed) = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let chunk = std::mem::take(&mut state.pending);
                let dropped = std::mem::take(&mut state.dropped);
                (chunk, dropped, state.closed)
            };
            let mut safe = mask.push(&chunk).into_owned();
            if closed {
                safe.extend(mask.finish());
            }
            if !safe.is_empty() {
                events.log(Some(step), LogStream::Stdout, &safe).await;
            }
            if dropped > 0 {
                events
                    .system(
                        Some(step),
                        format!(
                            "[{dropped} bytes of output dropped: the log consumer fell behind]"
                        ),
                    )
                    .await;
            }
            if closed {
                return;
            }
            // notify_one stores a permit when nobody waits, so a write between the take above
            // and this await is not missed.
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn pipe_forwards_everything_in_order() {
        let (tx, mut rx) = mpsc::channel(64);
        let events = Events::new(tx, crate::mask::Secrets::default());
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
    async fn pipe_drops_past_capacity_and_says_so() {
        let (tx, mut rx) = mpsc::channel(64);
        let events = Events::new(tx, crate::mask::Secrets::default());
        let pipe = LogPipe::default();
        // Nothing forwards while these are written, as with a stalled consumer.
        pipe.write(&vec![b'x'; PIPE_CAPACITY]);
        pipe.write(b"lost");
        pipe.close();
        pipe.forward(&events, &StepId::new("b")).await;
        drop(events);
        let mut stdout = 0;
        let mut notes = Vec::new();
        while let Some(Event::Log { stream, data, .. }) = rx.recv().await {
            match stream {
                LogStream::Stdout => stdout += data.len(),
                _ => notes.push(String::from_utf8_lossy(&data).into_owned()),
            }
        }
        assert_eq!(stdout, PIPE_CAPACITY);
        assert_eq!(notes, vec!["[4 bytes of output dropped: the log consumer fell behind]\n"]);
    }
}
