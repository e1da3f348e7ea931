//! Base-image tracking (reference §5.2): which base images a task's run built on, read from the
//! run's dependency report (§6.3), and how a watched image is named for pulling.
//!
//! Every distinct base image is kept with its kind (`RunTime`: the final stage's base;
//! `BuildTime`: any other `FROM`) and the digest the engine pulled; the task's trigger type
//! decides which kinds are watched. Images pinned by digest (`FROM x@sha256:…`) cannot move
//! and are not kept; `scratch` is no image at all.

use crate::image_ref::DOCKER_HUB_REPORT_REGISTRY;
use crate::report::DigestKind;
use crate::report::{Dependency, ImageReference};

/// A base image of a task's build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// `RunTime` or `BuildTime`.
    pub kind: &'static str,
    pub registry: String,
    pub repository: String,
    pub tag: String,
    /// The registry digest the engine built on, or the local image ID of a base no registry
    /// knows; empty when unknown.
    pub digest: String,
    /// Which of the two `digest` is; `None` when it is empty.
    pub digest_kind: Option<DigestKind>,
}

/// The base images a dependency report names, each once (a runtime base that is also some
/// other stage's build-time base is kept as runtime). A report that does not parse names none.
pub fn from_report(report: &serde_json::Value) -> Vec<BaseImage> {
    let Ok(entries) = serde_json::from_value::<Vec<Dependency>>(report.clone()) else {
        return Vec::new();
    };
    let mut images: Vec<BaseImage> = Vec::new();
    let runtime = entries.iter().filter_map(|e| e.runtime.as_ref()).map(|r| ("RunTime", r));
    let buildtime = entries.iter().flat_map(|e| &e.buildtime).map(|r| ("BuildTime", r));
    for (kind, reference) in runtime.chain(buildtime) {
        let Some(image) = base_image(kind, reference) else { continue };
        let seen = images.iter().any(|i| {
            (&i.registry, &i.repository, &i.tag) == (&image.registry, &image.repository, &image.tag)
        });
        if !seen {
            images.push(image);
        }
    }
    images
}

fn base_image(kind: &'static str, reference: &ImageReference) -> Option<BaseImage> {
    if reference.tag.is_empty() || reference.repository.is_empty() {
        return None;
    }
    Some(BaseImage {
        kind,
        registry: reference.registry.clone(),
        repository: reference.repository.clone(),
        tag: reference.tag.clone(),
        digest: reference.digest.clone(),
        digest_kind: reference.digest_kind,
    })
}

/// The reference to pull a watched image by (Docker Hub images by their short name).
pub fn pull_reference(registry: &str, repository: &str, tag: &str) -> String {
    if registry == DOCKER_HUB_REPORT_REGISTRY {
        format!("{repository}:{tag}")
    } else {
        format!("{registry}/{repository}:{tag}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_image_report_gives_each_base_once_runtime_first() {
        let report: serde_json::Value = serde_json::from_str(
            r#"[{"image":{"registry":"r.local:5000","repository":"app","tag":"v1","digest":"sha256:a","reference":"r.local:5000/app:v1"},
                 "runtime-dependency":{"registry":"r.local:5000","repository":"base","tag":"1","digest":"sha256:b","reference":"r.local:5000/base:1"},
                 "buildtime-dependency":[{"registry":"registry.hub.docker.com","repository":"library/golang","tag":"1.22","digest":"","reference":"golang:1.22"},
                                         {"registry":"r.local:5000","repository":"base","tag":"1","digest":"sha256:b","reference":"r.local:5000/base:1"},
                                         {"registry":"r.local:5000","repository":"pinned","digest":"sha256:c","reference":"r.local:5000/pinned@sha256:c"}]},
                {"image":{"registry":"r.local:5000","repository":"app","tag":"latest","digest":"","reference":"r.local:5000/app:latest"},
                 "runtime-dependency":{"registry":"r.local:5000","repository":"base","tag":"1","digest":"sha256:b","reference":"r.local:5000/base:1"},
                 "buildtime-dependency":null}]"#,
        )
        .unwrap();
        let images = from_report(&report);
        let names: Vec<_> = images
            .iter()
            .map(|i| {
                (i.kind, pull_reference(&i.registry, &i.repository, &i.tag), i.digest.as_str())
            })
            .collect();
        assert_eq!(
            names,
            [
                ("RunTime", "r.local:5000/base:1".to_string(), "sha256:b"),
                ("BuildTime", "library/golang:1.22".to_string(), ""),
            ]
        );
        assert!(from_report(&serde_json::json!({"not": "a report"})).is_empty());
    }
}
