//! Manifests: the commit point of a backup.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::ArtifactInfo;

/// The manifest format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// Which source a backup came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRef {
    /// The source kind (`postgres-logical`, `postgres-physical`, `vault`, ...).
    pub kind: String,
    /// The configured source name; the repository groups backups by it.
    pub name: String,
}

/// How the artifacts were encoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodecInfo {
    /// Always `zstd` in this format version.
    pub compression: String,
    /// The zstd level used.
    pub zstd_level: i32,
    /// Always `age-x25519` in this format version.
    pub encryption: String,
}

/// `backups/<source>/<backup-id>/manifest.json`: written last, with a
/// conditional create, never overwritten. A backup exists exactly when its
/// manifest does. Readable without any key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] at the time of writing.
    pub format_version: u32,
    /// The `dr` version that wrote the backup.
    pub tool_version: String,
    /// The repository the backup belongs to.
    pub repository_id: String,
    /// Sortable UTC timestamp plus a random suffix: `20261129T140502Z-3fa9c1`.
    pub backup_id: String,
    /// The source.
    pub source: SourceRef,
    /// When the backup started (UTC).
    pub started_at: DateTime<Utc>,
    /// When the last artifact was stored (UTC).
    pub finished_at: DateTime<Utc>,
    /// The codec.
    pub codec: CodecInfo,
    /// Fingerprints of the recipients the artifacts are encrypted to.
    pub recipients: Vec<String>,
    /// The stored streams, each with sizes and SHA-256.
    pub artifacts: Vec<ArtifactInfo>,
    /// What the source recorded (server version, LSNs, row counts, ...).
    pub metadata: serde_json::Value,
}

impl Manifest {
    /// The artifact called `name`.
    pub fn artifact(&self, name: &str) -> Option<&ArtifactInfo> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Total stored bytes of all artifacts.
    pub fn stored_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_size).sum()
    }

    /// Total plaintext bytes of all artifacts.
    pub fn plain_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.plain_size).sum()
    }

    /// Wall time of the backup.
    pub fn duration(&self) -> chrono::Duration {
        self.finished_at - self.started_at
    }
}

/// Makes a new backup id for a backup starting at `at`.
pub fn new_backup_id(at: DateTime<Utc>) -> String {
    let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
    format!("{}-{suffix:06x}", at.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_ids_sort_by_time() {
        let a = new_backup_id("2026-01-02T03:04:05Z".parse().unwrap());
        let b = new_backup_id("2026-01-02T03:04:06Z".parse().unwrap());
        assert!(a.starts_with("20260102T030405Z-"));
        assert_eq!(a.len(), "20260102T030405Z-abcdef".len());
        assert!(a < b);
    }
}
