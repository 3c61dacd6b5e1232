//! The storage error.

use std::io;

/// Errors of the repository and its codec.
///
/// Every variant names the object, file or setting that is wrong; none carries a
/// credential (store URLs are shown without user info or query).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A repository URL or path that cannot be used.
    #[error("invalid repository location {location:?}: {reason}")]
    InvalidLocation {
        /// The location as given, with any credentials removed.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No `dr-repo.json` at the location.
    #[error("no repository at {location}: create one with `dr repo init`")]
    NotInitialized {
        /// The repository location.
        location: String,
    },
    /// No `dr-repo.json` at a location that holds backups or WAL: the
    /// repository file was deleted or not copied. Reading refuses to guess,
    /// and `dr repo init` refuses to write a new one (its new
    /// `repository_id` would disown every manifest).
    #[error(
        "dr-repo.json is missing from {location}, which holds backups or WAL: put the original dr-repo.json \
         back (its repository_id is in every manifest; README \"What dr writes\"); `dr repo init` will not \
         make a new one over existing backups"
    )]
    RepositoryFileMissing {
        /// The repository location.
        location: String,
    },
    /// `dr repo init` found a repository already there.
    #[error("a repository already exists at {location}")]
    AlreadyInitialized {
        /// The repository location.
        location: String,
    },
    /// The repository was written by a newer `dr`.
    #[error(
        "repository at {location} has format version {found}, this dr reads versions up to {supported}: upgrade dr"
    )]
    UnsupportedFormat {
        /// The repository location.
        location: String,
        /// The version in `dr-repo.json`.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// An object that should exist does not.
    #[error("object {object} is missing from the repository")]
    NotFound {
        /// The object path inside the repository.
        object: String,
    },
    /// A create-only write found the object already there.
    #[error("object {object} already exists and is never overwritten")]
    AlreadyExists {
        /// The object path inside the repository.
        object: String,
    },
    /// Stored bytes differ from what the manifest recorded, or do not decode.
    #[error("object {object} is corrupt: {reason}")]
    Corrupt {
        /// The object path inside the repository.
        object: String,
        /// What did not match.
        reason: String,
    },
    /// The identity or passphrase does not open the object.
    #[error("cannot decrypt {object}: {reason}")]
    Decrypt {
        /// The object path inside the repository.
        object: String,
        /// Why (no matching key, wrong passphrase, ...).
        reason: String,
    },
    /// A key, recipient or identity file that cannot be used.
    #[error("invalid key material in {what}: {reason}")]
    InvalidKey {
        /// The file, flag or setting that holds it.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A name that cannot be used as a source, backup or artifact name.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// Which kind of name.
        what: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A backup that is not in the repository.
    #[error("{}", backup_not_found(id, source_name))]
    BackupNotFound {
        /// The source name, or `*` for any.
        source_name: String,
        /// The backup id or selector as asked.
        id: String,
    },
    /// The object store failed.
    #[error("object store failed on {object}")]
    Store {
        /// The object path inside the repository.
        object: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A local file or stream failed.
    #[error("I/O failed on {what}")]
    Io {
        /// The file or stream.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A JSON document of the repository does not parse.
    #[error("{object} is not a valid {what}")]
    Format {
        /// The object path inside the repository.
        object: String,
        /// What it should be.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A lease is held by someone else.
    #[error(
        "lock {name} is held by {holder} ({purpose}) until {expires_at}{}",
        if *stale { "; it has expired: if that process is gone, break it with --break-stale-lock" } else { "" }
    )]
    Locked {
        /// Lock name.
        name: String,
        /// The holder.
        holder: String,
        /// What it is held for.
        purpose: String,
        /// Its expiry.
        expires_at: chrono::DateTime<chrono::Utc>,
        /// Whether it has expired.
        stale: bool,
    },
    /// The operation was cancelled (the writer was dropped or aborted).
    #[error("{what} was aborted")]
    Aborted {
        /// What was aborted.
        what: String,
    },
}

/// Whether an I/O error in `e`'s source chain is one that retrying cannot
/// fix.
fn permanent_io(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::PermissionDenied
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::IsADirectory
            ) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// `Result` with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether retrying the same call may succeed (network faults, throttling).
    ///
    /// A store's generic error is retryable unless it comes from a local file
    /// system refusing for good (permission denied, read-only file system,
    /// a path component that is not a directory): waiting does not change
    /// file modes, and `dr wal-push` should say so at once instead of after
    /// its retry budget.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { source, .. } => match source {
                object_store::Error::Generic { .. } => !permanent_io(source),
                object_store::Error::JoinError { .. } => true,
                _ => false,
            },
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::TimedOut
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::Interrupted
            ),
            _ => false,
        }
    }

    /// Maps an object store error on `object` to the matching variant.
    pub fn store(object: impl Into<String>, source: object_store::Error) -> Self {
        let object = object.into();
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound { object },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { object },
            source => Error::Store { object, source },
        }
    }

    /// Recovers a storage error carried inside an `io::Error` (as the streaming
    /// readers and writers return them), or wraps the I/O error.
    pub fn from_io(source: io::Error, what: impl Into<String>) -> Self {
        if source.get_ref().is_some_and(|e| e.is::<Error>()) {
            let inner = source.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps this error into an `io::Error` that [`Error::from_io`] unwraps again.
    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            Error::Corrupt { .. } | Error::Decrypt { .. } => io::ErrorKind::InvalidData,
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// "no backup in the repository", "no backup of source db",
/// "no backup 2026... of source db": the words for [`Error::BackupNotFound`].
fn backup_not_found(id: &str, source: &str) -> String {
    let what = if id == "latest" {
        "no backup".to_string()
    } else {
        format!("no backup {id}")
    };
    if source == "*" {
        if id == "latest" {
            format!("{what} in the repository")
        } else {
            what
        }
    } else {
        format!("{what} of source {source}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: Box<dyn std::error::Error + Send + Sync>) -> Error {
        Error::store(
            "wal/db/archive.json",
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source,
            },
        )
    }

    #[test]
    fn a_refusal_of_the_file_system_is_not_retried() {
        // As a store wraps it: its own error with the io::Error as source.
        #[derive(Debug, thiserror::Error)]
        #[error("Unable to create dir: {source}")]
        struct Wrapped {
            #[source]
            source: io::Error,
        }
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::ReadOnlyFilesystem,
            io::ErrorKind::NotADirectory,
        ] {
            let e = generic(Box::new(Wrapped {
                source: io::Error::from(kind),
            }));
            assert!(!e.is_retryable(), "{kind:?}");
        }
        let flaky = generic(Box::new(io::Error::from(io::ErrorKind::TimedOut)));
        assert!(flaky.is_retryable());
        let other = generic("connection closed".into());
        assert!(other.is_retryable());
    }
}
