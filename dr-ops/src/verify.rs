//! `verify`: every object's size and SHA-256; with a key, every byte
//! decrypted (and a Vault snapshot's archive checked); optionally a restore
//! into a scratch target compared with the backup's snapshot. Every outcome
//! is recorded under `verifications/<source>/` for `dr status`, whoever ran
//! it (`dr verify` or `dr-agent`).

use std::future::Future;

use dr_core::job::{self, VerifyReport};
use dr_core::verification::{record_verification, VerificationRecord, VerifyLevel};
use dr_core::{BackupReader, Restorer};
use dr_storage::{Identities, Manifest, Repository};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::kind::SourceKind;
use crate::ops::Ops;
use crate::registry::{self, ScratchTarget};

/// How deep `verify` goes. With the `clap` feature these are `dr verify`'s
/// flags.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Also restore into a scratch target and compare it with the backup.
    #[cfg_attr(feature = "clap", arg(long))]
    pub restore: bool,
    /// PostgreSQL server for the scratch database (a DSN; a database
    /// `dr_verify_<random>` is created there and dropped afterwards). Default:
    /// the configured source's server.
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "DSN", env = "DR_SCRATCH_DSN")
    )]
    pub scratch: Option<String>,
    /// Apply the backup's globals to the scratch server and keep owners;
    /// without it the scratch restore runs with --no-owner --no-privileges.
    #[cfg_attr(feature = "clap", arg(long))]
    pub globals: bool,
    /// For a physical backup, check the whole WAL chain from the backup's
    /// start to the newest archived segment (what a recovery to the latest
    /// point replays), not only the segments from its start to its stop.
    #[cfg_attr(feature = "clap", arg(long))]
    pub wal: bool,
}

impl VerifyOptions {
    /// Options with a scratch restore (`--restore`).
    pub fn with_restore(mut self, scratch: Option<String>) -> Self {
        self.restore = true;
        self.scratch = scratch;
        self
    }
}

/// A kind's own check of its stored archive (a Vault raft snapshot's
/// members and `SHA256SUMS`).
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveCheck {
    /// Whether it passed.
    pub ok: bool,
    /// What the check read (on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<serde_json::Value>,
    /// What is wrong (on failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct VerifyOutcome {
    /// Digests, decryption, scratch restore and checks.
    #[serde(flatten)]
    pub report: VerifyReport,
    /// The kind's archive check, when it has one and a key was given.
    #[serde(rename = "archive_check", skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveCheck>,
    /// A physical backup's WAL: every segment from its start to its stop
    /// (with `--wal`, to the newest archived segment) present and, with a
    /// key, decrypted and checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<dr_postgres::wal::WalVerification>,
    /// How deep it went.
    #[serde(skip)]
    pub level: VerifyLevel,
    /// What was recorded in the repository for `dr status`.
    #[serde(skip)]
    pub record: VerificationRecord,
    /// Why the outcome could not be recorded in the repository (it was
    /// still found as reported).
    #[serde(skip)]
    pub record_error: Option<String>,
}

impl VerifyOutcome {
    /// Whether everything verified.
    pub fn ok(&self) -> bool {
        self.report.ok()
            && self.archive.as_ref().is_none_or(|a| a.ok)
            && self.wal.as_ref().is_none_or(|w| w.ok)
    }

    /// Whether the backup is unproven rather than wrong: the scratch
    /// target could not be reached (see
    /// [`dr_core::job::VerifyReport::scratch_unavailable`]) and every stored
    /// object checked out.
    pub fn unproven(&self) -> bool {
        !self.ok()
            && self.report.scratch_unavailable
            && self.report.artifacts.iter().all(|a| a.error.is_none())
            && self.archive.as_ref().is_none_or(|a| a.ok)
            && self.wal.as_ref().is_none_or(|w| w.ok)
    }

    /// A one-line summary for logs and notifications.
    pub fn summary(&self) -> String {
        let depth = match self.level {
            VerifyLevel::Stored => "stored digests only",
            VerifyLevel::Decoded => "decrypted",
            VerifyLevel::Restored => "restored into a scratch target",
        };
        if self.ok() {
            format!(
                "backup {} verified ({} artifact(s), {depth})",
                self.report.backup_id,
                self.report.artifacts.len()
            )
        } else {
            format!(
                "backup {} FAILED verification ({depth}): {}",
                self.report.backup_id,
                self.record.problems.join("; ")
            )
        }
    }
}

impl Ops {
    /// Verifies backup `selector` (an id, a unique prefix, `latest`) of
    /// `source`: with a configured key it decrypts everything; with
    /// `opts.restore` it also restores into a scratch target (stopped and
    /// discarded when `stop` completes) and compares. The outcome is
    /// recorded in the repository.
    ///
    /// # Errors
    /// No such backup; [`Error::Usage`] for `--restore` without a key or a
    /// scratch server; the repository cannot be read at all. A backup found
    /// wrong is an `Ok` outcome with [`VerifyOutcome::ok`] false.
    pub async fn verify(
        &self,
        source: Option<&str>,
        selector: &str,
        opts: &VerifyOptions,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<VerifyOutcome> {
        let repo = self.open().await?;
        let manifest = match repo.find_backup(source, selector).await {
            Ok(m) => m,
            Err(e) => {
                if let Some(source) = source {
                    record_unreadable(&repo, source, selector, &e).await;
                }
                return Err(e.into());
            }
        };
        let ids = self.identities(&repo)?;
        let scratch = if opts.restore {
            let ids = ids.as_ref().ok_or_else(|| {
                Error::usage("verify --restore needs --identity FILE or the repository passphrase")
            })?;
            let kind = SourceKind::of_manifest(&manifest)?;
            let target = ScratchTarget {
                server: opts.scratch.clone(),
                globals: opts.globals,
                pg_bin: self.pg_bin(&manifest.source.name),
            };
            Some(
                registry::scratch_restorer(
                    kind,
                    self.config(),
                    &manifest,
                    &target,
                    ids,
                    self.settings(),
                    self.dr_program()?,
                )?
                .ok_or_else(|| {
                    Error::usage(format!("no scratch restore for backups of kind {kind}"))
                })?,
            )
        } else {
            None
        };
        verify_backup(
            &repo,
            &manifest,
            ids.as_ref(),
            scratch.as_deref(),
            opts.wal,
            stop,
        )
        .await
    }
}

/// Verifies `manifest`'s backup and records the outcome: the one function
/// `dr verify` and `dr-agent`'s scheduled verification both run.
///
/// A physical backup's WAL is checked first (from its start to its stop
/// segment; with `whole_chain` to the newest archived segment, see
/// [`dr_postgres::wal::verify_backup_wal`]): when it fails, the scratch
/// restore is not attempted (it could not reach consistency) and the
/// outcome is a failed verification, not an unproven one.
///
/// # Errors
/// The repository cannot be read at all; a key that does not open intact
/// objects.
pub async fn verify_backup(
    repo: &Repository,
    manifest: &Manifest,
    ids: Option<&Identities>,
    scratch: Option<&dyn Restorer>,
    whole_chain: bool,
    stop: impl Future<Output = ()> + Send,
) -> Result<VerifyOutcome> {
    let kind = SourceKind::from_manifest_kind(&manifest.source.kind);
    let wal = match kind {
        Some(SourceKind::PostgresPhysical) => {
            Some(dr_postgres::wal::verify_backup_wal(repo, manifest, ids, whole_chain).await?)
        }
        _ => None,
    };
    let wanted_restore = scratch.is_some();
    let scratch = scratch.filter(|_| wal.as_ref().is_none_or(|w| w.ok));
    let report = match scratch {
        Some(restorer) => job::verify_until(repo, manifest, ids, restorer, stop).await?,
        None => job::verify(repo, manifest, ids, None).await?,
    };
    let archive = match (kind, ids) {
        (Some(SourceKind::VaultRaft), Some(ids)) if report.ok() => {
            let reader = BackupReader::new(repo.clone(), manifest.clone(), ids.clone());
            Some(match dr_vault::verify_snapshot(&reader).await {
                Ok(facts) => ArchiveCheck {
                    ok: true,
                    facts: serde_json::to_value(facts).ok(),
                    error: None,
                },
                Err(e) => ArchiveCheck {
                    ok: false,
                    facts: None,
                    error: Some(format!(
                        "raft snapshot archive: {}",
                        dr_core::error_chain(&e)
                    )),
                },
            })
        }
        _ => None,
    };
    let level = match (scratch.is_some(), ids.is_some()) {
        (true, _) => VerifyLevel::Restored,
        (false, true) => VerifyLevel::Decoded,
        (false, false) => VerifyLevel::Stored,
    };
    let mut record = VerificationRecord::from_report(&report, level, chrono::Utc::now());
    if let Some(ArchiveCheck {
        ok: false,
        error: Some(e),
        ..
    }) = &archive
    {
        record.ok = false;
        record.problems.push(e.clone());
    }
    if let Some(w) = wal.as_ref().filter(|w| !w.ok) {
        record.ok = false;
        record.problems.extend(w.problems.iter().cloned());
        if wanted_restore {
            record.problems.push(
                "the scratch restore was not attempted: the backup's WAL is missing or damaged"
                    .into(),
            );
        }
    }
    // Failing to keep the record does not change what the verification found.
    let record_error = record_verification(repo, &record)
        .await
        .err()
        .map(|e| dr_core::error_chain(&e));
    if let Some(e) = &record_error {
        tracing::warn!(error = %e, "the verification result was not recorded in the repository");
    }
    Ok(VerifyOutcome {
        report,
        archive,
        wal,
        level,
        record,
        record_error,
    })
}

/// Verifies the newest backup of source `name` — `latest` as `dr verify
/// latest` reads it, so a damaged manifest that may be the newest is a
/// failure, not a reason to verify an older backup — and records the
/// outcome; `None` when the source has no backup. What `dr-agent`'s
/// `verify_schedule` runs for each source.
///
/// # Errors
/// As [`verify_backup`]; the newest manifest is damaged (recorded as a
/// failed verification).
pub async fn verify_latest(
    repo: &Repository,
    name: &str,
    ids: Option<&Identities>,
) -> Result<Option<VerifyOutcome>> {
    let m = match repo.find_backup(Some(name), "latest").await {
        Ok(m) => m,
        Err(dr_storage::Error::BackupNotFound { .. }) => return Ok(None),
        Err(e) => {
            record_unreadable(repo, name, "latest", &e).await;
            return Err(e.into());
        }
    };
    verify_backup(repo, &m, ids, None, false, std::future::pending())
        .await
        .map(Some)
}

/// Records a failed verification of backup `selector` of `source` whose
/// manifest is damaged, so that `dr status` and the metrics show the
/// failure instead of an older success. Errors that are not damage (no
/// such backup, the store unreachable) are not recorded.
async fn record_unreadable(repo: &Repository, source: &str, selector: &str, e: &dr_storage::Error) {
    if dr_core::storage_error_kind(e) != dr_core::ErrorKind::VerificationFailed {
        return;
    }
    let record = VerificationRecord {
        source: source.to_string(),
        backup_id: selector.to_string(),
        verified_at: chrono::Utc::now(),
        level: VerifyLevel::Stored,
        ok: false,
        unproven: false,
        problems: vec![dr_core::error_chain(e)],
    };
    if let Err(e) = record_verification(repo, &record).await {
        tracing::warn!(error = %dr_core::error_chain(&e), "the failed verification was not recorded in the repository");
    }
}
