//! Prune: plan, then carry out, under the repository's `prune` lease.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_storage::object_store::path::Path;
use dr_storage::{LeaseOptions, Manifest, Repository};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::retention::{plan_retention, BackupFacts, RetentionPlan, RetentionPolicy, WalFacts};

/// An object under `backups/` that no manifest lists: left by an interrupted
/// backup or prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    /// Object path.
    pub object: String,
    /// Bytes.
    pub size: u64,
    /// Last modified.
    pub last_modified: DateTime<Utc>,
}

/// What `dr prune` will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePlan {
    /// Backups and WAL.
    pub retention: RetentionPlan,
    /// Orphans older than the grace period, to be removed.
    pub orphans: Vec<Orphan>,
    /// Orphans younger than the grace period (a backup may be running).
    pub orphans_in_grace: usize,
    /// Verification records to delete
    /// ([`crate::verification::stale_records`]).
    #[serde(default)]
    pub verifications: Vec<String>,
}

impl PrunePlan {
    /// Bytes the plan frees.
    pub fn bytes_freed(&self) -> u64 {
        self.retention.bytes_freed() + self.orphans.iter().map(|o| o.size).sum::<u64>()
    }
}

/// Options of [`plan_prune`] and [`prune`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PruneOptions {
    /// Objects under no manifest younger than this are left alone (default
    /// 24 h), so a backup in progress is never pruned.
    pub orphan_grace: Duration,
    /// How long to wait for the `prune` lease (default: fail at once).
    pub lock_wait: Duration,
    /// Break a stale `prune` lease.
    pub break_stale_lock: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            orphan_grace: Duration::from_secs(24 * 3600),
            lock_wait: Duration::ZERO,
            break_stale_lock: false,
        }
    }
}

/// Parses an LSN written as `X/Y` (hex halves) or a plain number.
pub fn parse_lsn(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let (hi, lo) = s.split_once('/')?;
            Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
        }
        _ => None,
    }
}

/// Retention facts of a committed backup, from its manifest. Physical
/// PostgreSQL backups carry `system_identifier`, `start_lsn` and `stop_lsn` in
/// their metadata; a manifest with `"status": "failed"` is not good.
pub fn facts(m: &Manifest) -> BackupFacts {
    let md = &m.metadata;
    let sysid = md.get("system_identifier").and_then(|v| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let range = match (
        md.get("start_lsn").and_then(parse_lsn),
        md.get("stop_lsn").and_then(parse_lsn),
    ) {
        (Some(s), Some(e)) => Some((s, e)),
        _ => None,
    };
    BackupFacts {
        source: m.source.name.clone(),
        id: m.backup_id.clone(),
        started_at: m.started_at,
        good: md
            .get("status")
            .and_then(|s| s.as_str())
            .is_none_or(|s| s != "failed"),
        system_id: sysid,
        wal_range: range,
        stored_bytes: m.stored_size(),
    }
}

/// Makes the plan: retention over every listed backup and the given WAL, and
/// the orphans. Changes nothing.
///
/// # Errors
/// Repository errors.
pub async fn plan_prune(
    repo: &Repository,
    policies: &BTreeMap<String, RetentionPolicy>,
    wal: &[WalFacts],
    options: &PruneOptions,
    now: DateTime<Utc>,
) -> Result<PrunePlan> {
    let manifests = repo.list_backups(None).await?;
    let mut facts: Vec<BackupFacts> = manifests.iter().map(facts).collect();
    // Before anything is deleted because a newer backup exists, that newer
    // backup must be intact: per source with a policy, newest first, check
    // the stored size and SHA-256 of every object (no key needed) until one
    // backup passes. Those that fail are not good: they anchor nothing and
    // the older intact backups stay. They are kept, for inspection.
    let mut damaged: BTreeMap<String, String> = BTreeMap::new();
    let mut by_source: BTreeMap<&str, Vec<&Manifest>> = BTreeMap::new();
    for m in &manifests {
        by_source.entry(m.source.name.as_str()).or_default().push(m);
    }
    for (source, mut list) in by_source {
        if policies.get(source).is_none_or(|p| p.is_empty()) {
            continue;
        }
        list.sort_by_key(|m| std::cmp::Reverse(m.started_at));
        for m in list {
            let failures: Vec<String> = repo
                .check_stored(m)
                .await
                .into_iter()
                .filter_map(|(_, r)| r.err().map(|e| e.to_string()))
                .collect();
            if failures.is_empty() {
                break;
            }
            tracing::warn!(source, backup_id = %m.backup_id, "backup failed its stored-digest check");
            damaged.insert(m.backup_id.clone(), failures.join("; "));
        }
    }
    for f in facts.iter_mut() {
        if damaged.contains_key(&f.id) {
            f.good = false;
        }
    }
    let mut retention = plan_retention(policies, &facts, wal, now);
    for d in retention.backups.iter_mut() {
        if let Some(why) = damaged.get(&d.backup.id) {
            d.kept_by = vec![format!("damaged, kept for inspection: {why}")];
        }
    }
    // Orphans: objects in backup directories without a manifest.
    let listed: std::collections::BTreeSet<String> = manifests
        .iter()
        .map(|m| format!("backups/{}/{}/", m.source.name, m.backup_id))
        .collect();
    let mut orphans = Vec::new();
    let mut in_grace = 0;
    let mut stream = repo.store().list(Some(&Path::from("backups")));
    let grace = chrono::Duration::from_std(options.orphan_grace).unwrap_or(chrono::Duration::MAX);
    while let Some(meta) = stream.next().await {
        let meta = meta.map_err(|e| dr_storage::Error::store("backups/", e))?;
        let path = meta.location.to_string();
        let parts: Vec<&str> = path.splitn(4, '/').collect();
        if parts.len() < 4 {
            continue;
        }
        let dir = format!("backups/{}/{}/", parts[1], parts[2]);
        if listed.contains(&dir) {
            continue;
        }
        if now - meta.last_modified < grace {
            in_grace += 1;
        } else {
            orphans.push(Orphan {
                object: path,
                size: meta.size,
                last_modified: meta.last_modified,
            });
        }
    }
    let kept: std::collections::BTreeSet<(&str, &str)> = retention
        .backups
        .iter()
        .filter(|d| d.keep())
        .map(|d| (d.backup.source.as_str(), d.backup.id.as_str()))
        .collect();
    let records = crate::verification::list_records(repo).await?;
    let verifications =
        crate::verification::stale_records(&records, |source, id| kept.contains(&(source, id)));
    Ok(PrunePlan {
        retention,
        orphans,
        orphans_in_grace: in_grace,
        verifications,
    })
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Backups deleted.
    pub backups_deleted: Vec<String>,
    /// WAL objects deleted.
    pub wal_deleted: usize,
    /// Orphans deleted.
    pub orphans_deleted: usize,
    /// Verification records deleted.
    #[serde(default)]
    pub verifications_deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// Carries out `plan` under the exclusive `prune` lease. Each backup loses
/// its manifest first, then its data, so an interruption leaves orphans,
/// never a listed backup with missing objects. Running it again is harmless.
///
/// # Errors
/// [`dr_storage::Error::Locked`] when another prune holds the lease;
/// repository errors.
pub async fn prune(
    repo: &Repository,
    plan: &PrunePlan,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let mut lease_opts = LeaseOptions::default();
    lease_opts.wait = options.lock_wait;
    lease_opts.break_stale = options.break_stale_lock;
    lease_opts.purpose = "dr prune".into();
    let mut lease = repo.acquire_lease("prune", &lease_opts).await?;
    let result = async {
        let mut report = PruneReport::default();
        let manifests = repo.list_backups(None).await?;
        for b in plan.retention.deletions() {
            if let Some(m) = manifests
                .iter()
                .find(|m| m.source.name == b.source && m.backup_id == b.id)
            {
                repo.delete_backup(m).await?;
                report.backups_deleted.push(b.id.clone());
                report.bytes_freed += b.stored_bytes;
                lease.renew().await?;
            }
        }
        for w in &plan.retention.wal {
            for object in &w.deleted {
                delete_if_present(repo, object).await?;
                report.wal_deleted += 1;
            }
            report.bytes_freed += w.bytes_freed;
        }
        for object in &plan.verifications {
            delete_if_present(repo, object).await?;
            report.verifications_deleted += 1;
        }
        for o in &plan.orphans {
            delete_if_present(repo, &o.object).await?;
            report.orphans_deleted += 1;
            report.bytes_freed += o.size;
        }
        Ok(report)
    }
    .await;
    lease.release().await?;
    result
}

/// Deletes `object`; one already gone counts as deleted (prune runs again
/// after an interruption).
async fn delete_if_present(repo: &Repository, object: &str) -> Result<()> {
    match repo.store().delete(&Path::from(object)).await {
        Ok(()) | Err(dr_storage::object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(dr_storage::Error::store(object, e).into()),
    }
}
