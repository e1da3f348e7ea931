//! A `cache: enabled` build step's registry cache: its name, and the pull before and the push
//! after the build.
//!
//! ACR builds such steps with buildx and a registry cache `<repo>:cache_<task>_<stepID>` (§2.1
//! item 4, §3 `cache`). This engine has the classic builder and no buildx, so the cache is the
//! form the classic builder reads: the last built image, pushed under that name and pulled back
//! as a `--cache-from` source by the next build. It holds the layers of the final stage and of
//! the stages it is built `FROM`; a stage that is only copied from (`COPY --from`) is not in the
//! image, so it is cached only by the engine's local layer cache. The cache only ever speeds a
//! build up: a missing or unreachable cache, or a failed push, is a line in the step log, never
//! a failed step.

use std::pin::pin;

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use futures_util::StreamExt;
use kiln_plan::image_ref::{ImageRef, RefError};
use kiln_plan::plan::RegistryCredential;

use crate::image::{self, ImageError};
use crate::push;

/// The task name in cache tags of quick runs, which have none (ACR's placeholder).
const QUICK_RUN: &str = "quickrun";

/// What names a step's cache besides its tags: the run's registry and task.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The run's registry, for tags that name none.
    pub registry: Option<&'a str>,
    /// `None` for a quick run.
    pub task_name: Option<&'a str>,
}

/// Why a step's cache cannot be named; the build then runs without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("the cache is named after the image, and the build has no `-t`")]
    NoTag,
    #[error(
        "no `-t` names a registry (as in `-t myregistry.example/{path}`) and the run has no \
         registry (`--registry`) to keep the cache of {path} in"
    )]
    NoRegistry { path: String },
    #[error(
        "the cache reference {reference:?} (from the task name and step ID) is invalid: {source}"
    )]
    Invalid { reference: String, source: RefError },
}

impl Scope<'_> {
    /// `<repository>:cache_<task>_<step>`, as ACR names it: the repository of the first tag
    /// that names a registry, else the first tag's path in the run's registry.
    pub fn reference(&self, tags: &[String], step: &str) -> Result<ImageRef, CacheError> {
        let tags: Vec<ImageRef> = tags.iter().filter_map(|t| ImageRef::parse(t).ok()).collect();
        let repository = match tags.iter().find(|t| t.registry.is_some()) {
            Some(tag) => tag.name(),
            None => {
                let first = tags.first().ok_or(CacheError::NoTag)?;
                match self.registry.filter(|r| !r.is_empty()) {
                    Some(registry) => format!("{}/{}", registry.trim_end_matches('/'), first.path),
                    None => return Err(CacheError::NoRegistry { path: first.path.clone() }),
                }
            }
        };
        let task = self.task_name.filter(|t| !t.is_empty()).unwrap_or(QUICK_RUN);
        let reference = format!("{repository}:cache_{task}_{step}");
        ImageRef::parse(&reference).map_err(|source| CacheError::Invalid { reference, source })
    }
}

/// Pulls the cache with the run's login for its registry. Returns nothing: a cache that is not
/// there yet (the first build) or cannot be pulled leaves the build to run without it.
pub async fn pull(
    docker: &Docker,
    reference: &ImageRef,
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) {
    log(format!("Pulling the build cache {reference}\n").as_bytes());
    let mut lines = pin!(image::pull_lines(docker, reference, None, credentials));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => log(format!("{line}\n").as_bytes()),
            Err(ImageError::Pull { message, .. }) if is_missing(&message) => {
                log(format!(
                    "Note: no build cache at {reference} yet ({message}): this build fills it\n"
                )
                .as_bytes());
                return;
            }
            Err(e) => {
                log(format!("Warning: building without the build cache: {e}\n").as_bytes());
                return;
            }
        }
    }
}

/// Tags the built image as the cache and pushes it, with the push step's retries. A failure is
/// a warning: the image was built. The image the tag held before (the pulled cache, when this
/// build did not reproduce it) is removed when nothing else names it: left with only its
/// registry digest, it would stay on the engine, one for every build that changed the cache.
pub async fn push(
    docker: &Docker,
    image_id: &str,
    reference: &ImageRef,
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) {
    let previous = docker.inspect_image(&reference.to_string()).await.ok().and_then(|i| i.id);
    tag_and_push(docker, image_id, reference, credentials, log).await;
    let Some(previous) = previous.filter(|p| p != image_id) else { return };
    // Only an image no tag names any more (removing by ID would untag the rest), and not
    // forced: one a container or a child image uses stays.
    let untagged = docker
        .inspect_image(&previous)
        .await
        .is_ok_and(|i| i.repo_tags.is_none_or(|tags| tags.is_empty()));
    if untagged {
        let _ = docker.remove_image(&previous, None::<RemoveImageOptions>, None).await;
    }
}

async fn tag_and_push(
    docker: &Docker,
    image_id: &str,
    reference: &ImageRef,
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) {
    if let Err(message) = image::tag(docker, image_id, reference).await {
        log(format!("Warning: the build cache was not pushed: tagging {reference}: {message}\n")
            .as_bytes());
        return;
    }
    log(format!("Pushing the build cache {reference}\n").as_bytes());
    if let Err(e) = push::run(
        docker,
        &[reference.to_string()],
        &std::collections::HashMap::new(),
        credentials,
        log,
    )
    .await
    {
        log(format!("Warning: the build cache was not pushed: {e}\n").as_bytes());
    }
}

/// The registry's answers for a reference it does not have (distribution's `MANIFEST_UNKNOWN`
/// for a tag, `NAME_UNKNOWN` for a repository), as the engine words them.
fn is_missing(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    ["manifest unknown", "name unknown", "not found"].iter().any(|needle| lower.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(tags: &[&str]) -> Vec<String> {
        tags.iter().map(|t| t.to_string()).collect()
    }

    fn reference(scope: Scope<'_>, t: &[&str], step: &str) -> Result<String, CacheError> {
        scope.reference(&tags(t), step).map(|r| r.to_string())
    }

    const RUN: Scope<'static> = Scope { registry: Some("myreg.azurecr.io"), task_name: None };

    #[test]
    fn the_first_tag_naming_a_registry_names_the_cache() {
        let got = reference(RUN, &["app:v1", "127.0.0.1:5000/team/app:v1", "r.io/b:2"], "build");
        assert_eq!(got.as_deref(), Ok("127.0.0.1:5000/team/app:cache_quickrun_build"));
        let named = Scope { task_name: Some("nightly"), ..RUN };
        let got = reference(named, &["localhost/app"], "b");
        assert_eq!(got.as_deref(), Ok("localhost/app:cache_nightly_b"));
    }

    #[test]
    fn tags_without_a_registry_use_the_runs_registry() {
        let got = reference(RUN, &["team/app:v1", "other"], "acb_step_0");
        assert_eq!(got.as_deref(), Ok("myreg.azurecr.io/team/app:cache_quickrun_acb_step_0"));
        let named = Scope { task_name: Some("nightly"), ..RUN };
        assert_eq!(
            reference(named, &["app"], "s").as_deref(),
            Ok("myreg.azurecr.io/app:cache_nightly_s")
        );
        let empty_task = Scope { task_name: Some(""), ..RUN };
        assert_eq!(
            reference(empty_task, &["app"], "s").as_deref(),
            Ok("myreg.azurecr.io/app:cache_quickrun_s")
        );
    }

    #[test]
    fn unnamed_caches_are_errors() {
        assert_eq!(reference(RUN, &[], "s"), Err(CacheError::NoTag));
        for registry in [None, Some("")] {
            let scope = Scope { registry, task_name: None };
            assert_eq!(
                reference(scope, &["team/app:v1"], "s"),
                Err(CacheError::NoRegistry { path: "team/app".into() })
            );
        }
        let long = "x".repeat(130);
        let err = reference(RUN, &["app"], &long).unwrap_err();
        assert!(matches!(err, CacheError::Invalid { .. }), "{err}");
        let err = reference(Scope { task_name: Some("my task"), ..RUN }, &["app"], "s");
        assert!(matches!(err, Err(CacheError::Invalid { .. })), "{err:?}");
    }

    #[test]
    fn missing_caches_are_told_apart() {
        assert!(is_missing(
            "manifest for 127.0.0.1:5000/a:cache_quickrun_b not found: manifest unknown: manifest unknown"
        ));
        assert!(is_missing("name unknown: repository name not known to registry"));
        assert!(!is_missing("unauthorized: authentication required"));
        assert!(!is_missing("dial tcp 127.0.0.1:5999: connect: connection refused"));
    }
}
