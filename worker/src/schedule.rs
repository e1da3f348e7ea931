//! The step graph at run time: which steps may start now (reference §3.1, §8.2).
//!
//! Pure bookkeeping, no Docker: a step becomes ready when its **last** dependency finished in a
//! way that lets dependants run (successful, or failed with `ignoreErrors`). There is no
//! parallelism cap, as in ACR. What happens on a failure (abort, kill, skip) is the run's
//! business (`run.rs`); this module only answers "who is ready now?", and "who comes next?"
//! for the containers prepared ahead of need (`lookahead`).

use std::collections::{HashMap, HashSet, VecDeque};

use kiln_plan::plan::StepId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("step ID {0} appears more than once in the plan")]
    DuplicateStep(StepId),
    #[error("step {step} depends on {dependency}, which is not in the plan")]
    UnknownDependency { step: StepId, dependency: StepId },
    #[error("steps {} can never start: their dependencies form a cycle", join(.0))]
    Cycle(Vec<StepId>),
}

fn join(ids: &[StepId]) -> String {
    ids.iter().map(StepId::as_str).collect::<Vec<_>>().join(", ")
}

/// Readiness state of one run's steps, indexed by position in the plan.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Dependencies of each step not yet finished successfully.
    waiting_on: Vec<usize>,
    /// For each step, the steps that depend on it.
    dependants: Vec<Vec<usize>>,
    /// Every step in the order it can become ready, level by level (breadth-first).
    order: Vec<usize>,
    /// Steps handed out by [`Schedule::initial`] or [`Schedule::release`].
    started: Vec<bool>,
}

impl Schedule {
    /// Builds the graph from `(id, depends_on)` pairs in plan order, rejecting duplicate IDs,
    /// unknown dependencies and cycles (a plan from the control plane has none, but a plan is
    /// also an API input for remote workers).
    pub(crate) fn new<'a>(
        steps: impl IntoIterator<Item = (&'a StepId, &'a [StepId])>,
    ) -> Result<Self, ScheduleError> {
        let steps: Vec<(&StepId, &[StepId])> = steps.into_iter().collect();
        let mut index = HashMap::with_capacity(steps.len());
        for (i, (id, _)) in steps.iter().enumerate() {
            if index.insert(*id, i).is_some() {
                return Err(ScheduleError::DuplicateStep((*id).clone()));
            }
        }
        let mut waiting_on = vec![0; steps.len()];
        let mut dependants = vec![Vec::new(); steps.len()];
        for (i, (id, deps)) in steps.iter().enumerate() {
            // `when: [a, a]` is one dependency, not two.
            let unique: HashSet<&StepId> = deps.iter().collect();
            for dep in unique {
                let Some(&d) = index.get(dep) else {
                    return Err(ScheduleError::UnknownDependency {
                        step: (*id).clone(),
                        dependency: dep.clone(),
                    });
                };
                dependants[d].push(i);
                waiting_on[i] += 1;
            }
        }
        let started = vec![false; steps.len()];
        let mut schedule = Schedule { waiting_on, dependants, order: Vec::new(), started };
        schedule.order = schedule.levels();
        let stuck = schedule.unreachable();
        if !stuck.is_empty() {
            return Err(ScheduleError::Cycle(
                stuck.into_iter().map(|i| steps[i].0.clone()).collect(),
            ));
        }
        Ok(schedule)
    }

    /// Steps that can start with the run.
    pub(crate) fn initial(&mut self) -> Vec<usize> {
        let ready = self.roots();
        for &i in &ready {
            self.started[i] = true;
        }
        ready
    }

    fn roots(&self) -> Vec<usize> {
        (0..self.waiting_on.len()).filter(|&i| self.waiting_on[i] == 0).collect()
    }

    /// Steps not started yet, soonest first: those whose dependencies are all started before
    /// those waiting on unstarted steps (a breadth-first order of the graph).
    pub(crate) fn upcoming(&self) -> impl Iterator<Item = usize> + '_ {
        self.order.iter().copied().filter(|&i| !self.started[i])
    }

    /// Records that `step` finished so that its dependants may run, and returns the dependants
    /// this made ready (their last dependency was `step`).
    pub(crate) fn release(&mut self, step: usize) -> Vec<usize> {
        let mut ready = Vec::new();
        for &child in self.dependants.get(step).map_or(&[][..], Vec::as_slice) {
            if let Some(count) = self.waiting_on.get_mut(child) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    ready.push(child);
                    self.started[child] = true;
                }
            }
        }
        ready
    }

    /// Kahn's algorithm with a queue: roots, then what they release, and so on.
    fn levels(&self) -> Vec<usize> {
        let mut waiting = self.waiting_on.clone();
        let mut queue: VecDeque<usize> = self.roots().into();
        let mut order = Vec::with_capacity(waiting.len());
        while let Some(i) = queue.pop_front() {
            order.push(i);
            for &child in &self.dependants[i] {
                waiting[child] -= 1;
                if waiting[child] == 0 {
                    queue.push_back(child);
                }
            }
        }
        order
    }

    /// Steps that could never start even if every step succeeded: those on or behind a cycle
    /// (Kahn's algorithm on a copy of the counters).
    fn unreachable(&self) -> Vec<usize> {
        let mut waiting = self.waiting_on.clone();
        let mut queue = self.roots();
        let mut reached = vec![false; waiting.len()];
        while let Some(i) = queue.pop() {
            reached[i] = true;
            for &child in &self.dependants[i] {
                waiting[child] -= 1;
                if waiting[child] == 0 {
                    queue.push(child);
                }
            }
        }
        (0..reached.len()).filter(|&i| !reached[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<StepId> {
        names.iter().map(|n| StepId::new(*n)).collect()
    }

    fn graph(spec: &[(&str, &[&str])]) -> Result<Schedule, ScheduleError> {
        let steps: Vec<(StepId, Vec<StepId>)> =
            spec.iter().map(|(id, deps)| (StepId::new(*id), ids(deps))).collect();
        Schedule::new(steps.iter().map(|(id, deps)| (id, deps.as_slice())))
    }

    #[test]
    fn roots_start_together() {
        let mut s = graph(&[("a", &[]), ("b", &[]), ("c", &["a"])]).expect("valid");
        assert_eq!(s.initial(), vec![0, 1]);
    }

    #[test]
    fn a_step_waits_for_its_last_dependency() {
        let mut s =
            graph(&[("a", &[]), ("b", &[]), ("c", &["a", "b"]), ("d", &["c"])]).expect("valid");
        assert_eq!(s.release(0), Vec::<usize>::new());
        assert_eq!(s.release(1), vec![2]);
        assert_eq!(s.release(2), vec![3]);
        assert_eq!(s.release(3), Vec::<usize>::new());
    }

    #[test]
    fn fan_out_releases_all_children_at_once() {
        let mut s = graph(&[("a", &[]), ("b", &["a"]), ("c", &["a"])]).expect("valid");
        assert_eq!(s.initial(), vec![0]);
        assert_eq!(s.release(0), vec![1, 2]);
    }

    #[test]
    fn repeated_dependency_counts_once() {
        let mut s = graph(&[("a", &[]), ("b", &["a", "a"])]).expect("valid");
        assert_eq!(s.release(0), vec![1]);
    }

    #[test]
    fn unreleased_dependency_keeps_dependants_waiting() {
        // A failed step is never released, so its dependants never become ready.
        let mut s = graph(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])]).expect("valid");
        assert!(s.release(1).is_empty());
    }

    #[test]
    fn upcoming_lists_unstarted_steps_level_by_level() {
        let mut s = graph(&[("d", &["b"]), ("a", &[]), ("b", &["a"]), ("c", &["a"]), ("e", &[])])
            .expect("valid");
        assert_eq!(s.upcoming().collect::<Vec<_>>(), vec![1, 4, 2, 3, 0]);
        assert_eq!(s.initial(), vec![1, 4]);
        assert_eq!(s.upcoming().collect::<Vec<_>>(), vec![2, 3, 0]);
        assert_eq!(s.release(1), vec![2, 3]);
        assert_eq!(s.upcoming().collect::<Vec<_>>(), vec![0]);
        assert_eq!(s.release(2), vec![0]);
        assert_eq!(s.upcoming().count(), 0);
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        assert_eq!(
            graph(&[("a", &[]), ("a", &[])]).err(),
            Some(ScheduleError::DuplicateStep(StepId::new("a")))
        );
    }

    #[test]
    fn unknown_dependencies_are_rejected() {
        assert_eq!(
            graph(&[("a", &["zz"])]).err(),
            Some(ScheduleError::UnknownDependency {
                step: StepId::new("a"),
                dependency: StepId::new("zz"),
            })
        );
    }

    #[test]
    fn cycles_are_rejected_with_the_stuck_steps() {
        let err =
            graph(&[("a", &[]), ("b", &["c"]), ("c", &["b"]), ("d", &["c"])]).expect_err("cycle");
        assert_eq!(err, ScheduleError::Cycle(ids(&["b", "c", "d"])));
        assert_eq!(
            err.to_string(),
            "steps b, c, d can never start: their dependencies form a cycle"
        );
    }
}
