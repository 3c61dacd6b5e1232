//! Status: whether each source meets its objectives, for `dr status` and for
//! Prometheus (a node_exporter textfile or the agent's `/metrics`).

use chrono::{DateTime, Utc};
use dr_storage::Repository;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;

use crate::error::Result;
use crate::objectives::ObjectivesConfig;

/// The state of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Source name.
    pub source: String,
    /// Backup kind of the newest backup.
    pub kind: Option<String>,
    /// Id of the newest good backup.
    pub last_backup_id: Option<String>,
    /// When the newest good backup finished.
    pub last_backup_at: Option<DateTime<Utc>>,
    /// Its age in seconds at `now`.
    pub last_backup_age_seconds: Option<f64>,
    /// Its stored size.
    pub last_backup_stored_bytes: Option<u64>,
    /// Its plaintext size.
    pub last_backup_plain_bytes: Option<u64>,
    /// Number of backups listed.
    pub backups: usize,
    /// When WAL was last archived (PostgreSQL sources with archiving).
    pub last_wal_archived_at: Option<DateTime<Utc>>,
    /// RPO objective, seconds.
    pub rpo_seconds: f64,
    /// RTO objective, seconds.
    pub rto_seconds: f64,
    /// Whether the RPO is met: the newest recovery point (backup or archived
    /// WAL) is younger than the RPO.
    pub rpo_met: bool,
    /// Problems found (gaps, stale backups), one line each.
    pub problems: Vec<String>,
}

/// Computes the status of every source in the repository plus every
/// `configured` source (which shows as violating its RPO when it has no
/// backup). `wal_last` gives the time WAL was last archived per source.
///
/// # Errors
/// Repository errors.
pub async fn status(
    repo: &Repository,
    configured: &[String],
    objectives: &ObjectivesConfig,
    wal_last: &std::collections::BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Vec<SourceStatus>> {
    let (manifests, damaged) = repo.list_backups_checked(None).await?;
    let mut names: Vec<String> = manifests.iter().map(|m| m.source.name.clone()).collect();
    names.extend(damaged.iter().map(|d| d.source.clone()));
    names.extend(configured.iter().cloned());
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let mine: Vec<_> = manifests.iter().filter(|m| m.source.name == name).collect();
        let last = mine.iter().max_by_key(|m| m.finished_at);
        let obj = objectives.for_source(&name);
        let wal = wal_last.get(&name).copied();
        let newest_point = [last.map(|m| m.finished_at), wal]
            .into_iter()
            .flatten()
            .max();
        let age = newest_point.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
        let rpo = obj.rpo.as_secs_f64();
        let rpo_met = age.is_some_and(|a| a <= rpo);
        let mut problems: Vec<String> = damaged
            .iter()
            .filter(|d| d.source == name)
            .map(|d| format!("damaged manifest {}: {}", d.object, d.reason))
            .collect();
        match age {
            None => problems.push("no backup".to_string()),
            Some(a) if a > rpo => problems.push(format!(
                "newest recovery point is {} old, RPO is {}",
                humantime::format_duration(std::time::Duration::from_secs(a as u64)),
                humantime::format_duration(obj.rpo)
            )),
            _ => {}
        }
        out.push(SourceStatus {
            source: name.clone(),
            kind: last.map(|m| m.source.kind.clone()),
            last_backup_id: last.map(|m| m.backup_id.clone()),
            last_backup_at: last.map(|m| m.finished_at),
            last_backup_age_seconds: last
                .map(|m| (now - m.finished_at).num_milliseconds() as f64 / 1000.0),
            last_backup_stored_bytes: last.map(|m| m.stored_size()),
            last_backup_plain_bytes: last.map(|m| m.plain_size()),
            backups: mine.len(),
            last_wal_archived_at: wal,
            rpo_seconds: rpo,
            rto_seconds: obj.rto.as_secs_f64(),
            rpo_met,
            problems,
        });
    }
    Ok(out)
}

/// Renders the status in the Prometheus text exposition format (through
/// `prometheus-client`), with the metric names the runbook's alerts use:
/// `backup_last_success_timestamp_seconds{source}`, `backup_size_bytes{source}`,
/// `wal_archive_last_success_timestamp_seconds{source}`,
/// `objective_rpo_seconds{source}`, `objective_rto_seconds{source}` and
/// `objective_rpo_met{source}` (1 or 0).
pub fn to_prometheus(statuses: &[SourceStatus]) -> String {
    type G = Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>;
    let mut registry = <Registry>::default();
    let last = G::default();
    let size = G::default();
    let wal = G::default();
    let rpo = G::default();
    let rto = G::default();
    let met = G::default();
    registry.register(
        "backup_last_success_timestamp_seconds",
        "Unix time the newest good backup finished",
        last.clone(),
    );
    registry.register(
        "backup_size_bytes",
        "Stored size of the newest good backup",
        size.clone(),
    );
    registry.register(
        "wal_archive_last_success_timestamp_seconds",
        "Unix time WAL was last archived",
        wal.clone(),
    );
    registry.register(
        "objective_rpo_seconds",
        "Recovery point objective",
        rpo.clone(),
    );
    registry.register(
        "objective_rto_seconds",
        "Recovery time objective",
        rto.clone(),
    );
    registry.register(
        "objective_rpo_met",
        "1 when the newest recovery point is within the RPO",
        met.clone(),
    );
    for s in statuses {
        let l = vec![("source".to_string(), s.source.clone())];
        if let Some(t) = s.last_backup_at {
            last.get_or_create(&l)
                .set(t.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(b) = s.last_backup_stored_bytes {
            size.get_or_create(&l).set(b as f64);
        }
        if let Some(t) = s.last_wal_archived_at {
            wal.get_or_create(&l)
                .set(t.timestamp_millis() as f64 / 1000.0);
        }
        rpo.get_or_create(&l).set(s.rpo_seconds);
        rto.get_or_create(&l).set(s.rto_seconds);
        met.get_or_create(&l).set(if s.rpo_met { 1.0 } else { 0.0 });
    }
    let mut text = String::new();
    encode(&mut text, &registry).expect("encoding to a String cannot fail");
    text
}
