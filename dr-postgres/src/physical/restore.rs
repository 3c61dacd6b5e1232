//! Point-in-time restore of a physical backup (PostgreSQL 15 docs §26.3.4
//! "Recovering Using a Continuous Archive Backup").

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dr_storage::{Identities, Manifest, Repository, WalArchive};
use serde::Serialize;

use super::source::{PhysicalMetadata, BASE_ARTIFACT, KIND_PHYSICAL, MANIFEST_ARTIFACT};
use super::target::{RecoveryTarget, TargetAction};
use crate::conn::ConnectionSettings;
use crate::wal::{segment_file_name, History, Lsn, WalError, WalFileKind, WalFileName};

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
    /// Write this `unix_socket_directories` (default: the data directory
    /// when started).
    pub socket_dir: Option<PathBuf>,
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
    /// Directory of the server programs (`pg_ctl`); default
    /// `/usr/lib/postgresql/<major>/bin`.
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
    type Err = WalError;

    /// Parses `OID-or-NAME=DIR`.
    ///
    /// # Errors
    /// [`WalError::InvalidInput`] without `=`, with an empty side, or a
    /// relative directory.
    fn from_str(s: &str) -> Result<Self, WalError> {
        let bad = |reason: &str| WalError::InvalidInput {
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
            socket_dir: None,
            owner: None,
            user: "postgres".into(),
            wait_timeout: Duration::from_secs(900),
            allow_wal_gap: false,
            bin_dir: None,
            tablespace_mapping: Vec::new(),
            tablespace_root: None,
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }
}

/// The chosen backup and the settings a restore will write; print it, then
/// [`pitr_restore`] it.
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
    #[serde(skip)]
    manifest: Manifest,
}

/// Where recovery ended.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryPoint {
    /// The WAL position of the server after recovery.
    pub lsn: String,
    /// Its timeline.
    pub timeline: u32,
    /// The commit time of the last transaction replayed.
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// Whether the server is still in recovery (paused at the target).
    pub in_recovery: bool,
}

/// What [`pitr_restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    /// The data directory.
    pub pgdata: PathBuf,
    /// The plan carried out.
    pub plan: PitrPlan,
    /// Plaintext bytes restored.
    pub bytes: u64,
    /// Set when the server was started and recovery ended.
    pub reached: Option<RecoveryPoint>,
    /// The port the server listens on, when started.
    pub port: Option<u16>,
    /// The socket directory, when started.
    pub socket_dir: Option<PathBuf>,
    /// Wall time.
    pub elapsed_secs: f64,
}

fn metadata(m: &Manifest) -> Result<PhysicalMetadata, WalError> {
    serde_json::from_value(m.metadata.clone()).map_err(|e| WalError::InvalidInput {
        what: "backup manifest".into(),
        value: m.backup_id.clone(),
        reason: format!("not a physical backup's metadata: {e}"),
    })
}

/// Chooses the backup for `opts.target`: the newest physical backup of
/// `source` whose stop point is before the target, on a timeline from which
/// the target timeline is reachable. Never falls back to another target.
///
/// # Errors
/// [`WalError::NoBackupForTarget`] listing why each backup was refused;
/// [`WalError::TimelineUnreachable`] for an explicit backup off the target's
/// history; repository errors.
pub async fn plan_pitr(
    repo: &Repository,
    identities: &Identities,
    source: &str,
    opts: &PitrOptions,
) -> Result<PitrPlan, WalError> {
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
    let none = |reason: String| WalError::NoBackupForTarget {
        source_name: source.to_string(),
        target: opts.target.to_string(),
        reason,
    };
    if backups.is_empty() {
        return Err(none("the source has no physical backup".into()));
    }
    let first = metadata(&backups[0])?;
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
            .filter_map(|m| metadata(m).ok())
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
                dr_storage::Error::NotFound { .. } => WalError::NotArchived {
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
        let meta = metadata(m)?;
        if meta.system_identifier != first.system_identifier {
            rejected.push(format!(
                "{}: another cluster (system id {})",
                m.backup_id, meta.system_identifier
            ));
            continue;
        }
        if let Err(e) = history.check_reachable(meta.stop_timeline, meta.stop_lsn) {
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
    if matches!(opts.target, RecoveryTarget::Latest) && !opts.allow_wal_gap {
        // PostgreSQL ends recovery without a target wherever the archive
        // runs out: a hole would be a silent early promotion.
        let names: Vec<String> = archive
            .list(system_id)
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        let size = match meta.wal_segment_size {
            0 => crate::wal::retention::DEFAULT_SEGMENT_SIZE,
            n => n,
        };
        if let Some((missing, after, next)) =
            first_gap(&names, &history, meta.timeline, meta.start_lsn, size)
        {
            return Err(WalError::WalGap {
                source_name: source.to_string(),
                missing,
                after,
                next,
            });
        }
    }
    let settings = recovery_settings(opts, &archive, timeline);
    let tablespaces = place_tablespaces(&manifest.backup_id, &meta, opts)?;
    Ok(PitrPlan {
        source: source.to_string(),
        backup_id: manifest.backup_id.clone(),
        backup: meta,
        target: opts.target.clone(),
        timeline,
        settings,
        rejected,
        tablespaces,
        manifest,
    })
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
/// [`WalError::InvalidInput`] for a mapping that names no tablespace of the
/// backup, two tablespaces in one directory, or a tablespace inside the
/// data directory.
fn place_tablespaces(
    backup_id: &str,
    meta: &PhysicalMetadata,
    opts: &PitrOptions,
) -> Result<Vec<TablespacePlacement>, WalError> {
    let bad = |value: String, reason: String| WalError::InvalidInput {
        what: "tablespace mapping".into(),
        value,
        reason,
    };
    for m in &opts.tablespace_mapping {
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
    s
}

fn socket_dir(opts: &PitrOptions) -> Option<PathBuf> {
    opts.socket_dir
        .clone()
        .or_else(|| opts.start.then(|| opts.pgdata.clone()))
}

/// `postgresql.conf` string quoting: single quotes doubled.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn default_owner() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

fn chown_tree(dir: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(owner.0), Some(owner.1))?;
    if dir.is_dir() && !dir.is_symlink() {
        for e in std::fs::read_dir(dir)? {
            chown_tree(&e?.path(), owner)?;
        }
    }
    Ok(())
}

/// Restores the plan's backup into `opts.pgdata` and writes the recovery
/// settings; with `opts.start`, starts the server as the data directory's
/// owner and waits until recovery ends.
///
/// # Errors
/// [`WalError::TargetNotEmpty`] before anything is written;
/// [`WalError::RecoveryFailed`] with the end of the server log; repository
/// errors (a wrong key fails before the directory is created).
pub async fn pitr_restore(
    repo: &Repository,
    identities: &Identities,
    plan: &PitrPlan,
    opts: &PitrOptions,
) -> Result<PitrReport, WalError> {
    let started = Instant::now();
    let pgdata = &opts.pgdata;
    if pgdata.exists() {
        let mut entries = std::fs::read_dir(pgdata).map_err(io(pgdata))?;
        if entries.next().is_some() {
            return Err(WalError::TargetNotEmpty {
                dir: pgdata.clone(),
                reason: "is not empty; restore into an empty or absent directory".into(),
            });
        }
    }
    for t in &plan.tablespaces {
        if !is_empty_or_absent(&t.dir)? {
            return Err(WalError::TablespaceNotEmpty {
                name: t.name.clone(),
                oid: t.oid,
                dir: t.dir.clone(),
            });
        }
    }
    let owner = opts.owner.or_else(default_owner);
    // Which directories existed (empty) before: on a failure while the
    // files are written, what this restore wrote is removed again, so no
    // half-restored data directory is left behind.
    let mut written: Vec<(PathBuf, bool)> = vec![(pgdata.clone(), pgdata.exists())];
    written.extend(
        plan.tablespaces
            .iter()
            .map(|t| (t.dir.clone(), t.dir.exists())),
    );
    let files: Result<u64, WalError> = async {
        // Opening the artifact checks the key before anything is written.
        let reader = repo
            .open_artifact(&plan.manifest, BASE_ARTIFACT, identities)
            .await?;
        create_private_dir(pgdata)?;
        // With tablespaces, dr makes the pg_tblspc links itself (pointing to
        // the mapped directories); the server would otherwise recreate the
        // original ones from tablespace_map (PostgreSQL 15 docs §26.3.3).
        let links = !plan.tablespaces.is_empty();
        let mut bytes = unpack(
            reader,
            pgdata.clone(),
            move |path| {
                links
                    && (path == Path::new("tablespace_map")
                        || path.parent() == Some(Path::new("pg_tblspc")))
            },
            opts.cancel.clone(),
        )
        .await?;
        if plan
            .manifest
            .artifacts
            .iter()
            .any(|a| a.name == MANIFEST_ARTIFACT)
        {
            use tokio::io::AsyncReadExt;
            let mut reader = repo
                .open_artifact(&plan.manifest, MANIFEST_ARTIFACT, identities)
                .await?;
            let path = pgdata.join(MANIFEST_ARTIFACT);
            // 0600, as the server's own files (pg_basebackup writes it so).
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await
                .map_err(io(&path))?;
            let mut buf = Vec::new();
            // Stream it: a manifest lists every file and can be large.
            loop {
                buf.clear();
                let n = (&mut reader)
                    .take(1 << 20)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| dr_storage::Error::from_io(e, "reading the backup manifest"))?;
                if n == 0 {
                    break;
                }
                tokio::io::AsyncWriteExt::write_all(&mut file, &buf)
                    .await
                    .map_err(io(&path))?;
                bytes += n as u64;
            }
        }
        for t in &plan.tablespaces {
            interrupted(&opts.cancel, pgdata)?;
            let reader = repo
                .open_artifact(&plan.manifest, &t.artifact, identities)
                .await?;
            create_private_dir(&t.dir)?;
            // The link first: whoever cleans up an interrupted restore finds
            // the tablespace's directory through it.
            let link = pgdata.join("pg_tblspc").join(t.oid.to_string());
            std::fs::create_dir_all(pgdata.join("pg_tblspc")).map_err(io(pgdata))?;
            std::os::unix::fs::symlink(&t.dir, &link).map_err(io(&link))?;
            bytes += unpack(reader, t.dir.clone(), |_| false, opts.cancel.clone()).await?;
            if let Some(o) = owner {
                chown_tree(&t.dir, o).map_err(io(&t.dir))?;
            }
            tracing::info!(tablespace = %t.name, oid = t.oid, dir = %t.dir.display(), "tablespace restored");
        }
        // The data on disk before the files that make the directory look like
        // a restore ready to start (recovery.signal): a crash in between leaves
        // no signal rather than a signal over data still in the page cache.
        interrupted(&opts.cancel, pgdata)?;
        let mut dirs = vec![pgdata.clone()];
        dirs.extend(plan.tablespaces.iter().map(|t| t.dir.clone()));
        sync_filesystems(&dirs).await?;
        // Files that must not survive into the restored cluster.
        for stale in ["postmaster.pid", "postmaster.opts"] {
            let _ = std::fs::remove_file(pgdata.join(stale));
        }
        {
            use std::os::unix::fs::OpenOptionsExt;
            let signal = pgdata.join("recovery.signal");
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&signal)
                .map_err(io(&signal))?;
        }
        let auto = pgdata.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&format!(
            "\n# written by dr: point-in-time restore of backup {} to {}\n",
            plan.backup_id, plan.target
        ));
        for (k, v) in &plan.settings {
            text.push_str(&format!("{k} = {}\n", conf_quote(v)));
        }
        std::fs::write(&auto, text).map_err(io(&auto))?;
        if let Some(o) = owner {
            chown_tree(pgdata, o).map_err(io(pgdata))?;
        }
        sync_filesystems(&dirs).await?;
        tracing::info!(pgdata = %pgdata.display(), backup_id = %plan.backup_id, target = %plan.target, "base backup restored");
        Ok(bytes)
    }
    .await;
    let bytes = match files {
        Ok(b) => b,
        Err(e) => {
            for (dir, existed) in &written {
                let cleaned = if *existed {
                    std::fs::read_dir(dir).and_then(|entries| {
                        entries.flatten().try_for_each(|e| {
                            let p = e.path();
                            if p.is_dir() && !p.is_symlink() {
                                std::fs::remove_dir_all(&p)
                            } else {
                                std::fs::remove_file(&p)
                            }
                        })
                    })
                } else {
                    std::fs::remove_dir_all(dir)
                };
                if let Err(c) = cleaned {
                    if c.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %dir.display(), error = %c, "a failed restore could not remove what it wrote");
                    }
                }
            }
            return Err(e);
        }
    };
    let mut report = PitrReport {
        pgdata: pgdata.clone(),
        plan: plan.clone(),
        bytes,
        reached: None,
        port: None,
        socket_dir: None,
        elapsed_secs: 0.0,
    };
    if opts.start {
        let port = opts.port.unwrap_or(5432);
        let sock = socket_dir(opts).expect("socket dir when started");
        report.reached = Some(start_and_wait(plan, opts, owner, port, &sock).await?);
        report.port = Some(port);
        report.socket_dir = Some(sock);
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Flushes the file systems holding `dirs` to disk (`syncfs(2)`, what
/// PostgreSQL's `recovery_init_sync_method = syncfs` does; pg_basebackup and
/// pgBackRest sync restored files too), so that a restore reported done
/// survives a crash of the host.
async fn sync_filesystems(dirs: &[PathBuf]) -> Result<(), WalError> {
    let dirs = dirs.to_vec();
    tokio::task::spawn_blocking(move || {
        for d in &dirs {
            let f = std::fs::File::open(d).map_err(io(d))?;
            nix::unistd::syncfs(&f).map_err(|e| io(d)(std::io::Error::from(e)))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| WalError::Io {
        path: PathBuf::from("(sync)"),
        source: std::io::Error::other(e),
    })?
}

/// Whether `dir` is absent or an empty directory.
fn is_empty_or_absent(dir: &Path) -> Result<bool, WalError> {
    match std::fs::read_dir(dir) {
        Ok(mut e) => Ok(e.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Creates `dir` (and parents) with mode 0700, as PostgreSQL wants its data
/// and tablespace directories.
fn create_private_dir(dir: &Path) -> Result<(), WalError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// The codec's verdict inside an I/O error, however deeply tar wrapped it:
/// [`dr_storage::Error::Corrupt`] or [`dr_storage::Error::Decrypt`].
fn codec_error(e: &std::io::Error) -> Option<dr_storage::Error> {
    fn find(e: &(dyn std::error::Error + 'static)) -> Option<dr_storage::Error> {
        match e.downcast_ref::<dr_storage::Error>() {
            Some(dr_storage::Error::Corrupt { object, reason }) => {
                return Some(dr_storage::Error::Corrupt {
                    object: object.clone(),
                    reason: reason.clone(),
                })
            }
            Some(dr_storage::Error::Decrypt { object, reason }) => {
                return Some(dr_storage::Error::Decrypt {
                    object: object.clone(),
                    reason: reason.clone(),
                })
            }
            _ => {}
        }
        // io::Error::source skips the error it wraps: look inside first.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = find(inner) {
                return Some(found);
            }
        }
        e.source().and_then(find)
    }
    find(e)
}

/// Unpacks a tar artifact into `dest` ([`super::extract`]), leaving out the
/// entries `skip` selects, and reads it to the end so that the codec checks
/// the digests.
/// Returns the plaintext bytes read.
async fn unpack(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    dest: PathBuf,
    skip: impl Fn(&Path) -> bool + Send + 'static,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<u64, WalError> {
    let at = dest.clone();
    tokio::task::spawn_blocking(move || -> Result<u64, WalError> {
        // tar reads in small pieces (512-byte headers, 8 KiB copies); each
        // read of the bridge is a trip through the runtime, so buffer it.
        let mut bridge =
            std::io::BufReader::with_capacity(1 << 20, tokio_util::io::SyncIoBridge::new(reader));
        let mut counted = CountingRead {
            inner: &mut bridge,
            n: 0,
        };
        // tar wraps the reader's errors in its own; a corrupt or
        // undecryptable artifact must still come out as such (exit 1), not
        // as a local I/O failure.
        let unpack_err = |e: std::io::Error| match codec_error(&e) {
            Some(found) => found,
            None => dr_storage::Error::from_io(e, format!("unpacking into {}", dest.display())),
        };
        // Two writers: a piece is written while the next is decoded, and a
        // writer waiting in the kernel leaves the other one working.
        let extracted =
            super::extract::extract(&mut counted, &dest, 2, skip, || cancel.is_cancelled());
        // Cancelled, the extraction's own error is only "stopped".
        interrupted(&cancel, &dest)?;
        extracted.map_err(unpack_err)?;
        std::io::copy(&mut counted, &mut std::io::sink())
            .map_err(|e| dr_storage::Error::from_io(e, "reading the end of the base backup"))?;
        Ok(counted.n)
    })
    .await
    .map_err(|e| WalError::Io {
        path: at,
        source: std::io::Error::other(e),
    })?
}

/// [`dr_storage::Error::Aborted`] once `cancel` is cancelled.
fn interrupted(cancel: &tokio_util::sync::CancellationToken, dest: &Path) -> Result<(), WalError> {
    if cancel.is_cancelled() {
        return Err(dr_storage::Error::Aborted {
            what: format!("the restore into {} (interrupted)", dest.display()),
        }
        .into());
    }
    Ok(())
}

struct CountingRead<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// The server programs' directory for `major`.
fn server_bin(opts: &PitrOptions, major: u32) -> PathBuf {
    opts.bin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")))
}

/// Runs `pg_ctl` as the owner.
pub(crate) async fn pg_ctl(
    bin: &Path,
    owner: Option<(u32, u32)>,
    args: &[&str],
) -> Result<(bool, String), WalError> {
    let path = bin.join("pg_ctl");
    let mut cmd = tokio::process::Command::new(&path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    // The server inherits this directory; make it one the owner can enter.
    cmd.current_dir("/");
    let out = cmd.output().await.map_err(io(&path))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn log_path(pgdata: &Path) -> PathBuf {
    pgdata.join("dr-restore.log")
}

fn log_tail(pgdata: &Path) -> String {
    let text = std::fs::read_to_string(log_path(pgdata)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

async fn start_and_wait(
    plan: &PitrPlan,
    opts: &PitrOptions,
    owner: Option<(u32, u32)>,
    port: u16,
    sock: &Path,
) -> Result<RecoveryPoint, WalError> {
    let bin = server_bin(opts, plan.backup.server_version_num / 10000);
    let pgdata = opts.pgdata.to_string_lossy().to_string();
    let log = log_path(&opts.pgdata).to_string_lossy().to_string();
    let timeout = opts.wait_timeout.as_secs().max(1).to_string();
    let failed = |reason: String| WalError::RecoveryFailed {
        dir: opts.pgdata.clone(),
        reason,
    };
    let (ok, out) = pg_ctl(
        &bin,
        owner,
        &["-D", &pgdata, "-l", &log, "-w", "-t", &timeout, "start"],
    )
    .await?;
    if opts.action == TargetAction::Shutdown {
        // The server shuts down at the target; pg_ctl may or may not have
        // seen it accept connections first.
        let deadline = Instant::now() + opts.wait_timeout;
        while opts.pgdata.join("postmaster.pid").exists() {
            if Instant::now() > deadline {
                return Err(WalError::Timeout {
                    what: "recovery to the target".into(),
                    after: opts.wait_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Only the postmaster's "shutdown at recovery target" (exit status 3
        // of the startup process, src/backend/postmaster/postmaster.c) means
        // the target was reached; "database system is shut down" also ends a
        // recovery that failed ("recovery ended before configured recovery
        // target was reached").
        let tail = log_tail(&opts.pgdata);
        if !tail.contains("shutdown at recovery target")
            || tail.contains("recovery ended before configured recovery target was reached")
        {
            return Err(failed(format!(
                "the server shut down without reaching the recovery target\n{out}\n{tail}"
            )));
        }
        let control = crate::wal::read_control(&opts.pgdata)?;
        return Ok(RecoveryPoint {
            lsn: control.checkpoint.to_string(),
            timeline: control.timeline,
            last_replayed_commit: None,
            in_recovery: true,
        });
    }
    if !ok {
        return Err(failed(format!(
            "pg_ctl start: {}\nserver log:\n{}\nThe restored data directory is left in place: fix the cause (a port \
             in use: --port) and start it with `pg_ctl -D {} start`, or remove it to restore again.",
            out.trim(),
            log_tail(&opts.pgdata),
            opts.pgdata.display()
        )));
    }
    let conn = ConnectionSettings::from_dsn(&format!(
        "host={} port={port} user={} dbname=postgres",
        sock.display(),
        opts.user
    ))?;
    // A server that stops during recovery (the target is past the end of
    // the archive, a WAL file cannot be fetched) closes the connection: its
    // log says why, the closed connection does not.
    let died = |e: String| {
        let tail = log_tail(&opts.pgdata);
        if tail.contains("recovery ended before configured recovery target was reached") {
            failed(format!(
                "recovery ended before the target was reached (the archive holds no WAL up to it)\n{tail}"
            ))
        } else {
            failed(format!("the server stopped during recovery ({e})\n{tail}"))
        }
    };
    let client = match conn.connect().await {
        Ok(c) => c,
        Err(_) if !opts.pgdata.join("postmaster.pid").exists() => {
            return Err(died("it was not running".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + opts.wait_timeout;
    loop {
        let row = match client
            .query_one(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() \
                 ELSE 'not paused' END",
                &[],
            )
            .await
        {
            Ok(row) => row,
            Err(e) if e.is_closed() || client.is_closed() => {
                // Give the postmaster a moment to write its last lines.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Err(died(e.to_string()));
            }
            Err(e) => {
                return Err(WalError::Postgres(crate::Error::Query {
                    what: "waiting for recovery".into(),
                    target: conn.target(),
                    source: e,
                }))
            }
        };
        let in_recovery: bool = row.get(0);
        let pause: String = row.get(1);
        if !in_recovery || (opts.action == TargetAction::Pause && pause == "paused") {
            break;
        }
        if !opts.pgdata.join("postmaster.pid").exists() {
            return Err(failed(log_tail(&opts.pgdata)));
        }
        if Instant::now() > deadline {
            return Err(WalError::Timeout {
                what: "recovery to the target".into(),
                after: opts.wait_timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let q = |e| {
        WalError::Postgres(crate::Error::Query {
            what: "reading the recovery point".into(),
            target: conn.target(),
            source: e,
        })
    };
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(q)?
        .get(0);
    if !in_recovery {
        client.batch_execute("CHECKPOINT").await.map_err(q)?;
    }
    let row = client
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
             (SELECT timeline_id FROM pg_control_checkpoint()), pg_last_xact_replay_timestamp()",
            &[],
        )
        .await
        .map_err(q)?;
    let lsn: String = row.get(0);
    let _: Lsn = lsn.parse()?;
    Ok(RecoveryPoint {
        lsn,
        timeline: row.get::<_, i32>(1) as u32,
        last_replayed_commit: row
            .get::<_, Option<std::time::SystemTime>>(2)
            .map(Into::into),
        in_recovery,
    })
}

/// Stops a server started by [`pitr_restore`] (fast shutdown).
///
/// # Errors
/// When `pg_ctl stop` fails.
pub async fn stop_server(opts: &PitrOptions, server_major: u32) -> Result<(), WalError> {
    let bin = server_bin(opts, server_major);
    let owner = opts.owner.or_else(default_owner);
    let pgdata = opts.pgdata.to_string_lossy().to_string();
    let (ok, out) = pg_ctl(&bin, owner, &["-D", &pgdata, "-m", "fast", "-w", "stop"]).await?;
    if !ok && opts.pgdata.join("postmaster.pid").exists() {
        return Err(WalError::RecoveryFailed {
            dir: opts.pgdata.clone(),
            reason: format!("pg_ctl stop: {out}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod gap_tests {
    use super::*;

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
