//! `kiln show-run`, `kiln list-runs` and `kiln cancel-run`: run records as `az acr task
//! show-run` / `list-runs` / `cancel-run` show them (§6.2, §6.5), as JSON, a table or TSV;
//! and `kiln rerun`, which az does not have (the web UI's re-run button, from the shell).

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use kiln_api::status::RunStatus;
use kiln_api::{Run, RunQuery};

use super::remote::{self, ServerOptions};
use crate::client::{Client, format_duration};

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunsOutput {
    Json,
    Table,
    /// Tab-separated, no header: for scripts (`… -o tsv | cut -f1`).
    Tsv,
}

/// The run a command is about: `RUN_ID`, or `--run-id RUN_ID` as under `az acr task`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RunIdArg {
    /// The run's ID.
    #[arg(value_name = "RUN_ID")]
    id: Option<String>,
    /// The run's ID (the `az acr task` spelling).
    #[arg(long = "run-id", value_name = "RUN_ID")]
    run_id: Option<String>,
}

impl RunIdArg {
    pub(super) fn get(&self) -> &str {
        // The group requires exactly one of them.
        self.id.as_deref().or(self.run_id.as_deref()).unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct ShowRunArgs {
    #[command(flatten)]
    run: RunIdArg,
    #[arg(short = 'o', long, value_enum, default_value = "json")]
    output: RunsOutput,
}

#[derive(Debug, Args)]
pub struct ListRunsArgs {
    /// Only runs with this status (Queued, Started, Running, Succeeded, Failed, Canceled,
    /// Error, Timeout).
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    status: Option<RunStatus>,
    /// Only runs that pushed this image, `repository:tag`.
    #[arg(long, value_name = "REPO:TAG")]
    image: Option<String>,
    /// Only runs of this task.
    #[arg(long, value_name = "NAME")]
    task: Option<String>,
    /// Only runs with this trigger: Manual, Commit, "Pull Request", Timer or "Image Update".
    #[arg(long, value_name = "TRIGGER")]
    trigger: Option<String>,
    /// Only runs this agent took.
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Only runs that asked for this agent pool.
    #[arg(long, value_name = "POOL")]
    agent_pool: Option<String>,
    /// Only runs of this git branch.
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// Only runs whose ID, task name or triggering commit contains this text (any case).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// At most this many runs, newest first (default 15; 0 for all).
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: RunsOutput,
}

#[derive(Debug, Args)]
pub struct CancelRunArgs {
    #[command(flatten)]
    run: RunIdArg,
}

#[derive(Debug, Args)]
pub struct RerunArgs {
    #[command(flatten)]
    run: RunIdArg,
}

pub(super) fn parse_status(text: &str) -> Result<RunStatus, String> {
    RunStatus::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(text)).ok_or_else(|| {
        let names: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

pub fn show_run(args: ShowRunArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let run = remote::connect(server)?.get_run(args.run.get(), None)?;
    match args.output {
        RunsOutput::Json => println!("{}", serde_json::to_string_pretty(&run)?),
        RunsOutput::Table => print!("{}", detail(&run)),
        RunsOutput::Tsv => print!("{}", tsv(std::slice::from_ref(&run))),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list_runs(args: ListRunsArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let query = RunQuery {
        status: args.status,
        image: args.image,
        task: args.task,
        trigger: args.trigger,
        agent: args.agent,
        agent_pool: args.agent_pool,
        branch: args.branch,
        search: args.search,
        top: args.top,
        ..RunQuery::default()
    };
    print_runs(&remote::connect(server)?, &query, args.output)
}

/// The runs `query` selects, printed as `output`.
pub(super) fn print_runs(
    client: &Client,
    query: &RunQuery,
    output: RunsOutput,
) -> anyhow::Result<ExitCode> {
    let runs = client.list_runs(query)?;
    if let (true, Some(task)) = (runs.is_empty(), &query.task) {
        // No runs of an unknown task is the task's 404, not an empty table.
        client.get_task(task)?;
    }
    print_rows(&runs, &HEADERS, row, output)
}

pub fn cancel_run(args: CancelRunArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    // A run that already ended is the server's 409, "run … already finished with status …".
    let run = remote::connect(server)?.cancel_run(args.run.get())?;
    eprintln!("{}", canceled_line(&run));
    Ok(ExitCode::SUCCESS)
}

pub fn rerun(args: RerunArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let run = remote::connect(server)?.rerun(args.run.get())?;
    // `kiln run --no-wait`'s line, so scripts read the new ID the same way.
    println!("Queued a run with ID: {}", run.run_id);
    eprintln!("(a re-run of {})", args.run.get());
    Ok(ExitCode::SUCCESS)
}

/// What a cancel request did: a queued run is canceled at once, a started one stops when its
/// worker has removed its containers.
fn canceled_line(run: &Run) -> String {
    match run.status {
        RunStatus::Canceled => format!("Run {} canceled", run.run_id),
        status => format!(
            "Run {} is being canceled (it was {}); `kiln show-run {}` tells when it stopped",
            run.run_id,
            status.as_str(),
            run.run_id
        ),
    }
}

const HEADERS: [&str; 8] =
    ["RUN ID", "TASK", "PLATFORM", "STATUS", "TRIGGER", "STARTED", "DURATION", "AGENT"];

/// One run's columns, as az's run table (PLATFORM is the OS, STARTED the start time in UTC,
/// DURATION finish − start), then the agent that took it.
fn row(run: &Run) -> [String; 8] {
    [
        run.run_id.clone(),
        run.task.clone().unwrap_or_default(),
        run.platform.os.clone(),
        run.status.as_str().to_string(),
        run.trigger.clone(),
        run.start_time.map(utc).unwrap_or_default(),
        run.duration().map(format_duration).unwrap_or_default(),
        run.agent_name.clone().unwrap_or_default(),
    ]
}

fn table(runs: &[Run]) -> String {
    let rows: Vec<[String; 8]> = runs.iter().map(row).collect();
    format_table(&HEADERS, &rows)
}

/// az's table: a header, a rule of dashes, columns two spaces apart.
pub(super) fn format_table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> =
            cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&headers.map(str::to_string));
    out.push_str(&line(&widths.map(|w| "-".repeat(w))));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One run as `show-run` prints it: its row, then what it waits for while it is queued.
fn detail(run: &Run) -> String {
    let mut out = table(std::slice::from_ref(run));
    if let Some(reason) = &run.waiting_reason {
        out.push_str(&format!("\n{reason}...\n"));
    }
    out
}

fn tsv(runs: &[Run]) -> String {
    format_tsv(&runs.iter().map(row).collect::<Vec<_>>())
}

/// Records as `output`: JSON as they are, else one row each, as a table under `headers` or as
/// TSV.
pub(super) fn print_rows<T: serde::Serialize, const N: usize>(
    records: &[T],
    headers: &[&str; N],
    row: impl Fn(&T) -> [String; N],
    output: RunsOutput,
) -> anyhow::Result<ExitCode> {
    let rows: Vec<[String; N]> = records.iter().map(row).collect();
    match output {
        RunsOutput::Json => println!("{}", serde_json::to_string_pretty(records)?),
        RunsOutput::Table => print!("{}", format_table(headers, &rows)),
        RunsOutput::Tsv => print!("{}", format_tsv(&rows)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `Key: value` lines, the values aligned (a record shown `-o table`).
pub(super) fn format_fields(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}", format!("{k}:")).trim_end().to_string() + "\n")
        .collect()
}

/// A time in tables: UTC, to the second.
pub(super) fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Tab-separated rows, no header.
pub(super) fn format_tsv<const N: usize>(rows: &[[String; N]]) -> String {
    rows.iter().map(|row| format!("{}\n", row.join("\t"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone as _, Utc};
    use kiln_api::Platform;
    use kiln_api::status::RunType;

    fn run(id: &str, task: Option<&str>, status: RunStatus, secs: Option<i64>) -> Run {
        let start = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        Run {
            run_id: id.into(),
            status,
            run_type: RunType::QuickRun,
            trigger: "Manual".into(),
            trigger_detail: Default::default(),
            task: task.map(str::to_string),
            create_time: start,
            start_time: secs.map(|_| start),
            finish_time: secs.map(|s| start + TimeDelta::seconds(s)),
            last_updated_time: start,
            platform: Platform::parse("linux/amd64"),
            timeout: 3600,
            output_images: vec![],
            dependencies: None,
            run_error_message: None,
            log_length: 0,
            agent_pool_name: None,
            agent_name: None,
            waiting_reason: None,
            request: None,
            rerun_of: None,
            steps: vec![],
        }
    }

    #[test]
    fn table_has_az_columns_then_the_agent() {
        let mut done = run("ka2", Some("nightly"), RunStatus::Succeeded, Some(3723));
        done.agent_name = Some("edge-1".into());
        let runs = [done, run("ka1", None, RunStatus::Queued, None)];
        assert_eq!(
            table(&runs),
            "RUN ID  TASK     PLATFORM  STATUS     TRIGGER  STARTED               DURATION  AGENT\n\
             ------  -------  --------  ---------  -------  --------------------  --------  ------\n\
             ka2     nightly  linux     Succeeded  Manual   2024-05-01T10:00:00Z  01:02:03  edge-1\n\
             ka1              linux     Queued     Manual\n"
        );
        assert_eq!(
            table(&[]),
            "RUN ID  TASK  PLATFORM  STATUS  TRIGGER  STARTED  DURATION  AGENT\n\
             ------  ----  --------  ------  -------  -------  --------  -----\n"
        );
    }

    #[test]
    fn show_run_says_what_a_queued_run_waits_for() {
        let mut queued = run("ka3", None, RunStatus::Queued, None);
        queued.waiting_reason = Some("Waiting for an agent (platform linux/arm64)".into());
        assert_eq!(
            detail(&queued),
            format!(
                "{}\nWaiting for an agent (platform linux/arm64)...\n",
                table(std::slice::from_ref(&queued))
            )
        );
        let done = run("ka2", None, RunStatus::Succeeded, Some(1));
        assert_eq!(detail(&done), table(std::slice::from_ref(&done)));
    }

    #[test]
    fn tsv_has_no_header() {
        let runs = [
            run("ka2", Some("nightly"), RunStatus::Failed, Some(19)),
            run("ka1", None, RunStatus::Running, None),
        ];
        assert_eq!(
            tsv(&runs),
            "ka2\tnightly\tlinux\tFailed\tManual\t2024-05-01T10:00:00Z\t00:00:19\t\n\
             ka1\t\tlinux\tRunning\tManual\t\t\t\n"
        );
    }

    #[test]
    fn cancel_says_what_happened() {
        let canceled = run("ka5", None, RunStatus::Canceled, Some(0));
        assert_eq!(canceled_line(&canceled), "Run ka5 canceled");
        let running = run("ka6", None, RunStatus::Running, None);
        assert!(canceled_line(&running).starts_with("Run ka6 is being canceled (it was Running)"));
    }

    #[test]
    fn statuses_parse_case_insensitively() {
        assert_eq!(parse_status("running"), Ok(RunStatus::Running));
        assert!(parse_status("done").unwrap_err().contains("Succeeded"));
    }
}
