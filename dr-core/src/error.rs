//! The shared error model.
//!
//! System crates keep detailed errors of their own and convert into this one,
//! so a plan executor or a front end can decide (retry, exit code) without
//! knowing the provider.

use std::time::Duration;

/// A boxed cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The broad class of an [`Error`], for front ends (exit codes) and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input or configuration is wrong; nothing was attempted.
    Usage,
    /// A check found the data wrong (digest, row counts, archive contents).
    VerificationFailed,
    /// Anything else: a server, the store, a tool failed.
    Failed,
}

/// Errors shared across `dr`. Every variant names the thing that is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// It exists already and is not replaced.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists.
        what: String,
    },
    /// The state is not what the operation expects (a non-empty target, a
    /// changed record, a held lock).
    #[error("{what}: {reason}")]
    Conflict {
        /// The object in conflict.
        what: String,
        /// Why.
        reason: String,
    },
    /// The server refused for lack of privileges.
    #[error("permission denied on {what}: {reason}")]
    PermissionDenied {
        /// The object.
        what: String,
        /// The server's words.
        reason: String,
    },
    /// The backend cannot do this.
    #[error("{what} is not supported")]
    Unsupported {
        /// The operation and backend.
        what: String,
    },
    /// A configuration value is wrong.
    #[error("invalid configuration {key}: {reason}")]
    InvalidConfig {
        /// The key, flag or variable.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A server or tool could not be reached.
    #[error("{what} is unavailable")]
    Unavailable {
        /// The server or tool.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// An operation did not finish in time.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// The operation.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A verification found a difference.
    #[error("verification of {what} failed: {reason}")]
    VerificationFailed {
        /// What was verified.
        what: String,
        /// The differences.
        reason: String,
    },
    /// The operation was stopped (a shutdown signal, a deadline) and what
    /// it had done was undone.
    #[error("{what} was interrupted; nothing of it was kept")]
    Interrupted {
        /// The operation.
        what: String,
    },
    /// The repository failed; its error says which object.
    #[error(transparent)]
    Storage(#[from] dr_storage::Error),
    /// A step failed for another reason.
    #[error("{what} failed")]
    Failed {
        /// The operation.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

/// `Result` with the shared [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Failed`] with a message as cause.
    pub fn failed(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Failed {
            what: what.into(),
            source: reason.into().into(),
        }
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidConfig { .. } | Error::Unsupported { .. } => ErrorKind::Usage,
            Error::VerificationFailed { .. } => ErrorKind::VerificationFailed,
            Error::Storage(e) => storage_error_kind(e),
            _ => ErrorKind::Failed,
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } => true,
            Error::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// An error and its causes, `": "`-separated as anyhow's `{:#}` prints them
/// (`restore of backup b1: verification of table t failed: 3 rows, expected
/// 4`), leaving out a cause whose text the message already holds: some errors
/// (object_store's among them) print their source inside their own text,
/// which would make one permission error read three times.
///
/// Front ends print errors with it, and reports and journals record it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The class of a repository error: corrupt data is a failed verification;
/// bad locations, wrong or malformed keys, names, and missing or too-new
/// repositories are usage
/// errors; the rest are failures.
pub fn storage_error_kind(e: &dr_storage::Error) -> ErrorKind {
    use dr_storage::Error as S;
    match e {
        // A stored object that does not parse is damaged, as one whose
        // digest differs.
        S::Corrupt { .. } | S::Format { .. } | S::RepositoryFileMissing { .. } => {
            ErrorKind::VerificationFailed
        }
        S::InvalidLocation { .. }
        | S::InvalidKey { .. }
        | S::Decrypt { .. }
        | S::InvalidName { .. }
        | S::BackupNotFound { .. }
        | S::NotInitialized { .. }
        | S::AlreadyInitialized { .. }
        | S::UnsupportedFormat { .. } => ErrorKind::Usage,
        _ => ErrorKind::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source inside its own text, as object_store's do.
    #[derive(Debug)]
    struct Echoing {
        source: std::io::Error,
    }

    impl std::fmt::Display for Echoing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Unable to create dir /r/wal: {}", self.source)
        }
    }

    impl std::error::Error for Echoing {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = Error::Failed {
            what: "wal-push".into(),
            source: Box::new(Echoing { source: io }),
        };
        assert_eq!(
            error_chain(&e),
            "wal-push failed: Unable to create dir /r/wal: permission denied"
        );
        let plain = Error::failed("outer", "inner");
        assert_eq!(error_chain(&plain), "outer failed: inner");
        let alone = Error::NotFound {
            what: "backup b1".into(),
        };
        assert_eq!(error_chain(&alone), "backup b1 not found");
    }
}
