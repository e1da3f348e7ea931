//! Getting an image onto the engine (a `cmd` step's, a build step's cache): presence check, pull,
//! registry login.
//!
//! `docker run` pulls a missing image implicitly; through the API kiln has to do it itself, and
//! it does so with the run's credentials for the image's registry. Without a tag the engine
//! would pull *every* tag of a repository, so references are normalised to `:latest` first,
//! as the Docker CLI does. A run with a platform needs the image *for that platform*: one the
//! engine has for another platform counts as missing and is pulled for the run's, as
//! `docker run --platform` does (an agent running amd64 and emulated arm64 runs keeps both).

use std::pin::pin;

use bollard::Docker;
use bollard::models::{CreateImageInfo, ImageInspect};
use bollard::query_parameters::{CreateImageOptions, TagImageOptions};
use futures_util::{Stream, StreamExt};
use kiln_plan::image_ref::ImageRef;
use kiln_plan::plan::{RegistryCredential, StepId};

use crate::auth;
use crate::events::Events;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("pulling image {image}{} failed: {message}", for_platform(platform.as_deref()))]
    Pull { image: String, platform: Option<String>, message: String },
    #[error("inspecting image {image} failed: {source}")]
    Inspect {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
}

fn for_platform(platform: Option<&str>) -> String {
    platform.map(|p| format!(" for {p}")).unwrap_or_default()
}

/// The engine's copy of `image` (its ID, OS and `ENTRYPOINT`/`CMD`), for `platform` when the
/// run names one; `None` when it has none that fits.
pub(crate) async fn present(
    docker: &Docker,
    image: &str,
    platform: Option<&str>,
) -> Result<Option<ImageInspect>, ImageError> {
    match docker.inspect_image(image).await {
        Ok(inspect) => {
            let fits = platform.is_none_or(|p| {
                let os = inspect.os.as_deref().unwrap_or_default();
                let arch = inspect.architecture.as_deref().unwrap_or_default();
                let variant = inspect.variant.as_deref().filter(|v| !v.is_empty());
                let have = match variant {
                    Some(v) => format!("{os}/{arch}/{v}"),
                    None => format!("{os}/{arch}"),
                };
                kiln_plan::platform::matches(&have, p)
            });
            Ok(fits.then_some(inspect))
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(source) => Err(ImageError::Inspect { image: image.to_string(), source }),
    }
}

/// Pulls `image` once (for `platform` when the run names one), reporting the engine's progress lines as system log lines of `step`
/// (run-level lines without one).
/// Fails with the registry's own message (e.g. `manifest unknown`, or a DNS error when the
/// registry is unreachable), which the engine reports promptly rather than hanging.
pub(crate) async fn pull(
    docker: &Docker,
    image: &str,
    platform: Option<&str>,
    credentials: &[RegistryCredential],
    events: &Events,
    step: Option<&StepId>,
) -> Result<(), ImageError> {
    let parsed = ImageRef::parse(image).map_err(|e| ImageError::Pull {
        image: image.to_string(),
        platform: platform.map(str::to_string),
        message: e.to_string(),
    })?;
    let shown = parsed.with_default_tag();
    events.system(step, format!("Pulling image: {shown}{}", for_platform(platform))).await;
    let mut lines = pin!(pull_lines(docker, &parsed, platform, credentials));
    while let Some(line) = lines.next().await {
        events.system(step, line?).await;
    }
    Ok(())
}

/// The engine's pull of `image` (`:latest` added when it has no tag) with the run's login for
/// its registry, as the progress lines worth showing; an error ends it. Callers that log
/// elsewhere than to events (a build step's output) use it directly.
pub(crate) fn pull_lines(
    docker: &Docker,
    image: &ImageRef,
    platform: Option<&str>,
    credentials: &[RegistryCredential],
) -> impl Stream<Item = Result<String, ImageError>> + use<> {
    let login = auth::for_host(credentials, image.registry_host());
    let image = image.with_default_tag();
    let platform = platform.map(str::to_string);
    let options = CreateImageOptions {
        from_image: Some(image.clone()),
        platform: platform.clone().unwrap_or_default(),
        ..Default::default()
    };
    docker.create_image(Some(options), None, login).filter_map(move |item| {
        std::future::ready(match item {
            Ok(info) => progress_line(&info).map(Ok),
            Err(e) => Some(Err(ImageError::Pull {
                image: image.clone(),
                platform: platform.clone(),
                message: engine_message(e),
            })),
        })
    })
}

/// Tags image `id` (an ID or another reference) as `reference`; the engine's words on failure.
pub(crate) async fn tag(docker: &Docker, id: &str, reference: &ImageRef) -> Result<(), String> {
    let options = TagImageOptions { repo: Some(reference.name()), tag: reference.tag.clone() };
    docker.tag_image(id, Some(options)).await.map_err(engine_message)
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
