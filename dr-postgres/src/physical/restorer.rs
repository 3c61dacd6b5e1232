//! [`PostgresPitrRestorer`]: point-in-time restore of one physical backup
//! as a [`dr_core::Restorer`], so that every front end restores a
//! `postgres-physical` backup through the same [`dr_core::job::restore`]
//! (and the conformance suite checks it like any other restorer).
//!
//! See [`PostgresPitrRestorer`] for what each method does.

use std::path::PathBuf;

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport, Restorer};
use dr_storage::{Identities, Manifest};
use tokio::sync::Mutex;

use super::error::PitrError;
use super::plan::{plan_pitr, PitrOptions};
use super::restore::{is_empty_or_absent, remove_written, restore_from, Artifacts, PitrReport};
use super::server::stop_server;
use super::target::{RecoveryTarget, TargetAction};
use crate::conn::ConnectionSettings;
use crate::format::{read_control, Lsn};
use crate::metadata::{PhysicalMetadata, KIND_PHYSICAL};

/// Point-in-time restore of a `postgres-physical` backup into
/// [`PitrOptions::pgdata`], as a [`Restorer`].
///
/// [`restore`](Restorer::restore) plans the restore with the reader's backup
/// fixed ([`plan_pitr`] with [`PitrOptions::backup`] set to its id: the
/// target must be reachable from that backup) and carries it out
/// ([`pitr_restore`](super::pitr_restore), the base backup read through the [`BackupReader`] and
/// its keys). To choose the backup by target (`dr restore auto`), call
/// [`plan_pitr`] and [`pitr_restore`](super::pitr_restore) directly.
///
/// [`check`](Restorer::check) compares the restored cluster with the
/// manifest as far as the options allow:
///
/// - a started server (`start`, action `promote` or `pause`): recovery
///   ended as asked (promoted, or paused at the target), the system
///   identifier, that WAL was replayed at least to the backup's stop point
///   (PostgreSQL 15 docs §26.3.4: a backup is consistent only from there),
///   and with the target `immediate` the list of databases, which is then
///   the backup's own. A later target replays transactions after the
///   backup, which may create or drop databases: the list is not compared
///   then, since a difference would not be a fault of the backup.
/// - a server that shut down at the target (action `shutdown`): that it
///   did, and the system identifier in `global/pg_control`.
/// - no server (`start` off): the system identifier in `global/pg_control`
///   and that `recovery.signal` is in place, so that the next start
///   recovers. Nothing about the data can be read without a server.
///
/// [`discard`](Restorer::discard) stops a server the restore started and
/// removes the data directory and tablespace directories it wrote (a
/// directory that existed empty before is emptied, not removed).
#[derive(Debug)]
pub struct PostgresPitrRestorer {
    options: PitrOptions,
    identities: Identities,
    restored: Mutex<Option<Restored>>,
}

/// What one restore made, for `check` and `discard`.
#[derive(Debug, Clone)]
struct Restored {
    /// The options it ran with (the backup fixed).
    opts: PitrOptions,
    /// The server's major version, for `pg_ctl`.
    major: u32,
    /// The directories it writes, with whether each existed before.
    written: Vec<(PathBuf, bool)>,
    /// Set once the restore finished.
    report: Option<PitrReport>,
}

impl std::fmt::Display for PostgresPitrRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgreSQL data directory {} (point-in-time restore to {})",
            self.options.pgdata.display(),
            self.options.target
        )
    }
}

impl PostgresPitrRestorer {
    /// A restorer carrying out `options` for whichever backup it is given
    /// ([`PitrOptions::backup`] is replaced by that backup's id).
    /// `identities` read the WAL archive's timeline history files while
    /// planning; the base backup is read with the keys of the
    /// [`BackupReader`], and the restored server's `restore_command` with
    /// the key file in [`PitrOptions::fetch_args`].
    pub fn new(options: PitrOptions, identities: Identities) -> Self {
        PostgresPitrRestorer {
            options,
            identities,
            restored: Mutex::new(None),
        }
    }

    /// The options.
    pub fn options(&self) -> &PitrOptions {
        &self.options
    }

    /// The report of the restore in place, once it finished (also in
    /// [`RestoreReport::details`], serialised).
    pub async fn report(&self) -> Option<PitrReport> {
        self.restored
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.report.clone())
    }
}

/// The directories a restore with `opts` and the tablespace directories
/// `tablespaces` writes, each with whether it exists now; last the
/// tablespace root when it does not exist yet (the restore creates it as
/// their parent; an existing one is never touched).
fn directories(opts: &PitrOptions, tablespaces: &[PathBuf]) -> Vec<(PathBuf, bool)> {
    let mut dirs: Vec<(PathBuf, bool)> = std::iter::once(&opts.pgdata)
        .chain(tablespaces)
        .map(|d| (d.clone(), d.exists()))
        .collect();
    if let Some(root) = opts.tablespace_root.as_ref().filter(|r| !r.exists()) {
        dirs.push((root.clone(), false));
    }
    dirs
}

fn not_restored() -> dr_core::Error {
    dr_core::Error::InvalidConfig {
        key: "verify".into(),
        reason: "check() before restore(): no restored cluster".into(),
    }
}

#[async_trait]
impl Restorer for PostgresPitrRestorer {
    fn accepts(&self, kind: &str) -> bool {
        kind == KIND_PHYSICAL
    }

    async fn restore(&self, backup: &BackupReader) -> dr_core::Result<RestoreReport> {
        let mut slot = self.restored.lock().await;
        if slot.is_some() {
            return Err(dr_core::Error::Conflict {
                what: self.to_string(),
                reason: "a restore is already in place; discard it first".into(),
            });
        }
        let manifest = backup.manifest();
        let mut opts = self.options.clone();
        opts.backup = Some(manifest.backup_id.clone());
        let plan = plan_pitr(
            backup.repository(),
            &self.identities,
            &manifest.source.name,
            &opts,
        )
        .await?;
        let tablespaces: Vec<PathBuf> = plan.tablespaces.iter().map(|t| t.dir.clone()).collect();
        let written = directories(&opts, &tablespaces);
        // Recorded only over empty targets, so that discard() never empties
        // a directory the restore refused to write into.
        let mut empty = true;
        for (dir, _) in &written[..=tablespaces.len()] {
            empty &= is_empty_or_absent(dir)?;
        }
        if empty {
            *slot = Some(Restored {
                opts: opts.clone(),
                major: plan.backup.server_major(),
                written: written.clone(),
                report: None,
            });
        }
        let report = match restore_from(&Artifacts::Reader(backup), &plan, &opts).await {
            Ok(r) => r,
            Err(e) => {
                // pitr_restore removes what it wrote while writing files;
                // what is left (a server that failed to recover) stays for
                // discard() and the operator. A restore refused before it
                // wrote anything leaves nothing of its own: discard() must
                // not remove what another restore is writing there.
                let refused = matches!(
                    e,
                    PitrError::RestoreInProgress { .. }
                        | PitrError::TargetNotEmpty { .. }
                        | PitrError::TablespaceNotEmpty { .. }
                        | PitrError::TablespaceInWal { .. }
                );
                if refused || is_empty_or_absent(&opts.pgdata).unwrap_or(false) {
                    *slot = None;
                }
                return Err(e.into());
            }
        };
        let mut out = RestoreReport::new(match report.port {
            Some(port) => format!(
                "PostgreSQL data directory {} on port {port} (backup {}, {})",
                report.pgdata.display(),
                plan.backup_id,
                plan.target
            ),
            None => format!(
                "PostgreSQL data directory {} (backup {}, {})",
                report.pgdata.display(),
                plan.backup_id,
                plan.target
            ),
        });
        out.bytes_read = report.bytes;
        // Front ends print a restore report's warnings.
        out.warnings.extend(report.warnings.iter().cloned());
        out.details = serde_json::to_value(&report).unwrap_or_default();
        if let Some(r) = slot.as_mut() {
            r.report = Some(report);
        }
        Ok(out)
    }

    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        let slot = self.restored.lock().await;
        let restored = slot.as_ref().ok_or_else(not_restored)?;
        let report = restored.report.as_ref().ok_or_else(not_restored)?;
        let meta = PhysicalMetadata::from_manifest(manifest)?;
        let opts = &restored.opts;
        let running = opts.pgdata.join("postmaster.pid").exists();
        let checks = match (report.port, &report.socket_dir) {
            (Some(port), Some(sock)) if running => {
                live_checks(opts, &meta, port, sock.display().to_string()).await?
            }
            _ => offline_checks(opts, report, &meta)?,
        };
        Ok(CheckReport { checks })
    }

    async fn discard(&self) -> dr_core::Result<()> {
        let mut slot = self.restored.lock().await;
        let Some(restored) = slot.as_ref() else {
            return Ok(());
        };
        if restored.opts.pgdata.join("postmaster.pid").exists() {
            stop_server(&restored.opts, restored.major).await?;
        }
        remove_written(&restored.written)?;
        tracing::info!(pgdata = %restored.opts.pgdata.display(), "restored cluster removed");
        *slot = None;
        Ok(())
    }
}

/// The checks on a running restored server.
async fn live_checks(
    opts: &PitrOptions,
    meta: &PhysicalMetadata,
    port: u16,
    host: String,
) -> dr_core::Result<Vec<Check>> {
    let conn = ConnectionSettings::from_dsn(&format!(
        "host={host} port={port} user={} dbname=postgres",
        opts.user
    ))?;
    let client = conn.connect().await?;
    let q = |what: &'static str| {
        let target = conn.target();
        move |e: tokio_postgres::Error| dr_core::Error::Failed {
            what: format!("{what} on the restored cluster {target}"),
            source: Box::new(e),
        }
    };
    let mut checks = Vec::new();
    let row = client
        .query_one(
            &format!(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN {} \
             ELSE 'not paused' END, (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE \
             pg_current_wal_lsn() END)::text, (SELECT system_identifier FROM pg_control_system())",
                super::server::pause_state_sql(meta.server_major())
            ),
            &[],
        )
        .await
        .map_err(q("reading the recovery state"))?;
    let in_recovery: bool = row.get(0);
    let pause: String = row.get(1);
    let lsn: String = row.get(2);
    let sysid: i64 = row.get(3);
    checks.push(if opts.action == TargetAction::Pause {
        Check {
            name: "recovery paused at the target".into(),
            expected: "paused".into(),
            actual: if !in_recovery {
                "promoted".into()
            } else {
                pause
            },
        }
    } else {
        Check {
            name: "recovery reached a consistent state and ended".into(),
            expected: "promoted".into(),
            actual: if in_recovery {
                "still in recovery".into()
            } else {
                "promoted".into()
            },
        }
    });
    checks.push(Check {
        name: "system identifier".into(),
        expected: meta.system_identifier.clone(),
        actual: (sysid as u64).to_string(),
    });
    checks.push(replayed_past_stop(meta, lsn.parse().ok()));
    if opts.target == RecoveryTarget::Immediate {
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
    }
    Ok(checks)
}

/// Whether WAL was replayed at least to the backup's stop point: the
/// restored cluster is consistent only from there.
fn replayed_past_stop(meta: &PhysicalMetadata, at: Option<Lsn>) -> Check {
    let expected = format!("at or after {}", meta.stop_lsn);
    Check {
        name: "WAL replayed to the end of the backup".into(),
        actual: match at {
            Some(l) if l >= meta.stop_lsn => expected.clone(),
            Some(l) => format!("at {l}"),
            None => "unknown".into(),
        },
        expected,
    }
}

/// The checks on a restored data directory without a running server.
fn offline_checks(
    opts: &PitrOptions,
    report: &PitrReport,
    meta: &PhysicalMetadata,
) -> dr_core::Result<Vec<Check>> {
    let mut checks = Vec::new();
    if opts.start && opts.action == TargetAction::Shutdown {
        checks.push(Check {
            name: "recovery reached the target and shut down".into(),
            expected: "shut down at the target".into(),
            actual: if report.reached.is_some() {
                "shut down at the target".into()
            } else {
                "not reached".into()
            },
        });
    } else if opts.start {
        checks.push(Check {
            name: "restored server running".into(),
            expected: "running".into(),
            actual: "not running".into(),
        });
    } else {
        let signal = opts.pgdata.join("recovery.signal").exists();
        checks.push(Check {
            name: "recovery.signal in place".into(),
            expected: "present".into(),
            actual: if signal { "present" } else { "absent" }.into(),
        });
    }
    let control = read_control(&opts.pgdata)?;
    checks.push(Check {
        name: "system identifier".into(),
        expected: meta.system_identifier.clone(),
        actual: control.system_id.to_string(),
    });
    Ok(checks)
}
