//! Backup sources and restorers.

use std::fmt::{Debug, Display};
use std::time::Duration;

use async_trait::async_trait;
use dr_storage::{ArtifactReader, BackupWriter, Identities, Manifest, Repository};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Something that can be backed up: a database, a cluster, a Vault.
///
/// # Contract
/// - [`backup`](BackupSource::backup) writes one or more artifacts into the
///   given [`BackupWriter`] and returns the metadata the manifest records. It
///   does not commit: the backup job writes the manifest after it returns `Ok`,
///   and aborts the writer (removing the data objects) after an `Err`.
/// - The artifacts together are one consistent snapshot of the source, and the
///   metadata describes that snapshot (for PostgreSQL: row counts taken in the
///   same snapshot), so that a restore can be checked against it.
/// - The source streams: memory does not grow with the size of the data.
/// - The source never prints; it logs through `tracing` and reports bytes
///   through the repository's progress.
#[async_trait]
pub trait BackupSource: Debug + Display + Send + Sync + 'static {
    /// The kind recorded in manifests (`postgres-logical`, `vault`, ...).
    fn kind(&self) -> &'static str;

    /// Takes the backup. See the trait's contract.
    ///
    /// # Errors
    /// Any failure of the source or the repository; the job then aborts the
    /// backup and nothing is listed.
    async fn backup(&self, backup: &BackupWriter) -> Result<serde_json::Value>;
}

/// Read access to one committed backup, as a [`Restorer`] gets it.
#[derive(Debug, Clone)]
pub struct BackupReader {
    repository: Repository,
    manifest: Manifest,
    identities: Identities,
}

impl BackupReader {
    /// Access to `manifest`'s backup in `repository` with `identities`.
    pub fn new(repository: Repository, manifest: Manifest, identities: Identities) -> Self {
        BackupReader {
            repository,
            manifest,
            identities,
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// Opens the decoded plaintext of artifact `name`; a wrong key fails here.
    ///
    /// # Errors
    /// [`dr_storage::Error::NotFound`], [`dr_storage::Error::Decrypt`],
    /// [`dr_storage::Error::Corrupt`], wrapped in [`crate::Error::Storage`].
    pub async fn open(&self, name: &str) -> Result<ArtifactReader> {
        Ok(self
            .repository
            .open_artifact(&self.manifest, name, &self.identities)
            .await?)
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The target, for humans (`database newdb on 127.0.0.1:5432`), no secrets.
    pub target: String,
    /// Plaintext bytes read from the repository.
    pub bytes_read: u64,
    /// Wall time of the restore.
    #[serde(with = "crate::serde_duration::secs")]
    pub duration: Duration,
    /// Things the operator should know (errors the restore tolerated).
    pub warnings: Vec<String>,
    /// Whether every item was restored. A restorer that tolerates failed
    /// items (a Kubernetes restore goes on past an object the API server
    /// refuses) sets `false`; a front end shows the restore as partial and
    /// does not report success. Reports written before the field existed read
    /// as `true`.
    #[serde(default = "complete_by_default")]
    pub complete: bool,
    /// Restorer-specific facts.
    pub details: serde_json::Value,
}

fn complete_by_default() -> bool {
    true
}

impl RestoreReport {
    /// A report for `target`, [`complete`](RestoreReport::complete), with
    /// the other fields empty.
    pub fn new(target: impl Into<String>) -> Self {
        RestoreReport {
            target: target.into(),
            bytes_read: 0,
            duration: Duration::ZERO,
            warnings: Vec::new(),
            complete: true,
            details: serde_json::Value::Null,
        }
    }
}

/// One comparison of a restored target with the backup's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    /// What was compared (a table, a key, a file).
    pub name: String,
    /// The value recorded at backup time.
    pub expected: String,
    /// The value found in the restored target.
    pub actual: String,
}

impl Check {
    /// Whether the restored value equals the recorded one.
    pub fn ok(&self) -> bool {
        self.expected == self.actual
    }
}

/// The outcome of [`Restorer::check`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckReport {
    /// Every comparison made.
    pub checks: Vec<Check>,
}

impl CheckReport {
    /// The comparisons that differ.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok())
    }

    /// Whether every comparison matched (and at least one was made).
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.failures().next().is_none()
    }
}

/// Reads a backup from the repository into a target.
///
/// # Contract
/// - [`restore`](Restorer::restore) never leaves a partial restore looking
///   complete: on failure the target is either untouched or visibly marked
///   (for a database: restored under a temporary name, renamed only at the end).
/// - A wrong key fails before the target is touched (the reader opens the
///   age header before any data flows).
/// - [`check`](Restorer::check) compares the restored target with what the
///   source recorded in the manifest at backup time, item by item.
/// - [`discard`](Restorer::discard) removes what `restore` created; the verify
///   job calls it on a scratch target, on failure too.
#[async_trait]
pub trait Restorer: Debug + Display + Send + Sync + 'static {
    /// Whether this restorer reads backups of `kind`.
    fn accepts(&self, kind: &str) -> bool;

    /// Restores the backup into the target.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] when the target is not in a state to receive
    /// the data (not empty), repository and server errors.
    async fn restore(&self, backup: &BackupReader) -> Result<RestoreReport>;

    /// Compares the restored target with the manifest's snapshot facts.
    ///
    /// # Errors
    /// When the comparison itself cannot run; differences are in the report.
    async fn check(&self, manifest: &Manifest) -> Result<CheckReport>;

    /// Removes what `restore` created.
    ///
    /// # Errors
    /// When the target cannot be removed.
    async fn discard(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_without_complete_reads_as_complete() {
        let old = serde_json::json!({
            "target": "memory",
            "bytes_read": 3,
            "duration": 0.5,
            "warnings": [],
            "details": null,
        });
        let r: RestoreReport = serde_json::from_value(old).unwrap();
        assert!(r.complete);
        assert_eq!(r.duration, Duration::from_millis(500));
        let mut partial = RestoreReport::new("cluster");
        assert!(partial.complete);
        partial.complete = false;
        let json = serde_json::to_value(&partial).unwrap();
        assert_eq!(json["complete"], false);
        assert_eq!(
            serde_json::from_value::<RestoreReport>(json).unwrap(),
            partial
        );
    }
}
