//! `dr-agent`: loads `dr.toml`, builds the agent of `dr_ops::agent` (whose
//! jobs are the operations `dr` runs), serves `/metrics`, `/health` and
//! `/ready`, and stops on SIGTERM.

pub mod server;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use dr_core::metrics::AgentMetrics;
use dr_ops::agent::RunSummary;
use dr_ops::{DrConfig, Ops, RepositoryArgs};

use crate::args::AgentArgs;

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
    let mut config = DrConfig::load(&args.config)?;
    if let Some(l) = args.listen {
        config.agent.listen = l;
    }
    let listen = config.agent.listen;
    let mut repo = RepositoryArgs::default();
    repo.repo = args.repo;
    repo.identity = args.identity;
    let ops = Ops::new(config, repo).with_pg_bin(args.pg_bin.clone());
    let metrics = Arc::new(AgentMetrics::new());
    let agent = ops.agent(metrics.clone()).await?;
    let listener = server::bind(listen).await?;
    let addr = listener.local_addr().context("listener address")?;
    tracing::info!(%addr, "serving /, /metrics, /health and /ready");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        server::router(metrics, agent.ready_flag(), agent.status_page()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let summary = agent.run(shutdown).await;
    let _ = stop_tx.send(());
    server.await.context("metrics server")??;
    Ok(summary?)
}
