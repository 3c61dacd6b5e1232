//! The error of reading PostgreSQL's formats.

use std::path::PathBuf;

/// A value or file that is not in the format PostgreSQL writes. Every
/// variant names the value or file; none carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A value given by the user or by PostgreSQL is malformed (an LSN, a
    /// WAL file name, a line of a timeline history file).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What it should be (`WAL file name`, `LSN`).
        what: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A file that should be WAL (or `pg_control`) is not: bad header,
    /// wrong size, implausible version.
    #[error("{file} is not a valid WAL file: {reason}")]
    NotWal {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file could not be read.
    #[error("I/O failed on {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<FormatError> for dr_core::Error {
    /// A malformed value is a usage error ([`dr_core::Error::InvalidConfig`]);
    /// a file that is not WAL, or cannot be read, a failure.
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::InvalidInput {
                what,
                value,
                reason,
            } => dr_core::Error::InvalidConfig {
                key: what,
                reason: format!("{value:?}: {reason}"),
            },
            other => dr_core::Error::Failed {
                what: "PostgreSQL WAL".into(),
                source: Box::new(other),
            },
        }
    }
}
