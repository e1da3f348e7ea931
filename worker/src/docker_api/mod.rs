//! The Docker API a run's steps see at `/var/run/docker.sock`.
//!
//! ACR mounts its VM's engine socket into every step, so task files run `cmd: docker build`,
//! `docker run`, `docker push` and `docker manifest` (reference §2.3). Handing a shared engine's
//! socket to a step would make every run root on the host, so by default kiln serves each run
//! its own socket ([`DockerApiMode::Scoped`]): a proxy that forwards what a build task needs,
//! labels what it creates with the run (the run's teardown sweeps it like kiln's own objects),
//! hides other runs' objects and refuses what would escape the run ([`policy`]). Images the
//! run tags are untagged again at its end ([`ledger`]).
//!
//! Steps also get a `DOCKER_CONFIG` holding the run's registry logins, shared by the run's
//! steps (`docker manifest create` in one step, `push` in the next), and `DOCKER_BUILDKIT=0`:
//! the engine has no BuildKit session support through the proxy and ACR builds classically too.

mod ledger;
mod policy;
mod proxy;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::Docker;
pub use kiln_plan::docker_api::DockerApiMode;
use kiln_plan::plan::{RegistryCredential, RunId};
use serde_json::json;

use crate::auth;
use crate::names;
use crate::owner::Owner;

/// Where the run's Docker config appears inside steps (`DOCKER_CONFIG`).
const CONFIG_PATH: &str = "/run/kiln/docker";

#[derive(Debug, thiserror::Error)]
pub enum DockerApiError {
    #[error("cannot prepare the run's Docker API in {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve the run's Docker API at {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the engine at {0} is not a unix socket or TCP address: mode host cannot hand it to steps"
    )]
    HostAddress(String),
}

/// A run's Docker API: what steps mount, and the server behind the scoped socket.
pub(crate) struct RunDockerApi {
    dir: PathBuf,
    /// What steps bind: `host path:container path`.
    binds: Vec<String>,
    env: Vec<(String, String)>,
    server: Option<proxy::Server>,
    ledger: ledger::Ledger,
}

/// What the run's Docker API needs to know of the run.
pub(crate) struct RunScope<'a> {
    pub(crate) docker: &'a Docker,
    /// The engine's address (`unix:///var/run/docker.sock`, `tcp://…`).
    pub(crate) engine_host: &'a str,
    pub(crate) owner: &'a Owner,
    pub(crate) run: &'a RunId,
    pub(crate) workspace: &'a Path,
    pub(crate) default_network: &'a str,
    /// The plan's step IDs (`docker logs <step ID>` names that step's container, as in ACR).
    pub(crate) steps: Vec<String>,
    /// Engine names of the networks the plan declared (steps may use them too).
    pub(crate) networks: Vec<String>,
    pub(crate) credentials: &'a [RegistryCredential],
}

impl RunDockerApi {
    /// Prepares the run's Docker API under `root` (beside the workspace): its config
    /// directory and, in scoped mode, its socket and server.
    pub(crate) async fn start(
        mode: DockerApiMode,
        root: &Path,
        scope: RunScope<'_>,
    ) -> Result<RunDockerApi, DockerApiError> {
        let dir = root.join(names::docker_api_dir(scope.run));
        let mut api = RunDockerApi {
            dir,
            binds: Vec::new(),
            env: Vec::new(),
            server: None,
            ledger: ledger::Ledger::default(),
        };
        if mode == DockerApiMode::Off {
            return Ok(api);
        }
        let config = api.dir.join("config");
        write_config(&config, scope.credentials)
            .await
            .map_err(|source| DockerApiError::Dir { path: config.clone(), source })?;
        api.binds.push(format!("{}:{CONFIG_PATH}", config.display()));
        api.env.push(("DOCKER_CONFIG".into(), CONFIG_PATH.into()));
        api.env.push(("DOCKER_BUILDKIT".into(), "0".into()));
        // The registry CAs the engine trusts, so the CLI's own registry commands (`docker
        // manifest push`) trust the same registries the engine pushes to.
        let certs = auth::REGISTRY_CERTS_DIR;
        if Path::new(certs).is_dir() {
            api.binds.push(format!("{certs}:{certs}:ro"));
        }
        let socket = match mode {
            DockerApiMode::Scoped => {
                let socket = api.dir.join("docker.sock");
                let bounds = policy::Bounds {
                    workspace: scope.workspace.to_path_buf(),
                    socket: socket.clone(),
                    default_network: scope.default_network.to_string(),
                    labels: names::run_labels(scope.run, scope.owner),
                    real_path: policy::real_path,
                };
                api.server = Some(proxy::Server::start(&socket, &scope, bounds)?);
                socket
            }
            DockerApiMode::Host => match scope.engine_host.strip_prefix("unix://") {
                Some(path) => PathBuf::from(path),
                None if scope.engine_host.starts_with("tcp://") => {
                    api.env.push(("DOCKER_HOST".into(), scope.engine_host.to_string()));
                    return Ok(api);
                }
                None => return Err(DockerApiError::HostAddress(scope.engine_host.to_string())),
            },
            DockerApiMode::Off => unreachable!("returned above"),
        };
        api.binds.push(format!("{}:{}", socket.display(), policy::SOCKET_PATH));
        api.env.push(("DOCKER_HOST".into(), format!("unix://{}", policy::SOCKET_PATH)));
        Ok(api)
    }

    /// Binds every `cmd` step gets.
    pub(crate) fn binds(&self) -> &[String] {
        &self.binds
    }

    /// Variables every `cmd` step gets unless its own `env` sets them.
    pub(crate) fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Stops serving: a detached step's client is cut off, so nothing it asks for can be
    /// created after the run's sweep. Called before the teardown.
    pub(crate) async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            self.ledger = server.stop().await;
        }
    }

    /// After the teardown (no container uses the run's images any more): restores the image
    /// tags the run moved and removes the socket and config. Returns what could not be undone.
    pub(crate) async fn finish(mut self, docker: &Docker) -> Vec<String> {
        self.stop().await;
        let mut errors = self.ledger.restore(docker).await;
        match tokio::fs::remove_dir_all(&self.dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("{}: {e}", self.dir.display())),
        }
        errors
    }
}

/// Writes `config.json` with the run's logins, as `docker login` would have: the CLI's own
/// registry commands (`docker manifest`) read it, and it sends them with engine requests.
async fn write_config(dir: &Path, credentials: &[RegistryCredential]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut auths = serde_json::Map::new();
    for (key, credential) in auth::registry_config(credentials) {
        let user = credential.username.unwrap_or_default();
        let password = credential.password.unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        auths.insert(key, json!({ "auth": token }));
    }
    let config = json!({ "auths": auths });
    tokio::fs::create_dir_all(dir).await?;
    // The run's passwords: readable by root inside steps, not by other users on the host.
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await?;
    let file = dir.join("config.json");
    tokio::fs::write(&file, serde_json::to_vec_pretty(&config).unwrap_or_default()).await?;
    tokio::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).await
}

/// `env` of a step with the Docker API's variables added where the step sets none itself.
pub(crate) fn merged_env(
    step_env: impl Iterator<Item = (String, String)>,
    api_env: &[(String, String)],
) -> Vec<String> {
    let step_env: Vec<(String, String)> = step_env.collect();
    let own: HashSet<&str> = step_env.iter().map(|(k, _)| k.as_str()).collect();
    api_env
        .iter()
        .filter(|(k, _)| !own.contains(k.as_str()))
        .chain(step_env.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steps_own_env_wins_over_the_apis() {
        let api = [
            ("DOCKER_BUILDKIT".to_string(), "0".to_string()),
            ("DOCKER_HOST".into(), "unix:///x".into()),
        ];
        let env = merged_env([("DOCKER_BUILDKIT".to_string(), "1".to_string())].into_iter(), &api);
        assert_eq!(env, vec!["DOCKER_HOST=unix:///x", "DOCKER_BUILDKIT=1"]);
    }

    #[tokio::test]
    async fn the_config_holds_the_runs_logins_for_the_cli() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config");
        let credentials = [RegistryCredential {
            registry: "127.0.0.1:5001".into(),
            username: "u".into(),
            password: "p w".into(),
        }];
        write_config(&config, &credentials).await.expect("written");
        let text = std::fs::read_to_string(config.join("config.json")).expect("read");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["auths"]["127.0.0.1:5001"]["auth"], "dTpwIHc=");
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(config.join("config.json")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
