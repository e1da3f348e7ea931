//! `kiln exec`: run a task file on the local Docker engine, without a server, like ACR's
//! `acb exec`. Logs are printed as they arrive, prefixed by step ID; the run ends with a
//! per-step summary and the dependency report.

use std::collections::HashMap;
use std::io::{BufWriter, IsTerminal as _, Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::Utc;
use clap::Args;
use kiln_plan::event::{Event, RunStatus, StepStatus};
use kiln_plan::plan::{RegistryCredential, StepId};
use kiln_worker::{DockerApiMode, Engine, RunOptions, RunSummary};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::exit;
use super::task_file::{TaskFileArgs, check, print_diagnostics, summary};
use kiln_api::run_log::{self, Dependencies, LineAssembler, StepEnds};

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    task: TaskFileArgs,
    /// The build context copied into the run's /workspace; `/dev/null` (or none) for no context.
    #[arg(value_name = "CONTEXT")]
    context: Option<PathBuf>,
    /// User name for the --registry login.
    #[arg(long, value_name = "USER", requires = "registry")]
    registry_user: Option<String>,
    /// Read the --registry password from standard input.
    #[arg(long, requires = "registry_user")]
    registry_password_stdin: bool,
    /// Where run workspaces are created (default: the system temp directory).
    #[arg(long, value_name = "DIR")]
    workspace_root: Option<PathBuf>,
    /// Limit on the whole run, in seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// What `cmd` steps get at /var/run/docker.sock: `scoped` (the run's own Docker API),
    /// `host` (the engine's socket, as ACR does: trusted task files only) or `off`.
    #[arg(long, value_name = "MODE", default_value = "scoped")]
    docker_api: DockerApiMode,
    /// The platform the steps run as, `os/arch[/variant]` (default: each image's own).
    #[arg(long, value_name = "PLATFORM", value_parser = kiln_api::Platform::from_flag)]
    platform: Option<kiln_api::Platform>,
    /// How many `cmd` step containers may wait prepared ahead of need (the fast path);
    /// 0 prepares none.
    #[arg(long, value_name = "N", default_value_t = kiln_worker::DEFAULT_LOOKAHEAD)]
    lookahead: usize,
    /// Run every `cmd` step in a container created and started for it when it is ready (the
    /// classic path), as before issue 14: for comparison, or as a way out.
    #[arg(long)]
    classic_steps: bool,
}

pub fn exec(args: ExecArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    if args.registry_user.is_some() && !args.registry_password_stdin {
        bail!(
            "--registry-user needs --registry-password-stdin (passwords are never taken as arguments)"
        );
    }
    let mut inputs = args.task.inputs(config)?;
    let platform = args.platform.map(|p| p.to_string());
    if let Some(platform) = &platform {
        inputs.set_platform(platform);
    }
    let password = if args.registry_password_stdin {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("reading the registry password from stdin")?;
        Some(password.trim_end_matches(['\r', '\n']).to_string())
    } else {
        None
    };
    if let Some(p) = &password
        && !p.is_empty()
    {
        inputs.masked.push(p.clone());
    }
    let mut planned = match check(&inputs, args.task.strict) {
        Ok(planned) => planned,
        Err(diags) => {
            print_diagnostics(&inputs.name, &diags);
            eprintln!("{}: invalid ({})", inputs.name, summary(&diags));
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    print_diagnostics(&inputs.name, &planned.diagnostics);
    planned.plan.platform = platform;
    if let (Some(registry), Some(username), Some(password)) =
        (&args.task.registry, &args.registry_user, password)
    {
        planned.plan.credentials.push(RegistryCredential {
            registry: registry.clone(),
            username: username.clone(),
            password,
        });
    }
    let context = args.context.filter(|c| c != Path::new("/dev/null"));
    if let Some(c) = &context
        && !c.is_dir()
    {
        bail!("the context {} is not a directory", c.display());
    }
    let mut options = RunOptions::new(
        args.workspace_root.unwrap_or_else(|| std::env::temp_dir().join("kiln-runs")),
    );
    options.context_dir = context;
    options.timeout = args.timeout.map(Duration::from_secs);
    options.docker_api = args.docker_api;
    options.lookahead = args.lookahead;
    options.classic_steps = args.classic_steps;

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let status = runtime.block_on(run(planned.plan, options))?;
    Ok(if status == RunStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn run(plan: kiln_plan::plan::Plan, options: RunOptions) -> anyhow::Result<RunStatus> {
    let engine = Engine::connect().await?;
    // What crashed kiln processes left on this engine goes first; live runs of others stay.
    match kiln_worker::sweep_orphans(&engine).await {
        Ok(report) => {
            let removed = report.containers.len() + report.networks.len() + report.volumes.len();
            if removed > 0 {
                eprintln!("kiln: removed {removed} objects left by crashed kiln runs");
            }
            for e in report.errors {
                eprintln!("warning: cleanup of a crashed run: {e}");
            }
        }
        Err(e) => eprintln!("warning: looking for crashed runs' leftovers failed: {e}"),
    }
    let cancel = CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nCanceling the run (Ctrl-C)...");
            on_ctrl_c.cancel();
        }
    });
    let (tx, mut rx) = mpsc::channel(64);
    let order: Vec<StepId> = plan.steps.iter().map(|s| s.id.clone()).collect();
    let printer = tokio::spawn(async move {
        let mut out = Printer::new(&order);
        while let Some(event) = rx.recv().await {
            out.event(event);
        }
        out
    });
    let summary = kiln_worker::execute(&engine, &plan, options, tx, cancel).await;
    let out = printer.await.context("the log printer stopped")?;
    out.finish(&summary);
    Ok(summary.status)
}

/// Turns the event stream into lines on the terminal: `step | text`, one colour per step.
struct Printer {
    style: Style,
    lines: LineAssembler,
    ends: StepEnds,
    dependencies: Dependencies,
}

/// How a line looks on this terminal.
struct Style {
    colour: bool,
    width: usize,
    palette: HashMap<StepId, usize>,
}

impl Style {
    fn line(&self, out: &mut impl Write, step: Option<&StepId>, text: &str) {
        let _ = if self.colour {
            let name = run_log::line_name(step);
            let colour = step.and_then(|s| self.palette.get(s)).map_or(37, |i| 31 + (i % 6));
            writeln!(out, "\x1b[{colour}m{name:<w$}\x1b[0m | {text}", w = self.width)
        } else {
            run_log::write_line(out, self.width, step, text)
        };
    }
}

impl Printer {
    fn new(order: &[StepId]) -> Self {
        let lines = LineAssembler::new(order);
        Self {
            style: Style {
                colour: std::io::stdout().is_terminal(),
                width: lines.width(),
                palette: order.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect(),
            },
            lines,
            ends: StepEnds::default(),
            dependencies: Dependencies::default(),
        }
    }

    fn event(&mut self, event: Event) {
        self.dependencies.observe(&event);
        let now = Utc::now();
        // One write per event, not per line: a step printing 200 MB must not cost a system
        // call a line.
        let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        for (step, text) in self.ends.observe(&event) {
            self.style.line(&mut out, Some(&step), &run_log::stamped(&text, now));
        }
        if let Event::Log { step, stream, data } = event {
            let Printer { style, lines, .. } = self;
            lines.push(step.as_ref(), stream, &data, |step, text| {
                style.line(&mut out, step, &run_log::shown(stream, text, now));
            });
        }
        // A closed stdout (a pipe to `head`) must not abort the run: it still cleans up.
        let _ = out.flush();
    }

    fn finish(mut self, summary: &RunSummary) {
        let mut out = std::io::stdout().lock();
        let Printer { style, lines, .. } = &mut self;
        lines.flush(|step, text| style.line(&mut out, step, text));
        drop(out);
        println!();
        println!(
            "{:<w$}  {:<10}  {:>9}  {:>4}",
            "STEP",
            "STATUS",
            "DURATION",
            "EXIT",
            w = self.style.width.max(4)
        );
        for step in &summary.steps {
            let status = match step.status {
                StepStatus::Successful => "successful",
                StepStatus::Failed => "failed",
                StepStatus::Ignored => "ignored",
                StepStatus::Skipped => "skipped",
                StepStatus::Canceled => "canceled",
            };
            let exit = step.exit_code.map_or_else(|| "-".to_string(), |c| c.to_string());
            println!(
                "{:<w$}  {status:<10}  {:>8.2}s  {exit:>4}",
                step.id.as_str(),
                step.elapsed.as_secs_f64(),
                w = self.style.width.max(4)
            );
        }
        if summary.status == RunStatus::Succeeded
            && let Some(report) = self.dependencies.report()
        {
            println!("\n{}", run_log::stamped(run_log::DEPENDENCIES_HEADER, Utc::now()));
            println!("{}", run_log::dependency_text(&report));
        }
        let outcome = run_log::outcome_line(
            summary.run_id.as_str(),
            summary.status.into(),
            summary.elapsed.as_secs(),
            summary.error.as_deref(),
        );
        if summary.status == RunStatus::Succeeded {
            println!("\n{outcome}");
        } else {
            eprintln!("\n{outcome}");
        }
        for e in &summary.cleanup_errors {
            eprintln!("warning: cleanup: {e}");
        }
    }
}
