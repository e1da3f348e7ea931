//! What dead runs leave behind on this agent's machine, and its removal: engine objects of
//! kiln processes that are provably gone ([`kiln_worker::sweep_orphans`]), and the directories
//! under `<data>/work` — workspaces (`kiln-<id>`), Docker API sockets (`docker-<id>`) and
//! context copies (`ctx-<id>`) — of runs
//! this agent does not hold. A run that ends normally removes its own; these are what a crash
//! or a lost lease left. The work directory is this agent's alone (its owner lock is in the
//! same data directory), so a run it does not hold has no one else to finish it. Removed when
//! the agent starts and periodically after.

use std::path::{Path, PathBuf};

use kiln_task::run_id::RunId;
use kiln_worker::Engine;

const CONTEXT_PREFIX: &str = "ctx-";

/// What one removal pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Containers, networks and volumes of dead owners.
    pub engine_objects: usize,
    /// Names of the `<data>/work` entries removed.
    pub work_dirs: Vec<String>,
}

/// Where run `run`'s context is fetched, under the work directory.
pub(super) fn context_dir(work_dir: &Path, run: &RunId) -> PathBuf {
    work_dir.join(format!("{CONTEXT_PREFIX}{run}"))
}

/// The run a `<data>/work` entry belongs to.
fn run_of(name: &str) -> Option<RunId> {
    match name.strip_prefix(CONTEXT_PREFIX) {
        Some(id) if !id.is_empty() => Some(RunId::new(id)),
        Some(_) => None,
        None => kiln_worker::names::workspace_run(name)
            .or_else(|| kiln_worker::names::docker_api_run(name))
            .map(|r| RunId::new(r.as_str())),
    }
}

/// One pass; `held` tells the runs this agent holds. Failures are logged (the next pass
/// tries again), never fatal.
pub(super) async fn remove(
    engine: &Engine,
    work_dir: &Path,
    held: &(dyn Fn(&RunId) -> bool + Sync),
) -> Removed {
    let mut removed = Removed::default();
    match kiln_worker::sweep_orphans(engine).await {
        Ok(report) => {
            removed.engine_objects =
                report.containers.len() + report.networks.len() + report.volumes.len();
            for e in report.errors {
                tracing::warn!("cleanup of a crashed run: {e}");
            }
        }
        Err(e) => tracing::warn!("looking for crashed runs' leftovers failed: {e}"),
    }
    let mut entries = match tokio::fs::read_dir(work_dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return removed,
        Err(e) => {
            tracing::warn!("reading {}: {e}", work_dir.display());
            return removed;
        }
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(run) = run_of(&name) else { continue };
        if held(&run) {
            continue;
        }
        match tokio::fs::remove_dir_all(entry.path()).await {
            Ok(()) => removed.work_dirs.push(name),
            // The run's own end removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(run = %run, "removing {}: {e}", entry.path().display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_entries_name_their_run() {
        let run = RunId::new("ka7");
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(run_of(&name(context_dir(Path::new("/w"), &run))), Some(run.clone()));
        assert_eq!(run_of("kiln-ka7"), Some(run.clone()));
        assert_eq!(run_of("docker-ka7"), Some(run));
        for other in ["ctx-", "kiln-", "docker-", "owners", "notes.txt"] {
            assert_eq!(run_of(other), None, "{other}");
        }
    }
}
