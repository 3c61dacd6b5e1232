//! The restorer: a stored snapshot posted back to a cluster, then the wait
//! until the node is unsealed and active again.
//!
//! `POST /v1/sys/storage/raft/snapshot` restores a snapshot of the same
//! cluster; `snapshot-force` restores one taken with other unseal keys (a
//! different cluster) and is sent only with [`RestoreOptions::force`]
//! (<https://openbao.org/api-docs/system/storage/raft/#restore-raft-using-a-snapshot>).
//! After a forced restore the snapshot's keyring is in force: a Shamir-sealed
//! node seals itself and must be unsealed with the unseal keys of the cluster
//! the snapshot came from; [`RestoreOptions::unseal_key_files`] lets `dr` do
//! that, otherwise the restore reports it and what to do.
//!
//! # What `check` compares
//! The raft index and term of a restored node do not equal the snapshot's
//! (raft installs a restored snapshot at an index after its own last one), so
//! they prove nothing. What does come back with the data is the cluster id
//! kept in the barrier (`sys/health` `cluster_id`): `check` compares it with
//! the one recorded at backup time, and checks that the node is initialized
//! and unsealed. Neither needs a token, which matters after a forced
//! restore, where the token used for the restore no longer exists.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport, Restorer};
use dr_storage::{ArtifactReader, Manifest};
use futures::future::BoxFuture;
use futures::StreamExt;
use reqwest::Method;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::io::ReaderStream;

use crate::client::{Health, VaultClient};
use crate::config::VaultConfig;
use crate::error::{Result, VaultError};
use crate::source::{SnapshotMetadata, KIND, SNAPSHOT_ARTIFACT, SNAPSHOT_PATH};

/// How a restore runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Use `snapshot-force`: restore a snapshot of a different cluster
    /// (other unseal keys). Never implied.
    #[serde(default)]
    pub force: bool,
    /// How long to wait for the node to be unsealed and active afterwards
    /// (in seconds when serialised; default 120).
    #[serde(default = "default_wait", with = "dr_core::serde_duration::secs")]
    pub wait_timeout: Duration,
    /// How often to poll `sys/health` meanwhile (in seconds when
    /// serialised; default 0.5).
    #[serde(default = "default_poll", with = "dr_core::serde_duration::secs")]
    pub poll_interval: Duration,
    /// Files each holding one unseal key share of the snapshot's cluster,
    /// submitted when the node sealed itself after the restore.
    #[serde(default)]
    pub unseal_key_files: Vec<PathBuf>,
}

fn default_wait() -> Duration {
    Duration::from_secs(120)
}

fn default_poll() -> Duration {
    Duration::from_millis(500)
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            force: false,
            wait_timeout: default_wait(),
            poll_interval: default_poll(),
            unseal_key_files: Vec::new(),
        }
    }
}

impl RestoreOptions {
    /// Options with `snapshot-force` set or not.
    pub fn forced(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Options with unseal key share files.
    pub fn with_unseal_key_files(mut self, files: Vec<PathBuf>) -> Self {
        self.unseal_key_files = files;
        self
    }

    /// Options with another poll interval.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Options with another wait bound.
    pub fn with_wait_timeout(mut self, wait: Duration) -> Self {
        self.wait_timeout = wait;
        self
    }
}

/// Restores `vault-raft` backups into a Vault (or OpenBao) cluster.
///
/// The token needs `update` on `sys/storage/raft/snapshot` (or
/// `snapshot-force`), and `sudo`.
#[derive(Debug, Clone)]
pub struct VaultRestorer {
    client: VaultClient,
    options: RestoreOptions,
}

impl fmt::Display for VaultRestorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vault raft restore into {}", self.client)?;
        if self.options.force {
            write!(f, " (forced)")?;
        }
        Ok(())
    }
}

/// What the restore saw of the node afterwards, in [`RestoreReport::details`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct RestoreDetails {
    forced: bool,
    snapshot_raft_index: u64,
    snapshot_raft_term: u64,
    cluster_id: Option<String>,
    unsealed_by_dr: bool,
}

impl VaultRestorer {
    /// A restorer into the cluster of `config`.
    ///
    /// # Errors
    /// As [`VaultClient::new`]. Unseal key files are read by the restore.
    pub fn new(config: &VaultConfig, options: RestoreOptions) -> Result<Self> {
        Ok(Self::with_client(VaultClient::new(config)?, options))
    }

    /// A restorer using an existing client.
    pub fn with_client(client: VaultClient, options: RestoreOptions) -> Self {
        VaultRestorer { client, options }
    }

    /// The client.
    pub fn client(&self) -> &VaultClient {
        &self.client
    }

    fn unseal_keys(&self) -> Result<Vec<SecretString>> {
        self.options
            .unseal_key_files
            .iter()
            .map(|p| crate::auth::read_secret_file("unseal key file", p))
            .collect()
    }

    /// Posts the snapshot and waits for the node. See the module docs.
    async fn restore_inner(&self, reader: &BackupReader) -> dr_core::Result<RestoreReport> {
        let manifest = reader.manifest();
        let meta = SnapshotMetadata::from_manifest(manifest)?;
        let keys = self.unseal_keys()?;
        // Opening decrypts the age header: a wrong key fails here, before the
        // target is touched.
        let first = reader.open(SNAPSHOT_ARTIFACT).await?;
        let health = self.client.health().await?;
        if !health.initialized || health.sealed {
            return Err(VaultError::Sealed {
                address: self.client.address_str().into(),
                hint: "the target must be initialized and unsealed before a restore".into(),
            }
            .into());
        }
        let path = if self.options.force {
            format!("{SNAPSHOT_PATH}-force")
        } else {
            SNAPSHOT_PATH.to_string()
        };
        let sent = Arc::new(AtomicU64::new(0));
        let pending = Mutex::new(Some(first));
        // A redirect or a new token sends the body again, from its start.
        let body = || -> BoxFuture<'_, Result<reqwest::Body>> {
            let sent = sent.clone();
            let first = pending.lock().expect("body slot").take();
            Box::pin(async move {
                let artifact: ArtifactReader = match first {
                    Some(a) => a,
                    None => reader
                        .open(SNAPSHOT_ARTIFACT)
                        .await
                        .map_err(core_to_vault)?,
                };
                sent.store(0, Ordering::Relaxed);
                let counted = ReaderStream::with_capacity(artifact, 256 * 1024).inspect(move |c| {
                    if let Ok(b) = c {
                        sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                });
                Ok(reqwest::Body::wrap_stream(counted))
            })
        };
        tracing::info!(force = self.options.force, target = %self.client, backup_id = %manifest.backup_id, "posting the raft snapshot");
        self.client
            .send(Method::POST, &path, Some(&body))
            .await
            .map_err(|e| match e {
                VaultError::Api { status: 400, errors, .. }
                    if !self.options.force && errors.iter().any(|e| e.contains("snapshot-force")) =>
                {
                    VaultError::Api {
                        what: format!("POST {path}"),
                        status: 400,
                        errors: vec![format!(
                            "{}; this snapshot was taken by a cluster with other unseal keys: restoring it replaces this cluster's data and keyring, and needs the explicit force option",
                            errors.join("; ")
                        )],
                    }
                }
                other => other,
            })?;
        let (health, unsealed_by_dr) = self.wait_active(&keys, meta.cluster_id.as_deref()).await?;
        let mut report = RestoreReport::new(format!("Vault {}", self.client));
        report.bytes_read = sent.load(Ordering::Relaxed);
        report.details = serde_json::to_value(RestoreDetails {
            forced: self.options.force,
            snapshot_raft_index: meta.snapshot.raft_index,
            snapshot_raft_term: meta.snapshot.raft_term,
            cluster_id: health.cluster_id,
            unsealed_by_dr,
        })
        .expect("details serialize");
        Ok(report)
    }

    /// Polls `sys/health` until the node is unsealed (active, or a standby
    /// of an active node when the address is a standby) and serves the
    /// snapshot's cluster id, on two polls in a row; unseals it with `keys`
    /// when it sealed itself.
    ///
    /// A node answers "active" with its old cluster id for a moment after a
    /// forced restore, before it reloads the snapshot's keyring and seals
    /// itself: hence the cluster id and the second poll.
    async fn wait_active(
        &self,
        keys: &[SecretString],
        cluster_id: Option<&str>,
    ) -> Result<(Health, bool)> {
        let deadline = Instant::now() + self.options.wait_timeout;
        let mut sealed_polls = 0;
        let mut active_polls = 0;
        let mut unsealed_by_dr = false;
        loop {
            match self.client.health().await {
                Ok(h)
                    if h.is_serving()
                        && cluster_id.is_none_or(|want| h.cluster_id.as_deref() == Some(want)) =>
                {
                    sealed_polls = 0;
                    active_polls += 1;
                    if active_polls >= 2 {
                        tracing::info!(cluster_id = ?h.cluster_id, standby = h.standby, "the node is unsealed and serving");
                        return Ok((h, unsealed_by_dr));
                    }
                }
                Ok(h) if h.initialized && h.sealed => {
                    active_polls = 0;
                    sealed_polls += 1;
                    if !keys.is_empty() && !unsealed_by_dr {
                        tracing::info!(shares = keys.len(), "the node sealed itself after the restore; unsealing with the given key shares");
                        unsealed_by_dr = true;
                        for k in keys {
                            let st = self.client.unseal(k).await.map_err(|e| VaultError::Sealed {
                                address: self.client.address_str().into(),
                                hint: format!(
                                    "it sealed itself after the restore and refused the given unseal key ({e}): use the unseal keys of the cluster the snapshot was taken from"
                                ),
                            })?;
                            if !st.sealed {
                                break;
                            }
                        }
                        continue;
                    }
                    if sealed_polls >= 3 {
                        let hint = if unsealed_by_dr {
                            "it sealed itself after the restore and is still sealed after the given key shares: they are not (enough of) the unseal keys of the cluster the snapshot was taken from".to_string()
                        } else {
                            "it sealed itself after the restore (the snapshot's keyring is now in force): the restore failed to bring it back; unseal it with the unseal (or recovery) keys of the cluster the snapshot was taken from (`bao operator unseal` / `vault operator unseal`), or run the restore again with unseal key files, then check it".to_string()
                        };
                        return Err(VaultError::Sealed {
                            address: self.client.address_str().into(),
                            hint,
                        });
                    }
                }
                Ok(h) => {
                    sealed_polls = 0;
                    active_polls = 0;
                    tracing::debug!(?h, "waiting for the node to become active");
                }
                Err(e) => {
                    active_polls = 0;
                    // A node in the middle of a restore answers oddly for a moment.
                    tracing::debug!(error = %e, "waiting for the node after the restore");
                }
            }
            if Instant::now() >= deadline {
                return Err(VaultError::Timeout {
                    what: format!(
                        "Vault at {} becoming unsealed and active after the restore",
                        self.client.address_str()
                    ),
                    after: self.options.wait_timeout,
                });
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    /// Compares the node with the manifest: see the module docs.
    ///
    /// # Errors
    /// When `sys/health` cannot be read or the manifest is not a Vault one.
    pub async fn compare(&self, manifest: &Manifest) -> Result<CheckReport> {
        let meta = SnapshotMetadata::from_manifest(manifest)?;
        let h = self.client.health().await?;
        let state = |h: &Health| {
            if !h.initialized {
                "uninitialized"
            } else if h.sealed {
                "sealed"
            } else {
                "unsealed"
            }
        };
        let mut checks = vec![Check {
            name: "node state".into(),
            expected: "unsealed".into(),
            actual: state(&h).into(),
        }];
        if let Some(want) = meta.cluster_id {
            checks.push(Check {
                name: "cluster id".into(),
                expected: want,
                actual: h.cluster_id.clone().unwrap_or_else(|| "(none)".into()),
            });
        }
        Ok(CheckReport { checks })
    }
}

fn core_to_vault(e: dr_core::Error) -> VaultError {
    match e {
        dr_core::Error::Storage(s) => VaultError::Storage(s),
        other => VaultError::Response {
            what: "opening the stored snapshot".into(),
            reason: other.to_string(),
        },
    }
}

#[async_trait]
impl Restorer for VaultRestorer {
    fn accepts(&self, kind: &str) -> bool {
        kind == KIND
    }

    async fn restore(&self, backup: &BackupReader) -> dr_core::Result<RestoreReport> {
        self.restore_inner(backup).await
    }

    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        Ok(self.compare(manifest).await?)
    }

    /// A Vault target keeps the restored data: there is nothing `dr` created
    /// beside it to remove (a scratch Vault is the operator's to stop).
    async fn discard(&self) -> dr_core::Result<()> {
        tracing::info!(target = %self.client, "nothing to discard: the Vault node keeps the restored data");
        Ok(())
    }
}
