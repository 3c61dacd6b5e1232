//! Putting a verified snapshot on the node for `etcdctl snapshot restore`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport};
use dr_storage::Manifest;
use tokio::io::AsyncWriteExt;

use super::snapshot::{verify_snapshot, EtcdMetadata, KIND_ETCD, SNAPSHOT_ARTIFACT};
use crate::error::Error;

/// Restores an `etcd` backup as a snapshot file in a directory, written
/// under a temporary name and renamed only once its checksum verified. The
/// operator (or a node agent) then runs `etcdctl snapshot restore` on it
/// (see the [module docs](crate::etcd)).
#[derive(Debug)]
pub struct EtcdSnapshotFile {
    dir: PathBuf,
    written: Mutex<Option<PathBuf>>,
}

impl std::fmt::Display for EtcdSnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd snapshot file in {}", self.dir.display())
    }
}

impl EtcdSnapshotFile {
    /// A restorer writing into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EtcdSnapshotFile {
            dir: dir.into(),
            written: Mutex::new(None),
        }
    }

    /// The file of the last restore.
    pub fn path(&self) -> Option<PathBuf> {
        self.written.lock().expect("path").clone()
    }

    fn file_for(&self, manifest: &Manifest) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.db",
            manifest.source.name, manifest.backup_id
        ))
    }
}

fn io(path: &Path, e: std::io::Error) -> dr_core::Error {
    dr_core::Error::Failed {
        what: format!("writing {}", path.display()),
        source: Box::new(e),
    }
}

#[async_trait]
impl dr_core::Restorer for EtcdSnapshotFile {
    fn accepts(&self, kind: &str) -> bool {
        kind == KIND_ETCD
    }

    async fn restore(&self, backup: &BackupReader) -> dr_core::Result<RestoreReport> {
        let mut reader = backup.open(SNAPSHOT_ARTIFACT).await?;
        let target = self.file_for(backup.manifest());
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(dr_core::Error::Conflict {
                what: target.display().to_string(),
                reason: "exists already".into(),
            });
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io(&self.dir, e))?;
        let tmp = target.with_extension("db.partial");
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io(&tmp, e))?;
        let bytes = tokio::io::copy(&mut reader, &mut file).await;
        let result = async {
            let bytes = bytes.map_err(|e| io(&tmp, e))?;
            file.flush().await.map_err(|e| io(&tmp, e))?;
            file.sync_all().await.map_err(|e| io(&tmp, e))?;
            let mut f = tokio::fs::File::open(&tmp).await.map_err(|e| io(&tmp, e))?;
            verify_snapshot(&mut f, &tmp.display().to_string()).await?;
            tokio::fs::rename(&tmp, &target)
                .await
                .map_err(|e| io(&target, e))?;
            Ok::<u64, dr_core::Error>(bytes)
        }
        .await;
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        *self.written.lock().expect("path") = Some(target.clone());
        let mut report = RestoreReport::new(target.display().to_string());
        report.bytes_read = bytes;
        report.details = serde_json::json!({
            "file": target,
            "next": format!("etcdctl snapshot restore {} --data-dir <new data dir> (with etcd stopped on the node)", target.display()),
        });
        Ok(report)
    }

    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        let meta: EtcdMetadata =
            serde_json::from_value(manifest.metadata.clone()).map_err(|e| Error::Malformed {
                object: format!("manifest of backup {}", manifest.backup_id),
                reason: e.to_string(),
            })?;
        let path = self.file_for(manifest);
        let actual = match tokio::fs::File::open(&path).await {
            Ok(mut f) => match verify_snapshot(&mut f, &path.display().to_string()).await {
                Ok(d) => d.sha256,
                Err(e) => format!("invalid: {e}"),
            },
            Err(e) => format!("unreadable: {e}"),
        };
        Ok(CheckReport {
            checks: vec![Check {
                name: "snapshot sha256".into(),
                expected: meta.snapshot_sha256,
                actual,
            }],
        })
    }

    async fn discard(&self) -> dr_core::Result<()> {
        if let Some(p) = self.written.lock().expect("path").take() {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p, e)),
            }
        }
        Ok(())
    }
}
