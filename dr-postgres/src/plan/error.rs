//! Errors of the PostgreSQL plan steps.

/// What can go wrong in a PostgreSQL plan step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A parameter is wrong.
    #[error("invalid parameter {key}: {reason}")]
    InvalidParam {
        /// `<action>.<parameter>`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The role does not exist.
    #[error("role {role:?} does not exist on {target}")]
    NoSuchRole {
        /// The role.
        role: String,
        /// The database.
        target: String,
    },
    /// A schema or table does not exist.
    #[error("{object} does not exist on {target}")]
    NoSuchObject {
        /// `schema s` or `table s.t`.
        object: String,
        /// The database.
        target: String,
    },
    /// After revoking, the role can still write (through PUBLIC, a role it
    /// is a member of, ownership, or being a superuser).
    #[error("role {role:?} could still write to {tables} on {target} after the revoke (privileges through PUBLIC, role membership, ownership or superuser are not revoked); nothing was changed")]
    StillWritable {
        /// The role.
        role: String,
        /// The tables, comma-separated (at most 10 shown).
        tables: String,
        /// The database.
        target: String,
    },
    /// The step has no recorded privileges to read.
    #[error("no privileges recorded by step {step:?}: it must be a completed postgres.revoke_writes step among this step's `after`")]
    NothingRecorded {
        /// The step named by `from_step`.
        step: String,
    },
    /// The server refused for lack of privilege.
    #[error("permission denied on {target}: {message}")]
    PermissionDenied {
        /// The database.
        target: String,
        /// The server's message.
        message: String,
    },
    /// A query failed.
    #[error("{what} failed on {target}")]
    Query {
        /// What was being done.
        what: String,
        /// The database.
        target: String,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A check returned something else than expected.
    #[error("{failed} of {total} SQL check(s) failed on {target}: {details}")]
    CheckFailed {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
        /// The database.
        target: String,
        /// One line per failed check.
        details: String,
    },
    /// The connection or another part of dr-postgres failed.
    #[error(transparent)]
    Postgres(#[from] crate::Error),
}

impl PlanError {
    /// A query error, classified by SQLSTATE (42501 insufficient_privilege
    /// -> permission denied; 42P01 undefined_table -> no such object).
    pub(crate) fn query(what: impl Into<String>, target: &str, e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => PlanError::PermissionDenied {
                target: target.into(),
                message: e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string()),
            },
            Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME => {
                PlanError::NoSuchObject {
                    object: e
                        .as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string()),
                    target: target.into(),
                }
            }
            _ => PlanError::Query {
                what: what.into(),
                target: target.into(),
                source: e,
            },
        }
    }
}

impl From<PlanError> for dr_core::Error {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::InvalidParam { key, reason } => {
                dr_core::Error::InvalidConfig { key, reason }
            }
            PlanError::NoSuchRole { .. } | PlanError::NoSuchObject { .. } => {
                dr_core::Error::NotFound {
                    what: e.to_string(),
                }
            }
            PlanError::StillWritable { .. } => dr_core::Error::Conflict {
                what: "postgres.revoke_writes".into(),
                reason: e.to_string(),
            },
            PlanError::NothingRecorded { .. } => dr_core::Error::InvalidConfig {
                key: "postgres.grant_writes.from_step".into(),
                reason: e.to_string(),
            },
            PlanError::PermissionDenied {
                ref target,
                ref message,
            } => dr_core::Error::PermissionDenied {
                what: target.clone(),
                reason: message.clone(),
            },
            PlanError::CheckFailed { ref target, .. } => dr_core::Error::VerificationFailed {
                what: format!("SQL checks on {target}"),
                reason: e.to_string(),
            },
            PlanError::Query { ref source, .. } if source.is_closed() => {
                dr_core::Error::Unavailable {
                    what: e.to_string(),
                    source: Box::new(e),
                }
            }
            PlanError::Query { .. } => dr_core::Error::Failed {
                what: e.to_string(),
                source: Box::new(e),
            },
            PlanError::Postgres(inner) => inner.into(),
        }
    }
}
