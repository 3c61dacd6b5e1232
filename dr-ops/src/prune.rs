//! `prune`: the retention policies of `dr.toml` over the repository's
//! backups *and* its WAL archive, planned first (printable, a dry run
//! stops there), then carried out under the repository's `prune` lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_core::prune::{self, PrunePlan, PruneReport};
use dr_storage::Repository;
use serde::Serialize;

use crate::config::DrConfig;
use crate::error::Result;
use crate::ops::Ops;

/// How to prune. With the `clap` feature these are `dr prune`'s flags.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct PruneOptions {
    /// Break a `prune` lock whose holder let it expire.
    #[cfg_attr(feature = "clap", arg(long))]
    pub break_stale_lock: bool,
    /// Wait this long for another prune to finish (e.g. `5m`).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_parser = humantime::parse_duration, default_value = "0s")
    )]
    pub lock_wait: Duration,
    /// Objects under no manifest are removed only when older than this.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_parser = humantime::parse_duration, default_value = "24h")
    )]
    pub orphan_grace: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        let d = prune::PruneOptions::default();
        PruneOptions {
            break_stale_lock: d.break_stale_lock,
            lock_wait: d.lock_wait,
            orphan_grace: d.orphan_grace,
        }
    }
}

impl PruneOptions {
    fn library(&self) -> prune::PruneOptions {
        let mut o = prune::PruneOptions::default();
        o.orphan_grace = self.orphan_grace;
        o.lock_wait = self.lock_wait;
        o.break_stale_lock = self.break_stale_lock;
        o
    }
}

/// A prune carried out: its plan and what was deleted.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PruneOutcome {
    /// What was to be kept and deleted, and why.
    pub plan: PrunePlan,
    /// What was deleted.
    pub report: PruneReport,
}

impl PruneOutcome {
    /// Whether the repository is sound: no backup was kept because its
    /// manifest is damaged (such a backup is never deleted; an operator or
    /// `dr repo repair` decides).
    pub fn ok(&self) -> bool {
        self.report.ok()
    }

    /// A one-line summary for logs and notifications.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "pruned {} backup(s), {} WAL object(s), {} orphan(s), {} verification record(s); {} bytes freed",
            self.report.backups_deleted.len(),
            self.report.wal_deleted,
            self.report.orphans_deleted,
            self.report.verifications_deleted,
            self.report.bytes_freed
        );
        if !self.ok() {
            s.push_str(&format!(
                "; kept {} backup(s) with a DAMAGED manifest: {}",
                self.report.damaged.len(),
                self.report.damaged.join(", ")
            ));
        }
        s
    }
}

impl Ops {
    /// The prune plan: which backups each rule keeps, what is deleted, the
    /// WAL each cluster's kept base backups need. Changes nothing.
    ///
    /// # Errors
    /// Repository errors.
    pub async fn plan_prune(&self, opts: &PruneOptions) -> Result<PrunePlan> {
        let repo = self.open().await?;
        plan(&repo, self.config(), opts, Utc::now()).await
    }

    /// Plans and carries out a prune.
    ///
    /// # Errors
    /// Another prune holds the lease (and `lock_wait` passed); repository
    /// errors.
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneOutcome> {
        let repo = self.open().await?;
        run(&repo, self.config(), opts, Utc::now()).await
    }
}

/// The prune plan of `config`'s retention policies over `repo`, with the
/// WAL archive's facts (each cluster's real segment size from its physical
/// manifests), at `now`.
///
/// # Errors
/// Repository errors.
pub async fn plan(
    repo: &Repository,
    config: &DrConfig,
    opts: &PruneOptions,
    now: DateTime<Utc>,
) -> Result<PrunePlan> {
    let (wal, _) = dr_postgres::wal::retention::all_retention_facts(repo).await?;
    Ok(prune::plan_prune(
        repo,
        &config.retention_policies(),
        &wal,
        &opts.library(),
        now,
    )
    .await?)
}

/// Plans and carries out a prune of `repo` under `config`'s policies: the
/// one function `dr prune` and `dr-agent`'s `prune_schedule` both run. A
/// backup whose manifest is damaged is kept and named in the outcome
/// ([`PruneOutcome::ok`] is then false); the rest of the plan is carried
/// out.
///
/// # Errors
/// As [`plan`]; the lease is held by another prune.
pub async fn run(
    repo: &Repository,
    config: &DrConfig,
    opts: &PruneOptions,
    now: DateTime<Utc>,
) -> Result<PruneOutcome> {
    let plan = plan(repo, config, opts, now).await?;
    let report = prune::prune_with_report(repo, &plan, &opts.library()).await?;
    Ok(PruneOutcome { plan, report })
}
