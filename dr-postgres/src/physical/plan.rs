//! Planning a point-in-time restore: which base backup reaches the
//! recovery target, which timeline recovery follows, whether archived WAL
//! has a hole on the way (for the target `latest`), where each tablespace
//! goes, and the recovery settings to write (PostgreSQL 15 docs §26.3.4
//! "Recovering Using a Continuous Archive Backup", §26.3.5 "Timelines",
//! §20.5.5 "Recovery Target"). Nothing here writes to disk: the plan is
//! printed, then carried out by [`pitr_restore`](super::pitr_restore).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_storage::{Identities, Manifest, Repository, WalArchive, WalObject};
use serde::Serialize;

use super::error::PitrError;
use super::replay::{tablespace_changes, WalTablespace};
use super::target::{RecoveryTarget, TargetAction};
use crate::format::{
    segment_file_name, History, Lsn, WalFileKind, WalFileName, DEFAULT_SEGMENT_SIZE,
};
use crate::metadata::{PhysicalMetadata, KIND_PHYSICAL};

/// Options of a point-in-time restore.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PitrOptions {
    /// The data directory to create; must be absent or empty.
    pub pgdata: PathBuf,
    /// Where recovery stops.
    pub target: RecoveryTarget,
    /// What the server does there.
    pub action: TargetAction,
    /// Use this backup (id or unique prefix) instead of choosing one.
    pub backup: Option<String>,
    /// Follow this timeline instead of the newest in the archive.
    pub timeline: Option<u32>,
    /// The `dr` program for `restore_command`.
    pub dr_program: PathBuf,
    /// Arguments `restore_command` passes to `dr wal-fetch` before
    /// `--source`: the repository and the key *file* (never a key), e.g.
    /// `["--repo", "s3://b/p", "--identity", "/etc/dr/key.txt"]`.
    pub fetch_args: Vec<String>,
    /// Start the server and wait until recovery ends.
    pub start: bool,
    /// Write `archive_mode = off`, so that the restored cluster never pushes
    /// a new timeline into the production archive (verification, tests).
    pub archive_mode_off: bool,
    /// Write this `port`.
    pub port: Option<u16>,
    /// `port` was chosen by dr as a free port, not given by the operator:
    /// when the server cannot bind it (taken between choosing and starting),
    /// the start moves to another free port, up to
    /// [`PORT_ATTEMPTS`](crate::physical::PORT_ATTEMPTS) starts in all. An
    /// operator's port is never changed.
    pub port_chosen: bool,
    /// Write this `unix_socket_directories` (default: the data directory
    /// when started).
    pub socket_dir: Option<PathBuf>,
    /// Listen on the Unix socket only (`listen_addresses = ''`): the port
    /// then only names the socket file in the socket directory, so no other
    /// process on the host can take it between choosing and starting.
    /// For servers only `dr` connects to (scratch verification).
    pub socket_only: bool,
    /// `(uid, gid)` owning the data directory and running the server.
    /// Default when running as root: the `postgres` user.
    pub owner: Option<(u32, u32)>,
    /// Superuser name to connect as after the start (default `postgres`).
    pub user: String,
    /// Bound on the recovery when started.
    pub wait_timeout: Duration,
    /// With the target `latest`: restore even when archived WAL has a gap
    /// after the backup (recovery then ends at the gap).
    pub allow_wal_gap: bool,
    /// When `pgdata` is the leftover of an interrupted dr restore (its lock
    /// file is there and no process holds it), remove what that restore
    /// wrote (the directory's contents and those of the tablespace
    /// directories its `pg_tblspc` links point to) and restore into it. A
    /// directory without dr's lock file is never cleaned.
    pub clean_leftover: bool,
    /// Directory of the server programs (`pg_ctl`), searched first (see
    /// [`crate::tools`] for the rest of the search).
    pub bin_dir: Option<PathBuf>,
    /// Restore these tablespaces elsewhere than their original directory.
    pub tablespace_mapping: Vec<TablespaceMapping>,
    /// Restore every tablespace not in `tablespace_mapping` into
    /// `<tablespace_root>/<oid>` instead of its original directory
    /// (scratch restores, which must never write to production paths).
    pub tablespace_root: Option<PathBuf>,
    /// Cancelled (by a signal handler, say), the restore stops writing
    /// files, removes what it wrote and returns
    /// [`dr_storage::Error::Aborted`]. Once the files are in place (the
    /// server starting or recovering) it no longer stops the restore.
    pub cancel: tokio_util::sync::CancellationToken,
    /// The extraction threads hold a token of this tracker while they run:
    /// a restore future that is dropped does not stop them, so whoever
    /// removes the directory afterwards cancels `cancel`, then closes and
    /// waits on the tracker (`close()`, `wait()`) until nothing writes.
    pub tracker: tokio_util::task::TaskTracker,
}

impl PitrOptions {
    /// Options for restoring into `pgdata` up to `target`, with `restore_command`
    /// running `dr_program wal-fetch <fetch_args>`.
    pub fn new(
        pgdata: PathBuf,
        target: RecoveryTarget,
        dr_program: PathBuf,
        fetch_args: Vec<String>,
    ) -> Self {
        PitrOptions {
            pgdata,
            target,
            action: TargetAction::Promote,
            backup: None,
            timeline: None,
            dr_program,
            fetch_args,
            start: false,
            archive_mode_off: false,
            port: None,
            port_chosen: false,
            socket_dir: None,
            socket_only: false,
            owner: None,
            user: "postgres".into(),
            wait_timeout: Duration::from_secs(900),
            allow_wal_gap: false,
            clean_leftover: false,
            bin_dir: None,
            tablespace_mapping: Vec::new(),
            tablespace_root: None,
            cancel: tokio_util::sync::CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
        }
    }
}

/// `OID-or-NAME=DIR`: restore a tablespace into `DIR` instead of its
/// original directory, the link in `pg_tblspc` pointing there (as
/// `pg_basebackup --tablespace-mapping` and pgBackRest `--tablespace-map`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TablespaceMapping {
    /// The tablespace's oid or name.
    pub tablespace: String,
    /// The directory, absolute.
    pub dir: PathBuf,
}

impl std::str::FromStr for TablespaceMapping {
    type Err = PitrError;

    /// Parses `OID-or-NAME=DIR`.
    ///
    /// # Errors
    /// [`PitrError::InvalidInput`] without `=`, with an empty side, or a
    /// relative directory.
    fn from_str(s: &str) -> Result<Self, PitrError> {
        let bad = |reason: &str| PitrError::InvalidInput {
            what: "tablespace mapping".into(),
            value: s.to_string(),
            reason: reason.into(),
        };
        let (ts, dir) = s
            .split_once('=')
            .ok_or_else(|| bad("expected OID-or-NAME=DIR"))?;
        if ts.is_empty() || dir.is_empty() {
            return Err(bad("expected OID-or-NAME=DIR"));
        }
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(bad("the directory must be an absolute path"));
        }
        Ok(TablespaceMapping {
            tablespace: ts.to_string(),
            dir,
        })
    }
}

/// Where a restore puts one tablespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TablespacePlacement {
    /// The tablespace's oid (its link name in `pg_tblspc`).
    pub oid: u32,
    /// Its name.
    pub name: String,
    /// Its directory on the source server.
    pub original: PathBuf,
    /// Where it is restored.
    pub dir: PathBuf,
    /// The artifact holding its tar.
    pub artifact: String,
}

/// The chosen backup and the settings a restore will write; print it, then
/// [`pitr_restore`](super::pitr_restore) it.
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    /// The source name.
    pub source: String,
    /// The backup chosen.
    pub backup_id: String,
    /// Its facts.
    pub backup: PhysicalMetadata,
    /// The target.
    pub target: RecoveryTarget,
    /// The timeline recovery follows.
    pub timeline: u32,
    /// The lines written to `postgresql.auto.conf`.
    pub settings: Vec<(String, String)>,
    /// Why other backups were not chosen.
    pub rejected: Vec<String>,
    /// Where each tablespace goes.
    pub tablespaces: Vec<TablespacePlacement>,
    /// Tablespaces the replayed WAL creates or drops, oldest first. A
    /// creation in a directory that exists on this host is refused
    /// ([`PitrError::TablespaceInWal`]); the others are listed here and
    /// in `warnings`.
    pub wal_tablespaces: Vec<WalTablespace>,
    /// What the operator should know before going on, one sentence each
    /// (which timeline recovery follows when another holds later WAL, a
    /// tablespace the replayed WAL creates): front ends print them.
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub(super) manifest: Manifest,
}

/// Chooses the backup for `opts.target`: the newest physical backup of
/// `source` whose stop point is before the target, on a timeline from which
/// the target timeline is reachable. Never falls back to another target.
///
/// It then reads the archived WAL recovery will replay, from the backup's
/// start to the target (to the end of the archive for `latest`), for
/// tablespace creations ([`PitrPlan::wal_tablespaces`]; PostgreSQL 15 docs
/// §26.3.7 "Caveats"): every segment on the way is fetched and decrypted
/// once, in memory, so planning a restore to `latest` long after the
/// newest base backup reads that much WAL. The plan's
/// [`warnings`](PitrPlan::warnings) say what the timeline choice means
/// (§26.3.5 "Timelines").
///
/// # Errors
/// [`PitrError::NoBackupForTarget`] listing why each backup was refused;
/// [`PitrError::TimelineUnreachable`] for an explicit backup off the target's
/// history; [`PitrError::WalGap`]; [`PitrError::TablespaceInWal`] when the
/// replayed WAL creates a tablespace in a directory that exists on this
/// host; [`PitrError::InvalidInput`] for a tablespace mapping that names no
/// tablespace of the backup, or one the WAL creates (it cannot be mapped);
/// repository errors.
pub async fn plan_pitr(
    repo: &Repository,
    identities: &Identities,
    source: &str,
    opts: &PitrOptions,
) -> Result<PitrPlan, PitrError> {
    let mut backups: Vec<Manifest> = repo
        .list_backups(Some(source))
        .await?
        .into_iter()
        .filter(|m| m.source.kind == KIND_PHYSICAL)
        .collect();
    if let Some(sel) = &opts.backup {
        let m = repo.find_backup(Some(source), sel).await?;
        backups = vec![m];
    }
    let none = |reason: String| PitrError::NoBackupForTarget {
        source_name: source.to_string(),
        target: opts.target.to_string(),
        reason,
    };
    if backups.is_empty() {
        return Err(none("the source has no physical backup".into()));
    }
    let first = PhysicalMetadata::from_manifest(&backups[0])?;
    let archive = WalArchive::new(repo, &first.wal_source)?;
    let system_id: u64 = first.system_identifier.parse().unwrap_or_default();
    // The timeline to follow: asked for, else the newest in the archive.
    let newest_history = archive
        .list_history(system_id)
        .await?
        .iter()
        .filter_map(|o| {
            o.name
                .strip_suffix(".history")
                .and_then(|t| u32::from_str_radix(t, 16).ok())
        })
        .max();
    let mut timeline = opts.timeline.unwrap_or_else(|| {
        let b = backups
            .iter()
            .filter_map(|m| PhysicalMetadata::from_manifest(m).ok())
            .map(|m| m.stop_timeline)
            .max()
            .unwrap_or(1);
        newest_history.unwrap_or(1).max(b)
    });
    if timeline == 0 {
        timeline = 1;
    }
    let history = if timeline == 1 {
        History::first()
    } else {
        let name = format!("{timeline:08X}.history");
        let (_, text) = archive
            .fetch(system_id, &name, identities)
            .await
            .map_err(|e| match e {
                dr_storage::Error::NotFound { .. } => PitrError::NotArchived {
                    source_name: archive.source().to_string(),
                    name: name.clone(),
                },
                e => e.into(),
            })?;
        History::parse(timeline, &String::from_utf8_lossy(&text))?
    };
    let mut rejected = Vec::new();
    let mut chosen: Option<(Manifest, PhysicalMetadata)> = None;
    for m in backups.iter().rev() {
        let meta = PhysicalMetadata::from_manifest(m)?;
        if meta.system_identifier != first.system_identifier {
            rejected.push(format!(
                "{}: another cluster (system id {})",
                m.backup_id, meta.system_identifier
            ));
            continue;
        }
        if let Err(e) = check_reachable(&history, meta.stop_timeline, meta.stop_lsn) {
            if opts.backup.is_some() {
                return Err(e);
            }
            rejected.push(format!("{}: {e}", m.backup_id));
            continue;
        }
        let before = match &opts.target {
            RecoveryTarget::Time(_) => {
                let t = opts.target.time_utc().expect("time target");
                (meta.stop_time <= t).then_some(()).ok_or(format!(
                    "ends at {} (server time), after the target",
                    meta.stop_time.to_rfc3339()
                ))
            }
            RecoveryTarget::Lsn(l) => (meta.stop_lsn <= *l)
                .then_some(())
                .ok_or(format!("ends at LSN {}, after the target", meta.stop_lsn)),
            RecoveryTarget::Xid(x) => (*x >= meta.stop_xmin).then_some(()).ok_or(format!(
                "transaction {x} had already ended when the backup finished (xmin {})",
                meta.stop_xmin
            )),
            RecoveryTarget::Name(_) | RecoveryTarget::Immediate | RecoveryTarget::Latest => Ok(()),
        };
        match before {
            Ok(()) => {
                chosen = Some((m.clone(), meta));
                break;
            }
            Err(why) => rejected.push(format!("{}: {why}", m.backup_id)),
        }
    }
    let Some((manifest, meta)) = chosen else {
        return Err(none(if rejected.is_empty() {
            "no candidate".into()
        } else {
            rejected.join("; ")
        }));
    };
    let listing = archive.list(system_id).await?;
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let size = match meta.wal_segment_size {
        0 => DEFAULT_SEGMENT_SIZE,
        n => n,
    };
    if matches!(opts.target, RecoveryTarget::Latest) && !opts.allow_wal_gap {
        // PostgreSQL ends recovery without a target wherever the archive
        // runs out: a hole would be a silent early promotion.
        if let Some((missing, after, next)) =
            first_gap(&names, &history, meta.timeline, meta.start_lsn, size)
        {
            return Err(PitrError::WalGap {
                source_name: source.to_string(),
                missing,
                after,
                next,
            });
        }
    }
    let mut warnings = Vec::new();
    if matches!(
        opts.target,
        RecoveryTarget::Latest | RecoveryTarget::Time(_)
    ) {
        let histories = all_histories(&archive, system_id, identities, &listing).await?;
        warnings.extend(timeline_warnings(
            &listing,
            &histories,
            timeline,
            opts.timeline.is_some(),
            &opts.target,
        ));
    }
    // Before anything is written: the tablespaces the replayed WAL creates.
    let wal_tablespaces = tablespace_changes(
        &archive,
        identities,
        system_id,
        &names,
        &history,
        &meta,
        &opts.target,
    )
    .await?;
    let settings = recovery_settings(opts, &archive, timeline);
    let tablespaces = place_tablespaces(&manifest.backup_id, &meta, opts, &wal_tablespaces)?;
    refuse_wal_tablespaces(&wal_tablespaces)?;
    for t in wal_tablespaces
        .iter()
        .filter(|t| t.created && !t.path.as_os_str().is_empty())
    {
        warnings.push(format!(
            "the WAL replayed creates tablespace oid {} in {} (at {}): recovery makes it there, not under the \
             restored data directory, and fails if {} does not exist; it cannot be mapped elsewhere \
             (PostgreSQL docs, Continuous Archiving, \"Caveats\"); to leave it out, recover to --target-lsn {}",
            t.oid,
            t.path.display(),
            t.lsn,
            t.path.display(),
            t.before
        ));
    }
    Ok(PitrPlan {
        source: source.to_string(),
        backup_id: manifest.backup_id.clone(),
        backup: meta,
        target: opts.target.clone(),
        timeline,
        settings,
        rejected,
        tablespaces,
        wal_tablespaces,
        warnings,
        manifest,
    })
}

/// Refuses a restore whose replayed WAL creates a tablespace in a
/// directory that exists on this host (PostgreSQL 15 docs §26.3.7
/// "Caveats").
///
/// # Errors
/// [`PitrError::TablespaceInWal`] naming the first such creation.
pub(super) fn refuse_wal_tablespaces(changes: &[WalTablespace]) -> Result<(), PitrError> {
    let existing: Vec<&WalTablespace> = changes
        .iter()
        // Anything but "no such file" counts as existing (a directory this
        // user may not look into exists all the same). An empty path is
        // an in-place tablespace (`allow_in_place_tablespaces`), made
        // inside the restored data directory.
        .filter(|c| {
            c.created
                && !c.path.as_os_str().is_empty()
                && !matches!(std::fs::symlink_metadata(&c.path),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        })
        .collect();
    match existing.split_first() {
        None => Ok(()),
        Some((first, rest)) => Err(PitrError::TablespaceInWal {
            oid: first.oid,
            path: first.path.clone(),
            lsn: first.lsn,
            before: first.before,
            timeline: first.timeline,
            created_at: first.committed_at,
            more: rest
                .iter()
                .map(|c| format!("oid {} in {} at {}", c.oid, c.path.display(), c.lsn))
                .collect(),
        }),
    }
}

/// The history of every timeline in the archive (timeline 1 has none).
async fn all_histories(
    archive: &WalArchive,
    system_id: u64,
    identities: &Identities,
    listing: &[WalObject],
) -> Result<Vec<History>, PitrError> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for o in listing {
        let Ok(n) = WalFileName::parse(&o.name) else {
            continue;
        };
        if n.kind != WalFileKind::History || !seen.insert(n.timeline) {
            continue;
        }
        let (_, text) = archive.fetch(system_id, &o.name, identities).await?;
        out.push(History::parse(n.timeline, &String::from_utf8_lossy(&text))?);
    }
    Ok(out)
}

/// Where each timeline's archived WAL ends: its last segment and when that
/// was archived.
fn timeline_ends(
    listing: &[WalObject],
) -> std::collections::BTreeMap<u32, (String, chrono::DateTime<chrono::Utc>)> {
    let mut ends: std::collections::BTreeMap<u32, (String, chrono::DateTime<chrono::Utc>)> =
        Default::default();
    for o in listing {
        let Ok(n) = WalFileName::parse(&o.name) else {
            continue;
        };
        if !n.has_pages() {
            continue;
        }
        let e = ends
            .entry(n.timeline)
            .or_insert_with(|| (o.name.clone(), o.last_modified));
        if o.name > e.0 {
            e.0 = o.name.clone();
        }
        e.1 = e.1.max(o.last_modified);
    }
    ends
}

/// What the timeline choice means, said out loud (PostgreSQL 15 docs
/// §26.3.5 "Timelines", §20.5.5 `recovery_target_timeline`): a time target
/// after the archived end of the timeline followed, when another timeline
/// holds later WAL; the target `latest` when more than one timeline goes on
/// separately (none is an ancestor of another).
fn timeline_warnings(
    listing: &[WalObject],
    histories: &[History],
    timeline: u32,
    asked: bool,
    target: &RecoveryTarget,
) -> Vec<String> {
    let ends = timeline_ends(listing);
    let ancestors: std::collections::BTreeSet<u32> = histories
        .iter()
        .flat_map(|h| h.entries.iter().map(|e| e.timeline))
        .collect();
    let why = if asked {
        "as asked"
    } else {
        "the newest timeline in the archive"
    };
    let describe = |t: u32| match ends.get(&t) {
        Some((seg, at)) => format!(
            "timeline {t} (archived WAL up to segment {seg}, archived at {})",
            at.to_rfc3339()
        ),
        None => format!("timeline {t} (no archived segment yet)"),
    };
    let mut out = Vec::new();
    match target {
        RecoveryTarget::Time(_) => {
            let t = target.time_utc().expect("a time target");
            let Some((seg, end)) = ends.get(&timeline) else {
                return out;
            };
            if *end >= t {
                return out;
            }
            let later: Vec<u32> = ends
                .iter()
                .filter(|(tl, (_, at))| **tl != timeline && *at > *end)
                .map(|(tl, _)| *tl)
                .collect();
            if later.is_empty() {
                out.push(format!(
                    "recovery follows timeline {timeline} ({why}), whose archived WAL ends in segment {seg} \
                     (archived at {}), before the target {}: recovery fails unless WAL up to the target is \
                     archived by then",
                    end.to_rfc3339(),
                    t.to_rfc3339()
                ));
            } else {
                out.push(format!(
                    "recovery follows timeline {timeline} ({why}), whose archived WAL ends in segment {seg} \
                     (archived at {}), before the target {}; later WAL is on {}: to recover along it, pass \
                     --target-timeline {}",
                    end.to_rfc3339(),
                    t.to_rfc3339(),
                    later
                        .iter()
                        .map(|l| describe(*l))
                        .collect::<Vec<_>>()
                        .join(", "),
                    later[later.len() - 1]
                ));
            }
        }
        RecoveryTarget::Latest => {
            let live: Vec<u32> = ends
                .keys()
                .copied()
                .filter(|t| !ancestors.contains(t))
                .collect();
            if live.len() > 1 {
                let others: Vec<u32> = live.iter().copied().filter(|t| *t != timeline).collect();
                out.push(format!(
                    "the archive holds {} timelines that go on separately: {}; recovery follows timeline \
                     {timeline} ({why}); to follow another, pass --target-timeline {}",
                    live.len(),
                    live.iter()
                        .map(|l| describe(*l))
                        .collect::<Vec<_>>()
                        .join(", "),
                    others
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
        }
        _ => {}
    }
    out
}

/// Whether a server at `lsn` on `timeline` can recover along `history`'s
/// timeline: it is that timeline, or an ancestor that ended at or after
/// `lsn` (PostgreSQL 15 docs §26.3.5 "Timelines").
///
/// # Errors
/// [`PitrError::TimelineUnreachable`] saying why not.
fn check_reachable(history: &History, timeline: u32, lsn: Lsn) -> Result<(), PitrError> {
    if timeline == history.timeline {
        return Ok(());
    }
    let unreachable = |reason: String| PitrError::TimelineUnreachable {
        target_timeline: history.timeline,
        backup_timeline: timeline,
        backup_lsn: lsn.to_string(),
        reason,
    };
    match history.entries.iter().find(|e| e.timeline == timeline) {
        Some(e) if lsn <= e.switch_point => Ok(()),
        Some(e) => Err(unreachable(format!(
            "timeline {timeline} ended at {} and the backup is at {lsn}, after the branch",
            e.switch_point
        ))),
        None => Err(unreachable(format!(
            "timeline {timeline} is not an ancestor of timeline {} (ancestors: {})",
            history.timeline,
            history
                .entries
                .iter()
                .map(|e| e.timeline.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The first archived-WAL hole on the path recovery follows from the
/// backup's start to the newest archived segment of `history`'s timeline:
/// `(missing, last before it, next archived)` as file names. On each
/// ancestor timeline the segments up to the one before its switch point are
/// needed (the switch segment is read from the child timeline).
fn first_gap(
    names: &[String],
    history: &History,
    start_timeline: u32,
    start_lsn: Lsn,
    size: u32,
) -> Option<(String, String, String)> {
    let present: std::collections::BTreeSet<(u32, u64)> = names
        .iter()
        .filter_map(|n| WalFileName::parse(n).ok())
        .filter(|n| n.kind == WalFileKind::Segment)
        .map(|n| (n.timeline, n.segment_no(size)))
        .collect();
    // (timeline, last segment needed on it or None for "to the end").
    let mut path: Vec<(u32, Option<u64>)> = history
        .entries
        .iter()
        .filter(|e| e.timeline >= start_timeline)
        .map(|e| {
            (
                e.timeline,
                Some(e.switch_point.segment_no(size).saturating_sub(1)),
            )
        })
        .collect();
    path.push((history.timeline, None));
    let mut seg = start_lsn.segment_no(size);
    let mut last_seen: Option<(u32, u64)> = None;
    for (tl, end) in path {
        let end = match end {
            Some(e) => e,
            None => match present.range((tl, seg)..=(tl, u64::MAX)).next_back() {
                Some(&(_, newest)) => newest,
                None => return None,
            },
        };
        while seg <= end {
            if present.contains(&(tl, seg)) {
                last_seen = Some((tl, seg));
            } else {
                let next = present
                    .range((tl, seg)..=(tl, u64::MAX))
                    .next()
                    .map(|&(t, s)| segment_file_name(t, s, size))
                    .unwrap_or_else(|| "none".into());
                let after = last_seen
                    .map(|(t, s)| segment_file_name(t, s, size))
                    .unwrap_or_else(|| "none (the backup's first segment)".into());
                return Some((segment_file_name(tl, seg, size), after, next));
            }
            seg += 1;
        }
    }
    None
}

/// Where each tablespace of the backup goes: its mapping, else
/// `<tablespace_root>/<oid>`, else its original directory.
///
/// # Errors
/// [`PitrError::InvalidInput`] for a mapping that names no tablespace of the
/// backup, two tablespaces in one directory, or a tablespace inside the
/// data directory.
fn place_tablespaces(
    backup_id: &str,
    meta: &PhysicalMetadata,
    opts: &PitrOptions,
    wal: &[WalTablespace],
) -> Result<Vec<TablespacePlacement>, PitrError> {
    let bad = |value: String, reason: String| PitrError::InvalidInput {
        what: "tablespace mapping".into(),
        value,
        reason,
    };
    for m in &opts.tablespace_mapping {
        let in_backup = meta
            .tablespaces
            .iter()
            .any(|t| t.name == m.tablespace || t.oid.to_string() == m.tablespace);
        if let Some(w) = wal
            .iter()
            .find(|w| w.created && w.oid.to_string() == m.tablespace)
            .filter(|_| !in_backup)
        {
            // PostgreSQL replays the creation at the directory in the WAL
            // record; a restore cannot point it elsewhere (the link in
            // pg_tblspc is made again by the replay).
            return Err(bad(
                format!("{}={}", m.tablespace, m.dir.display()),
                format!(
                    "tablespace oid {} is not in backup {backup_id}: the WAL replayed after it creates it at {} \
                     (record at {}), and PostgreSQL replays a CREATE TABLESPACE at the directory written in the \
                     WAL, so it cannot be mapped (PostgreSQL docs, Continuous Archiving, \"Caveats\"); recover \
                     to --target-lsn {} (before it), restore on another host, or use a base backup taken after it",
                    w.oid,
                    w.path.display(),
                    w.lsn,
                    w.before
                ),
            ));
        }
        if !meta
            .tablespaces
            .iter()
            .any(|t| t.name == m.tablespace || t.oid.to_string() == m.tablespace)
        {
            let have: Vec<String> = meta
                .tablespaces
                .iter()
                .map(|t| format!("{} (oid {})", t.name, t.oid))
                .collect();
            return Err(bad(
                format!("{}={}", m.tablespace, m.dir.display()),
                format!(
                    "backup {backup_id} has no tablespace {:?}; it has {}",
                    m.tablespace,
                    if have.is_empty() {
                        "none besides pg_default".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        }
    }
    let mut out: Vec<TablespacePlacement> = Vec::new();
    // Compared with symbolic links resolved: a mapping to a link into the
    // data directory overlaps it as much as the path itself.
    let pgdata = resolved(&opts.pgdata);
    let mut taken: Vec<PathBuf> = Vec::new();
    for t in &meta.tablespaces {
        // An oid match wins over a name match (a tablespace may be named
        // like another's oid).
        let mapped = opts
            .tablespace_mapping
            .iter()
            .find(|m| m.tablespace == t.oid.to_string())
            .or_else(|| {
                opts.tablespace_mapping
                    .iter()
                    .find(|m| m.tablespace == t.name)
            });
        let dir = match (mapped, &opts.tablespace_root) {
            (Some(m), _) => m.dir.clone(),
            (None, Some(root)) => root.join(t.oid.to_string()),
            (None, None) => PathBuf::from(&t.location),
        };
        let real = resolved(&dir);
        if real.starts_with(&pgdata) || pgdata.starts_with(&real) {
            return Err(bad(
                format!("{}={}", t.name, dir.display()),
                format!(
                    "the directory of tablespace {} overlaps the data directory {}",
                    t.name,
                    opts.pgdata.display()
                ),
            ));
        }
        if let Some(other) = taken
            .iter()
            .position(|o| o.starts_with(&real) || real.starts_with(o))
            .map(|i| &out[i])
        {
            return Err(bad(
                format!("{}={}", t.name, dir.display()),
                format!(
                    "tablespaces {} and {} would share {}",
                    other.name,
                    t.name,
                    dir.display()
                ),
            ));
        }
        taken.push(real);
        out.push(TablespacePlacement {
            oid: t.oid,
            name: t.name.clone(),
            original: PathBuf::from(&t.location),
            dir,
            artifact: t.artifact.clone(),
        });
    }
    Ok(out)
}

/// `p` with the symbolic links of its existing part resolved and the rest
/// appended as given (`p` itself when nothing of it resolves).
fn resolved(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut out) = existing.canonicalize() {
            out.extend(rest.iter().rev());
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Quotes a word for `/bin/sh` (PostgreSQL runs `restore_command` through
/// the shell).
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=@+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn recovery_settings(
    opts: &PitrOptions,
    archive: &WalArchive,
    timeline: u32,
) -> Vec<(String, String)> {
    let mut words = vec![
        sh_quote(&opts.dr_program.display().to_string()),
        "wal-fetch".to_string(),
    ];
    words.extend(opts.fetch_args.iter().map(|a| sh_quote(a)));
    words.extend([
        "--source".to_string(),
        sh_quote(archive.source()),
        "%f".into(),
        "%p".into(),
    ]);
    let mut s = vec![("restore_command".to_string(), words.join(" "))];
    for (k, v) in opts.target.settings() {
        s.push((k.to_string(), v));
    }
    if !matches!(opts.target, RecoveryTarget::Latest) {
        s.push(("recovery_target_action".into(), opts.action.as_str().into()));
    }
    s.push(("recovery_target_timeline".into(), timeline.to_string()));
    if opts.archive_mode_off {
        s.push(("archive_mode".into(), "off".into()));
    }
    if let Some(p) = opts.port {
        s.push(("port".into(), p.to_string()));
    }
    if let Some(d) = socket_dir(opts) {
        s.push(("unix_socket_directories".into(), d.display().to_string()));
    }
    if opts.socket_only {
        s.push(("listen_addresses".into(), String::new()));
    }
    s
}

pub(super) fn socket_dir(opts: &PitrOptions) -> Option<PathBuf> {
    opts.socket_dir
        .clone()
        .or_else(|| opts.start.then(|| opts.pgdata.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_is_reachable_only_along_the_targets_ancestry() {
        let h = History::parse(
            3,
            "1\t0/3000198\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-01-01 00:00:00+00\n",
        )
        .unwrap();
        check_reachable(&h, 3, Lsn(0x900_0000)).unwrap();
        check_reachable(&h, 1, Lsn(0x300_0000)).unwrap();
        check_reachable(&h, 2, Lsn(0x400_0000)).unwrap();
        assert!(matches!(
            check_reachable(&h, 1, Lsn(0x400_0000)),
            Err(PitrError::TimelineUnreachable { .. })
        ));
        assert!(check_reachable(&h, 4, Lsn(0)).is_err());
    }

    const MIB16: u32 = 16 * 1024 * 1024;

    fn names(list: &[(u32, u64)]) -> Vec<String> {
        list.iter()
            .map(|&(t, s)| segment_file_name(t, s, MIB16))
            .collect()
    }

    #[test]
    fn paths_are_compared_with_links_resolved() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let real = data.canonicalize().unwrap();
        // A link into the data directory, and a path not yet made below it.
        assert_eq!(resolved(&link.join("ts")), real.join("ts"));
        assert!(resolved(&link.join("a/b")).starts_with(&real));
        // Nothing of it exists: as given.
        assert_eq!(resolved(Path::new("nope/x")), PathBuf::from("nope/x"));
    }

    fn object(name: &str, at: &str) -> WalObject {
        WalObject {
            name: name.into(),
            plain_sha256: String::new(),
            object: String::new(),
            stored_size: 0,
            last_modified: chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&chrono::Utc),
        }
    }

    fn time(s: &str) -> RecoveryTarget {
        RecoveryTarget::Time(chrono::DateTime::parse_from_rfc3339(s).unwrap())
    }

    #[test]
    fn timeline_choices_are_said_out_loud() {
        // Timeline 1 until 10:00; 2 branched off it (a restore to an old
        // point) and wrote until 10:05; 3 branched off 1 too and wrote
        // until 11:00: 2 and 3 go on separately.
        let listing = vec![
            object("000000010000000000000003", "2026-01-01T09:00:00Z"),
            object("000000010000000000000004", "2026-01-01T10:00:00Z"),
            object("00000002.history", "2026-01-01T10:01:00Z"),
            object("000000020000000000000004", "2026-01-01T10:05:00Z"),
            object("00000003.history", "2026-01-01T10:30:00Z"),
            object("000000030000000000000004", "2026-01-01T10:40:00Z"),
            object("000000030000000000000005", "2026-01-01T11:00:00Z"),
        ];
        let histories = vec![
            History::parse(2, "1\t0/4000100\tbefore 2026-01-01 09:30:00+00\n").unwrap(),
            History::parse(3, "1\t0/4000200\tno recovery target specified\n").unwrap(),
        ];
        // A time after timeline 2's end, following 2 as asked: timeline 3
        // holds later WAL.
        let w = timeline_warnings(&listing, &histories, 2, true, &time("2026-01-01T10:50:00Z"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("recovery follows timeline 2 (as asked)")
                && w[0].contains("000000020000000000000004")
                && w[0].contains("timeline 3 (archived WAL up to segment 000000030000000000000005")
                && w[0].contains("--target-timeline 3"),
            "{}",
            w[0]
        );
        // A time before that end: nothing to say.
        assert!(
            timeline_warnings(&listing, &histories, 2, true, &time("2026-01-01T10:04:00Z"))
                .is_empty()
        );
        // After the end of every timeline: the timeline followed, where it ends.
        let w = timeline_warnings(
            &listing,
            &histories,
            3,
            false,
            &time("2026-01-01T12:00:00Z"),
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("timeline 3 (the newest timeline in the archive)"),
            "{}",
            w[0]
        );
        // latest with two live timelines: which one is followed, and the other.
        let w = timeline_warnings(&listing, &histories, 3, false, &RecoveryTarget::Latest);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("2 timelines that go on separately")
                && w[0].contains("recovery follows timeline 3")
                && w[0].contains("--target-timeline 2"),
            "{}",
            w[0]
        );
        // One live timeline (2 and 3 in a line): nothing.
        let line = vec![
            History::parse(2, "1\t0/4000100\tx\n").unwrap(),
            History::parse(3, "1\t0/4000100\tx\n2\t0/4000300\ty\n").unwrap(),
        ];
        assert!(timeline_warnings(&listing, &line, 3, false, &RecoveryTarget::Latest).is_empty());
        // Other targets: nothing.
        assert!(
            timeline_warnings(&listing, &histories, 3, false, &RecoveryTarget::Immediate)
                .is_empty()
        );
    }

    #[test]
    fn a_hole_on_the_path_to_the_end_is_named() {
        let h = History::first();
        let start = Lsn(2 * u64::from(MIB16) + 40);
        let all = names(&[(1, 1), (1, 2), (1, 3), (1, 5), (1, 6)]);
        let (missing, after, next) = first_gap(&all, &h, 1, start, MIB16).unwrap();
        assert_eq!(missing, "000000010000000000000004");
        assert_eq!(after, "000000010000000000000003");
        assert_eq!(next, "000000010000000000000005");
        // Complete from the backup's start on: no gap (segment 1 is older).
        let ok = names(&[(1, 2), (1, 3), (1, 4)]);
        assert_eq!(first_gap(&ok, &h, 1, start, MIB16), None);
    }

    #[test]
    fn a_timeline_switch_is_followed_not_taken_for_a_gap() {
        // Timeline 2 branched off 1 inside segment 6.
        let h = History::parse(2, "1\t0/6000100\tno recovery target specified\n").unwrap();
        let start = Lsn(3 * u64::from(MIB16));
        let tl = names(&[(1, 3), (1, 4), (1, 5), (2, 6), (2, 7), (1, 6), (1, 7)]);
        assert_eq!(first_gap(&tl, &h, 1, start, MIB16), None);
        // Timeline 1's segment 5 missing is a gap; its segment 7 (after
        // the switch) does not matter.
        let hole = names(&[(1, 3), (1, 4), (2, 6), (2, 7)]);
        let (missing, _, next) = first_gap(&hole, &h, 1, start, MIB16).unwrap();
        assert_eq!(missing, "000000010000000000000005");
        assert_eq!(next, "none");
    }
}
