//! The `[dns]` section of `dr.toml`, and building a provider from it.

use std::sync::Arc;

use async_trait::async_trait;
use dr_core::dns::{
    ChangeBatch, ChangeInfo, ChangeStatus, DnsCapabilities, DnsProvider, RecordKey, RecordSet,
    RecordType,
};
use serde::{Deserialize, Serialize};

use crate::error::DnsError;
use crate::rfc2136::{Rfc2136Builder, Rfc2136Config};
use crate::route53::{Route53Builder, Route53Config};

/// Which DNS provider, and its settings: `provider = "route53"` or
/// `provider = "rfc2136"` with the fields of [`Route53Config`] or
/// [`Rfc2136Config`]. Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum DnsConfig {
    /// Amazon Route53.
    Route53(Route53Config),
    /// An RFC 2136 server with TSIG.
    Rfc2136(Rfc2136Config),
}

impl DnsConfig {
    /// Parses a `[dns]` table from TOML text (the section's body).
    ///
    /// # Errors
    /// [`DnsError::InvalidConfig`] naming the key serde names.
    pub fn from_toml(text: &str) -> Result<Self, DnsError> {
        toml::from_str(text).map_err(|e| DnsError::InvalidConfig {
            key: "dns".into(),
            reason: e.message().to_string(),
        })
    }
}

/// Builds the provider a configuration names.
///
/// # Errors
/// Those of [`Route53Builder::build`] and [`Rfc2136Builder::build`].
pub async fn connect(config: &DnsConfig) -> Result<Arc<dyn DnsProvider>, DnsError> {
    Ok(match config {
        DnsConfig::Route53(c) => Arc::new(Route53Builder::new(c.clone()).build().await?),
        DnsConfig::Rfc2136(c) => Arc::new(Rfc2136Builder::new(c.clone()).build()?),
    })
}

/// A provider for `config` that makes no network call until it is used:
/// an RFC 2136 provider is built at once (its builder only checks the
/// configuration and reads the TSIG secret), a Route53 provider on first
/// use (its builder resolves the hosted zone, and the AWS credential chain
/// may ask the instance metadata service). So `dr plan check` validates a
/// plan offline. A failure to connect is the error of the first call that
/// needed the server; the next call tries again.
///
/// # Errors
/// Those of [`Rfc2136Builder::build`].
pub fn connect_lazily(config: &DnsConfig) -> Result<Arc<dyn DnsProvider>, DnsError> {
    Ok(match config {
        DnsConfig::Route53(_) => Arc::new(LazyProvider {
            config: config.clone(),
            inner: tokio::sync::OnceCell::new(),
        }),
        DnsConfig::Rfc2136(c) => Arc::new(Rfc2136Builder::new(c.clone()).build()?),
    })
}

/// See [`connect_lazily`].
#[derive(Debug)]
struct LazyProvider {
    config: DnsConfig,
    inner: tokio::sync::OnceCell<Arc<dyn DnsProvider>>,
}

impl LazyProvider {
    async fn provider(&self) -> dr_core::Result<&Arc<dyn DnsProvider>> {
        Ok(self.inner.get_or_try_init(|| connect(&self.config)).await?)
    }
}

impl std::fmt::Display for LazyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.inner.get(), &self.config) {
            (Some(p), _) => p.fmt(f),
            (None, DnsConfig::Route53(c)) => write!(
                f,
                "Route53 zone {}",
                c.zone_id
                    .as_deref()
                    .or(c.zone_name.as_deref())
                    .unwrap_or("?")
            ),
            (None, DnsConfig::Rfc2136(c)) => {
                write!(f, "RFC 2136 server {} zone {}", c.server, c.zone)
            }
        }
    }
}

#[async_trait]
impl DnsProvider for LazyProvider {
    /// Before the connection, what the configuration implies (the same as
    /// the connected provider's: Route53 supports everything, its
    /// authoritative queries as configured; RFC 2136 has atomic batches,
    /// authoritative queries, and change status with secondaries).
    fn capabilities(&self) -> DnsCapabilities {
        if let Some(p) = self.inner.get() {
            return p.capabilities();
        }
        match &self.config {
            DnsConfig::Route53(c) => DnsCapabilities::all()
                .with_authoritative_query(c.authoritative_query.unwrap_or(true)),
            DnsConfig::Rfc2136(c) => DnsCapabilities::none()
                .with_atomic_batches(true)
                .with_change_status(!c.secondaries.is_empty())
                .with_authoritative_query(true),
        }
    }

    async fn get(&self, key: &RecordKey) -> dr_core::Result<Option<RecordSet>> {
        self.provider().await?.get(key).await
    }

    async fn apply(&self, batch: &ChangeBatch) -> dr_core::Result<ChangeInfo> {
        self.provider().await?.apply(batch).await
    }

    async fn change_status(&self, id: &str) -> dr_core::Result<ChangeStatus> {
        self.provider().await?.change_status(id).await
    }

    async fn query_authoritative(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> dr_core::Result<Vec<String>> {
        self.provider()
            .await?
            .query_authoritative(name, rtype)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_providers_parse_and_typos_are_errors() {
        let c = DnsConfig::from_toml(
            "provider = \"route53\"\nzone_name = \"example.com.\"\ninitial_backoff = \"200ms\"\n",
        )
        .unwrap();
        assert!(
            matches!(c, DnsConfig::Route53(ref r) if r.zone_name.as_deref() == Some("example.com."))
        );
        let c = DnsConfig::from_toml(
            "provider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\nzone = \"corp.example.\"\nkey_name = \"k\"\n",
        )
        .unwrap();
        assert!(matches!(c, DnsConfig::Rfc2136(ref r) if r.algorithm == "hmac-sha256"));
        let e = DnsConfig::from_toml("provider = \"route53\"\nzone_nmae = \"example.com.\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("zone_nmae"), "{e}");
        let e = DnsConfig::from_toml("provider = \"bind\"\n").unwrap_err();
        assert!(e.to_string().contains("bind"), "{e}");
    }
}
