//! `dr-agent`'s command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// `dr-agent` command line.
#[derive(Debug, Parser)]
#[command(
    name = "dr-agent",
    version,
    about = "Runs dr's schedules and serves Prometheus metrics"
)]
pub struct AgentArgs {
    /// Configuration file (`[repository]`, `[sources.*]` with `schedule`, `[agent]`).
    #[arg(long, env = "DR_CONFIG", default_value = "dr.toml")]
    pub config: PathBuf,
    /// Address of /metrics, /health and /ready (overrides `agent.listen`).
    #[arg(long, env = "DR_AGENT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Repository URL or path (overrides `repository.url`).
    #[arg(long, env = "DR_REPO")]
    pub repo: Option<String>,
    /// Age identity file, for decrypting verification (overrides
    /// `repository.identity_file`).
    #[arg(long, env = "DR_IDENTITY_FILE")]
    pub identity: Option<PathBuf>,
    /// More logging (-v info, -vv debug); `DR_LOG` takes a filter.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
