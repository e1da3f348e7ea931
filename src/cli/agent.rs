//! `kiln agent …` and `kiln agent-pool list`: the agent registry (issue 12), after `az acr
//! agentpool`. An admin registers an agent with `agent create`, which prints the agent and then
//! its token alone on the last line (the only time it is shown), and manages agents with
//! `list`, `show`, `update` and `delete`. Names, pools and labels are checked here before any
//! request (exit status 2); the server's refusals (a taken name, an unknown agent, a user
//! token) are one line and exit status 1.
//!
//! [`AgentCommand`] is every `kiln agent` subcommand; the agent process itself (`kiln agent
//! run`, [`agent_run`]) is one of them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use kiln_api::agents::{Agent, AgentKind, AgentPool, CreateAgent, UpdateAgent};

use super::agent_run::{self, AgentRunArgs};
use super::confirm::delete_confirmed;
use super::remote::{self, ServerOptions};
use super::runs::{format_fields, print_rows, utc};
use super::task::{ListArgs, ShowOutput, print_record};
use kiln_server::agent_def::{self, AgentDefError};

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Register an agent; prints it, then its token alone on the last line (shown only now).
    Create(SettingsArgs),
    /// List agents: NAME, POOL, LABELS, PLATFORMS, CAPACITY, RUNS IN HAND, VERSION, LAST SEEN.
    List(ListArgs),
    /// Show one agent.
    Show(ShowArgs),
    /// Change an agent's pool or labels.
    Update(SettingsArgs),
    /// Delete an agent: its token stops working and the runs it holds end as Error.
    Delete(DeleteArgs),
    /// Lease runs from a server and execute them on this machine's Docker engine.
    Run(AgentRunArgs),
}

#[derive(Debug, Args)]
pub struct AgentPoolArgs {
    #[command(subcommand)]
    command: AgentPoolCommand,
}

#[derive(Debug, Subcommand)]
enum AgentPoolCommand {
    /// List the pools agents name or queued runs ask for: NAME, AGENTS, QUEUED RUNS.
    List(ListArgs),
}

/// `--labels k=v,…`.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, AgentDefError> {
    agent_def::parse_labels(text)
}

/// What `create` registers and `update` changes.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// The agent's name: 1-50 letters, digits, '-' or '_'.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// The pool whose runs it takes (without one: runs that name no pool); `update --pool ""`
    /// takes it out of its pool.
    #[arg(long, value_name = "POOL")]
    pool: Option<String>,
    /// Labels, `key=value,key=value`; `update` replaces them all (`--labels ""` removes them).
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels)]
    labels: Option<BTreeMap<String, String>>,
    #[arg(short = 'o', long, value_enum, default_value = "json")]
    output: ShowOutput,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The agent's name.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    #[arg(short = 'o', long, value_enum, default_value = "json")]
    output: ShowOutput,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The agent's name.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: String,
    /// Do not ask for confirmation (needed when standard input is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
}

/// Runs a `kiln agent` command.
pub fn agent(args: AgentArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    match args.command {
        AgentCommand::Create(args) => create(args, server),
        AgentCommand::List(args) => list(args, server),
        AgentCommand::Show(args) => show(args, server),
        AgentCommand::Update(args) => update(args, server),
        AgentCommand::Delete(args) => delete(args, server),
        AgentCommand::Run(args) => agent_run::run(args, server),
    }
}

/// Runs a `kiln agent-pool` command.
pub fn agent_pool(args: AgentPoolArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    match args.command {
        AgentPoolCommand::List(args) => list_pools(args, server),
    }
}

fn create(args: SettingsArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    agent_def::check_name(&args.name)?;
    args.pool.as_deref().map(agent_def::check_pool).transpose()?;
    let request =
        CreateAgent { name: args.name, pool: args.pool, labels: args.labels.unwrap_or_default() };
    let created = remote::connect(server)?.create_agent(&request)?;
    print_agent(&created.agent, args.output)?;
    eprintln!(
        "The agent's token follows; it is shown only now. Give it to `kiln agent run --token-file`:"
    );
    println!("{}", created.token);
    Ok(ExitCode::SUCCESS)
}

fn list(args: ListArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let agents = remote::connect(server)?.list_agents()?;
    print_rows(&agents, &LIST_HEADERS, list_row, args.output)
}

fn show(args: ShowArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let agent = remote::connect(server)?.get_agent(&args.name)?;
    print_agent(&agent, args.output)
}

fn update(args: SettingsArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    if args.pool.is_none() && args.labels.is_none() {
        bail!("nothing to change: give --pool or --labels");
    }
    if let Some(pool) = args.pool.as_deref().filter(|p| !p.is_empty()) {
        agent_def::check_pool(pool)?;
    }
    let update = UpdateAgent { pool: args.pool, labels: args.labels };
    let agent = remote::connect(server)?.update_agent(&args.name, &update)?;
    print_agent(&agent, args.output)
}

fn delete(args: DeleteArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    if delete_confirmed("agent", &args.name, args.yes)? {
        remote::connect(server)?.delete_agent(&args.name)?;
        eprintln!("Deleted agent {}.", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

fn list_pools(args: ListArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let pools = remote::connect(server)?.list_agent_pools()?;
    print_rows(&pools, &["NAME", "AGENTS", "QUEUED RUNS"], pool_row, args.output)
}

fn print_agent(agent: &Agent, output: ShowOutput) -> anyhow::Result<ExitCode> {
    print_record(agent, output, agent_table)
}

const LIST_HEADERS: [&str; 9] = [
    "NAME",
    "KIND",
    "POOL",
    "LABELS",
    "PLATFORMS",
    "CAPACITY",
    "RUNS IN HAND",
    "VERSION",
    "LAST SEEN",
];

/// An agent's columns; KIND says `embedded` for a server's own agent, `remote` for the rest.
fn list_row(agent: &Agent) -> [String; 9] {
    [
        agent.name.clone(),
        match agent.kind {
            AgentKind::Remote => "remote",
            AgentKind::Embedded => "embedded",
        }
        .to_string(),
        agent.pool.clone().unwrap_or_default(),
        labels(agent),
        platforms(agent),
        agent.capacity.map(|c| c.to_string()).unwrap_or_default(),
        agent.runs_in_hand.to_string(),
        agent.version.clone().unwrap_or_default(),
        agent.last_seen.map(utc).unwrap_or_default(),
    ]
}

fn pool_row(pool: &AgentPool) -> [String; 3] {
    [pool.name.clone(), pool.agent_count.to_string(), pool.queued_run_count.to_string()]
}

fn labels(agent: &Agent) -> String {
    let pairs: Vec<String> = agent.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

fn platforms(agent: &Agent) -> String {
    let names: Vec<String> = agent.platforms.iter().map(ToString::to_string).collect();
    names.join(",")
}

/// `agent show -o table`: the record as `Key: value` lines; what it has not reported is blank.
fn agent_table(agent: &Agent) -> String {
    let [name, kind, pool, labels, platforms, capacity, in_hand, version, last_seen] =
        list_row(agent);
    format_fields(&[
        ("Name", name),
        ("Kind", kind),
        ("Server", agent.server.clone().unwrap_or_default()),
        ("Pool", pool),
        ("Labels", labels),
        ("Platforms", platforms),
        ("Capacity", capacity),
        ("Runs in hand", in_hand),
        ("Version", version),
        ("Last seen", last_seen),
        ("Created", utc(agent.creation_date)),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::runs::{format_table, format_tsv};
    use super::*;
    use chrono::{TimeZone as _, Utc};
    use clap::Parser as _;
    use kiln_api::Platform;

    #[derive(Debug, clap::Parser)]
    struct Line {
        #[command(subcommand)]
        command: AgentCommand,
    }

    /// A server nobody listens on: the checks must fail before anything is sent.
    fn unreachable() -> ServerOptions {
        #[derive(Debug, clap::Parser)]
        struct Options {
            #[command(flatten)]
            server: ServerOptions,
        }
        Options::parse_from(["kiln", "--server", "http://127.0.0.1:9"]).server
    }

    fn parse(line: &str) -> Result<AgentCommand, clap::Error> {
        Line::try_parse_from(std::iter::once("agent").chain(line.split(' '))).map(|l| l.command)
    }

    fn agent() -> Agent {
        Agent {
            name: "arm-1".into(),
            kind: AgentKind::Remote,
            server: None,
            pool: Some("arm".into()),
            labels: [("disk".into(), "ssd".into()), ("zone".into(), "b".into())].into(),
            platforms: vec![Platform::parse("linux/arm64"), Platform::parse("linux/arm/v7")],
            capacity: Some(2),
            runs_in_hand: 1,
            version: Some("0.1.0".into()),
            last_seen: Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()),
            creation_date: Utc.with_ymd_and_hms(2024, 4, 1, 9, 0, 0).unwrap(),
        }
    }

    #[test]
    fn list_rows_have_every_column_and_a_fresh_agent_has_blanks() {
        assert_eq!(
            format_table(&LIST_HEADERS, &[list_row(&agent())]),
            "NAME   KIND    POOL  LABELS           PLATFORMS                 CAPACITY  \
             RUNS IN HAND  VERSION  LAST SEEN\n\
             -----  ------  ----  ---------------  ------------------------  --------  \
             ------------  -------  --------------------\n\
             arm-1  remote  arm   disk=ssd,zone=b  linux/arm64,linux/arm/v7  2         \
             1             0.1.0    2024-05-01T10:00:00Z\n"
        );
        let fresh = Agent {
            pool: None,
            labels: BTreeMap::new(),
            platforms: vec![],
            capacity: None,
            runs_in_hand: 0,
            version: None,
            last_seen: None,
            ..agent()
        };
        assert_eq!(format_tsv(&[list_row(&fresh)]), "arm-1\tremote\t\t\t\t\t0\t\t\n");
        assert!(
            agent_table(&fresh)
                .starts_with("Name:          arm-1\nKind:          remote\nServer:\nPool:\n")
        );
        let embedded =
            Agent { kind: AgentKind::Embedded, server: Some("ci-1 pid 42".into()), ..fresh };
        assert!(
            agent_table(&embedded)
                .contains("Kind:          embedded\nServer:        ci-1 pid 42\n")
        );
    }

    #[test]
    fn labels_and_names_are_checked_before_anything_is_sent() {
        match parse("create -n a1 --labels disk=ssd,zone=b").unwrap() {
            AgentCommand::Create(args) => {
                assert_eq!(args.labels.unwrap().len(), 2);
                assert_eq!(args.pool, None);
            }
            other => panic!("{other:?}"),
        }
        let error = parse("create -n a1 --labels disk").unwrap_err();
        assert!(error.to_string().contains("label \"disk\" is not key=value"), "{error}");
        assert_eq!(error.exit_code(), 2);
        let bad_name =
            SettingsArgs { name: "a/b".into(), pool: None, labels: None, output: ShowOutput::Json };
        let error = create(bad_name, &unreachable()).unwrap_err();
        assert_eq!(super::super::exit::status(&error), super::super::exit::USAGE);
        let error = update(
            SettingsArgs { name: "a1".into(), pool: None, labels: None, output: ShowOutput::Json },
            &unreachable(),
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("nothing to change"), "{error}");
    }
}
