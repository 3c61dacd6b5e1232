//! The [`DnsProvider`] trait, its capabilities, and the conveniences of
//! [`DnsProviderExt`].

use std::fmt::{Debug, Display};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::change::{Change, ChangeBatch, ChangeInfo, ChangeStatus};
use super::record::{RecordKey, RecordSet, RecordType, Routing};
use crate::error::{Error, Result};

/// What a provider can do. An operation outside its capabilities returns
/// [`Error::Unsupported`], never silently nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DnsCapabilities {
    /// Alias records ([`RecordSet::alias`]).
    pub alias: bool,
    /// Weighted record sets.
    pub weighted: bool,
    /// Failover record sets.
    pub failover: bool,
    /// A batch is applied all or nothing by the server.
    pub atomic_batches: bool,
    /// Changes are `PENDING` before `INSYNC`, and [`DnsProvider::change_status`]
    /// reports it.
    pub change_status: bool,
    /// [`DnsProvider::query_authoritative`] asks the zone's authoritative servers.
    pub authoritative_query: bool,
}

impl DnsCapabilities {
    /// Everything.
    pub fn all() -> Self {
        DnsCapabilities {
            alias: true,
            weighted: true,
            failover: true,
            atomic_batches: true,
            change_status: true,
            authoritative_query: true,
        }
    }

    /// Nothing beyond the required core.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets [`alias`](Self::alias).
    pub fn with_alias(mut self, v: bool) -> Self {
        self.alias = v;
        self
    }
    /// Sets [`weighted`](Self::weighted).
    pub fn with_weighted(mut self, v: bool) -> Self {
        self.weighted = v;
        self
    }
    /// Sets [`failover`](Self::failover).
    pub fn with_failover(mut self, v: bool) -> Self {
        self.failover = v;
        self
    }
    /// Sets [`atomic_batches`](Self::atomic_batches).
    pub fn with_atomic_batches(mut self, v: bool) -> Self {
        self.atomic_batches = v;
        self
    }
    /// Sets [`change_status`](Self::change_status).
    pub fn with_change_status(mut self, v: bool) -> Self {
        self.change_status = v;
        self
    }
    /// Sets [`authoritative_query`](Self::authoritative_query).
    pub fn with_authoritative_query(mut self, v: bool) -> Self {
        self.authoritative_query = v;
        self
    }

    /// [`Error::Unsupported`] when `record` needs a capability this provider
    /// lacks.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the feature and the provider.
    pub fn check_record(&self, record: &RecordSet, provider: &dyn Display) -> Result<()> {
        let missing = if record.alias.is_some() && !self.alias {
            Some("alias records")
        } else {
            match record.routing {
                Some(Routing::Weighted { .. }) if !self.weighted => Some("weighted record sets"),
                Some(Routing::Failover { .. }) if !self.failover => Some("failover record sets"),
                _ => None,
            }
        };
        match missing {
            Some(m) => Err(Error::Unsupported {
                what: format!("{m} on {provider}"),
            }),
            None => Ok(()),
        }
    }
}

/// How long and how often [`DnsProviderExt::wait_for_sync`] polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WaitOptions {
    /// Pause between two status requests.
    #[serde(with = "crate::serde_duration::secs")]
    pub interval: Duration,
    /// Give up after this long with [`Error::Timeout`].
    #[serde(with = "crate::serde_duration::secs")]
    pub timeout: Duration,
}

impl Default for WaitOptions {
    /// Polls every 5 s for up to 5 minutes: Route53 usually propagates within
    /// 60 s (<https://docs.aws.amazon.com/Route53/latest/APIReference/API_GetChange.html>).
    fn default() -> Self {
        WaitOptions {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(300),
        }
    }
}

impl WaitOptions {
    /// Waits up to `timeout`, polling every `interval`.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        WaitOptions { interval, timeout }
    }
}

/// A DNS provider: reads record sets, applies change batches, reports change
/// status.
///
/// # Contract
/// - [`get`](Self::get) returns `Ok(None)` for a record set that does not
///   exist, never an error; names in the result are normalised
///   ([`normalize_name`](super::normalize_name)) and values in presentation
///   form.
/// - [`apply`](Self::apply) validates the batch first ([`ChangeBatch::validate`]:
///   [`Error::InvalidConfig`]) and checks capabilities
///   ([`Error::Unsupported`]). A batch whose precondition fails (a `CREATE` of
///   an existing set, a `DELETE` whose values differ or whose set is missing,
///   an [`Expect`](super::Expect) that does not hold) returns
///   [`Error::Conflict`] and changes nothing. With [`DnsCapabilities::atomic_batches`] the server guarantees
///   that no other change slips between the check and the write.
/// - [`change_status`](Self::change_status) reports a change accepted by
///   `apply`; an unknown id is [`Error::NotFound`]. A provider without
///   [`DnsCapabilities::change_status`] returns changes already
///   [`ChangeStatus::InSync`].
/// - [`query_authoritative`](Self::query_authoritative) asks the zone's
///   authoritative servers (not a cache) what they answer for a name and type;
///   without [`DnsCapabilities::authoritative_query`] it is
///   [`Error::Unsupported`].
/// - Transient failures are [`Error::Unavailable`] (retryable) after the
///   provider's own retries.
#[async_trait]
pub trait DnsProvider: Debug + Display + Send + Sync + 'static {
    /// What this provider supports.
    fn capabilities(&self) -> DnsCapabilities;

    /// Reads one record set.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an invalid name, [`Error::Unavailable`],
    /// [`Error::PermissionDenied`], [`Error::NotFound`] when the zone itself
    /// is missing.
    async fn get(&self, key: &RecordKey) -> Result<Option<RecordSet>>;

    /// Applies a change batch, all or nothing.
    ///
    /// # Errors
    /// See the contract: [`Error::InvalidConfig`], [`Error::Unsupported`],
    /// [`Error::Conflict`], [`Error::PermissionDenied`], [`Error::Unavailable`].
    async fn apply(&self, batch: &ChangeBatch) -> Result<ChangeInfo>;

    /// The current status of a change.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id, [`Error::Unavailable`].
    async fn change_status(&self, id: &str) -> Result<ChangeStatus>;

    /// What the zone's authoritative servers answer for `name` and `rtype`:
    /// the values, empty when the name or type does not exist.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; [`Error::Unavailable`] when no server
    /// answers; [`Error::VerificationFailed`] when the servers disagree.
    async fn query_authoritative(&self, name: &str, rtype: RecordType) -> Result<Vec<String>> {
        let _ = (name, rtype);
        Err(Error::Unsupported {
            what: format!("authoritative queries on {self}"),
        })
    }
}

/// Conveniences over any [`DnsProvider`]; implementors never write them.
#[async_trait]
pub trait DnsProviderExt: DnsProvider {
    /// Polls [`DnsProvider::change_status`] every `options.interval` until the
    /// change is [`ChangeStatus::InSync`].
    ///
    /// # Errors
    /// [`Error::Timeout`] after `options.timeout`; the errors of `change_status`.
    async fn wait_for_sync(
        &self,
        change: &ChangeInfo,
        options: &WaitOptions,
    ) -> Result<ChangeInfo> {
        let start = tokio::time::Instant::now();
        let mut status = change.status;
        loop {
            if status == ChangeStatus::InSync {
                tracing::debug!(change = %change.id, waited = ?start.elapsed(), "DNS change in sync");
                return Ok(ChangeInfo {
                    status,
                    ..change.clone()
                });
            }
            let elapsed = start.elapsed();
            if elapsed >= options.timeout {
                return Err(Error::Timeout {
                    what: format!("DNS change {} on {self} reaching INSYNC", change.id),
                    after: options.timeout,
                });
            }
            tokio::time::sleep(options.interval.min(options.timeout - elapsed)).await;
            status = self.change_status(&change.id).await?;
        }
    }

    /// Applies one change.
    ///
    /// # Errors
    /// Those of [`DnsProvider::apply`].
    async fn apply_one(&self, change: Change) -> Result<ChangeInfo> {
        self.apply(&ChangeBatch::new(vec![change])).await
    }
}

impl<T: DnsProvider + ?Sized> DnsProviderExt for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{InMemoryDnsProvider, RecordSet};

    #[tokio::test]
    async fn wait_times_out_on_a_change_that_stays_pending() {
        let p = InMemoryDnsProvider::new("example.test").with_pending_polls(1000);
        let info = p
            .apply_one(Change::create(RecordSet::new(
                "a.example.test",
                RecordType::A,
                60,
                ["192.0.2.1"],
            )))
            .await
            .unwrap();
        assert_eq!(info.status, ChangeStatus::Pending);
        let opts = WaitOptions::new(Duration::from_millis(5), Duration::from_millis(40));
        let e = p.wait_for_sync(&info, &opts).await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(e.is_retryable());
    }
}
