//! The backup, restore and verify jobs.

use std::time::{Duration, Instant};

use dr_storage::{Identities, Manifest, Repository};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::error::{error_chain, Error, Result};
use crate::source::{BackupReader, BackupSource, CheckReport, RestoreReport, Restorer};

/// Backs up `source` into `repository` under the source name `name`.
///
/// The source writes its artifacts; then the manifest is written with a
/// conditional create. On any error the data objects written so far are
/// removed and nothing is listed.
///
/// # Errors
/// The source's error, or the repository's.
pub async fn backup(
    repository: &Repository,
    source: &dyn BackupSource,
    name: &str,
) -> Result<Manifest> {
    backup_until(repository, source, name, std::future::pending()).await
}

/// [`backup`] that stops when `stop` completes first (a shutdown signal, a
/// deadline): the source's work is dropped where it stands (its child
/// processes killed, its temporary files removed), the data objects written
/// so far and any open multipart upload are removed, and nothing is listed.
/// Once the source has finished, the manifest is written whatever `stop`
/// does: a backup that is complete is kept.
///
/// # Errors
/// As [`backup`]; when stopped, [`Error::Interrupted`].
pub async fn backup_until(
    repository: &Repository,
    source: &dyn BackupSource,
    name: &str,
    stop: impl std::future::Future<Output = ()> + Send,
) -> Result<Manifest> {
    let writer = repository.begin_backup_marked(source.kind(), name).await?;
    let span = tracing::info_span!("backup", source = %name, kind = source.kind(), backup_id = %writer.id());
    async move {
        tracing::info!(%source, "backup started");
        let taken = tokio::select! {
            r = source.backup(&writer) => r,
            () = stop => Err(Error::Interrupted {
                what: format!("backup of {name}"),
            }),
        };
        match taken {
            Ok(metadata) => match writer.commit(metadata).await {
                Ok(m) => Ok(m),
                Err(e) => Err(e.into()),
            },
            Err(e) => {
                tracing::info!(error = %e, "backup failed; removing its data objects");
                writer.abort().await;
                Err(e)
            }
        }
    }
    .instrument(span)
    .await
}

/// Restores `manifest`'s backup through `restorer`.
///
/// # Errors
/// [`Error::Unsupported`] when the restorer does not read this kind of backup;
/// the restorer's errors.
pub async fn restore(
    repository: &Repository,
    manifest: &Manifest,
    identities: &Identities,
    restorer: &dyn Restorer,
) -> Result<RestoreReport> {
    if !restorer.accepts(&manifest.source.kind) {
        return Err(Error::Unsupported {
            what: format!(
                "restoring a {} backup with {restorer}",
                manifest.source.kind
            ),
        });
    }
    let span = tracing::info_span!("restore", source = %manifest.source.name, backup_id = %manifest.backup_id);
    let reader = BackupReader::new(repository.clone(), manifest.clone(), identities.clone());
    async move {
        let started = Instant::now();
        let mut report = restorer.restore(&reader).await?;
        report.duration = started.elapsed();
        tracing::info!(target = %report.target, "restore finished");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// The check of one stored artifact.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArtifactCheck {
    /// Artifact name.
    pub name: String,
    /// Object path in the repository.
    pub object: String,
    /// Whether decryption was part of the check (an identity was given).
    pub decoded: bool,
    /// `None` when the check passed, else what is wrong.
    pub error: Option<String>,
}

/// Whether a scratch restore's error says only that the scratch target
/// could not be reached.
fn scratch_unreachable(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. })
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyReport {
    /// Source name.
    pub source: String,
    /// Backup id.
    pub backup_id: String,
    /// One entry per artifact.
    pub artifacts: Vec<ArtifactCheck>,
    /// The scratch restore, when asked for and it ran.
    pub restore: Option<RestoreReport>,
    /// The source's own comparison after the scratch restore.
    pub checks: Option<CheckReport>,
    /// Why the scratch restore or check could not run.
    pub restore_error: Option<String>,
    /// Whether the scratch target was removed afterwards.
    pub discarded: Option<bool>,
    /// True when the scratch restore or check could not run because the
    /// scratch target could not be reached ([`Error::Unavailable`]): the
    /// backup is unproven, not proven wrong. Any other failure of the
    /// restore (a program missing or of the wrong version, a server that
    /// does not start, a restore that stops half-way) is a failed
    /// verification: the backup could not be restored here.
    #[serde(default)]
    pub scratch_unavailable: bool,
    /// Wall time of the whole verification.
    #[serde(with = "crate::serde_duration::secs")]
    pub duration: Duration,
}

impl VerifyReport {
    /// Whether everything verified.
    pub fn ok(&self) -> bool {
        self.artifacts.iter().all(|a| a.error.is_none())
            && self.restore_error.is_none()
            && self.checks.as_ref().is_none_or(|c| c.ok())
    }

    /// Turns a failed report into [`Error::VerificationFailed`].
    ///
    /// # Errors
    /// When [`VerifyReport::ok`] is false.
    pub fn into_result(self) -> Result<Self> {
        if self.ok() {
            return Ok(self);
        }
        let mut reasons: Vec<String> = self
            .artifacts
            .iter()
            .filter_map(|a| a.error.clone())
            .collect();
        if let Some(e) = &self.restore_error {
            reasons.push(e.clone());
        }
        if let Some(c) = &self.checks {
            if c.checks.is_empty() {
                reasons.push("the restore check compared nothing".into());
            }
            reasons.extend(
                c.failures()
                    .map(|f| format!("{}: expected {}, found {}", f.name, f.expected, f.actual)),
            );
        }
        Err(Error::VerificationFailed {
            what: format!("backup {} of {}", self.backup_id, self.source),
            reason: reasons.join("; "),
        })
    }
}

/// Verifies a backup.
///
/// - Without identities: size and SHA-256 of every stored object.
/// - With identities: every artifact is decrypted and decompressed to the end,
///   checking stored and plaintext sizes and digests.
/// - With a `scratch` restorer (needs identities): the backup is restored into
///   the scratch target, the source's own check compares it with the
///   manifest, and the scratch target is discarded, on failure too.
///
/// The report says what failed; [`VerifyReport::into_result`] turns failures
/// into an error.
///
/// A decode failure is refined by the stored-digest check: damaged bytes are
/// reported as the digest mismatch, not as "does not decode".
///
/// # Errors
/// When verification cannot start (a scratch restorer without keys), and
/// [`dr_storage::Error::Decrypt`] (a usage error) when the identities do not
/// open an artifact whose stored bytes are intact: the wrong key, not a
/// damaged backup.
pub async fn verify(
    repository: &Repository,
    manifest: &Manifest,
    identities: Option<&Identities>,
    scratch: Option<&dyn Restorer>,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let span = tracing::info_span!("verify", source = %manifest.source.name, backup_id = %manifest.backup_id);
    let _enter = span.enter();
    if scratch.is_some() && identities.is_none() {
        return Err(Error::InvalidConfig {
            key: "identity".into(),
            reason: "a verify with a restore needs the identity file or passphrase".into(),
        });
    }
    drop(_enter);
    let mut outcomes = match identities {
        Some(ids) => repository.check_decoded(manifest, ids).await,
        None => repository.check_stored(manifest).await,
    };
    if identities.is_some() {
        // A decode failure says little (age stops at the first bad chunk):
        // check the stored bytes against the manifest to tell damage (the
        // digest differs, named) from a key that does not open intact data.
        let stored = repository.check_stored(manifest).await;
        for ((_, decoded), (_, stored)) in outcomes.iter_mut().zip(stored) {
            if decoded.is_ok() {
                continue;
            }
            match stored {
                Err(damage) => *decoded = Err(damage),
                // Intact bytes that the key cannot open: the wrong key, a
                // usage error, not a damaged backup.
                Ok(()) if matches!(decoded, Err(dr_storage::Error::Decrypt { .. })) => {
                    let e = std::mem::replace(decoded, Ok(())).unwrap_err();
                    return Err(Error::Storage(e));
                }
                Ok(()) => {}
            }
        }
    }
    let artifacts: Vec<ArtifactCheck> = outcomes
        .into_iter()
        .map(|(info, r)| ArtifactCheck {
            name: info.name,
            object: info.object,
            decoded: identities.is_some(),
            error: r.err().map(|e| e.to_string()),
        })
        .collect();
    let mut report = VerifyReport {
        source: manifest.source.name.clone(),
        backup_id: manifest.backup_id.clone(),
        artifacts,
        restore: None,
        checks: None,
        restore_error: None,
        discarded: None,
        scratch_unavailable: false,
        duration: Duration::ZERO,
    };
    if let (Some(scratch), Some(ids)) = (scratch, identities) {
        if report.artifacts.iter().any(|a| a.error.is_some()) {
            report.restore_error =
                Some("scratch restore skipped: artifacts failed their checks".into());
        } else {
            match restore(repository, manifest, ids, scratch).await {
                Ok(r) => {
                    report.restore = Some(r);
                    match scratch.check(manifest).await {
                        Ok(c) => report.checks = Some(c),
                        Err(e) => {
                            report.scratch_unavailable = scratch_unreachable(&e);
                            report.restore_error =
                                Some(format!("check after restore: {}", error_chain(&e)));
                        }
                    }
                }
                Err(e) => {
                    report.scratch_unavailable = scratch_unreachable(&e);
                    report.restore_error = Some(format!("scratch restore: {}", error_chain(&e)));
                }
            }
            match scratch.discard().await {
                Ok(()) => report.discarded = Some(true),
                Err(e) => {
                    tracing::warn!(error = %e, "scratch target not removed");
                    report.discarded = Some(false);
                }
            }
        }
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// [`verify`] with a `scratch` restore that ends early when `stop` completes
/// first (a shutdown signal, a deadline): the verification is dropped where
/// it stands and the scratch target discarded (the scratch server stopped,
/// its directory or database removed), so an interrupted verification
/// leaves nothing behind. The discard is tried up to five times, 300 ms
/// apart: a restore may still be writing from a blocking thread for a
/// moment after it is dropped.
///
/// # Errors
/// As [`verify`]; when stopped, [`Error::Failed`] saying so and whether the
/// scratch target was removed (or why not).
pub async fn verify_until(
    repository: &Repository,
    manifest: &Manifest,
    identities: Option<&Identities>,
    scratch: &dyn Restorer,
    stop: impl std::future::Future<Output = ()>,
) -> Result<VerifyReport> {
    let finished = {
        let verification = verify(repository, manifest, identities, Some(scratch));
        tokio::pin!(verification);
        tokio::select! {
            r = &mut verification => Some(r),
            () = stop => None,
        }
    };
    if let Some(r) = finished {
        return r;
    }
    let what = format!("verification of backup {}", manifest.backup_id);
    let mut last = None;
    for _ in 0..5 {
        match scratch.discard().await {
            Ok(()) => {
                return Err(Error::failed(
                    what,
                    format!("interrupted; the scratch restore was stopped and {scratch} removed"),
                ))
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let e = last.expect("five attempts");
    Err(Error::failed(
        what,
        format!(
            "interrupted; {scratch} could not be removed: {}",
            error_chain(&e)
        ),
    ))
}
