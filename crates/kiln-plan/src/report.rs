//! The dependency report (§6.3): one entry per `-t` of a build step (one with `"image": null` for
//! an untagged build), in the JSON shape ACR's engine prints after a successful run.
//!
//! The shape is ACR's (`acr-builder` `image.Dependencies`): `tag` is left out when empty,
//! `digest` is always present (empty until known), `git` carries the head revision. Docker Hub
//! images are reported as registry `registry.hub.docker.com`, repository `library/<name>` for
//! official images, and `reference` is the image as written with `:latest` added when it has
//! neither tag nor digest. Deliberate differences: an empty `buildtime-dependency` is `[]`, not
//! ACR's `null` (Go's nil slice; `null` is still accepted when reading), and a known digest
//! comes with its kind: `repo-digest` (a registry's manifest digest) or `image-id` (a base
//! image only the engine has, e.g. built by an earlier step, identified by its local ID).
//!
//! Two spellings of the same keys: serde's are the API's camelCase (`runtimeDependency`,
//! `buildtimeDependency`, `gitHeadRevision`, `digestKind`); the line printed in the log, which
//! the run also stores, keeps ACR's kebab-case ([`report_json`]). Reading accepts both.

use serde::{Deserialize, Deserializer, Serialize};

use crate::image_ref::{DOCKER_HUB_REPORT_REGISTRY, ImageRef};

/// One report entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Dependency {
    /// The built image (one of the step's tags); `None` for an untagged build.
    pub image: Option<ImageReference>,
    /// The image the built stage starts from; `None` for `FROM scratch` or when unresolved.
    #[serde(rename = "runtimeDependency", alias = "runtime-dependency")]
    pub runtime: Option<ImageReference>,
    #[serde(
        rename = "buildtimeDependency",
        alias = "buildtime-dependency",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub buildtime: Vec<ImageReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitReference>,
}

/// An image in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageReference {
    pub registry: String,
    pub repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// `sha256:…`, or empty when not known (not pushed yet, or not on the engine).
    #[serde(default)]
    pub digest: String,
    /// What `digest` is; `None` when it is empty.
    #[serde(
        rename = "digestKind",
        alias = "digest-kind",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub digest_kind: Option<DigestKind>,
    pub reference: String,
}

impl DigestKind {
    /// The name in the printed report and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestKind::RepoDigest => "repo-digest",
            DigestKind::ImageId => "image-id",
        }
    }

    pub fn parse(text: &str) -> Option<DigestKind> {
        [DigestKind::RepoDigest, DigestKind::ImageId].into_iter().find(|k| k.as_str() == text)
    }
}

/// What an image's digest identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DigestKind {
    /// The manifest digest a registry knows the image by (`repo@sha256:…` pulls it).
    RepoDigest,
    /// The engine's local image ID: the image never came from or went to a registry.
    ImageId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitReference {
    /// The commit the context came from; empty when the context is not a Git checkout.
    #[serde(rename = "gitHeadRevision", alias = "git-head-revision")]
    pub head_revision: String,
}

impl ImageReference {
    pub fn from_ref(image: &ImageRef) -> Self {
        let untagged = image.tag.is_none() && image.digest.is_none();
        let reference = if untagged { format!("{image}:latest") } else { image.to_string() };
        Self {
            registry: if image.is_docker_hub() {
                DOCKER_HUB_REPORT_REGISTRY.to_string()
            } else {
                image.registry_host().to_string()
            },
            repository: image.repository(),
            tag: match (&image.tag, untagged) {
                (Some(tag), _) => tag.clone(),
                (None, true) => "latest".to_string(),
                (None, false) => String::new(),
            },
            digest: image.digest.clone().unwrap_or_default(),
            digest_kind: image.digest.is_some().then_some(DigestKind::RepoDigest),
            reference,
        }
    }

    /// Sets the digest and its kind (none for an empty digest).
    pub fn set_digest(&mut self, digest: String, kind: DigestKind) {
        self.digest_kind = (!digest.is_empty()).then_some(kind);
        self.digest = digest;
    }

    /// Whether `image` (as a push step or `-t` names it) is this image.
    pub fn is(&self, image: &str) -> bool {
        match ImageRef::parse(image) {
            Ok(parsed) => {
                let other = Self::from_ref(&parsed);
                other.registry == self.registry
                    && other.repository == self.repository
                    && other.tag == self.tag
            }
            Err(_) => false,
        }
    }
}

impl Dependency {
    /// The same entry with the built image's registry digest (known after a push).
    pub fn with_digest(mut self, digest: impl Into<String>) -> Self {
        if let Some(image) = &mut self.image {
            image.set_digest(digest.into(), DigestKind::RepoDigest);
        }
        self
    }
}

/// The report as the single JSON line ACR prints after `The following dependencies were found:`,
/// with ACR's kebab-case keys.
pub fn report_json(deps: &[Dependency]) -> String {
    // Serialising plain strings and vectors cannot fail; an empty report is the safe fallback.
    serde_json::to_string(&printed(deps)).unwrap_or_else(|_| "[]".to_string())
}

/// The report in ACR's printed form (its keys, its field order), for any serde format: the
/// log's JSON line, or the YAML a reader is shown.
pub fn printed(deps: &[Dependency]) -> Vec<Printed<'_>> {
    deps.iter().map(Printed::from).collect()
}

/// An entry as ACR prints it: the same fields in the same order, ACR's keys.
#[derive(Serialize)]
pub struct Printed<'a> {
    image: Option<PrintedImage<'a>>,
    #[serde(rename = "runtime-dependency")]
    runtime: Option<PrintedImage<'a>>,
    #[serde(rename = "buildtime-dependency")]
    buildtime: Vec<PrintedImage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    git: Option<PrintedGit<'a>>,
}

#[derive(Serialize)]
struct PrintedImage<'a> {
    registry: &'a str,
    repository: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    tag: &'a str,
    digest: &'a str,
    #[serde(rename = "digest-kind", skip_serializing_if = "Option::is_none")]
    digest_kind: Option<DigestKind>,
    reference: &'a str,
}

impl<'a> From<&'a ImageReference> for PrintedImage<'a> {
    fn from(i: &'a ImageReference) -> Self {
        PrintedImage {
            registry: &i.registry,
            repository: &i.repository,
            tag: &i.tag,
            digest: &i.digest,
            digest_kind: i.digest_kind,
            reference: &i.reference,
        }
    }
}

#[derive(Serialize)]
struct PrintedGit<'a> {
    #[serde(rename = "git-head-revision")]
    head_revision: &'a str,
}

impl<'a> From<&'a Dependency> for Printed<'a> {
    fn from(d: &'a Dependency) -> Self {
        Printed {
            image: d.image.as_ref().map(PrintedImage::from),
            runtime: d.runtime.as_ref().map(PrintedImage::from),
            buildtime: d.buildtime.iter().map(PrintedImage::from).collect(),
            git: d.git.as_ref().map(|g| PrintedGit { head_revision: &g.head_revision }),
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ImageReference>, D::Error> {
    Ok(Option::<Vec<ImageReference>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> ImageReference {
        ImageReference::from_ref(&ImageRef::parse(s).unwrap())
    }

    #[test]
    fn normalisation_matches_acr() {
        let r = reference("busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str(), r.reference.as_str()),
            ("registry.hub.docker.com", "library/busybox", "latest", "busybox:latest")
        );
        let r = reference("myuser/app:1");
        assert_eq!((r.repository.as_str(), r.tag.as_str()), ("myuser/app", "1"));
        let r = reference("myreg.azurecr.io/app:ca1");
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("myreg.azurecr.io", "app"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = reference(&format!("alpine@{digest}"));
        assert_eq!((r.tag.as_str(), r.digest.as_str()), ("", digest.as_str()));
        assert_eq!(r.digest_kind, Some(DigestKind::RepoDigest));
        assert_eq!(r.reference, format!("alpine@{digest}"));
    }

    #[test]
    fn json_shape() {
        let dep = Dependency {
            image: Some(reference("myreg.azurecr.io/app:ca1")),
            runtime: Some(reference("alpine:3.20")),
            buildtime: vec![reference("golang:1.22")],
            git: Some(GitReference { head_revision: "abc".into() }),
        }
        .with_digest("sha256:1");
        let json = report_json(std::slice::from_ref(&dep));
        assert_eq!(
            json,
            r#"[{"image":{"registry":"myreg.azurecr.io","repository":"app","tag":"ca1","digest":"sha256:1","digest-kind":"repo-digest","reference":"myreg.azurecr.io/app:ca1"},"runtime-dependency":{"registry":"registry.hub.docker.com","repository":"library/alpine","tag":"3.20","digest":"","reference":"alpine:3.20"},"buildtime-dependency":[{"registry":"registry.hub.docker.com","repository":"library/golang","tag":"1.22","digest":"","reference":"golang:1.22"}],"git":{"git-head-revision":"abc"}}]"#
        );
        let back: Vec<Dependency> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, std::slice::from_ref(&dep));
        let api = serde_json::to_value(&dep).unwrap();
        assert!(api.get("runtimeDependency").is_some() && api.get("buildtimeDependency").is_some());
        assert_eq!(api["git"]["gitHeadRevision"], "abc");
        assert_eq!(serde_json::from_value::<Dependency>(api).unwrap(), dep);
        let acr = r#"[{"image":null,"runtime-dependency":null,"buildtime-dependency":null}]"#;
        let parsed: Vec<Dependency> = serde_json::from_str(acr).unwrap();
        assert!(parsed[0].buildtime.is_empty() && parsed[0].git.is_none());
    }
}
