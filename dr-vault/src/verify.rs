//! `dr verify ID` for a Vault backup: the archive checks on the stored snapshot.

use dr_core::BackupReader;

use crate::archive::{check_async, SnapshotFacts};
use crate::error::VaultError;
use crate::source::{SnapshotMetadata, KIND, SNAPSHOT_ARTIFACT};

/// Decrypts the stored snapshot of a `vault-raft` backup and runs every
/// archive check on it (see [`crate::archive`]), then compares the raft index,
/// term and `state.bin` digest with what the manifest recorded.
///
/// This adds to the repository's own digest checks (`dr_core::job::verify`):
/// those prove the bytes are the ones stored, this proves they are a raft
/// snapshot that Vault will accept.
///
/// # Errors
/// [`dr_core::Error::Unsupported`] for a backup of another kind;
/// [`dr_core::Error::VerificationFailed`] naming the failed check; repository
/// errors (a wrong key, a corrupt object).
pub async fn verify_snapshot(reader: &BackupReader) -> dr_core::Result<SnapshotFacts> {
    let manifest = reader.manifest();
    if manifest.source.kind != KIND {
        return Err(dr_core::Error::Unsupported {
            what: format!("Vault snapshot checks on a {} backup", manifest.source.kind),
        });
    }
    let object = manifest
        .artifact(SNAPSHOT_ARTIFACT)
        .map(|a| a.object.clone())
        .ok_or_else(|| dr_core::Error::VerificationFailed {
            what: format!("backup {}", manifest.backup_id),
            reason: format!("it has no {SNAPSHOT_ARTIFACT} artifact"),
        })?;
    let recorded = SnapshotMetadata::from_manifest(manifest)?;
    let mut stream = reader.open(SNAPSHOT_ARTIFACT).await?;
    let facts = check_async(&object, &mut stream).await?;
    let mut diffs = Vec::new();
    if facts.raft_index != recorded.snapshot.raft_index
        || facts.raft_term != recorded.snapshot.raft_term
    {
        diffs.push(format!(
            "raft index/term {}/{} but the manifest records {}/{}",
            facts.raft_index,
            facts.raft_term,
            recorded.snapshot.raft_index,
            recorded.snapshot.raft_term
        ));
    }
    if facts.state_sha256 != recorded.snapshot.state_sha256 {
        diffs.push("state.bin differs from the one recorded in the manifest".into());
    }
    if !diffs.is_empty() {
        return Err(VaultError::Archive {
            what: object,
            reason: diffs.join("; "),
        }
        .into());
    }
    tracing::info!(backup_id = %manifest.backup_id, raft_index = facts.raft_index, "stored vault snapshot verified");
    Ok(facts)
}
