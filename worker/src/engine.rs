//! The connection to a Docker engine: where it is, and which API version both sides speak.
//!
//! bollard pins a recent API version by default (1.53); older engines refuse such requests
//! ("client version 1.53 is too new"), so every connection negotiates down to the engine's
//! version first. Connecting also proves the engine is there, so a missing engine is one clear
//! error at the start instead of a confusing failure in the first step.

use bollard::Docker;

use crate::owner::{self, Owner, OwnerError};
use crate::platforms;

/// The oldest Engine API kiln is tested against (Docker 20.10); older engines lack pieces kiln
/// relies on, and their failures would surface deep inside steps.
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

/// Where Docker listens when `DOCKER_HOST` is unset (kiln's engines are Linux engines).
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A negotiated connection to one Docker engine. Cheap to clone (bollard shares the transport).
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
    api_version: String,
    /// This process, as the owner of every object created through this engine.
    owner: &'static Owner,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot use Docker host {host:?}: {source}")]
    BadHost {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "no Docker engine answers at {host}: {source}. Start one (in a kiln checkout, \
         `scripts/test-env.sh` installs and starts a local engine) or point DOCKER_HOST at a \
         running engine"
    )]
    Unreachable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "the Docker engine at {host} speaks Engine API {found}; kiln needs {}.{} or newer",
        MIN_API_VERSION.0,
        MIN_API_VERSION.1
    )]
    TooOld { host: String, found: String },
    #[error(transparent)]
    Owner(#[from] OwnerError),
}

impl Engine {
    /// Connects to `DOCKER_HOST`, or to the platform's default socket when it is unset.
    pub async fn connect() -> Result<Engine, EngineError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self::connect_to(&host).await
    }

    /// Connects to an explicit host (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`).
    /// The process's owner instance is claimed first ([`owner::claim`], in
    /// [`owner::default_dir`] unless the process claimed one elsewhere already).
    pub async fn connect_to(host: &str) -> Result<Engine, EngineError> {
        let owner = owner::claim(&owner::default_dir())?;
        let docker = Docker::connect_with_host(host).map_err(|source| match source {
            // bollard checks that a unix socket exists before any request: no socket is the
            // commonest form of "no engine running".
            bollard::errors::Error::SocketNotFoundError(_) => {
                EngineError::Unreachable { host: host.to_string(), source }
            }
            source => EngineError::BadHost { host: host.to_string(), source },
        })?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|source| EngineError::Unreachable { host: host.to_string(), source })?;
        let version = docker.client_version();
        let api_version = version.to_string();
        if (version.major_version, version.minor_version) < MIN_API_VERSION {
            return Err(EngineError::TooOld { host: host.to_string(), found: api_version });
        }
        Ok(Engine { docker, host: host.to_string(), api_version, owner })
    }

    /// The bollard client, already speaking the negotiated version.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The negotiated Engine API version, e.g. `1.41`; never newer than bollard's own.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The owner instance labelled on every object this engine handle creates.
    pub fn owner(&self) -> &'static Owner {
        self.owner
    }

    /// The platforms the engine runs ([`platforms`]): its native one first, then those the
    /// kernel emulates. Emulation is read from this machine's `binfmt_misc`, which is the
    /// engine's kernel only when the engine is local (a unix socket); a remote engine's is
    /// unknown here, so only its native platform is declared.
    pub async fn platforms(&self) -> Result<Vec<String>, EngineError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|source| EngineError::Unreachable { host: self.host.clone(), source })?;
        let native = platforms::native(info.os_type.as_deref(), info.architecture.as_deref());
        let emulated = if self.host.starts_with("unix://") {
            platforms::emulated(std::path::Path::new(platforms::BINFMT_MISC))
        } else {
            Vec::new()
        };
        Ok(platforms::declared(native, emulated))
    }
}
