//! Tests' multi-platform tags: an OCI image index pushed to the test environment's open
//! registry (`KILN_TEST_REGISTRY`) through the distribution API itself (blob upload, manifest
//! `PUT`), since Docker 20.10's CLI cannot push a list of images it does not have. The images
//! are configs without layers, one per platform, made unique by a marker.

use sha2::{Digest as _, Sha256};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The open registry of the test environment, or `None` (the test then skips).
pub fn registry(test: &str) -> Option<String> {
    let registry = std::env::var("KILN_TEST_REGISTRY").ok();
    if registry.is_none() {
        eprintln!("{test}: skipped, KILN_TEST_REGISTRY is not set (scripts/test-env.sh)");
    }
    registry
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!("sha256:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

/// Uploads `bytes` as a blob of `repository` (a monolithic upload); its digest.
fn put_blob(registry: &str, repository: &str, bytes: &[u8]) -> String {
    let digest = digest(bytes);
    let http = agent();
    let started = http
        .post(format!("http://{registry}/v2/{repository}/blobs/uploads/"))
        .send_empty()
        .expect("start an upload");
    assert_eq!(started.status().as_u16(), 202, "starting a blob upload");
    let location = started.headers()["location"].to_str().expect("location").to_string();
    let separator = if location.contains('?') { '&' } else { '?' };
    let done = http
        .put(format!("{location}{separator}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .send(bytes)
        .expect("upload the blob");
    assert_eq!(done.status().as_u16(), 201, "uploading blob {digest}");
    digest
}

/// `PUT`s the manifest `body` of `media_type` as `reference`.
fn put_manifest(registry: &str, repository: &str, reference: &str, media_type: &str, body: &str) {
    let put = agent()
        .put(format!("http://{registry}/v2/{repository}/manifests/{reference}"))
        .header("content-type", media_type)
        .send(body.as_bytes())
        .expect("put the manifest");
    assert_eq!(put.status().as_u16(), 201, "putting {repository}:{reference}: {body}");
}

/// Pushes an image for each `(platform, marker)` and an index of them as `repository:tag`;
/// the index's digest and each image manifest's, in order.
pub fn push_index(
    registry: &str,
    repository: &str,
    tag: &str,
    images: &[(&str, &str)],
) -> (String, Vec<String>) {
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (platform, marker) in images {
        let (os, architecture) = platform.split_once('/').expect("os/arch");
        let config = serde_json::json!({"architecture": architecture, "os": os,
            "rootfs": {"type": "layers", "diff_ids": []}, "config": {"Labels": {"kiln": marker}}})
        .to_string();
        let config_digest = put_blob(registry, repository, config.as_bytes());
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config.len()},
            "layers": []})
        .to_string();
        let manifest_digest = digest(manifest.as_bytes());
        put_manifest(registry, repository, &manifest_digest, MANIFEST, &manifest);
        entries.push(serde_json::json!({"mediaType": MANIFEST, "digest": manifest_digest,
            "size": manifest.len(), "platform": {"architecture": architecture, "os": os}}));
        digests.push(manifest_digest);
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries})
        .to_string();
    put_manifest(registry, repository, tag, INDEX, &index);
    (digest(index.as_bytes()), digests)
}

/// The index `repository:tag` as the registry serves it, parsed.
pub fn get_index(registry: &str, repository: &str, tag: &str) -> serde_json::Value {
    let mut got = agent()
        .get(format!("http://{registry}/v2/{repository}/manifests/{tag}"))
        .header("accept", INDEX)
        .call()
        .expect("get the index");
    assert_eq!(got.status().as_u16(), 200);
    serde_json::from_slice(&got.body_mut().read_to_vec().expect("body")).expect("JSON")
}
