//! `[sources.NAME]`: the keys every kind shares, and the kind's own.

use serde::{Deserialize, Serialize};

use dr_postgres::PostgresSourceConfig;

use crate::kind::SourceKind;

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
    /// Cron schedule of backups for dr-agent (`"0 */6 * * *"`), read in
    /// `[agent] time_zone`; parsed when the file is loaded.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// One `[sources.NAME]` section's kind and settings. Adding a kind: a
/// variant here, one in [`SourceKind`], and its arms in
/// [`crate::registry`].
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

impl SourceConfig {
    /// The kind of backup this source takes.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Postgres(_) => SourceKind::PostgresLogical,
            SourceConfig::PostgresPhysical(_) => SourceKind::PostgresPhysical,
            SourceConfig::VaultRaft(_) => SourceKind::VaultRaft,
            SourceConfig::Kubernetes(_) => SourceKind::Kubernetes,
            SourceConfig::Etcd(_) => SourceKind::Etcd,
        }
    }
}

impl PartialEq for SourceConfig {
    fn eq(&self, other: &Self) -> bool {
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}
