//! The backup source: a raft snapshot streamed into the repository and
//! checked on the way.

use std::fmt;

use async_trait::async_trait;
use dr_core::BackupSource;
use dr_storage::BackupWriter;
use futures::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::archive::{ArchiveChecker, SnapshotFacts};
use crate::client::VaultClient;
use crate::config::VaultConfig;
use crate::error::{Result, VaultError};

/// The source kind recorded in manifests.
pub const KIND: &str = "vault-raft";

/// The name of the one artifact of a Vault backup: the snapshot as the server
/// sent it (gzip'd tar), compressed and encrypted by the repository codec.
pub const SNAPSHOT_ARTIFACT: &str = "raft-snapshot.tar.gz";

/// The API path of raft snapshots
/// (<https://openbao.org/api-docs/system/storage/raft/#take-a-snapshot-of-the-raft-cluster>).
pub(crate) const SNAPSHOT_PATH: &str = "sys/storage/raft/snapshot";

/// What a Vault backup's manifest records (`metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotMetadata {
    /// The facts of the checked archive (raft index and term, sizes).
    #[serde(flatten)]
    pub snapshot: SnapshotFacts,
    /// The cluster id at backup time (`sys/health`); a restore of this
    /// snapshot brings it back.
    pub cluster_id: Option<String>,
    /// The cluster name at backup time.
    pub cluster_name: Option<String>,
    /// The server version at backup time.
    pub server_version: Option<String>,
    /// The address the snapshot was taken from (no credentials).
    pub address: String,
    /// The namespace, when one was configured.
    pub namespace: Option<String>,
}

impl SnapshotMetadata {
    /// Reads the metadata of a Vault backup's manifest.
    ///
    /// # Errors
    /// [`VaultError::Response`] when the manifest is not one of a
    /// `vault-raft` backup.
    pub fn from_manifest(manifest: &dr_storage::Manifest) -> Result<Self> {
        serde_json::from_value(manifest.metadata.clone()).map_err(|e| VaultError::Response {
            what: format!("manifest of backup {}", manifest.backup_id),
            reason: format!("not the metadata of a {KIND} backup: {e}"),
        })
    }
}

/// A Vault (or OpenBao) cluster with integrated (raft) storage, backed up by
/// `GET /v1/sys/storage/raft/snapshot`.
///
/// The snapshot streams from the server through an [`ArchiveChecker`] and
/// into the repository's codec at once: memory stays bounded whatever the
/// snapshot's size. [`BackupSource::backup`] returns `Ok` only when the
/// archive passed every check (see [`crate::archive`]), so the backup job
/// commits the manifest only then; a failed check aborts the artifact.
///
/// The token needs `read` on `sys/storage/raft/snapshot`.
#[derive(Debug, Clone)]
pub struct VaultRaftSnapshot {
    client: VaultClient,
}

impl fmt::Display for VaultRaftSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vault raft snapshot of {}", self.client)
    }
}

impl VaultRaftSnapshot {
    /// A source for the cluster of `config`.
    ///
    /// # Errors
    /// As [`VaultClient::new`].
    pub fn new(config: &VaultConfig) -> Result<Self> {
        Ok(Self::with_client(VaultClient::new(config)?))
    }

    /// A source using an existing client.
    pub fn with_client(client: VaultClient) -> Self {
        VaultRaftSnapshot { client }
    }

    /// The client.
    pub fn client(&self) -> &VaultClient {
        &self.client
    }

    /// Takes the snapshot into `backup`, returning the metadata to record.
    ///
    /// # Errors
    /// [`VaultError::Sealed`], [`VaultError::NoLeader`], [`VaultError::Api`]
    /// (a token without the capability), [`VaultError::Archive`] when the
    /// snapshot fails a check, transport and repository errors.
    pub async fn snapshot_into(&self, backup: &BackupWriter) -> Result<SnapshotMetadata> {
        let health = self.client.health().await?;
        if health.sealed {
            return Err(VaultError::Sealed {
                address: self.client.address_str().into(),
                hint: "a sealed node cannot take a snapshot; unseal it first".into(),
            });
        }
        let resp = self.client.send(Method::GET, SNAPSHOT_PATH, None).await?;
        let what = format!(
            "GET {}/v1/{SNAPSHOT_PATH}",
            crate::client::origin(resp.url())
        );
        let mut artifact = backup.artifact(SNAPSHOT_ARTIFACT)?;
        let mut checker = ArchiveChecker::start(what.clone());
        let mut body = resp.bytes_stream();
        let mut received: u64 = 0;
        let streamed: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|source| VaultError::Http {
                    what: format!("{what} (the body broke off after {received} bytes)"),
                    source,
                })?;
                received += chunk.len() as u64;
                if !checker.feed(chunk.clone()).await {
                    // The checker stopped on an error; `finish` returns it.
                    return Ok(());
                }
                artifact.writer().write_all(&chunk).await.map_err(|e| {
                    dr_storage::Error::from_io(e, format!("writing {SNAPSHOT_ARTIFACT}"))
                })?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            drop(checker);
            artifact.abort().await;
            return Err(e);
        }
        let facts = match checker.finish().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "the snapshot failed its checks; nothing is stored");
                artifact.abort().await;
                return Err(e);
            }
        };
        let info = artifact.finish().await?;
        tracing::info!(
            raft_index = facts.raft_index,
            raft_term = facts.raft_term,
            bytes = info.plain_size,
            "vault raft snapshot stored and checked"
        );
        Ok(SnapshotMetadata {
            snapshot: facts,
            cluster_id: health.cluster_id,
            cluster_name: health.cluster_name,
            server_version: health.version,
            address: self.client.address_str().into(),
            namespace: self.client.namespace().map(str::to_string),
        })
    }
}

#[async_trait]
impl BackupSource for VaultRaftSnapshot {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn backup(&self, backup: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        let meta = self.snapshot_into(backup).await?;
        Ok(serde_json::to_value(meta).expect("metadata serializes"))
    }
}
