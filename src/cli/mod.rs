//! The `kiln` command line: argument parsing and dispatch. Commands live in their own modules
//! and call the library; nothing here knows a task file's rules.

mod agent;
mod agent_run;
mod build;
mod confirm;
mod exec;
mod exit;
mod login;
mod logs;
mod remote;
mod run;
mod runs;
mod serve;
mod task;
mod task_file;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "kiln", version, about = "A self-hosted build-task engine for ACR task files")]
pub struct Cli {
    /// kiln's configuration file (image aliases, run-ID prefix, default registry).
    #[arg(long, global = true, env = "KILN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    server: remote::ServerOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a task file: errors and warnings as file:line:col, exit status 1 on errors.
    Validate(task_file::ValidateArgs),
    /// Show a task file as one run would see it: the rendered text and the step graph.
    Render(task_file::RenderArgs),
    /// Run a task file on the local Docker engine, without a server (like ACR's `acb exec`).
    Exec(exec::ExecArgs),
    /// Run the kiln server: the HTTP API and the embedded workers.
    Serve(serve::ServeArgs),
    /// Build (and push) an image on the server, like `az acr build`.
    Build(build::BuildArgs),
    /// Run a task file or a command once on the server, like `az acr run`.
    Run(run::RunArgs),
    /// Print a run's log; --follow streams it until the run ends.
    Logs(logs::LogsArgs),
    /// Show one run's record.
    ShowRun(runs::ShowRunArgs),
    /// List runs, newest first.
    ListRuns(runs::ListRunsArgs),
    /// Cancel a queued or running run.
    CancelRun(runs::CancelRunArgs),
    /// Queue a run's request again (same source, commit, values and overrides) as a new run
    /// linked to it; prints the new run's ID.
    Rerun(runs::RerunArgs),
    /// Check an API token (asked for without echo, or read from stdin) against the server and
    /// save it.
    Login(login::LoginArgs),
    /// Remove the saved API token.
    Logout(login::LogoutArgs),
    /// Show the API token's name and role, and the server.
    Whoami(login::WhoamiArgs),
    /// Tasks kept on the server and what triggers them, like `az acr task`: create, update,
    /// show, list, delete, run, logs, list-runs, show-run, cancel-run, timer, credential.
    Task(task::TaskArgs),
    /// Agents: `agent run` executes runs leased from a server on this machine's engine; an
    /// admin registers and manages agents with create (prints the token once), list, show,
    /// update, delete.
    Agent(agent::AgentArgs),
    /// Agent pools: list.
    AgentPool(agent::AgentPoolArgs),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// Runs the CLI; the exit code is the command's verdict ([`exit`]).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => task_file::validate(args, cli.config.as_deref()),
        Command::Render(args) => task_file::render(args, cli.config.as_deref()),
        Command::Exec(args) => exec::exec(args, cli.config.as_deref()),
        Command::Serve(args) => serve::serve(args, cli.config.as_deref()),
        Command::Build(args) => build::build(args, &cli.server),
        Command::Run(args) => run::run(args, &cli.server),
        Command::Logs(args) => logs::logs(args, &cli.server),
        Command::ShowRun(args) => runs::show_run(args, &cli.server),
        Command::ListRuns(args) => runs::list_runs(args, &cli.server),
        Command::CancelRun(args) => runs::cancel_run(args, &cli.server),
        Command::Rerun(args) => runs::rerun(args, &cli.server),
        Command::Login(args) => login::login(args, &cli.server),
        Command::Logout(args) => login::logout(args, &cli.server),
        Command::Whoami(args) => login::whoami(args, &cli.server),
        Command::Task(args) => task::task(args, &cli.server),
        Command::Agent(args) => agent::agent(args, &cli.server),
        Command::AgentPool(args) => agent::agent_pool(args, &cli.server),
    };
    result.unwrap_or_else(|e| exit::report(&e))
}
