//! Which manifest of a multi-platform tag a platform runs: a Docker manifest list or an OCI
//! image index names one manifest per platform, and a base image of a run on `linux/arm64` is
//! the list's arm64 entry, not the list. Watching the entry instead of the list means a task is
//! rebuilt when its own platform's base changes, not each time any platform of the list is
//! rebuilt. A pure function over the JSON a registry answers, so the rule is tested on real
//! documents; the server's base-image triggers and the worker's dependency report both use it,
//! so they name the same digest.

use serde::Deserialize;

/// The media types of a list of per-platform manifests.
pub const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
];

/// Why a list names no manifest for a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("the registry answered a manifest that is not JSON: {0}")]
    Json(String),
    #[error("the manifest list has no {platform} image (it has {})", available_names(available))]
    NoPlatform { platform: String, available: Vec<String> },
}

fn available_names(available: &[String]) -> String {
    if available.is_empty() { "none".to_string() } else { available.join(", ") }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    digest: String,
    #[serde(default)]
    platform: Option<EntryPlatform>,
}

#[derive(Deserialize)]
struct EntryPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl EntryPlatform {
    fn name(&self) -> String {
        match self.variant.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// The digest of the manifest `platform` (`os/arch[/variant]`) runs in the manifest `body`:
/// `None` when `body` is a single image's manifest (every platform runs what it is), the
/// matching entry when it is a list. An entry naming the platform exactly wins over one that
/// only matches it (`linux/arm64/v8` for `linux/arm64`); entries without a platform, or with
/// BuildKit's `unknown/unknown` attestations, match nothing.
pub fn entry_for(body: &[u8], platform: &str) -> Result<Option<String>, ListError> {
    let document: Document =
        serde_json::from_slice(body).map_err(|e| ListError::Json(e.to_string()))?;
    let is_list = document.manifests.is_some()
        || document.media_type.as_deref().is_some_and(|m| INDEX_MEDIA_TYPES.contains(&m));
    if !is_list {
        return Ok(None);
    }
    let entries: Vec<(String, &str)> = document
        .manifests
        .iter()
        .flatten()
        .filter_map(|e| e.platform.as_ref().map(|p| (p, e.digest.as_str())))
        .filter(|(p, _)| p.os != "unknown")
        .map(|(p, digest)| (p.name(), digest))
        .collect();
    let exact = entries.iter().find(|(name, _)| name.eq_ignore_ascii_case(platform));
    let matching = || entries.iter().find(|(name, _)| crate::platform::matches(name, platform));
    match exact.or_else(matching) {
        Some((_, digest)) => Ok(Some((*digest).to_string())),
        None => Err(ListError::NoPlatform {
            platform: platform.to_string(),
            available: entries.into_iter().map(|(name, _)| name).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `busybox:1.36` on Docker Hub, as the registry answers it (Docker manifest list), cut to
    /// four of its platforms.
    const DOCKER_LIST: &str = r#"{
   "manifests": [
      {"digest": "sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7",
       "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
       "platform": {"architecture": "amd64", "os": "linux"}, "size": 528},
      {"digest": "sha256:2d2b8d6ac1fa1ab1b1f0d3ed9b8b8d6d3d8d9e1e9a35ac43f2e5a5c8a1f9c8c7",
       "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
       "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}, "size": 527},
      {"digest": "sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c",
       "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
       "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}, "size": 527},
      {"digest": "sha256:c3839dd800b9eb7603340509769c43e146a74c63dca3045a8e7dc8ee07e53966",
       "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
       "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}, "size": 527}
   ],
   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
   "schemaVersion": 2
}"#;

    /// An OCI index as BuildKit pushes it: each image with its attestation manifest, whose
    /// platform is `unknown/unknown`.
    const OCI_INDEX: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:aaaa000000000000000000000000000000000000000000000000000000000001",
     "size": 673, "platform": {"architecture": "amd64", "os": "linux"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:aaaa000000000000000000000000000000000000000000000000000000000002",
     "size": 673, "platform": {"architecture": "arm64", "os": "linux"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:aaaa000000000000000000000000000000000000000000000000000000000003",
     "size": 566, "annotations": {"vnd.docker.reference.digest": "sha256:aaaa000000000000000000000000000000000000000000000000000000000001",
       "vnd.docker.reference.type": "attestation-manifest"},
     "platform": {"architecture": "unknown", "os": "unknown"}}
  ]
}"#;

    const IMAGE_MANIFEST: &str = r#"{"schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
  "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1457,
    "digest": "sha256:bbbb000000000000000000000000000000000000000000000000000000000001"},
  "layers": []}"#;

    fn entry(body: &str, platform: &str) -> Result<Option<String>, ListError> {
        entry_for(body.as_bytes(), platform)
    }

    #[test]
    fn a_docker_list_gives_the_platforms_entry_variants_included() {
        let digest = |d: &str| Ok(Some(format!("sha256:{d}")));
        assert_eq!(
            entry(DOCKER_LIST, "linux/amd64"),
            digest("9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7")
        );
        let arm64 = digest("c3839dd800b9eb7603340509769c43e146a74c63dca3045a8e7dc8ee07e53966");
        assert_eq!(entry(DOCKER_LIST, "linux/arm64"), arm64);
        assert_eq!(entry(DOCKER_LIST, "linux/arm64/v8"), arm64);
        assert_eq!(
            entry(DOCKER_LIST, "linux/arm/v7"),
            digest("7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c")
        );
        assert_eq!(
            entry(DOCKER_LIST, "linux/arm/v6"),
            digest("2d2b8d6ac1fa1ab1b1f0d3ed9b8b8d6d3d8d9e1e9a35ac43f2e5a5c8a1f9c8c7")
        );
    }

    #[test]
    fn an_oci_index_skips_attestations_and_says_which_platforms_it_has() {
        assert_eq!(
            entry(OCI_INDEX, "linux/arm64/v8"),
            Ok(Some(
                "sha256:aaaa000000000000000000000000000000000000000000000000000000000002".into()
            ))
        );
        let error = entry(OCI_INDEX, "linux/s390x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "the manifest list has no linux/s390x image (it has linux/amd64, linux/arm64)"
        );
    }

    #[test]
    fn a_single_manifest_is_every_platforms_and_garbage_is_an_error() {
        assert_eq!(entry(IMAGE_MANIFEST, "linux/arm64"), Ok(None));
        assert!(matches!(entry("<html>", "linux/amd64"), Err(ListError::Json(_))));
        let empty = r#"{"mediaType": "application/vnd.oci.image.index.v1+json"}"#;
        assert_eq!(
            entry(empty, "linux/amd64").unwrap_err().to_string(),
            "the manifest list has no linux/amd64 image (it has none)"
        );
    }
}
