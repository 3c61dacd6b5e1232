//! Prune: plan, then carry out, under the repository's `prune` lease.
//!
//! A backup directory whose `manifest.json` exists but cannot be read,
//! parsed or verified (see [`dr_storage::DamagedManifest`]) is never an
//! orphan: the plan names it in [`PrunePlan::damaged`], nothing under it is
//! deleted, it counts toward no `keep_*` rule, no WAL of its source is
//! deleted (its WAL range is unknown), and [`prune`] ends in an error after
//! the rest of the plan is carried out, so that every front end exits
//! non-zero. [`prune_with_report`] returns the report instead, with
//! [`PruneReport::damaged`] for a caller that renders it and decides the exit
//! status itself ([`PruneReport::ok`]).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_storage::object_store::path::Path;
use dr_storage::{DamagedManifest, LeaseOptions, Manifest, Repository};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
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
    /// Backups whose manifest exists but cannot be read, parsed or verified.
    /// Nothing under their directories is deleted, and no WAL of their
    /// sources; [`prune`] fails naming them once the rest is done. Repair or
    /// remove them by hand (the data objects are intact as far as anyone
    /// knows).
    #[serde(default)]
    pub damaged: Vec<DamagedManifest>,
    /// Staging files of writes into a local repository that were killed
    /// ([`Repository::staging_leftovers`]), older than the orphan grace
    /// period, to be removed. Younger ones count in `orphans_in_grace`.
    #[serde(default)]
    pub staging: Vec<dr_storage::StagingFile>,
    /// Backup directories (`backups/<source>/<id>/`) without a manifest
    /// whose backup is marked in progress by a live writer
    /// ([`Repository::backup_in_progress`]): left alone however old their
    /// objects are.
    #[serde(default)]
    pub in_progress: Vec<String>,
    /// In-progress marks left by killed backups (expired, or their holder
    /// gone; [`Repository::stale_backup_marks`]), as lease names, to be
    /// removed.
    #[serde(default)]
    pub stale_marks: Vec<String>,
}

impl PrunePlan {
    /// Bytes the plan frees.
    pub fn bytes_freed(&self) -> u64 {
        self.retention.bytes_freed()
            + self.orphans.iter().map(|o| o.size).sum::<u64>()
            + self.staging.iter().map(|f| f.size).sum::<u64>()
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
    let (manifests, damaged_manifests) = repo.list_backups_checked(None).await?;
    for d in &damaged_manifests {
        tracing::warn!(object = %d.object, reason = %d.reason, "damaged manifest: its backup is kept");
    }
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
    // A source with a damaged manifest may hold a base backup whose WAL
    // range nobody can read now: none of its WAL goes.
    let damaged_sources: std::collections::BTreeSet<&str> = damaged_manifests
        .iter()
        .map(|d| d.source.as_str())
        .collect();
    for w in retention.wal.iter_mut() {
        if damaged_sources.contains(w.source.as_str()) && !w.deleted.is_empty() {
            w.kept.append(&mut w.deleted);
            w.kept.sort();
            w.bytes_freed = 0;
        }
    }
    // Orphans: objects in backup directories without a manifest. A
    // directory whose manifest exists but is damaged is not one.
    let listed: std::collections::BTreeSet<String> = manifests
        .iter()
        .map(|m| format!("backups/{}/{}/", m.source.name, m.backup_id))
        .chain(
            damaged_manifests
                .iter()
                .map(|d| format!("backups/{}/{}/", d.source, d.backup_id)),
        )
        .collect();
    let mut orphans = Vec::new();
    let mut in_grace = 0;
    // Whether each unlisted directory is a backup still being written,
    // asked once per directory and only for objects past the grace.
    let mut marked: std::collections::BTreeMap<String, Unlisted> = Default::default();
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
            continue;
        }
        let state = match marked.get(&dir) {
            Some(r) => *r,
            None => {
                let r = unlisted_state(repo, parts[1], parts[2]).await?;
                marked.insert(dir.clone(), r);
                r
            }
        };
        if state == Unlisted::Orphaned {
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
        .chain(
            damaged_manifests
                .iter()
                .map(|d| (d.source.as_str(), d.backup_id.as_str())),
        )
        .collect();
    let mut staging = Vec::new();
    for f in repo.staging_leftovers()? {
        if now - f.last_modified < grace {
            in_grace += 1;
        } else {
            staging.push(f);
        }
    }
    let in_progress = marked
        .into_iter()
        .filter_map(|(dir, state)| (state == Unlisted::Running).then_some(dir))
        .collect();
    let stale_marks = repo.stale_backup_marks().await?;
    let records = crate::verification::list_records(repo).await?;
    let verifications =
        crate::verification::stale_records(&records, |source, id| kept.contains(&(source, id)));
    Ok(PrunePlan {
        retention,
        orphans,
        orphans_in_grace: in_grace,
        verifications,
        damaged: damaged_manifests,
        staging,
        in_progress,
        stale_marks,
    })
}

/// What a backup directory without a manifest at listing time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unlisted {
    /// Marked in progress by a live writer.
    Running,
    /// Committed since the listing: not an orphan.
    Committed,
    /// Neither: left by an interrupted backup (or prune).
    Orphaned,
}

/// Whether backup `id` of `source`, which had no manifest when the backups
/// were listed, is being written, was committed since, or is an orphan. The
/// mark is read first: a writer writes its manifest before it removes its
/// mark, so a directory found unmarked and then without a manifest was not
/// committed in between.
async fn unlisted_state(repo: &Repository, source: &str, id: &str) -> Result<Unlisted> {
    if repo.backup_in_progress(source, id).await? {
        return Ok(Unlisted::Running);
    }
    let manifest = Path::from(format!("backups/{source}/{id}/manifest.json"));
    match repo.store().head(&manifest).await {
        Ok(_) => Ok(Unlisted::Committed),
        Err(dr_storage::object_store::Error::NotFound { .. }) => Ok(Unlisted::Orphaned),
        Err(e) => Err(dr_storage::Error::store(manifest.to_string(), e).into()),
    }
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
    /// Manifest objects that exist but are damaged; their backups were kept
    /// ([`PrunePlan::damaged`]). Not empty means the prune is not clean.
    #[serde(default)]
    pub damaged: Vec<String>,
}

impl PruneReport {
    /// Whether the repository held nothing prune had to leave alone for
    /// damage (no damaged manifest).
    pub fn ok(&self) -> bool {
        self.damaged.is_empty()
    }

    /// A one-line summary of what was deleted.
    pub fn summary(&self) -> String {
        format!(
            "{} backup(s), {} WAL object(s), {} orphan(s), {} verification record(s) deleted; {} bytes freed",
            self.backups_deleted.len(),
            self.wal_deleted,
            self.orphans_deleted,
            self.verifications_deleted,
            self.bytes_freed
        )
    }
}

/// Carries out `plan` under the exclusive `prune` lease, as
/// [`prune_with_report`], and fails when the plan found damaged manifests.
///
/// # Errors
/// As [`prune_with_report`]; [`Error::VerificationFailed`] naming every
/// damaged manifest (and saying what was deleted meanwhile) when
/// [`PrunePlan::damaged`] is not empty: their backups were kept, and the
/// repository needs an operator.
pub async fn prune(
    repo: &Repository,
    plan: &PrunePlan,
    options: &PruneOptions,
) -> Result<PruneReport> {
    let report = prune_with_report(repo, plan, options).await?;
    if report.ok() {
        return Ok(report);
    }
    Err(Error::VerificationFailed {
        what: format!("repository {repo}"),
        reason: format!(
            "{} backup(s) kept because their manifest is damaged ({}); the rest of the plan was carried out: {}",
            plan.damaged.len(),
            plan.damaged
                .iter()
                .map(|d| format!("{}: {}", d.object, d.reason))
                .collect::<Vec<_>>()
                .join("; "),
            report.summary()
        ),
    })
}

/// Carries out `plan` under the exclusive `prune` lease. Each backup loses
/// its manifest first, then its data, so an interruption leaves orphans,
/// never a listed backup with missing objects. Running it again is harmless.
/// Backups of [`PrunePlan::damaged`] are left alone and named in
/// [`PruneReport::damaged`]: the caller must treat a report that is not
/// [`PruneReport::ok`] as a failure (exit non-zero).
///
/// # Errors
/// [`dr_storage::Error::Locked`] when another prune holds the lease;
/// repository errors.
pub async fn prune_with_report(
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
        let mut report = PruneReport {
            damaged: plan.damaged.iter().map(|d| d.object.clone()).collect(),
            ..PruneReport::default()
        };
        let (manifests, _) = repo.list_backups_checked(None).await?;
        for b in plan.retention.deletions() {
            if let Some(m) = manifests
                .iter()
                .find(|m| m.source.name == b.source && m.backup_id == b.id)
            {
                tracing::info!(source = %b.source, backup_id = %b.id, "deleting backup");
                repo.delete_backup(m).await?;
                report.backups_deleted.push(b.id.clone());
                report.bytes_freed += b.stored_bytes;
                lease.renew().await?;
            }
        }
        for w in &plan.retention.wal {
            for object in &w.deleted {
                // The segment's events and the name's claim first: an
                // interruption leaves a data object without them (read as
                // before events and claims were written), never an events
                // object or a claim without its data.
                if let Some(events) = dr_storage::wal_events_path(object) {
                    delete_if_present(repo, &events).await?;
                }
                if let Some(claim) = dr_storage::wal_claim_path(object) {
                    delete_if_present(repo, &claim).await?;
                }
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
        for f in &plan.staging {
            repo.remove_staging(f)?;
            report.orphans_deleted += 1;
            report.bytes_freed += f.size;
        }
        for mark in &plan.stale_marks {
            repo.remove_lease(mark).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::RetentionPolicy;
    use dr_storage::object_store::PutPayload;
    use dr_storage::{Identities, InitOptions, Location, StoreOptions};
    use futures::TryStreamExt as _;

    async fn repo(name: &str) -> Repository {
        let key = Identities::generate();
        Repository::init(
            &Location::parse(&format!("memory://prune-{name}-{}", rand_suffix())).unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap()
    }

    fn rand_suffix() -> u64 {
        Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64
    }

    async fn backup(repo: &Repository, metadata: serde_json::Value) -> Manifest {
        let b = repo.begin_backup("test", "db").unwrap();
        b.write_artifact("data", &mut &b"rows"[..]).await.unwrap();
        let m = b.commit(metadata).await.unwrap();
        // Distinct start times, in order.
        tokio::time::sleep(Duration::from_millis(5)).await;
        m
    }

    #[test]
    fn lsns_are_read_as_text_halves_or_numbers() {
        use serde_json::json;
        assert_eq!(parse_lsn(&json!("1/2")), Some((1 << 32) | 2));
        assert_eq!(
            parse_lsn(&json!("A/FF000028")),
            Some((0xA << 32) | 0xFF00_0028)
        );
        assert_eq!(parse_lsn(&json!(0x1_0000_0002_u64)), Some(0x1_0000_0002));
        for bad in [
            json!("12"),
            json!("x/1"),
            json!("1/y"),
            json!(null),
            json!(-1),
        ] {
            assert_eq!(parse_lsn(&bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn facts_come_from_the_manifests_metadata() {
        let r = repo("facts").await;
        let physical = backup(
            &r,
            serde_json::json!({"system_identifier": 7_301_234_567_890_u64,
                "start_lsn": "0/2000028", "stop_lsn": 50_331_648_u64}),
        )
        .await;
        let f = facts(&physical);
        assert_eq!(f.system_id.as_deref(), Some("7301234567890"));
        assert_eq!(f.wal_range, Some((0x0200_0028, 50_331_648)));
        assert!(f.good);
        assert_eq!(
            (f.source.as_str(), f.id.as_str()),
            ("db", physical.backup_id.as_str())
        );
        assert_eq!(f.stored_bytes, physical.stored_size());
        assert!(f.stored_bytes > 0);

        let text_id = backup(
            &r,
            serde_json::json!({"system_identifier": "42", "status": "ok"}),
        )
        .await;
        let f = facts(&text_id);
        assert_eq!(f.system_id.as_deref(), Some("42"));
        assert_eq!(f.wal_range, None, "no LSNs, no range");
        assert!(f.good, "only \"failed\" is not good");

        let failed = backup(
            &r,
            serde_json::json!({"status": "failed", "start_lsn": "0/1"}),
        )
        .await;
        let f = facts(&failed);
        assert!(!f.good);
        assert_eq!(
            (f.system_id, f.wal_range),
            (None, None),
            "half a range is none"
        );
    }

    #[test]
    fn bytes_freed_adds_deleted_backups_wal_orphans_and_staging() {
        let now = Utc::now();
        let facts = |id: &str, bytes| BackupFacts {
            source: "db".into(),
            id: id.into(),
            started_at: now,
            good: true,
            system_id: None,
            wal_range: None,
            stored_bytes: bytes,
        };
        let plan = PrunePlan {
            retention: RetentionPlan {
                now,
                backups: vec![
                    crate::retention::BackupDecision {
                        backup: facts("old", 1000),
                        kept_by: vec![],
                    },
                    crate::retention::BackupDecision {
                        backup: facts("new", 50_000),
                        kept_by: vec!["keep_last".into()],
                    },
                ],
                wal: vec![crate::retention::WalDecision {
                    source: "db".into(),
                    system_id: "1".into(),
                    keep_from_lsn: None,
                    keep_ranges: vec![],
                    kept: vec![],
                    deleted: vec!["w".into()],
                    bytes_freed: 200,
                }],
            },
            orphans: vec![
                Orphan {
                    object: "a".into(),
                    size: 30,
                    last_modified: now,
                },
                Orphan {
                    object: "b".into(),
                    size: 4,
                    last_modified: now,
                },
            ],
            orphans_in_grace: 3,
            verifications: vec![],
            damaged: vec![],
            staging: vec![dr_storage::StagingFile {
                path: "s#1".into(),
                size: 5,
                last_modified: now,
            }],
            in_progress: vec![],
            stale_marks: vec![],
        };
        assert_eq!(plan.bytes_freed(), 1000 + 200 + 30 + 4 + 5);
    }

    async fn objects_of(repo: &Repository, m: &Manifest) -> Vec<String> {
        let prefix = Path::from(format!("backups/{}/{}", m.source.name, m.backup_id));
        let listed: Vec<_> = repo
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .unwrap();
        let mut v: Vec<String> = listed.iter().map(|o| o.location.to_string()).collect();
        v.sort();
        v
    }

    /// Flips one byte of the stored manifest of `m` so that it no longer
    /// parses.
    async fn damage_manifest(repo: &Repository, m: &Manifest) {
        let path = Path::from(format!(
            "backups/{}/{}/manifest.json",
            m.source.name, m.backup_id
        ));
        let mut body = repo
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        body[0] ^= 0x01; // '{' becomes 'z'
        repo.store()
            .put(&path, PutPayload::from(body))
            .await
            .unwrap();
    }

    /// An object under no manifest and a killed write's staging file: each
    /// is in grace until exactly `grace` after it was last written, then
    /// removed (orphan, staging leftover). Counted, never removed, before.
    #[tokio::test(flavor = "multi_thread")]
    async fn orphans_and_staging_files_leave_grace_exactly_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let key = Identities::generate();
        let repo = Repository::init(
            &Location::parse(dir.path().to_str().unwrap()).unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        // Not in a backup directory: never an orphan, however old.
        let stray = Path::from("backups/db/README");
        repo.store()
            .put(&stray, PutPayload::from_static(b"notes"))
            .await
            .unwrap();
        let orphan = Path::from("backups/db/20261201T000000Z-dead/base.tar.zst.age");
        repo.store()
            .put(&orphan, PutPayload::from_static(b"12345"))
            .await
            .unwrap();
        let written = repo.store().head(&orphan).await.unwrap().last_modified;
        let staging = dir
            .path()
            .join("backups/db/20261201T000000Z-dead/pg_wal.tar.zst.age#7");
        std::fs::write(&staging, b"1234567").unwrap();
        let staged = repo.staging_leftovers().unwrap()[0].last_modified;

        let grace = Duration::from_secs(3600);
        let options = PruneOptions {
            orphan_grace: grace,
            ..Default::default()
        };
        let plan_at = |now| {
            let (repo, options) = (&repo, &options);
            async move {
                plan_prune(repo, &BTreeMap::new(), &[], options, now)
                    .await
                    .unwrap()
            }
        };
        let end = |t: DateTime<Utc>| t + chrono::Duration::from_std(grace).unwrap();
        // Both in grace a second before its end.
        let plan = plan_at(end(written.min(staged)) - chrono::Duration::seconds(1)).await;
        assert_eq!(
            (
                plan.orphans.len(),
                plan.staging.len(),
                plan.orphans_in_grace
            ),
            (0, 0, 2),
            "{plan:?}"
        );
        assert_eq!(plan.bytes_freed(), 0);
        // The orphan at exactly its grace's end; the staging file then too.
        let plan = plan_at(end(written)).await;
        assert_eq!(plan.orphans.len(), 1, "{plan:?}");
        assert_eq!(plan.orphans[0].object, orphan.to_string());
        assert_eq!(plan.orphans[0].size, 5);
        let plan = plan_at(end(written.max(staged))).await;
        assert_eq!(
            (
                plan.orphans.len(),
                plan.staging.len(),
                plan.orphans_in_grace
            ),
            (1, 1, 0),
            "{plan:?}"
        );
        assert_eq!(plan.staging[0].size, 7);
        assert_eq!(plan.bytes_freed(), 5 + 7);

        let report = prune(&repo, &plan, &options).await.unwrap();
        assert_eq!(
            (report.orphans_deleted, report.bytes_freed),
            (2, 12),
            "{report:?}"
        );
        assert!(report.ok());
        assert_eq!(
            report.summary(),
            "0 backup(s), 0 WAL object(s), 2 orphan(s), 0 verification record(s) deleted; 12 bytes freed"
        );
        assert!(matches!(
            repo.store().head(&orphan).await,
            Err(dr_storage::object_store::Error::NotFound { .. })
        ));
        assert!(!staging.exists());
        assert!(repo.staging_leftovers().unwrap().is_empty());
    }

    /// The backups deleted are exactly the plan's, of the plan's source,
    /// and every object of each goes; the kept ones keep every object.
    #[tokio::test(flavor = "multi_thread")]
    async fn prune_deletes_exactly_the_planned_backups() {
        let repo = repo("exact").await;
        let other = {
            let b = repo.begin_backup("test", "app").unwrap();
            b.write_artifact("data", &mut &b"rows"[..]).await.unwrap();
            b.commit(serde_json::json!({})).await.unwrap()
        };
        let b1 = backup(&repo, serde_json::json!({})).await;
        let b2 = backup(&repo, serde_json::json!({})).await;
        let b3 = backup(&repo, serde_json::json!({})).await;
        let (kept_objects, other_objects) = (
            objects_of(&repo, &b3).await,
            objects_of(&repo, &other).await,
        );
        // b1 verified a minute before b3 (the newest record of a source
        // always stays).
        for (b, ago) in [(&b1, 60), (&b3, 0)] {
            let record = crate::verification::VerificationRecord {
                source: "db".into(),
                backup_id: b.backup_id.clone(),
                verified_at: Utc::now() - chrono::Duration::seconds(ago),
                level: crate::verification::VerifyLevel::Stored,
                ok: true,
                unproven: false,
                problems: vec![],
            };
            crate::verification::record_verification(&repo, &record)
                .await
                .unwrap();
        }
        let options = PruneOptions::default();
        // keep_last 2: the oldest goes, and the one deleted is that one (not
        // another backup of the same source).
        let b2_objects = objects_of(&repo, &b2).await;
        let plan = plan_prune(&repo, &keep_last(2), &[], &options, Utc::now())
            .await
            .unwrap();
        let first = prune(&repo, &plan, &options).await.unwrap();
        assert_eq!(first.backups_deleted, vec![b1.backup_id.clone()]);
        assert!(objects_of(&repo, &b1).await.is_empty());
        assert_eq!(objects_of(&repo, &b2).await, b2_objects);
        // The deleted backup's verification record went with it.
        assert_eq!(first.verifications_deleted, 1, "{first:?}");
        // keep_last 1: the next one goes.
        let plan = plan_prune(&repo, &keep_last(1), &[], &options, Utc::now())
            .await
            .unwrap();
        let planned: Vec<&str> = plan.retention.deletions().map(|b| b.id.as_str()).collect();
        assert_eq!(planned, vec![b2.backup_id.as_str()]);
        let second = prune(&repo, &plan, &options).await.unwrap();
        let report = PruneReport {
            backups_deleted: [first.backups_deleted, second.backups_deleted].concat(),
            bytes_freed: first.bytes_freed + second.bytes_freed,
            verifications_deleted: first.verifications_deleted + second.verifications_deleted,
            ..second
        };
        assert_eq!(
            report.backups_deleted,
            vec![b1.backup_id.clone(), b2.backup_id.clone()]
        );
        assert_eq!(report.bytes_freed, b1.stored_size() + b2.stored_size());
        assert_eq!(report.verifications_deleted, 1, "{report:?}");
        let records = crate::verification::list_records(&repo).await.unwrap();
        let verified: Vec<&str> = records.iter().map(|r| r.backup_id.as_str()).collect();
        assert_eq!(verified, vec![b3.backup_id.as_str()]);
        let listed: Vec<String> = repo
            .list_backups(None)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.backup_id)
            .collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.contains(&b3.backup_id) && listed.contains(&other.backup_id));
        assert!(objects_of(&repo, &b1).await.is_empty());
        assert!(objects_of(&repo, &b2).await.is_empty());
        assert_eq!(objects_of(&repo, &b3).await, kept_objects);
        assert_eq!(objects_of(&repo, &other).await, other_objects);
    }

    fn keep_last(n: u32) -> BTreeMap<String, RetentionPolicy> {
        let mut p = BTreeMap::new();
        p.insert(
            "db".to_string(),
            RetentionPolicy {
                keep_last: Some(n),
                ..Default::default()
            },
        );
        p
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_newest_manifest_keeps_its_backup_and_fails_the_prune() {
        let repo = repo("damaged").await;
        let b1 = backup(&repo, serde_json::json!({})).await;
        let b2 = backup(&repo, serde_json::json!({})).await;
        let b3 = backup(&repo, serde_json::json!({})).await;
        let b3_objects = objects_of(&repo, &b3).await;
        assert_eq!(b3_objects.len(), 2);
        damage_manifest(&repo, &b3).await;

        let options = PruneOptions {
            orphan_grace: Duration::ZERO,
            ..Default::default()
        };
        let later = Utc::now() + chrono::Duration::days(30);
        let plan = plan_prune(&repo, &keep_last(2), &[], &options, later)
            .await
            .unwrap();
        // Named in the plan, never an orphan.
        assert_eq!(plan.damaged.len(), 1, "{plan:?}");
        assert_eq!(plan.damaged[0].backup_id, b3.backup_id);
        assert!(plan.orphans.is_empty(), "{:?}", plan.orphans);
        // The two intact backups are what keep_last = 2 keeps.
        assert_eq!(plan.retention.deletions().count(), 0, "{plan:?}");

        let err = prune(&repo, &plan, &options).await.unwrap_err();
        assert!(matches!(err, Error::VerificationFailed { .. }), "{err:?}");
        assert!(err.to_string().contains("manifest.json"), "{err}");
        assert_eq!(
            objects_of(&repo, &b3).await,
            b3_objects,
            "nothing of it deleted"
        );
        let listed: Vec<String> = repo
            .list_backups(Some("db"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.backup_id)
            .collect();
        assert_eq!(listed, vec![b1.backup_id.clone(), b2.backup_id.clone()]);

        // The report form names it too, and a second run deletes nothing.
        let again = plan_prune(&repo, &keep_last(2), &[], &options, later)
            .await
            .unwrap();
        let report = prune_with_report(&repo, &again, &options).await.unwrap();
        assert!(!report.ok());
        assert_eq!(report.damaged, vec![again.damaged[0].object.clone()]);
        assert_eq!(report.orphans_deleted + report.backups_deleted.len(), 0);
        assert_eq!(objects_of(&repo, &b3).await, b3_objects);

        // keep_last = 1: the newest intact backup stays, the older goes;
        // the damaged one still stays.
        let plan = plan_prune(&repo, &keep_last(1), &[], &options, later)
            .await
            .unwrap();
        let report = prune_with_report(&repo, &plan, &options).await.unwrap();
        assert_eq!(report.backups_deleted, vec![b1.backup_id.clone()]);
        assert_eq!(objects_of(&repo, &b3).await, b3_objects);
        assert_eq!(repo.list_backups(Some("db")).await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_flipped_digit_in_the_newest_manifest_keeps_its_backup() {
        let repo = repo("digit").await;
        let b1 = backup(&repo, serde_json::json!({ "rows": 100 })).await;
        let b2 = backup(&repo, serde_json::json!({ "rows": 100 })).await;
        let b3 = backup(&repo, serde_json::json!({ "rows": 100 })).await;
        let b3_objects = objects_of(&repo, &b3).await;
        let path = Path::from(format!("backups/db/{}/manifest.json", b3.backup_id));
        let text = repo
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let text = String::from_utf8(text.to_vec())
            .unwrap()
            .replace("\"rows\": 100", "\"rows\": 101");
        repo.store()
            .put(&path, PutPayload::from(text.into_bytes()))
            .await
            .unwrap();
        let options = PruneOptions {
            orphan_grace: Duration::ZERO,
            ..Default::default()
        };
        let later = Utc::now() + chrono::Duration::days(30);
        let plan = plan_prune(&repo, &keep_last(2), &[], &options, later)
            .await
            .unwrap();
        assert_eq!(plan.damaged.len(), 1, "{plan:?}");
        assert!(plan.damaged[0].reason.contains("digest"), "{plan:?}");
        assert!(plan.orphans.is_empty());
        assert!(prune(&repo, &plan, &options).await.is_err());
        assert_eq!(objects_of(&repo, &b3).await, b3_objects);
        let listed: Vec<String> = repo
            .list_backups(Some("db"))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.backup_id)
            .collect();
        assert_eq!(listed, vec![b1.backup_id, b2.backup_id]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pruned_wal_takes_its_claim_along() {
        let repo = repo("wal-claims").await;
        let archive = dr_storage::WalArchive::new(&repo, "db").unwrap();
        let mut wal = Vec::new();
        for i in 1u64..=4 {
            let name = format!("00000001000000000000000{i}");
            let dr_storage::PushOutcome::Stored(o) = archive
                .push(7, &name, vec![i as u8; 100].into())
                .await
                .unwrap()
            else {
                panic!()
            };
            let ev = [dr_storage::WalEvent::TablespaceDrop {
                oid: 16_000 + i as u32,
                lsn: format!("0/{:X}", (i << 24) + 40),
                continued: false,
            }];
            assert!(archive.put_events(7, &name, &ev).await.unwrap());
            wal.push(WalFacts {
                source: "db".into(),
                system_id: "7".into(),
                object: o.object,
                start_lsn: Some(i << 24),
                end_lsn: Some((i + 1) << 24),
                stored_bytes: o.stored_size,
            });
        }
        backup(
            &repo,
            serde_json::json!({
                "system_identifier": "7",
                "start_lsn": "0/3000028",
                "stop_lsn": "0/3000100",
            }),
        )
        .await;
        let mut policies = BTreeMap::new();
        policies.insert(
            "db".to_string(),
            RetentionPolicy {
                pitr_window: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        );
        let options = PruneOptions::default();
        let later = Utc::now() + chrono::Duration::days(1);
        let plan = plan_prune(&repo, &policies, &wal, &options, later)
            .await
            .unwrap();
        let deleted: Vec<&String> = plan.retention.wal.iter().flat_map(|w| &w.deleted).collect();
        assert_eq!(deleted.len(), 2, "{plan:?}");
        let report = prune(&repo, &plan, &options).await.unwrap();
        assert_eq!(report.wal_deleted, 2);
        let wal_bytes: u64 = plan.retention.wal.iter().map(|w| w.bytes_freed).sum();
        assert!(wal_bytes > 0);
        assert_eq!(report.bytes_freed, wal_bytes);
        let left: Vec<String> = repo
            .store()
            .list(Some(&Path::from("wal/db/7")))
            .map_ok(|o| o.location.to_string())
            .try_collect()
            .await
            .unwrap();
        for d in &deleted {
            let claim = dr_storage::wal_claim_path(d).unwrap();
            let events = dr_storage::wal_events_path(d).unwrap();
            assert!(
                !left.contains(d) && !left.contains(&claim) && !left.contains(&events),
                "{left:?}"
            );
        }
        // The kept segments keep their claims and events: two data objects,
        // two claims, two events objects.
        assert_eq!(left.len(), 6, "{left:?}");
        assert_eq!(archive.list_events(7).await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_wal_of_a_source_with_a_damaged_manifest_is_deleted() {
        let repo = repo("damaged-wal").await;
        let physical = |start: &str, stop: &str| {
            serde_json::json!({
                "system_identifier": "7",
                "start_lsn": start,
                "stop_lsn": stop,
            })
        };
        backup(&repo, physical("0/1000000", "0/1000100")).await;
        backup(&repo, physical("0/5000000", "0/5000100")).await;
        let newest = backup(&repo, physical("0/9000000", "0/9000100")).await;
        let wal: Vec<WalFacts> = (0u64..10)
            .map(|i| WalFacts {
                source: "db".into(),
                system_id: "7".into(),
                object: format!("wal/db/7/seg{i}"),
                start_lsn: Some(i << 24),
                end_lsn: Some((i + 1) << 24),
                stored_bytes: 1,
            })
            .collect();
        let mut policies = BTreeMap::new();
        policies.insert(
            "db".to_string(),
            RetentionPolicy {
                keep_last: Some(1),
                pitr_window: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        );
        let options = PruneOptions::default();
        let later = Utc::now() + chrono::Duration::days(1);
        let intact = plan_prune(&repo, &policies, &wal, &options, later)
            .await
            .unwrap();
        assert!(
            intact.retention.wal.iter().any(|w| !w.deleted.is_empty()),
            "{intact:?}"
        );
        damage_manifest(&repo, &newest).await;
        let plan = plan_prune(&repo, &policies, &wal, &options, later)
            .await
            .unwrap();
        assert_eq!(plan.damaged.len(), 1);
        assert!(
            plan.retention
                .wal
                .iter()
                .all(|w| w.deleted.is_empty() && w.bytes_freed == 0),
            "{plan:?}"
        );
        assert_eq!(
            plan.retention
                .wal
                .iter()
                .map(|w| w.kept.len())
                .sum::<usize>(),
            wal.len()
        );
    }

    /// A backup marked in progress is never an orphan, however old its
    /// objects; once it is committed it is an ordinary backup; a mark left
    /// by a killed writer (expired) is removed and no longer protects.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_running_backup_is_never_an_orphan_and_stale_marks_go() {
        let repo = repo("running").await;
        let options = PruneOptions {
            orphan_grace: Duration::ZERO,
            ..Default::default()
        };
        let running = repo.begin_backup_marked("test", "db").await.unwrap();
        running
            .write_artifact("data", &mut &b"rows"[..])
            .await
            .unwrap();
        let dir = format!("backups/db/{}/", running.id());
        let plan = plan_prune(&repo, &keep_last(1), &[], &options, Utc::now())
            .await
            .unwrap();
        assert!(plan.orphans.is_empty(), "{:?}", plan.orphans);
        assert_eq!(plan.in_progress, vec![dir.clone()]);
        assert!(plan.stale_marks.is_empty());
        prune(&repo, &plan, &options).await.unwrap();
        let m = running.commit(serde_json::json!({})).await.unwrap();
        assert_eq!(objects_of(&repo, &m).await.len(), 2);
        assert!(!repo.backup_in_progress("db", &m.backup_id).await.unwrap());

        // A killed writer: its objects and an expired mark.
        let killed = repo.begin_backup("test", "db").unwrap();
        killed
            .write_artifact("data", &mut &b"rows"[..])
            .await
            .unwrap();
        let id = killed.id().to_string();
        std::mem::forget(killed);
        let lease = serde_json::json!({
            "name": format!("backup-db-{id}"),
            "holder": "elsewhere:1:00",
            "purpose": "backup in progress",
            "acquired_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-01T00:05:00Z",
        });
        let mark = Path::from(format!("locks/backup-db-{id}.json"));
        repo.store()
            .put(&mark, PutPayload::from(serde_json::to_vec(&lease).unwrap()))
            .await
            .unwrap();
        assert!(!repo.backup_in_progress("db", &id).await.unwrap());
        let plan = plan_prune(&repo, &keep_last(1), &[], &options, Utc::now())
            .await
            .unwrap();
        assert!(plan.in_progress.is_empty());
        assert_eq!(plan.stale_marks, vec![format!("backup-db-{id}")]);
        assert_eq!(plan.orphans.len(), 1, "{:?}", plan.orphans);
        prune(&repo, &plan, &options).await.unwrap();
        assert!(matches!(
            repo.store().head(&mark).await,
            Err(dr_storage::object_store::Error::NotFound { .. })
        ));
        assert_eq!(repo.list_backups(None).await.unwrap(), vec![m]);
    }

    /// A directory found without a manifest by the listing but committed
    /// before its mark was read is no orphan (the writer writes the
    /// manifest, then removes the mark).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_backup_committed_after_the_listing_is_not_an_orphan() {
        let repo = repo("committed").await;
        let w = repo.begin_backup_marked("test", "db").await.unwrap();
        w.write_artifact("data", &mut &b"rows"[..]).await.unwrap();
        let id = w.id().to_string();
        assert_eq!(
            unlisted_state(&repo, "db", &id).await.unwrap(),
            Unlisted::Running
        );
        w.commit(serde_json::json!({})).await.unwrap();
        assert_eq!(
            unlisted_state(&repo, "db", &id).await.unwrap(),
            Unlisted::Committed
        );
        let gone = repo.begin_backup("test", "db").unwrap();
        gone.write_artifact("data", &mut &b"rows"[..])
            .await
            .unwrap();
        let id = gone.id().to_string();
        drop(gone);
        assert_eq!(
            unlisted_state(&repo, "db", &id).await.unwrap(),
            Unlisted::Orphaned
        );
    }
}
