//! The logical backup source.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use dr_storage::BackupWriter;
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use super::counts::count_tables;
use super::properties::{self, dbname_conninfo};
use crate::conn::ConnectionSettings;
use crate::error::{Error, Result};
use crate::metadata::{LogicalMetadata, DUMP_ARTIFACT, GLOBALS_ARTIFACT, KIND_LOGICAL};
use crate::tools::{self, tail};

/// A logical backup of one PostgreSQL database: `pg_dump --format=custom`
/// (its own compression off; the repository compresses) streamed into the
/// repository, plus `pg_dumpall --globals-only` (roles, tablespaces) as a
/// second artifact.
///
/// Consistency: a `REPEATABLE READ` transaction exports its snapshot
/// (`pg_export_snapshot()`, PostgreSQL 15 docs §9.27.5), counts every table
/// and reads the database's properties
/// ([`DatabaseProperties`](crate::DatabaseProperties)) in it, and hands it
/// to `pg_dump --snapshot`, so the dump, the row counts and the properties
/// describe the same instant.
#[derive(Debug, Clone)]
pub struct PostgresLogical {
    conn: ConnectionSettings,
    bin_dir: Option<PathBuf>,
    globals: bool,
}

impl std::fmt::Display for PostgresLogical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL database {}", self.conn.target())
    }
}

impl PostgresLogical {
    /// A source for the database `conn` names, with globals.
    pub fn new(conn: ConnectionSettings) -> Self {
        PostgresLogical {
            conn,
            bin_dir: None,
            globals: true,
        }
    }

    /// Looks for the client programs in `dir` first (see [`crate::tools`]
    /// for the rest of the search).
    pub fn with_bin_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.bin_dir = dir;
        self
    }

    /// Whether to take the globals artifact (default true).
    pub fn with_globals(mut self, globals: bool) -> Self {
        self.globals = globals;
        self
    }

    async fn query_facts(&self, client: &Client) -> Result<(String, u32, Option<String>, i64)> {
        let target = self.conn.target();
        let q = |what: &'static str| {
            let target = target.clone();
            move |source| Error::Query {
                what: what.into(),
                target,
                source,
            }
        };
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, \
                 pg_database_size(current_database())",
                &[],
            )
            .await
            .map_err(q("reading server facts"))?;
        let version: String = row.get(0);
        let num: i32 = row.get(1);
        let size: i64 = row.get(2);
        // pg_control_system() needs pg_read_server_files or superuser on some
        // installations: absent is recorded as unknown.
        let sysid = client
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .await
            .ok()
            .map(|r| r.get::<_, String>(0));
        Ok((version, num as u32, sysid, size))
    }
}

/// Runs a child to completion while `stdout` is consumed by `consume`;
/// collects the end of its stderr.
pub(crate) async fn run_streaming<F, Fut>(
    mut cmd: tokio::process::Command,
    program: &str,
    consume: F,
) -> Result<()>
where
    F: FnOnce(tokio::process::ChildStdout) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), dr_core::Error>>,
{
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        path: program.into(),
        source,
    })?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    });
    let consumed = consume(stdout).await;
    if consumed.is_err() {
        let _ = child.start_kill();
    }
    let status = child.wait().await.map_err(|source| Error::Io {
        path: program.into(),
        source,
    })?;
    let stderr = err_task.await.unwrap_or_default();
    // The repository failed first (the program was killed for it): its
    // error is the cause, not the killed program's status.
    let consumed = match consumed {
        Err(dr_core::Error::Storage(e)) => return Err(Error::Data(e)),
        other => other,
    };
    if !status.success() {
        return Err(Error::ToolFailed {
            program: program.into(),
            status: status.to_string(),
            stderr: tail(&stderr, 4000),
        });
    }
    consumed.map_err(|e| Error::ToolFailed {
        program: program.into(),
        status: "output not stored".into(),
        stderr: e.to_string(),
    })
}

#[async_trait]
impl dr_core::BackupSource for PostgresLogical {
    fn kind(&self) -> &'static str {
        KIND_LOGICAL
    }

    async fn backup(&self, backup: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        let target = self.conn.target();
        let client = self.conn.connect().await?;
        let (server_version, num, system_identifier, size) = self.query_facts(&client).await?;
        let major = num / 10000;
        let pg_dump = tools::find("pg_dump", self.bin_dir.as_deref(), major).await?;
        let pg_dumpall = if self.globals {
            Some(tools::find("pg_dumpall", self.bin_dir.as_deref(), major).await?)
        } else {
            None
        };
        let progress = backup.repository().progress().clone();

        progress.phase("counting rows");
        let q = |what: &'static str| {
            let target = target.clone();
            move |source| Error::Query {
                what: what.into(),
                target,
                source,
            }
        };
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(q("starting the snapshot transaction"))?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(q("exporting the snapshot"))?
            .get(0);
        let row_counts = count_tables(&client, &target).await?;
        tracing::info!(tables = row_counts.len(), %snapshot, "row counts taken");
        // The catalogs read through SQL see the transaction's snapshot too.
        let database_properties = properties::read(&client, self.conn.dbname(), &target).await?;

        progress.phase("dumping database");
        let (mut cmd, _pass) = self.conn.command(&pg_dump.path)?;
        cmd.arg("--format=custom")
            .arg("--compress=0")
            .arg(format!("--snapshot={snapshot}"))
            .arg("--dbname")
            .arg(dbname_conninfo(self.conn.dbname()));
        run_streaming(cmd, "pg_dump", |mut stdout| async move {
            backup.write_artifact(DUMP_ARTIFACT, &mut stdout).await?;
            Ok(())
        })
        .await?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(q("ending the snapshot transaction"))?;

        let mut globals_warning = None;
        if let Some(pg_dumpall) = &pg_dumpall {
            progress.phase("dumping globals");
            let run =
                |no_passwords: bool| {
                    let conn = &self.conn;
                    async move {
                        let (mut cmd, pass) = conn.command(&pg_dumpall.path)?;
                        cmd.arg("--globals-only")
                            .arg("--database")
                            .arg(dbname_conninfo(conn.dbname()));
                        if no_passwords {
                            cmd.arg("--no-role-passwords");
                        }
                        // The artifact is only started once pg_dumpall produced
                        // output, so a failed first try leaves no artifact behind.
                        let out = cmd.stdin(Stdio::null()).output().await.map_err(|source| {
                            Error::Io {
                                path: pg_dumpall.path.clone(),
                                source,
                            }
                        })?;
                        drop(pass);
                        if !out.status.success() {
                            return Err(Error::ToolFailed {
                                program: "pg_dumpall".into(),
                                status: out.status.to_string(),
                                stderr: tail(&out.stderr, 4000),
                            });
                        }
                        Ok(out.stdout)
                    }
                };
            // Globals are small (roles and tablespaces): held in memory.
            let sql = match run(false).await {
                Ok(sql) => sql,
                Err(Error::ToolFailed { stderr, .. }) if stderr.contains("permission denied") => {
                    let w = "globals taken without role passwords: the backup role cannot read pg_authid".to_string();
                    tracing::warn!("{w}");
                    globals_warning = Some(w);
                    run(true).await?
                }
                Err(e) => return Err(e.into()),
            };
            backup
                .write_artifact(GLOBALS_ARTIFACT, &mut &sql[..])
                .await?;
        }

        let meta = LogicalMetadata {
            server_version,
            server_version_num: num,
            database: self.conn.dbname().to_string(),
            system_identifier,
            database_size_bytes: size,
            snapshot,
            row_counts,
            pg_dump_major: pg_dump.major,
            globals: pg_dumpall.is_some(),
            globals_warning,
            database_properties,
        };
        Ok(serde_json::to_value(meta).expect("metadata serialises"))
    }
}
