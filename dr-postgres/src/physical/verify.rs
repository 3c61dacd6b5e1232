//! `dr verify <physical backup> --restore`: a scratch restore of a physical
//! backup that proves it can be started.
//!
//! [`PhysicalScratchRestorer`] restores the backup into a fresh directory
//! with [`RecoveryTarget::Immediate`] (recovery stops as soon as the backup
//! is consistent, PostgreSQL 15 docs §20.5.5 `recovery_target = 'immediate'`),
//! every tablespace under the scratch directory (never the production
//! tablespaces' paths), `archive_mode = off` (the scratch cluster never
//! pushes WAL), on a free
//! port with its socket in the data directory, starts it and waits until it
//! is promoted. Its [`check`](Restorer::check) compares with the manifest:
//! the system identifier, the list of databases, that recovery ended, and
//! (where `pg_amcheck` is installed) the B-tree indexes and heap of every
//! database (PostgreSQL 15 docs, "pg_amcheck": exit status 0 when no
//! corruption is found). [`discard`](Restorer::discard) stops the server and
//! removes the directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport, Restorer};
use dr_storage::{Identities, Manifest};
use tokio::sync::Mutex;

use super::error::PitrError;
use super::plan::{plan_pitr, PitrOptions};
use super::restore::{restore_from, Artifacts};
use super::server::stop_server;
use super::target::RecoveryTarget;
use crate::conn::ConnectionSettings;
use crate::host::free_port;
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

#[derive(Debug, Clone)]
struct Scratch {
    root: PathBuf,
    opts: PitrOptions,
    major: u32,
    port: u16,
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

    /// The server programs' directory (default `/usr/lib/postgresql/<major>/bin`).
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
            .map(|s| s.opts.pgdata.clone())
    }

    fn bin(&self, major: u32) -> PathBuf {
        self.bin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")))
    }
}

fn connection(s: &Scratch) -> dr_core::Result<ConnectionSettings> {
    Ok(ConnectionSettings::from_dsn(&format!(
        "host={} port={} user={} dbname=postgres",
        s.opts.pgdata.display(),
        s.port,
        s.opts.user
    ))?)
}

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
        let manifest = backup.manifest();
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
        let port = free_port().map_err(PitrError::io(&root))?;
        let mut opts = PitrOptions::new(
            root.join("data"),
            RecoveryTarget::Immediate,
            self.dr_program.clone(),
            self.fetch_args.clone(),
        );
        opts.backup = Some(manifest.backup_id.clone());
        opts.start = true;
        opts.archive_mode_off = true;
        opts.port = Some(port);
        opts.owner = self.owner;
        opts.bin_dir = self.bin_dir.clone();
        opts.wait_timeout = self.wait_timeout;
        // Every tablespace inside the scratch directory: a verification
        // never writes to the production tablespaces' paths.
        opts.tablespace_root = Some(root.join("ts"));
        let meta = PhysicalMetadata::from_manifest(manifest)?;
        let scratch = Scratch {
            root: root.clone(),
            opts: opts.clone(),
            major: meta.server_major(),
            port,
        };
        // Recorded before anything can fail, so that discard() cleans up.
        *slot = Some(scratch);
        let plan = plan_pitr(
            backup.repository(),
            &self.identities,
            &manifest.source.name,
            &opts,
        )
        .await?;
        // The base backup through the job's reader, with its keys.
        let report = restore_from(&Artifacts::Reader(backup), &plan, &opts).await?;
        let mut out = RestoreReport::new(format!(
            "scratch cluster {} on port {port}",
            opts.pgdata.display()
        ));
        out.bytes_read = report.bytes;
        out.duration = started.elapsed();
        out.details = serde_json::json!({
            "pgdata": opts.pgdata,
            "port": port,
            "reached": report.reached,
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
        let conn = connection(scratch)?;
        let client = conn.connect().await?;
        let q = |what: &'static str| {
            let target = conn.target();
            move |e: tokio_postgres::Error| dr_core::Error::Failed {
                what: format!("{what} on the scratch cluster {target}"),
                source: Box::new(e),
            }
        };
        let mut checks = Vec::new();
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(q("reading the recovery state"))?
            .get(0);
        checks.push(Check {
            name: "recovery reached a consistent state and ended".into(),
            expected: "promoted".into(),
            actual: if in_recovery {
                "still in recovery".into()
            } else {
                "promoted".into()
            },
        });
        let sysid: i64 = client
            .query_one("SELECT system_identifier FROM pg_control_system()", &[])
            .await
            .map_err(q("reading the system identifier"))?
            .get(0);
        checks.push(Check {
            name: "system identifier".into(),
            expected: meta.system_identifier.clone(),
            actual: (sysid as u64).to_string(),
        });
        let dbs: Vec<String> = client
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .await
            .map_err(q("listing the databases"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut expected = meta.databases.clone();
        expected.sort();
        checks.push(Check {
            name: "databases".into(),
            expected: expected.join(","),
            actual: dbs.join(","),
        });
        let amcheck = self.bin(scratch.major).join("pg_amcheck");
        if amcheck.exists() {
            checks.push(run_amcheck(&amcheck, scratch).await?);
        } else {
            tracing::info!(program = %amcheck.display(), "pg_amcheck not installed; skipping the corruption check");
        }
        Ok(CheckReport { checks })
    }

    async fn discard(&self) -> dr_core::Result<()> {
        let mut slot = self.scratch.lock().await;
        let Some(scratch) = slot.as_ref() else {
            return Ok(());
        };
        if scratch.opts.pgdata.join("postmaster.pid").exists() {
            stop_server(&scratch.opts, scratch.major).await?;
        }
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
    let host = s.opts.pgdata.display().to_string();
    let out = tokio::process::Command::new(program)
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            &s.opts.user,
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
