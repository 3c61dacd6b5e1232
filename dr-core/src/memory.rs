//! In-memory implementations of the traits, for tests and examples.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dr_storage::{BackupWriter, Manifest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::source::{BackupReader, BackupSource, Check, CheckReport, RestoreReport, Restorer};

/// A source whose data is a map of named blobs. Its metadata records the
/// SHA-256 of every blob, which [`InMemoryRestorer::check`] compares.
#[derive(Debug, Clone, Default)]
pub struct InMemorySource {
    blobs: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl InMemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets blob `name`.
    pub fn insert(&self, name: &str, data: impl Into<Vec<u8>>) {
        self.blobs
            .lock()
            .expect("blobs")
            .insert(name.to_string(), data.into());
    }
}

impl std::fmt::Display for InMemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("in-memory source")
    }
}

#[async_trait]
impl BackupSource for InMemorySource {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn backup(&self, backup: &BackupWriter) -> Result<serde_json::Value> {
        let snapshot = self.blobs.lock().expect("blobs").clone();
        if snapshot.is_empty() {
            return Err(Error::NotFound {
                what: "data in the in-memory source".into(),
            });
        }
        let mut digests = BTreeMap::new();
        for (name, data) in &snapshot {
            backup.write_artifact(name, &mut &data[..]).await?;
            digests.insert(name.clone(), hex::encode(Sha256::digest(data)));
        }
        Ok(serde_json::json!({ "digests": digests }))
    }
}

/// A restorer into a map of blobs; refuses a non-empty target.
#[derive(Debug, Clone, Default)]
pub struct InMemoryRestorer {
    target: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl InMemoryRestorer {
    /// An empty target.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the target holds.
    pub fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        self.target.lock().expect("target").clone()
    }

    /// Changes a restored blob (for tests of the check).
    pub fn tamper(&self, name: &str, data: impl Into<Vec<u8>>) {
        self.target
            .lock()
            .expect("target")
            .insert(name.to_string(), data.into());
    }
}

impl std::fmt::Display for InMemoryRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("in-memory target")
    }
}

#[async_trait]
impl Restorer for InMemoryRestorer {
    fn accepts(&self, kind: &str) -> bool {
        kind == "memory"
    }

    async fn restore(&self, backup: &BackupReader) -> Result<RestoreReport> {
        if !self.target.lock().expect("target").is_empty() {
            return Err(Error::Conflict {
                what: "in-memory target".into(),
                reason: "not empty".into(),
            });
        }
        // Read everything first: the target changes only once all artifacts
        // decoded and verified.
        let mut staged = BTreeMap::new();
        let mut bytes = 0;
        for a in &backup.manifest().artifacts {
            let mut reader = backup.open(&a.name).await?;
            let mut data = Vec::new();
            reader
                .read_to_end(&mut data)
                .await
                .map_err(|e| dr_storage::Error::from_io(e, a.object.clone()))?;
            bytes += data.len() as u64;
            staged.insert(a.name.clone(), data);
        }
        *self.target.lock().expect("target") = staged;
        let mut report = RestoreReport::new("in-memory target");
        report.bytes_read = bytes;
        Ok(report)
    }

    async fn check(&self, manifest: &Manifest) -> Result<CheckReport> {
        let digests = manifest.metadata["digests"]
            .as_object()
            .ok_or_else(|| Error::failed("check", "manifest has no digests"))?;
        let target = self.target.lock().expect("target");
        let checks = digests
            .iter()
            .map(|(name, expected)| Check {
                name: name.clone(),
                expected: expected.as_str().unwrap_or_default().to_string(),
                actual: target
                    .get(name)
                    .map(|d| hex::encode(Sha256::digest(d)))
                    .unwrap_or_else(|| "missing".into()),
            })
            .collect();
        Ok(CheckReport { checks })
    }

    async fn discard(&self) -> Result<()> {
        self.target.lock().expect("target").clear();
        Ok(())
    }
}
