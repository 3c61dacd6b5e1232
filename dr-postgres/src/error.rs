//! The crate's errors of talking to PostgreSQL: [`Error`] for connections,
//! queries and client programs, [`ReplicationError`] for the replication
//! protocol client ([`crate::basebackup`]). Both live here, below every
//! module that raises them, so that no module imports one that imports it
//! back.

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
    /// The restored database cannot get a property the backup recorded (a
    /// locale the target server lacks, an owner role that does not exist),
    /// or a pre-created target differs from it (another encoding or
    /// locale). Raised before anything is created, unless the server
    /// refused a property only when it was applied.
    #[error("restore target {target}: database {property}: {reason}")]
    DatabaseProperty {
        /// The target database.
        target: String,
        /// The properties (`owner`, `encoding and locale`, `setting work_mem`).
        property: String,
        /// Why, and what the operator can do.
        reason: String,
    },
    /// The backup data could not be read (corrupt, truncated, wrong key).
    #[error(transparent)]
    Data(#[from] dr_storage::Error),
    /// The replication connection or `BASE_BACKUP` failed.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// A backup's manifest does not hold the metadata of its kind (another
    /// kind, a field missing or of the wrong type).
    #[error("backup {backup_id}: not a {kind} backup's metadata: {reason}")]
    Metadata {
        /// The backup.
        backup_id: String,
        /// The kind expected (`postgres-physical`, `postgres-logical`).
        kind: String,
        /// What is wrong.
        reason: String,
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
}

impl From<Error> for dr_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidConfig { key, reason } => dr_core::Error::InvalidConfig { key, reason },
            Error::Metadata { .. } => dr_core::Error::InvalidConfig {
                key: "manifest.metadata".into(),
                reason: e.to_string(),
            },
            Error::Data(e) => dr_core::Error::Storage(e),
            Error::NoSuchDatabase { database, server } => dr_core::Error::NotFound {
                what: format!("database {database:?} on {server}"),
            },
            Error::TargetNotEmpty { target, reason } => dr_core::Error::Conflict {
                what: target,
                reason,
            },
            Error::DatabaseProperty {
                target,
                property,
                reason,
            } => dr_core::Error::Conflict {
                what: format!("restore target {target}, database {property}"),
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
            Error::Replication(ReplicationError::Sink(e)) => dr_core::Error::Storage(e),
            Error::Replication(ref r) if r.is_retryable() => dr_core::Error::Unavailable {
                what: "PostgreSQL replication connection".into(),
                source: Box::new(e),
            },
            Error::Replication(ReplicationError::Unsupported { .. }) => {
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

/// Errors of a replication connection and of `BASE_BACKUP`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The socket could not be opened, or failed while in use.
    #[error("replication connection to {server}: {what}")]
    Io {
        /// `host:port`.
        server: String,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the login (wrong password, no `replication` line
    /// in `pg_hba.conf`, no REPLICATION attribute).
    #[error("replication login to {server} as {user:?} refused: {message}")]
    Auth {
        /// `host:port`.
        server: String,
        /// The user.
        user: String,
        /// The server's message, or why the client gave up.
        message: String,
    },
    /// The server answered a command with an error.
    #[error("{what} failed on {server}: {severity} {code}: {message}")]
    Server {
        /// The command.
        what: String,
        /// `host:port`.
        server: String,
        /// `ERROR`, `FATAL`, ...
        severity: String,
        /// The SQLSTATE.
        code: String,
        /// The server's message (and detail).
        message: String,
    },
    /// The server sent something this client does not expect.
    #[error("replication protocol error from {server}: {reason}")]
    Protocol {
        /// `host:port`.
        server: String,
        /// What was unexpected.
        reason: String,
    },
    /// The server is too old for what was asked.
    #[error("{server} runs PostgreSQL {version}: {reason}")]
    Unsupported {
        /// `host:port`.
        server: String,
        /// `server_version`.
        version: String,
        /// What it cannot do.
        reason: String,
    },
    /// Writing the received data failed (the repository upload).
    #[error(transparent)]
    Sink(#[from] dr_storage::Error),
}

impl ReplicationError {
    /// Whether trying again may succeed (a network fault, a server that is
    /// starting or shutting down).
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicationError::Io { .. } => true,
            // 57P03 cannot_connect_now, 53300 too_many_connections
            ReplicationError::Server { code, .. } => code == "57P03" || code == "53300",
            ReplicationError::Sink(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// `Result` with the PostgreSQL [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
