//! Which way a `cmd` step's container runs: the fast path or the classic one.
//!
//! The fast path (issue 14) creates a step's container ahead of need with an idle init as its
//! entry process and runs the step's command in it with `exec`, so a container start is off
//! the critical path. Some settings only a container of its own honours; such steps keep the
//! classic path (create, attach, start, wait). The decision is split by what it needs: the
//! plan alone decides most of it ([`plan_path`], shown by `kiln render`), and the image's
//! configuration, known only on the engine, can still send a step back to the classic path
//! ([`image_path`], and [`command`] when the image and step give nothing to run), and a step
//! takes the fast path only with a container prepared ahead ([`Classic::NotPrepared`]). The
//! reasons are one vocabulary, shown by `kiln render` and in each step's summary.

use std::fmt;

use crate::plan::{Action, PlanStep};

/// The path a step's container takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPath {
    /// Prepared ahead with kiln's idle init; the command runs through `exec`.
    Fast,
    /// A container of its own, created and started when the step is ready.
    Classic(Classic),
}

/// Why a step takes the classic path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classic {
    /// The run asked for the classic path for every step (or could not write kiln's init).
    Forced,
    /// `detach`: the service must stay a real container with its command as its process.
    Detach,
    /// `ports`/`expose`: publishing a port ahead of need would hold the host port early.
    Ports,
    /// `keep`: the kept container must be the command's own, with its exit status.
    Keep,
    /// `entryPoint: ""`: only the engine's own handling of an empty entry point applies.
    EmptyEntryPoint,
    /// No container was prepared ahead for it: a step ready when the run starts (with nothing
    /// running to hide a preparation behind), a retry or repetition, a step whose image
    /// changed since, or a look-ahead limit of 0. A container made now would cost what a
    /// classic one costs, plus the `exec`.
    NotPrepared,
    /// The image and the step give nothing to run (the engine's create reports that).
    NoCommand,
    /// A non-Linux image: kiln's init is a Linux program.
    NotLinux,
    /// The engine's machine is not x86-64, which kiln's init is built for.
    ForeignHost,
}

impl fmt::Display for StepPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepPath::Fast => f.write_str("fast"),
            StepPath::Classic(reason) => write!(f, "classic ({reason})"),
        }
    }
}

impl fmt::Display for Classic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Classic::Forced => "the run's choice",
            Classic::Detach => "detach",
            Classic::Ports => "ports",
            Classic::Keep => "keep",
            Classic::EmptyEntryPoint => "empty entryPoint",
            Classic::NotPrepared => "not prepared ahead",
            Classic::NoCommand => "no command",
            Classic::NotLinux => "not a Linux image",
            Classic::ForeignHost => "engine host is not x86-64",
        })
    }
}

/// The path the plan alone allows for `step`; `None` for build and push steps, which run no
/// step container. A `Fast` answer may still become classic once the image is known.
pub fn plan_path(step: &PlanStep) -> Option<StepPath> {
    if !matches!(step.action, Action::Cmd { .. }) {
        return None;
    }
    let reason = if step.detach {
        Some(Classic::Detach)
    } else if !step.ports.is_empty() || !step.expose.is_empty() {
        Some(Classic::Ports)
    } else if step.keep {
        Some(Classic::Keep)
    } else if step.entry_point.as_deref() == Some("") {
        Some(Classic::EmptyEntryPoint)
    } else {
        None
    };
    Some(reason.map_or(StepPath::Fast, StepPath::Classic))
}

/// The path a step whose plan allows `plan` takes with an image for `image_os`, on an engine
/// host that can (`init_runs`) or cannot run kiln's init.
pub fn image_path(plan: StepPath, image_os: Option<&str>, init_runs: bool) -> StepPath {
    match plan {
        StepPath::Fast if !init_runs => StepPath::Classic(Classic::ForeignHost),
        StepPath::Fast if image_os.is_some_and(|os| os != "linux") => {
            StepPath::Classic(Classic::NotLinux)
        }
        path => path,
    }
}

/// The command `docker run` would run for a step with `entry_point` and `args` in an image
/// with `image_entrypoint` and `image_cmd` (the engine's merge of create options with the
/// image config): an entry point of the step's replaces the image's and drops its `CMD`;
/// otherwise the image's entry point runs with the step's arguments, or with the image's `CMD`
/// when the step gives none. `None` when that leaves nothing to run.
pub fn command(
    entry_point: Option<&str>,
    args: &[String],
    image_entrypoint: &[String],
    image_cmd: &[String],
) -> Option<Vec<String>> {
    let argv: Vec<String> = match entry_point {
        Some(ep) => std::iter::once(ep.to_string()).chain(args.iter().cloned()).collect(),
        None => {
            let rest = if args.is_empty() { image_cmd } else { args };
            image_entrypoint.iter().chain(rest).cloned().collect()
        }
    };
    (!argv.is_empty()).then_some(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StepId;

    fn cmd() -> PlanStep {
        PlanStep::new(
            StepId::new("s"),
            Action::Cmd { image: "busybox".into(), args: vec!["true".into()] },
        )
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_plain_cmd_step_is_fast() {
        assert_eq!(plan_path(&cmd()), Some(StepPath::Fast));
    }

    #[test]
    fn build_and_push_steps_have_no_container_path() {
        let build = PlanStep::new(StepId::new("b"), Action::Build { args: vec![".".into()] });
        assert_eq!(plan_path(&build), None);
        let push = PlanStep::new(StepId::new("p"), Action::Push { images: vec!["x".into()] });
        assert_eq!(plan_path(&push), None);
    }

    #[test]
    fn settings_only_a_container_of_its_own_honours_are_classic() {
        type Set = fn(&mut PlanStep);
        let cases: [(Set, Classic); 5] = [
            (|s| s.detach = true, Classic::Detach),
            (|s| s.ports = vec!["8080:80".into()], Classic::Ports),
            (|s| s.expose = vec!["80".into()], Classic::Ports),
            (|s| s.keep = true, Classic::Keep),
            (|s| s.entry_point = Some(String::new()), Classic::EmptyEntryPoint),
        ];
        for (set, reason) in cases {
            let mut step = cmd();
            set(&mut step);
            assert_eq!(plan_path(&step), Some(StepPath::Classic(reason)), "{reason}");
        }
    }

    #[test]
    fn settings_exec_applies_stay_fast() {
        let mut step = cmd();
        step.user = Some("1000".into());
        step.privileged = true;
        step.network = Some("host".into());
        step.entry_point = Some("/bin/sh".into());
        step.retries = 2;
        step.repeat = 1;
        assert_eq!(plan_path(&step), Some(StepPath::Fast));
    }

    #[test]
    fn the_image_and_host_can_still_make_a_step_classic() {
        let detach = StepPath::Classic(Classic::Detach);
        assert_eq!(image_path(StepPath::Fast, Some("linux"), true), StepPath::Fast);
        assert_eq!(image_path(StepPath::Fast, None, true), StepPath::Fast);
        assert_eq!(
            image_path(StepPath::Fast, Some("windows"), true),
            StepPath::Classic(Classic::NotLinux)
        );
        assert_eq!(
            image_path(StepPath::Fast, Some("linux"), false),
            StepPath::Classic(Classic::ForeignHost)
        );
        assert_eq!(image_path(detach, Some("linux"), true), detach);
    }

    #[test]
    fn command_composes_like_docker_run() {
        let (ep, cmd) = (strings(&["/entry", "-x"]), strings(&["default"]));
        // Step arguments replace CMD, after the image's entry point.
        assert_eq!(
            command(None, &strings(&["a"]), &ep, &cmd),
            Some(strings(&["/entry", "-x", "a"]))
        );
        // No arguments: the image's CMD.
        assert_eq!(command(None, &[], &ep, &cmd), Some(strings(&["/entry", "-x", "default"])));
        // The step's entry point drops both the image's entry point and its CMD.
        assert_eq!(command(Some("/bin/sh"), &[], &ep, &cmd), Some(strings(&["/bin/sh"])));
        assert_eq!(
            command(Some("/bin/sh"), &strings(&["-c", "x"]), &ep, &cmd),
            Some(strings(&["/bin/sh", "-c", "x"]))
        );
        // An image without an entry point runs the arguments themselves.
        assert_eq!(command(None, &strings(&["true"]), &[], &cmd), Some(strings(&["true"])));
        assert_eq!(command(None, &[], &[], &[]), None);
    }

    #[test]
    fn paths_read_as_render_shows_them() {
        assert_eq!(StepPath::Fast.to_string(), "fast");
        assert_eq!(StepPath::Classic(Classic::Detach).to_string(), "classic (detach)");
    }
}
