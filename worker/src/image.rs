//! Getting a `cmd` step's image onto the engine: presence check, pull, registry login.
//!
//! `docker run` pulls a missing image implicitly; through the API kiln has to do it itself, and
//! it does so with the run's credentials for the image's registry. Without a tag the engine
//! would pull *every* tag of a repository, so references are normalised to `:latest` first,
//! as the Docker CLI does.

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use crate::event::Events;
use crate::plan::{RegistryCredential, StepId};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("pulling image {image} failed: {message}")]
    Pull { image: String, message: String },
    #[error("inspecting image {image} failed: {source}")]
    Inspect {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// Docker Hub's names; credentials for any of them apply to images without a registry host.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// `busybox` → `busybox:latest`; references with a tag or digest are kept.
pub(crate) fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The registry an image reference points at: its first path component when that looks like
/// a host (has a `.` or `:`, or is `localhost`), else Docker Hub, as the Docker CLI decides.
pub(crate) fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => DOCKER_HUB[0],
    }
}

/// The run's login for `image`'s registry, if it has one.
pub(crate) fn credentials_for(
    image: &str,
    credentials: &[RegistryCredential],
) -> Option<DockerCredentials> {
    let host = registry_host(image);
    let hub = DOCKER_HUB.contains(&host);
    credentials
        .iter()
        .find(|c| c.registry == host || (hub && DOCKER_HUB.contains(&c.registry.as_str())))
        .map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(c.registry.clone()),
            ..Default::default()
        })
}

pub(crate) async fn is_present(docker: &Docker, image: &str) -> Result<bool, ImageError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            Ok(false)
        }
        Err(source) => Err(ImageError::Inspect { image: image.to_string(), source }),
    }
}

/// Pulls `image` once, reporting the engine's progress lines as system log lines of `step`.
/// Fails with the registry's own message (e.g. `manifest unknown`, or a DNS error when the
/// registry is unreachable), which the engine reports promptly rather than hanging.
pub(crate) async fn pull(
    docker: &Docker,
    image: &str,
    credentials: &[RegistryCredential],
    events: &Events,
    step: &StepId,
) -> Result<(), ImageError> {
    let image = with_default_tag(image);
    events.system(Some(step), format!("Pulling image: {image}")).await;
    let options = CreateImageOptions { from_image: Some(image.clone()), ..Default::default() };
    let mut progress =
        docker.create_image(Some(options), None, credentials_for(&image, credentials));
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = progress_line(&info) {
                    events.system(Some(step), line).await;
                }
            }
            Err(e) => {
                return Err(ImageError::Pull { image, message: engine_message(e) });
            }
        }
    }
    Ok(())
}

/// The lines `docker pull` leaves on screen once done, without per-layer progress noise.
fn progress_line(info: &CreateImageInfo) -> Option<String> {
    let status = info.status.as_deref()?;
    const NOISE: [&str; 6] = [
        "Pulling fs layer",
        "Waiting",
        "Downloading",
        "Verifying Checksum",
        "Download complete",
        "Extracting",
    ];
    if NOISE.iter().any(|n| status.starts_with(n)) {
        return None;
    }
    Some(match info.id.as_deref() {
        Some(id) if !id.is_empty() => format!("{id}: {status}"),
        _ => status.to_string(),
    })
}

/// The engine's own words for an error, without bollard's wrapping.
pub(crate) fn engine_message(error: bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        bollard::errors::Error::DockerStreamError { error } => error,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tags_default_to_latest() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1.36"), "busybox:1.36");
        assert_eq!(with_default_tag("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(with_default_tag("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
        assert_eq!(with_default_tag("app@sha256:0123"), "app@sha256:0123");
    }

    #[test]
    fn registry_host_follows_the_docker_cli_rule() {
        assert_eq!(registry_host("busybox:latest"), "docker.io");
        assert_eq!(registry_host("library/busybox"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5001/app:v1"), "127.0.0.1:5001");
        assert_eq!(registry_host("myreg.azurecr.io/app"), "myreg.azurecr.io");
        assert_eq!(registry_host("localhost/app"), "localhost");
    }

    fn cred(registry: &str) -> RegistryCredential {
        RegistryCredential { registry: registry.into(), username: "u".into(), password: "p".into() }
    }

    #[test]
    fn credentials_match_the_image_registry() {
        let creds = [cred("127.0.0.1:5001"), cred("index.docker.io")];
        let found = credentials_for("127.0.0.1:5001/app:v1", &creds).expect("login");
        assert_eq!(found.serveraddress.as_deref(), Some("127.0.0.1:5001"));
        assert_eq!(found.password.as_deref(), Some("p"));
        assert!(credentials_for("127.0.0.1:5000/app", &creds).is_none());
        let hub = credentials_for("busybox", &creds).expect("hub login");
        assert_eq!(hub.serveraddress.as_deref(), Some("index.docker.io"));
    }

    #[test]
    fn pull_noise_is_dropped() {
        let info = |id: Option<&str>, status: &str| CreateImageInfo {
            id: id.map(str::to_string),
            status: Some(status.to_string()),
            ..Default::default()
        };
        assert_eq!(
            progress_line(&info(Some("latest"), "Pulling from library/busybox")).as_deref(),
            Some("latest: Pulling from library/busybox")
        );
        assert_eq!(
            progress_line(&info(None, "Digest: sha256:ab")).as_deref(),
            Some("Digest: sha256:ab")
        );
        assert!(progress_line(&info(Some("3f4d"), "Downloading")).is_none());
    }
}
