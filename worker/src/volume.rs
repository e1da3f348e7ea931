//! Secret volumes: named volumes holding a plan's decoded secret files, mounted by the steps
//! that list them in `volume_mounts`.
//!
//! ACR writes the files through a shell here-doc (which expands `$`, backticks and `\` and ends
//! a file early at a line `EOL`) into a host directory inside the shared workspace, then copies
//! them into a volume with the daemon-global name `<name>` (reference §9 items 16, 20, 22).
//! kiln instead uploads a tar archive of the exact bytes through the Engine API into a stopped
//! helper container that mounts a run-unique volume: nothing is shell-interpreted, nothing
//! touches the workspace, and two runs never share a volume.
//!
//! A volume is filled on first use, by the first step that mounts it, from that step's image:
//! the helper container never starts, so any image works, and the step's image is the one
//! image known to be on the engine at that moment.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, UploadToContainerOptions,
};
use kiln_plan::plan::{RunId, SecretVolume};
use tokio::sync::OnceCell;

use crate::image::engine_message;
use crate::names;
use crate::owner::Owner;

/// Where the helper container mounts the volume while it is filled.
const FILL_PATH: &str = "/kiln-secret";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0} is not declared in the plan")]
    Unknown(String),
    #[error("secret file {file} of volume {volume} is not valid base64: {source}")]
    Decode {
        volume: String,
        file: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("cannot fill secret volume {volume}: {message}")]
    Engine { volume: String, message: String },
}

/// The run's secret volumes, each created and filled at most once.
#[derive(Debug)]
pub(crate) struct SecretVolumes {
    run: RunId,
    owner: &'static Owner,
    volumes: HashMap<String, (SecretVolume, OnceCell<String>)>,
}

impl SecretVolumes {
    pub(crate) fn new(run: &RunId, owner: &'static Owner, volumes: &[SecretVolume]) -> Self {
        SecretVolumes {
            run: run.clone(),
            owner,
            volumes: volumes
                .iter()
                .map(|v| (v.name.clone(), (v.clone(), OnceCell::new())))
                .collect(),
        }
    }

    /// The engine name of the plan volume `name`, creating and filling it first if no step
    /// has yet. `image` must be present on the engine.
    pub(crate) async fn prepare(
        &self,
        docker: &Docker,
        name: &str,
        image: &str,
    ) -> Result<&str, VolumeError> {
        let (spec, cell) =
            self.volumes.get(name).ok_or_else(|| VolumeError::Unknown(name.to_string()))?;
        cell.get_or_try_init(|| fill(docker, &self.run, self.owner, spec, image))
            .await
            .map(String::as_str)
    }
}

async fn fill(
    docker: &Docker,
    run: &RunId,
    owner: &Owner,
    spec: &SecretVolume,
    image: &str,
) -> Result<String, VolumeError> {
    let archive = archive(spec)?;
    let volume = names::secret_volume(run, &spec.name);
    let engine_err = |e: bollard::errors::Error| VolumeError::Engine {
        volume: spec.name.clone(),
        message: engine_message(e),
    };
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.clone()),
            labels: Some(names::run_labels(run, owner)),
            ..Default::default()
        })
        .await
        .map_err(engine_err)?;

    let helper = names::secret_helper(run, &spec.name);
    let mut labels = names::run_labels(run, owner);
    labels.insert(names::ROLE_LABEL.to_string(), "secret-fill".to_string());
    docker
        .create_container(
            Some(CreateContainerOptions { name: Some(helper.clone()), ..Default::default() }),
            ContainerCreateBody {
                image: Some(image.to_string()),
                // Never started: the command only has to satisfy images without CMD.
                cmd: Some(vec!["/kiln-never-started".to_string()]),
                network_disabled: Some(true),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!("{volume}:{FILL_PATH}")]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .map_err(engine_err)?;
    let upload = docker
        .upload_to_container(
            &helper,
            Some(UploadToContainerOptions { path: FILL_PATH.to_string(), ..Default::default() }),
            bollard::body_full(archive.into()),
        )
        .await;
    // The helper goes whatever the upload did; the run-end sweep catches it if this fails.
    let removed = docker
        .remove_container(
            &helper,
            Some(RemoveContainerOptions { force: true, ..Default::default() }),
        )
        .await;
    upload.map_err(engine_err)?;
    removed.map_err(engine_err)?;
    Ok(volume)
}

/// A tar of the decoded files: regular files, mode 0644 and owned by root, as ACR's root shell
/// leaves them, so steps running as another `user` can still read them.
fn archive(spec: &SecretVolume) -> Result<Vec<u8>, VolumeError> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in &spec.files {
        let bytes = STANDARD.decode(&file.content_base64).map_err(|source| {
            VolumeError::Decode { volume: spec.name.clone(), file: file.name.clone(), source }
        })?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &file.name, bytes.as_slice()).map_err(|e| {
            VolumeError::Engine {
                volume: spec.name.clone(),
                message: format!("cannot archive {}: {e}", file.name),
            }
        })?;
    }
    builder.into_inner().map_err(|e| VolumeError::Engine {
        volume: spec.name.clone(),
        message: format!("cannot archive: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plan::plan::SecretFile;

    fn volume(files: &[(&str, &str)]) -> SecretVolume {
        SecretVolume {
            name: "sec".into(),
            files: files
                .iter()
                .map(|(name, content)| SecretFile {
                    name: name.to_string(),
                    content_base64: content.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn archive_holds_exact_decoded_bytes() {
        let spec = volume(&[("token", &STANDARD.encode(b"$HOME `x` \\\nEOL\n"))]);
        let bytes = archive(&spec).expect("archive");
        let mut tar = tar::Archive::new(bytes.as_slice());
        let mut entries = tar.entries().expect("entries");
        let mut entry = entries.next().expect("one entry").expect("readable");
        assert_eq!(entry.path().expect("path").to_str(), Some("token"));
        assert_eq!(entry.header().mode().expect("mode"), 0o644);
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).expect("content");
        assert_eq!(content, b"$HOME `x` \\\nEOL\n");
    }

    #[test]
    fn invalid_base64_names_the_file() {
        let err = archive(&volume(&[("bad", "***")])).expect_err("invalid");
        assert!(
            err.to_string().starts_with("secret file bad of volume sec is not valid base64"),
            "{err}"
        );
    }
}
