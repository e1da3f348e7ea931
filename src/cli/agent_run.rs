//! `kiln agent run`: this machine as an agent of a server (issue 12). It tells the server that a
//! new process of the agent starts (so what a dead predecessor held is settled), then leases
//! runs and executes them on the local engine (`DOCKER_HOST` or the default socket) until
//! SIGINT/SIGTERM, when its held runs end as Error and their containers are removed.
//!
//! Leases carry the runs' secrets, so the server (the global `--server`, with `--ca-file`) must
//! be `https://` or on this machine (loopback) unless `--insecure` says otherwise. `--server`
//! may name several servers sharing one database, comma-separated: the agent fails over
//! between them ([`RemoteControl`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;

use super::remote::ServerOptions;
use kiln_agent::remote::RemoteControl;
use kiln_agent::{Agent, AgentConfig, SpoolLimits};
use kiln_worker::DockerApiMode;

#[derive(Debug, Args)]
pub struct AgentRunArgs {
    /// A file holding the agent's token (`kiln agent create` prints it).
    #[arg(long, env = "KILN_AGENT_TOKEN_FILE", value_name = "FILE")]
    token_file: PathBuf,
    /// Runs executed at once.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    capacity: u64,
    /// Where run contexts and workspaces go (default /var/lib/kiln-agent for root, else
    /// ~/.local/share/kiln-agent).
    #[arg(long, env = "KILN_AGENT_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Platforms this agent runs, `os/arch[/variant]`, comma-separated (default: the engine's
    /// own and those the kernel emulates for it through binfmt_misc with the F flag).
    #[arg(long, value_name = "PLATFORMS", value_delimiter = ',')]
    platform: Vec<String>,
    /// What `cmd` steps get of this machine's engine at /var/run/docker.sock: `scoped`, `host`
    /// (the engine's own socket: every step is root here) or `off`.
    #[arg(long, value_name = "MODE", default_value = "scoped")]
    docker_api: DockerApiMode,
    /// How many `cmd` step containers a run may keep prepared ahead of need (the fast path);
    /// 0 prepares none.
    #[arg(long, value_name = "N", default_value_t = kiln_worker::DEFAULT_LOOKAHEAD)]
    lookahead: usize,
    /// Bytes of a run's log kept in memory while the server has not stored them (tests).
    #[arg(long, hide = true, value_name = "BYTES", default_value_t = SpoolLimits::default().memory)]
    log_buffer_memory: usize,
    /// Bytes of a run's log kept on disk beyond the memory limit before the run waits (tests).
    #[arg(long, hide = true, value_name = "BYTES", default_value_t = SpoolLimits::default().disk)]
    log_buffer_disk: u64,
}

/// `kiln agent run` (one of [`super::agent`]'s subcommands).
pub(super) fn run(args: AgentRunArgs, server: &ServerOptions) -> anyhow::Result<ExitCode> {
    let (servers, client) = server.agent_client()?;
    let url = servers.join(",");
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("--token-file {}", args.token_file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("--token-file {}: the file is empty", args.token_file.display());
    }
    let data_dir = match args.data_dir {
        Some(dir) => {
            std::path::absolute(&dir).with_context(|| format!("--data-dir {}", dir.display()))?
        }
        None => super::serve::default_data_dir("kiln-agent")?,
    };
    for platform in &args.platform {
        if platform.split('/').count() < 2 || platform.split('/').any(str::is_empty) {
            bail!("--platform {platform:?}: expected os/arch[/variant], e.g. linux/arm64");
        }
    }
    let control = RemoteControl::new(client, &servers, token);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let session = control
            .start_session()
            .await
            .with_context(|| format!("{url}: the server did not take the agent's session"))?;
        let config = AgentConfig {
            capacity: usize::try_from(args.capacity).unwrap_or(1),
            platforms: args.platform,
            log_spool: SpoolLimits { memory: args.log_buffer_memory, disk: args.log_buffer_disk },
            docker_api: args.docker_api,
            lookahead: args.lookahead,
            ..AgentConfig::new(session.name.clone(), data_dir)
        };
        let agent = Agent::start(Arc::new(control), config).await?;
        println!(
            "kiln agent {} leasing from {} (pool {}, platforms {}, capacity {})",
            session.name,
            url,
            session.pool.as_deref().unwrap_or("none"),
            agent.platforms().join(","),
            args.capacity
        );
        super::serve::shutdown_signal().await;
        agent.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
