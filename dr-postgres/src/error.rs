//! The PostgreSQL error.

use std::path::PathBuf;

/// Errors of the PostgreSQL source and restorer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection setting is wrong.
    #[error("invalid PostgreSQL connection setting {key}: {reason}")]
    InvalidConfig {
        /// The setting (`dsn`, `PGPORT`, `password_file`, ...).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The server cannot be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        /// `host:port/database`, never the password.
        target: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database named does not exist.
    #[error("database {database:?} does not exist on {server}")]
    NoSuchDatabase {
        /// The database.
        database: String,
        /// `host:port`.
        server: String,
    },
    /// A query failed.
    #[error("{what} failed on {target}")]
    Query {
        /// What was being done.
        what: String,
        /// `host:port/database`.
        target: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A PostgreSQL client program is missing or too old.
    #[error("{program}: {reason}")]
    Tool {
        /// `pg_dump`, `pg_restore`, ...
        program: String,
        /// What is wrong.
        reason: String,
    },
    /// A client program failed.
    #[error("{program} exited with {status}: {stderr}")]
    ToolFailed {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The restore target is not in a state to receive the data.
    #[error("restore target {target}: {reason}")]
    TargetNotEmpty {
        /// The target database.
        target: String,
        /// Why it is refused.
        reason: String,
    },
    /// The backup data could not be read (corrupt, truncated, wrong key).
    #[error(transparent)]
    Data(#[from] dr_storage::Error),
    /// The replication connection or `BASE_BACKUP` failed.
    #[error(transparent)]
    Replication(#[from] crate::basebackup::ReplicationError),
    /// A local file failed.
    #[error("I/O failed on {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<Error> for dr_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidConfig { key, reason } => dr_core::Error::InvalidConfig { key, reason },
            Error::Data(e) => dr_core::Error::Storage(e),
            Error::NoSuchDatabase { database, server } => dr_core::Error::NotFound {
                what: format!("database {database:?} on {server}"),
            },
            Error::TargetNotEmpty { target, reason } => dr_core::Error::Conflict {
                what: target,
                reason,
            },
            Error::Connect { .. } => dr_core::Error::Unavailable {
                what: "PostgreSQL".into(),
                source: Box::new(e),
            },
            Error::Tool { .. } => dr_core::Error::InvalidConfig {
                key: "PostgreSQL client programs".into(),
                reason: e.to_string(),
            },
            Error::ToolFailed { ref program, .. } => dr_core::Error::Failed {
                what: program.clone(),
                source: Box::new(e),
            },
            Error::Replication(crate::basebackup::ReplicationError::Sink(e)) => {
                dr_core::Error::Storage(e)
            }
            Error::Replication(ref r) if r.is_retryable() => dr_core::Error::Unavailable {
                what: "PostgreSQL replication connection".into(),
                source: Box::new(e),
            },
            Error::Replication(crate::basebackup::ReplicationError::Unsupported { .. }) => {
                dr_core::Error::Unsupported {
                    what: e.to_string(),
                }
            }
            other => dr_core::Error::Failed {
                what: "PostgreSQL".into(),
                source: Box::new(other),
            },
        }
    }
}

/// `Result` with the PostgreSQL [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
