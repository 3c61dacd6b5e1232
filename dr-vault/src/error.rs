//! The errors of `dr-vault`, and their conversion into [`dr_core::Error`].
//!
//! No variant ever carries a token, a secret id, a JWT or an unseal key: only
//! addresses (without user info), API paths and the server's error messages.

use std::time::Duration;

/// Errors of the Vault client, the snapshot checks and the restorer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A configuration value is wrong; nothing was attempted.
    #[error("invalid Vault configuration {key}: {reason}")]
    InvalidConfig {
        /// The key, file or variable (`vault.address`, `VAULT_ADDR`).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("Vault request {what} failed")]
    Http {
        /// Method and API path (`GET sys/storage/raft/snapshot`).
        what: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("Vault {what} answered {status}: {}", display_errors(errors))]
    Api {
        /// Method and API path.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The `errors` array of the response body.
        errors: Vec<String>,
    },
    /// The node is a standby and no active node is known (HTTP 503, or
    /// `sys/leader` without a leader address).
    #[error("Vault at {address} has no active node (leader): {reason}")]
    NoLeader {
        /// The node asked.
        address: String,
        /// The server's words.
        reason: String,
    },
    /// A login or token renewal was refused.
    #[error("Vault {method} authentication failed: {reason}")]
    Auth {
        /// The auth method (`approle`, `kubernetes`, `token file`).
        method: String,
        /// Why.
        reason: String,
    },
    /// The node is sealed (after a restore: it sealed itself).
    #[error("Vault at {address} is sealed: {hint}")]
    Sealed {
        /// The node.
        address: String,
        /// What to do next.
        hint: String,
    },
    /// The raft snapshot archive failed its checks.
    #[error("Vault raft snapshot {what} is invalid: {reason}")]
    Archive {
        /// Where the snapshot came from (`GET http://127.0.0.1:8200`, an object path).
        what: String,
        /// Which check failed.
        reason: String,
    },
    /// Waiting for the node did not finish in time.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// Too many `307` redirects between standbys.
    #[error("Vault request {what} was redirected more than {hops} times")]
    TooManyRedirects {
        /// Method and API path.
        what: String,
        /// The limit.
        hops: usize,
    },
    /// A local file (token, secret id, JWT, CA certificate) could not be read.
    #[error("cannot read {what} {path}")]
    File {
        /// Which file (`token file`, `AppRole secret id file`).
        what: &'static str,
        /// Its path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A response did not have the documented shape.
    #[error("Vault {what} returned an unexpected response: {reason}")]
    Response {
        /// Method and API path.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// The repository failed.
    #[error(transparent)]
    Storage(#[from] dr_storage::Error),
}

fn display_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        "(no error message)".into()
    } else {
        errors.join("; ")
    }
}

impl VaultError {
    /// Whether trying again may succeed (transport errors, 5xx, no leader yet,
    /// timeouts).
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::Http { .. } | VaultError::NoLeader { .. } | VaultError::Timeout { .. } => {
                true
            }
            VaultError::Api { status, .. } => *status == 429 || *status >= 500,
            VaultError::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<VaultError> for dr_core::Error {
    fn from(e: VaultError) -> Self {
        use dr_core::Error as E;
        match e {
            VaultError::InvalidConfig { key, reason } => E::InvalidConfig { key, reason },
            VaultError::Archive { what, reason } => E::VerificationFailed {
                what: format!("Vault raft snapshot {what}"),
                reason,
            },
            VaultError::Timeout { what, after } => E::Timeout { what, after },
            VaultError::Auth { method, reason } => E::PermissionDenied {
                what: format!("Vault {method} login"),
                reason,
            },
            VaultError::Storage(e) => E::Storage(e),
            VaultError::Api {
                ref what,
                status,
                ref errors,
            } => match status {
                401 | 403 => E::PermissionDenied {
                    what: what.clone(),
                    reason: display_errors(errors),
                },
                404 => E::NotFound { what: what.clone() },
                429 | 500..=599 => E::Unavailable {
                    what: what.clone(),
                    source: Box::new(e),
                },
                _ => E::Failed {
                    what: what.clone(),
                    source: Box::new(e),
                },
            },
            VaultError::Http {
                ref what,
                ref source,
            } if source.is_timeout() => E::Timeout {
                what: what.clone(),
                after: Duration::ZERO,
            },
            VaultError::Http { ref what, .. } => E::Unavailable {
                what: what.clone(),
                source: Box::new(e),
            },
            VaultError::NoLeader { ref address, .. } => E::Unavailable {
                what: format!("the active Vault node behind {address}"),
                source: Box::new(e),
            },
            VaultError::Sealed { ref address, .. } => E::Conflict {
                what: format!("Vault at {address}"),
                reason: e.to_string(),
            },
            other => E::Failed {
                what: "Vault".into(),
                source: Box::new(other),
            },
        }
    }
}

/// `Result` with [`VaultError`].
pub type Result<T, E = VaultError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_conversion() {
        let e: dr_core::Error = VaultError::Archive {
            what: "x".into(),
            reason: "y".into(),
        }
        .into();
        assert_eq!(e.kind(), dr_core::ErrorKind::VerificationFailed);
        let e: dr_core::Error = VaultError::NoLeader {
            address: "a".into(),
            reason: "b".into(),
        }
        .into();
        assert!(e.is_retryable());
        let e: dr_core::Error = VaultError::Api {
            what: "GET sys/storage/raft/snapshot".into(),
            status: 403,
            errors: vec!["permission denied".into()],
        }
        .into();
        assert!(matches!(e, dr_core::Error::PermissionDenied { .. }));
        let e: dr_core::Error = VaultError::InvalidConfig {
            key: "VAULT_ADDR".into(),
            reason: "r".into(),
        }
        .into();
        assert_eq!(e.kind(), dr_core::ErrorKind::Usage);
    }
}
