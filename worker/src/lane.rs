//! The engine side of lanes (`kiln_plan::lane`): each lane's sandbox, an idle container on
//! the run's network that holds its members' step-ID aliases and whose network namespace the
//! members' containers join (`container:<sandbox>`), so that a member's container start
//! neither creates nor tears down a namespace.
//!
//! A sandbox is ahead-of-need work: look-ahead starts it with its first member's preparation
//! (`run::look_ahead`, once a step's own container is up, so it never competes with a step
//! that is ready now), or its first member does when its turn comes first. It runs kiln's init ([`crate::init`]) in the first of its members'
//! images the engine has. If it cannot start, its members join the run's network as steps
//! outside lanes do, each with its own alias. Either way the lane's answer is settled before
//! any member has a container, so a step ID never resolves to two places.
//!
//! What a member's command left running is killed when the command exits, before the next
//! member starts: by the init running the command ([`crate::init`]) on the fast path, by the
//! end of the container's PID 1 on the classic one. In a shared namespace a daemon the
//! previous step left would otherwise hold its ports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use kiln_plan::lane::Lanes;
use kiln_plan::plan::{Action, Plan, StepId};

use crate::container::Create;
use crate::exec;
use crate::image;

/// Where a step's container attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attach {
    /// The run's network, as made by the step's create request (no lane, or its sandbox
    /// could not start).
    Own,
    /// The sandbox's namespace: the container's network mode.
    Shared(String),
}

/// Makes `create` (a step's request, on the run's network) attach as `attach` says. A
/// container in another's namespace has no endpoint of its own, so its alias goes too: the
/// sandbox carries it.
pub(crate) fn attach(create: &mut Create, attach: Attach) {
    if let Attach::Shared(mode) = attach {
        create.body.host_config.get_or_insert_default().network_mode = Some(mode);
        create.body.networking_config = None;
    }
}

/// What every sandbox of a run is made with.
#[derive(Debug, Clone)]
pub(crate) struct SandboxSetup {
    pub(crate) docker: Docker,
    pub(crate) init_path: PathBuf,
    /// Engine name of the run's network.
    pub(crate) network: String,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) platform: Option<String>,
}

/// A run's lanes and their sandboxes.
pub(crate) struct RunLanes {
    setup: Option<SandboxSetup>,
    of: HashMap<StepId, usize>,
    sandboxes: Vec<Sandbox>,
}

struct Sandbox {
    name: String,
    /// Its members' step IDs: its aliases on the run's network.
    aliases: Vec<String>,
    /// Its members' images, in the order they run.
    images: Vec<String>,
    /// Whether it runs, once settled; started at most once.
    up: OnceLock<Shared<BoxFuture<'static, bool>>>,
}

impl RunLanes {
    /// The lanes of `plan`; none without a `setup` (every step takes the classic path).
    pub(crate) fn new(plan: &Plan, setup: Option<SandboxSetup>) -> Self {
        let lanes = if setup.is_some() { Lanes::assign(plan) } else { Lanes::default() };
        let mut of = HashMap::new();
        let sandboxes = (0..lanes.len())
            .map(|lane| {
                let members = lanes.members(lane);
                for &i in members {
                    of.insert(plan.steps[i].id.clone(), lane);
                }
                let images = members
                    .iter()
                    .filter_map(|&i| match &plan.steps[i].action {
                        Action::Cmd { image, .. } => Some(image.clone()),
                        _ => None,
                    })
                    .collect();
                Sandbox {
                    name: crate::names::lane_sandbox(&plan.run_id, lane),
                    aliases: members.iter().map(|&i| plan.steps[i].id.to_string()).collect(),
                    images,
                    up: OnceLock::new(),
                }
            })
            .collect();
        RunLanes { setup, of, sandboxes }
    }

    /// Where `step`'s container attaches, once its lane's sandbox (started now if nobody has
    /// started it) is up or has failed. The future borrows nothing of the run, so a
    /// preparation ahead of need can wait on it.
    pub(crate) fn attach(&self, step: &StepId) -> impl Future<Output = Attach> + Send + 'static {
        let lane = self.of.get(step).map(|&lane| {
            (self.start(lane).clone(), format!("container:{}", self.sandboxes[lane].name))
        });
        async move {
            let Some((up, mode)) = lane else { return Attach::Own };
            if up.await { Attach::Shared(mode) } else { Attach::Own }
        }
    }

    /// Waits for sandboxes still starting, so that the run's sweep finds every one.
    pub(crate) async fn settle(&self) {
        for sandbox in &self.sandboxes {
            if let Some(up) = sandbox.up.get() {
                up.clone().await;
            }
        }
    }

    fn start(&self, lane: usize) -> &Shared<BoxFuture<'static, bool>> {
        let sandbox = &self.sandboxes[lane];
        sandbox.up.get_or_init(|| {
            let setup = self.setup.clone().expect("lanes exist only with a setup");
            let (name, aliases, images) =
                (sandbox.name.clone(), sandbox.aliases.clone(), sandbox.images.clone());
            // Spawned, so a member that stops waiting does not stop the start half-way.
            let task =
                tokio::spawn(async move { start_sandbox(&setup, &name, aliases, &images).await });
            task.map(|joined| joined.unwrap_or(false)).boxed().shared()
        })
    }
}

/// Creates and starts a sandbox from the first member image the engine has.
async fn start_sandbox(
    setup: &SandboxSetup,
    name: &str,
    aliases: Vec<String>,
    images: &[String],
) -> bool {
    let platform = setup.platform.as_deref();
    let mut image = None;
    for candidate in images {
        if let Ok(Some(_)) = image::present(&setup.docker, candidate, platform).await {
            image = Some(candidate.clone());
            break;
        }
    }
    let Some(image) = image else { return false };
    let body = ContainerCreateBody {
        image: Some(image),
        labels: Some(setup.labels.clone()),
        host_config: Some(HostConfig {
            network_mode: Some(setup.network.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                setup.network.clone(),
                EndpointSettings { aliases: Some(aliases), ..Default::default() },
            )])),
        }),
        ..Default::default()
    };
    let create =
        exec::warm_create(Create { body, platform: setup.platform.clone() }, &setup.init_path);
    exec::prepare(&setup.docker, name, create).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCreateBody, HostConfig};

    #[test]
    fn a_shared_namespace_replaces_the_network_and_its_alias() {
        let mut create = Create {
            body: ContainerCreateBody {
                host_config: Some(HostConfig {
                    network_mode: Some("kiln-r1".into()),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig::default()),
                ..Default::default()
            },
            platform: None,
        };
        let own = create.clone();
        attach(&mut create, Attach::Own);
        assert_eq!(create.body, own.body);
        attach(&mut create, Attach::Shared("container:kiln-r1-lane-0-sandbox".into()));
        let host = create.body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("container:kiln-r1-lane-0-sandbox"));
        assert!(create.body.networking_config.is_none());
    }
}
