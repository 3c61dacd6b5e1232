//! The error of WAL archiving: `wal-push`, `wal-fetch`, and the archiving
//! checks of a physical backup (preflight, waiting for its WAL).

use std::path::PathBuf;
use std::time::Duration;

use crate::format::FormatError;

/// Errors of [`crate::wal`] (`wal-push`, `wal-fetch`, whose exit codes
/// [`push_exit_code`](crate::wal::push_exit_code) and
/// [`fetch_exit_code`](crate::wal::fetch_exit_code) derive from it) and of
/// the archiving side of a physical backup ([`crate::physical::PostgresPhysical`]:
/// preflight, waiting for the backup's WAL). Point-in-time restore has its
/// own [`crate::physical::PitrError`]. Every variant names the file, object
/// or setting concerned; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A value given by the user or by PostgreSQL is malformed.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What it should be (`WAL file name`, `LSN`).
        what: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A file that should be WAL is not (bad header, wrong size).
    #[error("{file} is not a valid WAL file: {reason}")]
    NotWal {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The segment comes from another cluster than the archive's.
    #[error(
        "{file} belongs to the cluster with system identifier {found}, but the WAL archive of source {source_name:?} \
         belongs to system identifier {registered}; refusing to mix clusters. After pg_upgrade or a new initdb the \
         cluster has a new identity: archive it under a new source name (change archive_command to \
         `dr wal-push --source <new-name> %p`) and take a new physical base backup of it"
    )]
    SystemIdMismatch {
        /// The archive's source name.
        source_name: String,
        /// The system identifier registered in `archive.json`.
        registered: u64,
        /// The one the file (or pg_control) carries.
        found: u64,
        /// The file pushed.
        file: String,
    },
    /// Another content is already archived under the same name.
    #[error(
        "{name} is already archived with different content (stored sha256 {stored_sha256}, pushed sha256 \
         {pushed_sha256}); archived WAL is never overwritten: check whether two clusters archive into source \
         {source_name:?}"
    )]
    Conflict {
        /// The source name.
        source_name: String,
        /// The file name.
        name: String,
        /// SHA-256 of the stored plaintext.
        stored_sha256: String,
        /// SHA-256 of the pushed file.
        pushed_sha256: String,
    },
    /// The source has no WAL archive (nothing was ever pushed).
    #[error("source {source_name:?} has no WAL archive in {repository} (no archive.json): check --source and --repo")]
    NoArchive {
        /// The source name.
        source_name: String,
        /// The repository.
        repository: String,
    },
    /// The file asked for is not in the archive (the listing succeeded).
    #[error("{name} is not in the WAL archive of source {source_name:?}")]
    NotArchived {
        /// The source name.
        source_name: String,
        /// The file name.
        name: String,
    },
    /// Transient errors persisted through every retry.
    #[error("{what} still failing after {attempts} attempts over {elapsed:?}")]
    RetriesExhausted {
        /// The operation.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The last error.
        #[source]
        last: Box<WalError>,
    },
    /// A precondition of a physical backup is not met.
    #[error("physical backup preflight: {check}: {reason}")]
    Preflight {
        /// The check (`archive_mode`, `archive_command`, `WAL switch`).
        check: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// PostgreSQL's archiver keeps failing on the WAL a backup needs.
    #[error(
        "WAL archiving is broken: archive_command failed {failures} times on {segment} (pg_stat_archiver) while \
         the backup of source {source_name:?} waited for {awaited}; the server log has archive_command's error \
         (the backup is not listed)"
    )]
    ArchiveFailing {
        /// The source name.
        source_name: String,
        /// The file that fails to archive: the awaited segment or one the
        /// archiver must send before it.
        segment: String,
        /// The segment the backup waited for.
        awaited: String,
        /// Failures counted while waiting.
        failures: i64,
    },
    /// The WAL a backup needs did not reach the archive in time.
    #[error(
        "WAL archiving is broken: {segment} did not reach the archive of source {source_name:?} within {waited:?}; \
         check archive_command and pg_stat_archiver (the backup is not listed)"
    )]
    ArchiveStalled {
        /// The source name.
        source_name: String,
        /// The segment waited for.
        segment: String,
        /// The bound.
        waited: Duration,
    },
    /// One attempt of a retried store operation got no answer before the
    /// retry deadline (retryable: the retry policy turns it into
    /// [`WalError::RetriesExhausted`]).
    #[error("{what}: the store did not answer within {after:?} (the rest of the retry deadline)")]
    AttemptTimedOut {
        /// The operation.
        what: String,
        /// How long the attempt waited.
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
    /// The repository failed.
    #[error(transparent)]
    Storage(#[from] dr_storage::Error),
    /// PostgreSQL or its programs failed.
    #[error(transparent)]
    Postgres(#[from] crate::Error),
}

impl WalError {
    /// Whether trying again may succeed (store and network faults).
    pub fn is_retryable(&self) -> bool {
        match self {
            WalError::Storage(e) => e.is_retryable(),
            WalError::Postgres(crate::Error::Connect { .. }) => true,
            WalError::AttemptTimedOut { .. } => true,
            _ => false,
        }
    }

    /// Whether this is an authoritative "not in the archive".
    pub fn is_not_archived(&self) -> bool {
        matches!(self, WalError::NotArchived { .. })
    }

    /// Whether the error is about the input or configuration.
    pub fn is_usage(&self) -> bool {
        match self {
            WalError::InvalidInput { .. }
            | WalError::NotWal { .. }
            | WalError::NoArchive { .. } => true,
            WalError::Storage(e) => dr_core::storage_error_kind(e) == dr_core::ErrorKind::Usage,
            WalError::RetriesExhausted { last, .. } => last.is_usage(),
            _ => false,
        }
    }
}

impl From<FormatError> for WalError {
    /// The same variant: a malformed name or LSN stays
    /// [`WalError::InvalidInput`], a file that is not WAL
    /// [`WalError::NotWal`].
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::InvalidInput {
                what,
                value,
                reason,
            } => WalError::InvalidInput {
                what,
                value,
                reason,
            },
            FormatError::NotWal { file, reason } => WalError::NotWal { file, reason },
            FormatError::Io { path, source } => WalError::Io { path, source },
        }
    }
}

impl From<WalError> for dr_core::Error {
    fn from(e: WalError) -> Self {
        match e {
            WalError::InvalidInput {
                what,
                value,
                reason,
            } => dr_core::Error::InvalidConfig {
                key: what,
                reason: format!("{value:?}: {reason}"),
            },
            WalError::Storage(s) => dr_core::Error::Storage(s),
            WalError::Postgres(p) => p.into(),
            WalError::Conflict { ref name, .. } => dr_core::Error::Conflict {
                what: name.clone(),
                reason: e.to_string(),
            },
            WalError::SystemIdMismatch { ref file, .. } => dr_core::Error::Conflict {
                what: file.clone(),
                reason: e.to_string(),
            },
            WalError::NotArchived { .. } | WalError::NoArchive { .. } => dr_core::Error::NotFound {
                what: e.to_string(),
            },
            WalError::Preflight { ref check, .. } => dr_core::Error::InvalidConfig {
                key: check.clone(),
                reason: e.to_string(),
            },
            WalError::AttemptTimedOut { what, after } => dr_core::Error::Timeout { what, after },
            WalError::ArchiveStalled { .. } | WalError::ArchiveFailing { .. } => {
                dr_core::Error::Failed {
                    what: "WAL archiving".into(),
                    source: Box::new(e),
                }
            }
            WalError::RetriesExhausted { .. } => dr_core::Error::Unavailable {
                what: "WAL archive".into(),
                source: Box::new(e),
            },
            other => dr_core::Error::Failed {
                what: "PostgreSQL WAL".into(),
                source: Box::new(other),
            },
        }
    }
}
