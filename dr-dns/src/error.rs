//! The errors of `dr-dns`, and how they map onto [`dr_core::Error`].

use dr_core::BoxError;

/// What went wrong talking to a DNS provider. Converts into
/// [`dr_core::Error`] keeping the kind. Never carries a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A configuration value is wrong.
    #[error("invalid DNS configuration {key}: {reason}")]
    InvalidConfig {
        /// The key, flag or variable.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The hosted zone or DNS zone does not exist (or is not served).
    #[error("DNS zone {zone} not found")]
    ZoneNotFound {
        /// Zone id or name.
        zone: String,
    },
    /// A change id the provider does not know.
    #[error("DNS change {id} not found")]
    ChangeNotFound {
        /// The change id.
        id: String,
    },
    /// The current state is not what the change expects: the record exists,
    /// does not exist, or holds other values.
    #[error("DNS record {record}: {reason}")]
    Conflict {
        /// The record (`api.example.com. A`), or the batch.
        record: String,
        /// The provider's words.
        reason: String,
    },
    /// The change batch itself is invalid (Route53 `InvalidChangeBatch` or
    /// `InvalidInput` other than a conflict).
    #[error("invalid change batch: {reason}")]
    InvalidChangeBatch {
        /// The provider's words.
        reason: String,
    },
    /// Authentication or authorisation failed: bad AWS credentials, an
    /// unsigned or wrongly signed RFC 2136 update.
    #[error("permission denied on {what}: {reason}")]
    PermissionDenied {
        /// The zone or operation.
        what: String,
        /// Why, as far as the server says.
        reason: String,
    },
    /// The provider throttled the request after the retries
    /// (Route53 `Throttling`, `PriorRequestNotComplete`).
    #[error("{what} was throttled after retries: {reason}")]
    Throttled {
        /// The operation.
        what: String,
        /// The provider's words.
        reason: String,
    },
    /// The provider could not be reached or failed transiently.
    #[error("{what} is unavailable")]
    Unavailable {
        /// The server or operation.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The provider answered something `dr` cannot use.
    #[error("{what}: {reason}")]
    Protocol {
        /// The operation.
        what: String,
        /// What was unexpected.
        reason: String,
    },
}

impl From<DnsError> for dr_core::Error {
    fn from(e: DnsError) -> Self {
        use dr_core::Error as E;
        if let DnsError::Throttled { what, .. } = &e {
            let what = what.clone();
            return E::Unavailable {
                what,
                source: Box::new(e),
            };
        }
        match e {
            DnsError::InvalidConfig { key, reason } => E::InvalidConfig { key, reason },
            DnsError::InvalidChangeBatch { reason } => E::InvalidConfig {
                key: "change batch".into(),
                reason,
            },
            DnsError::ZoneNotFound { zone } => E::NotFound {
                what: format!("DNS zone {zone}"),
            },
            DnsError::ChangeNotFound { id } => E::NotFound {
                what: format!("DNS change {id}"),
            },
            DnsError::Conflict { record, reason } => E::Conflict {
                what: format!("DNS record {record}"),
                reason,
            },
            DnsError::PermissionDenied { what, reason } => E::PermissionDenied { what, reason },
            DnsError::Unavailable { what, source } => E::Unavailable { what, source },
            DnsError::Throttled { what, reason } => E::Unavailable {
                what,
                source: reason.into(),
            },
            e @ DnsError::Protocol { .. } => E::Failed {
                what: "DNS".into(),
                source: Box::new(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_the_conversion() {
        let e: dr_core::Error = DnsError::Conflict {
            record: "a.example. A".into(),
            reason: "it already exists".into(),
        }
        .into();
        assert!(matches!(e, dr_core::Error::Conflict { .. }));
        let e: dr_core::Error = DnsError::Throttled {
            what: "ChangeResourceRecordSets".into(),
            reason: "Rate exceeded".into(),
        }
        .into();
        assert!(e.is_retryable(), "throttling is retryable");
        let e: dr_core::Error = DnsError::InvalidConfig {
            key: "zone".into(),
            reason: "missing".into(),
        }
        .into();
        assert_eq!(e.kind(), dr_core::ErrorKind::Usage);
    }
}
