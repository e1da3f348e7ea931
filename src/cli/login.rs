//! `kiln login`: checks an API token against the server and saves it, with the server, in the
//! client configuration file (mode 0600), so later commands need neither flag nor variable.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

use super::remote;
use crate::api::RunQuery;
use crate::client::{Client, ClientConfig, Settings};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the token from standard input (the default when stdin is not a terminal).
    #[arg(long)]
    token_stdin: bool,
}

pub fn login(args: LoginArgs, server: Option<&str>) -> anyhow::Result<ExitCode> {
    let (settings, path) = remote::settings(server)?;
    let Some(path) = path else {
        bail!("cannot tell where to save the token: set KILN_CLIENT_CONFIG or HOME");
    };
    if !args.token_stdin && std::io::stdin().is_terminal() {
        // Tokens are never taken as arguments (they would land in shell history).
        bail!("pass the token on standard input: `kiln login --token-stdin < token-file`");
    }
    let mut token = String::new();
    std::io::stdin().read_to_string(&mut token).context("reading the token from stdin")?;
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("no token on standard input");
    }
    let settings = Settings { server: settings.server, token: Some(token.clone()) };
    // A token the server rejects is never saved.
    Client::new(&settings).list_runs(&RunQuery { top: Some(1), ..RunQuery::default() })?;
    let mut config = ClientConfig::load(&path)?;
    config.server = Some(settings.server.clone());
    config.token = Some(token);
    config.save(&path)?;
    eprintln!("Login succeeded for {} (saved to {})", settings.server, path.display());
    Ok(ExitCode::SUCCESS)
}
