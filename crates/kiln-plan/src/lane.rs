//! Lanes: the network namespaces a run's `cmd` steps share along chains (issue 14).
//!
//! Most of what a container start costs on the engine is its network namespace: creating it,
//! wiring a veth pair into the run's bridge and setting up the embedded DNS, then tearing it
//! down again (here `docker run` on a user-defined network took ~0.9 s under load, against
//! ~0.4 s for the same container joining a namespace that already exists). Steps that never
//! run at the same time can share one namespace without noticing: a lane is a set of `cmd`
//! steps each of which depends, directly or through others, on the one before it, so they run
//! one after another. The worker gives a lane one idle container on the run's network that
//! holds every member's step-ID alias, and the members' containers join its namespace.
//!
//! What a namespace of one's own gives stays: a step's ID resolves to the address where it
//! listens (the aliases); steps that may run at the same time are never in one lane, so their
//! ports cannot collide; and the worker kills what a member left running before the next one
//! starts, so the next finds its ports free and `localhost` quiet, as after a container whose
//! command exited.
//!
//! Only steps the plan lets take the fast path (`crate::step_path`) join; so do neither steps
//! with a `network` of their own, nor steps ready when the run starts (their container would
//! wait for the lane's), nor any step when the task declares its own default network (kiln
//! knows the driver only of its own run network). A lane of one step would cost a container
//! more than it saves, so a step alone keeps a namespace of its own.

use crate::plan::{Plan, PlanStep};
use crate::step_path::{StepPath, plan_path};

/// Which steps of a plan share which network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lanes {
    /// Each step's lane, by plan index.
    of: Vec<Option<usize>>,
    /// Each lane's members, by plan index, in the order they run.
    members: Vec<Vec<usize>>,
}

impl Lanes {
    /// The lanes of `plan` (whose steps depend only on steps before them).
    pub fn assign(plan: &Plan) -> Lanes {
        let n = plan.steps.len();
        let index = |id| plan.steps.iter().position(|s| &s.id == id);
        let mut ancestors = Ancestors::new(n);
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            let direct: Vec<usize> = step.depends_on.iter().filter_map(index).collect();
            for &d in &direct {
                ancestors.inherit(i, d);
            }
            if !plan.uses_run_network() || !may_join(step) {
                continue;
            }
            // A lane whose last member has ended before this step starts; the one it waits
            // for directly first, then the one that ended last.
            let candidate = |lane: &&mut Vec<usize>| {
                let last = *lane.last().expect("lanes are never empty");
                ancestors.has(i, last).then_some(last)
            };
            let best = members
                .iter_mut()
                .filter_map(|lane| {
                    candidate(&lane).map(|last| (direct.contains(&last), last, lane))
                })
                .max_by_key(|(is_direct, last, _)| (*is_direct, *last));
            match best {
                Some((_, _, lane)) => lane.push(i),
                None => members.push(vec![i]),
            }
        }
        members.retain(|lane| lane.len() > 1);
        let mut of = vec![None; n];
        for (lane, steps) in members.iter().enumerate() {
            for &i in steps {
                of[i] = Some(lane);
            }
        }
        Lanes { of, members }
    }

    /// The lane of the step at plan index `step`, if it shares a namespace.
    pub fn lane_of(&self, step: usize) -> Option<usize> {
        self.of.get(step).copied().flatten()
    }

    /// The members of `lane`, by plan index, in the order they run.
    pub fn members(&self, lane: usize) -> &[usize] {
        &self.members[lane]
    }

    /// Each lane's members by step ID, in the order they run (`plan` is the one assigned).
    pub fn step_ids<'p>(&self, plan: &'p Plan) -> Vec<Vec<&'p str>> {
        self.members
            .iter()
            .map(|lane| lane.iter().map(|&i| plan.steps[i].id.as_str()).collect())
            .collect()
    }

    /// How many lanes there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Whether `step` may share a namespace with others (see the module's doc).
fn may_join(step: &PlanStep) -> bool {
    plan_path(step) == Some(StepPath::Fast) && step.network.is_none() && !step.depends_on.is_empty()
}

/// Each step's ancestors as a bit matrix: a plan of a few thousand steps takes a few MB.
struct Ancestors {
    words: usize,
    bits: Vec<u64>,
}

impl Ancestors {
    fn new(n: usize) -> Self {
        let words = n.div_ceil(64);
        Ancestors { words, bits: vec![0; words * n] }
    }

    /// `step` has `parent` and all of `parent`'s ancestors.
    fn inherit(&mut self, step: usize, parent: usize) {
        let (w, p, s) = (self.words, parent * self.words, step * self.words);
        for k in 0..w {
            self.bits[s + k] |= self.bits[p + k];
        }
        self.bits[s + parent / 64] |= 1 << (parent % 64);
    }

    fn has(&self, step: usize, ancestor: usize) -> bool {
        self.bits[step * self.words + ancestor / 64] & (1 << (ancestor % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Network, RunId, StepId};

    fn step(id: &str, after: &[&str]) -> PlanStep {
        let mut step = PlanStep::new(
            StepId::new(id),
            Action::Cmd { image: "busybox".into(), args: vec!["true".into()] },
        );
        step.depends_on = after.iter().map(|a| StepId::new(*a)).collect();
        step
    }

    fn plan(steps: Vec<PlanStep>) -> Plan {
        Plan::new(RunId::new("r"), steps)
    }

    fn lanes(plan: &Plan) -> Vec<Vec<&str>> {
        Lanes::assign(plan).step_ids(plan)
    }

    #[test]
    fn a_chain_is_one_lane_after_its_first_step() {
        let plan =
            plan(vec![step("a", &[]), step("b", &["a"]), step("c", &["b"]), step("d", &["c"])]);
        assert_eq!(lanes(&plan), vec![vec!["b", "c", "d"]]);
        assert_eq!(Lanes::assign(&plan).lane_of(0), None);
        assert_eq!(Lanes::assign(&plan).lane_of(3), Some(0));
    }

    #[test]
    fn steps_that_may_run_together_never_share_a_lane() {
        // a → (b, c) in parallel, each followed by its own next step; e waits for both.
        let plan = plan(vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("b2", &["b"]),
            step("c2", &["c"]),
            step("e", &["b2", "c2"]),
        ]);
        // e may follow either chain; it takes the one that ended last in plan order.
        assert_eq!(lanes(&plan), vec![vec!["b", "b2"], vec!["c", "c2", "e"]]);
    }

    #[test]
    fn parallel_steps_alone_keep_their_own_namespace() {
        let plan = plan((0..10).map(|i| step(&format!("p{i}"), &[])).collect());
        assert!(Lanes::assign(&plan).is_empty());
        let fan = plan_of_fan();
        assert!(Lanes::assign(&fan).is_empty(), "{:?}", lanes(&fan));
    }

    fn plan_of_fan() -> Plan {
        let mut steps = vec![step("gate", &[])];
        steps.extend((0..5).map(|i| step(&format!("p{i}"), &["gate"])));
        plan(steps)
    }

    #[test]
    fn an_indirect_ancestor_ends_before_its_descendant_starts() {
        // b → (detached service s, build-like step x not joining) → c: b and c still share.
        let mut service = step("s", &["b"]);
        service.detach = true;
        let plan = plan(vec![step("a", &[]), step("b", &["a"]), service, step("c", &["s"])]);
        assert_eq!(lanes(&plan), vec![vec!["b", "c"]]);
    }

    #[test]
    fn steps_with_their_own_network_or_settings_for_a_container_of_their_own_stay_out() {
        let mut own = step("own", &["b"]);
        own.network = Some("host".into());
        let mut ports = step("ports", &["own"]);
        ports.ports = vec!["8080:80".into()];
        let plan = plan(vec![step("a", &[]), step("b", &["a"]), own, ports, step("c", &["ports"])]);
        assert_eq!(lanes(&plan), vec![vec!["b", "c"]]);
    }

    #[test]
    fn a_declared_default_network_means_no_lanes() {
        let mut plan = plan(vec![step("a", &[]), step("b", &["a"]), step("c", &["b"])]);
        plan.networks.push(Network {
            name: "mine".into(),
            driver: None,
            ipv6: false,
            skip_creation: false,
            is_default: true,
        });
        assert!(Lanes::assign(&plan).is_empty());
    }
}
