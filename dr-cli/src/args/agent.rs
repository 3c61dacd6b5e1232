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
    /// Directory searched first for PostgreSQL's programs (pg_dump,
    /// pg_basebackup, pg_restore, pg_ctl), before a source's `bin_dir`, the
    /// `pg_config` on PATH, /usr/lib/postgresql/<V>/bin, /usr/pgsql-<V>/bin
    /// and PATH. A program of the wrong version there is passed over.
    #[arg(long, env = "DR_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// More logging (-v info, -vv debug); `DR_LOG` takes a filter.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
