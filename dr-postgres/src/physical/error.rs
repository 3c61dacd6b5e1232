//! The error of point-in-time restore: planning (which backup, which
//! timeline, where the tablespaces go), writing the data directory, and the
//! restored server's recovery.

use std::path::PathBuf;
use std::time::Duration;

use crate::format::FormatError;

/// Errors of [`plan_pitr`](super::plan_pitr), [`pitr_restore`](super::pitr_restore),
/// [`stop_server`](super::stop_server) and the restorers built on them. Every
/// variant names the backup, file, directory or setting concerned; none
/// carries a secret.
///
/// Into [`dr_core::Error`]: a malformed input is usage
/// ([`dr_core::Error::InvalidConfig`]); a non-empty target, a target
/// another restore is writing and a tablespace that replay would create in
/// an existing directory are [`dr_core::Error::Conflict`]s; no backup for the target and a history file
/// not archived are [`dr_core::Error::NotFound`]; a corrupt or
/// undecryptable backup keeps its storage kind (verification failed, or
/// usage for a wrong key); a bound is [`dr_core::Error::Timeout`]; the rest
/// is [`dr_core::Error::Failed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PitrError {
    /// A value given by the user is malformed (`--target-time`, a
    /// tablespace mapping, a target action).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What it should be (`target time`, `tablespace mapping`).
        what: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// No base backup can reach the recovery target.
    #[error("no physical backup of {source_name:?} can reach {target}: {reason}")]
    NoBackupForTarget {
        /// The source name.
        source_name: String,
        /// The target.
        target: String,
        /// Why each candidate was refused.
        reason: String,
    },
    /// The history file of the timeline to follow is not in the archive.
    #[error("{name} is not in the WAL archive of source {source_name:?}")]
    NotArchived {
        /// The WAL archive's source name.
        source_name: String,
        /// The file name (`<timeline>.history`).
        name: String,
    },
    /// The target timeline does not descend from the backup's timeline at the
    /// backup's position.
    #[error("timeline {target_timeline} does not contain timeline {backup_timeline} at {backup_lsn}: {reason}")]
    TimelineUnreachable {
        /// The timeline recovery would follow.
        target_timeline: u32,
        /// The backup's timeline.
        backup_timeline: u32,
        /// The backup's stop location.
        backup_lsn: String,
        /// Details.
        reason: String,
    },
    /// Archived WAL has a hole on the path from the backup to the end of
    /// the archive: recovery to "latest" would silently stop there.
    #[error(
        "WAL segment {missing} is not archived (the last one before it is {after}, the next archived is {next}): \
         recovery to latest of {source_name:?} would stop at the gap and promote there; recover to a target \
         before it (--target-lsn / --target-time) or pass --allow-wal-gap to recover as far as the archive goes"
    )]
    WalGap {
        /// The source name.
        source_name: String,
        /// The first missing segment.
        missing: String,
        /// The last archived segment before it.
        after: String,
        /// The next archived segment on the path.
        next: String,
    },
    /// The restore target directory is not empty.
    #[error("data directory {}: {reason}", dir.display())]
    TargetNotEmpty {
        /// The directory.
        dir: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// A tablespace's restore directory is not empty.
    #[error(
        "tablespace {name} (oid {oid}): directory {} is not empty; restore into an empty or absent \
         directory, or map the tablespace elsewhere (--tablespace-mapping {name}=DIR)",
        dir.display()
    )]
    TablespaceNotEmpty {
        /// The tablespace's name.
        name: String,
        /// Its oid.
        oid: u32,
        /// The directory.
        dir: PathBuf,
    },
    /// The WAL the restore would replay creates a tablespace in a directory
    /// that exists on this host. PostgreSQL replays `CREATE TABLESPACE` at
    /// the directory written in the WAL, not under the restored data
    /// directory, and empties that directory's version subdirectory first
    /// (PostgreSQL 15 docs §26.3.7 "Caveats"): recovery would write into
    /// another cluster's tablespace, the original's when restoring beside
    /// it. Refused before anything is written.
    #[error(
        "the WAL this restore replays creates tablespace oid {oid} in {} (record at {lsn} on timeline \
         {timeline}{}), and {} exists on this host: PostgreSQL replays CREATE TABLESPACE at the directory \
         written in the WAL, so recovery would empty and write into it (another cluster's tablespace, the \
         original's when restoring beside it; PostgreSQL docs, Continuous Archiving, \"Caveats\"){}. \
         Choose one: recover to just before it with --target-lsn {before}; restore on another host, where {} \
         does not exist; or restore a base backup taken after {lsn} (take one now)",
        path.display(),
        created_at.map(|t| format!(", committed {}", t.to_rfc3339())).unwrap_or_default(),
        path.display(),
        if more.is_empty() { String::new() } else { format!("; later ones too: {}", more.join(", ")) },
        path.display()
    )]
    TablespaceInWal {
        /// The tablespace's oid.
        oid: u32,
        /// The directory in the WAL record.
        path: PathBuf,
        /// Where the creation record starts.
        lsn: crate::format::Lsn,
        /// The record before it: `--target-lsn` stops just before the
        /// creation.
        before: crate::format::Lsn,
        /// The timeline of the record.
        timeline: u32,
        /// The commit time of the creation, when known.
        created_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Later creations refused for the same reason, `oid in DIR at LSN`.
        more: Vec<String>,
    },
    /// Another restore is writing the target directory now.
    #[error("another dr restore (pid {pid}) is writing {}", dir.display())]
    RestoreInProgress {
        /// The data directory.
        dir: PathBuf,
        /// The process holding the lock, as it recorded itself.
        pid: u32,
    },
    /// The restored server did not reach its target.
    #[error("recovery of {} failed: {reason}", dir.display())]
    RecoveryFailed {
        /// The data directory.
        dir: PathBuf,
        /// What happened (the end of the server log).
        reason: String,
    },
    /// A bound was exceeded.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// The operation.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A local file failed.
    #[error("I/O failed on {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL file or value is not in its format (a timeline history
    /// file, `pg_control`).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The repository failed (a corrupt or undecryptable backup among
    /// others).
    #[error(transparent)]
    Storage(#[from] dr_storage::Error),
    /// PostgreSQL or its programs failed, or a manifest holds no physical
    /// backup's metadata.
    #[error(transparent)]
    Postgres(#[from] crate::Error),
}

impl From<PitrError> for dr_core::Error {
    fn from(e: PitrError) -> Self {
        match e {
            PitrError::InvalidInput {
                what,
                value,
                reason,
            } => dr_core::Error::InvalidConfig {
                key: what,
                reason: format!("{value:?}: {reason}"),
            },
            PitrError::Storage(s) => dr_core::Error::Storage(s),
            PitrError::Postgres(p) => p.into(),
            PitrError::Format(f) => f.into(),
            PitrError::TargetNotEmpty { ref dir, .. }
            | PitrError::TablespaceNotEmpty { ref dir, .. }
            | PitrError::RestoreInProgress { ref dir, .. }
            | PitrError::TablespaceInWal { path: ref dir, .. } => dr_core::Error::Conflict {
                what: dir.display().to_string(),
                reason: e.to_string(),
            },
            PitrError::WalGap { .. } => dr_core::Error::Failed {
                what: "the WAL archive".into(),
                source: Box::new(e),
            },
            PitrError::NotArchived { .. } | PitrError::NoBackupForTarget { .. } => {
                dr_core::Error::NotFound {
                    what: e.to_string(),
                }
            }
            PitrError::Timeout { what, after } => dr_core::Error::Timeout { what, after },
            other => dr_core::Error::Failed {
                what: "PostgreSQL point-in-time restore".into(),
                source: Box::new(other),
            },
        }
    }
}

impl PitrError {
    /// Maps an I/O error on `path` to [`PitrError::Io`].
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> PitrError + '_ {
        move |source| PitrError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
