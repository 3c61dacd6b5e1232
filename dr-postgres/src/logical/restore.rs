//! The logical restorer: `pg_restore` into a database, never leaving a
//! partial restore under the target's name.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use dr_core::{BackupReader, Check, CheckReport, RestoreReport};
use dr_storage::Manifest;
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use super::counts::quote_ident;
use super::counts::{count_one, LARGE_OBJECTS};
use super::properties::dbname_conninfo;
use crate::conn::ConnectionSettings;
use crate::error::{Error, Result};
use crate::metadata::{LogicalMetadata, DUMP_ARTIFACT, GLOBALS_ARTIFACT, KIND_LOGICAL};
use crate::tools::{self, tail};

/// Options of a logical restore.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LogicalRestoreOptions {
    /// Replace a target database that already holds objects (it is dropped
    /// only after the new copy restored completely).
    pub clean: bool,
    /// Apply the backup's globals (roles, tablespaces) to the target server
    /// first. Errors for roles that already exist are reported as warnings.
    pub globals: bool,
    /// `pg_restore --jobs`. Above 1 the dump is first decoded into a file in
    /// `staging_dir` (pg_restore needs a seekable file for parallel restore).
    pub jobs: u32,
    /// Where the dump is staged for a parallel restore (default: the system
    /// temporary directory).
    pub staging_dir: Option<PathBuf>,
    /// `pg_restore --no-owner --no-privileges`: objects belong to the
    /// restoring user (for scratch targets without the source's roles).
    pub no_owner: bool,
    /// Directory of the PostgreSQL client programs.
    pub bin_dir: Option<PathBuf>,
}

/// Restores a logical backup into a database.
///
/// The data goes into a new database under a temporary name
/// (`<target>_dr_<random>`), created from `template0`; only when `pg_restore`
/// succeeded is it renamed to the target (after dropping a previous target
/// when `clean` allows). A failure drops the temporary database: the target
/// is never left half restored.
#[derive(Debug)]
pub struct PostgresLogicalRestorer {
    target: ConnectionSettings,
    options: LogicalRestoreOptions,
    created: Mutex<Option<String>>,
}

impl std::fmt::Display for PostgresLogicalRestorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL database {}", self.target.target())
    }
}

impl PostgresLogicalRestorer {
    /// Restores into the database `target` names (created if missing).
    pub fn new(target: ConnectionSettings, options: LogicalRestoreOptions) -> Self {
        PostgresLogicalRestorer {
            target,
            options,
            created: Mutex::new(None),
        }
    }

    /// Restores into a new scratch database `dr_verify_<random>` on the server
    /// `server` names; [`discard`](dr_core::Restorer::discard) drops it.
    pub fn scratch(server: &ConnectionSettings, options: LogicalRestoreOptions) -> Self {
        let name = format!("dr_verify_{}", hex::encode(rand::random::<[u8; 4]>()));
        Self::new(server.with_database(&name), options)
    }

    /// The target database.
    pub fn target(&self) -> &ConnectionSettings {
        &self.target
    }

    async fn admin(&self) -> Result<Client> {
        match self.target.with_database("postgres").connect().await {
            Err(Error::NoSuchDatabase { .. }) => {
                self.target.with_database("template1").connect().await
            }
            other => other,
        }
    }

    fn query_err(&self, what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let what = what.into();
        let target = self.target.server();
        move |source| Error::Query {
            what,
            target,
            source,
        }
    }

    /// Whether the target exists, and whether it holds user objects.
    async fn target_state(&self, admin: &Client) -> Result<Option<bool>> {
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&self.target.dbname()],
            )
            .await
            .map_err(self.query_err("looking up the target database"))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let client = self.target.connect().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
                     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%') \
                 + (SELECT count(*) FROM pg_largeobject_metadata)",
                &[],
            )
            .await
            .map_err(self.query_err("checking whether the target is empty"))?;
        let objects: i64 = row.get(0);
        Ok(Some(objects > 0))
    }

    async fn apply_globals(
        &self,
        backup: &BackupReader,
        psql: &tools::Tool,
        warnings: &mut Vec<String>,
    ) -> dr_core::Result<u64> {
        let mut reader = backup.open(GLOBALS_ARTIFACT).await?;
        let mut sql = Vec::new();
        reader
            .read_to_end(&mut sql)
            .await
            .map_err(|e| dr_storage::Error::from_io(e, GLOBALS_ARTIFACT))?;
        let admin_conn = self.target.with_database("postgres");
        let (mut cmd, _pass) = admin_conn.command(&psql.path)?;
        cmd.arg("--no-psqlrc")
            .arg("--quiet")
            .arg("--set=ON_ERROR_STOP=0")
            .arg("--dbname")
            .arg(dbname_conninfo(admin_conn.dbname()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::Io {
            path: psql.path.clone(),
            source,
        })?;
        let mut stdin = child.stdin.take().expect("piped");
        let n = sql.len() as u64;
        let writer = tokio::spawn(async move {
            let r = tokio::io::AsyncWriteExt::write_all(&mut stdin, &sql).await;
            drop(stdin);
            r
        });
        let out = child.wait_with_output().await.map_err(|source| Error::Io {
            path: psql.path.clone(),
            source,
        })?;
        let _ = writer.await;
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if line.contains("ERROR:") && !line.contains("already exists") {
                warnings.push(format!("globals: {}", line.trim()));
            }
        }
        if !out.status.success() {
            return Err(dr_core::Error::from(Error::ToolFailed {
                program: "psql (globals)".into(),
                status: out.status.to_string(),
                stderr: tail(&out.stderr, 4000),
            }));
        }
        Ok(n)
    }

    /// Moves the restored database to the target name. An existing target is
    /// first renamed aside and dropped only once the new one holds the name.
    async fn swap_in(
        &self,
        admin: &Client,
        temp: &str,
        target_db: &str,
        exists: bool,
    ) -> dr_core::Result<()> {
        let aside = format!("{temp}_old");
        if exists {
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote_ident(target_db),
                    quote_ident(&aside)
                ))
                .await
                .map_err(
                    self.query_err(format!("moving the old {target_db} aside (is it in use?)")),
                )?;
        }
        let renamed = admin
            .batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(temp),
                quote_ident(target_db)
            ))
            .await
            .map_err(self.query_err(format!("renaming {temp} to {target_db}")));
        if let Err(e) = renamed {
            if exists {
                let _ = admin
                    .batch_execute(&format!(
                        "ALTER DATABASE {} RENAME TO {}",
                        quote_ident(&aside),
                        quote_ident(target_db)
                    ))
                    .await;
            }
            return Err(e.into());
        }
        // The restored database is no longer temporary.
        admin
            .batch_execute(&format!(
                "COMMENT ON DATABASE {} IS NULL",
                quote_ident(target_db)
            ))
            .await
            .map_err(self.query_err(format!("unmarking database {target_db}")))?;
        if exists {
            admin
                .batch_execute(&format!(
                    "DROP DATABASE {} WITH (FORCE)",
                    quote_ident(&aside)
                ))
                .await
                .map_err(self.query_err(format!("dropping the replaced database {aside}")))?;
        }
        Ok(())
    }

    /// Drops the temporary databases `<stem>_dr_<6 hex>` that a restore
    /// into the same target left behind when it was killed: only those
    /// marked by a restore on this host whose process is gone and that no
    /// session uses. Others (another host, a live process) are reported in
    /// `warnings` and kept; `<temp>_old` databases (the previous target
    /// moved aside) are never touched by this.
    async fn drop_stale_temporaries(
        &self,
        admin: &Client,
        stem: &str,
        warnings: &mut Vec<String>,
    ) -> dr_core::Result<()> {
        let rows = admin
            .query(
                "SELECT d.datname, shobj_description(d.oid, 'pg_database'),
                        (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid)
                   FROM pg_database d
                  WHERE starts_with(d.datname, $1)",
                &[&format!("{stem}_dr_")],
            )
            .await
            .map_err(self.query_err("looking for temporary databases of earlier restores"))?;
        for row in rows {
            let name: String = row.get(0);
            let comment: Option<String> = row.get(1);
            let sessions: i64 = row.get(2);
            let suffix = &name[stem.len() + "_dr_".len()..];
            if suffix.len() != 6 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Some(owner) = comment.as_deref().and_then(TemporaryOwner::parse) else {
                continue;
            };
            if sessions > 0 || !owner.is_gone() {
                warnings.push(format!(
                    "temporary database {name} of another restore ({}) may still be in use; left alone \
                     (DROP DATABASE it by hand once that restore is gone)",
                    owner.comment()
                ));
                continue;
            }
            tracing::warn!(database = %name, owner = %owner.comment(), "dropping the temporary database of a restore that was killed");
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))
                .await
                .map_err(self.query_err(format!("dropping the stale temporary database {name}")))?;
            warnings.push(format!(
                "dropped {name}, the temporary database of a restore that was killed ({})",
                owner.comment()
            ));
        }
        Ok(())
    }

    async fn run_pg_restore(
        &self,
        backup: &BackupReader,
        pg_restore: &tools::Tool,
        temp: &str,
    ) -> dr_core::Result<u64> {
        let (mut cmd, _pass) = self.target.command(&pg_restore.path)?;
        cmd.arg("--exit-on-error")
            .arg("--dbname")
            .arg(dbname_conninfo(temp));
        if self.options.no_owner {
            cmd.arg("--no-owner").arg("--no-privileges");
        }
        let mut reader = backup.open(DUMP_ARTIFACT).await?;
        let jobs = self.options.jobs.max(1);
        let staged;
        if jobs > 1 {
            let dir = self
                .options
                .staging_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir);
            let file = tempfile_in(&dir)?;
            let mut out = tokio::fs::File::create(&file.0)
                .await
                .map_err(|source| Error::Io {
                    path: file.0.clone(),
                    source,
                })?;
            tokio::io::copy(&mut reader, &mut out)
                .await
                .map_err(decode_error)?;
            cmd.arg(format!("--jobs={jobs}")).arg(&file.0);
            cmd.stdin(Stdio::null());
            staged = Some(file);
        } else {
            cmd.stdin(Stdio::piped());
            staged = None;
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::Io {
            path: pg_restore.path.clone(),
            source,
        })?;
        let feeder = child.stdin.take().map(|mut stdin| {
            tokio::spawn(async move {
                let r = tokio::io::copy(&mut reader, &mut stdin).await;
                drop(stdin);
                r
            })
        });
        let out = child.wait_with_output().await.map_err(|source| Error::Io {
            path: pg_restore.path.clone(),
            source,
        })?;
        drop(staged);
        let fed = match feeder {
            Some(f) => Some(f.await.map_err(|e| Error::Io {
                path: "restore stream".into(),
                source: std::io::Error::other(e),
            })?),
            None => None,
        };
        // A decoding error explains a pg_restore failure: report it first.
        let bytes = match fed {
            Some(Err(e)) if e.kind() != std::io::ErrorKind::BrokenPipe || out.status.success() => {
                return Err(decode_error(e).into())
            }
            Some(Ok(n)) => n,
            _ => 0,
        };
        if !out.status.success() {
            return Err(Error::ToolFailed {
                program: "pg_restore".into(),
                status: out.status.to_string(),
                stderr: tail(&out.stderr, 4000),
            }
            .into());
        }
        Ok(bytes)
    }
}

fn decode_error(e: std::io::Error) -> Error {
    Error::Data(dr_storage::Error::from_io(e, DUMP_ARTIFACT))
}

struct StagedFile(PathBuf);

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tempfile_in(dir: &std::path::Path) -> Result<StagedFile> {
    let path = dir.join(format!(
        "dr-restore-{}.pgdump",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    Ok(StagedFile(path))
}

#[async_trait]
impl dr_core::Restorer for PostgresLogicalRestorer {
    fn accepts(&self, kind: &str) -> bool {
        kind == KIND_LOGICAL
    }

    async fn restore(&self, backup: &BackupReader) -> dr_core::Result<RestoreReport> {
        let started = Instant::now();
        let target_db = self.target.dbname().to_string();
        // Open the dump first: a wrong key fails here, before the target server
        // is touched.
        drop(backup.open(DUMP_ARTIFACT).await?);
        let admin = self.admin().await?;
        let state = self.target_state(&admin).await?;
        if state == Some(true) && !self.options.clean {
            return Err(Error::TargetNotEmpty {
                target: self.target.target(),
                reason: "the database already holds objects; restore into a new database or ask to clean it \
                         (--clean)"
                    .into(),
            }
            .into());
        }
        let num: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(self.query_err("reading the server version"))?
            .get(0);
        let major = num as u32 / 10000;
        let pg_restore = tools::find("pg_restore", self.options.bin_dir.as_deref(), major).await?;
        let mut warnings = Vec::new();
        let mut bytes = 0;
        if self.options.globals {
            if backup.manifest().artifact(GLOBALS_ARTIFACT).is_none() {
                return Err(dr_core::Error::NotFound {
                    what: format!("globals in backup {}", backup.manifest().backup_id),
                });
            }
            let psql = tools::find("psql", self.options.bin_dir.as_deref(), major).await?;
            bytes += self.apply_globals(backup, &psql, &mut warnings).await?;
        }

        let mut stem: String = target_db.chars().take(40).collect();
        stem.retain(|c| c != '\0');
        self.drop_stale_temporaries(&admin, &stem, &mut warnings)
            .await?;
        let temp = format!("{stem}_dr_{}", hex::encode(rand::random::<[u8; 3]>()));
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&temp)
            ))
            .await
            .map_err(self.query_err(format!("creating database {temp}")))?;
        // Who owns it, so that a later restore can tell a temporary database
        // left by a killed restore from one still being written.
        let owner = TemporaryOwner::current();
        admin
            .batch_execute(&format!(
                "COMMENT ON DATABASE {} IS {}",
                quote_ident(&temp),
                quote_literal(&owner.comment())
            ))
            .await
            .map_err(self.query_err(format!("marking database {temp}")))?;
        tracing::info!(temporary = %temp, target = %target_db, "restoring under a temporary name");
        let restored = self.run_pg_restore(backup, &pg_restore, &temp).await;
        let finish = match restored {
            Ok(n) => {
                bytes += n;
                self.swap_in(&admin, &temp, &target_db, state.is_some())
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = finish {
            if let Err(drop_err) = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_ident(&temp)
                ))
                .await
            {
                tracing::warn!(error = %drop_err, database = %temp, "temporary database not dropped");
            }
            return Err(e);
        }
        *self.created.lock().expect("created") = Some(target_db.clone());
        let mut report = RestoreReport::new(format!("database {}", self.target.target()));
        report.bytes_read = bytes;
        report.duration = started.elapsed();
        report.warnings = warnings;
        report.details = serde_json::json!({
            "database": target_db,
            "replaced_existing": state.is_some(),
            "globals_applied": self.options.globals,
            "jobs": self.options.jobs.max(1),
        });
        Ok(report)
    }

    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        let meta = LogicalMetadata::from_manifest(manifest).map_err(|e| {
            dr_core::Error::failed(
                format!("reading the metadata of backup {}", manifest.backup_id),
                e.to_string(),
            )
        })?;
        let client = self.target.connect().await?;
        let target = self.target.target();
        let mut checks = Vec::new();
        for (table, expected) in &meta.row_counts {
            let actual = if table == LARGE_OBJECTS {
                client
                    .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
                    .await
                    .map(|r| r.get::<_, i64>(0).to_string())
                    .unwrap_or_else(|e| format!("error: {e}"))
            } else {
                match count_one(&client, table, &target).await {
                    Ok(n) => n.to_string(),
                    Err(Error::Query { source, .. }) => match source.code() {
                        Some(c) if *c == tokio_postgres::error::SqlState::UNDEFINED_TABLE => {
                            "missing".into()
                        }
                        _ => format!("error: {source}"),
                    },
                    Err(e) => return Err(e.into()),
                }
            };
            checks.push(Check {
                name: table.clone(),
                expected: expected.to_string(),
                actual,
            });
        }
        Ok(CheckReport { checks })
    }

    async fn discard(&self) -> dr_core::Result<()> {
        let Some(db) = self.created.lock().expect("created").take() else {
            return Ok(());
        };
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&db)
            ))
            .await
            .map_err(self.query_err(format!("dropping {db}")))?;
        Ok(())
    }
}

/// The mark a restore puts on its temporary database (a `COMMENT ON
/// DATABASE`): `dr restore in progress: pid <pid> on <host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TemporaryOwner {
    pid: u32,
    host: String,
}

const OWNER_PREFIX: &str = "dr restore in progress: pid ";

fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

impl TemporaryOwner {
    fn current() -> Self {
        TemporaryOwner {
            pid: std::process::id(),
            host: this_host(),
        }
    }

    fn comment(&self) -> String {
        format!("{OWNER_PREFIX}{} on {}", self.pid, self.host)
    }

    fn parse(comment: &str) -> Option<Self> {
        let rest = comment.strip_prefix(OWNER_PREFIX)?;
        let (pid, host) = rest.split_once(" on ")?;
        Some(TemporaryOwner {
            pid: pid.parse().ok()?,
            host: host.to_string(),
        })
    }

    /// Whether the restore that made it is known to be gone: it ran on this
    /// host and its process no longer exists. A restore on another host is
    /// never presumed gone.
    fn is_gone(&self) -> bool {
        if self.host.is_empty() || self.host != this_host() {
            return false;
        }
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        matches!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH)
        )
    }
}

/// A SQL string literal (`standard_conforming_strings` is on by default
/// since PostgreSQL 9.1: only `'` needs doubling).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod owner_tests {
    use super::TemporaryOwner;

    #[test]
    fn the_mark_round_trips_and_only_a_dead_local_process_is_gone() {
        let me = TemporaryOwner::current();
        assert_eq!(TemporaryOwner::parse(&me.comment()), Some(me.clone()));
        assert!(!me.is_gone(), "this process is alive");
        let elsewhere = TemporaryOwner {
            pid: 1 << 30,
            host: format!("{}-elsewhere", me.host),
        };
        assert!(!elsewhere.is_gone(), "another host is never presumed gone");
        let dead = TemporaryOwner {
            pid: (1 << 22) + 1,
            host: me.host.clone(),
        };
        assert!(dead.is_gone());
        assert_eq!(TemporaryOwner::parse("a user comment"), None);
    }
}
