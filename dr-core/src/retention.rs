//! Retention: which backups and which WAL to keep.
//!
//! The policy is evaluated per source and, within a source, per chain: one
//! chain per PostgreSQL system identifier, so after a `pg_upgrade` (a new
//! system identifier) the old chain keeps its own retention. Backups are
//! ordered by their recorded start time and LSN, never by name (the id only
//! breaks a tie between two backups with the same time and LSN, so that the
//! plan is the same on every run).
//!
//! Rules, each kept by [`plan_retention`] and checked by property tests:
//! - failed or unfinished backups are never counted as good, never anchor a
//!   window, and are never kept by a `keep_*` rule;
//! - the newest good backup of a source is always kept;
//! - with `pitr_window`, the newest good base backup that started at or
//!   before `now - pitr_window` (or the oldest, when none did) anchors the
//!   window: it is kept, with every backup after it, and WAL is kept from its
//!   start LSN on;
//! - WAL between the start and stop LSN of every kept base backup is kept;
//! - `.history` files are kept forever.
//!
//! Bucket rules follow restic's `forget` (`keep_hourly` keeps the newest
//! backup of each of the last N hours that have backups, and so on, in UTC).
//! `keep_within` keeps every good backup that started within that duration
//! before `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// `keep_*` settings of a source (`[sources.NAME.retention]` in `dr.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the N newest good backups.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours with backups.
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    /// ... of each of the last N days.
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// ... of each of the last N ISO weeks.
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// ... of each of the last N months.
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// ... of each of the last N years.
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    /// Keep every backup newer than this (`"7d"`, `"720h"`; humantime syntax).
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub keep_within: Option<Duration>,
    /// The point-in-time recovery window for PostgreSQL WAL (`"7d"`).
    #[serde(default, with = "crate::serde_duration::human_option")]
    pub pitr_window: Option<Duration>,
}

impl RetentionPolicy {
    /// Whether no rule is set (then nothing is pruned).
    pub fn is_empty(&self) -> bool {
        self == &RetentionPolicy::default()
    }
}

/// What retention needs to know about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFacts {
    /// Source name.
    pub source: String,
    /// Backup id.
    pub id: String,
    /// Recorded start time.
    pub started_at: DateTime<Utc>,
    /// Whether the backup completed and is usable.
    pub good: bool,
    /// PostgreSQL system identifier (the chain), when known.
    pub system_id: Option<String>,
    /// WAL range a physical base backup needs: start and stop LSN.
    pub wal_range: Option<(u64, u64)>,
    /// Stored bytes.
    pub stored_bytes: u64,
}

/// One archived WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalFacts {
    /// Source name.
    pub source: String,
    /// System identifier of its cluster.
    pub system_id: String,
    /// Object path in the repository.
    pub object: String,
    /// First LSN the file covers (segments); `None` for `.history` files.
    pub start_lsn: Option<u64>,
    /// First LSN after it.
    pub end_lsn: Option<u64>,
    /// Stored bytes.
    pub stored_bytes: u64,
}

/// The decision on one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDecision {
    /// The backup.
    pub backup: BackupFacts,
    /// Why it is kept (`keep_daily`, `newest good backup`, ...); empty means
    /// it is deleted.
    pub kept_by: Vec<String>,
}

impl BackupDecision {
    /// Whether the backup stays.
    pub fn keep(&self) -> bool {
        !self.kept_by.is_empty()
    }
}

/// The WAL kept for one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalDecision {
    /// Source name.
    pub source: String,
    /// System identifier.
    pub system_id: String,
    /// WAL at or after this LSN is kept (the PITR window's anchor), if any.
    pub keep_from_lsn: Option<u64>,
    /// Other LSN ranges kept (start..stop of kept base backups).
    pub keep_ranges: Vec<(u64, u64)>,
    /// Objects kept.
    pub kept: Vec<String>,
    /// Objects deleted.
    pub deleted: Vec<String>,
    /// Bytes freed.
    pub bytes_freed: u64,
}

/// A prune plan: printed by `dr prune --dry-run`, carried out by `dr prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPlan {
    /// When the plan was made (the `now` of the rules).
    pub now: DateTime<Utc>,
    /// Every backup with its decision, oldest first per source.
    pub backups: Vec<BackupDecision>,
    /// WAL per chain.
    pub wal: Vec<WalDecision>,
}

impl RetentionPlan {
    /// The backups to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &BackupFacts> {
        self.backups.iter().filter(|d| !d.keep()).map(|d| &d.backup)
    }

    /// Bytes freed by the plan.
    pub fn bytes_freed(&self) -> u64 {
        self.deletions().map(|b| b.stored_bytes).sum::<u64>()
            + self.wal.iter().map(|w| w.bytes_freed).sum::<u64>()
    }
}

fn bucket(t: DateTime<Utc>, rule: &str) -> (i32, u32, u32, u32) {
    match rule {
        "keep_hourly" => (t.year(), t.ordinal(), t.hour(), 0),
        "keep_daily" => (t.year(), t.ordinal(), 0, 0),
        "keep_weekly" => {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 0)
        }
        "keep_monthly" => (t.year(), t.month(), 0, 0),
        _ => (t.year(), 0, 0, 0),
    }
}

/// Decides which backups and WAL files to keep under `policies` (by source;
/// a source without a policy, or with an empty one, keeps everything).
pub fn plan_retention(
    policies: &BTreeMap<String, RetentionPolicy>,
    backups: &[BackupFacts],
    wal: &[WalFacts],
    now: DateTime<Utc>,
) -> RetentionPlan {
    let mut decisions: Vec<BackupDecision> = Vec::new();
    let mut keep_from: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut keep_ranges: BTreeMap<(String, String), Vec<(u64, u64)>> = BTreeMap::new();

    let by_source: BTreeMap<&str, Vec<&BackupFacts>> =
        backups.iter().fold(BTreeMap::new(), |mut m, b| {
            m.entry(b.source.as_str()).or_insert_with(Vec::new).push(b);
            m
        });
    for (source, mut list) in by_source {
        list.sort_by_key(|b| (b.started_at, b.wal_range.map(|r| r.0), b.id.clone()));
        let policy = policies.get(source).cloned().unwrap_or_default();
        let mut kept_by: Vec<BTreeSet<String>> = vec![BTreeSet::new(); list.len()];
        if policy.is_empty() {
            for k in kept_by.iter_mut() {
                k.insert("no retention policy".into());
            }
        }
        // Newest good backup of the source, whatever the chain.
        if let Some(i) = list.iter().rposition(|b| b.good) {
            kept_by[i].insert("newest good backup".into());
        }
        // Chains: by system identifier (None is its own chain).
        let chains: BTreeMap<Option<&str>, Vec<usize>> =
            (0..list.len()).fold(BTreeMap::new(), |mut m, i| {
                m.entry(list[i].system_id.as_deref())
                    .or_insert_with(Vec::new)
                    .push(i);
                m
            });
        for (sysid, idx) in &chains {
            let good: Vec<usize> = idx.iter().copied().filter(|&i| list[i].good).collect();
            if let Some(n) = policy.keep_last {
                for &i in good.iter().rev().take(n as usize) {
                    kept_by[i].insert("keep_last".into());
                }
            }
            for (rule, n) in [
                ("keep_hourly", policy.keep_hourly),
                ("keep_daily", policy.keep_daily),
                ("keep_weekly", policy.keep_weekly),
                ("keep_monthly", policy.keep_monthly),
                ("keep_yearly", policy.keep_yearly),
            ] {
                let Some(n) = n else { continue };
                let mut seen = BTreeSet::new();
                for &i in good.iter().rev() {
                    if seen.len() >= n as usize {
                        break;
                    }
                    if seen.insert(bucket(list[i].started_at, rule)) {
                        kept_by[i].insert(rule.into());
                    }
                }
            }
            if let Some(w) = policy.keep_within {
                let since = now - chrono::Duration::from_std(w).unwrap_or(chrono::Duration::MAX);
                for &i in &good {
                    if list[i].started_at >= since {
                        kept_by[i].insert("keep_within".into());
                    }
                }
            }
            if let (Some(w), Some(sysid)) = (policy.pitr_window, sysid) {
                let physical: Vec<usize> = good
                    .iter()
                    .copied()
                    .filter(|&i| list[i].wal_range.is_some())
                    .collect();
                let start = now - chrono::Duration::from_std(w).unwrap_or(chrono::Duration::MAX);
                let anchor = physical
                    .iter()
                    .copied()
                    .rev()
                    .find(|&i| list[i].started_at <= start)
                    .or_else(|| physical.first().copied());
                if let Some(a) = anchor {
                    for &i in &physical {
                        if list[i].started_at >= list[a].started_at {
                            kept_by[i].insert("pitr_window".into());
                        }
                    }
                    keep_from.insert(
                        (source.to_string(), sysid.to_string()),
                        list[a].wal_range.expect("physical").0,
                    );
                }
            }
        }
        for (i, b) in list.iter().enumerate() {
            if !b.good && !kept_by[i].is_empty() && !policy.is_empty() {
                kept_by[i].clear();
            }
            if let (Some(r), Some(sysid), false) =
                (b.wal_range, &b.system_id, kept_by[i].is_empty())
            {
                keep_ranges
                    .entry((source.to_string(), sysid.clone()))
                    .or_default()
                    .push(r);
            }
            decisions.push(BackupDecision {
                backup: (*b).clone(),
                kept_by: kept_by[i].iter().cloned().collect(),
            });
        }
    }

    let mut wal_out: BTreeMap<(String, String), WalDecision> = BTreeMap::new();
    for w in wal {
        let key = (w.source.clone(), w.system_id.clone());
        let policy = policies.get(&w.source).cloned().unwrap_or_default();
        let d = wal_out.entry(key.clone()).or_insert_with(|| WalDecision {
            source: w.source.clone(),
            system_id: w.system_id.clone(),
            keep_from_lsn: keep_from.get(&key).copied(),
            keep_ranges: keep_ranges.get(&key).cloned().unwrap_or_default(),
            kept: Vec::new(),
            deleted: Vec::new(),
            bytes_freed: 0,
        });
        let keep = match (w.start_lsn, w.end_lsn) {
            // History files, and anything of a source without a WAL window.
            _ if policy.pitr_window.is_none() => true,
            (None, _) | (_, None) => true,
            (Some(s), Some(e)) => {
                d.keep_from_lsn.is_some_and(|from| e > from)
                    || d.keep_ranges.iter().any(|&(rs, re)| s <= re && e > rs)
                    // No anchor in this chain yet (no base backup): keep all.
                    || (d.keep_from_lsn.is_none() && d.keep_ranges.is_empty())
            }
        };
        if keep {
            d.kept.push(w.object.clone());
        } else {
            d.deleted.push(w.object.clone());
            d.bytes_freed += w.stored_bytes;
        }
    }
    RetentionPlan {
        now,
        backups: decisions,
        wal: wal_out.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap() + chrono::Duration::hours(h)
    }

    fn backup(id: &str, h: i64, good: bool, sysid: Option<&str>, lsn: Option<u64>) -> BackupFacts {
        BackupFacts {
            source: "db".into(),
            id: id.into(),
            started_at: at(h),
            good,
            system_id: sysid.map(str::to_string),
            wal_range: lsn.map(|l| (l, l + 10)),
            stored_bytes: 100,
        }
    }

    #[test]
    fn runbook_policy_is_expressible_in_toml() {
        let p: RetentionPolicy =
            toml::from_str("pitr_window = \"7d\"\nkeep_weekly = 13\nkeep_within = \"7d\"\n")
                .unwrap();
        assert_eq!(p.pitr_window, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(p.keep_weekly, Some(13));
        assert!(toml::from_str::<RetentionPolicy>("keep_dayly = 3").is_err());
        assert!(toml::from_str::<RetentionPolicy>("keep_within = \"soon\"").is_err());
    }

    #[test]
    fn order_comes_from_times_not_names() {
        // "z" sorts last by name but is the oldest by time.
        let b = vec![
            backup("z", 0, true, None, None),
            backup("a", 5, true, None, None),
        ];
        let mut pol = BTreeMap::new();
        pol.insert(
            "db".to_string(),
            RetentionPolicy {
                keep_last: Some(1),
                ..Default::default()
            },
        );
        let plan = plan_retention(&pol, &b, &[], at(6));
        let deleted: Vec<_> = plan.deletions().map(|b| b.id.as_str()).collect();
        assert_eq!(deleted, vec!["z"]);
    }

    #[test]
    fn wal_window_anchors_on_the_last_backup_before_the_window() {
        let sys = Some("s1");
        let b = vec![
            backup("b0", 0, true, sys, Some(0)),
            backup("b1", 24, true, sys, Some(100)),
            backup("b2", 48, true, sys, Some(200)),
        ];
        let wal: Vec<WalFacts> = (0..30u64)
            .map(|i| WalFacts {
                source: "db".into(),
                system_id: "s1".into(),
                object: format!("seg{i}"),
                start_lsn: Some(i * 10),
                end_lsn: Some(i * 10 + 10),
                stored_bytes: 1,
            })
            .collect();
        let mut pol = BTreeMap::new();
        pol.insert(
            "db".to_string(),
            RetentionPolicy {
                pitr_window: Some(Duration::from_secs(30 * 3600)),
                ..Default::default()
            },
        );
        // now = 54h: window starts at 24h: b1 anchors.
        let plan = plan_retention(&pol, &b, &wal, at(54));
        let deleted: Vec<_> = plan.deletions().map(|b| b.id.as_str()).collect();
        assert_eq!(deleted, vec!["b0"]);
        assert_eq!(plan.wal[0].keep_from_lsn, Some(100));
        assert_eq!(plan.wal[0].deleted.len(), 10);
    }

    prop_compose! {
        fn history()(n in 1usize..25, seed in proptest::collection::vec((0i64..2000, any::<bool>(), 0u8..2, any::<bool>()), 25))
            -> Vec<BackupFacts> {
            let mut lsn = 0u64;
            let mut v: Vec<BackupFacts> = seed.into_iter().take(n).enumerate().map(|(i, (h, good, sys, physical))| {
                lsn += 1000;
                BackupFacts {
                    source: "db".into(),
                    id: format!("{:04}", 9999 - i), // names sort against time on purpose
                    started_at: at(h),
                    good: good || i == 0,
                    system_id: Some(format!("sys{sys}")),
                    wal_range: physical.then_some((lsn, lsn + 500)),
                    stored_bytes: 10,
                }
            }).collect();
            // LSNs grow with time within a chain.
            v.sort_by_key(|b| b.started_at);
            let mut l = 0;
            for b in v.iter_mut() { l += 1000; if b.wal_range.is_some() { b.wal_range = Some((l, l + 500)); } }
            v
        }
    }

    /// The backups `p` keeps, read from the rules' documentation and
    /// computed another way than [`plan_retention`]: per chain (system
    /// identifier), each rule's set of kept backups on its own, then their
    /// union. Bucket rules pick, for every bucket holding good backups, the
    /// newest of them, and keep those of the N newest buckets.
    fn oracle(
        p: &RetentionPolicy,
        backups: &[BackupFacts],
        now: DateTime<Utc>,
    ) -> BTreeSet<String> {
        let order = |b: &&BackupFacts| (b.started_at, b.wal_range.map(|r| r.0), b.id.clone());
        let no_rule = p.keep_last.is_none()
            && p.keep_hourly.is_none()
            && p.keep_daily.is_none()
            && p.keep_weekly.is_none()
            && p.keep_monthly.is_none()
            && p.keep_yearly.is_none()
            && p.keep_within.is_none()
            && p.pitr_window.is_none();
        if no_rule {
            return backups.iter().map(|b| b.id.clone()).collect();
        }
        let mut keep = BTreeSet::new();
        if let Some(newest) = backups.iter().filter(|b| b.good).max_by_key(order) {
            keep.insert(newest.id.clone());
        }
        let chains: BTreeSet<Option<String>> =
            backups.iter().map(|b| b.system_id.clone()).collect();
        for chain in chains {
            let mut good: Vec<&BackupFacts> = backups
                .iter()
                .filter(|b| b.good && b.system_id == chain)
                .collect();
            good.sort_by_key(order);
            good.reverse(); // newest first
            if let Some(n) = p.keep_last {
                keep.extend(good.iter().take(n as usize).map(|b| b.id.clone()));
            }
            let key = |t: DateTime<Utc>, rule: &str| match rule {
                "hourly" => t.format("%Y-%m-%d %H").to_string(),
                "daily" => format!("{}", t.date_naive()),
                "monthly" => t.format("%Y-%m").to_string(),
                _ => format!("{:?}", t.iso_week()),
            };
            for (rule, n) in [
                ("hourly", p.keep_hourly),
                ("daily", p.keep_daily),
                ("weekly", p.keep_weekly),
                ("monthly", p.keep_monthly),
            ] {
                let Some(n) = n else { continue };
                // bucket -> its newest good backup (the first seen, newest first)
                let mut newest_of: Vec<(String, &BackupFacts)> = Vec::new();
                for b in &good {
                    let k = key(b.started_at, rule);
                    if !newest_of.iter().any(|(seen, _)| *seen == k) {
                        newest_of.push((k, b));
                    }
                }
                keep.extend(newest_of.iter().take(n as usize).map(|(_, b)| b.id.clone()));
            }
            if let Some(w) = p.keep_within {
                let since = now - chrono::Duration::from_std(w).unwrap();
                keep.extend(
                    good.iter()
                        .filter(|b| b.started_at >= since)
                        .map(|b| b.id.clone()),
                );
            }
            if let (Some(w), Some(_)) = (p.pitr_window, &chain) {
                let start = now - chrono::Duration::from_std(w).unwrap();
                let physical: Vec<&BackupFacts> = good
                    .iter()
                    .copied()
                    .filter(|b| b.wal_range.is_some())
                    .collect();
                // newest first: the newest started at or before the window,
                // else the oldest
                let anchor = physical
                    .iter()
                    .find(|b| b.started_at <= start)
                    .or(physical.last());
                if let Some(a) = anchor {
                    keep.extend(
                        physical
                            .iter()
                            .filter(|b| b.started_at >= a.started_at)
                            .map(|b| b.id.clone()),
                    );
                }
            }
        }
        keep
    }

    fn policy() -> impl Strategy<Value = RetentionPolicy> {
        (
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..5),
            proptest::option::of(1u64..200),
            proptest::option::of(1u64..300),
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..4),
        )
            .prop_map(|(last, daily, weekly, within_h, pitr_h, hourly, monthly)| {
                RetentionPolicy {
                    keep_last: last,
                    keep_hourly: hourly,
                    keep_daily: daily,
                    keep_weekly: weekly,
                    keep_monthly: monthly,
                    keep_within: within_h.map(|h| Duration::from_secs(h * 3600)),
                    pitr_window: pitr_h.map(|h| Duration::from_secs(h * 3600)),
                    ..Default::default()
                }
            })
    }

    fn wal_for(backups: &[BackupFacts]) -> Vec<WalFacts> {
        let max = backups
            .iter()
            .filter_map(|b| b.wal_range)
            .map(|r| r.1)
            .max()
            .unwrap_or(0)
            + 2000;
        let mut out = Vec::new();
        for sys in ["sys0", "sys1"] {
            for i in 0..max / 250 {
                out.push(WalFacts {
                    source: "db".into(),
                    system_id: sys.into(),
                    object: format!("{sys}/{i}"),
                    start_lsn: Some(i * 250),
                    end_lsn: Some(i * 250 + 250),
                    stored_bytes: i % 7 + 1,
                });
            }
            out.push(WalFacts {
                source: "db".into(),
                system_id: sys.into(),
                object: format!("{sys}/00000002.history"),
                start_lsn: None,
                end_lsn: None,
                stored_bytes: 1,
            });
        }
        out
    }

    proptest! {
        #[test]
        fn invariants_hold(backups in history(), p in policy(), now_h in 0i64..2500) {
            let now = at(now_h);
            let wal = wal_for(&backups);
            let mut pols = BTreeMap::new();
            pols.insert("db".to_string(), p.clone());
            let plan = plan_retention(&pols, &backups, &wal, now);
            let kept: Vec<&BackupFacts> = plan.backups.iter().filter(|d| d.keep()).map(|d| &d.backup).collect();

            // The newest good backup of the source is never deleted. Equal
            // start times are ordered by start LSN, then id, as the plan does.
            let newest = backups
                .iter()
                .filter(|b| b.good)
                .max_by_key(|b| (b.started_at, b.wal_range.map(|r| r.0), b.id.clone()))
                .unwrap();
            prop_assert!(kept.iter().any(|b| b.id == newest.id));
            // Failed backups are never kept by a rule (without any rule,
            // nothing is pruned at all).
            if !p.is_empty() {
                prop_assert!(kept.iter().all(|b| b.good));
            }
            // Every kept physical backup still has its WAL.
            let kept_wal: BTreeSet<&str> = plan.wal.iter().flat_map(|w| w.kept.iter().map(String::as_str)).collect();
            for b in kept.iter().filter(|b| b.wal_range.is_some()) {
                let (s, e) = b.wal_range.unwrap();
                for w in wal.iter().filter(|w| Some(&w.system_id) == b.system_id.as_ref()) {
                    if let (Some(ws), Some(we)) = (w.start_lsn, w.end_lsn) {
                        if ws <= e && we > s {
                            prop_assert!(kept_wal.contains(w.object.as_str()), "WAL {} of kept {} deleted", w.object, b.id);
                        }
                    }
                }
            }
            // History files are kept forever.
            prop_assert!(wal.iter().filter(|w| w.start_lsn.is_none()).all(|w| kept_wal.contains(w.object.as_str())));
            // The PITR window stays covered: a kept good base backup started at
            // or before the window start (when one existed), with all WAL after it.
            if let Some(win) = p.pitr_window {
                let start = now - chrono::Duration::from_std(win).unwrap();
                for sys in ["sys0", "sys1"] {
                    let phys: Vec<&BackupFacts> = backups.iter()
                        .filter(|b| b.good && b.wal_range.is_some() && b.system_id.as_deref() == Some(sys)).collect();
                    if let Some(anchor) = phys.iter().filter(|b| b.started_at <= start).max_by_key(|b| b.started_at) {
                        prop_assert!(kept.iter().any(|k| k.id == anchor.id), "anchor {} deleted", anchor.id);
                        let from = anchor.wal_range.unwrap().0;
                        for w in wal.iter().filter(|w| w.system_id == sys) {
                            if w.end_lsn.is_some_and(|e| e > from) {
                                prop_assert!(kept_wal.contains(w.object.as_str()));
                            }
                        }
                    }
                }
            }
            // No less and no more than an independent reading of the rules
            // keeps.
            let expected = oracle(&p, &backups, now);
            let got: BTreeSet<String> = kept.iter().map(|b| b.id.clone()).collect();
            prop_assert_eq!(&got, &expected);
            // WAL: without a PITR window every object stays; with one, an
            // object goes exactly when it ends at or before the anchor's
            // start and overlaps no kept backup's range (a chain with
            // neither keeps all).
            let deleted_wal: BTreeSet<&str> = plan.wal.iter().flat_map(|w| w.deleted.iter().map(String::as_str)).collect();
            for w in &wal {
                let goes = match (p.pitr_window, w.start_lsn, w.end_lsn) {
                    (Some(win), Some(s), Some(e)) => {
                        let start = now - chrono::Duration::from_std(win).unwrap();
                        let mut phys: Vec<&BackupFacts> = backups.iter()
                            .filter(|b| b.good && b.wal_range.is_some() && b.system_id.as_deref() == Some(w.system_id.as_str()))
                            .collect();
                        phys.sort_by_key(|b| (b.started_at, b.wal_range.map(|r| r.0), b.id.clone()));
                        let anchor = phys.iter().rev().find(|b| b.started_at <= start).or(phys.first());
                        let ranges: Vec<(u64, u64)> = backups.iter()
                            .filter(|b| expected.contains(&b.id) && b.system_id.as_deref() == Some(w.system_id.as_str()))
                            .filter_map(|b| b.wal_range)
                            .collect();
                        let after_anchor = anchor.is_some_and(|a| e > a.wal_range.unwrap().0);
                        let overlaps = ranges.iter().any(|&(rs, re)| s <= re && e > rs);
                        !(after_anchor || overlaps || (anchor.is_none() && ranges.is_empty()))
                    }
                    _ => false,
                };
                prop_assert_eq!(deleted_wal.contains(w.object.as_str()), goes, "WAL {}", w.object);
            }
            // Bytes freed: the deleted backups' and WAL objects' stored bytes.
            let freed: u64 = backups.iter().filter(|b| !expected.contains(&b.id)).map(|b| b.stored_bytes).sum::<u64>()
                + wal.iter().filter(|w| deleted_wal.contains(w.object.as_str())).map(|w| w.stored_bytes).sum::<u64>();
            prop_assert_eq!(plan.bytes_freed(), freed);
            // Prune is idempotent: planning again over what is kept deletes nothing.
            let remaining: Vec<BackupFacts> = kept.iter().map(|b| (*b).clone()).collect();
            let remaining_wal: Vec<WalFacts> = wal.iter().filter(|w| kept_wal.contains(w.object.as_str())).cloned().collect();
            let again = plan_retention(&pols, &remaining, &remaining_wal, now);
            prop_assert_eq!(again.deletions().count(), 0);
            prop_assert!(again.wal.iter().all(|w| w.deleted.is_empty()));
        }
    }
}
