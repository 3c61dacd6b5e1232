//! `dr-agent`'s scheduler: runs each source's backup `schedule`, the
//! `[agent] prune_schedule` and `verify_schedule`, keeps the metrics, and
//! notifies on failures. Its jobs are the operations `dr` runs
//! ([`crate::backup::backup_source`], [`crate::prune::run`],
//! [`crate::verify::verify_latest`], [`crate::status::read`]), so the two
//! front ends cannot disagree.
//!
//! The HTTP server for `/metrics`, `/health` and `/ready` and the signal
//! handling belong to the binary; [`Agent::ready_flag`] and the shared
//! [`AgentMetrics`] are what it serves.

mod job;
mod runner;

use std::sync::Arc;

use dr_core::metrics::AgentMetrics;

pub use job::Job;
pub use runner::{Agent, RunSummary, StatusPage};

use crate::error::Result;
use crate::ops::Ops;
use crate::registry::build_source;

impl Ops {
    /// The agent of this configuration: opens the repository, builds each
    /// source that has a `schedule` (as `dr backup` does), takes the parsed
    /// schedules, reads the key for verification when one is configured,
    /// and builds the notifier. Everything in the file is checked before
    /// the repository is opened.
    ///
    /// # Errors
    /// A usage error naming the key of a bad source or notification
    /// setting; repository errors.
    pub async fn agent(&self, metrics: Arc<AgentMetrics>) -> Result<Agent> {
        let config = self.config();
        let schedules = config.schedules().clone();
        let mut backups = Vec::new();
        for (name, schedule) in &schedules.backups {
            let entry = config.source(name)?;
            let source = build_source(&entry.config, self.pg_bin_override())
                .await
                .map_err(|e| e.context(format!("sources.{name}")))?;
            backups.push((name.clone(), Arc::from(source), schedule.clone()));
        }
        for name in config.sources.keys() {
            if !schedules.backups.contains_key(name) {
                tracing::info!(source = %name, "no schedule: not backed up by the agent");
            }
        }
        #[cfg(feature = "notify")]
        let notifier = config
            .agent
            .notify
            .as_ref()
            .map(|n| {
                dr_core::notify::Notifier::new(n)
                    .map_err(|e| crate::Error::config("agent.notify", dr_core::Error::from(e)))
            })
            .transpose()?;
        let repo = self.open().await?;
        let ids = self.identities(&repo)?;
        if ids.is_none() && schedules.verify.is_some() {
            tracing::info!("no key configured: verification checks stored digests only");
        }
        let mut a = Agent::new(repo, Arc::new(config.clone()), metrics)
            .with_grace(config.agent.shutdown_grace)
            .with_refresh(config.agent.refresh_interval)
            .with_identities(ids);
        for (name, source, s) in backups {
            a = a.with_backup(&name, source, s);
        }
        if let Some(s) = schedules.prune {
            a = a.with_prune(s);
        }
        if let Some(s) = schedules.verify {
            a = a.with_verify(s);
        }
        #[cfg(feature = "notify")]
        if let Some(n) = notifier {
            a = a.with_notifier(Arc::new(n));
        }
        Ok(a)
    }
}
