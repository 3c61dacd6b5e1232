//! `dr-agent`: runs the backup, prune and verify schedules of `dr.toml`,
//! serves `/metrics`, `/health` and `/ready`, and notifies on failures.
//!
//! The schedules, metrics and notifications are `dr-core`'s
//! ([`dr_core::schedule`], [`dr_core::metrics`], `dr_core::notify`); this
//! module wires the configuration to them and runs the loop
//! ([`runner::Agent`]).

pub mod config;
pub mod runner;
pub mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use dr_core::metrics::AgentMetrics;
use dr_core::schedule::{parse_time_zone, CronSchedule};
use dr_storage::Repository;

pub use config::AgentConfig;
pub use runner::{Agent, RunSummary};

use crate::config::DrConfig;
use crate::exit::Usage;

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

/// Builds the agent of a configuration: opens the repository, builds each
/// scheduled source (as `dr backup` does), parses every schedule in the
/// configured time zone, reads the key for verification when one is
/// configured, and builds the notifier.
///
/// # Errors
/// A usage error (exit code 2) naming the key for a bad schedule, time
/// zone, source or notification setting; repository errors.
pub async fn from_config(
    config: &DrConfig,
    agent: &AgentConfig,
    metrics: Arc<AgentMetrics>,
) -> Result<Agent> {
    let tz = parse_time_zone(&agent.time_zone)
        .map_err(|e| Usage::wrap(anyhow::Error::new(e).context("agent.time_zone")))?;
    let schedule = |key: String, expr: &str| {
        CronSchedule::parse(expr, tz).map_err(|e| Usage::wrap(anyhow::Error::new(e).context(key)))
    };
    // Everything in the file is checked before the repository is opened.
    let mut backups = Vec::new();
    for (name, entry) in &config.sources {
        let Some(expr) = &entry.schedule else {
            tracing::info!(source = %name, "no schedule: not backed up by the agent");
            continue;
        };
        let s = schedule(format!("sources.{name}.schedule"), expr)?;
        let source = crate::commands::build_source(&entry.config)
            .await
            .map_err(|e| Usage::wrap(e.context(format!("sources.{name}"))))?;
        backups.push((name, Arc::<dyn dr_core::BackupSource>::from(source), s));
    }
    let prune = agent
        .prune_schedule
        .as_deref()
        .map(|e| schedule("agent.prune_schedule".into(), e))
        .transpose()?;
    let verify = agent
        .verify_schedule
        .as_deref()
        .map(|e| schedule("agent.verify_schedule".into(), e))
        .transpose()?;
    #[cfg(feature = "notify")]
    let notifier = agent
        .notify
        .as_ref()
        .map(|n| {
            dr_core::notify::Notifier::new(n).map_err(|e| Usage::wrap(dr_core::Error::from(e)))
        })
        .transpose()?;
    let settings = &config.repository;
    let location = settings.location().map_err(Usage::wrap)?;
    let codec = settings.codec_options().map_err(Usage::wrap)?;
    let keys = settings.key_source().map_err(Usage::wrap)?;

    let repo = Repository::open(&location, &settings.store_options()).await?;
    let repo = repo.with_codec(codec);
    let mut a = Agent::new(repo.clone(), metrics)
        .with_objectives(config.objectives.clone())
        .with_grace(agent.shutdown_grace)
        .with_refresh(agent.refresh_interval)
        .with_pitr_windows(
            config
                .sources
                .iter()
                .filter_map(|(n, e)| e.retention.pitr_window.map(|w| (n.clone(), w)))
                .collect(),
        );
    for (name, source, s) in backups {
        a = a.with_backup(name, source, s);
    }
    if let Some(s) = prune {
        let policies = config
            .sources
            .iter()
            .map(|(n, e)| (n.clone(), e.retention.clone()))
            .collect();
        a = a.with_prune(s, policies);
    }
    if let Some(s) = verify {
        let ids = if keys.identities.is_some() || keys.passphrase.is_some() {
            Some(repo.unlock(&keys).map_err(Usage::wrap_storage)?)
        } else {
            tracing::info!("no key configured: verification checks stored digests only");
            None
        };
        a = a.with_verify(s, ids);
    }
    #[cfg(feature = "notify")]
    if let Some(n) = notifier {
        a = a.with_notifier(Arc::new(n));
    }
    Ok(a)
}

/// Runs `dr-agent` until `shutdown` completes (SIGTERM or Ctrl-C in the
/// binary): loads the configuration, binds the listener, runs the agent,
/// stops the server when the agent has stopped.
///
/// # Errors
/// Configuration (usage), listener and repository errors at start.
pub async fn run(
    args: AgentArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunSummary> {
    let (mut config, mut agent_config) = config::load(&args.config).map_err(Usage::wrap)?;
    if let Some(r) = args.repo {
        config.repository.url = Some(r);
    }
    if let Some(i) = args.identity {
        config.repository.identity_file = Some(i);
    }
    if let Some(l) = args.listen {
        agent_config.listen = l;
    }
    let metrics = Arc::new(AgentMetrics::new());
    let agent = from_config(&config, &agent_config, metrics.clone()).await?;
    let listener = server::bind(agent_config.listen)
        .await
        .map_err(Usage::wrap)?;
    let addr = listener.local_addr().context("listener address")?;
    tracing::info!(%addr, "serving /metrics, /health and /ready");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        server::router(metrics, agent.ready_flag()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let summary = agent.run(shutdown).await;
    let _ = stop_tx.send(());
    server.await.context("metrics server")??;
    summary
}

/// Completes on SIGTERM or SIGINT.
///
/// # Errors
/// The signal handlers cannot be installed.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
