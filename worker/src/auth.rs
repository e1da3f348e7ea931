//! Registry credentials of a run, handed to the engine per request.
//!
//! ACR logs the run's credentials into a shared Docker config; kiln has no CLI and no config
//! file, so every engine call that talks to a registry carries them itself: a push gets the one
//! credential for its image's registry (X-Registry-Auth), a build gets all of them
//! (X-Registry-Config) because any `FROM` may pull from any registry. Matching is by registry
//! host, with Docker Hub's spellings (`docker.io`, `index.docker.io`, `https://index.docker.io/v1/`,
//! `registry.hub.docker.com`) treated as one.

use std::collections::HashMap;

use bollard::auth::DockerCredentials;
use kiln_plan::image_ref::{DOCKER_HUB_AUTH_KEY, DOCKER_HUB_HOST, normalize_registry_host};
use kiln_plan::plan::RegistryCredential;

/// Where the engine (and the docker CLI) look for a registry's CA certificates,
/// `<dir>/<host[:port]>/ca.crt`: what the engine trusts, kiln's own registry calls and the
/// steps' CLI trust too.
pub(crate) const REGISTRY_CERTS_DIR: &str = "/etc/docker/certs.d";

/// The credential for `host` (an image's registry host), if the run has one.
pub fn for_host(credentials: &[RegistryCredential], host: &str) -> Option<DockerCredentials> {
    let host = normalize_registry_host(host);
    credentials
        .iter()
        .find(|c| normalize_registry_host(&c.registry) == host)
        .map(|c| to_docker(c, &host))
}

/// Every credential, keyed the way the engine looks them up when pulling.
pub fn registry_config(credentials: &[RegistryCredential]) -> HashMap<String, DockerCredentials> {
    let mut config = HashMap::new();
    for credential in credentials {
        let host = normalize_registry_host(&credential.registry);
        // The first credential for a registry wins, as in `for_host`.
        config.entry(engine_key(&host)).or_insert_with(|| to_docker(credential, &host));
    }
    config
}

fn engine_key(host: &str) -> String {
    if host == DOCKER_HUB_HOST { DOCKER_HUB_AUTH_KEY.to_string() } else { host.to_string() }
}

fn to_docker(credential: &RegistryCredential, host: &str) -> DockerCredentials {
    DockerCredentials {
        username: Some(credential.username.clone()),
        password: Some(credential.password.clone()),
        serveraddress: Some(engine_key(host)),
        ..DockerCredentials::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(registry: &str, user: &str) -> RegistryCredential {
        RegistryCredential {
            registry: registry.into(),
            username: user.into(),
            password: "p".into(),
        }
    }

    #[test]
    fn matches_by_host() {
        let creds = [cred("127.0.0.1:5001", "a"), cred("https://index.docker.io/v1/", "hub")];
        assert_eq!(
            for_host(&creds, "127.0.0.1:5001").and_then(|c| c.username).as_deref(),
            Some("a")
        );
        assert!(for_host(&creds, "127.0.0.1:5000").is_none());
        let hub = for_host(&creds, "docker.io").unwrap_or_default();
        assert_eq!(hub.username.as_deref(), Some("hub"));
        assert_eq!(hub.serveraddress.as_deref(), Some(DOCKER_HUB_AUTH_KEY));
    }

    #[test]
    fn config_keys() {
        let creds = [cred("registry.hub.docker.com", "hub"), cred("r.io", "x"), cred("R.io", "y")];
        let config = registry_config(&creds);
        assert_eq!(config.len(), 2);
        assert_eq!(config[DOCKER_HUB_AUTH_KEY].username.as_deref(), Some("hub"));
        assert_eq!(config["r.io"].username.as_deref(), Some("x"));
    }
}
