//! The kinds of backup dr takes, typed: what a `[sources.NAME]` section's
//! `kind` and a manifest's `source.kind` name.

use dr_storage::Manifest;

use crate::error::{Error, Result};

/// The kinds of backup dr takes, each named in manifests by its system
/// crate's constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A `pg_dump` of one database (`postgres-logical`).
    PostgresLogical,
    /// A base backup of a cluster, restored to a point in time with the WAL
    /// archive (`postgres-physical`).
    PostgresPhysical,
    /// A Vault / OpenBao raft snapshot (`vault-raft`).
    VaultRaft,
    /// The resources of a Kubernetes cluster (`kubernetes`).
    Kubernetes,
    /// An etcd v3 snapshot (`etcd`).
    Etcd,
}

impl SourceKind {
    /// Every kind.
    pub const ALL: [SourceKind; 5] = [
        SourceKind::PostgresLogical,
        SourceKind::PostgresPhysical,
        SourceKind::VaultRaft,
        SourceKind::Kubernetes,
        SourceKind::Etcd,
    ];

    /// The kind name recorded in manifests.
    pub fn manifest_kind(self) -> &'static str {
        match self {
            SourceKind::PostgresLogical => dr_postgres::KIND_LOGICAL,
            SourceKind::PostgresPhysical => dr_postgres::KIND_PHYSICAL,
            SourceKind::VaultRaft => dr_vault::KIND,
            SourceKind::Kubernetes => dr_k8s::KIND_KUBERNETES,
            SourceKind::Etcd => dr_k8s::KIND_ETCD,
        }
    }

    /// The kind a manifest names, if dr knows it.
    pub fn from_manifest_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.manifest_kind() == kind)
    }

    /// The kind of `manifest`'s backup.
    ///
    /// # Errors
    /// [`Error::Usage`] for a kind this version of dr does not know.
    pub fn of_manifest(manifest: &Manifest) -> Result<Self> {
        Self::from_manifest_kind(&manifest.source.kind).ok_or_else(|| {
            Error::usage(format!(
                "backup {} is of kind {:?}, which this version of dr cannot restore",
                manifest.backup_id, manifest.source.kind
            ))
        })
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.manifest_kind())
    }
}
