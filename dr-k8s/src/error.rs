//! The error of `dr-k8s`, converted into [`dr_core::Error`] keeping its kind.

use std::time::Duration;

/// Errors of the Kubernetes and etcd sources, the restorer and the steps.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value or a step parameter is wrong.
    #[error("invalid configuration {key}: {reason}")]
    InvalidConfig {
        /// The key (`namespaces`, `k8s.zone_spread.max_skew`, ...).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// No client configuration could be loaded (`KUBECONFIG`, in-cluster).
    #[error("cannot load the Kubernetes client configuration")]
    Config(#[source] Box<kube::Error>),
    /// The API server answered with a status error.
    #[error("{what}: API server answered {code} {reason}: {message}")]
    Api {
        /// The request (`list apps/v1 deployments in shop`).
        what: String,
        /// The HTTP status code.
        code: u16,
        /// The status reason (`NotFound`, `Conflict`, `Invalid`, ...).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// The API server could not be reached or the response was unreadable.
    #[error("{what}: the API server is unavailable")]
    Transport {
        /// The request.
        what: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object is missing.
    #[error("{what} not found")]
    NotFound {
        /// The object.
        what: String,
    },
    /// A wait did not finish within its bound.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A check of the cluster or of a snapshot found a difference.
    #[error("verification of {what} failed: {reason}")]
    Verification {
        /// What was checked.
        what: String,
        /// The differences.
        reason: String,
    },
    /// The target is not in a state to receive the data.
    #[error("{what}: {reason}")]
    Conflict {
        /// The object.
        what: String,
        /// Why.
        reason: String,
    },
    /// A backed-up document does not parse.
    #[error("backup data {object} is malformed: {reason}")]
    Malformed {
        /// The artifact.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// etcd failed.
    #[cfg(feature = "etcd")]
    #[error("etcd {what} failed")]
    Etcd {
        /// The operation.
        what: String,
        /// The client's error.
        #[source]
        source: Box<etcd_client::Error>,
    },
    /// The repository failed.
    #[error(transparent)]
    Storage(#[from] dr_storage::Error),
}

/// `Result` with the `dr-k8s` [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a client error of the request `what`: status errors keep their
    /// code and reason, the rest are transport errors.
    pub fn kube(what: impl Into<String>, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Error::Api {
                what: what.into(),
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            other => Error::Transport {
                what: what.into(),
                source: Box::new(other),
            },
        }
    }

    /// The HTTP status of an API error.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the API server answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. }) || self.status_code() == Some(404)
    }

    /// Whether trying again may succeed: transport errors, 409 conflicts of
    /// optimistic concurrency, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::Api { code, .. } => matches!(code, 409 | 429 | 500..=599),
            #[cfg(feature = "etcd")]
            Error::Etcd { source, .. } => matches!(
                **source,
                etcd_client::Error::TransportError(_) | etcd_client::Error::GRpcStatus(_)
            ),
            _ => false,
        }
    }
}

impl From<Error> for dr_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidConfig { key, reason } => dr_core::Error::InvalidConfig { key, reason },
            Error::Config(_) => dr_core::Error::InvalidConfig {
                key: "KUBECONFIG".into(),
                reason: e.to_string(),
            },
            Error::NotFound { what } => dr_core::Error::NotFound { what },
            Error::Timeout { what, after } => dr_core::Error::Timeout { what, after },
            Error::Verification { what, reason } => {
                dr_core::Error::VerificationFailed { what, reason }
            }
            Error::Conflict { what, reason } => dr_core::Error::Conflict { what, reason },
            Error::Storage(e) => dr_core::Error::Storage(e),
            Error::Api { ref what, code, .. } => match code {
                404 => dr_core::Error::NotFound { what: what.clone() },
                401 | 403 => dr_core::Error::PermissionDenied {
                    what: what.clone(),
                    reason: e.to_string(),
                },
                409 => dr_core::Error::Conflict {
                    what: what.clone(),
                    reason: e.to_string(),
                },
                422 | 400 => dr_core::Error::InvalidConfig {
                    key: what.clone(),
                    reason: e.to_string(),
                },
                429 | 500..=599 => dr_core::Error::Unavailable {
                    what: what.clone(),
                    source: Box::new(e),
                },
                _ => dr_core::Error::Failed {
                    what: what.clone(),
                    source: Box::new(e),
                },
            },
            Error::Transport { ref what, .. } => dr_core::Error::Unavailable {
                what: what.clone(),
                source: Box::new(e),
            },
            #[cfg(feature = "etcd")]
            Error::Etcd { .. } if e.is_retryable() => dr_core::Error::Unavailable {
                what: "etcd".into(),
                source: Box::new(e),
            },
            other => dr_core::Error::Failed {
                what: "kubernetes".into(),
                source: Box::new(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::kube(
            "get x",
            kube::Error::Api(kube::core::ErrorResponse {
                status: "Failure".into(),
                message: "m".into(),
                reason: "R".into(),
                code,
            }),
        )
    }

    #[test]
    fn status_codes_keep_their_kind() {
        assert!(matches!(
            dr_core::Error::from(api(404)),
            dr_core::Error::NotFound { .. }
        ));
        assert!(matches!(
            dr_core::Error::from(api(403)),
            dr_core::Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            dr_core::Error::from(api(409)),
            dr_core::Error::Conflict { .. }
        ));
        assert!(matches!(
            dr_core::Error::from(api(422)),
            dr_core::Error::InvalidConfig { .. }
        ));
        let unavailable = dr_core::Error::from(api(503));
        assert!(matches!(unavailable, dr_core::Error::Unavailable { .. }));
        assert!(unavailable.is_retryable());
        assert!(api(409).is_retryable());
        assert!(!api(422).is_retryable());
    }
}
