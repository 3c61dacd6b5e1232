//! What the archived WAL a restore replays does outside the data directory:
//! every tablespace it creates or drops, found by reading the WAL records
//! ([`crate::format::records`]) of the segments recovery will read, fetched
//! from the repository and decrypted in memory.
//!
//! Replaying `CREATE TABLESPACE` makes the tablespace at the directory
//! written in the WAL record, not under the restored data directory: a
//! restore beside the original cluster on the same host would empty and then
//! write into the original's live tablespace (PostgreSQL 15 docs §26.3.7
//! "Caveats"; `create_tablespace_directories` in
//! `src/backend/commands/tablespace.c` removes an existing directory of the
//! tablespace's version before it makes it again). The WAL read is the WAL
//! recovery replays: from the backup's start along the timelines recovery
//! follows (for each segment the newest timeline on the path that holds it,
//! as `XLogFileReadAnyTLI` in `src/backend/access/transam/xlogrecovery.c`
//! picks it), up to where the recovery target stops replay (PostgreSQL 15
//! docs §20.5.5 "Recovery Target", `recovery_target_inclusive` on), or to the
//! end of the archive for `latest`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use dr_storage::{Identities, WalArchive};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::error::PitrError;
use super::target::RecoveryTarget;
use crate::format::{
    segment_file_name, Fed, History, Lsn, RecordKind, RecordReader, WalFileKind, WalFileName,
    WalRecord,
};
use crate::metadata::PhysicalMetadata;

/// Segments fetched ahead of the one being read.
const PREFETCH: usize = 4;

/// A tablespace created or dropped by the WAL a restore replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalTablespace {
    /// The tablespace's oid (its link name in `pg_tblspc`).
    pub oid: u32,
    /// Created (else dropped).
    pub created: bool,
    /// The directory in the creation record (empty for a drop).
    pub path: PathBuf,
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where the record before it starts: `--target-lsn` with this value
    /// stops recovery just before this record.
    pub before: Lsn,
    /// The timeline the record is on.
    pub timeline: u32,
    /// The commit time of its transaction, when that commit is in the WAL
    /// read.
    pub committed_at: Option<DateTime<Utc>>,
}

/// Where recovery stops replaying, as far as records show it.
enum Stop {
    /// At the end of the WAL.
    Never,
    /// After the first record at or past this LSN.
    AfterLsn(Lsn),
    /// Before the first transaction end later than this time.
    BeforeXactAfter(DateTime<Utc>),
    /// After the end of this transaction.
    AfterXact(u32),
    /// After this restore point.
    AfterRestorePoint(String),
}

impl Stop {
    fn of(target: &RecoveryTarget, meta: &PhysicalMetadata) -> Stop {
        match target {
            RecoveryTarget::Latest => Stop::Never,
            RecoveryTarget::Immediate => Stop::AfterLsn(meta.stop_lsn),
            RecoveryTarget::Lsn(l) => Stop::AfterLsn(*l),
            RecoveryTarget::Time(_) => {
                Stop::BeforeXactAfter(target.time_utc().expect("a time target"))
            }
            // recovery_target_xid takes a 32-bit xid or one with its epoch.
            RecoveryTarget::Xid(x) => Stop::AfterXact(*x as u32),
            RecoveryTarget::Name(n) => Stop::AfterRestorePoint(n.clone()),
        }
    }

    /// `(replayed, last)`: whether recovery replays `r`, and whether it
    /// stops after it.
    fn check(&self, r: &WalRecord) -> (bool, bool) {
        match (self, &r.kind) {
            (Stop::Never, _) => (true, false),
            (Stop::AfterLsn(l), _) => (true, r.lsn >= *l),
            (Stop::BeforeXactAfter(t), RecordKind::XactEnd { time, .. }) if time > t => {
                (false, true)
            }
            (Stop::AfterXact(x), RecordKind::XactEnd { .. }) => (true, r.xid == *x),
            (Stop::AfterRestorePoint(n), RecordKind::RestorePoint { name }) => (true, name == n),
            _ => (true, false),
        }
    }
}

/// The timelines recovery follows from `start_timeline` to `history`'s
/// timeline: `(timeline, where it begins)`, oldest first.
pub(super) fn timeline_path(history: &History, start_timeline: u32) -> Vec<(u32, Lsn)> {
    let mut path = Vec::new();
    let mut begin = Lsn(0);
    for e in history
        .entries
        .iter()
        .filter(|e| e.timeline >= start_timeline)
    {
        path.push((e.timeline, begin));
        begin = e.switch_point;
    }
    path.push((history.timeline, begin));
    path
}

/// The segments recovery reads from segment `first` on: for each, the newest
/// timeline of `path` that began at or before it and has it in the archive;
/// up to the first segment no timeline has.
fn segments_to_read(
    names: &[String],
    path: &[(u32, Lsn)],
    first: u64,
    size: u32,
) -> Vec<(u32, u64)> {
    let present: BTreeSet<(u32, u64)> = names
        .iter()
        .filter_map(|n| WalFileName::parse(n).ok())
        .filter(|n| n.kind == WalFileKind::Segment)
        .map(|n| (n.timeline, n.segment_no(size)))
        .collect();
    let mut out = Vec::new();
    let mut seg = first;
    loop {
        let found = path
            .iter()
            .rev()
            .filter(|(_, begin)| begin.segment_no(size) <= seg)
            .find(|(tli, _)| present.contains(&(*tli, seg)));
        match found {
            Some(&(tli, _)) => out.push((tli, seg)),
            None => return out,
        }
        seg += 1;
    }
}

/// Every tablespace creation and drop in the WAL that a restore of `meta`
/// to `target` along `history` replays, oldest first. `names` is the
/// archive's listing.
///
/// # Errors
/// Repository errors (a segment that cannot be fetched or decrypted);
/// [`PitrError::Format`] for a segment of the wrong size.
pub(super) async fn tablespace_changes(
    archive: &WalArchive,
    identities: &Identities,
    system_id: u64,
    names: &[String],
    history: &History,
    meta: &PhysicalMetadata,
    target: &RecoveryTarget,
) -> Result<Vec<WalTablespace>, PitrError> {
    let size = match meta.wal_segment_size {
        0 => crate::format::DEFAULT_SEGMENT_SIZE,
        n => n,
    };
    let path = timeline_path(history, meta.timeline);
    let segments = segments_to_read(names, &path, meta.start_lsn.segment_no(size), size);
    let stop = Stop::of(target, meta);
    let timeline_of = |lsn: Lsn| {
        path.iter()
            .rev()
            .find(|(_, begin)| *begin <= lsn)
            .map_or(meta.timeline, |(t, _)| *t)
    };
    let mut reader = RecordReader::new(size);
    let mut found: Vec<WalTablespace> = Vec::new();
    // Creations by transaction, for their commit times.
    let mut by_xid: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut replaying = true;
    // Records read past the stop for commit times, bounded.
    let mut after_stop = 0u32;
    let mut fetched = futures::stream::iter(segments.into_iter().map(|(tli, seg)| {
        let name = segment_file_name(tli, seg, size);
        async move {
            let (_, data) = archive.fetch(system_id, &name, identities).await?;
            Ok::<_, PitrError>((name, seg, data))
        }
    }))
    .buffered(PREFETCH);
    while let Some((name, seg, data)) = fetched.try_next().await? {
        let fed = reader.feed(&name, seg, &data, |r| {
            if r.lsn < meta.start_lsn {
                return true;
            }
            if replaying {
                // Recovery never stops before the backup is consistent.
                let (replayed, last) = if r.lsn < meta.stop_lsn {
                    (true, false)
                } else {
                    stop.check(r)
                };
                if replayed {
                    match &r.kind {
                        RecordKind::TablespaceCreate { oid, path } => {
                            if r.xid != 0 {
                                by_xid.entry(r.xid).or_default().push(found.len());
                            }
                            found.push(WalTablespace {
                                oid: *oid,
                                created: true,
                                path: PathBuf::from(path),
                                lsn: r.lsn,
                                before: r.prev,
                                timeline: timeline_of(r.lsn),
                                committed_at: None,
                            });
                        }
                        RecordKind::TablespaceDrop { oid } => found.push(WalTablespace {
                            oid: *oid,
                            created: false,
                            path: PathBuf::new(),
                            lsn: r.lsn,
                            before: r.prev,
                            timeline: timeline_of(r.lsn),
                            committed_at: None,
                        }),
                        _ => {}
                    }
                }
                replaying = !last;
            }
            // Past the stop, read on only for the commit times of the
            // creations found (a few records in practice).
            if let RecordKind::XactEnd { commit, time } = &r.kind {
                for i in by_xid.remove(&r.xid).unwrap_or_default() {
                    if *commit {
                        found[i].committed_at = Some(*time);
                    }
                }
            }
            if !replaying {
                after_stop += 1;
            }
            replaying || (!by_xid.is_empty() && after_stop < 100_000)
        })?;
        match fed {
            Fed::More => {}
            Fed::EndOfWal { at } => {
                tracing::debug!(segment = %name, end = %at, "end of the archived WAL");
                break;
            }
            Fed::Stopped => break,
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u32 = 1 << 20;

    #[test]
    fn segments_follow_the_newest_timeline_that_has_them() {
        // Timeline 2 branched off 1 inside segment 5.
        let h = History::parse(2, "1\t0/500100\tno recovery target specified\n").unwrap();
        let path = timeline_path(&h, 1);
        assert_eq!(path, vec![(1, Lsn(0)), (2, Lsn(0x50_0100))]);
        let names: Vec<String> = [(1, 3), (1, 4), (1, 5), (1, 6), (2, 5), (2, 6), (2, 7)]
            .iter()
            .map(|&(t, s)| segment_file_name(t, s, MIB))
            .collect();
        assert_eq!(
            segments_to_read(&names, &path, 3, MIB),
            vec![(1, 3), (1, 4), (2, 5), (2, 6), (2, 7)]
        );
        // Up to the first segment missing.
        let holed: Vec<String> = names
            .iter()
            .filter(|n| !n.ends_with("06"))
            .cloned()
            .collect();
        assert_eq!(
            segments_to_read(&holed, &path, 3, MIB),
            vec![(1, 3), (1, 4), (2, 5)]
        );
        // A backup on timeline 2 reads only timeline 2.
        assert_eq!(timeline_path(&h, 2), vec![(2, Lsn(0))]);
    }

    #[test]
    fn targets_stop_where_recovery_stops() {
        let rec = |lsn: u64, kind: RecordKind| WalRecord {
            lsn: Lsn(lsn),
            prev: Lsn(0),
            xid: 9,
            rmid: 0,
            info: 0,
            kind,
        };
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let stop = Stop::AfterLsn(Lsn(100));
        assert_eq!(stop.check(&rec(99, RecordKind::Other)), (true, false));
        assert_eq!(stop.check(&rec(120, RecordKind::Other)), (true, true));
        let stop = Stop::BeforeXactAfter(t("2026-01-01T00:00:00Z"));
        let end = |s| RecordKind::XactEnd {
            commit: true,
            time: t(s),
        };
        assert_eq!(
            stop.check(&rec(1, end("2026-01-01T00:00:00Z"))),
            (true, false)
        );
        assert_eq!(
            stop.check(&rec(2, end("2026-01-01T00:00:01Z"))),
            (false, true)
        );
        let stop = Stop::AfterRestorePoint("x".into());
        let rp = |n: &str| RecordKind::RestorePoint { name: n.into() };
        assert_eq!(stop.check(&rec(1, rp("y"))), (true, false));
        assert_eq!(stop.check(&rec(2, rp("x"))), (true, true));
        assert_eq!(
            Stop::AfterXact(9).check(&rec(3, end("2026-01-01T00:00:00Z"))),
            (true, true)
        );
    }
}
