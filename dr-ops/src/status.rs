//! `status`: each source's newest recovery point against its RPO, WAL
//! continuity, the last verification and the last drill.

use chrono::{DateTime, Utc};
use dr_core::drill::DrillSummary;
use dr_core::status::SourceStatus;
use dr_storage::{Identities, Repository};
use serde::Serialize;

use crate::config::DrConfig;
use crate::error::Result;
use crate::ops::Ops;

/// The state of every source.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StatusReport {
    /// One entry per source in the repository or the configuration.
    pub sources: Vec<SourceStatus>,
    /// The newest drill stored in the repository.
    pub last_drill: Option<DrillSummary>,
}

impl StatusReport {
    /// Whether every objective is met, no WAL has a gap and no last
    /// verification failed.
    pub fn ok(&self) -> bool {
        self.sources.iter().all(SourceStatus::ok)
    }

    /// The Prometheus text exposition of the statuses (for a node_exporter
    /// textfile collector).
    pub fn to_prometheus(&self) -> String {
        dr_core::status::to_prometheus(&self.sources)
    }
}

impl Ops {
    /// Reads the status of every source. With a configured key, timeline
    /// history files are read and switches followed exactly; without one
    /// they are inferred from the file names.
    ///
    /// # Errors
    /// Repository errors; a configured key that does not open the
    /// repository.
    pub async fn status(&self) -> Result<StatusReport> {
        let repo = self.open().await?;
        let ids = self.identities(&repo)?;
        let names = self.config().source_names();
        read(&repo, self.config(), &names, ids.as_ref(), Utc::now()).await
    }
}

/// The status of the sources `names` (which show as violating their RPO
/// when they have no backup) and every other source in `repo`, under
/// `config`'s objectives and PITR windows, at `now`: the one function `dr
/// status` and `dr-agent`'s metrics both read.
///
/// # Errors
/// Repository errors.
pub async fn read(
    repo: &Repository,
    config: &DrConfig,
    names: &[String],
    ids: Option<&Identities>,
    now: DateTime<Utc>,
) -> Result<StatusReport> {
    let wal =
        dr_postgres::wal::continuity::wal_status(repo, ids, &config.pitr_windows(), now).await?;
    let sources =
        dr_core::status::status_with_wal(repo, names, &config.objectives, &wal, now).await?;
    // A drill report that cannot be read does not hide the sources' state.
    let last_drill = dr_core::drill::last_drill(repo).await.ok().flatten();
    Ok(StatusReport {
        sources,
        last_drill,
    })
}
