//! From a validated task and its step graph to the [`Plan`] a worker executes.
//!
//! This is where kiln parts with ACR's shell: ACR appends a `cmd` to a `docker run` line that
//! `/bin/sh -c` runs on the host (sharp edge 8). kiln splits the string shell-style once, here,
//! and no host shell ever sees it; where the string relies on a host shell (a pipe, `&&`, a
//! redirect) the user is told, since the container would receive those as arguments.

use base64::Engine as _;
use kiln_plan::plan::{
    Action, Network, Plan, PlanStep, Pull, SecretFile, SecretVolume, VolumeMount,
};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::render::RunVars;
use crate::task::dag::StepGraph;
use crate::task::load::{LoadOptions, Loaded, load};
use crate::task::model::{StepKind, Task};

/// A task file made ready to run.
#[derive(Debug, Clone)]
pub struct Planned {
    pub loaded: Loaded,
    pub plan: Plan,
    /// Warnings of every stage, in file order.
    pub diagnostics: Diagnostics,
}

/// Everything between a task file's text and a run: load, validate, plan. `masked` are the
/// values logs must never show; `strict` makes every warning an error.
pub fn plan_file(
    text: &str,
    opts: &LoadOptions<'_>,
    masked: Vec<String>,
    strict: bool,
) -> Result<Planned, Diagnostics> {
    let loaded = load(text, opts)?;
    let (plan, plan_diags) =
        build(&loaded.task, &loaded.graph, &opts.data.run, masked).map_err(|mut d| {
            d.extend(loaded.diagnostics.clone());
            d.sorted()
        })?;
    let mut diagnostics = loaded.diagnostics.clone();
    diagnostics.extend(plan_diags);
    let mut diagnostics = diagnostics.sorted();
    if strict {
        diagnostics.make_strict();
        if diagnostics.has_errors() {
            return Err(diagnostics);
        }
    }
    Ok(Planned { loaded, plan, diagnostics })
}

/// Builds the plan. Errors (an unclosed quote in a `cmd`, say) point at the step; warnings are
/// returned with the plan.
pub fn build(
    task: &Task,
    graph: &StepGraph,
    run: &RunVars,
    masked: Vec<String>,
) -> Result<(Plan, Diagnostics), Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut steps = Vec::with_capacity(task.steps.len());
    for (i, step) in task.steps.iter().enumerate() {
        let field = format!("steps[{i}].{}", step.kind.value.name());
        let pos = Some(step.kind.pos);
        let split = |s: &str, diags: &mut Diagnostics| match shell_words::split(s) {
            Ok(words) => Some(words),
            Err(_) => {
                diags.push(
                    Diagnostic::error(pos, format!("unclosed quote in `{s}`")).with_field(&field),
                );
                None
            }
        };
        let action = match &step.kind.value {
            StepKind::Push(images) => Action::Push { images: images.clone() },
            StepKind::Build(args) => match split(args, &mut diags) {
                Some(args) => Action::Build { args },
                None => continue,
            },
            StepKind::Cmd(cmd) => {
                if let Some(op) = host_shell_operator(cmd) {
                    diags.push(
                        Diagnostic::warning(
                            pos,
                            format!(
                                "`{op}` in this cmd is handled by a host shell in ACR; kiln runs no host shell, \
                                 so the container receives `{op}` as an argument. Wrap the command in \
                                 `sh -c '…'` to run it in the container's shell"
                            ),
                        )
                        .with_field(&field),
                    );
                }
                match split(cmd, &mut diags)
                    .and_then(|w| w.split_first().map(|(i, a)| (i.clone(), a.to_vec())))
                {
                    Some((image, args)) => Action::Cmd { image, args },
                    None => continue,
                }
            }
        };
        steps.push(PlanStep {
            id: step.id.clone(),
            action,
            depends_on: graph.parents(i).iter().map(|&p| task.steps[p].id.clone()).collect(),
            env: step.env.value.clone(),
            working_directory: step.working_directory.clone(),
            entry_point: step.entry_point.clone(),
            user: step.user.clone(),
            privileged: step.privileged,
            network: step.network.clone(),
            ports: step.ports.clone(),
            expose: step.expose.clone(),
            cpus: step.cpus.clone(),
            isolation: step.isolation.clone(),
            timeout_secs: step.timeout,
            start_delay_secs: step.start_delay,
            retries: step.retries,
            retry_delay_secs: step.retry_delay,
            retry_on_errors: step.retry_on_errors.clone(),
            repeat: step.repeat,
            ignore_errors: step.ignore_errors,
            detach: step.detach,
            keep: step.keep,
            pull: step.pull.then_some(Pull {
                retries: step.cmd_download_retries,
                retry_delay_secs: step.cmd_download_retry_delay,
            }),
            volume_mounts: step
                .volume_mounts
                .iter()
                .map(|m| VolumeMount {
                    name: m.name.value.clone(),
                    mount_path: m.mount_path.clone(),
                })
                .collect(),
            cache: step.cache,
        });
    }
    if diags.has_errors() {
        return Err(diags);
    }
    let named = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let plan = Plan {
        run_id: run.id.clone(),
        steps,
        networks: task
            .networks
            .iter()
            .map(|n| Network {
                name: n.name.clone(),
                driver: n.driver.clone(),
                ipv6: n.ipv6,
                skip_creation: n.skip_creation,
                is_default: n.is_default,
            })
            .collect(),
        volumes: task
            .volumes
            .iter()
            .map(|v| SecretVolume {
                name: v.name.value.clone(),
                files: v
                    .secret
                    .iter()
                    .map(|(name, bytes)| SecretFile {
                        name: name.clone(),
                        content_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
                    })
                    .collect(),
            })
            .collect(),
        masked,
        registry: named(&run.registry),
        task_name: named(&run.task_name),
        credentials: Vec::new(),
        git_ssh: None,
        context_limit: None,
        platform: None,
    };
    Ok((plan, diags))
}

/// The first shell operator outside quotes, if any: what a host shell would have acted on.
fn host_shell_operator(cmd: &str) -> Option<&'static str> {
    let mut quote: Option<char> = None;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => {
                chars.next();
            }
            (None, '|') => return Some(if chars.peek() == Some(&'|') { "||" } else { "|" }),
            (None, '&') if chars.peek() == Some(&'&') => return Some("&&"),
            (None, ';') => return Some(";"),
            (None, '>') => return Some(">"),
            (None, '<') => return Some("<"),
            (None, '`') => return Some("`"),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unquoted_operators_only() {
        assert_eq!(host_shell_operator("busybox echo a | wc"), Some("|"));
        assert_eq!(host_shell_operator("busybox true && echo"), Some("&&"));
        assert_eq!(host_shell_operator("busybox echo > /x"), Some(">"));
        assert_eq!(host_shell_operator("busybox sh -c 'echo a | wc && x > y'"), None);
        assert_eq!(host_shell_operator("busybox sh -c \"a \\\" | b\""), None);
        assert_eq!(host_shell_operator("busybox echo a\\|b"), None);
    }
}
