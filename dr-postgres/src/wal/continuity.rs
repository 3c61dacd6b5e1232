//! WAL continuity: is every segment that recovery needs, from the oldest
//! kept base backup to the newest archived segment, in the archive?
//!
//! Recovery replays WAL along the history of the newest timeline
//! (PostgreSQL 15 docs §26.3.5 "Timelines", `recovery_target_timeline =
//! 'latest'`): the segments of each ancestor timeline up to the point where
//! it was left, then those of the next timeline. The segment that holds a
//! switch point is read from the *new* timeline (its first part is a copy of
//! the parent's), so the parent's copy of it, archived as `.partial`, is not
//! needed. A timeline switch is therefore never a gap when a `.history`
//! file explains it; a missing segment on that path is, and is named with
//! the archived segments on either side.
//!
//! The `.history` files are encrypted like every WAL object: with a key the
//! switch points are read from them ([`WalStatus::history_read`]); without
//! one they are inferred from the archived names (each timeline starts at its
//! first archived segment), and a timeline without a `.history` file is a
//! problem either way.
//!
//! The segment after the newest archived one is not a gap: that is archive
//! lag, reported by the last-archived time.
//!
//! Tablespace creations and drops that `wal-push` recorded beside the
//! segments (`events/<segment>.json`) at or after the start of the newest
//! kept physical base backup of a cluster are warnings
//! ([`WalStatus::warnings`]): recovery can replay them, but a restore beside
//! the cluster would write into the original's tablespace (PostgreSQL 15
//! docs §26.3.7 "Caveats": take a new base backup after creating or dropping
//! tablespaces), so `dr restore` refuses them; a new base backup ends the
//! warning. A warning does not make `dr status` fail.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use dr_core::status::{WalGap, WalStatus};
use dr_storage::{Identities, Manifest, Repository, WalArchive};

use super::retention::{archived_sources, list_chains, segment_size_for, segment_sizes};
use crate::format::{segment_file_name, History, Lsn, WalFileKind, WalFileName};
use crate::metadata::{PhysicalMetadata, KIND_PHYSICAL};

/// Where a kept physical base backup starts: recovery from it needs every
/// segment from its start segment on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseStart {
    /// Backup id.
    pub backup_id: String,
    /// Timeline it started on.
    pub timeline: u32,
    /// Its start LSN.
    pub start_lsn: Lsn,
    /// Timeline it ended on.
    pub stop_timeline: u32,
    /// Its stop LSN (its WAL up to here is always needed).
    pub stop_lsn: Lsn,
    /// Its recorded start time.
    pub started_at: DateTime<Utc>,
}

/// One timeline on the path recovery follows, from `begin` (the parent's
/// switch point; 0 for the first) to `end` (its own switch point; `None` for
/// the newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    timeline: u32,
    begin: u64,
    end: Option<u64>,
}

/// What is known about one timeline's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryFile {
    /// The `.history` file was read.
    Read(History),
    /// The `.history` file is archived but was not read (no key).
    Unread,
}

/// One cluster's archive (one system identifier), as [`check_chain`] sees it.
#[derive(Debug, Clone)]
pub struct ChainFacts {
    /// The system identifier.
    pub system_id: String,
    /// The WAL segment size, bytes.
    pub segment_size: u32,
    /// Archived file names (segments, `.partial`, `.backup`, `.history`).
    pub names: Vec<String>,
    /// The `.history` files by timeline.
    pub histories: BTreeMap<u32, HistoryFile>,
    /// Kept physical base backups of this cluster.
    pub bases: Vec<BaseStart>,
    /// The start of the promised PITR window (`now - pitr_window`), if the
    /// source has one: continuous WAL is promised from the newest base
    /// backup that started at or before it (the window's anchor, as
    /// retention keeps it); older kept backups need only their own WAL.
    pub window_start: Option<DateTime<Utc>>,
}

/// The result of [`check_chain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainCheck {
    /// First segment checked.
    pub checked_from: Option<String>,
    /// Newest archived segment on the path.
    pub last_segment: Option<String>,
    /// Segments checked.
    pub segments_checked: u64,
    /// Gaps.
    pub gaps: Vec<WalGap>,
    /// Other problems.
    pub problems: Vec<String>,
    /// Whether every timeline switch on the path was read from its
    /// `.history` file.
    pub history_read: bool,
    /// The archived segments on the path within the checked ranges, in
    /// replay order (what a verification of the chain reads).
    pub segments: Vec<String>,
}

/// Checks one cluster's archive along the path of the newest timeline:
/// continuously from the start segment of the anchor (the oldest kept base
/// backup on that path, or with a PITR window the newest one that started
/// at or before the window's start) to the newest archived segment on the
/// path (or the stop segment of the newest base backup, whichever is
/// later); and, for every older kept base backup, the segments from its
/// start to its stop.
pub fn check_chain(chain: &ChainFacts) -> ChainCheck {
    let size = chain.segment_size;
    let seg = |lsn: u64| lsn / u64::from(size);
    let parsed: Vec<WalFileName> = chain
        .names
        .iter()
        .filter_map(|n| WalFileName::parse(n).ok())
        .collect();
    let present: BTreeSet<(u32, u64)> = parsed
        .iter()
        .filter(|n| n.kind == WalFileKind::Segment)
        .map(|n| (n.timeline, n.segment_no(size)))
        .collect();
    let mut out = ChainCheck {
        history_read: true,
        ..Default::default()
    };
    let Some(newest) = present
        .iter()
        .map(|(t, _)| *t)
        .chain(chain.bases.iter().map(|b| b.stop_timeline))
        .max()
    else {
        return out;
    };

    // The path of the newest timeline.
    let path: Vec<Step> = match chain.histories.get(&newest) {
        Some(HistoryFile::Read(h)) if newest > 1 => {
            let mut steps = Vec::new();
            let mut begin = 0;
            for e in &h.entries {
                steps.push(Step {
                    timeline: e.timeline,
                    begin,
                    end: Some(e.switch_point.0),
                });
                begin = e.switch_point.0;
            }
            steps.push(Step {
                timeline: newest,
                begin,
                end: None,
            });
            steps
        }
        _ => {
            if newest > 1 {
                out.history_read = false;
            }
            // Inferred: every timeline with segments starts at its first
            // archived segment; each must have its .history file.
            let mut firsts: BTreeMap<u32, u64> = BTreeMap::new();
            for &(t, s) in &present {
                let f = firsts.entry(t).or_insert(s);
                *f = (*f).min(s);
            }
            let mut steps: Vec<Step> = Vec::new();
            for (t, first) in firsts {
                if t > 1 && !chain.histories.contains_key(&t) {
                    out.problems.push(format!(
                        "timeline {t} of system {} has no history file {t:08X}.history in the archive: the switch \
                         to it cannot be followed",
                        chain.system_id
                    ));
                }
                let begin = if steps.is_empty() {
                    0
                } else {
                    first * u64::from(size)
                };
                if let Some(prev) = steps.last_mut() {
                    if begin < prev.begin {
                        // Not on one line: an abandoned branch.
                        continue;
                    }
                    prev.end = Some(begin);
                }
                steps.push(Step {
                    timeline: t,
                    begin,
                    end: None,
                });
            }
            if steps.is_empty() {
                // Nothing archived: the base backups' own timeline.
                steps.push(Step {
                    timeline: newest,
                    begin: 0,
                    end: None,
                });
            }
            steps
        }
    };
    let expected_tli = |s: u64| -> u32 {
        path.iter()
            .rev()
            .find(|st| seg(st.begin) <= s)
            .map_or(path[0].timeline, |st| st.timeline)
    };
    let on_path = |tli: u32, lsn: u64| {
        path.iter()
            .any(|st| st.timeline == tli && st.begin <= lsn && st.end.is_none_or(|e| lsn <= e))
    };

    let mut bases: Vec<&BaseStart> = chain.bases.iter().collect();
    bases.sort_by_key(|b| b.start_lsn);
    let on: Vec<&BaseStart> = bases
        .iter()
        .copied()
        .filter(|b| on_path(b.timeline, b.start_lsn.0))
        .collect();
    let anchor = chain
        .window_start
        .and_then(|w| on.iter().rev().find(|b| b.started_at <= w))
        .or(on.first())
        .copied();
    let Some(first) = anchor else {
        if let Some(b) = bases.first() {
            out.problems.push(format!(
                "no kept base backup of system {} is on the history of timeline {newest} (oldest: {} on timeline {} \
                 at {})",
                chain.system_id, b.backup_id, b.timeline, b.start_lsn
            ));
        }
        return out;
    };
    let start = seg(first.start_lsn.0);
    let newest_present = present
        .iter()
        .filter(|&&(t, s)| s >= start && expected_tli(s) == t)
        .map(|&(_, s)| s)
        .max();
    let newest_stop = bases
        .iter()
        .filter(|b| on_path(b.stop_timeline, b.stop_lsn.0))
        .map(|b| seg(b.stop_lsn.0))
        .max();
    let Some(end) = newest_present.max(newest_stop) else {
        return out;
    };
    let name = |s: u64| segment_file_name(expected_tli(s), s, size);
    out.checked_from = Some(name(start));
    out.last_segment = newest_present.map(name);
    out.segments_checked = end + 1 - start;
    // Older kept backups: their own WAL, start to stop.
    let mut ranges: Vec<(u64, u64)> = on
        .iter()
        .filter(|b| b.start_lsn < first.start_lsn)
        .map(|b| (seg(b.start_lsn.0), seg(b.stop_lsn.0).min(start)))
        .collect();
    ranges.push((start, end));
    let mut seen = BTreeSet::new();
    let mut seen_segments = BTreeSet::new();
    for (from, to) in ranges {
        let mut s = from;
        while s <= to {
            if present.contains(&(expected_tli(s), s)) {
                if seen_segments.insert(s) {
                    out.segments.push(name(s));
                }
                s += 1;
                continue;
            }
            let first_missing = s;
            while s <= to && !present.contains(&(expected_tli(s), s)) {
                s += 1;
            }
            if !seen.insert(first_missing) {
                continue;
            }
            out.gaps.push(WalGap {
                system_id: chain.system_id.clone(),
                timeline: expected_tli(first_missing),
                after: (first_missing > from).then(|| name(first_missing - 1)),
                first_missing: name(first_missing),
                next: (s <= to).then(|| name(s)),
                missing_segments: s - first_missing,
            });
        }
    }
    out.gaps
        .sort_by(|a, b| a.first_missing[8..].cmp(&b.first_missing[8..]));
    out.segments.sort_by(|a, b| a[8..].cmp(&b[8..]));
    out
}

/// The kept physical base backups per `(WAL source, system identifier)`.
fn bases(manifests: &[Manifest]) -> BTreeMap<(String, u64), Vec<BaseStart>> {
    let mut out: BTreeMap<(String, u64), Vec<BaseStart>> = BTreeMap::new();
    for m in manifests.iter().filter(|m| m.source.kind == KIND_PHYSICAL) {
        let md = match PhysicalMetadata::from_manifest(m) {
            Ok(md) => md,
            Err(e) => {
                tracing::warn!(backup_id = %m.backup_id, error = %e, "physical backup without readable metadata: not a WAL anchor");
                continue;
            }
        };
        if md.is_failed() {
            continue;
        }
        let Some(sysid) = md.system_id() else {
            continue;
        };
        out.entry((md.wal_source.clone(), sysid))
            .or_default()
            .push(BaseStart {
                backup_id: m.backup_id.clone(),
                timeline: md.timeline,
                start_lsn: md.start_lsn,
                stop_timeline: md.stop_timeline,
                stop_lsn: md.stop_lsn,
                started_at: m.started_at,
            });
    }
    out
}

/// The `.history` files among `objects` (one cluster's archive), by
/// timeline: read with `identities`, else [`HistoryFile::Unread`].
///
/// # Errors
/// Store errors; a `.history` file that cannot be decrypted or does not
/// parse.
pub(crate) async fn read_histories(
    archive: &WalArchive,
    system_id: u64,
    objects: &[dr_storage::WalObject],
    identities: Option<&Identities>,
) -> dr_core::Result<BTreeMap<u32, HistoryFile>> {
    let mut histories = BTreeMap::new();
    for o in objects {
        let Ok(n) = WalFileName::parse(&o.name) else {
            continue;
        };
        if n.kind != WalFileKind::History {
            continue;
        }
        let h = match identities {
            Some(ids) => {
                let (_, text) = archive.fetch(system_id, &o.name, ids).await?;
                HistoryFile::Read(
                    History::parse(n.timeline, &String::from_utf8_lossy(&text))
                        .map_err(dr_core::Error::from)?,
                )
            }
            None => HistoryFile::Unread,
        };
        histories.insert(n.timeline, h);
    }
    Ok(histories)
}

/// The tablespace creations and drops after the newest base backup:
/// what [`tablespace_changes`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablespaceChanges {
    /// One warning per change, and one per events object that cannot be
    /// read.
    pub warnings: Vec<String>,
    /// Where the newest change's record starts (`None`: no change).
    pub newest: Option<Lsn>,
}

/// The warnings for the tablespace creations and drops recorded in
/// `archive` for cluster `system_id` at or after the start of the newest
/// (by start time) of `bases`, its kept physical base backups, oldest first;
/// none without a base backup. Only the events objects of segments from the
/// backup's start segment on are read. An events object that cannot be read
/// is a warning of its own.
///
/// # Errors
/// Store errors of the listing.
pub async fn tablespace_changes(
    archive: &WalArchive,
    system_id: u64,
    bases: &[BaseStart],
    segment_size: u32,
) -> dr_core::Result<TablespaceChanges> {
    let Some(newest) = bases.iter().max_by_key(|b| (b.started_at, b.start_lsn)) else {
        return Ok(TablespaceChanges::default());
    };
    let first = newest.start_lsn.segment_no(segment_size);
    let mut out = Vec::new();
    let mut newest_change: Option<Lsn> = None;
    for seg in archive.list_events(system_id).await? {
        let Ok(name) = WalFileName::parse(&seg) else {
            continue;
        };
        if name.segment_no(segment_size) < first {
            continue;
        }
        let events = match archive.events(system_id, &seg).await {
            Ok(e) => e,
            Err(e) => {
                out.push(format!(
                    "the tablespace changes recorded for WAL segment {seg} cannot be read: {e}"
                ));
                continue;
            }
        };
        for e in events {
            let Ok(lsn) = e.lsn().parse::<Lsn>() else {
                out.push(format!(
                    "the tablespace changes recorded for WAL segment {seg} hold an invalid LSN {:?}",
                    e.lsn()
                ));
                continue;
            };
            if lsn < newest.start_lsn {
                continue;
            }
            newest_change = newest_change.max(Some(lsn));
            let id = &newest.backup_id;
            out.push(match e {
                dr_storage::WalEvent::TablespaceCreate {
                    continued: true, ..
                } => format!(
                    "a tablespace was created (LSN {lsn}, WAL segment {seg}, its record continuing into the next \
                     segment) after the start of the newest base backup {id}: take a new base backup; a restore \
                     of {id} beside this cluster would refuse to replay it"
                ),
                dr_storage::WalEvent::TablespaceCreate { oid, path, .. } => format!(
                    "tablespace OID {oid} was created at {path} (LSN {lsn}, WAL segment {seg}) after the start of \
                     the newest base backup {id}: take a new base backup; a restore of {id} beside this cluster \
                     would refuse to replay it (replay writes into {path})"
                ),
                dr_storage::WalEvent::TablespaceDrop { oid, .. } => format!(
                    "tablespace OID {oid} was dropped (LSN {lsn}, WAL segment {seg}) after the start of the newest \
                     base backup {id}: take a new base backup (PostgreSQL 15 docs §26.3.7)"
                ),
            });
        }
    }
    Ok(TablespaceChanges {
        warnings: out,
        newest: newest_change,
    })
}

/// When the newest file of a cluster's archive (by WAL order: the
/// greatest name) was archived: its claim's `claimed_at`, which copying the
/// repository keeps, else (no claim, or one that cannot be read) the
/// newest object's modification time.
async fn last_archived(
    archive: &WalArchive,
    system_id: u64,
    objects: &[dr_storage::WalObject],
) -> Option<DateTime<Utc>> {
    let newest_mtime = objects.iter().map(|o| o.last_modified).max();
    let newest = objects.iter().map(|o| o.name.as_str()).max()?;
    match archive.claimed_at(system_id, newest).await {
        Ok(Some(at)) => Some(at),
        Ok(None) => newest_mtime,
        Err(e) => {
            tracing::warn!(name = newest, error = %e, "the WAL claim cannot be read; using the object's time");
            newest_mtime
        }
    }
}

/// The state of every WAL archive in the repository, by source: when WAL
/// was last archived and the continuity of every cluster (system
/// identifier) it holds, checked from the oldest kept physical base backup
/// (see the module docs), or for a source with a PITR window in
/// `pitr_windows` from the window's anchor, as retention keeps it (older
/// kept backups then need only their own WAL). With `identities`, the
/// `.history` files are read; without, switch points are inferred from the
/// names.
///
/// # Errors
/// Store errors; a `.history` file that cannot be decrypted or does not
/// parse (with `identities`).
pub async fn wal_status(
    repo: &Repository,
    identities: Option<&Identities>,
    pitr_windows: &BTreeMap<String, Duration>,
    now: DateTime<Utc>,
) -> dr_core::Result<BTreeMap<String, WalStatus>> {
    let manifests = repo.list_backups(None).await?;
    let sizes = segment_sizes(&manifests);
    let bases = bases(&manifests);
    let mut out = BTreeMap::new();
    for source in archived_sources(repo).await? {
        let archive = WalArchive::new(repo, &source)?;
        let current = archive.system_id().await?;
        let chains = list_chains(repo, &source).await?;
        let mut status = WalStatus {
            history_read: true,
            ..Default::default()
        };
        for (sysid, objects) in &chains {
            let histories = read_histories(&archive, *sysid, objects, identities).await?;
            let chain = ChainFacts {
                system_id: sysid.to_string(),
                segment_size: segment_size_for(&sizes, *sysid),
                names: objects.iter().map(|o| o.name.clone()).collect(),
                histories,
                bases: bases
                    .get(&(source.clone(), *sysid))
                    .cloned()
                    .unwrap_or_default(),
                window_start: pitr_windows
                    .get(&source)
                    .and_then(|w| chrono::Duration::from_std(*w).ok())
                    .map(|w| now - w),
            };
            let check = check_chain(&chain);
            status.last_archived_at = status
                .last_archived_at
                .max(last_archived(&archive, *sysid, objects).await);
            // The figures of the cluster archiving now (or the only one).
            if current == Some(*sysid) || chains.len() == 1 {
                status.checked_from = check.checked_from.clone();
                status.last_segment = check.last_segment.clone();
                status.segments_checked = check.segments_checked;
                status.segment_size = chain.segment_size;
            }
            status.history_read &= check.history_read;
            status.gaps.extend(check.gaps);
            status.problems.extend(check.problems);
            let changes =
                tablespace_changes(&archive, *sysid, &chain.bases, chain.segment_size).await?;
            status.warnings.extend(changes.warnings);
            if current == Some(*sysid) || chains.len() == 1 {
                status.base_backup_advised = changes.newest.map(|l| l.to_string());
            }
        }
        // A name stored with two contents (pushes that raced before
        // names were claimed): recovery would refuse it.
        for c in archive.conflicts().await? {
            status.problems.push(c.to_string());
        }
        out.insert(source, status);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1 << 20;

    #[tokio::test(flavor = "multi_thread")]
    async fn tablespace_changes_from_the_newest_backup_start_on_are_warnings() {
        use dr_storage::{InitOptions, Location, StoreOptions, WalEvent};
        let key = dr_storage::Identities::generate();
        let repo = Repository::init(
            &Location::parse("memory://wal-ts-warnings").unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let a = WalArchive::new(&repo, "db").unwrap();
        let create = |oid: u32, lsn: &str| WalEvent::TablespaceCreate {
            oid,
            path: format!("/srv/ts{oid}"),
            lsn: lsn.into(),
            continued: false,
        };
        // Segment 2 (16 MiB): before either backup. Segment 3: one creation
        // before the newest backup's start (0/3000100), one at it, a drop
        // after it.
        a.put_events(7, "000000010000000000000002", &[create(1, "0/2000100")])
            .await
            .unwrap();
        a.put_events(
            7,
            "000000010000000000000003",
            &[
                create(2, "0/3000028"),
                create(3, "0/3000100"),
                WalEvent::TablespaceDrop {
                    oid: 1,
                    lsn: "0/3000200".into(),
                    continued: false,
                },
            ],
        )
        .await
        .unwrap();
        let base = |id: &str, start: u64, at: i64| BaseStart {
            backup_id: id.into(),
            timeline: 1,
            start_lsn: Lsn(start),
            stop_timeline: 1,
            stop_lsn: Lsn(start + 0x100),
            started_at: DateTime::from_timestamp(at, 0).unwrap(),
        };
        let bases = [base("old", 0x100_0028, 1), base("new", 0x300_0100, 2)];
        let changes = tablespace_changes(&a, 7, &bases, 16 * MIB).await.unwrap();
        assert_eq!(changes.newest, Some(Lsn(0x300_0200)));
        let w = changes.warnings;
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("tablespace OID 3 was created at /srv/ts3 (LSN 0/3000100, WAL segment 000000010000000000000003) after the start of the newest base backup new"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("tablespace OID 1 was dropped (LSN 0/3000200"),
            "{w:?}"
        );
        // From the older backup alone, every change is after it.
        assert_eq!(
            tablespace_changes(&a, 7, &bases[..1], 16 * MIB)
                .await
                .unwrap()
                .warnings
                .len(),
            4
        );
        // No base backup: nothing to warn about.
        assert_eq!(
            tablespace_changes(&a, 7, &[], 16 * MIB).await.unwrap(),
            TablespaceChanges::default()
        );
    }

    /// "Last archived" is when dr pushed the newest file (its claim), not
    /// when the object was last written: a copied repository (new mtimes)
    /// reports the same time. Without a claim, the modification time.
    #[tokio::test(flavor = "multi_thread")]
    async fn last_archived_is_the_newest_files_claim_time_not_its_mtime() {
        use dr_storage::{InitOptions, Location, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let key = dr_storage::Identities::generate();
        let repo = Repository::init(
            &Location::parse(dir.path().to_str().unwrap()).unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let a = WalArchive::new(&repo, "db").unwrap();
        a.register(7).await.unwrap();
        let before = Utc::now();
        for name in ["000000010000000000000002", "000000010000000000000003"] {
            a.push(7, name, bytes::Bytes::from(name.as_bytes().to_vec()))
                .await
                .unwrap();
        }
        let after = Utc::now();
        // "Copied": every file's modification time moved a year ahead.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 86400);
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    std::fs::File::options()
                        .write(true)
                        .open(e.path())
                        .unwrap()
                        .set_modified(later)
                        .unwrap();
                }
            }
        }
        let status = |repo: Repository| async move {
            wal_status(&repo, None, &BTreeMap::new(), Utc::now())
                .await
                .unwrap()["db"]
                .last_archived_at
                .unwrap()
        };
        let at = status(repo.clone()).await;
        assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
        // Without the newest name's claim: its object's time.
        let claim = dir
            .path()
            .join("wal/db/7/0000000100000000/000000010000000000000003.claim");
        std::fs::remove_file(&claim).unwrap();
        let at = status(repo).await;
        assert!(at > after + chrono::Duration::days(300), "{at}");
    }

    fn chain(names: &[&str], histories: &[(u32, &str)], bases: &[(u32, u64, u64)]) -> ChainFacts {
        ChainFacts {
            system_id: "7".into(),
            segment_size: MIB,
            names: names.iter().map(|s| s.to_string()).collect(),
            histories: histories
                .iter()
                .map(|(t, text)| (*t, HistoryFile::Read(History::parse(*t, text).unwrap())))
                .collect(),
            bases: bases
                .iter()
                .enumerate()
                .map(|(i, &(tli, start, stop))| BaseStart {
                    backup_id: format!("b{i}"),
                    timeline: tli,
                    start_lsn: Lsn(start),
                    stop_timeline: tli,
                    stop_lsn: Lsn(stop),
                    started_at: DateTime::from_timestamp(start as i64, 0).unwrap(),
                })
                .collect(),
            window_start: None,
        }
    }

    fn segs(tli: u32, range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|s| segment_file_name(tli, s, MIB)).collect()
    }

    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_missing_run_is_named_by_its_neighbours() {
        let mut names = segs(1, 3..=7);
        names.extend(segs(1, 10..=12));
        let c = check_chain(&chain(&refs(&names), &[], &[(1, 3 << 20, (3 << 20) + 100)]));
        assert_eq!(c.gaps.len(), 1, "{c:?}");
        assert_eq!(
            c.gaps[0].to_string(),
            "WAL gap on timeline 1 after 000000010000000000000007: next archived is \
             00000001000000000000000A (2 segments missing)"
        );
        assert_eq!(c.checked_from.as_deref(), Some("000000010000000000000003"));
        assert_eq!(c.last_segment.as_deref(), Some("00000001000000000000000C"));
        assert_eq!(c.segments_checked, 10);
    }

    #[test]
    fn wal_before_the_oldest_base_and_after_the_newest_segment_is_not_a_gap() {
        // Segments 0..=2 were pruned; 13 is not archived yet (lag).
        let names = segs(1, 3..=12);
        let c = check_chain(&chain(&refs(&names), &[], &[(1, (3 << 20) + 40, 3 << 20)]));
        assert!(c.gaps.is_empty(), "{c:?}");
        assert!(c.problems.is_empty());
        // No base backup: nothing to check.
        let c = check_chain(&chain(&refs(&names), &[], &[]));
        assert_eq!(
            c,
            ChainCheck {
                history_read: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn the_start_segment_of_the_base_backup_missing_is_a_gap() {
        let names = segs(1, 5..=8);
        let c = check_chain(&chain(&refs(&names), &[], &[(1, 3 << 20, 3 << 20)]));
        assert_eq!(
            c.gaps[0].to_string(),
            "WAL gap on timeline 1 at 000000010000000000000003 (the start of the oldest kept base backup): next \
             archived is 000000010000000000000005 (2 segments missing)"
        );
        // Nothing archived at all after the backup's start.
        let c = check_chain(&chain(&[], &[], &[(1, 3 << 20, 4 << 20)]));
        assert_eq!(c.gaps[0].missing_segments, 2);
        assert_eq!(c.gaps[0].next, None);
    }

    #[test]
    fn a_timeline_switch_explained_by_history_is_not_a_gap() {
        // Timeline 1 up to 0/8000100, timeline 2 from segment 8 on; the
        // parent's segment 8 exists only as .partial (not needed).
        let mut names = segs(1, 3..=7);
        names.push(format!("{}.partial", segment_file_name(1, 8, MIB)));
        names.extend(segs(2, 8..=11));
        names.push("00000002.history".into());
        let c = check_chain(&chain(
            &refs(&names),
            &[(2, "1\t0/800100\tno recovery target specified\n")],
            &[(1, 3 << 20, 3 << 20)],
        ));
        assert!(c.gaps.is_empty(), "{c:?}");
        assert!(c.problems.is_empty(), "{c:?}");
        assert!(c.history_read);
        assert_eq!(c.last_segment.as_deref(), Some("00000002000000000000000B"));
        // What a chain verification reads: the parent's segments up to the
        // switch, then the new timeline's, never the parent's .partial.
        let mut path = segs(1, 3..=7);
        path.extend(segs(2, 8..=11));
        assert_eq!(c.segments, path);
        // A segment missing on the new timeline is a gap named there.
        names.retain(|n| n != "000000020000000000000009");
        let c = check_chain(&chain(
            &refs(&names),
            &[(2, "1\t0/800100\tno recovery target specified\n")],
            &[(1, 3 << 20, 3 << 20)],
        ));
        assert_eq!(
            c.gaps[0].to_string(),
            "WAL gap on timeline 2 after 000000020000000000000008: next archived is \
             00000002000000000000000A (1 segment missing)"
        );
    }

    #[test]
    fn history_decides_the_path_not_the_names() {
        // Timeline 2 was abandoned (branched at segment 8); timeline 3
        // branched from timeline 1 at segment 10. Recovery needs timeline 1
        // up to segment 9: its segment 9 is missing, timeline 2's is not.
        let mut names = segs(1, 3..=8);
        names.extend(segs(2, 8..=12));
        names.extend(segs(3, 10..=11));
        names.extend([
            "00000002.history".to_string(),
            "00000003.history".to_string(),
        ]);
        let c = check_chain(&chain(
            &refs(&names),
            &[(2, "1\t0/800000\tx\n"), (3, "1\t0/A00000\tx\n")],
            &[(1, 3 << 20, 3 << 20)],
        ));
        assert_eq!(c.gaps.len(), 1, "{c:?}");
        assert_eq!(c.gaps[0].timeline, 1);
        assert_eq!(c.gaps[0].first_missing, "000000010000000000000009");
        assert_eq!(c.gaps[0].next.as_deref(), Some("00000003000000000000000A"));
    }

    #[test]
    fn without_the_history_file_a_switch_is_a_problem() {
        let mut names = segs(1, 3..=7);
        names.extend(segs(2, 8..=9));
        let c = check_chain(&chain(&refs(&names), &[], &[(1, 3 << 20, 3 << 20)]));
        assert!(!c.history_read);
        assert!(c.gaps.is_empty(), "{c:?}");
        assert!(c.problems[0].contains("00000002.history"), "{c:?}");
        // Archived but unread (no key): inferred, no problem.
        let mut ch = chain(&refs(&names), &[], &[(1, 3 << 20, 3 << 20)]);
        ch.histories.insert(2, HistoryFile::Unread);
        let c = check_chain(&ch);
        assert!(!c.history_read);
        assert!(c.problems.is_empty() && c.gaps.is_empty(), "{c:?}");
    }

    #[test]
    fn segment_numbers_follow_the_segment_size() {
        // 64 MiB segments: 64 per 4 GiB log; segment 0x3F is the last of log 0.
        let size = 64 * MIB;
        let names = vec![
            segment_file_name(1, 0x3E, size),
            segment_file_name(1, 0x3F, size),
            segment_file_name(1, 0x41, size),
        ];
        assert_eq!(names[2], "000000010000000100000001");
        let mut c = chain(&refs(&names), &[], &[]);
        c.segment_size = size;
        c.bases = vec![BaseStart {
            backup_id: "b".into(),
            timeline: 1,
            start_lsn: Lsn(0x3E * u64::from(size)),
            stop_timeline: 1,
            stop_lsn: Lsn(0x3E * u64::from(size) + 10),
            started_at: DateTime::from_timestamp(0, 0).unwrap(),
        }];
        let r = check_chain(&c);
        assert_eq!(r.gaps.len(), 1, "{r:?}");
        assert_eq!(r.gaps[0].first_missing, "000000010000000100000000");
        assert_eq!(r.gaps[0].missing_segments, 1);
    }

    #[test]
    fn with_a_pitr_window_older_backups_need_only_their_own_wal() {
        // b0 at segments 3..=4 (kept weekly), b1 at 10 anchors the window;
        // 5..=9 were pruned: not a gap. Segment 4 of b0 missing is one.
        let mut names = segs(1, 3..=3);
        names.extend(segs(1, 10..=14));
        let mut c = chain(
            &refs(&names),
            &[],
            &[(1, 3 << 20, (4 << 20) + 5), (1, 10 << 20, (10 << 20) + 5)],
        );
        c.window_start = Some(DateTime::from_timestamp(20 << 20, 0).unwrap());
        let r = check_chain(&c);
        assert_eq!(r.checked_from.as_deref(), Some("00000001000000000000000A"));
        assert_eq!(r.gaps.len(), 1, "{r:?}");
        assert_eq!(r.gaps[0].first_missing, "000000010000000000000004");
        assert_eq!(r.gaps[0].next, None);
        // Without the window, continuity from b0: 4..=9 missing.
        c.window_start = None;
        let r = check_chain(&c);
        assert_eq!(r.gaps.len(), 1, "{r:?}");
        assert_eq!(r.gaps[0].missing_segments, 6);
    }
}
