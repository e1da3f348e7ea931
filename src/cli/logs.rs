//! `kiln logs RUN_ID [--follow]`: a run's log, from the start; with `--follow`, live until the
//! run ends (surviving dropped connections without printing anything twice).

use std::io::Write as _;
use std::process::ExitCode;

use clap::Args;

use super::remote;
use crate::client::Client;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run's ID.
    #[arg(value_name = "RUN_ID")]
    run_id: String,
    /// Keep printing new lines until the run ends.
    #[arg(long)]
    follow: bool,
}

pub fn logs(args: LogsArgs, server: Option<&str>) -> anyhow::Result<ExitCode> {
    let client = remote::connect(server)?;
    print_log(&client, &args.run_id, args.follow)
}

/// Prints run `id`'s log from the start; with `follow`, until the run ends.
pub(super) fn print_log(client: &Client, id: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    client.copy_log(id, 0, follow, &mut stdout)?;
    stdout.flush().ok();
    Ok(ExitCode::SUCCESS)
}
