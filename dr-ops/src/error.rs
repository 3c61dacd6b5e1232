//! The operations layer's error: what went wrong, classified so that a front
//! end maps it to an exit code without looking at message text.

use dr_core::ErrorKind;

/// A boxed error, the cause of a configuration error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What an operation can fail with.
///
/// [`Error::kind`] classifies it the way `dr_core::Error::kind` does:
/// [`ErrorKind::Usage`] for a bad request or configuration (exit 2 in
/// `dr`), [`ErrorKind::VerificationFailed`] for data found wrong (exit 1),
/// [`ErrorKind::Failed`] for everything else (exit 3).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is incomplete or contradictory (a missing target, a flag
    /// that does not apply to this kind of backup).
    #[error("{0}")]
    Usage(String),
    /// A configuration value is wrong; `key` names it (`sources.db.schedule`,
    /// `agent.time_zone`, `--namespace-map`).
    #[error("{key}: {source}")]
    Config {
        /// The key or flag.
        key: String,
        /// What is wrong with it.
        #[source]
        source: BoxError,
    },
    /// The configuration file cannot be read or parsed.
    #[error("configuration {path}")]
    ConfigFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A library step failed.
    #[error(transparent)]
    Core(#[from] dr_core::Error),
    /// The repository failed.
    #[error(transparent)]
    Storage(#[from] dr_storage::Error),
    /// A local file could not be read or written.
    #[error("{what}")]
    Io {
        /// The file and what was done to it.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An operation failed; `context` says which (`backup of db`).
    #[error("{context}")]
    Context {
        /// The operation.
        context: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// The operation was stopped by the caller (a signal) and cleaned up.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

/// The result of an operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A usage error with `message`.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    /// A configuration error at `key`.
    pub fn config(key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Config {
            key: key.into(),
            source: source.into(),
        }
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// This error, as the cause of `context`.
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// How a front end should treat it. A repository error about keys or
    /// names is a usage error; a damaged object is a verification failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) | Error::Config { .. } | Error::ConfigFile { .. } => ErrorKind::Usage,
            Error::Core(e) => e.kind(),
            Error::Storage(e) => dr_core::storage_error_kind(e),
            Error::Context { source, .. } => source.kind(),
            Error::Io { .. } | Error::Interrupted(_) => ErrorKind::Failed,
        }
    }

    /// Whether running the operation again may succeed without a change.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Core(e) => e.is_retryable(),
            Error::Storage(e) => e.is_retryable(),
            Error::Context { source, .. } => source.is_retryable(),
            _ => false,
        }
    }
}

macro_rules! from_system_error {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Core(dr_core::Error::from(e))
            }
        })*
    };
}

from_system_error!(
    dr_postgres::Error,
    dr_postgres::WalError,
    dr_postgres::PitrError,
    dr_postgres::FormatError,
    dr_vault::VaultError,
    dr_k8s::Error,
    dr_dns::DnsError,
);

/// Adds context to a result's error.
pub trait ResultExt<T> {
    /// On error, wraps it as the cause of `context()`.
    ///
    /// # Errors
    /// The original error, wrapped.
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause_through_context() {
        let e = Error::usage("no target").context("restore");
        assert_eq!(e.kind(), ErrorKind::Usage);
        let e = Error::from(dr_core::Error::VerificationFailed {
            what: "x".into(),
            reason: "y".into(),
        })
        .context("verify");
        assert_eq!(e.kind(), ErrorKind::VerificationFailed);
        let e = Error::io("writing f", std::io::Error::other("full"));
        assert_eq!(e.kind(), ErrorKind::Failed);
        assert_eq!(
            Error::config("agent.time_zone", "Mars/Base").kind(),
            ErrorKind::Usage
        );
    }
}
