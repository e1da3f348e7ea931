//! Multi-platform images: one tag naming an image per platform (a manifest list), pushed to
//! the registry after each platform's image was pushed.
//!
//! The engine (20.10, classic builder) can neither build for several platforms at once nor
//! push a list, so kiln builds each platform as its own image, pushes each under its own tag
//! (`<tag>-<os>-<arch>[-<variant>]`, the engine pushes only tags) and then puts the list
//! together from the digests the registry answered, the way `docker manifest create` / `push`
//! does. The list is a Docker manifest list (its entries are the engine's Docker v2
//! manifests); its digest is what the run reports for the tag.
//!
//! The other way round, a base image the engine pulled by a list's tag is reported as the
//! list's entry for the build's platform ([`platform_entry`]): the engine records only the
//! list's digest, and the base-image triggers watch the entry.
//!
//! Written on `oci-client` (registry auth challenges, manifest PUT), speaking plain HTTP to
//! loopback registries as Docker does and trusting the engine's registry CAs
//! (`/etc/docker/certs.d/<host>/ca.crt`) as Docker does.

use kiln_plan::image_ref::{ImageRef, is_loopback_registry};
use kiln_plan::manifest_list;
use kiln_plan::plan::RegistryCredential;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciImageIndex, Platform};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// Media type of the list, and of its entries (what the engine pushes).
const LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ENTRY: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What a registry may answer for a digest the engine pulled by.
const PULLED: [&str; 4] = [
    LIST,
    ENTRY,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
];

/// One platform's image as the registry stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformImage {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub digest: String,
    /// Bytes of its manifest.
    pub size: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot push the manifest list {image}: {message}")]
    Push { image: String, message: String },
    #[error("cannot read the manifest of {image}: {message}")]
    Read { image: String, message: String },
}

/// The tag a platform's image is pushed under: `app:1` for `linux/arm64/v8` is
/// `app:1-linux-arm64-v8`.
pub fn platform_tag(image: &ImageRef, platform: &str) -> String {
    let tag = image.tag.as_deref().unwrap_or("latest");
    format!("{}:{tag}-{}", image.name(), platform.replace('/', "-"))
}

/// The list naming `images` under `image`'s tag.
pub fn manifest_list(images: &[PlatformImage]) -> OciImageIndex {
    let manifests = images
        .iter()
        .map(|i| ImageIndexEntry {
            media_type: ENTRY.to_string(),
            digest: i.digest.clone(),
            size: i.size,
            platform: Some(Platform {
                architecture: i.architecture.as_str().into(),
                os: i.os.as_str().into(),
                os_version: None,
                os_features: None,
                variant: i.variant.clone(),
                features: None,
            }),
            annotations: None,
            artifact_type: None,
        })
        .collect();
    OciImageIndex {
        schema_version: 2,
        media_type: Some(LIST.to_string()),
        manifests,
        artifact_type: None,
        annotations: None,
    }
}

/// Pushes the list of `images` as `image` and returns its digest.
pub async fn push(
    image: &ImageRef,
    images: &[PlatformImage],
    credentials: &[RegistryCredential],
) -> Result<String, IndexError> {
    let full = image.with_default_tag();
    let failed = |message: String| IndexError::Push { image: full.clone(), message };
    let reference: Reference = full.parse().map_err(|e| failed(format!("{e}")))?;
    let (client, auth) = client_for(image, credentials);
    client
        .push_manifest_list(&reference, &auth, manifest_list(images))
        .await
        .map_err(|e| failed(e.to_string()))?;
    client.fetch_manifest_digest(&reference, &auth).await.map_err(|e| failed(e.to_string()))
}

/// The digest of `platform`'s entry when `image` (`repo@digest`) is a manifest list or OCI
/// index, `None` when it is one image's manifest.
pub async fn platform_entry(
    image: &ImageRef,
    platform: &str,
    credentials: &[RegistryCredential],
) -> Result<Option<String>, IndexError> {
    let full = image.to_string();
    let failed = |message: String| IndexError::Read { image: full.clone(), message };
    let reference: Reference = full.parse().map_err(|e| failed(format!("{e}")))?;
    let (client, auth) = client_for(image, credentials);
    let (body, _) = client
        .pull_manifest_raw(&reference, &auth, &PULLED)
        .await
        .map_err(|e| failed(e.to_string()))?;
    manifest_list::entry_for(&body, platform).map_err(|e| failed(e.to_string()))
}

/// A client for `image`'s registry, with the run's login for it.
fn client_for(image: &ImageRef, credentials: &[RegistryCredential]) -> (Client, RegistryAuth) {
    let host = image.registry_host().to_string();
    // oci-client's reqwest takes the process's rustls provider; kiln's is ring everywhere
    // (another part of the process may have installed it already, which is as good).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let auth = match crate::auth::for_host(credentials, &host) {
        Some(c) => {
            RegistryAuth::Basic(c.username.unwrap_or_default(), c.password.unwrap_or_default())
        }
        None => RegistryAuth::Anonymous,
    };
    (Client::new(client_config(&host)), auth)
}

/// Plain HTTP for loopback registries (Docker's default insecure range), HTTPS with the
/// engine's CA for the registry otherwise.
fn client_config(host: &str) -> ClientConfig {
    let extra_root_certificates =
        std::fs::read(format!("{}/{host}/ca.crt", crate::auth::REGISTRY_CERTS_DIR))
            .map(|data| vec![Certificate { encoding: CertificateEncoding::Pem, data }])
            .unwrap_or_default();
    ClientConfig {
        protocol: if is_loopback_registry(host) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates,
        ..ClientConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_images_get_their_own_tags() {
        let image = ImageRef::parse("127.0.0.1:5000/app:1").expect("ref");
        assert_eq!(platform_tag(&image, "linux/arm64/v8"), "127.0.0.1:5000/app:1-linux-arm64-v8");
        let untagged = ImageRef::parse("app").expect("ref");
        assert_eq!(platform_tag(&untagged, "linux/amd64"), "app:latest-linux-amd64");
    }

    #[test]
    fn the_list_names_each_platform() {
        let image = |architecture: &str, variant: Option<&str>, digest: &str, size| PlatformImage {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
            digest: digest.into(),
            size,
        };
        let list = manifest_list(&[
            image("amd64", None, "sha256:aa", 528),
            image("arm64", Some("v8"), "sha256:bb", 529),
        ]);
        let json = serde_json::to_value(&list).expect("json");
        assert_eq!(json["mediaType"], LIST);
        assert_eq!(json["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(json["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(json["manifests"][1]["digest"], "sha256:bb");
        assert_eq!(json["manifests"][1]["size"], 529);
    }

    #[test]
    fn loopback_registries_are_spoken_to_over_http() {
        assert!(matches!(client_config("127.0.0.1:5000").protocol, ClientProtocol::Http));
        assert!(matches!(client_config("localhost:5000").protocol, ClientProtocol::Http));
        assert!(matches!(client_config("registry.example:443").protocol, ClientProtocol::Https));
    }
}
