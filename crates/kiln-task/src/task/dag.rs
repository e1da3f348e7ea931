//! The step graph (reference §3.1, §8.2): who waits for whom.
//!
//! ACR builds the graph in file order: no `when` means "after the previous step", `["-"]` means
//! "at the start", a list means "after all of these", and a target must be a step defined earlier,
//! which keeps the graph acyclic by construction. Step IDs are checked here too (unique, no
//! spaces, not the reserved root), since they are the graph's vertices.

use std::collections::HashMap;

use super::model::{At, ROOT_ID, Step, When};
use crate::diagnostic::{Diagnostic, Diagnostics};

/// Each step's parents, by index into the task's steps; empty means "starts with the run".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepGraph {
    parents: Vec<Vec<usize>>,
}

impl StepGraph {
    pub fn parents(&self, step: usize) -> &[usize] {
        &self.parents[step]
    }

    pub fn len(&self) -> usize {
        self.parents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    /// Steps grouped by depth: level 0 starts with the run, level n waits for something at n-1.
    /// Steps in one level may run at the same time.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut depth = vec![0usize; self.parents.len()];
        let mut levels: Vec<Vec<usize>> = Vec::new();
        // Parents always come earlier in the file, so one pass in order suffices.
        for (i, ps) in self.parents.iter().enumerate() {
            depth[i] = ps.iter().map(|&p| depth[p] + 1).max().unwrap_or(0);
            if levels.len() <= depth[i] {
                levels.resize(depth[i] + 1, Vec::new());
            }
            levels[depth[i]].push(i);
        }
        levels
    }
}

/// Builds the graph, reporting what ACR rejects (with its messages) and warning where its rules
/// surprise (sharp edge 10). Steps carry positions in the user's file already.
pub fn build(steps: &[Step]) -> (StepGraph, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
    let mut parents: Vec<Vec<usize>> = Vec::with_capacity(steps.len());

    for (i, step) in steps.iter().enumerate() {
        check_id(step, i, &mut index, steps, &mut diags);
        let ps = match &step.when {
            When::Start => Vec::new(),
            When::Previous => i.checked_sub(1).into_iter().collect(),
            When::After(targets) => resolve(step, i, targets, &index, steps, &mut diags),
        };
        parents.push(ps);
    }
    let graph = StepGraph { parents };
    warn_implicit_after_parallel(steps, &graph, &mut diags);
    (graph, diags)
}

fn check_id<'s>(
    step: &'s Step,
    i: usize,
    index: &mut HashMap<&'s str, usize>,
    steps: &[Step],
    diags: &mut Diagnostics,
) {
    let id = step.id.as_str();
    let pos = step.id_pos.unwrap_or(step.pos);
    let field = format!("steps[{i}].id");
    if id == ROOT_ID {
        diags.push(
            Diagnostic::error(Some(pos), format!("{ROOT_ID} is a reserved ID")).with_field(field),
        );
        return;
    }
    if id.contains(char::is_whitespace) {
        diags.push(
            Diagnostic::error(Some(pos), format!("step ID cannot contain spaces: `{id}`"))
                .with_field(field),
        );
        return;
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        || !id.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        // ACR accepts these and fails later, when Docker rejects the container name.
        diags.push(
            Diagnostic::error(
                Some(pos),
                format!(
                    "step ID `{id}` cannot name a container or a host: use letters, digits, `_`, `.` \
                     and `-`, starting with a letter or digit"
                ),
            )
            .with_field(field),
        );
        return;
    }
    if let Some(&first) = index.get(id) {
        let first_line = steps[first].id_pos.unwrap_or(steps[first].pos).line;
        let how = if steps[first].id_pos.is_none() {
            " (the ID kiln generates for that step)"
        } else {
            ""
        };
        diags.push(
            Diagnostic::error(
                Some(pos),
                format!("step ID `{id}` already exists as a vertex: step {first} at line {first_line} has it{how}"),
            )
            .with_field(field),
        );
        return;
    }
    index.insert(id, i);
}

fn resolve(
    step: &Step,
    i: usize,
    targets: &[At<String>],
    index: &HashMap<&str, usize>,
    steps: &[Step],
    diags: &mut Diagnostics,
) -> Vec<usize> {
    let mut parents = Vec::with_capacity(targets.len());
    for t in targets {
        let field = format!("steps[{i}].when");
        let error = |msg: String| Diagnostic::error(Some(t.pos), msg).with_field(field.clone());
        if t.value == step.id.as_str() {
            diags.push(error(format!("step `{}` cannot depend on itself", t.value)));
        } else if let Some(&p) = index.get(t.value.as_str()) {
            if !parents.contains(&p) {
                parents.push(p);
            }
        } else if let Some(later) = steps.iter().position(|s| s.id.as_str() == t.value) {
            diags.push(error(format!(
                "`when` names `{}`, which is defined later (line {}); a step can only wait for steps \
                 above it",
                t.value, steps[later].pos.line
            )));
        } else {
            diags.push(error(match closest_id(&t.value, &steps[..i]) {
                Some(s) => format!("`when` names unknown step `{}`; did you mean `{s}`?", t.value),
                None => format!("`when` names unknown step `{}`", t.value),
            }));
        }
    }
    parents
}

fn closest_id<'s>(name: &str, steps: &'s [Step]) -> Option<&'s str> {
    steps
        .iter()
        .map(|s| (strsim::levenshtein(name, s.id.as_str()), s.id.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, id)| id)
}

/// Sharp edge 10: a step without `when` after parallel steps waits only for the one right
/// before it. Warn when an earlier step is then left that nothing waits for and that is not
/// an ancestor of the step.
fn warn_implicit_after_parallel(steps: &[Step], graph: &StepGraph, diags: &mut Diagnostics) {
    let n = steps.len();
    let mut has_child = vec![false; n];
    let mut warned = vec![false; n];
    for i in 0..n {
        if matches!(steps[i].when, When::Previous) && i > 0 {
            let ancestors = ancestors(graph, i);
            let missed: Vec<usize> = (0..i - 1)
                .filter(|&j| !has_child[j] && !warned[j] && !ancestors[j] && !steps[j].detach)
                .collect();
            if !missed.is_empty() {
                let names: Vec<String> =
                    missed.iter().map(|&j| format!("`{}`", steps[j].id)).collect();
                let all: Vec<&str> =
                    missed.iter().chain([&(i - 1)]).map(|&j| steps[j].id.as_str()).collect();
                diags.push(
                    Diagnostic::warning(
                        Some(steps[i].pos),
                        format!(
                            "step `{}` has no `when`, so it waits only for the step before it (`{}`), not for {} \
                             running in parallel; add `when: [{}]` to wait for all of them",
                            steps[i].id,
                            steps[i - 1].id,
                            names.join(", "),
                            all.join(", ")
                        ),
                    )
                    .with_field(format!("steps[{i}]")),
                );
                for j in missed {
                    warned[j] = true;
                }
            }
        }
        for &p in graph.parents(i) {
            has_child[p] = true;
        }
    }
}

fn ancestors(graph: &StepGraph, step: usize) -> Vec<bool> {
    let mut seen = vec![false; step + 1];
    let mut stack: Vec<usize> = graph.parents(step).to_vec();
    while let Some(p) = stack.pop() {
        if !seen[p] {
            seen[p] = true;
            stack.extend_from_slice(graph.parents(p));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Pos;
    use crate::task::{parse::parse_task, yaml};

    fn graph(text: &str) -> (Vec<super::super::model::Step>, StepGraph, Diagnostics) {
        let root = yaml::parse(text).expect("valid YAML");
        let (task, diags) = parse_task(&root, text, &|p| p);
        assert!(!diags.has_errors(), "{diags:?}");
        let steps = task.expect("task").steps;
        let (g, d) = build(&steps);
        (steps, g, d)
    }

    fn parents(text: &str) -> Vec<Vec<usize>> {
        let (_, g, d) = graph(text);
        assert!(!d.has_errors(), "{d:?}");
        (0..g.len()).map(|i| g.parents(i).to_vec()).collect()
    }

    fn error(text: &str, expected: &str) -> Diagnostic {
        let (_, _, d) = graph(text);
        let errors: Vec<Diagnostic> = d.into_iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].message.contains(expected), "{:?} lacks {expected:?}", errors[0].message);
        errors[0].clone()
    }

    #[test]
    fn no_when_means_previous_step_and_first_means_start() {
        assert_eq!(
            parents("steps:\n  - cmd: a\n  - cmd: b\n  - cmd: c\n"),
            vec![vec![], vec![0], vec![1]]
        );
    }

    #[test]
    fn dash_starts_with_the_run_and_the_next_step_follows_it() {
        // Like acr-builder's graph test: implicit edges attach to the previous step even if it
        // started with `-`.
        let p = parents(
            "steps:\n  - id: a\n    cmd: x\n  - id: b\n    cmd: x\n    when: [\"-\"]\n  - id: c\n    cmd: x\n  - id: d\n    cmd: x\n    when: [a, c]\n",
        );
        assert_eq!(p, vec![vec![], vec![], vec![1], vec![0, 2]]);
    }

    #[test]
    fn levels_group_parallel_steps() {
        let (_, g, _) = graph(
            "steps:\n  - id: a\n    cmd: x\n    when: [\"-\"]\n  - id: b\n    cmd: x\n    when: [\"-\"]\n  - id: c\n    cmd: x\n    when: [a, b]\n",
        );
        assert_eq!(g.levels(), vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn forward_references_are_rejected() {
        let d = error(
            "steps:\n  - id: a\n    cmd: x\n    when: [b]\n  - id: b\n    cmd: x\n",
            "`when` names `b`, which is defined later (line 5)",
        );
        assert_eq!(d.pos, Some(Pos::new(4, 12)));
    }

    #[test]
    fn self_references_are_rejected() {
        error("steps:\n  - id: a\n    cmd: x\n    when: [a]\n", "cannot depend on itself");
    }

    #[test]
    fn unknown_targets_suggest_an_id() {
        error(
            "steps:\n  - id: build\n    cmd: x\n  - cmd: x\n    when: [buidl]\n",
            "did you mean `build`?",
        );
    }

    #[test]
    fn ids_are_unique_including_generated_ones() {
        error(
            "steps:\n  - id: a\n    cmd: x\n  - id: a\n    cmd: x\n",
            "step ID `a` already exists as a vertex",
        );
        let d =
            error("steps:\n  - cmd: x\n  - id: acb_step_0\n    cmd: x\n", "the ID kiln generates");
        assert_eq!(d.pos, Some(Pos::new(3, 9)));
    }

    #[test]
    fn reserved_and_malformed_ids() {
        error("steps:\n  - id: acb_root\n    cmd: x\n", "acb_root is a reserved ID");
        error("steps:\n  - id: \"a b\"\n    cmd: x\n", "step ID cannot contain spaces");
        error("steps:\n  - id: a/b\n    cmd: x\n", "cannot name a container");
    }

    #[test]
    fn sharp_edge_10_warns_once() {
        let (_, _, d) = graph(
            "steps:\n  - id: a\n    cmd: x\n    when: [\"-\"]\n  - id: b\n    cmd: x\n    when: [\"-\"]\n  - id: c\n    cmd: x\n  - id: d\n    cmd: x\n",
        );
        let w: Vec<&Diagnostic> = d.iter().collect();
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].message.contains("waits only for the step before it (`b`), not for `a`"));
        assert!(w[0].message.contains("when: [a, b]"));
        assert_eq!(w[0].pos, Some(Pos::new(8, 5)));
    }

    #[test]
    fn no_warning_for_joined_branches_or_services() {
        let (_, _, d) = graph(concat!(
            "steps:\n  - id: web\n    cmd: x\n    detach: true\n  - id: probe\n    cmd: x\n    when: [web]\n",
            "  - id: a\n    cmd: x\n    when: [\"-\"]\n  - id: b\n    cmd: x\n    when: [\"-\"]\n",
            "  - id: j\n    cmd: x\n    when: [a, b, probe]\n  - cmd: x\n",
        ));
        assert!(d.0.is_empty(), "{d:#?}");
    }
}
