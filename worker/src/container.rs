//! One container's life: create, attach, start, stream, wait, kill, remove.
//!
//! This is `docker run` done through the Engine API, so kiln never shells out and never puts a
//! shell between the task file and the container (reference §9 item 8). The order matters:
//! kiln attaches **before** starting, so no early output is lost, and drains the output stream
//! to its end before reporting the exit, so every log event of an attempt precedes its result.
//! A stop request (timeout, cancel, another step's failure) kills the container and still
//! drains what it wrote.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, RemoveContainerOptions,
};
use futures_util::StreamExt;
use kiln_plan::event::LogStream;
use kiln_plan::plan::{PlanStep, StepId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Events;
use crate::image::engine_message;
use crate::ports::{PortError, Ports};
use crate::workspace::container_working_dir;

/// How long a killed container may take to report its exit before kiln stops waiting for it
/// (the run-end sweep removes it regardless).
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("invalid cpus value {0:?}: expected a positive number such as 0.5 or 2")]
    Cpus(String),
    #[error("cannot create container {name}: {message}")]
    Create { name: String, message: String },
    #[error("cannot attach to container {name}: {message}")]
    Attach { name: String, message: String },
    #[error("cannot start container {name}: {message}")]
    Start { name: String, message: String },
    #[error("lost track of container {name}: {message}")]
    Wait { name: String, message: String },
    #[error("cannot run the step's command in container {name}: {message}")]
    Exec { name: String, message: String },
    #[error("container {name} did not stop within {} s of being killed", KILL_GRACE.as_secs())]
    KillTimeout { name: String },
}

/// Everything a step container needs besides the step's own properties.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    pub(crate) image: &'a str,
    pub(crate) args: &'a [String],
    pub(crate) labels: HashMap<String, String>,
    /// `source:target` binds: the workspace and the step's secret volumes.
    pub(crate) binds: Vec<String>,
    /// Variables the step gets unless its own `env` sets them (the Docker API's).
    pub(crate) env: &'a [(String, String)],
    /// Engine name of the network the container joins.
    pub(crate) network: &'a str,
    /// The run's platform (`os/arch[/variant]`); `None`: whatever the image is.
    pub(crate) platform: Option<&'a str>,
}

/// A container to create: the request body and the platform the engine must run it as (the
/// create call's `platform` parameter, API 1.41, which refuses an image of another platform
/// rather than running it under whatever emulation happens to be there).
#[derive(Debug, Clone)]
pub(crate) struct Create {
    pub(crate) body: ContainerCreateBody,
    pub(crate) platform: Option<String>,
}

/// The create request for `step`, mapping each step property the way ACR's `docker run`
/// command line does (reference §2.3, §3).
pub(crate) fn create_body(step: &PlanStep, setup: Setup<'_>) -> Result<Create, ContainerError> {
    let ports = Ports::parse(&step.ports, &step.expose)?;
    let nano_cpus = step.cpus.as_deref().map(nano_cpus).transpose()?;
    // Docker only resolves names on user-defined networks and rejects aliases elsewhere.
    let networking_config = is_user_defined(setup.network).then(|| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            setup.network.to_string(),
            EndpointSettings { aliases: Some(vec![step.id.to_string()]), ..Default::default() },
        )])),
    });
    let body = ContainerCreateBody {
        image: Some(setup.image.to_string()),
        // Empty args keep the image's CMD, like `docker run image` with nothing after it.
        cmd: (!setup.args.is_empty()).then(|| setup.args.to_vec()),
        entrypoint: step.entry_point.clone().map(|ep| vec![ep]),
        env: Some(crate::docker_api::merged_env(
            step.env.iter().map(|v| (v.name.clone(), v.value.clone())),
            setup.env,
        )),
        working_dir: step.working_directory.as_deref().map(container_working_dir),
        user: step.user.clone(),
        labels: Some(setup.labels),
        attach_stdout: Some(!step.detach),
        attach_stderr: Some(!step.detach),
        tty: Some(false),
        exposed_ports: (!ports.exposed.is_empty()).then(|| ports.exposed.into_iter().collect()),
        host_config: Some(HostConfig {
            binds: Some(setup.binds),
            network_mode: Some(setup.network.to_string()),
            privileged: Some(step.privileged),
            port_bindings: (!ports.bindings.is_empty()).then_some(ports.bindings),
            nano_cpus,
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    };
    Ok(Create { body, platform: setup.platform.map(str::to_string) })
}

/// `--cpus 1.5` → 1.5e9 NanoCPUs.
fn nano_cpus(text: &str) -> Result<i64, ContainerError> {
    match text.trim().parse::<f64>() {
        Ok(cpus) if cpus.is_finite() && cpus > 0.0 && cpus <= 1e6 => {
            // Bounded above, so the product fits an i64 comfortably.
            Ok((cpus * 1e9).round() as i64)
        }
        _ => Err(ContainerError::Cpus(text.to_string())),
    }
}

fn is_user_defined(network: &str) -> bool {
    !matches!(network, "host" | "none" | "bridge" | "default") && !network.starts_with("container:")
}

/// How an attached container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i64),
    /// Killed because `stop` fired.
    Stopped,
}

/// Where an attached container's output goes: log events of `step`, each piece shown to
/// `observe` first (retry-on-error matching).
pub(crate) struct Output<'a> {
    pub(crate) events: &'a Events,
    pub(crate) step: &'a StepId,
    pub(crate) observe: &'a mut (dyn FnMut(LogStream, &[u8]) + Send),
}

/// Runs a created container ([`create_container`]) to its end, streaming its output to
/// `output`; `stop` kills it. `started` is called once it runs. The container is removed
/// afterwards unless `keep` is set.
pub(crate) async fn run(
    docker: &Docker,
    name: &str,
    keep: bool,
    output: Output<'_>,
    stop: &CancellationToken,
    removals: &TaskTracker,
    started: &(dyn Fn() + Sync),
) -> Result<Exit, ContainerError> {
    let result = attach_start_wait(docker, name, output, stop, started).await;
    if !keep {
        // Off the critical path: the next step need not wait for a removal. The run awaits
        // `removals` before its final sweep, which retries any removal that failed.
        let (docker, name) = (docker.clone(), name.to_string());
        removals.spawn(async move {
            let _ = remove(&docker, &name).await;
        });
    }
    result
}

/// Creates and starts a container without attaching: `detach: true` succeeds once it runs.
pub(crate) async fn start_detached(
    docker: &Docker,
    name: &str,
    create: Create,
) -> Result<(), ContainerError> {
    create_container(docker, name, create).await?;
    docker
        .start_container(name, None)
        .await
        .map_err(|e| ContainerError::Start { name: name.to_string(), message: engine_message(e) })
}

pub(crate) async fn create_container(
    docker: &Docker,
    name: &str,
    create: Create,
) -> Result<(), ContainerError> {
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        platform: create.platform.unwrap_or_default(),
    };
    docker
        .create_container(Some(options), create.body)
        .await
        .map(drop)
        .map_err(|e| ContainerError::Create { name: name.to_string(), message: engine_message(e) })
}

async fn attach_start_wait(
    docker: &Docker,
    name: &str,
    output: Output<'_>,
    stop: &CancellationToken,
    started: &(dyn Fn() + Sync),
) -> Result<Exit, ContainerError> {
    let Output { events, step, observe } = output;
    let attached = docker
        .attach_container(
            name,
            Some(AttachContainerOptions {
                stdout: true,
                stderr: true,
                stream: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| ContainerError::Attach {
            name: name.to_string(),
            message: engine_message(e),
        })?;
    // Keep the write half alive until the output ends; the container has no stdin anyway.
    let (frames, _input) = (attached.output, attached.input);
    docker.start_container(name, None).await.map_err(|e| ContainerError::Start {
        name: name.to_string(),
        message: engine_message(e),
    })?;
    started();

    let drain = drain(frames, events, step, observe);
    let wait = wait(docker, name);
    let mut finished = std::pin::pin!(async { tokio::join!(drain, wait).1 });

    tokio::select! {
        code = &mut finished => code.map(Exit::Code),
        () = stop.cancelled() => {
            kill(docker, name).await;
            match tokio::time::timeout(KILL_GRACE, finished).await {
                Ok(_) => Ok(Exit::Stopped),
                Err(_) => Err(ContainerError::KillTimeout { name: name.to_string() }),
            }
        }
    }
}

/// Streams an attached process's output into log events of `step` until it ends, each piece
/// shown to `observe` first, masked per stream (a secret split across two frames of one stream
/// is still masked; stdout and stderr never combine).
pub(crate) async fn drain(
    mut frames: impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    events: &Events,
    step: &StepId,
    observe: &mut (dyn FnMut(LogStream, &[u8]) + Send),
) {
    let mut masks = [events.masker(), events.masker()];
    while let Some(frame) = frames.next().await {
        let (stream, bytes) = match frame {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                (LogStream::Stdout, message)
            }
            Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            // The stream breaking is not the process failing: its exit status decides.
            Err(_) => break,
        };
        observe(stream, &bytes);
        let safe = masks[usize::from(stream == LogStream::Stderr)].push(&bytes);
        events.log(Some(step), stream, &safe).await;
    }
    for (mask, stream) in masks.iter_mut().zip([LogStream::Stdout, LogStream::Stderr]) {
        events.log(Some(step), stream, &mask.finish()).await;
    }
}

/// The container's exit code. bollard reports a non-zero exit as an error value carrying the
/// code (reference: dependencies.md), which is an exit code here, not a failure to wait.
async fn wait(docker: &Docker, name: &str) -> Result<i64, ContainerError> {
    let lost = |message: String| ContainerError::Wait { name: name.to_string(), message };
    match docker.wait_container(name, None).next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(lost(engine_message(e))),
        None => Err(lost("the engine ended the wait without an exit code".to_string())),
    }
}

/// SIGKILL, as ACR's cleanup does with `docker rm -f`; a container that already stopped is fine.
pub(crate) async fn kill(docker: &Docker, name: &str) {
    let _ = docker
        .kill_container(name, Some(KillContainerOptions { signal: "KILL".to_string() }))
        .await;
}

pub(crate) async fn remove(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                // Anonymous volumes from the image's VOLUME lines carry no kiln label: only
                // removing them with their container keeps them from piling up.
                v: true,
                ..Default::default()
            }),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plan::plan::{Action, EnvVar};

    fn step() -> PlanStep {
        PlanStep {
            env: vec![EnvVar { name: "A".into(), value: "1 2".into() }],
            working_directory: Some("src".into()),
            ..PlanStep::new(
                StepId::new("web"),
                Action::Cmd { image: "busybox:latest".into(), args: vec![] },
            )
        }
    }

    fn setup<'a>(network: &'a str, args: &'a [String]) -> Setup<'a> {
        Setup {
            image: "busybox:latest",
            args,
            labels: HashMap::new(),
            binds: vec!["/tmp/ws:/workspace".into()],
            env: &[],
            network,
            platform: None,
        }
    }

    #[test]
    fn step_properties_map_to_the_create_request() {
        let mut s = step();
        s.entry_point = Some("/bin/sh".into());
        s.user = Some("1000:1000".into());
        s.privileged = true;
        s.cpus = Some("0.5".into());
        s.ports = vec!["127.0.0.1:8080:80".into()];
        s.expose = vec!["9000".into()];
        let args = vec!["-c".to_string(), "echo hi".to_string()];
        let body = create_body(&s, setup("kiln-r1", &args)).expect("valid").body;
        assert_eq!(body.cmd, Some(args.clone()));
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(body.env, Some(vec!["A=1 2".to_string()]));
        assert_eq!(body.working_dir.as_deref(), Some("/workspace/src"));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.exposed_ports, Some(vec!["80/tcp".to_string(), "9000/tcp".to_string()]));
        let host = body.host_config.expect("host config");
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.network_mode.as_deref(), Some("kiln-r1"));
        assert!(host.port_bindings.expect("bindings").contains_key("80/tcp"));
        let endpoints = body.networking_config.and_then(|n| n.endpoints_config).expect("endpoint");
        assert_eq!(endpoints["kiln-r1"].aliases, Some(vec!["web".to_string()]));
    }

    #[test]
    fn image_defaults_are_kept_when_unset() {
        let mut s = step();
        s.working_directory = None;
        let body = create_body(&s, setup("kiln-r1", &[])).expect("valid").body;
        assert_eq!(body.cmd, None);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.working_dir, None);
        assert_eq!(body.exposed_ports, None);
    }

    #[test]
    fn builtin_networks_get_no_alias() {
        for network in ["host", "none", "bridge", "container:abc"] {
            let body = create_body(&step(), setup(network, &[])).expect("valid").body;
            assert!(body.networking_config.is_none(), "{network}");
        }
    }

    #[test]
    fn cpus_must_be_a_positive_number() {
        assert_eq!(nano_cpus("2").expect("valid"), 2_000_000_000);
        assert_eq!(nano_cpus("0.25").expect("valid"), 250_000_000);
        for bad in ["", "0", "-1", "many", "NaN", "inf"] {
            assert!(nano_cpus(bad).is_err(), "{bad}");
        }
    }
}
