//! One fast-path step container (`kiln_plan::step_path`): prepared with kiln's idle init
//! ([`crate::init`]) as its entry process, then the step's command run in it with `exec`.
//!
//! Preparing (create and start) is the expensive part of a container and happens ahead of
//! need ([`crate::lookahead`]); what stays on the step's critical path is creating and
//! starting the exec, which the engine does in a fraction of a container start. Everything but
//! the command is the classic path's create request ([`container::create_body`]): env, user,
//! working directory, privileged, binds, network and its step-ID alias are the container's,
//! so the exec inherits them. The command runs through the init ([`init::command`]), which
//! ends what the command left running when it exits, as a classic container's end does. A
//! stop kills the container, not just the exec: SIGKILL to the init ends the PID namespace, so
//! the command's children die with it, as in the classic path.

use std::path::Path;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::container::{self, ContainerError, Create, Exit, Output};
use crate::image::engine_message;
use crate::init;

/// A started container idling in kiln's init, waiting for its step's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warm {
    pub(crate) name: String,
    /// The image ID it was created from: a step whose image tag has moved since (a build or
    /// pull in the run) must not run in it.
    pub(crate) image_id: String,
}

/// The classic create request turned into a prepared container's: kiln's init as the entry
/// process with no arguments, mounted read-only, and nothing attached (the exec is).
pub(crate) fn warm_create(mut create: Create, init_path: &Path) -> Create {
    let body = &mut create.body;
    body.entrypoint = Some(vec![init::CONTAINER_PATH.to_string()]);
    body.cmd = Some(Vec::new());
    body.attach_stdout = Some(false);
    body.attach_stderr = Some(false);
    let host = body.host_config.get_or_insert_default();
    host.binds.get_or_insert_default().push(format!(
        "{}:{}:ro",
        init_path.display(),
        init::CONTAINER_PATH
    ));
    create
}

/// What runs in a prepared container: the composed `ENTRYPOINT`/`CMD`
/// (`kiln_plan::step_path::command`) as the step's user, privileged if the step is.
#[derive(Debug)]
pub(crate) struct Command<'a> {
    pub(crate) argv: Vec<String>,
    pub(crate) user: Option<&'a str>,
    pub(crate) privileged: bool,
}

/// Creates and starts `name` from `create` (a [`warm_create`] request). A container that was
/// created but could not start is removed again, so a failure leaves nothing behind.
pub(crate) async fn prepare(
    docker: &Docker,
    name: &str,
    create: Create,
) -> Result<Warm, ContainerError> {
    container::create_container(docker, name, create).await?;
    let started = async {
        docker.start_container(name, None).await.map_err(|e| ContainerError::Start {
            name: name.to_string(),
            message: engine_message(e),
        })?;
        let inspect = docker.inspect_container(name, None).await.map_err(|e| {
            ContainerError::Start { name: name.to_string(), message: engine_message(e) }
        })?;
        Ok(Warm { name: name.to_string(), image_id: inspect.image.unwrap_or_default() })
    };
    let result = started.await;
    if result.is_err() {
        let _ = container::remove(docker, name).await;
    }
    result
}

/// Runs `command` in `warm` to its end, streaming its output to `output`; `stop` kills the
/// container. The command runs through kiln's init ([`init::command`]), which kills what it
/// left running once it exits; the container is removed afterwards, off the critical path.
pub(crate) async fn run(
    docker: &Docker,
    warm: &Warm,
    command: Command<'_>,
    output: Output<'_>,
    stop: &CancellationToken,
    removals: &TaskTracker,
) -> Result<Exit, ContainerError> {
    let result = exec(docker, &warm.name, command, output, stop).await;
    let (docker, name) = (docker.clone(), warm.name.clone());
    removals.spawn(async move {
        let _ = container::remove(&docker, &name).await;
    });
    result
}

async fn exec(
    docker: &Docker,
    name: &str,
    command: Command<'_>,
    output: Output<'_>,
    stop: &CancellationToken,
) -> Result<Exit, ContainerError> {
    let failed = |e: bollard::errors::Error| ContainerError::Exec {
        name: name.to_string(),
        message: engine_message(e),
    };
    let created = docker
        .create_exec(
            name,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                cmd: Some(init::command(command.argv)),
                // The container's user already is the step's; saying it again costs nothing
                // and keeps the exec independent of how the container was created.
                user: command.user.map(str::to_string),
                privileged: Some(command.privileged),
                ..Default::default()
            },
        )
        .await
        .map_err(failed)?;
    // Starting attached hijacks the connection before the process starts: no output is lost.
    let frames = match docker
        .start_exec(
            &created.id,
            Some(StartExecOptions { detach: false, tty: false, ..Default::default() }),
        )
        .await
        .map_err(failed)?
    {
        StartExecResults::Attached { output, input } => {
            // Keep the write half alive until the output ends; the command has no stdin.
            (output, input)
        }
        StartExecResults::Detached => {
            return Err(ContainerError::Exec {
                name: name.to_string(),
                message: "the engine started the command detached".to_string(),
            });
        }
    };
    let Output { events, step, observe } = output;
    let (frames, _input) = frames;
    // The engine records the exit code before it closes the exec's output, so once the output
    // has ended the inspect has it.
    let finished = async {
        container::drain(frames, events, step, observe).await;
        let inspect = docker.inspect_exec(&created.id).await.map_err(failed)?;
        match (inspect.running, inspect.exit_code) {
            (Some(false), Some(code)) => Ok(code),
            _ => Err(ContainerError::Exec {
                name: name.to_string(),
                message: "the command's output ended without an exit code".to_string(),
            }),
        }
    };
    let mut finished = std::pin::pin!(finished);
    tokio::select! {
        code = &mut finished => code.map(Exit::Code),
        () = stop.cancelled() => {
            container::kill(docker, name).await;
            match tokio::time::timeout(container::KILL_GRACE, finished).await {
                Ok(_) => Ok(Exit::Stopped),
                Err(_) => Err(ContainerError::KillTimeout { name: name.to_string() }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCreateBody, HostConfig};

    #[test]
    fn a_warm_container_idles_in_the_init_with_the_step_settings_kept() {
        let create = Create {
            body: ContainerCreateBody {
                image: Some("busybox:latest".into()),
                cmd: Some(vec!["echo".into(), "hi".into()]),
                entrypoint: Some(vec!["/bin/sh".into()]),
                user: Some("1000".into()),
                working_dir: Some("/workspace/src".into()),
                env: Some(vec!["A=1".into()]),
                attach_stdout: Some(true),
                host_config: Some(HostConfig {
                    binds: Some(vec!["/ws:/workspace".into()]),
                    privileged: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
            platform: Some("linux/arm64".into()),
        };
        let warm = warm_create(create, Path::new("/runs/.kiln-init"));
        let body = warm.body;
        assert_eq!(body.entrypoint, Some(vec!["/.kiln/init".to_string()]));
        assert_eq!(body.cmd, Some(vec![]));
        assert_eq!(body.attach_stdout, Some(false));
        assert_eq!(body.user.as_deref(), Some("1000"));
        assert_eq!(body.working_dir.as_deref(), Some("/workspace/src"));
        assert_eq!(body.env, Some(vec!["A=1".to_string()]));
        let host = body.host_config.expect("host config");
        assert_eq!(host.privileged, Some(true));
        assert_eq!(
            host.binds,
            Some(vec!["/ws:/workspace".to_string(), "/runs/.kiln-init:/.kiln/init:ro".to_string()])
        );
        assert_eq!(warm.platform.as_deref(), Some("linux/arm64"));
    }
}
