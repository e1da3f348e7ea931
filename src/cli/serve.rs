//! `kiln serve`: flags → [`ServeConfig`], logging to stderr, the async runtime and the shutdown
//! signals, and the embedded agent of `--workers N` wired to the server through its in-process
//! [`LocalLink`] (the server does not know the agent); the server itself is [`kiln_server::server`]. stdout carries only the admin-token line
//! (first start) and the listening line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use chrono::TimeDelta;
use clap::Args;
use kiln_plan::plan::{GitSsh, RegistryCredential};
use kiln_task::config::Config;

use std::sync::Arc;

use kiln_agent::{Agent, AgentConfig};
use kiln_api::uploads::ContextLimit;
use kiln_server::server::serve as run_server;
use kiln_server::server::{GitSshFiles, LocalLink, ServeConfig, ServeError, StartAgent, StopAgent};
use kiln_server::store::DatabaseUrl;
use kiln_server::store::lease::SERVER_STOPPED_MESSAGE;
use kiln_server::transport;
use kiln_worker::DockerApiMode;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the real address is printed).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    addr: SocketAddr,
    /// Where the database, uploads and run workspaces live
    /// (default: /var/lib/kiln as root, else ~/.local/share/kiln).
    #[arg(long, env = "KILN_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The database: `sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`
    /// (default: the SQLite file kiln.db in the data directory). Several servers may share one
    /// PostgreSQL database (and then one data directory: the secret key and uploads).
    #[arg(long, env = "KILN_DATABASE", value_name = "URL")]
    database: Option<DatabaseUrl>,
    /// Default registry (`host[:port]`) for image names without one; overrides the config file.
    #[arg(long, value_name = "HOST[:PORT]")]
    registry: Option<String>,
    /// User name for logging in to --registry.
    #[arg(long, value_name = "USER", requires = "registry", requires = "registry_password_file")]
    registry_user: Option<String>,
    /// File holding the --registry password (never taken as an argument).
    #[arg(long, value_name = "FILE", requires = "registry_user")]
    registry_password_file: Option<PathBuf>,
    /// Runs executed at once.
    #[arg(long, default_value_t = 2, value_name = "N")]
    workers: usize,
    /// What `cmd` steps of the embedded agent get at /var/run/docker.sock: `scoped` (each
    /// run its own Docker API, refusing what would escape the run), `host` (the engine's own
    /// socket, as ACR does: every step is root on this machine) or `off`.
    #[arg(long, value_name = "MODE", default_value = "scoped")]
    docker_api: DockerApiMode,
    /// How many `cmd` step containers a run of the embedded agent may keep prepared ahead of need (the fast path);
    /// 0 prepares none.
    #[arg(long, value_name = "N", default_value_t = kiln_worker::DEFAULT_LOOKAHEAD)]
    lookahead: usize,
    /// The embedded agent's name, in the records of the runs it takes (default: this host's
    /// name). Servers sharing a database need different names.
    #[arg(long, value_name = "NAME")]
    agent_name: Option<String>,
    /// Seconds an agent keeps a run without a heartbeat; then a run that had not started a step
    /// is queued again and one that had ends as Error.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(3..))]
    agent_lease: u64,
    /// Days logs of finished runs are kept.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    log_retention_days: u32,
    /// Largest accepted context upload, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    max_upload_mb: u64,
    /// Largest unpacked context (an upload's files, a fetched git or tarball source), in MiB.
    #[arg(long, default_value_t = ContextLimit::DEFAULT_MB, value_name = "MIB")]
    max_context_mb: u64,
    /// The server's URL as git hosts reach it, the base of task webhook URLs
    /// (default: http://ADDR, https://ADDR with --tls-cert).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Seconds between checks of the registries for moved base-image tags.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    base_image_poll: u64,
    /// Private key (OpenSSH, unencrypted) for SSH git contexts (`git@host:org/repo.git`,
    /// `ssh://…`) of tasks without a key of their own (`kiln task create --ssh-key-file`).
    #[arg(long, value_name = "FILE")]
    git_ssh_key: Option<PathBuf>,
    /// The known_hosts file SSH git hosts must be in (default: ~/.ssh/known_hosts). Read for
    /// each run: a host added to it counts without a restart.
    #[arg(long, value_name = "FILE")]
    git_known_hosts: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, the server's own certificate first);
    /// needs --tls-key. Agents and the CLI on other machines talk to the server only this way.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub fn serve(args: ServeArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let default_registry = args.registry.clone().or(config.default_registry.clone());
    let credentials = match (&args.registry, &args.registry_user, &args.registry_password_file) {
        (Some(registry), Some(username), Some(file)) => {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!("reading the registry password from {}", file.display())
            })?;
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                bail!("{} is empty: it should hold the registry password", file.display());
            }
            vec![RegistryCredential {
                registry: registry.clone(),
                username: username.clone(),
                password,
            }]
        }
        _ => Vec::new(),
    };
    let git_ssh = GitSshFiles {
        private_key: args.git_ssh_key,
        known_hosts: args.git_known_hosts.or_else(|| Some(home().ok()?.join(".ssh/known_hosts"))),
    };
    // Read once now, so a wrong path or key stops the start instead of every SSH run.
    if let (Some(ssh), Some(file)) = (git_ssh.identity(None)?, &git_ssh.private_key)
        && let Err(e) = GitSsh::check_private_key(&ssh.private_key)
    {
        bail!("--git-ssh-key {}: {e}", file.display());
    }
    // Read now, so a wrong file stops the start with its name rather than every handshake.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(transport::server_config(cert, key)?),
        _ => None,
    };
    // Absolute, so every path under it (and its redaction from run errors) means one place.
    let data_dir = match args.data_dir {
        Some(dir) => {
            std::path::absolute(&dir).with_context(|| format!("--data-dir {}", dir.display()))?
        }
        None => default_data_dir("kiln")?,
    };
    let serve_config = ServeConfig {
        addr: args.addr,
        data_dir,
        database: args.database,
        run_id_prefix: config.run_id_prefix.clone(),
        default_registry,
        credentials,
        images: config.image_aliases(),
        workers: args.workers,
        agent_name: match args.agent_name {
            Some(name) => {
                kiln_server::task_def::check_name("agent", &name)
                    .map_err(|e| anyhow::anyhow!("--agent-name: {e}"))?;
                name
            }
            None => kiln_api::agents::hostname(),
        },
        lease_ttl: std::time::Duration::from_secs(args.agent_lease),
        log_retention: TimeDelta::days(i64::from(args.log_retention_days)),
        max_upload_bytes: args.max_upload_mb.saturating_mul(1024 * 1024),
        max_context: ContextLimit::from_mb(args.max_context_mb),
        public_url: args.public_url,
        base_image_poll: std::time::Duration::from_secs(args.base_image_poll),
        git_ssh,
        tls,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let start_agent = embedded_agent(&serve_config, args.docker_api, args.lookahead);
    runtime.block_on(run_server(serve_config, start_agent, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// The embedded agent: `--workers` runs at once, in its own directory
/// `<data>/agents/<name>` (workspaces, contexts, its owner lock), so servers sharing a data
/// directory never take each other's; the runs it holds when the server stops end with the
/// server's stopped message.
fn embedded_agent(config: &ServeConfig, docker_api: DockerApiMode, lookahead: usize) -> StartAgent {
    let agent_config = AgentConfig {
        capacity: config.workers,
        docker_api,
        lookahead,
        stopped_message: SERVER_STOPPED_MESSAGE.to_string(),
        ..AgentConfig::new(
            config.agent_name.clone(),
            config.data_dir.join("agents").join(&config.agent_name),
        )
    };
    Box::new(move |link: LocalLink| {
        Box::pin(async move {
            let agent = Agent::start(Arc::new(link), agent_config)
                .await
                .map_err(|e| ServeError::Agent(Box::new(e)))?;
            Ok(Box::pin(agent.shutdown()) as StopAgent)
        })
    })
}

/// `/var/lib/NAME` for root, else `~/.local/share/NAME` (`kiln` for the server, `kiln-agent`
/// for an agent).
pub(super) fn default_data_dir(name: &str) -> anyhow::Result<PathBuf> {
    if is_root() {
        return Ok(PathBuf::from("/var/lib").join(name));
    }
    let Ok(home) = home() else {
        bail!("no data directory: set --data-dir (HOME is not set)");
    };
    Ok(home.join(".local/share").join(name))
}

fn home() -> anyhow::Result<PathBuf> {
    let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) else {
        bail!("HOME is not set");
    };
    Ok(PathBuf::from(home))
}

/// Whether the process runs as root: `/proc/self` belongs to the effective user (Linux).
fn is_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
