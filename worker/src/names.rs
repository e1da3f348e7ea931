//! What kiln calls things on the engine: container, network and volume names, and the labels
//! that mark every object a run creates.
//!
//! ACR names containers after the bare step ID and uses one global network and volume name
//! (reference §9 item 20), so two runs cannot share a daemon. kiln prefixes every name with the
//! run ID and numbers a step's containers, so concurrent runs of the same plan, and retries or
//! repetitions of a `keep`/`detach` step (item 12), never collide. Labels, not names, are what
//! cleanup trusts: a name can be sanitised, a label carries the exact ID. Objects also carry
//! their owner's labels ([`crate::owner`]). Images a build produces carry none of them: they
//! are the user's, exactly as the Dockerfile describes them.

use std::collections::HashMap;

use kiln_plan::plan::{RunId, StepId};

use crate::owner::Owner;

/// Label carrying the run ID on every container, network and volume kiln creates.
pub const RUN_LABEL: &str = "kiln.run";
/// Label carrying the step ID on every container kiln creates for a step.
pub const STEP_LABEL: &str = "kiln.step";
/// Label marking short-lived helper containers (secret-volume filling), so logs and sweeps can
/// tell them from step containers.
pub const ROLE_LABEL: &str = "kiln.role";
/// The network a run creates for itself when the plan declares no default network.
pub(crate) fn run_network(run: &RunId) -> String {
    format!("kiln-{}", component(run.as_str()))
}

/// A network the plan declares (and does not mark `skip_creation`), made unique to the run.
pub(crate) fn declared_network(run: &RunId, name: &str) -> String {
    format!("kiln-{}-net-{}", component(run.as_str()), component(name))
}

/// A secret volume of the plan, made unique to the run.
pub(crate) fn secret_volume(run: &RunId, name: &str) -> String {
    format!("kiln-{}-vol-{}", component(run.as_str()), component(name))
}

/// The `n`th container (1-based, counting every retry and repetition) of a step.
pub(crate) fn step_container(run: &RunId, step: &StepId, n: u32) -> String {
    format!("kiln-{}-{}-{n}", component(run.as_str()), component(step.as_str()))
}

/// The sandbox of a run's `n`th lane (`crate::lane`); it ends in `-sandbox`, where a step's
/// container ends in its number, so no step ID can take its name.
pub(crate) fn lane_sandbox(run: &RunId, n: usize) -> String {
    format!("kiln-{}-lane-{n}-sandbox", component(run.as_str()))
}

/// The helper container that fills a secret volume.
pub(crate) fn secret_helper(run: &RunId, volume: &str) -> String {
    format!("kiln-{}-vol-{}-fill", component(run.as_str()), component(volume))
}

/// The run's workspace directory under the caller's workspace root.
pub(crate) fn workspace_dir(run: &RunId) -> String {
    format!("{WORKSPACE_PREFIX}{}", component(run.as_str()))
}

/// The run a workspace directory named `dir` belongs to, for run IDs that are kept verbatim in
/// names (a sanitised one yields an ID no store knows). `None` for other names.
pub fn workspace_run(dir: &str) -> Option<RunId> {
    run_of_dir(dir, WORKSPACE_PREFIX)
}

fn run_of_dir(dir: &str, prefix: &str) -> Option<RunId> {
    let id = dir.strip_prefix(prefix)?;
    (!id.is_empty() && component(id) == id).then(|| RunId::new(id))
}

const WORKSPACE_PREFIX: &str = "kiln-";

/// The directory beside the workspace holding the run's Docker socket and config: not in
/// the workspace, which is the user's build context.
pub(crate) fn docker_api_dir(run: &RunId) -> String {
    format!("{DOCKER_API_PREFIX}{}", component(run.as_str()))
}

/// The run a Docker API directory named `dir` belongs to, as [`workspace_run`] does.
pub fn docker_api_run(dir: &str) -> Option<RunId> {
    run_of_dir(dir, DOCKER_API_PREFIX)
}

const DOCKER_API_PREFIX: &str = "docker-";

/// Labels of a run-wide object (network, volume, lane sandbox).
pub(crate) fn run_labels(run: &RunId, owner: &Owner) -> HashMap<String, String> {
    let mut labels = HashMap::from(owner.labels());
    labels.insert(RUN_LABEL.to_string(), run.to_string());
    labels
}

/// Labels of a step's container.
pub(crate) fn step_labels(run: &RunId, step: &StepId, owner: &Owner) -> HashMap<String, String> {
    let mut labels = run_labels(run, owner);
    labels.insert(STEP_LABEL.to_string(), step.to_string());
    labels
}

/// Makes `raw` usable inside a Docker object name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
///
/// IDs that already fit are kept verbatim so names stay readable. Anything else is rewritten
/// and suffixed with a hash of the original, because two different IDs (`a/b`, `a:b`) must not
/// map to the same name.
fn component(raw: &str) -> String {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !raw.is_empty() && raw.chars().all(fits) {
        return raw.to_string();
    }
    let cleaned: String = raw.chars().map(|c| if fits(c) { c } else { '_' }).collect();
    format!("{cleaned}_{:08x}", fnv1a(raw.as_bytes()))
}

/// 32-bit FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`, so a
/// sanitised name is the same on every worker.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_kept_verbatim() {
        let run = RunId::new("ka1");
        assert_eq!(step_container(&run, &StepId::new("web"), 1), "kiln-ka1-web-1");
        assert_eq!(step_container(&run, &StepId::new("acb_step_0"), 12), "kiln-ka1-acb_step_0-12");
        assert_eq!(run_network(&run), "kiln-ka1");
        assert_eq!(declared_network(&run, "mynet"), "kiln-ka1-net-mynet");
        assert_eq!(secret_volume(&run, "sec"), "kiln-ka1-vol-sec");
        assert_eq!(secret_helper(&run, "sec"), "kiln-ka1-vol-sec-fill");
    }

    #[test]
    fn odd_ids_are_sanitised_without_collisions() {
        let run = RunId::new("ka1");
        let slash = step_container(&run, &StepId::new("a/b"), 1);
        let colon = step_container(&run, &StepId::new("a:b"), 1);
        assert!(slash.starts_with("kiln-ka1-a_b_"), "{slash}");
        assert_ne!(slash, colon);
        assert!(slash.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        // Sanitising is deterministic.
        assert_eq!(slash, step_container(&run, &StepId::new("a/b"), 1));
    }

    #[test]
    fn workspace_names_give_back_their_run() {
        let run = RunId::new("ka12");
        assert_eq!(workspace_run(&workspace_dir(&run)), Some(run.clone()));
        assert_eq!(workspace_run("ctx-ka12"), None);
        assert_eq!(workspace_run("kiln-"), None);
        assert_eq!(workspace_run("kiln-a:b"), None);
        assert_eq!(docker_api_run(&docker_api_dir(&run)), Some(run));
        assert_eq!(docker_api_run("kiln-ka12"), None);
    }

    #[test]
    fn empty_component_still_yields_a_valid_name() {
        assert!(component("").starts_with('_'));
        assert_eq!(component("").len(), 9);
    }

    #[test]
    fn labels_carry_exact_ids() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner::create(dir.path()).unwrap();
        let labels = step_labels(&RunId::new("r 1"), &StepId::new("a/b"), &owner);
        assert_eq!(labels[RUN_LABEL], "r 1");
        assert_eq!(labels[STEP_LABEL], "a/b");
        assert_eq!(labels[crate::owner::OWNER_LABEL], owner.id());
        assert_eq!(run_labels(&RunId::new("r"), &owner).len(), 3);
    }
}
