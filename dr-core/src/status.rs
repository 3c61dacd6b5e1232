//! Status: whether each source meets its objectives, for `dr status` and for
//! Prometheus (a node_exporter textfile or the agent's `/metrics`).
//!
//! The WAL part ([`WalStatus`]: last archived file, continuity, named gaps)
//! is computed by the crate that knows the WAL format (`dr-postgres`) and
//! handed in: this crate never depends on a system crate.

use chrono::{DateTime, Utc};
use dr_storage::Repository;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// WAL continuity from the oldest kept base backup to the newest
    /// archived segment (PostgreSQL sources with archiving).
    #[serde(default)]
    pub wal: Option<WalStatus>,
    /// Problems found (gaps, stale backups), one line each. Any problem
    /// makes [`SourceStatus::ok`] false.
    pub problems: Vec<String>,
    /// Warnings, one line each (the WAL archive's [`WalStatus::warnings`]):
    /// shown, but they leave [`SourceStatus::ok`] as it is.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The newest `dr verify` of this source's backups (stored in the
    /// repository under `verifications/`).
    #[serde(default)]
    pub last_verify: Option<crate::verification::VerificationRecord>,
}

impl SourceStatus {
    /// Whether every objective holds: the RPO is met and nothing is wrong.
    /// Warnings do not count.
    pub fn ok(&self) -> bool {
        self.rpo_met && self.problems.is_empty()
    }

    /// The number of WAL gaps found.
    pub fn wal_gap_count(&self) -> usize {
        self.wal.as_ref().map_or(0, |w| w.gaps.len())
    }
}

/// A run of WAL segments missing from the archive, between two archived
/// ones, on the path recovery follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalGap {
    /// The cluster (PostgreSQL system identifier).
    pub system_id: String,
    /// The timeline of the first missing segment.
    pub timeline: u32,
    /// The last archived segment before the gap; `None` when the gap starts
    /// at the first segment the oldest kept base backup needs.
    pub after: Option<String>,
    /// The first missing segment.
    pub first_missing: String,
    /// The next archived segment after the gap; `None` when nothing after
    /// it is archived on the path.
    pub next: Option<String>,
    /// How many segments are missing.
    pub missing_segments: u64,
}

impl std::fmt::Display for WalGap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WAL gap on timeline {} ", self.timeline)?;
        match &self.after {
            Some(a) => write!(f, "after {a}")?,
            None => write!(
                f,
                "at {} (the start of the oldest kept base backup)",
                self.first_missing
            )?,
        }
        match &self.next {
            Some(n) => write!(f, ": next archived is {n}")?,
            None => write!(f, ": nothing archived after it")?,
        }
        let s = if self.missing_segments == 1 { "" } else { "s" };
        write!(f, " ({} segment{s} missing)", self.missing_segments)
    }
}

/// The state of one source's WAL archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalStatus {
    /// When the newest WAL object was stored.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// The newest archived segment on the path recovery follows.
    pub last_segment: Option<String>,
    /// Where the continuity check started: the first segment the oldest
    /// kept base backup needs (`None`: no base backup, nothing checked).
    pub checked_from: Option<String>,
    /// Segments checked (from `checked_from` to `last_segment`).
    pub segments_checked: u64,
    /// WAL segment size used, bytes.
    pub segment_size: u32,
    /// Whether timeline switches were followed through the `.history`
    /// files' content (needs the key); otherwise they were inferred from the
    /// archived names.
    pub history_read: bool,
    /// Gaps found, oldest first.
    pub gaps: Vec<WalGap>,
    /// Other problems (a timeline without its `.history` file, no base
    /// backup on the newest timeline's history), one line each.
    pub problems: Vec<String>,
    /// Warnings, one line each: what does not break recovery from the
    /// archive but needs an operator, such as a tablespace created or
    /// dropped after the newest base backup (a restore beside the cluster
    /// would replay it into the original's directory; PostgreSQL 15 docs
    /// §26.3.7 "Caveats": take a new base backup). They do not make the
    /// status fail.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Where the newest tablespace creation or drop after the start of the
    /// newest base backup starts (`X/X`), on the cluster archiving now:
    /// a new base backup is advised (see `warnings`). The agent takes one
    /// ahead of schedule when the source has a backup schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backup_advised: Option<String>,
}

/// Whether the newest archived WAL can be replayed from the newest base
/// backup, whose first WAL segment is `newest_start` (the manifest's
/// `start_segment`; `None` when the newest backup is not a physical one):
/// true when no gap lies at or after that segment. WAL names of one
/// recovery path order as segment names do (timeline, then position).
/// Without a physical backup, any gap makes the WAL no recovery point.
pub fn wal_reachable(gaps: &[WalGap], newest_start: Option<&str>) -> bool {
    match newest_start {
        Some(start) => !gaps.iter().any(|g| g.first_missing.as_str() >= start),
        None => gaps.is_empty(),
    }
}

/// Computes the status of every source in the repository plus every
/// `configured` source (which shows as violating its RPO when it has no
/// backup). `wal_last` gives the time WAL was last archived per source.
/// Without WAL continuity; see [`status_with_wal`].
///
/// # Errors
/// Repository errors.
pub async fn status(
    repo: &Repository,
    configured: &[String],
    objectives: &ObjectivesConfig,
    wal_last: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Vec<SourceStatus>> {
    let wal: BTreeMap<String, WalStatus> = wal_last
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                WalStatus {
                    last_archived_at: Some(*t),
                    ..Default::default()
                },
            )
        })
        .collect();
    status_with_wal(repo, configured, objectives, &wal, now).await
}

/// As [`status`], with the state of each source's WAL archive (from
/// `dr_postgres::wal::continuity`): every WAL gap and WAL problem is a
/// problem of the source, so the status is violated.
///
/// # Errors
/// Repository errors.
pub async fn status_with_wal(
    repo: &Repository,
    configured: &[String],
    objectives: &ObjectivesConfig,
    wal_states: &BTreeMap<String, WalStatus>,
    now: DateTime<Utc>,
) -> Result<Vec<SourceStatus>> {
    let (manifests, damaged) = repo.list_backups_checked(None).await?;
    let mut verified = crate::verification::last_verifications(repo).await?;
    let mut names: Vec<String> = manifests.iter().map(|m| m.source.name.clone()).collect();
    names.extend(damaged.iter().map(|d| d.source.clone()));
    names.extend(wal_states.keys().cloned());
    names.extend(configured.iter().cloned());
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let mine: Vec<_> = manifests.iter().filter(|m| m.source.name == name).collect();
        let last = mine.iter().max_by_key(|m| m.finished_at);
        let obj = objectives.for_source(&name);
        let wal_state = wal_states.get(&name).cloned();
        let wal = wal_state.as_ref().and_then(|w| w.last_archived_at);
        // Archived WAL is a recovery point only when recovery can replay it
        // from the newest base backup.
        let newest_start = last.and_then(|m| m.metadata.get("start_segment")?.as_str());
        let wal_reachable = wal_state
            .as_ref()
            .is_none_or(|w| wal_reachable(&w.gaps, newest_start));
        let newest_point = [last.map(|m| m.finished_at), wal.filter(|_| wal_reachable)]
            .into_iter()
            .flatten()
            .max();
        let age = newest_point.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
        let rpo = obj.rpo.as_secs_f64();
        let rpo_met = age.is_some_and(|a| a <= rpo);
        let mut problems: Vec<String> = damaged
            .iter()
            .filter(|d| d.source == name)
            .map(|d| {
                format!(
                    "damaged manifest {}: {} (prune keeps this backup and fails until the manifest is repaired or removed)",
                    d.object, d.reason
                )
            })
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
        if let Some(w) = &wal_state {
            if !wal_reachable && wal.is_some() {
                problems.push(match newest_start {
                    Some(start) => format!(
                        "the archived WAL after a gap cannot be replayed from the newest base backup \
                         (it starts at {start}): the end of that backup is the newest recovery point"
                    ),
                    None => "archived WAL with a gap and no base backup to replay it from is no \
                             recovery point"
                        .to_string(),
                });
            }
            problems.extend(w.gaps.iter().map(ToString::to_string));
            problems.extend(w.problems.iter().cloned());
        }
        let last_verify = verified.remove(&name);
        if let Some(v) = last_verify.as_ref().filter(|v| !v.ok && !v.unproven) {
            problems.push(format!(
                "the last verification (of backup {} at {}) failed: {}",
                v.backup_id,
                v.verified_at.format("%Y-%m-%d %H:%M:%S UTC"),
                v.problems.join("; ")
            ));
        }
        let mut warnings = wal_state
            .as_ref()
            .map(|w| w.warnings.clone())
            .unwrap_or_default();
        if let Some(v) = last_verify.as_ref().filter(|v| !v.ok && v.unproven) {
            warnings.push(format!(
                "the last verification (of backup {} at {}) could not reach its scratch target: the backup \
                 is unproven: {}",
                v.backup_id,
                v.verified_at.format("%Y-%m-%d %H:%M:%S UTC"),
                v.problems.join("; ")
            ));
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
            warnings,
            wal: wal_state,
            problems,
            last_verify,
        });
    }
    Ok(out)
}

/// Renders the status in the Prometheus text exposition format (through
/// `prometheus-client`), with the metric names the runbook's alerts use:
/// `backup_last_success_timestamp_seconds{source}`, `backup_size_bytes{source}`,
/// `wal_archive_last_success_timestamp_seconds{source}`,
/// `objective_rpo_seconds{source}`, `objective_rto_seconds{source}`,
/// `objective_rpo_met{source}` (1 or 0) and, for sources with a checked WAL
/// archive, `wal_archive_gaps{source}` (the number of gaps; alert on > 0).
pub fn to_prometheus(statuses: &[SourceStatus]) -> String {
    type G = Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>;
    let mut registry = <Registry>::default();
    let last = G::default();
    let size = G::default();
    let wal = G::default();
    let rpo = G::default();
    let rto = G::default();
    let met = G::default();
    let gaps = G::default();
    let verified = G::default();
    registry.register(
        "verify_last_success_timestamp_seconds",
        "Unix time a verification of a backup of the source last passed",
        verified.clone(),
    );
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
    registry.register(
        "wal_archive_gaps",
        "Gaps in the WAL archive between the oldest kept base backup and the newest segment",
        gaps.clone(),
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
        if let Some(w) = &s.wal {
            gaps.get_or_create(&l).set(w.gaps.len() as f64);
        }
        if let Some(v) = s.last_verify.as_ref().filter(|v| v.ok) {
            verified
                .get_or_create(&l)
                .set(v.verified_at.timestamp_millis() as f64 / 1000.0);
        }
    }
    let mut text = String::new();
    encode(&mut text, &registry).expect("encoding to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_storage::{Identities, InitOptions, Location, StoreOptions};

    fn gap(after: Option<&str>, next: Option<&str>, n: u64) -> WalGap {
        WalGap {
            system_id: "7".into(),
            timeline: 1,
            after: after.map(str::to_string),
            first_missing: "000000010000000000000008".into(),
            next: next.map(str::to_string),
            missing_segments: n,
        }
    }

    #[test]
    fn wal_behind_a_gap_after_the_newest_backup_is_no_recovery_point() {
        // Segment 08 is missing.
        let g = [gap(Some("000000010000000000000007"), None, 1)];
        // The newest backup starts after the gap: its WAL replays.
        assert!(wal_reachable(&g, Some("000000010000000000000009")));
        assert!(wal_reachable(&g, Some("000000020000000000000001")));
        // It starts before or at the gap: replay stops there.
        assert!(!wal_reachable(&g, Some("000000010000000000000005")));
        assert!(!wal_reachable(&g, Some("000000010000000000000008")));
        assert!(!wal_reachable(&g, None));
        assert!(wal_reachable(&[], None));
    }

    #[test]
    fn gaps_are_named() {
        assert_eq!(
            gap(
                Some("000000010000000000000007"),
                Some("00000001000000000000000A"),
                2
            )
            .to_string(),
            "WAL gap on timeline 1 after 000000010000000000000007: next archived is \
             00000001000000000000000A (2 segments missing)"
        );
        assert_eq!(
            gap(None, None, 1).to_string(),
            "WAL gap on timeline 1 at 000000010000000000000008 (the start of the oldest kept base backup): \
             nothing archived after it (1 segment missing)"
        );
    }

    #[tokio::test]
    async fn a_wal_gap_violates_the_status_and_is_exported() {
        let key = Identities::generate();
        let repo = Repository::init(
            &Location::parse("memory://status-gaps").unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let now = Utc::now();
        let mut wal = BTreeMap::new();
        wal.insert(
            "db".to_string(),
            WalStatus {
                last_archived_at: Some(now),
                gaps: vec![gap(
                    Some("000000010000000000000007"),
                    Some("00000001000000000000000A"),
                    2,
                )],
                ..Default::default()
            },
        );
        wal.insert(
            "other".to_string(),
            WalStatus {
                last_archived_at: Some(now),
                ..Default::default()
            },
        );
        let s = status_with_wal(&repo, &[], &ObjectivesConfig::default(), &wal, now)
            .await
            .unwrap();
        assert_eq!(s.len(), 2);
        // Fresh WAL behind a gap, with no base backup to replay it from, is
        // no recovery point: the RPO is not met, and the gap is named.
        assert!(!s[0].rpo_met && !s[0].ok(), "{s:?}");
        assert_eq!(s[0].wal_gap_count(), 1);
        assert!(
            s[0].problems
                .iter()
                .any(|p| p.starts_with("WAL gap on timeline 1 after")),
            "{s:?}"
        );
        assert!(s[1].ok(), "{s:?}");
        let text = to_prometheus(&s);
        assert!(text.contains("wal_archive_gaps{source=\"db\"} 1"), "{text}");
        assert!(
            text.contains("wal_archive_gaps{source=\"other\"} 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_damaged_manifest_is_a_problem_of_its_source() {
        use dr_storage::object_store::path::Path;
        let key = Identities::generate();
        let repo = Repository::init(
            &Location::parse("memory://status-damaged").unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let b = repo.begin_backup("test", "db").unwrap();
        b.write_artifact("data", &mut &b"rows"[..]).await.unwrap();
        let good = b.commit(serde_json::json!({})).await.unwrap();
        let b = repo.begin_backup("test", "db").unwrap();
        b.write_artifact("data", &mut &b"rows"[..]).await.unwrap();
        let newest = b.commit(serde_json::json!({})).await.unwrap();
        let path = Path::from(format!("backups/db/{}/manifest.json", newest.backup_id));
        let mut body = repo
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        body[0] ^= 1;
        repo.store().put(&path, body.into()).await.unwrap();
        let s = status_with_wal(
            &repo,
            &[],
            &ObjectivesConfig::default(),
            &BTreeMap::new(),
            Utc::now(),
        )
        .await
        .unwrap();
        assert_eq!(s.len(), 1);
        assert!(!s[0].ok(), "{s:?}");
        assert_eq!(
            s[0].last_backup_id.as_deref(),
            Some(good.backup_id.as_str())
        );
        assert!(
            s[0].problems
                .iter()
                .any(|p| p.starts_with("damaged manifest ") && p.contains(&newest.backup_id)),
            "{s:?}"
        );
    }
}
