//! Carrying out a [`PitrPlan`]: the base backup's tars unpacked into the
//! data directory and the tablespace directories ([`super::extract`]), the
//! `backup_manifest` beside them, the files synced, the recovery
//! configuration written ([`super::server`]), and with `start` the server
//! started and waited for. PostgreSQL 15 docs §26.3.4 "Recovering Using a
//! Continuous Archive Backup".

use std::path::{Path, PathBuf};
use std::time::Instant;

use dr_core::BackupReader;
use dr_storage::{ArtifactReader, Identities, Repository};
use serde::Serialize;

use super::error::PitrError;
use super::lock::RestoreLock;
use super::plan::{refuse_wal_tablespaces, socket_dir, PitrOptions, PitrPlan};
use super::server::{start_and_wait, write_recovery_config, RecoveryPoint};
use crate::host::default_owner;
use crate::metadata::{BASE_ARTIFACT, MANIFEST_ARTIFACT};

/// What [`pitr_restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    /// The data directory.
    pub pgdata: PathBuf,
    /// The plan carried out.
    pub plan: PitrPlan,
    /// The plan's warnings ([`PitrPlan::warnings`]), for front ends to
    /// print.
    pub warnings: Vec<String>,
    /// Plaintext bytes restored.
    pub bytes: u64,
    /// Set when the server was started and recovery ended.
    pub reached: Option<RecoveryPoint>,
    /// The port the server listens on, when started.
    pub port: Option<u16>,
    /// The socket directory, when started.
    pub socket_dir: Option<PathBuf>,
    /// Wall time.
    pub elapsed_secs: f64,
}

/// Restores the plan's backup into `opts.pgdata` and writes the recovery
/// settings; with `opts.start`, starts the server as the data directory's
/// owner and waits until recovery ends.
///
/// The target directory is locked for the whole restore (a lock file inside
/// it, see [`PitrError::RestoreInProgress`]).
///
/// # Errors
/// Before anything is written: [`PitrError::TargetNotEmpty`] (naming the
/// leftover of an interrupted restore as such),
/// [`PitrError::RestoreInProgress`] when another restore writes the
/// directory, [`PitrError::TablespaceNotEmpty`],
/// [`PitrError::TablespaceInWal`];
/// [`PitrError::RecoveryFailed`] with the end of the server log; repository
/// errors (a wrong key fails before the directory is created).
pub async fn pitr_restore(
    repo: &Repository,
    identities: &Identities,
    plan: &PitrPlan,
    opts: &PitrOptions,
) -> Result<PitrReport, PitrError> {
    restore_from(&Artifacts::Repository(repo, identities), plan, opts).await
}

/// Where the backup's artifacts are read from: the repository with the
/// caller's keys, or a [`BackupReader`] (with the keys the restore job gave
/// it).
pub(super) enum Artifacts<'a> {
    /// [`Repository::open_artifact`] with these identities.
    Repository(&'a Repository, &'a Identities),
    /// [`BackupReader::open`]: the reader's backup must be the plan's.
    Reader(&'a BackupReader),
}

impl Artifacts<'_> {
    /// Opens artifact `name` of `plan`'s backup; a wrong key fails here,
    /// before any data flows.
    async fn open(&self, plan: &PitrPlan, name: &str) -> Result<ArtifactReader, PitrError> {
        match self {
            Artifacts::Repository(repo, ids) => {
                Ok(repo.open_artifact(&plan.manifest, name, ids).await?)
            }
            Artifacts::Reader(reader) => {
                debug_assert_eq!(reader.manifest().backup_id, plan.backup_id);
                reader.open(name).await.map_err(|e| match e {
                    dr_core::Error::Storage(s) => PitrError::Storage(s),
                    // The reader fails with storage errors only; anything
                    // else still names the artifact.
                    other => PitrError::Io {
                        path: PathBuf::from(format!("artifact {name}")),
                        source: std::io::Error::other(other),
                    },
                })
            }
        }
    }
}

/// [`pitr_restore`] reading the artifacts from `artifacts`.
pub(super) async fn restore_from(
    artifacts: &Artifacts<'_>,
    plan: &PitrPlan,
    opts: &PitrOptions,
) -> Result<PitrReport, PitrError> {
    let started = Instant::now();
    let pgdata = &opts.pgdata;
    let existed = pgdata.exists();
    // Held until the restore ends; refuses a directory another restore
    // writes (before looking at anything else it may be writing), or one
    // that is not empty.
    let lock = RestoreLock::acquire(pgdata, opts.clean_leftover)?;
    let refused = || -> Result<(), PitrError> {
        for t in &plan.tablespaces {
            if !is_empty_or_absent(&t.dir)? {
                return Err(PitrError::TablespaceNotEmpty {
                    name: t.name.clone(),
                    oid: t.oid,
                    dir: t.dir.clone(),
                });
            }
        }
        // Checked again here: the plan may have been made before the
        // directory appeared.
        refuse_wal_tablespaces(&plan.wal_tablespaces)
    };
    let mut refusal = refused();
    if refusal.is_ok() && opts.start {
        // A server that cannot be started is known before anything is
        // written.
        refusal = super::server::server_bin(opts, plan.backup.server_version_num / 10000)
            .await
            .map(|_| ());
    }
    if let Err(e) = refusal {
        // Nothing written but the lock file (and the directory, when it was
        // made for the lock).
        lock.release();
        if !existed {
            let _ = std::fs::remove_dir(pgdata);
        }
        return Err(e);
    }
    let owner = opts.owner.or_else(default_owner);
    // Which directories existed (empty) before: on a failure while the
    // files are written, what this restore wrote is removed again, so no
    // half-restored data directory is left behind.
    let mut written: Vec<(PathBuf, bool)> = vec![(pgdata.clone(), existed)];
    written.extend(
        plan.tablespaces
            .iter()
            .map(|t| (t.dir.clone(), t.dir.exists())),
    );
    let files: Result<u64, PitrError> = async {
        // Opening the artifact checks the key before anything is written.
        let reader = artifacts.open(plan, BASE_ARTIFACT).await?;
        create_private_dir(pgdata)?;
        // With tablespaces, dr makes the pg_tblspc links itself (pointing to
        // the mapped directories); the server would otherwise recreate the
        // original ones from tablespace_map (PostgreSQL 15 docs §26.3.3).
        let links = !plan.tablespaces.is_empty();
        let mut bytes = unpack(
            reader,
            pgdata.clone(),
            move |path| {
                links
                    && (path == Path::new("tablespace_map")
                        || path.parent() == Some(Path::new("pg_tblspc")))
            },
            opts.cancel.clone(),
            &opts.tracker,
        )
        .await?;
        if plan
            .manifest
            .artifacts
            .iter()
            .any(|a| a.name == MANIFEST_ARTIFACT)
        {
            use tokio::io::AsyncReadExt;
            let mut reader = artifacts.open(plan, MANIFEST_ARTIFACT).await?;
            let path = pgdata.join(MANIFEST_ARTIFACT);
            // 0600, as the server's own files (pg_basebackup writes it so).
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await
                .map_err(PitrError::io(&path))?;
            let mut buf = Vec::new();
            // Stream it: a manifest lists every file and can be large.
            loop {
                buf.clear();
                let n = (&mut reader)
                    .take(1 << 20)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| dr_storage::Error::from_io(e, "reading the backup manifest"))?;
                if n == 0 {
                    break;
                }
                tokio::io::AsyncWriteExt::write_all(&mut file, &buf)
                    .await
                    .map_err(PitrError::io(&path))?;
                bytes += n as u64;
            }
        }
        for t in &plan.tablespaces {
            interrupted(&opts.cancel, pgdata)?;
            let reader = artifacts.open(plan, &t.artifact).await?;
            create_private_dir(&t.dir)?;
            // The link first: whoever cleans up an interrupted restore finds
            // the tablespace's directory through it.
            let link = pgdata.join("pg_tblspc").join(t.oid.to_string());
            std::fs::create_dir_all(pgdata.join("pg_tblspc")).map_err(PitrError::io(pgdata))?;
            std::os::unix::fs::symlink(&t.dir, &link).map_err(PitrError::io(&link))?;
            bytes += unpack(
                reader,
                t.dir.clone(),
                |_| false,
                opts.cancel.clone(),
                &opts.tracker,
            )
            .await?;
            if let Some(o) = owner {
                chown_tree(&t.dir, o).map_err(PitrError::io(&t.dir))?;
            }
            tracing::info!(tablespace = %t.name, oid = t.oid, dir = %t.dir.display(), "tablespace restored");
        }
        // The data on disk before the files that make the directory look like
        // a restore ready to start (recovery.signal): a crash in between leaves
        // no signal rather than a signal over data still in the page cache.
        interrupted(&opts.cancel, pgdata)?;
        let mut dirs = vec![pgdata.clone()];
        dirs.extend(plan.tablespaces.iter().map(|t| t.dir.clone()));
        sync_filesystems(&dirs).await?;
        write_recovery_config(pgdata, plan)?;
        if let Some(o) = owner {
            chown_tree(pgdata, o).map_err(PitrError::io(pgdata))?;
        }
        sync_filesystems(&dirs).await?;
        tracing::info!(pgdata = %pgdata.display(), backup_id = %plan.backup_id, target = %plan.target, "base backup restored");
        Ok(bytes)
    }
    .await;
    let bytes = match files {
        Ok(b) => b,
        Err(e) => {
            if let Err(c) = remove_written(&written) {
                tracing::warn!(error = %c, "a failed restore could not remove what it wrote");
            }
            lock.release();
            return Err(e);
        }
    };
    let mut report = PitrReport {
        pgdata: pgdata.clone(),
        plan: plan.clone(),
        warnings: plan.warnings.clone(),
        bytes,
        reached: None,
        port: None,
        socket_dir: None,
        elapsed_secs: 0.0,
    };
    if opts.start {
        let port = opts.port.unwrap_or(5432);
        let sock = socket_dir(opts).expect("socket dir when started");
        let reached = start_and_wait(plan, opts, owner, port, &sock).await;
        // The files are complete: whatever the recovery did, the directory
        // is no interrupted restore's leftover.
        lock.release();
        let (reached, port, sock) = reached?;
        report.reached = Some(reached);
        report.port = Some(port);
        report.socket_dir = Some(sock);
    } else {
        lock.release();
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Flushes the file systems holding `dirs` to disk (`syncfs(2)`, what
/// PostgreSQL's `recovery_init_sync_method = syncfs` does; pg_basebackup and
/// pgBackRest sync restored files too), so that a restore reported done
/// survives a crash of the host.
async fn sync_filesystems(dirs: &[PathBuf]) -> Result<(), PitrError> {
    let dirs = dirs.to_vec();
    tokio::task::spawn_blocking(move || {
        for d in &dirs {
            let f = std::fs::File::open(d).map_err(PitrError::io(d))?;
            nix::unistd::syncfs(&f).map_err(|e| PitrError::io(d)(std::io::Error::from(e)))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| PitrError::Io {
        path: PathBuf::from("(sync)"),
        source: std::io::Error::other(e),
    })?
}

/// Whether `dir` is absent or an empty directory.
pub(super) fn is_empty_or_absent(dir: &Path) -> Result<bool, PitrError> {
    match std::fs::read_dir(dir) {
        Ok(mut e) => Ok(e.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(PitrError::io(dir)(e)),
    }
}

/// Creates `dir` (and parents) with mode 0700, as PostgreSQL wants its data
/// and tablespace directories.
fn create_private_dir(dir: &Path) -> Result<(), PitrError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(PitrError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(PitrError::io(dir))
}

/// The codec's verdict inside an I/O error, however deeply tar wrapped it:
/// [`dr_storage::Error::Corrupt`] or [`dr_storage::Error::Decrypt`].
fn codec_error(e: &std::io::Error) -> Option<dr_storage::Error> {
    fn find(e: &(dyn std::error::Error + 'static)) -> Option<dr_storage::Error> {
        match e.downcast_ref::<dr_storage::Error>() {
            Some(dr_storage::Error::Corrupt { object, reason }) => {
                return Some(dr_storage::Error::Corrupt {
                    object: object.clone(),
                    reason: reason.clone(),
                })
            }
            Some(dr_storage::Error::Decrypt { object, reason }) => {
                return Some(dr_storage::Error::Decrypt {
                    object: object.clone(),
                    reason: reason.clone(),
                })
            }
            _ => {}
        }
        // io::Error::source skips the error it wraps: look inside first.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = find(inner) {
                return Some(found);
            }
        }
        e.source().and_then(find)
    }
    find(e)
}

/// Unpacks a tar artifact into `dest` ([`super::extract`]), leaving out the
/// entries `skip` selects, and reads it to the end so that the codec checks
/// the digests.
/// Returns the plaintext bytes read.
async fn unpack(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    dest: PathBuf,
    skip: impl Fn(&Path) -> bool + Send + 'static,
    cancel: tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<u64, PitrError> {
    let at = dest.clone();
    // Held by the thread until it ends, even when this future is dropped.
    let working = tracker.token();
    tokio::task::spawn_blocking(move || -> Result<u64, PitrError> {
        let _working = working;
        // tar reads in small pieces (512-byte headers, 8 KiB copies); each
        // read of the bridge is a trip through the runtime, so buffer it.
        let mut bridge =
            std::io::BufReader::with_capacity(1 << 20, tokio_util::io::SyncIoBridge::new(reader));
        let mut counted = CountingRead {
            inner: &mut bridge,
            n: 0,
        };
        // tar wraps the reader's errors in its own; a corrupt or
        // undecryptable artifact must still come out as such (exit 1), not
        // as a local I/O failure.
        let unpack_err = |e: std::io::Error| match codec_error(&e) {
            Some(found) => found,
            None => dr_storage::Error::from_io(e, format!("unpacking into {}", dest.display())),
        };
        // Two writers: a piece is written while the next is decoded, and a
        // writer waiting in the kernel leaves the other one working.
        let extracted =
            super::extract::extract(&mut counted, &dest, 2, skip, || cancel.is_cancelled());
        // Cancelled, the extraction's own error is only "stopped".
        interrupted(&cancel, &dest)?;
        extracted.map_err(unpack_err)?;
        std::io::copy(&mut counted, &mut std::io::sink())
            .map_err(|e| dr_storage::Error::from_io(e, "reading the end of the base backup"))?;
        Ok(counted.n)
    })
    .await
    .map_err(|e| PitrError::Io {
        path: at,
        source: std::io::Error::other(e),
    })?
}

/// [`dr_storage::Error::Aborted`] once `cancel` is cancelled.
fn interrupted(cancel: &tokio_util::sync::CancellationToken, dest: &Path) -> Result<(), PitrError> {
    if cancel.is_cancelled() {
        return Err(dr_storage::Error::Aborted {
            what: format!("the restore into {} (interrupted)", dest.display()),
        }
        .into());
    }
    Ok(())
}

struct CountingRead<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn chown_tree(dir: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(owner.0), Some(owner.1))?;
    if dir.is_dir() && !dir.is_symlink() {
        for e in std::fs::read_dir(dir)? {
            chown_tree(&e?.path(), owner)?;
        }
    }
    Ok(())
}

/// Removes what a restore wrote into `written` (each directory with whether
/// it existed, empty, before): one that existed is emptied again, any other
/// removed. Symbolic links (`pg_tblspc`) are removed, never followed. Every
/// directory is tried; a directory already gone is no error.
///
/// # Errors
/// The first [`PitrError::Io`] met.
pub(super) fn remove_written(written: &[(PathBuf, bool)]) -> Result<(), PitrError> {
    let mut first = None;
    for (dir, existed) in written {
        let cleaned = if *existed {
            std::fs::read_dir(dir).and_then(|entries| {
                entries.flatten().try_for_each(|e| {
                    let p = e.path();
                    if p.is_dir() && !p.is_symlink() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    }
                })
            })
        } else {
            std::fs::remove_dir_all(dir)
        };
        match cleaned {
            Err(c) if c.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %dir.display(), error = %c, "could not remove what a restore wrote");
                first.get_or_insert(PitrError::io(dir)(c));
            }
            _ => {}
        }
    }
    first.map_or(Ok(()), Err)
}
