//! `dr verify <physical backup> --restore`: a scratch restore of a physical
//! backup that proves it can be started.
//!
//! [`PhysicalScratchRestorer`] restores the backup into a fresh directory
//! with [`RecoveryTarget::Immediate`] (recovery stops as soon as the backup
//! is consistent, PostgreSQL 15 docs §20.5.5 `recovery_target = 'immediate'`),
//! every tablespace under the scratch directory (never the production
//! tablespaces' paths), `archive_mode = off` (the scratch cluster never
//! pushes WAL), listening on its socket in the data directory only (no
//! TCP, so no port to race for), starts it and waits until it
//! is promoted: a [`PostgresPitrRestorer`] with these options. Its
//! [`check`](Restorer::check) is that restorer's (recovery ended, the system
//! identifier, WAL replayed to the backup's end, the list of databases)
//! and, where `pg_amcheck` is installed, the B-tree indexes and heap of
//! every database (PostgreSQL 15 docs, "pg_amcheck": exit status 0 when no
//! corruption is found). [`discard`](Restorer::discard) stops the server and
//! removes the scratch directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport, Restorer};
use dr_storage::{Identities, Manifest};
use tokio::sync::Mutex;

use super::error::PitrError;
use super::plan::PitrOptions;
use super::restorer::PostgresPitrRestorer;
use super::target::RecoveryTarget;
use crate::metadata::{PhysicalMetadata, KIND_PHYSICAL};

/// A scratch restore of a physical backup for `dr verify --restore`.
#[derive(Debug)]
pub struct PhysicalScratchRestorer {
    identities: Identities,
    dr_program: PathBuf,
    fetch_args: Vec<String>,
    parent: PathBuf,
    bin_dir: Option<PathBuf>,
    owner: Option<(u32, u32)>,
    wait_timeout: Duration,
    scratch: Mutex<Option<Scratch>>,
}

/// One scratch restore: its directory and the restorer writing into it.
#[derive(Debug)]
struct Scratch {
    root: PathBuf,
    restorer: PostgresPitrRestorer,
    port: u16,
    /// Stops the extraction of an interrupted restore.
    cancel: tokio_util::sync::CancellationToken,
    /// The extraction threads still running.
    tracker: tokio_util::task::TaskTracker,
}

impl std::fmt::Display for PhysicalScratchRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scratch PostgreSQL cluster under {}",
            self.parent.display()
        )
    }
}

impl PhysicalScratchRestorer {
    /// A restorer making its scratch directory under the system temporary
    /// directory. `identities` read the WAL archive's timeline history
    /// files (the base backup is read with the restore job's keys); the
    /// scratch server's `restore_command` runs `dr_program wal-fetch
    /// <fetch_args> --source ...` (the repository and the key *file*, never
    /// a key).
    pub fn new(identities: Identities, dr_program: PathBuf, fetch_args: Vec<String>) -> Self {
        PhysicalScratchRestorer {
            identities,
            dr_program,
            fetch_args,
            parent: std::env::temp_dir(),
            bin_dir: None,
            owner: None,
            wait_timeout: Duration::from_secs(900),
            scratch: Mutex::new(None),
        }
    }

    /// Makes the scratch directory under `parent` (keep it short: the socket
    /// path inside is limited to 107 bytes).
    pub fn with_parent(mut self, parent: impl Into<PathBuf>) -> Self {
        self.parent = parent.into();
        self
    }

    /// The server programs' directory, searched first (see [`crate::tools`]
    /// for the rest of the search).
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// `(uid, gid)` running the scratch server (default when root: `postgres`).
    pub fn with_owner(mut self, owner: (u32, u32)) -> Self {
        self.owner = Some(owner);
        self
    }

    /// Bound on the recovery (default 15 minutes).
    pub fn with_wait_timeout(mut self, wait: Duration) -> Self {
        self.wait_timeout = wait;
        self
    }

    /// The scratch data directory, while one exists.
    pub async fn data_dir(&self) -> Option<PathBuf> {
        self.scratch
            .lock()
            .await
            .as_ref()
            .map(|s| s.restorer.options().pgdata.clone())
    }

    /// The options of a scratch restore into `root` on `port`.
    fn options(&self, root: &Path, port: u16) -> PitrOptions {
        let mut opts = PitrOptions::new(
            root.join("data"),
            RecoveryTarget::Immediate,
            self.dr_program.clone(),
            self.fetch_args.clone(),
        );
        opts.start = true;
        opts.archive_mode_off = true;
        opts.port = Some(port);
        opts.socket_only = true;
        opts.owner = self.owner;
        opts.bin_dir = self.bin_dir.clone();
        opts.wait_timeout = self.wait_timeout;
        // Every tablespace inside the scratch directory: a verification
        // never writes to the production tablespaces' paths.
        opts.tablespace_root = Some(root.join("ts"));
        opts
    }
}

/// The port of every scratch cluster: it names the socket file in the
/// scratch directory (`.s.PGSQL.5432`); the server does not listen on TCP.
const SCRATCH_PORT: u16 = 5432;

#[async_trait]
impl Restorer for PhysicalScratchRestorer {
    fn accepts(&self, kind: &str) -> bool {
        kind == KIND_PHYSICAL
    }

    async fn restore(&self, backup: &BackupReader) -> dr_core::Result<RestoreReport> {
        let started = Instant::now();
        let mut slot = self.scratch.lock().await;
        if slot.is_some() {
            return Err(dr_core::Error::Conflict {
                what: self.to_string(),
                reason: "a scratch restore is already in place; discard it first".into(),
            });
        }
        let root = self
            .parent
            .join(format!("drv-{}", hex::encode(rand::random::<[u8; 5]>())));
        std::fs::create_dir(&root).map_err(PitrError::io(&root))?;
        {
            // The server's owner must reach the data directory below.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
                .map_err(PitrError::io(&root))?;
        }
        // The scratch server listens on its socket in its own directory
        // only (no TCP): any port number names it without a clash.
        let port = SCRATCH_PORT;
        let opts = self.options(&root, port);
        let (cancel, tracker) = (opts.cancel.clone(), opts.tracker.clone());
        let restorer = PostgresPitrRestorer::new(opts, self.identities.clone());
        // Recorded before anything can fail, so that discard() cleans up.
        let scratch = slot.insert(Scratch {
            root,
            restorer,
            port,
            cancel,
            tracker,
        });
        let inner = scratch.restorer.restore(backup).await?;
        let pgdata = &scratch.restorer.options().pgdata;
        let mut out = RestoreReport::new(format!(
            "scratch cluster {} on port {port}",
            pgdata.display()
        ));
        out.bytes_read = inner.bytes_read;
        out.duration = started.elapsed();
        out.details = serde_json::json!({
            "pgdata": pgdata,
            "port": port,
            "reached": inner.details.get("reached"),
        });
        Ok(out)
    }

    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        let slot = self.scratch.lock().await;
        let scratch = slot.as_ref().ok_or_else(|| dr_core::Error::InvalidConfig {
            key: "verify".into(),
            reason: "check() before restore(): no scratch cluster".into(),
        })?;
        let meta = PhysicalMetadata::from_manifest(manifest)?;
        let mut report = scratch.restorer.check(manifest).await?;
        // pg_amcheck of the cluster's own major: its queries follow the
        // amcheck extension of that release.
        let major = meta.server_major();
        match crate::tools::Search::default()
            .find(
                "pg_amcheck",
                self.bin_dir.as_deref(),
                crate::tools::Fit::Server(major),
            )
            .await
        {
            Ok(amcheck) => report
                .checks
                .push(run_amcheck(&amcheck.path, scratch).await?),
            Err(e) => {
                tracing::info!(error = %e, "pg_amcheck of PostgreSQL {major} not installed; skipping the corruption check")
            }
        }
        Ok(report)
    }

    async fn discard(&self) -> dr_core::Result<()> {
        let mut slot = self.scratch.lock().await;
        let Some(scratch) = slot.as_ref() else {
            return Ok(());
        };
        // An interrupted restore's extraction threads outlive its future:
        // stop them and wait until they no longer write into the directory.
        scratch.cancel.cancel();
        scratch.tracker.close();
        if tokio::time::timeout(std::time::Duration::from_secs(120), scratch.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(root = %scratch.root.display(), "the scratch restore's extraction did not stop within 120 s");
        }
        scratch.restorer.discard().await?;
        match std::fs::remove_dir_all(&scratch.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PitrError::io(&scratch.root)(e).into()),
        }
        tracing::info!(dir = %scratch.root.display(), "scratch cluster removed");
        *slot = None;
        Ok(())
    }
}

/// `pg_amcheck --all --install-missing` on the scratch cluster: 0 means no
/// corruption, 2 corruption found, anything else that it could not run.
async fn run_amcheck(program: &Path, s: &Scratch) -> dr_core::Result<Check> {
    let port = s.port.to_string();
    let opts = s.restorer.options();
    let host = opts.pgdata.display().to_string();
    let out = tokio::process::Command::new(program)
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            &opts.user,
            "--all",
            "--install-missing",
            "--heapallindexed",
            "--no-password",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(PitrError::io(program))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().take(10).collect();
    match out.status.code() {
        Some(0) => Ok(Check {
            name: "pg_amcheck (heap and B-tree indexes)".into(),
            expected: "no corruption".into(),
            actual: "no corruption".into(),
        }),
        Some(2) => Ok(Check {
            name: "pg_amcheck (heap and B-tree indexes)".into(),
            expected: "no corruption".into(),
            actual: lines.join(" | "),
        }),
        _ => Err(dr_core::Error::Failed {
            what: "pg_amcheck on the scratch cluster".into(),
            source: Box::new(std::io::Error::other(lines.join(" | "))),
        }),
    }
}
