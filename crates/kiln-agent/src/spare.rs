//! One warm run network per worker loop, so a claimed run does not wait for
//! `docker network create` before its first step (see `kiln_worker::spare`).
//!
//! The loop starts creating a spare when it starts, and a run that takes the spare starts
//! creating the next one at once, while its own steps run: creating it only after the run
//! would leave a run submitted right after the previous one finished waiting for it (measured:
//! 100–300 ms, as the engine is busy tearing the previous run down). A run that needs its own
//! network takes the spare, waiting for it if its creation is still under way (never slower
//! than creating one then); the run's teardown removes it. A worker thus has up to two run
//! networks at a time, the running run's and the spare, which counts against the engine's
//! address pools (about 30 bridge networks with Docker's defaults). If creating the spare failed, the run creates its
//! network itself as before, so a spare is an optimisation, never a new way to fail. When the
//! loop stops, it removes the spare it holds.

use kiln_worker::{Engine, SpareError, SpareNetwork};
use tokio::task::JoinHandle;

/// A worker loop's spare network: absent, being created, or created.
pub(crate) struct Spare {
    engine: Option<Engine>,
    pending: Option<JoinHandle<Result<SpareNetwork, SpareError>>>,
}

impl Spare {
    /// Starts creating a spare on `engine` (none without an engine).
    pub(crate) fn new(engine: Option<Engine>) -> Self {
        let mut spare = Spare { engine, pending: None };
        spare.refill();
        spare
    }

    /// Starts creating a spare unless one is held or under way.
    pub(crate) fn refill(&mut self) {
        if self.pending.is_some() {
            return;
        }
        if let Some(engine) = self.engine.clone() {
            self.pending = Some(tokio::spawn(async move { SpareNetwork::create(&engine).await }));
        }
    }

    /// The spare, once created; `None` when there is none or creating it failed (the caller
    /// then goes without).
    pub(crate) async fn take(&mut self) -> Option<SpareNetwork> {
        match self.pending.take()?.await {
            Ok(Ok(network)) => Some(network),
            Ok(Err(e)) => {
                tracing::warn!("creating a spare run network failed: {e}");
                None
            }
            Err(e) => {
                tracing::error!("the spare network task failed: {e}");
                None
            }
        }
    }

    /// Removes the spare held (the loop is stopping).
    pub(crate) async fn discard(mut self) {
        let (Some(network), Some(engine)) = (self.take().await, self.engine.as_ref()) else {
            return;
        };
        if let Err(e) = network.remove(engine).await {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exists(engine: &Engine, name: &str) -> bool {
        match engine.docker().inspect_network(name, None).await {
            Ok(_) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                false
            }
            Err(e) => panic!("inspecting {name}: {e}"),
        }
    }

    #[tokio::test]
    async fn a_spare_is_created_taken_once_and_discarded() {
        let engine = Engine::connect().await.expect("engine");
        let mut spare = Spare::new(Some(engine.clone()));
        let taken = spare.take().await.expect("a spare is created");
        assert!(exists(&engine, taken.name()).await);
        assert!(spare.take().await.is_none(), "a spare is handed out once");

        // The loop stops holding a spare: discarding removes it, not the one handed out.
        spare.refill();
        let held = spare.take().await.expect("a second spare");
        assert_ne!(held.name(), taken.name());
        let name = held.name().to_string();
        spare.pending = Some(tokio::spawn(async move { Ok(held) }));
        spare.discard().await;
        assert!(!exists(&engine, &name).await, "the held spare is removed");
        assert!(exists(&engine, taken.name()).await);
        let taken_name = taken.name().to_string();
        taken.remove(&engine).await.expect("remove");
        assert!(!exists(&engine, &taken_name).await);
    }

    #[tokio::test]
    async fn no_engine_no_spare() {
        let mut spare = Spare::new(None);
        assert!(spare.take().await.is_none());
        spare.discard().await;
    }
}
