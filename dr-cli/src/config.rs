//! `dr.toml`: the repository and the named sources.
//!
//! Path from `--config` or `DR_CONFIG`; without either, `./dr.toml` when it
//! exists. Unknown keys are errors. Precedence: flags > `DR_*` environment >
//! the file > defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use dr_postgres::PostgresSourceConfig;
use dr_storage::RepositorySettings;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrConfig {
    /// `[repository]`.
    #[serde(default)]
    pub repository: RepositorySettings,
    /// `[objectives]`: RPO and RTO, with per-source overrides.
    #[serde(default)]
    pub objectives: dr_core::objectives::ObjectivesConfig,
    /// `[sources.NAME]`, each with a `kind`.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceEntry>,
    /// `[dns]`: the DNS provider for `dr dns` and `dns.*` plan steps.
    #[serde(default)]
    pub dns: Option<dr_dns::DnsConfig>,
    /// `[plans]`: where plan run journals are kept.
    #[serde(default)]
    pub plans: PlanSettings,
    /// `[agent]`: dr-agent's settings.
    #[serde(default)]
    pub agent: crate::agent::AgentConfig,
}

/// `[plans]` in `dr.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    /// Directory of the local run journals (default `./dr-runs`); a copy goes
    /// to the repository under `plans/runs/`.
    #[serde(default)]
    pub journal_dir: Option<PathBuf>,
}

/// One `[sources.NAME]` section: the keys every kind shares, and the kind's
/// own (which refuse unknown keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceEntry {
    /// `kind = ...` and the kind's keys.
    #[serde(flatten)]
    pub config: SourceConfig,
    /// `[sources.NAME.retention]`: keep_last, keep_daily, ..., pitr_window.
    #[serde(default)]
    pub retention: dr_core::retention::RetentionPolicy,
    /// Cron schedule of backups for dr-agent (`"0 */6 * * *"`).
    #[serde(default)]
    pub schedule: Option<String>,
}

/// One `[sources.NAME]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// `kind = "postgres"`: a logical backup of one database.
    Postgres(PostgresSourceConfig),
    /// `kind = "postgres-physical"`: a base backup of the cluster (PITR with
    /// the WAL archive that `dr wal-push` fills under the same source name).
    PostgresPhysical(PostgresSourceConfig),
    /// `kind = "vault-raft"`: a Vault (or OpenBao) raft snapshot.
    VaultRaft(dr_vault::VaultConfig),
    /// `kind = "kubernetes"`: the resources of selected namespaces.
    Kubernetes(dr_k8s::KubernetesSourceConfig),
    /// `kind = "etcd"`: an etcd v3 snapshot.
    Etcd(dr_k8s::EtcdSourceConfig),
}

impl PartialEq for SourceConfig {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

impl DrConfig {
    /// Reads `path`.
    ///
    /// # Errors
    /// Unreadable file, TOML errors (with line and key), unknown keys.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in configuration {}", path.display()))
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// TOML errors and unknown keys.
    pub fn parse(text: &str) -> Result<Self> {
        let config: DrConfig = toml::from_str(text)?;
        for name in config.sources.keys() {
            dr_storage::validate_source_name(name)?;
        }
        Ok(config)
    }

    /// Finds the configuration: `explicit` (from `--config`/`DR_CONFIG`),
    /// else `./dr.toml` if present, else the defaults.
    ///
    /// # Errors
    /// As [`DrConfig::load`]; a missing explicit file is an error.
    pub fn discover(explicit: Option<&PathBuf>) -> Result<Self> {
        match explicit {
            Some(p) => Self::load(p),
            None if Path::new("dr.toml").exists() => Self::load(Path::new("dr.toml")),
            None => Ok(DrConfig::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_refuses_unknown_keys() {
        let c = DrConfig::parse(
            r#"
            [repository]
            url = "s3://b/p"
            recipients = ["age1x"]
            [sources.shop]
            kind = "postgres"
            dsn = "postgresql://u@h/shop"
            "#,
        )
        .unwrap();
        assert_eq!(c.repository.url.as_deref(), Some("s3://b/p"));
        assert!(matches!(
            c.sources["shop"].config,
            SourceConfig::Postgres(_)
        ));
        let err = DrConfig::parse("[repository]\nurll = 'x'\n").unwrap_err();
        assert!(format!("{err:#}").contains("urll"), "{err:#}");
        let err = DrConfig::parse("[sources.a]\nkind = 'postgres'\ndns = 'x'\n").unwrap_err();
        assert!(format!("{err:#}").contains("dns"), "{err:#}");
        let err = DrConfig::parse("[sources.a]\nkind = 'oracle'\n").unwrap_err();
        assert!(format!("{err:#}").contains("oracle"), "{err:#}");
        let c = DrConfig::parse(
            "[sources.a]\nkind = 'postgres'\n[sources.a.retention]\nkeep_daily = 7\n",
        )
        .unwrap();
        assert_eq!(c.sources["a"].retention.keep_daily, Some(7));
        let err = DrConfig::parse(
            "[sources.a]\nkind = 'postgres'\n[sources.a.retention]\nkeep_dayly = 7\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("keep_dayly"), "{err:#}");
        let err = DrConfig::parse("[sources.'bad name']\nkind = 'postgres'\n").unwrap_err();
        assert!(format!("{err:#}").contains("bad name"), "{err:#}");
    }
}
