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

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::PushImageOptions;
use futures_util::StreamExt;
use kiln_plan::image_ref::{ImageRef, RefError};
use kiln_plan::plan::RegistryCredential;
use kiln_plan::report::{Dependency, DigestKind};

use crate::auth;
use crate::backoff;
use crate::index;

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

/// Pushes `images` in order; stops at the first image that fails. An image in
/// `multi_platform` (a tag built for several platforms) is pushed as each platform's image and
/// then their manifest list under the tag ([`crate::index`]).
pub async fn run(
    docker: &Docker,
    images: &[String],
    multi_platform: &HashMap<String, Vec<String>>,
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
        let digest = match multi_platform.get(&image) {
            Some(platforms) => {
                push_list(docker, &image, &parsed, platforms, credentials, log).await?
            }
            None => push_with_retries(docker, &image, &parsed, credentials, log).await?.digest,
        };
        pushed.push(Pushed { image, digest });
    }
    Ok(pushed)
}

/// Pushes each platform's image of `image`, then the list naming them; returns its digest.
async fn push_list(
    docker: &Docker,
    image: &str,
    parsed: &ImageRef,
    platforms: &[String],
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<String, PushError> {
    let mut entries = Vec::with_capacity(platforms.len());
    for platform in platforms {
        let tag = index::platform_tag(parsed, platform);
        let platform_ref = ImageRef::parse(&tag)
            .map_err(|source| PushError::InvalidReference { image: tag.clone(), source })?;
        // The list describes each image as it was built, not as the build string named it.
        let built = docker.inspect_image(&tag).await.map_err(|e| PushError::Failed {
            image: tag.clone(),
            registry: parsed.registry_host().to_string(),
            attempts: 1,
            message: engine_message(e),
        })?;
        let manifest = push_with_retries(docker, &tag, &platform_ref, credentials, log).await?;
        entries.push(index::PlatformImage {
            os: built.os.unwrap_or_default(),
            architecture: built.architecture.unwrap_or_default(),
            variant: built.variant.filter(|v| !v.is_empty()),
            digest: manifest.digest,
            size: manifest.size.ok_or_else(|| PushError::NoDigest {
                image: tag.clone(),
                registry: parsed.registry_host().to_string(),
            })?,
        });
    }
    let digest =
        index::push(parsed, &entries, credentials).await.map_err(|e| PushError::Failed {
            image: image.to_string(),
            registry: parsed.registry_host().to_string(),
            attempts: 1,
            message: e.to_string(),
        })?;
    log(format!("{image}: manifest list of {} platforms: digest: {digest}\n", entries.len())
        .as_bytes());
    Ok(digest)
}

/// A manifest the registry stored, as the engine reported it.
struct Manifest {
    digest: String,
    /// Bytes; missing only when the engine's line leaves it out.
    size: Option<i64>,
}

async fn push_with_retries(
    docker: &Docker,
    image: &str,
    parsed: &ImageRef,
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<Manifest, PushError> {
    let registry = parsed.registry_host().to_string();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match push_once(docker, parsed, credentials, log).await {
            Ok(Some(manifest)) => return Ok(manifest),
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
) -> Result<Option<Manifest>, String> {
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
                if let Some(found) = parse_manifest(s) {
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

/// The digest and size of a `<tag>: digest: sha256:… size: N` status line.
fn parse_manifest(status: &str) -> Option<Manifest> {
    let (_, rest) = status.split_once(": digest: ")?;
    let mut words = rest.split_whitespace();
    let digest = words.next().filter(|d| d.contains(':'))?.to_string();
    let size = match (words.next(), words.next()) {
        (Some("size:"), Some(n)) => n.parse().ok(),
        _ => None,
    };
    Some(Manifest { digest, size })
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
        let v1 = parse_manifest(&format!("v1: digest: {sha} size: 527")).expect("a manifest");
        assert_eq!((v1.digest.as_str(), v1.size), (sha.as_str(), Some(527)));
        let bare = parse_manifest(&format!("latest: digest: {sha}")).expect("a manifest");
        assert_eq!((bare.digest, bare.size), (sha, None));
        assert!(parse_manifest("Pushed").is_none());
        assert!(parse_manifest("x: digest: ").is_none());
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
        let err = run(&docker, &["UPPER".into()], &HashMap::new(), &[], &log).await.unwrap_err();
        assert!(matches!(err, PushError::InvalidReference { .. }), "{err}");
        let digest = format!("a@sha256:{}", "0".repeat(64));
        let err = run(&docker, &[digest], &HashMap::new(), &[], &log).await.unwrap_err();
        assert!(matches!(err, PushError::Digest { .. }), "{err}");
        assert!(run(&docker, &[], &HashMap::new(), &[], &log).await.unwrap().is_empty());
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
