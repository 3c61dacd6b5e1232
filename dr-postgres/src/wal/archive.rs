//! `wal-push` and `wal-fetch`: the logic behind `archive_command` and
//! `restore_command`, with bounded retries and PostgreSQL's exit-code rules.
//!
//! Exit codes (PostgreSQL 15 docs §26.3.1, §26.3.4 and §20.5.3, and
//! `src/backend/postmaster/pgarch.c` / `src/backend/access/transam/xlogarchive.c`):
//! - `archive_command` must exit 0 only once the file is safely stored. Any
//!   other status counts as a failure and PostgreSQL retries later; a status
//!   above 125 makes the archiver process exit without counting the failure,
//!   so `wal-push` fails with codes 1 to 125 only ([`push_exit_code`]).
//! - `restore_command` exiting non-zero means "not available": recovery ends
//!   and, at the end of archive recovery, the server promotes. So `wal-fetch`
//!   exits 1 only after an authoritative not-found (the listing succeeded and
//!   holds no such name). After transient errors that persist through the
//!   retries, or on any error that is not "missing" (corrupt object, wrong
//!   key, other cluster), it exits [`EXIT_ABORT_RECOVERY`] (200): a status
//!   above 125 makes PostgreSQL stop recovery with FATAL instead of promoting
//!   at the wrong point ([`fetch_exit_code`]).
//! - Standby mode (`--standby`): a standby retries `restore_command` forever
//!   and falls back to streaming, so a transient outage of the store should
//!   not shut it down: after persistent transient errors it exits 1. Errors
//!   that are not transient still exit 200. (Any status above 125 stops
//!   recovery; 126 and 127 would be logged by PostgreSQL as "command not
//!   executable" and "command not found", 200 as "exit code 200".)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dr_storage::{Identities, PushOutcome, Registration, WalArchive, WalEvent};
use serde::Serialize;

use super::error::WalError;
use crate::format::{read_control, segment_header, WalFileKind, WalFileName};

/// The exit status that makes PostgreSQL abort recovery (any status above 125).
pub const EXIT_ABORT_RECOVERY: i32 = 200;

/// Bounded exponential backoff for transient store errors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The first pause.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// No new attempt starts after this much time.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// A policy of `attempts` attempts within `deadline`.
    pub fn new(attempts: u32, deadline: Duration) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            deadline,
            ..Default::default()
        }
    }

    /// Runs `op` until it succeeds, fails with an error that is not
    /// retryable, or the attempts or the deadline run out.
    ///
    /// # Errors
    /// The error of `op`; [`WalError::RetriesExhausted`] wrapping the last
    /// transient one.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, WalError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, WalError>>,
    {
        let started = Instant::now();
        let mut backoff = self.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The store client retries below this policy (object_store: up
            // to 10 times within 180 s); an attempt never outlives the
            // deadline, so a store that stops answering ends within it.
            let remaining = self.deadline.saturating_sub(started.elapsed());
            let outcome = match tokio::time::timeout(remaining, op()).await {
                Ok(r) => r,
                Err(_) => Err(WalError::AttemptTimedOut {
                    what: what.to_string(),
                    after: remaining,
                }),
            };
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    let elapsed = started.elapsed();
                    if attempt >= self.attempts.max(1) || elapsed + backoff > self.deadline {
                        return Err(WalError::RetriesExhausted {
                            what: what.to_string(),
                            attempts: attempt,
                            elapsed,
                            last: Box::new(e),
                        });
                    }
                    tracing::info!(%what, attempt, error = %e, backoff = ?backoff, "transient error; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Options of [`wal_push`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PushOptions {
    /// The data directory, for `global/pg_control` (the system identifier of
    /// `.history` and `.backup` files). Default: the current directory, where
    /// PostgreSQL runs `archive_command`.
    pub pgdata: Option<PathBuf>,
    /// Retries of transient store errors.
    pub retry: RetryPolicy,
}

/// What [`wal_push`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The file name.
    pub name: String,
    /// What it is.
    pub kind: WalFileKind,
    /// The cluster's system identifier.
    pub system_id: u64,
    /// `true` when this call stored it; `false` when the same content was
    /// already there.
    pub stored: bool,
    /// The object path.
    pub object: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Bytes of the file.
    pub plain_size: u64,
    /// Stored bytes (0 when it was already there).
    pub stored_size: u64,
    /// The tablespace creations and drops found in a full segment and
    /// recorded beside it (empty for other files, for a segment without
    /// them, and when the segment could not be read as records).
    pub events: Vec<WalEvent>,
    /// Wall time.
    #[serde(with = "secs")]
    pub elapsed: Duration,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

fn pgdata_or_cwd(p: &Option<PathBuf>) -> PathBuf {
    p.clone().unwrap_or_else(|| PathBuf::from("."))
}

/// Archives one file (`archive_command = 'dr wal-push %p'`): checks the
/// name, reads the system identifier (from the segment's page header, or
/// from `pg_control` for `.history` and `.backup` files), registers or checks
/// it against the archive, and stores the file create-only. Returns only once
/// the object is completely stored, or was already stored with the same
/// content.
///
/// A full segment's records are read meanwhile (on a blocking thread, while
/// the segment is encoded and stored) for tablespace creations and drops
/// ([`super::segment_events`]); those found are recorded beside the segment
/// (`events/<segment>.json`, see `dr_storage::wal`), for `dr status` to warn
/// about (PostgreSQL 15 docs §26.3.7 "Caveats"). A segment that cannot be
/// read as records is logged as a warning and pushed all the same: the scan
/// never fails a push. Writing the events object is a store write like the
/// segment's, retried the same way, and its failure fails the push, so that
/// PostgreSQL pushes the segment again and the events are not lost (the
/// segment is then already stored; the events object is create-only).
///
/// # Errors
/// [`WalError::InvalidInput`] / [`WalError::NotWal`] for a file that is not
/// WAL; [`WalError::SystemIdMismatch`]; [`WalError::Conflict`] naming both
/// digests; [`WalError::RetriesExhausted`]; store errors.
pub async fn wal_push(
    archive: &WalArchive,
    file: &Path,
    opts: &PushOptions,
) -> Result<PushReport, WalError> {
    let started = Instant::now();
    let base = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WalError::InvalidInput {
            what: "WAL file path".into(),
            value: file.display().to_string(),
            reason: "has no file name".into(),
        })?;
    let name = WalFileName::parse(base)?;
    let data = bytes::Bytes::from(tokio::fs::read(file).await.map_err(|source| WalError::Io {
        path: file.to_path_buf(),
        source,
    })?);
    let system_id = if name.has_pages() {
        segment_header(&name, &data)?.system_id
    } else {
        read_control(&pgdata_or_cwd(&opts.pgdata))
            .map_err(|e| WalError::InvalidInput {
                what: "data directory".into(),
                value: pgdata_or_cwd(&opts.pgdata).display().to_string(),
                reason: format!(
                    "{base} carries no system identifier, and pg_control cannot be read ({e}); run wal-push in the \
                     data directory (as archive_command does) or pass --pgdata"
                ),
            })?
            .system_id
    };
    // The scan runs beside the push: it never delays it by more than its
    // own excess, and never fails it.
    let scan = (name.kind == WalFileKind::Segment).then(|| {
        let (name, data) = (name.clone(), data.clone());
        tokio::task::spawn_blocking(move || super::segment_events(&name, &data))
    });
    let registration = opts
        .retry
        .run("reading the WAL archive description", || async {
            archive.register(system_id).await.map_err(WalError::from)
        })
        .await?;
    if let Registration::Differs { registered } = registration {
        return Err(WalError::SystemIdMismatch {
            source_name: archive.source().to_string(),
            registered,
            found: system_id,
            file: name.name.clone(),
        });
    }
    let outcome = opts
        .retry
        .run(&format!("pushing {base}"), || async {
            archive
                .push(system_id, base, data.clone())
                .await
                .map_err(WalError::from)
        })
        .await?;
    let (stored, obj) = match outcome {
        PushOutcome::Stored(o) => (true, o),
        PushOutcome::AlreadyStored(o) => (false, o),
        PushOutcome::Conflict {
            existing,
            pushed_sha256,
        } => {
            return Err(WalError::Conflict {
                source_name: archive.source().to_string(),
                name: base.to_string(),
                stored_sha256: existing.plain_sha256,
                pushed_sha256,
            })
        }
    };
    let events = match scan {
        None => Vec::new(),
        Some(task) => match task.await {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                tracing::warn!(file = %base, error = %e, "WAL records not readable: tablespace changes in this segment are not recorded");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(file = %base, error = %e, "WAL record scan did not finish: tablespace changes in this segment are not recorded");
                Vec::new()
            }
        },
    };
    if !events.is_empty() {
        opts.retry
            .run(&format!("recording the events of {base}"), || async {
                archive
                    .put_events(system_id, base, &events)
                    .await
                    .map_err(WalError::from)
            })
            .await?;
        for e in &events {
            tracing::info!(file = %base, event = ?e, "tablespace change recorded with the archive");
        }
    }
    let report = PushReport {
        name: base.to_string(),
        kind: name.kind,
        system_id,
        stored,
        object: obj.object,
        sha256: obj.plain_sha256,
        plain_size: data.len() as u64,
        stored_size: if stored { obj.stored_size } else { 0 },
        events,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        file = %report.name, stored = report.stored, stored_size = report.stored_size,
        elapsed_ms = report.elapsed.as_millis() as u64, "WAL pushed"
    );
    Ok(report)
}

/// The exit status of `wal-push` for `result`: 0, or 1 to 125 (2 for bad
/// input, 3 otherwise), never above 125.
pub fn push_exit_code<T>(result: &Result<T, WalError>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) if e.is_usage() => 2,
        Err(_) => 3,
    }
}

/// Options of [`wal_fetch`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Retries of transient store errors.
    pub retry: RetryPolicy,
    /// Standby mode: persistent transient errors exit 1 instead of 200.
    pub standby: bool,
    /// The data directory whose `pg_control` must match the archive's system
    /// identifier (default: the current directory, when it holds one).
    pub pgdata: Option<PathBuf>,
}

/// What [`wal_fetch`] did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The file name asked for.
    pub name: String,
    /// The object read.
    pub object: String,
    /// SHA-256 of the content written.
    pub sha256: String,
    /// Wall time.
    #[serde(with = "secs")]
    pub elapsed: Duration,
}

/// Restores one archived file to `dest` (`restore_command = 'dr wal-fetch
/// %f %p'`): only the object called exactly `name` (never `X.partial` for
/// `X`), decrypted, checked against the digest in its name, written through
/// a temporary file and a rename (never a partial file at `dest`).
///
/// # Errors
/// [`WalError::NotArchived`] only after a successful listing without the
/// name; [`WalError::NoArchive`] when the source has never archived;
/// [`WalError::SystemIdMismatch`] when the data directory belongs to another
/// cluster; [`WalError::RetriesExhausted`]; corrupt or undecryptable objects.
pub async fn wal_fetch(
    archive: &WalArchive,
    name: &str,
    dest: &Path,
    identities: &Identities,
    opts: &FetchOptions,
) -> Result<FetchReport, WalError> {
    let started = Instant::now();
    WalFileName::parse(name)?;
    let system_id = opts
        .retry
        .run("reading the WAL archive description", || async {
            archive.system_id().await.map_err(WalError::from)
        })
        .await?
        .ok_or_else(|| WalError::NoArchive {
            source_name: archive.source().to_string(),
            repository: archive.repository().to_string(),
        })?;
    let pgdata = pgdata_or_cwd(&opts.pgdata);
    if pgdata.join("global/pg_control").exists() {
        let control = read_control(&pgdata)?;
        if control.system_id != system_id {
            return Err(WalError::SystemIdMismatch {
                source_name: archive.source().to_string(),
                registered: system_id,
                found: control.system_id,
                file: format!("{} (data directory being recovered)", pgdata.display()),
            });
        }
    }
    let obj = opts
        .retry
        .run(&format!("fetching {name}"), || async {
            match archive
                .fetch_to_path(system_id, name, identities, dest)
                .await
            {
                Err(dr_storage::Error::NotFound { .. }) => Err(WalError::NotArchived {
                    source_name: archive.source().to_string(),
                    name: name.to_string(),
                }),
                other => other.map_err(WalError::from),
            }
        })
        .await?;
    let report = FetchReport {
        name: name.to_string(),
        object: obj.object,
        sha256: obj.plain_sha256,
        elapsed: started.elapsed(),
    };
    tracing::info!(file = %name, elapsed_ms = report.elapsed.as_millis() as u64, "WAL fetched");
    Ok(report)
}

/// The exit status of `wal-fetch` for `result`: 0; 1 after an authoritative
/// not-found (and, in standby mode, after persistent transient errors);
/// [`EXIT_ABORT_RECOVERY`] for everything else.
pub fn fetch_exit_code<T>(result: &Result<T, WalError>, standby: bool) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) if e.is_not_archived() => 1,
        Err(WalError::RetriesExhausted { .. }) if standby => 1,
        Err(_) => EXIT_ABORT_RECOVERY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_are_bounded_and_only_for_transient_errors() {
        let policy = RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            deadline: Duration::from_secs(5),
        };
        let mut calls = 0;
        let r: Result<(), _> = policy
            .run("op", || {
                calls += 1;
                async {
                    Err(WalError::Storage(dr_storage::Error::Io {
                        what: "x".into(),
                        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "t"),
                    }))
                }
            })
            .await;
        assert_eq!(calls, 3);
        assert!(matches!(
            r,
            Err(WalError::RetriesExhausted { attempts: 3, .. })
        ));
        assert_eq!(fetch_exit_code(&r, false), EXIT_ABORT_RECOVERY);
        assert_eq!(fetch_exit_code(&r, true), 1);
        assert_eq!(push_exit_code(&r), 3);
        let mut calls = 0;
        let r: Result<(), _> = policy
            .run("op", || {
                calls += 1;
                async {
                    Err(WalError::NotArchived {
                        source_name: "s".into(),
                        name: "n".into(),
                    })
                }
            })
            .await;
        assert_eq!(calls, 1);
        assert_eq!(fetch_exit_code(&r, false), 1);
        let corrupt: Result<(), _> = Err(WalError::Storage(dr_storage::Error::Corrupt {
            object: "o".into(),
            reason: "r".into(),
        }));
        assert_eq!(fetch_exit_code(&corrupt, true), EXIT_ABORT_RECOVERY);
    }
}
