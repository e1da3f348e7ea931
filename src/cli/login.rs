//! `kiln login`, `kiln logout` and `kiln whoami`: the API token the CLI sends. Login checks a
//! token against the server and saves it, with the server, in the client configuration file
//! (mode 0600), so later commands need neither flag nor variable; logout removes it; whoami
//! says which token the server sees.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

use super::remote::{self, ServerOptions};
use crate::client::{ClientConfig, Settings};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Read the token from standard input (the default when stdin is not a terminal; on a
    /// terminal the token is asked for without echo).
    #[arg(long)]
    token_stdin: bool,
}

pub fn login(args: LoginArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let (settings, path) = remote::settings(server)?;
    let path = config_file(path)?;
    // Tokens are never taken as arguments (they would land in shell history).
    let token = if !args.token_stdin && std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("API token for {}: ", settings.server))
            .context("reading the token")?
    } else {
        let mut token = String::new();
        std::io::stdin().read_to_string(&mut token).context("reading the token from stdin")?;
        token
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("no token given");
    }
    let settings = Settings { server: settings.server, token: Some(token.clone()) };
    // A token the server rejects is never saved.
    let me = remote::connect_with(&settings, server)?.whoami()?;
    let mut config = ClientConfig::load(&path)?;
    config.server = Some(settings.server.clone());
    config.token = Some(token);
    config.save(&path)?;
    eprintln!(
        "Login succeeded for {} as {} ({}); saved to {}",
        settings.server,
        me.name,
        me.role.as_str(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct LogoutArgs {}

pub fn logout(_args: LogoutArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let (settings, path) = remote::settings(server)?;
    let path = config_file(path)?;
    let mut config = ClientConfig::load(&path)?;
    if config.token.take().is_none() {
        eprintln!("Not logged in: {} holds no token", path.display());
    } else {
        config.save(&path)?;
        eprintln!(
            "Logged out of {}: the token was removed from {}",
            settings.server,
            path.display()
        );
    }
    if std::env::var_os("KILN_TOKEN").is_some_and(|t| !t.is_empty()) {
        eprintln!("KILN_TOKEN is set: commands still send its token");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct WhoamiArgs {}

pub fn whoami(_args: WhoamiArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let client = remote::connect(server)?;
    let me = client.whoami()?;
    println!("Token:  {}", me.name);
    println!("Role:   {}", me.role.as_str());
    println!("Server: {}", client.server());
    Ok(ExitCode::SUCCESS)
}

/// The client configuration file, which login and logout need to know.
fn config_file(path: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    path.context("cannot tell where the token is saved: set KILN_CLIENT_CONFIG or HOME")
}
