//! Containers prepared ahead of need: which steps get one, how many at a time, and handing
//! each to its step.
//!
//! While a run's steps execute, the next fast-path steps (`kiln_plan::step_path`) in the
//! order they can become ready get their container created and started ([`crate::exec`]),
//! so that when a step's turn comes only the `exec` is on its critical path. At most `limit`
//! prepared containers wait at any time, so a 500-step file does not start 500 containers.
//! A prepared container is named and labelled as the step's first attempt's container, so the
//! run's label sweep removes it whatever way the run ends; [`Lookahead::discard`] removes the
//! unused ones first, after letting preparations in flight finish (a creation still in flight
//! during the sweep could otherwise outlive it).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bollard::Docker;
use kiln_plan::plan::StepId;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::container::{self, Create};
use crate::exec::{self, Warm};
use crate::lane::{self, Attach};

/// A run's containers prepared ahead of need, keyed by step.
#[derive(Debug)]
pub(crate) struct Lookahead {
    limit: usize,
    /// Preparations started and not yet taken by their step; one that failed yields `None`
    /// (its step then takes the classic path).
    waiting: Mutex<HashMap<StepId, JoinHandle<Option<Warm>>>>,
    /// Rung when a step's own container is ready: preparing ahead starts then, so it never
    /// competes with the container of a step that is ready now.
    kick: Notify,
}

impl Lookahead {
    pub(crate) fn new(limit: usize) -> Self {
        Lookahead { limit, waiting: Mutex::new(HashMap::new()), kick: Notify::new() }
    }

    /// Says a step's container is ready (see `kick`).
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    pub(crate) async fn kicked(&self) {
        self.kick.notified().await;
    }

    /// Room for more prepared containers.
    pub(crate) fn has_room(&self) -> bool {
        self.waiting().len() < self.limit
    }

    pub(crate) fn holds(&self, step: &StepId) -> bool {
        self.waiting().contains_key(step)
    }

    /// Starts preparing `step`'s container `name` from `create` (a warm request), attached as
    /// its lane says once that is settled (`crate::lane`: its sandbox may still be starting).
    pub(crate) fn prepare(
        &self,
        docker: &Docker,
        step: &StepId,
        name: String,
        mut create: Create,
        attach: impl Future<Output = Attach> + Send + 'static,
    ) {
        let docker = docker.clone();
        let task = tokio::spawn(async move {
            lane::attach(&mut create, attach.await);
            exec::prepare(&docker, &name, create).await.ok()
        });
        self.waiting().insert(step.clone(), task);
    }

    /// The container prepared for `step`, once ready; `None` if there is none or it failed.
    pub(crate) async fn take(&self, step: &StepId) -> Option<Warm> {
        let task = self.waiting().remove(step)?;
        task.await.ok().flatten()
    }

    /// Removes every prepared container no step took, once its preparation has ended.
    pub(crate) async fn discard(&self, docker: &Docker, removals: &TaskTracker) {
        let tasks: Vec<_> = self.waiting().drain().map(|(_, task)| task).collect();
        for task in tasks {
            if let Ok(Some(warm)) = task.await {
                let docker = docker.clone();
                removals.spawn(async move {
                    let _ = container::remove(&docker, &warm.name).await;
                });
            }
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<StepId, JoinHandle<Option<Warm>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
