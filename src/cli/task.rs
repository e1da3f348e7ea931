//! `kiln task …`: tasks on the server and their timers, in the vocabulary of `az acr task`
//! (reference §5, §6.2, §6.7, §7.3).
//!
//! What a task runs follows az's rules: `--cmd` keeps ACR's one-step template in the task; `-f`
//! naming a task file (§1.4 extensions) makes a file task read from the context when a run
//! starts, or, with a `/dev/null` context, keeps the local file's text in the task (as
//! `az acr run -f F /dev/null` sends it); any other `-f` is a Dockerfile build. Schedules,
//! names and contexts are checked here before any request, so a typo fails at once with exit
//! status 2; a refusal from the server (unknown task, name taken, bad definition) is one line
//! and exit status 1.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use kiln_api::status::RunStatus;
use kiln_api::task::{
    BaseImageTriggerType, CreateTask, REDACTED, RegistryLogin, Task, TaskDefinition,
    TaskRunRequest, TaskStatus, TaskStep, Timer, TimerSpec, UpdateTask, UpdateTimer,
};
use kiln_api::{Argument, DockerApiMode, Platform, RunQuery, Source};
use kiln_api::{DEFAULT_PLATFORM, DEFAULT_TIMEOUT_SECS};
use kiln_plan::plan::GitSsh;

use super::build::build_arg;
use super::confirm::delete_confirmed;
use super::exit::Refusal;
use super::logs::print_log;
use super::remote::{self, ServerOptions, SourceArg, WaitArgs};
use super::run::set_values;
use super::runs::{
    CancelRunArgs, RunsOutput, ShowRunArgs, cancel_run, format_fields, format_table, parse_status,
    print_rows, print_runs, show_run, utc,
};
use kiln_api::request::cmd_request;
use kiln_server::task_def::{check_name, is_task_file};
use kiln_server::task_run::overlay;
use kiln_server::trigger::cron::{Schedule, parse_timer_arg};

#[derive(Debug, Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// Create a task: what it runs, on which context, and what triggers it.
    Create(CreateArgs),
    /// Change some of a task's settings (timers: `kiln task timer …`).
    Update(UpdateArgs),
    /// Show a task, with its timers and webhook.
    Show(ShowArgs),
    /// List tasks: NAME, PLATFORM, STATUS, SOURCE REPOSITORY, TRIGGERS.
    List(ListArgs),
    /// Delete a task (its runs stay).
    Delete(DeleteArgs),
    /// Run a task now (TRIGGER Manual) and follow its log to the run's end.
    Run(TaskRunArgs),
    /// Print the log of a task's latest run (or of --run-id), following it while it runs.
    Logs(TaskLogsArgs),
    /// List a task's runs (or all runs), newest first.
    ListRuns(TaskListRunsArgs),
    /// Show one run's record (as `kiln show-run`).
    ShowRun(ShowRunArgs),
    /// Cancel a queued or running run (as `kiln cancel-run`).
    CancelRun(CancelRunArgs),
    /// Add, change, remove and list a task's timers.
    #[command(subcommand)]
    Timer(TimerCommand),
    /// Add, change, remove and list the registry logins a task's runs use.
    #[command(subcommand)]
    Credential(CredentialCommand),
}

/// How a task (or timers) is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowOutput {
    Json,
    Table,
}

/// The settings `create` and `update` share.
#[derive(Debug, Default, Args)]
struct DefinitionFlags {
    /// A task file (`.yaml`, `.yml`): its path in the context, or with a `/dev/null` context a
    /// local file kept in the task. Any other name is a Dockerfile to build.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "cmd")]
    file: Option<String>,
    /// Run one container: "IMAGE ARGS…".
    #[arg(long, value_name = "IMAGE ARGS")]
    cmd: Option<String>,
    /// Image a Dockerfile build pushes, `repo[:tag]`; may use `{{.Run.ID}}` (repeatable).
    #[arg(short = 't', long = "image", value_name = "IMG")]
    images: Vec<String>,
    /// Build without pushing (`--no-push false` pushes again).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        value_parser = parse_bool)]
    no_push: Option<bool>,
    /// The build stage to stop at.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// A Docker build argument; `K` alone takes K's value from the environment (repeatable).
    #[arg(long = "arg", value_name = "K[=V]")]
    args: Vec<String>,
    /// A Docker build argument masked in logs and never shown back (repeatable).
    #[arg(long = "secret-arg", value_name = "K[=V]")]
    secret_args: Vec<String>,
    /// A values file: its path in a git or tarball context, or a local file kept in the task
    /// when the task file is kept in it (`/dev/null` context, `--cmd`).
    #[arg(long, value_name = "FILE")]
    values: Option<String>,
    /// A value, read as `{{.Values.name}}` (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// A secret value: like --set, masked in logs and never shown back (repeatable).
    #[arg(long = "set-secret", value_name = "NAME=VALUE")]
    set_secret: Vec<String>,
    /// Run on pushes to the context's branch (default true; off without a git context).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        value_parser = parse_bool)]
    commit_trigger_enabled: Option<bool>,
    /// Run on pull requests to the context's branch (default false).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        value_parser = parse_bool)]
    pull_request_trigger_enabled: Option<bool>,
    /// Run when a base image the task built on is updated (default true).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        value_parser = parse_bool)]
    base_image_trigger_enabled: Option<bool>,
    /// Which base images trigger: Runtime (the final stage's, default) or All.
    #[arg(long, value_name = "Runtime|All", value_parser = parse_base_image_type)]
    base_image_trigger_type: Option<BaseImageTriggerType>,
    /// Token for a private http(s) git repository (write-only; "" removes it on update).
    #[arg(long, value_name = "TOKEN")]
    git_access_token: Option<String>,
    /// OpenSSH private key (unencrypted) for an SSH git context, e.g. the repository's deploy
    /// key; it wins over the server's --git-ssh-key (write-only; "" removes it on update).
    #[arg(long, value_name = "FILE")]
    ssh_key_file: Option<String>,
    /// Limit on each run, in seconds (300 to 28800; default 3600). With --cmd also the step's.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// The platform to run on, `os/arch[/variant]` (default linux/amd64).
    #[arg(long, value_name = "PLATFORM", value_parser = Platform::from_flag)]
    platform: Option<Platform>,
    /// The agent pool the task's runs go to (default: any agent; "" removes it on update).
    #[arg(long, value_name = "POOL")]
    agent_pool: Option<String>,
    /// What the task's `cmd` steps get at /var/run/docker.sock: `off`, `scoped` (the run's own
    /// Docker API) or `host` (the engine's own socket; admin token only). Default: the agent's
    /// own setting; "" returns to it on update.
    #[arg(long, value_name = "off|scoped|host", value_parser = parse_docker_api)]
    docker_api: Option<DockerApiChoice>,
    /// Enabled (default) or Disabled: a disabled task ignores its triggers.
    #[arg(long, value_name = "Enabled|Disabled", value_parser = parse_task_status)]
    status: Option<TaskStatus>,
}

impl DefinitionFlags {
    /// Whether any flag that shapes the step was given.
    fn touches_step(&self) -> bool {
        self.file.is_some()
            || self.cmd.is_some()
            || self.values.is_some()
            || self.docker_flag().is_some()
    }

    /// Whether one source trigger event was given without the other.
    fn names_one_source_event(&self) -> bool {
        self.commit_trigger_enabled.is_some() != self.pull_request_trigger_enabled.is_some()
    }

    /// The first Dockerfile-only flag given, for messages.
    fn docker_flag(&self) -> Option<&'static str> {
        [
            (!self.images.is_empty(), "-t/--image"),
            (self.no_push.is_some(), "--no-push"),
            (self.target.is_some(), "--target"),
            (!self.args.is_empty(), "--arg"),
            (!self.secret_args.is_empty(), "--secret-arg"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

    fn build_args(&self) -> Vec<Argument> {
        let env = |name: &str| std::env::var(name).ok();
        let plain = self.args.iter().map(|a| build_arg(a, false, env));
        plain.chain(self.secret_args.iter().map(|a| build_arg(a, true, env))).collect()
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("step").required(true).args(["file", "cmd"])))]
pub struct CreateArgs {
    /// The task's name: letters, digits, `-`, `_`.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// The context: a git URL (`https://host/org/repo.git#branch:folder`), a tarball URL, or
    /// `/dev/null` for none.
    #[arg(short = 'c', long, value_name = "CONTEXT")]
    context: String,
    #[command(flatten)]
    flags: DefinitionFlags,
    /// A timer, `[NAME:]CRON` (5 fields, UTC); unnamed ones are named t1, t2, … by position
    /// (repeatable).
    #[arg(long = "schedule", value_name = "[NAME:]CRON")]
    schedules: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value = "json")]
    output: ShowOutput,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The task's name.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// A new context (git URL, tarball URL or `/dev/null`).
    #[arg(short = 'c', long, value_name = "CONTEXT")]
    context: Option<String>,
    #[command(flatten)]
    flags: DefinitionFlags,
    #[arg(short = 'o', long, value_enum, default_value = "json")]
    output: ShowOutput,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The task's name.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    #[arg(short = 'o', long, value_enum, default_value = "json")]
    output: ShowOutput,
}

/// `-o table|json|tsv` of a list (`task list`, `agent list`, `agent-pool list`).
#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub(super) output: RunsOutput,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The task's name.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
}

#[derive(Debug, Args)]
pub struct TaskRunArgs {
    /// The task's name.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// A value over the task's own (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// A secret value over the task's own (repeatable).
    #[arg(long = "set-secret", value_name = "NAME=VALUE")]
    set_secret: Vec<String>,
    /// A Docker build argument over the task's own (repeatable).
    #[arg(long = "arg", value_name = "K[=V]")]
    args: Vec<String>,
    /// A secret Docker build argument over the task's own (repeatable).
    #[arg(long = "secret-arg", value_name = "K[=V]")]
    secret_args: Vec<String>,
    /// Another context for this run (git URL, tarball URL or `/dev/null`).
    #[arg(short = 'c', long, value_name = "CONTEXT")]
    context: Option<String>,
    /// Another Dockerfile or task file in the context, of the task's own kind.
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<String>,
    /// Another build stage, for a Dockerfile build task.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Another platform for this run, `os/arch[/variant]`.
    #[arg(long, value_name = "PLATFORM", value_parser = Platform::from_flag)]
    platform: Option<Platform>,
    /// Another agent pool for this run.
    #[arg(long, value_name = "POOL")]
    agent_pool: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["name", "run_id"])))]
pub struct TaskLogsArgs {
    /// The task whose latest run to show.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: Option<String>,
    /// The run to show.
    #[arg(long, value_name = "RUN_ID")]
    run_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct TaskListRunsArgs {
    /// The task's name (all runs without it).
    #[arg(short = 'n', long, value_name = "NAME")]
    name: Option<String>,
    /// Only runs with this status (Queued, Started, Running, Succeeded, Failed, Canceled,
    /// Error, Timeout).
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    run_status: Option<RunStatus>,
    /// Only runs that pushed this image, `repository:tag`.
    #[arg(long, value_name = "REPO:TAG")]
    image: Option<String>,
    /// At most this many runs, newest first (default 15; 0 for all).
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: RunsOutput,
}

#[derive(Debug, Subcommand)]
enum TimerCommand {
    /// Add a timer to a task.
    Add(TimerAddArgs),
    /// Change a timer's schedule or state.
    Update(TimerUpdateArgs),
    /// Remove a timer.
    Remove(TimerRemoveArgs),
    /// List a task's timers: NAME, SCHEDULE, ENABLED, NEXT FIRE (UTC).
    List(TimerListArgs),
}

#[derive(Debug, Args)]
pub struct TimerAddArgs {
    /// The task.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// The timer's name, unique within the task.
    #[arg(long, value_name = "TIMER")]
    timer_name: String,
    /// 5-field cron, UTC: minute hour day-of-month month day-of-week.
    #[arg(long, value_name = "CRON")]
    schedule: String,
    /// Whether the timer fires (default true).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        value_parser = parse_bool)]
    enabled: Option<bool>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: ShowOutput,
}

#[derive(Debug, Args)]
pub struct TimerUpdateArgs {
    /// The task.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// The timer to change.
    #[arg(long, value_name = "TIMER")]
    timer_name: String,
    /// A new 5-field cron schedule, UTC.
    #[arg(long, value_name = "CRON")]
    schedule: Option<String>,
    /// Turn the timer on (true) or off (false).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        value_parser = parse_bool)]
    enabled: Option<bool>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: ShowOutput,
}

#[derive(Debug, Args)]
pub struct TimerRemoveArgs {
    /// The task.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// The timer to remove.
    #[arg(long, value_name = "TIMER")]
    timer_name: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: ShowOutput,
}

#[derive(Debug, Args)]
pub struct TimerListArgs {
    /// The task.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: ShowOutput,
}

#[derive(Debug, Subcommand)]
enum CredentialCommand {
    /// Add a registry login (replacing one for the same login server).
    Add(CredentialArgs),
    /// Change a registry login.
    Update(CredentialArgs),
    /// Remove a registry login.
    Remove(CredentialRemoveArgs),
    /// List the task's registry logins: LOGIN SERVER, USERNAME (passwords are never shown).
    List(TimerListArgs),
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The task.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// The registry, `host[:port]`.
    #[arg(long, value_name = "HOST[:PORT]")]
    login_server: String,
    /// The registry user.
    #[arg(short = 'u', long, value_name = "USER")]
    username: String,
    /// The password (prefer --password-stdin: arguments show in process lists).
    #[arg(
        short = 'p',
        long,
        value_name = "PASSWORD",
        conflicts_with = "password_stdin",
        required_unless_present = "password_stdin"
    )]
    password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct CredentialRemoveArgs {
    /// The task.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// The registry whose login goes, `host[:port]`.
    #[arg(long, value_name = "HOST[:PORT]")]
    login_server: String,
}

/// `true` or `false`, as az's three-state flags take them.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

fn parse_task_status(text: &str) -> Result<TaskStatus, String> {
    [TaskStatus::Enabled, TaskStatus::Disabled]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| "expected Enabled or Disabled".to_string())
}

/// `--docker-api`'s value: a mode, or `None` ("") for the agent's own setting. An alias, so clap
/// reads `Option<DockerApiChoice>` as an ordinary optional flag.
type DockerApiChoice = Option<DockerApiMode>;

fn parse_docker_api(text: &str) -> Result<DockerApiChoice, String> {
    (!text.is_empty()).then(|| text.parse()).transpose()
}

fn parse_base_image_type(text: &str) -> Result<BaseImageTriggerType, String> {
    match text.to_ascii_lowercase().as_str() {
        "runtime" => Ok(BaseImageTriggerType::Runtime),
        "all" => Ok(BaseImageTriggerType::All),
        _ => Err("expected Runtime or All".to_string()),
    }
}

/// Runs a `kiln task` command.
pub fn task(args: TaskArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    match args.command {
        TaskCommand::Create(args) => create(args, server),
        TaskCommand::Update(args) => update(args, server),
        TaskCommand::Show(args) => show(args, server),
        TaskCommand::List(args) => list(args, server),
        TaskCommand::Delete(args) => delete(args, server),
        TaskCommand::Run(args) => run(args, server),
        TaskCommand::Logs(args) => logs(args, server),
        TaskCommand::ListRuns(args) => list_runs(args, server),
        TaskCommand::ShowRun(args) => show_run(args, server),
        TaskCommand::CancelRun(args) => cancel_run(args, server),
        TaskCommand::Timer(command) => timer(command, server),
        TaskCommand::Credential(command) => credential(command, server),
    }
}

fn create(args: CreateArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let request = create_request(&args)?;
    let task = remote::connect(server)?.create_task(&request)?;
    print_task(&task, args.output)
}

/// The `POST /tasks` body `args` make; reads the local files the task keeps.
fn create_request(args: &CreateArgs) -> anyhow::Result<CreateTask> {
    check_name("task", &args.name)?;
    let context = check_context(&args.context)?;
    let timers = timer_specs(&args.schedules)?;
    let flags = &args.flags;
    let definition = TaskDefinition {
        context: args.context.clone(),
        step: new_step(flags, &context)?,
        values: set_values(&flags.set, &flags.set_secret)?,
        platform: flags.platform.clone().unwrap_or_else(|| Platform::parse(DEFAULT_PLATFORM)),
        agent_pool_name: flags.agent_pool.clone().filter(|p| !p.is_empty()),
        docker_api: flags.docker_api.flatten(),
        timeout_secs: flags.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
        status: flags.status.unwrap_or_default(),
        commit_trigger_enabled: flags.commit_trigger_enabled.unwrap_or(true),
        pull_request_trigger_enabled: flags.pull_request_trigger_enabled.unwrap_or(false),
        base_image_trigger_enabled: flags.base_image_trigger_enabled.unwrap_or(true),
        base_image_trigger_type: flags.base_image_trigger_type.unwrap_or_default(),
        git_access_token: flags.git_access_token.clone(),
        git_ssh_key: ssh_key(flags)?,
        credentials: Vec::new(),
    };
    Ok(CreateTask { name: args.name.clone(), definition, timers })
}

fn update(args: UpdateArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    if let Some(context) = &args.context {
        check_context(context)?;
    }
    let client = remote::connect(server)?;
    // A step is sent whole, and so are the source trigger's events: what the flags do not
    // change is taken from the stored one.
    let current = match args.flags.touches_step() || args.flags.names_one_source_event() {
        true => Some(client.get_task(&args.name)?.definition),
        false => None,
    };
    let update = update_request(&args, current.as_ref())?;
    let task = client.update_task(&args.name, &update)?;
    print_task(&task, args.output)
}

/// The `PATCH /tasks/{name}` body: only what `args` give. `current` is the stored definition
/// (redacted), needed when a flag shapes the step or names one source trigger event (the wire
/// lists the events that are on, so the other is the stored one, as `az` merges them).
fn update_request(
    args: &UpdateArgs,
    current: Option<&TaskDefinition>,
) -> anyhow::Result<UpdateTask> {
    let flags = &args.flags;
    let step = match current {
        Some(current) => {
            let context = args.context.as_deref().unwrap_or(&current.context);
            Some(updated_step(flags, &current.step, &SourceArg::classify(context)?)?)
        }
        None => None,
    };
    let given_events =
        flags.commit_trigger_enabled.is_some() || flags.pull_request_trigger_enabled.is_some();
    let stored =
        |event: fn(&TaskDefinition) -> bool| given_events.then(|| current.is_some_and(event));
    let update = UpdateTask {
        context: args.context.clone(),
        step,
        values: set_values(&flags.set, &flags.set_secret)?,
        platform: flags.platform.clone(),
        agent_pool_name: flags.agent_pool.clone(),
        docker_api: flags.docker_api,
        timeout_secs: flags.timeout,
        status: flags.status,
        commit_trigger_enabled: flags
            .commit_trigger_enabled
            .or(stored(|c| c.commit_trigger_enabled)),
        pull_request_trigger_enabled: flags
            .pull_request_trigger_enabled
            .or(stored(|c| c.pull_request_trigger_enabled)),
        base_image_trigger_enabled: flags.base_image_trigger_enabled,
        base_image_trigger_type: flags.base_image_trigger_type,
        git_access_token: flags.git_access_token.clone(),
        git_ssh_key: ssh_key(flags)?,
        ..Default::default()
    };
    if update == UpdateTask::default() {
        bail!("nothing to change: give a setting to update (see `kiln task update --help`)");
    }
    Ok(update)
}

/// The key `--ssh-key-file` names; `""` is an empty key, which removes the stored one.
fn ssh_key(flags: &DefinitionFlags) -> anyhow::Result<Option<String>> {
    match &flags.ssh_key_file {
        Some(file) if file.is_empty() => Ok(Some(String::new())),
        Some(file) => {
            let key =
                std::fs::read_to_string(file).with_context(|| format!("--ssh-key-file {file}"))?;
            if let Err(e) = GitSsh::check_private_key(&key) {
                bail!("--ssh-key-file {file}: {e}");
            }
            Ok(Some(key))
        }
        None => Ok(None),
    }
}

/// A task's context must be something the server can fetch on its own: it keeps no uploaded
/// directory for later runs.
fn check_context(context: &str) -> anyhow::Result<SourceArg> {
    kiln_server::task_run::classify(context)?;
    Ok(SourceArg::classify(context)?)
}

/// `--schedule [NAME:]CRON` arguments as timers, each checked here: an unnamed one is named
/// `t<position>` (`t1`, `t2`, …), as az names them.
fn timer_specs(schedules: &[String]) -> anyhow::Result<Vec<TimerSpec>> {
    let mut timers = Vec::with_capacity(schedules.len());
    for (i, arg) in schedules.iter().enumerate() {
        let (name, schedule) =
            parse_timer_arg(arg).map_err(|e| anyhow::anyhow!("--schedule: {e}"))?;
        let name = name.unwrap_or_else(|| format!("t{}", i + 1));
        check_name("timer", &name)?;
        timers.push(TimerSpec {
            name,
            schedule: schedule.to_string(),
            status: TaskStatus::Enabled,
        });
    }
    Ok(timers)
}

/// The step `-f`/`--cmd` and the flags beside them make, for a task on `context`.
fn new_step(flags: &DefinitionFlags, context: &SourceArg) -> anyhow::Result<TaskStep> {
    if let Some(cmd) = &flags.cmd {
        refuse_docker_flags(flags, "--cmd")?;
        let request = cmd_request(cmd, flags.timeout, Source::None);
        return Ok(TaskStep::EncodedTask {
            task: request.task,
            task_name: request.task_name,
            values_content: read_values(flags)?,
        });
    }
    let Some(file) = flags.file.as_deref() else {
        bail!("give -f FILE or --cmd COMMAND: what the task runs");
    };
    if !is_task_file(file)? {
        if flags.values.is_some() {
            bail!("--values is for task files; {file} is built as a Dockerfile");
        }
        return Ok(TaskStep::Docker {
            dockerfile: file.to_string(),
            images: flags.images.clone(),
            is_push_enabled: !flags.no_push.unwrap_or(false),
            build_args: flags.build_args(),
            target: flags.target.clone(),
        });
    }
    refuse_docker_flags(flags, file)?;
    Ok(match context {
        // No context to read it from when a run starts: the task keeps the local file.
        SourceArg::None => TaskStep::EncodedTask {
            task: std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the task file {file}"))?,
            task_name: file.to_string(),
            values_content: read_values(flags)?,
        },
        _ => TaskStep::FileTask { task_file: file.to_string(), values_file: flags.values.clone() },
    })
}

/// The step after `update`'s flags: a new `-f`/`--cmd` replaces the stored step (keeping the
/// stored Docker settings not given again); other flags change the stored step.
fn updated_step(
    flags: &DefinitionFlags,
    current: &TaskStep,
    context: &SourceArg,
) -> anyhow::Result<TaskStep> {
    let step = if flags.file.is_some() || flags.cmd.is_some() {
        let mut step = new_step(flags, context)?;
        match (&mut step, current) {
            (
                TaskStep::Docker { images, is_push_enabled, build_args, target, .. },
                TaskStep::Docker {
                    images: old_images,
                    is_push_enabled: old_push,
                    build_args: old_args,
                    target: old_target,
                    ..
                },
            ) => {
                if flags.images.is_empty() {
                    images.clone_from(old_images);
                }
                if flags.no_push.is_none() {
                    *is_push_enabled = *old_push;
                }
                if flags.target.is_none() {
                    target.clone_from(old_target);
                }
                *build_args = overlay(old_args, build_args);
            }
            (
                TaskStep::FileTask { values_file, .. },
                TaskStep::FileTask { values_file: old, .. },
            ) if flags.values.is_none() => values_file.clone_from(old),
            (
                TaskStep::EncodedTask { values_content, .. },
                TaskStep::EncodedTask { values_content: old, .. },
            ) if flags.values.is_none() => values_content.clone_from(old),
            _ => {}
        }
        step
    } else {
        match current.clone() {
            TaskStep::Docker { dockerfile, images, is_push_enabled, build_args, target } => {
                if flags.values.is_some() {
                    bail!("--values is for task files; this task builds {dockerfile}");
                }
                TaskStep::Docker {
                    dockerfile,
                    images: if flags.images.is_empty() { images } else { flags.images.clone() },
                    is_push_enabled: flags.no_push.map_or(is_push_enabled, |no| !no),
                    build_args: overlay(&build_args, &flags.build_args()),
                    target: flags.target.clone().or(target),
                }
            }
            TaskStep::FileTask { task_file, .. } => {
                refuse_docker_flags(flags, &task_file)?;
                TaskStep::FileTask { task_file, values_file: flags.values.clone() }
            }
            TaskStep::EncodedTask { task, task_name, .. } => {
                refuse_docker_flags(flags, &task_name)?;
                TaskStep::EncodedTask { task, task_name, values_content: read_values(flags)? }
            }
        }
    };
    // The server shows secret build args as `***`: sending one back would store `***`.
    if let TaskStep::Docker { build_args, .. } = &step
        && let Some(arg) =
            build_args.iter().find(|a| a.secret && a.value.as_deref() == Some(REDACTED))
    {
        bail!(
            "the task's secret build arg {0} cannot be read back to keep it: give it \
             again with --secret-arg {0}=VALUE",
            arg.name
        );
    }
    Ok(step)
}

fn refuse_docker_flags(flags: &DefinitionFlags, what: &str) -> anyhow::Result<()> {
    match flags.docker_flag() {
        Some(flag) => bail!("{flag} is for a Dockerfile build task, not {what}"),
        None => Ok(()),
    }
}

/// `--values FILE` read here, for a task that keeps its task file.
fn read_values(flags: &DefinitionFlags) -> anyhow::Result<Option<String>> {
    flags
        .values
        .as_deref()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the values file {path}"))
        })
        .transpose()
}

fn show(args: ShowArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let task = remote::connect(server)?.get_task(&args.name)?;
    print_task(&task, args.output)
}

fn print_task(task: &Task, output: ShowOutput) -> anyhow::Result<ExitCode> {
    print_record(task, output, task_table)
}

/// One record as `output`: JSON as it is, or its `table`.
pub(super) fn print_record<T: serde::Serialize>(
    record: &T,
    output: ShowOutput,
    table: impl Fn(&T) -> String,
) -> anyhow::Result<ExitCode> {
    match output {
        ShowOutput::Json => println!("{}", serde_json::to_string_pretty(record)?),
        ShowOutput::Table => print!("{}", table(record)),
    }
    Ok(ExitCode::SUCCESS)
}

fn list(args: ListArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let tasks = remote::connect(server)?.list_tasks()?;
    print_rows(&tasks, &LIST_HEADERS, list_row, args.output)
}

const LIST_HEADERS: [&str; 5] = ["NAME", "PLATFORM", "STATUS", "SOURCE REPOSITORY", "TRIGGERS"];

/// az's task table row: PLATFORM is the OS, TRIGGERS the enabled kinds.
fn list_row(task: &Task) -> [String; 5] {
    let def = &task.definition;
    [
        task.name.clone(),
        def.platform.os.clone(),
        def.status.as_str().to_string(),
        def.context.clone(),
        triggers(task),
    ]
}

/// §6.2: the sorted set of BASE_IMAGE, SOURCE, TIMER a task acts on.
fn triggers(task: &Task) -> String {
    let def = &task.definition;
    let kinds = [
        (def.base_image_trigger_enabled, "BASE_IMAGE"),
        (def.commit_trigger_enabled || def.pull_request_trigger_enabled, "SOURCE"),
        (task.timers.iter().any(|t| t.status.is_enabled()), "TIMER"),
    ];
    let on: Vec<&str> = kinds.into_iter().filter_map(|(on, kind)| on.then_some(kind)).collect();
    on.join(", ")
}

fn enabled(on: bool) -> &'static str {
    if on { "Enabled" } else { "Disabled" }
}

fn arguments(args: &[Argument]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|a| match &a.value {
            Some(v) => format!("{}={v}", a.name),
            None => a.name.clone(),
        })
        .collect();
    shown.join(", ")
}

/// `task show -o table`: the settings as `Key: value` lines, then the timers, base image
/// dependencies and recent history as tables. The webhook's secret is left to `-o json`.
fn task_table(task: &Task) -> String {
    let def = &task.definition;
    let mut lines: Vec<(&str, String)> = vec![
        ("Name", task.name.clone()),
        ("Status", def.status.as_str().to_string()),
        ("Platform", def.platform.to_string()),
        ("Timeout", format!("{}s", def.timeout_secs)),
        ("Context", def.context.clone()),
    ];
    match &def.step {
        TaskStep::Docker { dockerfile, images, is_push_enabled, build_args, target } => {
            lines.push(("Step", format!("Dockerfile build of {dockerfile}")));
            lines.push(("Images", images.join(", ")));
            lines.push(("Push", (*is_push_enabled && !images.is_empty()).to_string()));
            if let Some(target) = target {
                lines.push(("Target", target.clone()));
            }
            if !build_args.is_empty() {
                lines.push(("Build args", arguments(build_args)));
            }
        }
        TaskStep::FileTask { task_file, values_file } => {
            lines.push(("Step", format!("task file {task_file} in the context")));
            if let Some(values) = values_file {
                lines.push(("Values file", values.clone()));
            }
        }
        TaskStep::EncodedTask { task_name, values_content, .. } => {
            lines.push(("Step", format!("task file kept in the task ({task_name})")));
            if values_content.is_some() {
                lines.push(("Values file", "kept in the task".to_string()));
            }
        }
    }
    if !def.values.is_empty() {
        lines.push(("Values", arguments(&def.values)));
    }
    let base_image = match def.base_image_trigger_type {
        BaseImageTriggerType::Runtime => "Runtime",
        BaseImageTriggerType::All => "All",
    };
    lines.extend([
        ("Triggers", triggers(task)),
        ("Commit trigger", enabled(def.commit_trigger_enabled).to_string()),
        ("Pull request trigger", enabled(def.pull_request_trigger_enabled).to_string()),
        (
            "Base image trigger",
            match def.base_image_trigger_enabled {
                true => format!("Enabled ({base_image})"),
                false => "Disabled".to_string(),
            },
        ),
    ]);
    if def.git_access_token.is_some() {
        lines.push(("Git access token", "set".to_string()));
    }
    if def.git_ssh_key.is_some() {
        lines.push(("Git SSH key", "set".to_string()));
    }
    lines.extend([
        ("Webhook", task.webhook.url.clone()),
        ("Created", utc(task.creation_date)),
        ("Updated", utc(task.last_updated_time)),
    ]);
    let mut out = format_fields(&lines);

    out.push_str("\nTimers:\n");
    out.push_str(&timer_table(&task.timers));
    out.push_str("\nBase image dependencies:\n");
    let deps: Vec<[String; 3]> = task
        .base_image_dependencies
        .iter()
        .map(|d| {
            let image = format!("{}/{}:{}", d.registry, d.repository, d.tag);
            [d.kind.clone(), image, d.digest.clone()]
        })
        .collect();
    out.push_str(&format_table(&["TYPE", "IMAGE", "DIGEST"], &deps));
    out.push_str("\nHistory:\n");
    let history: Vec<[String; 3]> =
        task.history.iter().map(|e| [utc(e.time), e.kind.clone(), e.detail.clone()]).collect();
    out.push_str(&format_table(&["TIME", "EVENT", "DETAIL"], &history));
    out
}

fn timer_table(timers: &[Timer]) -> String {
    let rows: Vec<[String; 4]> = timers
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                t.schedule.clone(),
                t.status.is_enabled().to_string(),
                t.next_fire_time.map(utc).unwrap_or_default(),
            ]
        })
        .collect();
    format_table(&["NAME", "SCHEDULE", "ENABLED", "NEXT FIRE (UTC)"], &rows)
}

fn delete(args: DeleteArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    if delete_confirmed("task", &args.name, args.yes)? {
        remote::connect(server)?.delete_task(&args.name)?;
        eprintln!("Deleted task {}.", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

fn run(args: TaskRunArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let overrides = run_request(&args)?;
    let client = remote::connect(server)?;
    remote::queue(&client, || client.run_task(&args.name, &overrides), &args.name, args.wait)
}

/// The `POST /tasks/{name}/runs` body: the overrides `args` give.
fn run_request(args: &TaskRunArgs) -> anyhow::Result<TaskRunRequest> {
    if let Some(context) = &args.context {
        check_context(context)?;
    }
    let env = |name: &str| std::env::var(name).ok();
    let build_args = args
        .args
        .iter()
        .map(|a| build_arg(a, false, env))
        .chain(args.secret_args.iter().map(|a| build_arg(a, true, env)))
        .collect();
    Ok(TaskRunRequest {
        values: set_values(&args.set, &args.set_secret)?,
        build_args,
        context: args.context.clone(),
        file: args.file.clone(),
        target: args.target.clone(),
        platform: args.platform.clone(),
        agent_pool_name: args.agent_pool.clone(),
    })
}

fn logs(args: TaskLogsArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let client = remote::connect(server)?;
    let id = match (args.run_id, args.name) {
        (Some(id), _) => id,
        (None, Some(name)) => {
            let query = RunQuery { task: Some(name.clone()), top: Some(1), ..RunQuery::default() };
            match client.list_runs(&query)?.into_iter().next() {
                Some(run) => run.run_id,
                None => {
                    // An unknown task says so; a known one has simply not run yet.
                    client.get_task(&name)?;
                    return Err(Refusal(format!(
                        "task {name} has no runs yet (start one with `kiln task run -n {name}`)"
                    ))
                    .into());
                }
            }
        }
        (None, None) => bail!("give -n TASK or --run-id RUN_ID"),
    };
    print_log(&client, &id, true)
}

fn list_runs(args: TaskListRunsArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let query = RunQuery {
        status: args.run_status,
        image: args.image,
        task: args.name,
        top: args.top,
        ..RunQuery::default()
    };
    print_runs(&remote::connect(server)?, &query, args.output)
}

fn timer(command: TimerCommand, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let (timers, output) = match command {
        TimerCommand::Add(args) => {
            check_name("timer", &args.timer_name)?;
            let schedule = check_schedule(&args.schedule)?;
            let spec = TimerSpec {
                name: args.timer_name,
                schedule,
                status: args.enabled.unwrap_or(true).into(),
            };
            (remote::connect(server)?.add_timer(&args.name, &spec)?, args.output)
        }
        TimerCommand::Update(args) => {
            let schedule = args.schedule.as_deref().map(check_schedule).transpose()?;
            let update = UpdateTimer { schedule, status: args.enabled.map(TaskStatus::from) };
            if update == UpdateTimer::default() {
                bail!("nothing to change: give --schedule or --enabled");
            }
            let client = remote::connect(server)?;
            (client.update_timer(&args.name, &args.timer_name, &update)?, args.output)
        }
        TimerCommand::Remove(args) => {
            (remote::connect(server)?.remove_timer(&args.name, &args.timer_name)?, args.output)
        }
        TimerCommand::List(args) => {
            (remote::connect(server)?.list_timers(&args.name)?, args.output)
        }
    };
    match output {
        ShowOutput::Json => println!("{}", serde_json::to_string_pretty(&timers)?),
        ShowOutput::Table => print!("{}", timer_table(&timers)),
    }
    Ok(ExitCode::SUCCESS)
}

fn credential(command: CredentialCommand, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let (name, update) = match command {
        CredentialCommand::Add(args) | CredentialCommand::Update(args) => {
            let password = match args.password {
                Some(password) => password,
                None => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                    text.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                bail!("the password is empty");
            }
            let login = RegistryLogin {
                login_server: args.login_server,
                username: args.username,
                password,
            };
            (args.name, UpdateTask { credentials: vec![login], ..Default::default() })
        }
        CredentialCommand::Remove(args) => {
            let update =
                UpdateTask { remove_credentials: vec![args.login_server], ..Default::default() };
            (args.name, update)
        }
        CredentialCommand::List(args) => {
            let task = remote::connect(server)?.get_task(&args.name)?;
            return print_credentials(&task, args.output);
        }
    };
    let task = remote::connect(server)?.update_task(&name, &update)?;
    print_credentials(&task, ShowOutput::Table)
}

fn print_credentials(task: &Task, output: ShowOutput) -> anyhow::Result<ExitCode> {
    let logins = &task.definition.credentials;
    match output {
        ShowOutput::Json => println!("{}", serde_json::to_string_pretty(logins)?),
        ShowOutput::Table => {
            let rows: Vec<[String; 2]> =
                logins.iter().map(|c| [c.login_server.clone(), c.username.clone()]).collect();
            print!("{}", format_table(&["LOGIN SERVER", "USERNAME"], &rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A `--schedule CRON` checked here, in the form the server stores.
fn check_schedule(text: &str) -> anyhow::Result<String> {
    Ok(Schedule::parse(text).map_err(|e| anyhow::anyhow!("--schedule: {e}"))?.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    const GIT: &str = "https://git.example/org/app.git#main";

    /// `line` split as a shell would (`'…'` quotes; `$GIT` is [`GIT`]).
    fn words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    word.get_or_insert_with(String::new);
                }
                ' ' if !quoted => words.extend(word.take()),
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        words.extend(word);
        words.into_iter().map(|w| w.replace("$GIT", GIT)).collect()
    }

    fn parse(line: &str) -> Result<TaskCommand, clap::Error> {
        let cli = Cli::try_parse_from([words("kiln task"), words(line)].concat())?;
        match cli.command {
            Command::Task(args) => Ok(args.command),
            other => panic!("{other:?}"),
        }
    }

    fn create_args(line: &str) -> CreateArgs {
        match parse(&format!("create {line}")).expect("parses") {
            TaskCommand::Create(args) => args,
            other => panic!("{other:?}"),
        }
    }

    fn create(line: &str) -> anyhow::Result<CreateTask> {
        create_request(&create_args(line))
    }

    fn update(line: &str, current: Option<&TaskDefinition>) -> anyhow::Result<UpdateTask> {
        match parse(&format!("update -n a {line}")).expect("parses") {
            TaskCommand::Update(args) => update_request(&args, current),
            other => panic!("{other:?}"),
        }
    }

    fn arg(name: &str, value: &str, secret: bool) -> Argument {
        Argument { name: name.into(), value: Some(value.into()), secret }
    }

    #[test]
    fn ssh_key_file_is_read_and_checked_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        std::fs::write(
            &key,
            "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let req =
            create(&format!("-n a -c git@h:o/r.git --cmd x --ssh-key-file {}", key.display()));
        assert!(req.unwrap().definition.git_ssh_key.unwrap().contains("abc"));
        let public = dir.path().join("id.pub");
        std::fs::write(&public, "ssh-ed25519 AAAA kiln\n").unwrap();
        let err =
            create(&format!("-n a -c git@h:o/r.git --cmd x --ssh-key-file {}", public.display()))
                .unwrap_err();
        assert!(err.to_string().ends_with("not an OpenSSH private key"), "{err}");
    }

    #[test]
    fn task_files_go_by_extension_others_are_dockerfiles() {
        let err = create("-n a -c $GIT -f build.sh").unwrap_err().to_string();
        assert!(err.contains("runs only YAML"), "{err}");
        assert_eq!(
            create("-n a -c $GIT -f ci/acb.yaml").unwrap().definition.step,
            TaskStep::FileTask { task_file: "ci/acb.yaml".into(), values_file: None }
        );
        let req = create(
            "-n a -c $GIT -f app/Dockerfile -t app:{{.Run.ID}} -t app:latest --arg A=1 \
             --secret-arg PW=s3 --target prod",
        );
        assert_eq!(
            req.unwrap().definition.step,
            TaskStep::Docker {
                dockerfile: "app/Dockerfile".into(),
                images: vec!["app:{{.Run.ID}}".into(), "app:latest".into()],
                is_push_enabled: true,
                build_args: vec![arg("A", "1", false), arg("PW", "s3", true)],
                target: Some("prod".into()),
            }
        );
        // Docker-only flags beside a task file are a mistake, said before any request.
        let err = create("-n a -c $GIT -f x.yaml -t i").unwrap_err().to_string();
        assert!(err.contains("-t/--image is for a Dockerfile build task"), "{err}");
    }

    #[test]
    fn values_are_a_context_path_for_a_file_task() {
        assert_eq!(
            create("-n a -c $GIT -f acb.yaml --values ci/values.yaml").unwrap().definition.step,
            TaskStep::FileTask {
                task_file: "acb.yaml".into(),
                values_file: Some("ci/values.yaml".into())
            }
        );
        let err = create("-n a -c $GIT -f Dockerfile --values v.yaml").unwrap_err();
        assert!(err.to_string().contains("--values is for task files"), "{err}");
    }

    #[test]
    fn a_local_task_file_with_no_context_is_kept_in_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acb.yaml");
        let values = dir.path().join("values.yaml");
        std::fs::write(&file, "steps:\n  - cmd: busybox echo {{.Values.x}}\n").unwrap();
        std::fs::write(&values, "x: 1\n").unwrap();
        let (file, values) = (file.to_str().unwrap(), values.to_str().unwrap());
        assert_eq!(
            create(&format!("-n a -c /dev/null -f {file} --values {values}"))
                .unwrap()
                .definition
                .step,
            TaskStep::EncodedTask {
                task: "steps:\n  - cmd: busybox echo {{.Values.x}}\n".into(),
                task_name: file.into(),
                values_content: Some("x: 1\n".into()),
            }
        );
        let missing = dir.path().join("missing.yaml");
        let err = create(&format!("-n a -c /dev/null -f {}", missing.display())).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read the task file"), "{err:#}");
    }

    #[test]
    fn cmd_keeps_acrs_template_and_defaults_match_az() {
        let req = create("-n hello -c /dev/null --cmd 'busybox echo hi'").unwrap();
        let expected = cmd_request("busybox echo hi", None, Source::None);
        assert_eq!(
            req.definition.step,
            TaskStep::EncodedTask {
                task: expected.task,
                task_name: "--cmd".into(),
                values_content: None
            }
        );
        let def = &req.definition;
        assert_eq!((def.platform.to_string().as_str(), def.timeout_secs), ("linux/amd64", 3600));
        assert_eq!(def.status, TaskStatus::Enabled);
        assert!(def.commit_trigger_enabled && !def.pull_request_trigger_enabled);
        assert!(def.base_image_trigger_enabled);
        assert_eq!(def.base_image_trigger_type, BaseImageTriggerType::Runtime);
        // A timeout bounds the step too, as with `az acr run --cmd`.
        match create("-n h -c /dev/null --cmd 'busybox true' --timeout 600")
            .unwrap()
            .definition
            .step
        {
            TaskStep::EncodedTask { task, .. } => assert!(task.contains("timeout: 600"), "{task}"),
            other => panic!("{other:?}"),
        }
        // A local directory is no task context.
        let err = create("-n h -c . --cmd 'busybox true'").unwrap_err().to_string();
        assert!(err.contains("not a local directory"), "{err}");
        let err = create("-n 'a b' -c /dev/null --cmd x").unwrap_err().to_string();
        assert!(err.contains("task name"), "{err}");
        // -f or --cmd, not both, not neither.
        assert!(parse("create -n a -c $GIT").is_err());
        assert!(parse("create -n a -c $GIT -f a.yaml --cmd x").is_err());
    }

    #[test]
    fn unnamed_schedules_are_named_by_position() {
        let timers = timer_specs(&words("'0 * * * *' 'nightly:0  2 * * *' '*/5 * * * Mon-Fri'"));
        let timers: Vec<_> = timers
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.schedule, t.status.is_enabled()))
            .collect();
        let expected = [("t1", "0 * * * *"), ("nightly", "0 2 * * *"), ("t3", "*/5 * * * Mon-Fri")]
            .map(|(n, s)| (n.to_string(), s.to_string(), true));
        assert_eq!(timers, expected);
        let req = create(
            "-n a -c /dev/null --cmd 'busybox true' --schedule '0 1 * * *' \
             --schedule '30 1 * * *'",
        );
        let names: Vec<_> = req.unwrap().timers.into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["t1", "t2"]);
    }

    #[test]
    fn bad_schedules_fail_here_naming_the_problem() {
        let err = timer_specs(&words("'* * * * * *'")).unwrap_err().to_string();
        assert!(err.contains("has 6 fields") && err.contains("exactly 5"), "{err}");
        let err = timer_specs(&words("'0 24 * * *'")).unwrap_err().to_string();
        assert!(err.contains("field 2 (hour)"), "{err}");
        let err = timer_specs(&words("'bad name:0 1 * * *'")).unwrap_err().to_string();
        assert!(err.contains("timer name"), "{err}");
        let err = check_schedule("* * * * 7").unwrap_err().to_string();
        assert!(err.contains("day of week"), "{err}");
        let err = create("-n a -c /dev/null --cmd x --schedule '* * *'").unwrap_err();
        assert!(err.to_string().contains("has 3 fields"), "{err}");
    }

    #[test]
    fn booleans_take_true_or_false_like_az() {
        let def = create(
            "-n a -c $GIT --cmd x --commit-trigger-enabled false \
             --pull-request-trigger-enabled TRUE --base-image-trigger-enabled false \
             --base-image-trigger-type all --status disabled",
        )
        .unwrap()
        .definition;
        assert!(!def.commit_trigger_enabled && def.pull_request_trigger_enabled);
        assert!(!def.base_image_trigger_enabled);
        assert_eq!(def.base_image_trigger_type, BaseImageTriggerType::All);
        assert_eq!(def.status, TaskStatus::Disabled);
        // A flag alone is true, as az's three-state flags.
        let step = create("-n a -c $GIT -f D --no-push -t i").unwrap().definition.step;
        assert!(matches!(step, TaskStep::Docker { is_push_enabled: false, .. }), "{step:?}");
        let err = parse("create -n a -c $GIT --cmd x --commit-trigger-enabled yes").unwrap_err();
        assert!(err.to_string().contains("expected true or false"), "{err}");
        assert_eq!(parse_bool("False"), Ok(false));
    }

    fn stored(step: TaskStep) -> TaskDefinition {
        TaskDefinition {
            context: GIT.into(),
            step,
            values: vec![],
            platform: Platform::parse("linux/amd64"),
            agent_pool_name: None,
            docker_api: None,
            timeout_secs: 3600,
            status: TaskStatus::Enabled,
            commit_trigger_enabled: true,
            pull_request_trigger_enabled: false,
            base_image_trigger_enabled: true,
            base_image_trigger_type: BaseImageTriggerType::Runtime,
            git_access_token: None,
            git_ssh_key: None,
            credentials: Vec::new(),
        }
    }

    #[test]
    fn update_sends_only_what_is_given() {
        assert_eq!(
            update("--status Disabled --set x=1", None).unwrap(),
            UpdateTask {
                status: Some(TaskStatus::Disabled),
                values: vec![arg("x", "1", false)],
                ..UpdateTask::default()
            }
        );
        let err = update("", None).unwrap_err();
        assert!(err.to_string().contains("nothing to change"), "{err}");
        // One source trigger event given: the other is sent as stored.
        let current =
            stored(TaskStep::FileTask { task_file: "acb.yaml".into(), values_file: None });
        let events = update("--pull-request-trigger-enabled true", Some(&current)).unwrap();
        assert_eq!(
            (events.commit_trigger_enabled, events.pull_request_trigger_enabled),
            (Some(true), Some(true))
        );
        match parse("update -n a --commit-trigger-enabled false").unwrap() {
            TaskCommand::Update(args) => assert!(args.flags.names_one_source_event()),
            other => panic!("{other:?}"),
        }
        match parse("update -n a --status Disabled").unwrap() {
            TaskCommand::Update(args) => assert!(!args.flags.touches_step()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_changes_the_stored_step_and_never_sends_back_a_redacted_secret() {
        let docker = stored(TaskStep::Docker {
            dockerfile: "Dockerfile".into(),
            images: vec!["app:v1".into()],
            is_push_enabled: true,
            build_args: vec![arg("A", "1", false)],
            target: None,
        });
        assert_eq!(
            update("-t app:v2 --arg A=2", Some(&docker)).unwrap().step,
            Some(TaskStep::Docker {
                dockerfile: "Dockerfile".into(),
                images: vec!["app:v2".into()],
                is_push_enabled: true,
                build_args: vec![arg("A", "2", false)],
                target: None,
            })
        );
        // A new Dockerfile keeps the stored images.
        match update("-f other/Dockerfile", Some(&docker)).unwrap().step {
            Some(TaskStep::Docker { dockerfile, images, .. }) => {
                assert_eq!(dockerfile, "other/Dockerfile");
                assert_eq!(images, ["app:v1"]);
            }
            other => panic!("{other:?}"),
        }
        let mut with_secret = docker.clone();
        if let TaskStep::Docker { build_args, .. } = &mut with_secret.step {
            build_args.push(arg("PW", REDACTED, true));
        }
        let err = update("-t x", Some(&with_secret)).unwrap_err().to_string();
        assert!(err.contains("--secret-arg PW=VALUE"), "{err}");
        assert!(update("-t x --secret-arg PW=new", Some(&with_secret)).is_ok());
        // Docker flags on a file task are refused; --values changes its values file.
        let file = stored(TaskStep::FileTask { task_file: "acb.yaml".into(), values_file: None });
        let err = update("--target x", Some(&file)).unwrap_err().to_string();
        assert!(err.contains("--target is for a Dockerfile build"), "{err}");
        assert_eq!(
            update("--values v.yaml", Some(&file)).unwrap().step,
            Some(TaskStep::FileTask {
                task_file: "acb.yaml".into(),
                values_file: Some("v.yaml".into())
            })
        );
    }

    fn task(name: &str, timers: Vec<Timer>, commit: bool) -> Task {
        let step = TaskStep::FileTask { task_file: "acb.yaml".into(), values_file: None };
        let mut definition = stored(step);
        definition.commit_trigger_enabled = commit;
        definition.values = vec![arg("pw", REDACTED, true)];
        let at = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap().to_utc();
        Task {
            name: name.into(),
            definition,
            timers,
            webhook: kiln_api::task::Webhook {
                url: "http://k/webhooks/a".into(),
                secret: "whsec".into(),
            },
            base_image_dependencies: vec![],
            history: vec![],
            creation_date: at,
            last_updated_time: at,
        }
    }

    fn timer(enabled: bool) -> Timer {
        let next = chrono::DateTime::parse_from_rfc3339("2024-05-02T01:00:00Z").unwrap().to_utc();
        Timer {
            name: "t1".into(),
            schedule: "0 1 * * *".into(),
            status: enabled.into(),
            next_fire_time: enabled.then_some(next),
        }
    }

    #[test]
    fn list_rows_have_azs_columns_and_sorted_triggers() {
        let rows = [
            list_row(&task("a", vec![timer(true)], true)),
            list_row(&task("b", vec![timer(false)], false)),
        ];
        assert_eq!(
            format_table(&LIST_HEADERS, &rows),
            format!(
                "NAME  PLATFORM  STATUS   SOURCE REPOSITORY{pad}  TRIGGERS\n\
                 ----  --------  -------  {rule}  -------------------------\n\
                 a     linux     Enabled  {GIT}  BASE_IMAGE, SOURCE, TIMER\n\
                 b     linux     Enabled  {GIT}  BASE_IMAGE\n",
                pad = " ".repeat(GIT.len() - "SOURCE REPOSITORY".len()),
                rule = "-".repeat(GIT.len()),
            )
        );
    }

    #[test]
    fn show_table_has_the_webhook_url_but_not_its_secret() {
        let table = task_table(&task("a", vec![timer(true)], true));
        assert!(table.contains("Webhook:               http://k/webhooks/a\n"), "{table}");
        assert!(!table.contains("whsec"), "{table}");
        assert!(table.contains("Values:                pw=***\n"), "{table}");
        assert!(table.contains("t1    0 1 * * *  true     2024-05-02T01:00:00Z\n"), "{table}");
        assert!(table.contains("Triggers:              BASE_IMAGE, SOURCE, TIMER\n"), "{table}");
    }

    #[test]
    fn task_run_overrides_map_to_the_request() {
        let line = "run -n a --set x=1 --set-secret pw=s --arg A=1 --secret-arg B=2 -c $GIT \
                    --no-wait";
        let args = match parse(line).unwrap() {
            TaskCommand::Run(args) => args,
            other => panic!("{other:?}"),
        };
        let req = run_request(&args).unwrap();
        assert_eq!(req.values, [arg("x", "1", false), arg("pw", "s", true)]);
        assert_eq!(req.build_args, [arg("A", "1", false), arg("B", "2", true)]);
        assert_eq!(req.context.as_deref(), Some(GIT));
    }

    #[test]
    fn logs_take_a_task_or_a_run() {
        assert!(parse("logs").is_err());
        assert!(matches!(parse("logs -n a").unwrap(), TaskCommand::Logs(_)));
        assert!(matches!(parse("logs --run-id ka1").unwrap(), TaskCommand::Logs(_)));
    }

    #[test]
    fn run_commands_live_under_task_as_in_az() {
        assert!(matches!(parse("show-run --run-id ka1").unwrap(), TaskCommand::ShowRun(_)));
        assert!(matches!(parse("cancel-run --run-id ka1").unwrap(), TaskCommand::CancelRun(_)));
        assert!(matches!(parse("list-runs").unwrap(), TaskCommand::ListRuns(_)));
        assert!(parse("show-run").is_err());
        assert!(parse("cancel-run ka1 --run-id ka2").is_err());
    }
}
