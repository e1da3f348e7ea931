//! Run networks created ahead of their run, to take `docker network create` (tens of
//! milliseconds, the largest engine call before a run's first container) off dispatch.
//!
//! A [`SpareNetwork`] is an ordinary user-defined bridge network, like the one a run creates
//! for itself, made before anyone knows which run will use it. Handed to [`crate::execute`]
//! through [`crate::RunOptions::network`], it becomes that one run's default network (step-ID
//! DNS aliases work on it as on any user-defined network) and is removed by the run's teardown:
//! a spare serves exactly one run, so runs stay isolated from each other.
//!
//! Labels are fixed at creation, so a spare cannot carry its future run's `kiln.run` label.
//! It carries the owner label and [`SPARE_ROLE`] instead: the run removes it by name, and
//! [`crate::sweep_orphans`] removes spares (used or not) of processes that died.

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Engine;
use crate::image::engine_message;
use crate::names::ROLE_LABEL;

/// [`ROLE_LABEL`] value of a network created as a spare.
pub const SPARE_ROLE: &str = "run-network";

#[derive(Debug, thiserror::Error)]
pub enum SpareError {
    #[error("cannot create network {name}: {message}")]
    Create { name: String, message: String },
    #[error("cannot remove network {name}: {message}")]
    Remove { name: String, message: String },
}

/// A bridge network no run uses yet. Whoever holds it must either hand it to a run (which
/// then removes it) or [`SpareNetwork::remove`] it; a process that dies holding one leaves it
/// to [`crate::sweep_orphans`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareNetwork {
    name: String,
}

impl SpareNetwork {
    /// Creates a fresh spare network with a name unique to this process.
    pub async fn create(engine: &Engine) -> Result<SpareNetwork, SpareError> {
        let name = next_name();
        let mut labels = HashMap::from(engine.owner().labels());
        labels.insert(ROLE_LABEL.to_string(), SPARE_ROLE.to_string());
        engine
            .docker()
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".to_string()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(|e| SpareError::Create { name: name.clone(), message: engine_message(e) })?;
        Ok(SpareNetwork { name })
    }

    /// The network's engine name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes an unused spare; one already gone counts as removed.
    pub async fn remove(self, engine: &Engine) -> Result<(), SpareError> {
        remove(engine.docker(), &self.name)
            .await
            .map_err(|message| SpareError::Remove { name: self.name.clone(), message })
    }
}

/// Removes network `name`; "no such network" is success (a sweep got there first). The error
/// is the engine's message.
pub(crate) async fn remove(docker: &Docker, name: &str) -> Result<(), String> {
    match docker.remove_network(name).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(engine_message(e)),
    }
}

/// `kiln-spare-<pid>-<start>-<n>`: the pid and this process's start time keep names of
/// different processes (even on different hosts sharing an engine) apart, `n` those of one.
fn next_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::LazyLock<u128> = std::sync::LazyLock::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("kiln-spare-{}-{:x}-{n}", std::process::id(), *START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid() {
        let (a, b) = (next_name(), next_name());
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.starts_with("kiln-spare-"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        }
    }
}
