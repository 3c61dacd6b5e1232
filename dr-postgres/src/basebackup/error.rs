//! Errors of the replication-protocol client.

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
