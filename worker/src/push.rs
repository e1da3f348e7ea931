//! `push` steps: push each image to its registry through the engine and report the digests.
//!
//! ACR's behaviour (§2.2): `:latest` is added to a reference with neither tag nor digest,
//! duplicates are dropped, images are pushed one after the other, each with up to 3 attempts
//! (backoff 250 ms × 2^n, capped at 5 s). kiln differs in two ways, both for clearer failures:
//! an error that a retry cannot fix (authentication, access denied, image missing locally) is
//! not retried, and the error names the image, its registry and the registry's own message.
//!
//! The engine reports the pushed manifest's digest only in a status line,
//! `<tag>: digest: sha256:… size: N`; that line is parsed. Byte-progress events are not logged —
//! the log gets the repository line, one summary of the layers and the digest line.

use bollard::Docker;
use bollard::query_parameters::PushImageOptions;
use futures_util::StreamExt;
use kiln_plan::image_ref::{ImageRef, RefError};
use kiln_plan::plan::RegistryCredential;
use kiln_plan::report::{Dependency, DigestKind};

use crate::auth;
use crate::backoff;

const ATTEMPTS: u32 = 3;

/// An image pushed, with the manifest digest the registry stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The reference as pushed (`:latest` added where needed).
    pub image: String,
    /// `sha256:…`
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot push {image:?}: {source}")]
    InvalidReference { image: String, source: RefError },
    #[error("cannot push {image}: a reference with a digest cannot be pushed; push a tag")]
    Digest { image: String },
    #[error("failed to push {image} to {registry} (attempt {attempts} of {ATTEMPTS}): {message}")]
    Failed { image: String, registry: String, attempts: u32, message: String },
    #[error("pushing {image} to {registry} ended without a digest from the registry")]
    NoDigest { image: String, registry: String },
}

/// Pushes `images` in order; stops at the first image that fails.
pub async fn run(
    docker: &Docker,
    images: &[String],
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<Vec<Pushed>, PushError> {
    let mut targets: Vec<(String, ImageRef)> = Vec::new();
    for image in images {
        let parsed = ImageRef::parse(image)
            .map_err(|source| PushError::InvalidReference { image: image.clone(), source })?;
        if parsed.digest.is_some() {
            return Err(PushError::Digest { image: image.clone() });
        }
        let full = parsed.with_default_tag();
        if !targets.iter().any(|(seen, _)| *seen == full) {
            targets.push((full, parsed));
        }
    }
    let mut pushed = Vec::with_capacity(targets.len());
    for (image, parsed) in targets {
        let digest = push_with_retries(docker, &image, &parsed, credentials, log).await?;
        pushed.push(Pushed { image, digest });
    }
    Ok(pushed)
}

async fn push_with_retries(
    docker: &Docker,
    image: &str,
    parsed: &ImageRef,
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<String, PushError> {
    let registry = parsed.registry_host().to_string();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match push_once(docker, parsed, credentials, log).await {
            Ok(Some(digest)) => return Ok(digest),
            Ok(None) => return Err(PushError::NoDigest { image: image.into(), registry }),
            Err(message) if attempt >= ATTEMPTS || is_permanent(&message) => {
                return Err(PushError::Failed {
                    image: image.into(),
                    registry,
                    attempts: attempt,
                    message,
                });
            }
            Err(message) => {
                let delay = backoff::delay(attempt - 1);
                log(format!(
                    "Push of {image} failed ({message}); retrying in {} ms\n",
                    delay.as_millis()
                )
                .as_bytes());
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Registry answers that another attempt will not change.
fn is_permanent(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["unauthorized", "authentication required", "denied", "does not exist locally", "no such image"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// One attempt: `Ok(digest)` when the engine finished (the digest line may be missing), `Err`
/// with the engine's or registry's message.
async fn push_once(
    docker: &Docker,
    parsed: &ImageRef,
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<Option<String>, String> {
    let options = PushImageOptions { tag: parsed.tag.clone(), ..PushImageOptions::default() };
    let creds = auth::for_host(credentials, parsed.registry_host());
    let mut stream = docker.push_image(&parsed.name(), Some(options), creds);
    let mut digest = None;
    let (mut pushed_layers, mut existing_layers) = (0u32, 0u32);
    while let Some(item) = stream.next().await {
        let info = item.map_err(engine_message)?;
        let Some(status) = info.status else { continue };
        match status.as_str() {
            "Preparing" | "Waiting" | "Pushing" => {}
            "Pushed" => pushed_layers += 1,
            "Layer already exists" => existing_layers += 1,
            s if s.starts_with("Mounted from") => existing_layers += 1,
            s => {
                if let Some(found) = parse_digest(s) {
                    log(format!(
                        "{pushed_layers} layer(s) pushed, {existing_layers} already present\n"
                    )
                    .as_bytes());
                    digest = Some(found);
                }
                log(format!("{s}\n").as_bytes());
            }
        }
    }
    Ok(digest)
}

/// The digest of a `<tag>: digest: sha256:… size: N` status line.
fn parse_digest(status: &str) -> Option<String> {
    let (_, rest) = status.split_once(": digest: ")?;
    let digest = rest.split_whitespace().next()?;
    (digest.contains(':')).then(|| digest.to_string())
}

/// The text a user can act on: the daemon's or registry's message, without bollard's wrapping.
pub(crate) fn engine_message(error: bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerStreamError { error } => error,
        bollard::errors::Error::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

/// Fills `image.digest` of every entry whose image was pushed.
pub fn fill_pushed_digests(deps: &mut [Dependency], pushed: &[Pushed]) {
    for dep in deps {
        if let Some(image) = &mut dep.image
            && let Some(p) = pushed.iter().find(|p| image.is(&p.image))
        {
            image.set_digest(p.digest.clone(), DigestKind::RepoDigest);
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_plan::report::ImageReference;

    use super::*;

    #[test]
    fn digest_line() {
        let sha = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_digest(&format!("v1: digest: {sha} size: 527")), Some(sha.clone()));
        assert_eq!(parse_digest(&format!("latest: digest: {sha}")), Some(sha));
        assert_eq!(parse_digest("Pushed"), None);
        assert_eq!(parse_digest("x: digest: "), None);
    }

    #[test]
    fn permanent_errors() {
        assert!(is_permanent("unauthorized: authentication required"));
        assert!(is_permanent("An image does not exist locally with the tag: x"));
        assert!(is_permanent("denied: requested access to the resource is denied"));
        assert!(!is_permanent("received unexpected HTTP status: 502 Bad Gateway"));
    }

    #[tokio::test]
    async fn rejects_bad_references_before_talking_to_the_engine() {
        // Nothing is sent: a client for an address that cannot be connected to is enough.
        let docker =
            Docker::connect_with_http("http://127.0.0.1:1", 1, bollard::API_DEFAULT_VERSION)
                .unwrap_or_else(|e| panic!("{e}"));
        let log = |_: &[u8]| {};
        let err = run(&docker, &["UPPER".into()], &[], &log).await.unwrap_err();
        assert!(matches!(err, PushError::InvalidReference { .. }), "{err}");
        let digest = format!("a@sha256:{}", "0".repeat(64));
        let err = run(&docker, &[digest], &[], &log).await.unwrap_err();
        assert!(matches!(err, PushError::Digest { .. }), "{err}");
        assert!(run(&docker, &[], &[], &log).await.unwrap().is_empty());
    }

    #[test]
    fn pushed_digests_are_matched_by_image() {
        let mut deps = vec![
            Dependency {
                image: Some(ImageReference::from_ref(
                    &ImageRef::parse("127.0.0.1:5000/a").unwrap(),
                )),
                runtime: None,
                buildtime: vec![],
                git: None,
            },
            Dependency {
                image: Some(ImageReference::from_ref(
                    &ImageRef::parse("127.0.0.1:5000/a:v2").unwrap(),
                )),
                runtime: None,
                buildtime: vec![],
                git: None,
            },
        ];
        let pushed =
            [Pushed { image: "127.0.0.1:5000/a:latest".into(), digest: "sha256:x".into() }];
        fill_pushed_digests(&mut deps, &pushed);
        assert_eq!(deps[0].image.as_ref().map(|i| i.digest.as_str()), Some("sha256:x"));
        assert_eq!(deps[1].image.as_ref().map(|i| i.digest.as_str()), Some(""));
    }
}
