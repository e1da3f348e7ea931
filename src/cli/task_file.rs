//! `kiln validate` and `kiln render`: load a task file with the user's values and show what
//! kiln makes of it, without running anything.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use kiln_plan::plan::RunId;
use kiln_plan::plan::{Action, Plan};
use kiln_task::config::Config;
use kiln_task::diagnostic::Diagnostics;
use kiln_task::plan::{Planned, plan_file};
use kiln_task::render::{RunVars, TemplateData};
use kiln_task::run_id::format_run_id;
use kiln_task::task::load::{LoadOptions, Loaded};
use kiln_task::values::{SetFlag, SetValue, Values, merge_values};
use serde_json::json;

use super::Output;

/// ACR fetches remote alias sources with a 2-second timeout.
const ALIAS_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    task: TaskFileArgs,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    task: TaskFileArgs,
}

/// A task file and everything it renders with.
#[derive(Debug, Args)]
pub(super) struct TaskFileArgs {
    /// The task file; `-` reads it from standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE", default_value = "acb.yaml")]
    file: PathBuf,
    /// A YAML file of values, read as `{{.Values.name}}`.
    #[arg(long, value_name = "FILE")]
    values: Option<PathBuf>,
    /// A value, overriding the values file (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// A secret value: like --set, and masked wherever kiln writes logs (repeatable).
    #[arg(long = "set-secret", value_name = "NAME=VALUE")]
    set_secret: Vec<String>,
    /// A task secret's value, read as `{{.Secrets.id}}` (kiln has no Key Vault access).
    #[arg(long = "secret", value_name = "ID=VALUE")]
    secrets: Vec<String>,
    /// Treat warnings as errors.
    #[arg(long)]
    pub(super) strict: bool,
    /// The run ID templates see as `{{.Run.ID}}` (default: the configured prefix and the clock).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// The registry templates see as `{{.Run.Registry}}`.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(super) registry: Option<String>,
    /// `{{.Run.Commit}}`.
    #[arg(long)]
    commit: Option<String>,
    /// `{{.Run.Branch}}`.
    #[arg(long)]
    branch: Option<String>,
    /// `{{.Run.TaskName}}`.
    #[arg(long)]
    task_name: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// The inputs of one load, read from files and flags.
pub(super) struct Inputs {
    pub(super) name: String,
    text: String,
    data: TemplateData,
    pub(super) masked: Vec<String>,
    images: BTreeMap<String, String>,
    base_dir: PathBuf,
}

impl TaskFileArgs {
    pub(super) fn inputs(&self, config_path: Option<&Path>) -> anyhow::Result<Inputs> {
        let config = match config_path {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        let (name, text) = if self.file == Path::new("-") {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the task from stdin")?;
            ("<stdin>".to_string(), text)
        } else {
            let text = std::fs::read_to_string(&self.file)
                .with_context(|| format!("cannot read task file {}", self.file.display()))?;
            (self.file.display().to_string(), text)
        };
        let file_values = match &self.values {
            Some(p) => Values::load(p)?,
            None => Values::default(),
        };
        let sets = self
            .set
            .iter()
            .map(|a| SetValue::parse(SetFlag::Set, a))
            .chain(self.set_secret.iter().map(|a| SetValue::parse(SetFlag::SetSecret, a)))
            .collect::<Result<Vec<_>, _>>()?;
        let merged = merge_values(file_values, &sets);
        let mut secrets = BTreeMap::new();
        for s in &self.secrets {
            let Some((id, value)) = s.split_once('=') else {
                bail!("--secret `{s}`: expected ID=VALUE");
            };
            secrets.insert(id.to_string(), value.to_string());
        }
        let mut masked = merged.secrets;
        for v in secrets.values() {
            if !v.is_empty() && !masked.contains(v) {
                masked.push(v.clone());
            }
        }

        let run_id = match &self.run_id {
            Some(id) => RunId::new(id.clone()),
            // No server issues IDs here: the clock in milliseconds keeps local runs unique and
            // increasing, so two `kiln exec` runs on one engine never share names.
            None => {
                let now = chrono::Utc::now().timestamp_millis();
                format_run_id(&config.run_id_prefix, u64::try_from(now).unwrap_or_default())
            }
        };
        let mut run = RunVars::new(run_id, chrono::Utc::now());
        if let Some(r) = self.registry.clone().or(config.default_registry.clone()) {
            run.registry = r;
        }
        run.commit = self.commit.clone().unwrap_or_default();
        run.branch = self.branch.clone().unwrap_or_default();
        run.task_name = self.task_name.clone().unwrap_or_default();

        let base_dir = match self.file.parent() {
            Some(p) if !p.as_os_str().is_empty() && self.file != Path::new("-") => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Inputs {
            name,
            text,
            data: TemplateData { run, values: merged.values, secrets },
            masked,
            images: config.image_aliases(),
            base_dir,
        })
    }
}

impl Inputs {
    /// The run is on `platform` (`kiln exec --platform`): `.Run.OS`, `.Run.Architecture`.
    pub(super) fn set_platform(&mut self, platform: &str) {
        self.data.run.set_platform(platform);
    }
}

pub(super) fn check(inputs: &Inputs, strict: bool) -> Result<Planned, Diagnostics> {
    let opts = LoadOptions {
        data: &inputs.data,
        images: &inputs.images,
        base_dir: &inputs.base_dir,
        alias_fetch_timeout: ALIAS_FETCH_TIMEOUT,
    };
    plan_file(&inputs.text, &opts, inputs.masked.clone(), strict)
}

pub(super) fn print_diagnostics(name: &str, diags: &Diagnostics) {
    for d in diags.iter() {
        eprintln!("{}", d.display(name));
    }
}

pub(super) fn summary(diags: &Diagnostics) -> String {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.iter().count() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!("{}, {}", plural(errors, "error"), plural(warnings, "warning"))
}

pub fn validate(args: ValidateArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let args = args.task;
    let inputs = args.inputs(config)?;
    let (ok, diags) = match check(&inputs, args.strict) {
        Ok(planned) => (true, planned.diagnostics),
        Err(diags) => (false, diags),
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "file": inputs.name,
                "valid": ok,
                "diagnostics": diags,
            }))?
        ),
        Output::Text => {
            print_diagnostics(&inputs.name, &diags);
            let verdict = if ok { "valid" } else { "invalid" };
            eprintln!("{}: {verdict} ({})", inputs.name, summary(&diags));
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn render(args: RenderArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let args = args.task;
    let inputs = args.inputs(config)?;
    let Planned { loaded, plan, diagnostics: diags } = match check(&inputs, args.strict) {
        Ok(planned) => planned,
        Err(diags) => {
            print_diagnostics(&inputs.name, &diags);
            eprintln!("{}: invalid ({})", inputs.name, summary(&diags));
            return Ok(ExitCode::from(super::exit::USAGE));
        }
    };
    print_diagnostics(&inputs.name, &diags);
    match args.output {
        Output::Json => {
            let json = serde_json::to_string_pretty(&json!({
                "file": inputs.name,
                "run_id": plan.run_id,
                "rendered": loaded.rendered,
                "plan": plan,
                // Which way each `cmd` step's container runs (issue 14): fast unless a setting
                // needs the classic path; the engine may still decide classic (the image).
                "paths": plan
                    .steps
                    .iter()
                    .filter_map(|s| {
                        let path = kiln_plan::step_path::plan_path(s)?;
                        Some((s.id.to_string(), serde_json::Value::from(path.to_string())))
                    })
                    .collect::<serde_json::Map<_, _>>(),
                // Which `cmd` steps share a network namespace, each lane in run order.
                "lanes": kiln_plan::lane::Lanes::assign(&plan).step_ids(&plan),
                "diagnostics": diags,
            }))?;
            println!("{}", mask(&json, &plan.masked));
        }
        Output::Text => {
            let mut text =
                format!("# {} rendered for run {}\n{}", inputs.name, plan.run_id, loaded.rendered);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push('\n');
            text.push_str(&graph_text(&plan, &loaded));
            print!("{}", mask(&text, &plan.masked));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Secret values never reach a terminal or a CI log, even from a dry run.
fn mask(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

/// The step graph as a table: one step a line, in start order, with what it waits for.
fn graph_text(plan: &Plan, loaded: &Loaded) -> String {
    let lanes = kiln_plan::lane::Lanes::assign(plan);
    let width = plan.steps.iter().map(|s| s.id.as_str().len()).max().unwrap_or(0);
    let mut out = format!("# step graph ({} steps)\n", plan.steps.len());
    for (depth, level) in loaded.graph.levels().iter().enumerate() {
        for &i in level {
            let step = &plan.steps[i];
            let (kind, what) = match &step.action {
                Action::Build { args } => ("build", shell_words::join(args)),
                Action::Push { images } => ("push", images.join(" ")),
                Action::Cmd { image, args } => {
                    ("cmd", shell_words::join(std::iter::once(image).chain(args)))
                }
            };
            let after = if step.depends_on.is_empty() {
                "starts with the run".to_string()
            } else {
                let ids: Vec<&str> = step.depends_on.iter().map(|d| d.as_str()).collect();
                format!("after {}", ids.join(", "))
            };
            let mut flags = vec![format!("timeout {}s", step.timeout_secs)];
            if let Some(path) = kiln_plan::step_path::plan_path(step) {
                flags.push(format!("path: {path}"));
            }
            if let Some(lane) = lanes.lane_of(i) {
                flags.push(format!("network: lane {}", lane + 1));
            }
            if step.retries > 0 {
                flags.push(format!("retries {}", step.retries));
            }
            if step.repeat > 0 {
                flags.push(format!("repeat {}", step.repeat));
            }
            for (on, name) in [(step.detach, "detach"), (step.ignore_errors, "ignoreErrors")] {
                if on {
                    flags.push(name.to_string());
                }
            }
            out.push_str(&format!(
                "{depth:>2}  {:<width$}  {kind:<5}  {what}\n      {after}; {}\n",
                step.id.as_str(),
                flags.join(", ")
            ));
        }
    }
    out
}
