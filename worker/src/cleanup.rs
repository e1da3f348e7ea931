//! Removing what runs leave on the engine, found by label rather than remembered by name.
//!
//! Every container, network and volume kiln creates carries `kiln.run=<run id>`
//! ([`crate::names::RUN_LABEL`]). At the end of a run — success, failure, timeout or cancel —
//! the run sweeps its own label, which also catches objects whose creation raced with an abort.
//! [`sweep`] does the same for many runs at once (tests sweep only the runs they created), and
//! [`sweep_orphans`] removes what owners that are provably gone left ([`crate::owner`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveImageOptions, RemoveVolumeOptions,
};
use futures_util::future::join_all;
use kiln_plan::plan::RunId;

use crate::engine::Engine;
use crate::names::RUN_LABEL;
use crate::owner::{self, OWNER_LABEL, Verdict};

/// What a sweep removed, by Docker name, and what it could not remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
    /// One line per object that could not be removed.
    pub errors: Vec<String>,
}

impl SweepReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("listing {kind} labelled by kiln failed: {source}")]
pub struct CleanupError {
    kind: &'static str,
    #[source]
    source: bollard::errors::Error,
}

/// Removes every container, network and volume labelled `kiln.run` whose run ID `select`
/// accepts. Containers go first (force: running ones are killed, with their anonymous volumes),
/// because networks and volumes in use cannot be removed.
///
/// Only one worker may own an engine when sweeping with `|_| true`: the sweep cannot tell a
/// crashed predecessor's run from a live run of another worker.
pub async fn sweep(
    engine: &Engine,
    select: impl Fn(&RunId) -> bool + Sync,
) -> Result<SweepReport, CleanupError> {
    let by_run = |labels: &HashMap<String, String>| {
        labels.get(RUN_LABEL).is_some_and(|run| select(&RunId::new(run.as_str())))
    };
    sweep_label(engine.docker(), RUN_LABEL.to_string(), &by_run).await
}

/// Removes what kiln processes that died left behind (a crash, a `kill -9`), on any run or
/// none (spare networks): every object names its owner instance ([`crate::owner`]), and only
/// objects whose owner is provably gone are touched, so live runs of other processes sharing
/// the engine, and objects whose owner cannot be judged, stay. Then the lock files of owners
/// long gone ([`owner::FORGET_AFTER`]) in this process's own lock directory are deleted,
/// unless objects of theirs remain.
/// What a worker does when it starts, and the server's janitor does on every pass.
pub async fn sweep_orphans(engine: &Engine) -> Result<SweepReport, CleanupError> {
    // One verdict per owner and sweep; `Live` is kept even if the owner dies meanwhile, so
    // its lock file is not deleted while objects of it might remain.
    let verdicts: Mutex<HashMap<PathBuf, Verdict>> = Mutex::default();
    let orphaned = |labels: &HashMap<String, String>| {
        let Some(lock) = owner::lock_of(labels) else { return false };
        let mut verdicts = verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        *verdicts.entry(lock).or_insert_with_key(|lock| owner::judge(lock)) == Verdict::Gone
    };
    let report = sweep_label(engine.docker(), OWNER_LABEL.to_string(), &orphaned).await?;
    let verdicts = verdicts.into_inner().unwrap_or_else(PoisonError::into_inner);
    if let Some(dir) = engine.owner().lock_path().parent() {
        for lock in owner::forgettable_in(dir, std::time::SystemTime::now()) {
            let forget = match verdicts.get(&lock) {
                None => true,
                Some(verdict) => *verdict == Verdict::Gone && report.is_clean(),
            };
            if forget {
                // Another sweep may delete it first; a file that stays is judged again.
                let _ = std::fs::remove_file(&lock);
            }
        }
    }
    Ok(report)
}

/// Removes what one run created (the end of every run).
pub(crate) async fn sweep_run(docker: &Docker, run: &RunId) -> Result<SweepReport, CleanupError> {
    sweep_label(docker, format!("{RUN_LABEL}={run}"), &|_| true).await
}

async fn sweep_label(
    docker: &Docker,
    label_filter: String,
    select: &(dyn Fn(&HashMap<String, String>) -> bool + Sync),
) -> Result<SweepReport, CleanupError> {
    let filters = HashMap::from([("label".to_string(), vec![label_filter])]);
    let selected = |labels: Option<&HashMap<String, String>>| labels.is_some_and(select);
    let mut report = SweepReport::default();

    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .map_err(|source| CleanupError { kind: "containers", source })?;
    let doomed: Vec<(String, String)> = containers
        .into_iter()
        .filter(|c| selected(c.labels.as_ref()))
        .filter_map(|c| {
            let id = c.id?;
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| id.clone());
            Some((id, name))
        })
        .collect();
    let removals = doomed.iter().map(|(id, _)| {
        docker.remove_container(
            id,
            Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }),
        )
    });
    for ((_, name), result) in doomed.iter().zip(join_all(removals).await) {
        record(&mut report.containers, &mut report.errors, name, result);
    }

    let networks = docker
        .list_networks(Some(ListNetworksOptions { filters: Some(filters.clone()) }))
        .await
        .map_err(|source| CleanupError { kind: "networks", source })?;
    for network in networks {
        if !selected(network.labels.as_ref()) {
            continue;
        }
        let Some(id) = network.id else { continue };
        let name = network.name.unwrap_or_else(|| id.clone());
        let result = docker.remove_network(&id).await;
        record(&mut report.networks, &mut report.errors, &name, result);
    }

    let volumes = docker
        .list_volumes(Some(ListVolumesOptions { filters: Some(filters) }))
        .await
        .map_err(|source| CleanupError { kind: "volumes", source })?;
    for volume in volumes.volumes.unwrap_or_default() {
        if !selected(Some(&volume.labels)) {
            continue;
        }
        let result =
            docker.remove_volume(&volume.name, Some(RemoveVolumeOptions { force: false })).await;
        record(&mut report.volumes, &mut report.errors, &volume.name, result);
    }
    Ok(report)
}

/// Removes the images a run built without a tag, unless something tagged them since (an
/// identical build elsewhere gives the same image ID) or uses them; returns what failed.
pub(crate) async fn remove_untagged(docker: &Docker, images: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    for id in images {
        let named = match docker.inspect_image(id).await {
            Ok(image) => {
                image.repo_tags.is_some_and(|t| !t.is_empty())
                    || image.repo_digests.is_some_and(|d| !d.is_empty())
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                continue;
            }
            Err(e) => {
                errors.push(format!("image {id}: {}", crate::image::engine_message(e)));
                continue;
            }
        };
        if named {
            continue;
        }
        match docker.remove_image(id, None::<RemoveImageOptions>, None).await {
            // Gone already, or in use by a container (an image cannot be removed under it).
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => {}
            Err(e) => errors.push(format!("image {id}: {}", crate::image::engine_message(e))),
        }
    }
    errors
}

/// Books one removal; "no such object" counts as removed (another sweep got there first).
fn record(
    removed: &mut Vec<String>,
    errors: &mut Vec<String>,
    name: &str,
    result: Result<(), bollard::errors::Error>,
) {
    match result {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            removed.push(name.to_string())
        }
        Err(e) => errors.push(format!("{name}: {}", crate::image::engine_message(e))),
    }
}
