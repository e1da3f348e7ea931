//! `kiln logs RUN_ID [--follow | --timestamps]`: a run's log, from the start; with `--follow`,
//! live until the run ends (surviving dropped connections without printing anything twice);
//! with `--timestamps`, each line after the time it arrived.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Args;
use kiln_api::status::RunStatus;

use super::remote::{self, ServerOptions};
use crate::client::{Client, ClientError};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's ID.
    #[arg(value_name = "RUN_ID")]
    run_id: String,
    /// Keep printing new lines until the run ends.
    #[arg(long)]
    follow: bool,
    /// Show when each line arrived (RFC 3339, UTC) in front of it: the log so far.
    #[arg(long, conflicts_with = "follow")]
    timestamps: bool,
}

pub fn logs(args: LogsArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let client = remote::connect(server)?;
    if args.timestamps {
        let log = client.timed_log(&args.run_id)?;
        std::io::stdout().lock().write_all(&log).map_err(ClientError::Output)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_log(&client, &args.run_id, args.follow)
}

/// Prints run `id`'s log from the start; with `follow`, until the run ends. Without, a run
/// that has not ended is said to be still going, with how to follow it.
pub(super) fn print_log(client: &Client, id: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    client.copy_log(id, 0, follow, &mut stdout)?;
    stdout.flush().ok();
    if !follow {
        let run = client.get_run(id, None)?;
        if !run.status.is_terminal() {
            eprintln!("{}", still_running(id, run.status));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The note after the log so far of a run that has not ended.
fn still_running(id: &str, status: RunStatus) -> String {
    let state = match status {
        RunStatus::Queued => "is still queued",
        _ => "is still running",
    };
    format!("Run {id} {state}: follow its log with `kiln logs {id} --follow`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_run_says_how_to_follow_it() {
        assert_eq!(
            still_running("ka3", RunStatus::Running),
            "Run ka3 is still running: follow its log with `kiln logs ka3 --follow`"
        );
        assert!(still_running("ka3", RunStatus::Queued).contains("is still queued"));
    }
}
