//! The `[dns]` section of `dr.toml`, and building a provider from it.

use std::sync::Arc;

use dr_core::dns::DnsProvider;
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
