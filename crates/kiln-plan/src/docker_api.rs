//! How much of the engine a run's `cmd` steps get at `/var/run/docker.sock`.
//!
//! The words are shared by the agent's flag (`--docker-api`, the machine's default), a task's
//! `dockerApi` property (the per-task widening or narrowing an operator sets) and the run
//! request that carries it to the agent; the worker enforces them (`kiln_worker::docker_api`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a step gets of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DockerApiMode {
    /// No socket: `docker` commands in steps fail to connect.
    Off,
    /// The run's own socket, served by kiln (the default).
    #[default]
    Scoped,
    /// The engine's own socket, as ACR does: for trusted task files only (any step is root on
    /// the engine's host).
    Host,
}

impl FromStr for DockerApiMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(DockerApiMode::Off),
            "scoped" => Ok(DockerApiMode::Scoped),
            "host" => Ok(DockerApiMode::Host),
            other => {
                Err(format!("unknown Docker API mode {other:?}: expected off, scoped or host"))
            }
        }
    }
}

impl fmt::Display for DockerApiMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DockerApiMode::Off => "off",
            DockerApiMode::Scoped => "scoped",
            DockerApiMode::Host => "host",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_and_print_their_names() {
        for mode in [DockerApiMode::Off, DockerApiMode::Scoped, DockerApiMode::Host] {
            assert_eq!(mode.to_string().parse::<DockerApiMode>(), Ok(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.to_string());
        }
        let err = "all".parse::<DockerApiMode>().unwrap_err();
        assert!(err.contains("expected off, scoped or host"), "{err}");
        assert_eq!(DockerApiMode::default(), DockerApiMode::Scoped);
    }
}
