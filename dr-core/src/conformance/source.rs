//! The contracts of [`BackupSource`] and [`Restorer`] as free functions that
//! every implementation runs (the in-memory ones on every `cargo test`, the
//! real ones against real servers). Re-exported from
//! [`crate::conformance`], so `dr_core::conformance::all` is this module's
//! [`all`].

use dr_storage::{Identities, Repository};

use crate::error::Error;
use crate::job;
use crate::source::{BackupSource, Restorer};

/// Runs every check for a source and a restorer that reads its backups.
///
/// `repository` must be empty of backups of `name`; `keys` must decrypt it;
/// `target` restores into a fresh target, `scratch` into another one for the
/// verify job.
///
/// # Panics
/// On the first broken rule, naming it.
pub async fn all(
    repository: &Repository,
    keys: &Identities,
    source: &dyn BackupSource,
    name: &str,
    target: &dyn Restorer,
    scratch: &dyn Restorer,
) {
    let manifest = backup_is_listed_and_readable(repository, keys, source, name).await;
    wrong_key_fails_before_the_target_is_touched(repository, &manifest, target).await;
    restore_then_check_matches(repository, keys, &manifest, target).await;
    verify_with_scratch_restore(repository, keys, &manifest, scratch).await;
}

/// A backup is listed once committed, of the source's kind, and every artifact
/// decodes to its recorded digests.
pub async fn backup_is_listed_and_readable(
    repository: &Repository,
    keys: &Identities,
    source: &dyn BackupSource,
    name: &str,
) -> dr_storage::Manifest {
    let before = repository.list_backups(Some(name)).await.expect("list");
    let manifest = job::backup(repository, source, name)
        .await
        .expect("backup succeeds");
    assert_eq!(
        manifest.source.kind,
        source.kind(),
        "manifest records the source kind"
    );
    assert!(!manifest.artifacts.is_empty(), "a backup has artifacts");
    let after = repository.list_backups(Some(name)).await.expect("list");
    assert_eq!(after.len(), before.len() + 1, "the backup is listed once");
    assert_eq!(
        after.last(),
        Some(&manifest),
        "the newest listed backup is this one"
    );
    for (info, r) in repository.check_decoded(&manifest, keys).await {
        r.unwrap_or_else(|e| panic!("artifact {} does not decode: {e}", info.name));
    }
    manifest
}

/// A restore with a wrong identity fails with a decryption error and leaves
/// the target as it was: the restorer's own comparison of the target with
/// the backup ([`Restorer::check`]) reads exactly the same before and after
/// (every value found, or the same error for a target that does not exist),
/// so a restore that created, emptied or half-wrote anything is caught. A
/// later restore into it succeeds ([`restore_then_check_matches`]).
pub async fn wrong_key_fails_before_the_target_is_touched(
    repository: &Repository,
    manifest: &dr_storage::Manifest,
    target: &dyn Restorer,
) {
    let before = format!("{:?}", target.check(manifest).await);
    let wrong = Identities::generate();
    let err = job::restore(repository, manifest, &wrong, target)
        .await
        .expect_err("a wrong identity must fail");
    assert!(
        matches!(err, Error::Storage(dr_storage::Error::Decrypt { .. })),
        "wrong identity gives a decryption error, got {err:?}"
    );
    let after = format!("{:?}", target.check(manifest).await);
    assert_eq!(
        before, after,
        "a restore with a wrong identity changed the target"
    );
}

/// Restore, then the restorer's check reports every item equal.
pub async fn restore_then_check_matches(
    repository: &Repository,
    keys: &Identities,
    manifest: &dr_storage::Manifest,
    target: &dyn Restorer,
) {
    job::restore(repository, manifest, keys, target)
        .await
        .expect("restore succeeds");
    let report = target.check(manifest).await.expect("check runs");
    assert!(!report.checks.is_empty(), "the check compares something");
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "restored target differs: {failures:?}");
}

/// The verify job with a scratch restore passes and discards the scratch.
pub async fn verify_with_scratch_restore(
    repository: &Repository,
    keys: &Identities,
    manifest: &dr_storage::Manifest,
    scratch: &dyn Restorer,
) {
    let report = job::verify(repository, manifest, Some(keys), Some(scratch))
        .await
        .expect("verify runs");
    assert!(report.ok(), "verify passes: {report:?}");
    assert_eq!(report.discarded, Some(true), "scratch target discarded");
}
