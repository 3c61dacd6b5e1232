//! The agent's metrics registry, in the Prometheus/OpenMetrics text format
//! through `prometheus-client`.
//!
//! Names are the runbook's (its alerts use them as they are), every series
//! labelled by `source`:
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `backup_last_success_timestamp_seconds` | gauge | Unix time the newest good backup finished |
//! | `backup_last_failure_timestamp_seconds` | gauge | Unix time a backup run last failed |
//! | `backup_size_bytes` | gauge | stored size of the newest good backup |
//! | `backup_duration_seconds` | gauge | wall time of the newest good backup run |
//! | `backup_runs_total{result}` | counter | backup runs by `result` (`success`, `failure`, `aborted`) |
//! | `scheduled_runs_skipped_total{job}` | counter | runs not started because the previous run of the job was still going |
//! | `wal_archive_last_success_timestamp_seconds` | gauge | Unix time WAL was last archived (from the repository) |
//! | `verify_last_success_timestamp_seconds` | gauge | Unix time a verification of the newest backup last passed |
//! | `verify_last_failure_timestamp_seconds` | gauge | Unix time a verification last failed |
//! | `drill_last_rto_seconds` | gauge | time to recover measured by the newest drill |
//! | `drill_last_success_timestamp_seconds` | gauge | Unix time the newest drill finished |
//! | `objective_rpo_seconds`, `objective_rto_seconds` | gauge | the configured objectives |
//! | `prune_last_success_timestamp_seconds` | gauge | Unix time prune last succeeded (no `source` label) |
//!
//! Timestamps are seconds since the epoch, as `time()` in PromQL.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::status::SourceStatus;

type Labels = Vec<(String, String)>;
type G = Family<Labels, Gauge<f64, AtomicU64>>;
type C = Family<Labels, Counter>;

/// The content type of [`AgentMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The outcome of a backup run, the `result` label of `backup_runs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    /// The backup was committed.
    Success,
    /// It failed; nothing was listed.
    Failure,
    /// It was stopped at shutdown after the grace period; nothing was listed.
    Aborted,
}

impl RunResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failure => "failure",
            RunResult::Aborted => "aborted",
        }
    }
}

/// The agent's metrics. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    backup_last_success: G,
    backup_last_failure: G,
    backup_size: G,
    backup_duration: G,
    backup_runs: C,
    skipped: C,
    wal_last: G,
    wal_gaps: G,
    verify_last_success: G,
    verify_last_failure: G,
    drill_rto: G,
    drill_last: G,
    rpo: G,
    rto: G,
    prune_last_success: Gauge<f64, AtomicU64>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn source(name: &str) -> Labels {
    vec![("source".to_string(), name.to_string())]
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl AgentMetrics {
    /// A registry with every metric registered (and no series yet).
    pub fn new() -> Self {
        let mut registry = <Registry>::default();
        let m = AgentMetrics {
            backup_last_success: G::default(),
            backup_last_failure: G::default(),
            backup_size: G::default(),
            backup_duration: G::default(),
            backup_runs: C::default(),
            skipped: C::default(),
            wal_last: G::default(),
            wal_gaps: G::default(),
            verify_last_success: G::default(),
            verify_last_failure: G::default(),
            drill_rto: G::default(),
            drill_last: G::default(),
            rpo: G::default(),
            rto: G::default(),
            prune_last_success: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time the newest good backup finished",
            m.backup_last_success.clone(),
        );
        registry.register(
            "backup_last_failure_timestamp_seconds",
            "Unix time a backup run last failed",
            m.backup_last_failure.clone(),
        );
        registry.register(
            "backup_size_bytes",
            "Stored size of the newest good backup",
            m.backup_size.clone(),
        );
        registry.register(
            "backup_duration_seconds",
            "Wall time of the newest good backup run",
            m.backup_duration.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "backup_runs",
            "Backup runs by result",
            m.backup_runs.clone(),
        );
        registry.register(
            "scheduled_runs_skipped",
            "Scheduled runs not started because the previous run of the same job was still going",
            m.skipped.clone(),
        );
        registry.register(
            "wal_archive_last_success_timestamp_seconds",
            "Unix time WAL was last archived",
            m.wal_last.clone(),
        );
        registry.register(
            "wal_archive_gaps",
            "Gaps in the archived WAL from the PITR window's anchor (or the oldest kept base backup) to the newest segment",
            m.wal_gaps.clone(),
        );
        registry.register(
            "verify_last_success_timestamp_seconds",
            "Unix time a verification of the newest backup last passed",
            m.verify_last_success.clone(),
        );
        registry.register(
            "verify_last_failure_timestamp_seconds",
            "Unix time a verification last failed",
            m.verify_last_failure.clone(),
        );
        registry.register(
            "drill_last_rto_seconds",
            "Time to recover measured by the newest drill",
            m.drill_rto.clone(),
        );
        registry.register(
            "drill_last_success_timestamp_seconds",
            "Unix time the newest drill finished",
            m.drill_last.clone(),
        );
        registry.register(
            "objective_rpo_seconds",
            "Recovery point objective",
            m.rpo.clone(),
        );
        registry.register(
            "objective_rto_seconds",
            "Recovery time objective",
            m.rto.clone(),
        );
        registry.register(
            "prune_last_success_timestamp_seconds",
            "Unix time prune last succeeded",
            m.prune_last_success.clone(),
        );
        AgentMetrics { registry, ..m }
    }

    /// Records a committed backup of `name`: last success (the manifest's
    /// finish time), size (stored bytes), duration, and a `success` run.
    pub fn backup_succeeded(
        &self,
        name: &str,
        manifest: &dr_storage::Manifest,
        duration: Duration,
    ) {
        let l = source(name);
        self.backup_last_success
            .get_or_create(&l)
            .set(secs(manifest.finished_at));
        self.backup_size
            .get_or_create(&l)
            .set(manifest.stored_size() as f64);
        self.backup_duration
            .get_or_create(&l)
            .set(duration.as_secs_f64());
        self.count_run(name, RunResult::Success);
    }

    /// Records a failed (or, with [`RunResult::Aborted`], stopped) backup run.
    pub fn backup_failed(&self, name: &str, at: DateTime<Utc>, result: RunResult) {
        self.backup_last_failure
            .get_or_create(&source(name))
            .set(secs(at));
        self.count_run(name, result);
    }

    fn count_run(&self, name: &str, result: RunResult) {
        let mut l = source(name);
        l.push(("result".into(), result.as_str().into()));
        self.backup_runs.get_or_create(&l).inc();
    }

    /// Counts `count` skipped runs of `job` (`backup`, `verify`, `prune`),
    /// for `name` when the job belongs to a source.
    pub fn runs_skipped(&self, job: &str, name: Option<&str>, count: u64) {
        let mut l = name.map(source).unwrap_or_default();
        l.push(("job".into(), job.into()));
        self.skipped.get_or_create(&l).inc_by(count);
    }

    /// Records a verification of `name`'s newest backup.
    pub fn verified(&self, name: &str, at: DateTime<Utc>, ok: bool) {
        let g = if ok {
            &self.verify_last_success
        } else {
            &self.verify_last_failure
        };
        g.get_or_create(&source(name)).set(secs(at));
    }

    /// Records a drill of `name` that finished at `at` and measured `rto`
    /// as the time to recover.
    pub fn drill_finished(&self, name: &str, at: DateTime<Utc>, rto: Duration) {
        self.drill_rto
            .get_or_create(&source(name))
            .set(rto.as_secs_f64());
        self.drill_last.get_or_create(&source(name)).set(secs(at));
    }

    /// Records a successful prune.
    pub fn pruned(&self, at: DateTime<Utc>) {
        self.prune_last_success.set(secs(at));
    }

    /// Records when WAL of `name` was last archived.
    pub fn wal_archived(&self, name: &str, at: DateTime<Utc>) {
        self.wal_last.get_or_create(&source(name)).set(secs(at));
    }

    /// Takes what the repository says ([`crate::status::status`]): newest
    /// good backup and its size, WAL, objectives. Used at start and on each
    /// refresh, so backups taken outside the agent (`dr backup` from a
    /// CronJob) show too. A source without backups gets its objectives only.
    pub fn observe_status(&self, statuses: &[SourceStatus]) {
        for s in statuses {
            let l = source(&s.source);
            if let Some(t) = s.last_backup_at {
                self.backup_last_success.get_or_create(&l).set(secs(t));
            }
            if let Some(b) = s.last_backup_stored_bytes {
                self.backup_size.get_or_create(&l).set(b as f64);
            }
            if let Some(t) = s.last_wal_archived_at {
                self.wal_last.get_or_create(&l).set(secs(t));
            }
            if s.wal.is_some() {
                self.wal_gaps
                    .get_or_create(&l)
                    .set(s.wal_gap_count() as f64);
            }
            self.rpo.get_or_create(&l).set(s.rpo_seconds);
            self.rto.get_or_create(&l).set(s.rto_seconds);
        }
    }

    /// The text exposition (OpenMetrics, see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("encoding to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, at: Option<DateTime<Utc>>) -> SourceStatus {
        SourceStatus {
            source: name.into(),
            kind: None,
            last_backup_id: None,
            last_backup_at: at,
            last_backup_age_seconds: None,
            last_backup_stored_bytes: at.map(|_| 1234),
            last_backup_plain_bytes: None,
            backups: 0,
            last_wal_archived_at: None,
            rpo_seconds: 900.0,
            rto_seconds: 3600.0,
            rpo_met: false,
            wal: None,
            problems: vec![],
            warnings: vec![],
            last_verify: None,
        }
    }

    #[test]
    fn wal_gaps_are_exported_for_sources_with_an_archive() {
        let m = AgentMetrics::new();
        let mut gappy = status("app-db", None);
        gappy.wal = Some(crate::status::WalStatus {
            gaps: vec![crate::status::WalGap {
                system_id: "7".into(),
                timeline: 1,
                after: Some("000000010000000000000003".into()),
                first_missing: "000000010000000000000004".into(),
                next: Some("000000010000000000000006".into()),
                missing_segments: 2,
            }],
            ..Default::default()
        });
        let mut whole = status("billing", None);
        whole.wal = Some(crate::status::WalStatus::default());
        m.observe_status(&[gappy, whole, status("vault", None)]);
        let text = m.encode();
        assert!(
            text.contains("wal_archive_gaps{source=\"app-db\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wal_archive_gaps{source=\"billing\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("wal_archive_gaps{source=\"vault\"}"),
            "{text}"
        );
    }

    #[test]
    fn names_and_labels_are_the_runbooks() {
        let m = AgentMetrics::new();
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        m.observe_status(&[status("app-db", Some(t)), status("vault", None)]);
        m.backup_failed("vault", t, RunResult::Failure);
        m.backup_failed("vault", t, RunResult::Aborted);
        m.runs_skipped("backup", Some("app-db"), 2);
        m.runs_skipped("prune", None, 1);
        m.verified("app-db", t, true);
        m.drill_finished("app-db", t, Duration::from_secs(600));
        m.wal_archived("app-db", t);
        m.pruned(t);
        let text = m.encode();
        for line in [
            "backup_last_success_timestamp_seconds{source=\"app-db\"} 1700000000.0",
            "backup_size_bytes{source=\"app-db\"} 1234.0",
            "backup_last_failure_timestamp_seconds{source=\"vault\"} 1700000000.0",
            "backup_runs_total{source=\"vault\",result=\"failure\"} 1",
            "backup_runs_total{source=\"vault\",result=\"aborted\"} 1",
            "scheduled_runs_skipped_total{source=\"app-db\",job=\"backup\"} 2",
            "scheduled_runs_skipped_total{job=\"prune\"} 1",
            "verify_last_success_timestamp_seconds{source=\"app-db\"} 1700000000.0",
            "drill_last_rto_seconds{source=\"app-db\"} 600.0",
            "drill_last_success_timestamp_seconds{source=\"app-db\"} 1700000000.0",
            "wal_archive_last_success_timestamp_seconds{source=\"app-db\"} 1700000000.0",
            "objective_rpo_seconds{source=\"vault\"} 900.0",
            "objective_rto_seconds{source=\"vault\"} 3600.0",
            "prune_last_success_timestamp_seconds 1700000000.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // A source without a backup has no last-success series (absent, so
        // the alert's absent() / staleness rules apply), not a zero.
        assert!(!text.contains("backup_last_success_timestamp_seconds{source=\"vault\"}"));
        assert!(text.ends_with("# EOF\n"));
    }
}
