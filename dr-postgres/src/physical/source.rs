//! The physical base backup source (kind `postgres-physical`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dr_storage::{BackupWriter, RecordedArtifact, WalArchive};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use crate::basebackup::{BackupEvent, BaseBackupOptions, ReplicationConnection, ReplicationError};
use crate::conn::ConnectionSettings;
use crate::error::Error;
use crate::tools::{self, tail};
use crate::wal::{Lsn, WalError, WalFileKind, WalFileName};

/// The manifest kind of physical backups.
pub const KIND_PHYSICAL: &str = "postgres-physical";

/// The artifact holding the main data directory's tar. Backups taken with
/// `pg_basebackup` hold the `backup_manifest` inside it.
pub const BASE_ARTIFACT: &str = "base.tar";

/// The artifact holding the backup manifest (PostgreSQL 15 docs §77
/// "Backup Manifest Format"), for backups taken with the replication client.
pub const MANIFEST_ARTIFACT: &str = "backup_manifest";

/// How the base backup is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackupMethod {
    /// The replication client on PostgreSQL 15 and later, `pg_basebackup`
    /// before (single tablespace only).
    #[default]
    Auto,
    /// `BASE_BACKUP` over a replication connection ([`crate::basebackup`]):
    /// every tablespace, each its own artifact. PostgreSQL 15 or later.
    Replication,
    /// `pg_basebackup --format=tar -D -`: one tar on standard output, so only
    /// clusters without tablespaces besides `pg_default`.
    PgBasebackup,
}

/// A tablespace in a physical backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// `pg_tablespace.oid`: the name of its link in `pg_tblspc`.
    pub oid: u32,
    /// `pg_tablespace.spcname`.
    pub name: String,
    /// Its directory on the source server.
    pub location: String,
    /// The artifact holding its tar (`<oid>.tar`).
    pub artifact: String,
    /// Size of the tar, bytes.
    pub size_bytes: u64,
}

/// What a physical backup records in its manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhysicalMetadata {
    /// The cluster's system identifier, decimal.
    pub system_identifier: String,
    /// `server_version`.
    pub server_version: String,
    /// `server_version_num`.
    pub server_version_num: u32,
    /// The source name of the WAL archive this backup needs.
    pub wal_source: String,
    /// `wal_segment_size`, bytes.
    pub wal_segment_size: u32,
    /// The timeline the backup started on.
    pub timeline: u32,
    /// Backup start (the checkpoint's redo location).
    pub start_lsn: Lsn,
    /// Backup end: the restore is consistent from here.
    pub stop_lsn: Lsn,
    /// The timeline the backup ended on.
    pub stop_timeline: u32,
    /// The first segment recovery needs.
    pub start_segment: String,
    /// The segment holding the stop location, archived before commit.
    pub stop_segment: String,
    /// The backup label given to the server.
    pub label: String,
    /// The backup history file the server archived
    /// (`<segment>.<offset>.backup`: start, stop, checkpoint, times).
    pub backup_history_file: String,
    /// Its text.
    pub backup_label: String,
    /// Server time when the backup started.
    pub start_time: DateTime<Utc>,
    /// Server time after the backup ended: any recovery target at or after
    /// it is reachable from this backup.
    pub stop_time: DateTime<Utc>,
    /// `txid_snapshot_xmin` after the backup ended: transactions below it
    /// finished before, so a `--target-xid` below it is not reachable.
    pub stop_xmin: u64,
    /// The databases (that accept connections), sorted.
    pub databases: Vec<String>,
    /// `pg_database_size()` of each, bytes.
    pub database_sizes: BTreeMap<String, i64>,
    /// Size of the tar streams and the manifest, bytes.
    pub backup_size_bytes: u64,
    /// Major version of the pg_basebackup used; 0 when the backup was taken
    /// by the replication client.
    #[serde(default)]
    pub pg_basebackup_major: u32,
    /// How the backup was taken (`replication` or `pg_basebackup`).
    #[serde(default = "pg_basebackup_method")]
    pub method: BackupMethod,
    /// The tablespaces besides `pg_default` and `pg_global`, each in its own
    /// artifact (empty for backups without any).
    #[serde(default)]
    pub tablespaces: Vec<TablespaceInfo>,
}

fn pg_basebackup_method() -> BackupMethod {
    BackupMethod::PgBasebackup
}

/// Options of [`PostgresPhysical`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PhysicalOptions {
    /// The WAL archive's source name (default: the backup's source name).
    pub wal_source: Option<String>,
    /// How long the forced WAL switch of the preflight, and the WAL the
    /// backup needs, may take to reach the archive.
    pub archive_timeout: Duration,
    /// Request an immediate checkpoint (`pg_basebackup -c fast`).
    pub fast_checkpoint: bool,
    /// Directory of the client programs.
    pub bin_dir: Option<PathBuf>,
    /// How the backup is taken.
    pub method: BackupMethod,
}

impl Default for PhysicalOptions {
    fn default() -> Self {
        PhysicalOptions {
            wal_source: None,
            archive_timeout: Duration::from_secs(120),
            fast_checkpoint: true,
            bin_dir: None,
            method: BackupMethod::Auto,
        }
    }
}

/// A physical base backup of a whole cluster (PostgreSQL 15 docs §26.3.2),
/// streamed into the repository with no local copy: `BASE_BACKUP` over a
/// replication connection, each tablespace's tar (`base.tar`, `<oid>.tar`)
/// and the `backup_manifest` as artifacts ([`BackupMethod::Replication`]),
/// or `pg_basebackup --format=tar --wal-method=none -D -` for servers
/// before 15 without tablespaces. The WAL comes from the continuous archive
/// (`dr wal-push`), which the preflight proves working and whose stop segment
/// the backup waits for, bounded, before it is committed.
#[derive(Debug, Clone)]
pub struct PostgresPhysical {
    conn: ConnectionSettings,
    options: PhysicalOptions,
}

impl std::fmt::Display for PostgresPhysical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL cluster {} (physical)", self.conn.server())
    }
}

struct ServerFacts {
    version: String,
    version_num: u32,
    system_id: u64,
    seg_size: u32,
    databases: Vec<String>,
    sizes: BTreeMap<String, i64>,
    /// `oid -> name` of the tablespaces besides `pg_default`/`pg_global`.
    tablespaces: BTreeMap<u32, String>,
}

fn query_err<'a>(
    what: &str,
    conn: &'a ConnectionSettings,
) -> impl Fn(tokio_postgres::Error) -> WalError + 'a {
    let what = what.to_string();
    move |source| {
        WalError::Postgres(Error::Query {
            what: what.clone(),
            target: conn.target(),
            source,
        })
    }
}

impl PostgresPhysical {
    /// A physical source for the cluster `conn` reaches (the user needs the
    /// REPLICATION attribute and `pg_read_all_settings`, or superuser).
    pub fn new(conn: ConnectionSettings, options: PhysicalOptions) -> Self {
        PostgresPhysical { conn, options }
    }

    async fn facts(&self, client: &Client) -> Result<ServerFacts, WalError> {
        let q = query_err("reading server facts", &self.conn);
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
                 (SELECT system_identifier::text FROM pg_control_system()), \
                 current_setting('wal_segment_size')::text",
                &[],
            )
            .await
            .map_err(&q)?;
        let seg: String = row.get(3);
        let seg_size = parse_size(&seg).ok_or_else(|| WalError::Preflight {
            check: "wal_segment_size".into(),
            reason: format!("cannot read {seg:?}"),
        })?;
        let dbs = client
            .query(
                "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .await
            .map_err(&q)?;
        Ok(ServerFacts {
            version: row.get(0),
            version_num: row.get::<_, i32>(1) as u32,
            system_id: row.get::<_, String>(2).parse().unwrap_or_default(),
            seg_size,
            databases: dbs.iter().map(|r| r.get::<_, String>(0)).collect(),
            sizes: dbs
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect(),
            tablespaces: tablespace_names(client, &self.conn).await?,
        })
    }

    /// The preflight: `archive_mode` on, an `archive_command` calling
    /// `wal-push`, a single tablespace when the method is `pg_basebackup`
    /// (its tar on standard output holds only the main data directory), and
    /// a forced WAL switch whose segment arrives in `archive` within the
    /// bound.
    ///
    /// # Errors
    /// [`WalError::Preflight`] naming the setting to fix;
    /// [`WalError::ArchiveStalled`]; [`WalError::SystemIdMismatch`].
    pub async fn preflight(
        &self,
        client: &Client,
        archive: &WalArchive,
    ) -> Result<String, WalError> {
        let q = query_err("preflight", &self.conn);
        let row = client
            .query_one(
                "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
                 (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')), \
                 current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(&q)?;
        let mode: String = row.get(0);
        let command: String = row.get(1);
        let tablespaces: i64 = row.get(2);
        let version_num = row.get::<_, i32>(3) as u32;
        if mode != "on" && mode != "always" {
            return Err(WalError::Preflight {
                check: "archive_mode".into(),
                reason: format!(
                    "is {mode:?}; set archive_mode = on and archive_command = 'dr wal-push --source {} %p' and \
                     restart the server",
                    archive.source()
                ),
            });
        }
        if !command.contains("wal-push") {
            return Err(WalError::Preflight {
                check: "archive_command".into(),
                reason: format!(
                    "does not call `dr wal-push` (it is {:?}); without it no WAL reaches this repository",
                    if command.is_empty() { "(empty)" } else { "set to another program" }
                ),
            });
        }
        match self.method(version_num) {
            BackupMethod::Replication if version_num < 150000 => {
                return Err(WalError::Preflight {
                    check: "server_version".into(),
                    reason: format!(
                        "the replication client needs PostgreSQL 15 or later (the server is {version_num}); \
                         use the pg_basebackup method"
                    ),
                })
            }
            BackupMethod::PgBasebackup if tablespaces > 0 => {
                return Err(WalError::Preflight {
                    check: "tablespaces".into(),
                    reason: format!(
                        "the cluster has {tablespaces} tablespace(s) besides pg_default, which pg_basebackup \
                         cannot write to standard output; use the replication method (PostgreSQL 15 or later)"
                    ),
                })
            }
            _ => {}
        }
        // Write a record so that the switch really switches, then wait for
        // the completed segment in the repository. The archiver's failure
        // count is read first: it may fail on the segment at once.
        let baseline = archiver_failures(client).await;
        let row = client
            .query_one(
                "SELECT pg_walfile_name(pg_switch_wal()) FROM (SELECT pg_logical_emit_message(false, 'dr', \
                 'preflight')) AS m",
                &[],
            )
            .await
            .map_err(&q)?;
        let segment: String = row.get(0);
        let facts_sysid = self.facts(client).await?.system_id;
        self.wait_archived(client, archive, facts_sysid, &segment, baseline)
            .await?;
        Ok(segment)
    }

    /// Waits, bounded by `archive_timeout`, until `segment` of `system_id`
    /// is in `archive`. Ends early when the server's archiver reports three
    /// failures since `baseline` (its `failed_count` read before `segment`
    /// was written) and is still failing on `segment` or a file before it
    /// (`pg_stat_archiver`; the archiver archives in order and tries three
    /// times in a row before it pauses for a minute, PostgreSQL 15
    /// `src/backend/postmaster/pgarch.c`): waiting longer would not help.
    ///
    /// # Errors
    /// [`WalError::ArchiveStalled`]; [`WalError::ArchiveFailing`];
    /// [`WalError::SystemIdMismatch`] when the archive belongs to another
    /// cluster.
    pub async fn wait_archived(
        &self,
        client: &tokio_postgres::Client,
        archive: &WalArchive,
        system_id: u64,
        segment: &str,
        baseline: i64,
    ) -> Result<(), WalError> {
        let started = Instant::now();
        loop {
            if let Some(a) = archiver_state(client).await {
                if a.failing && a.failed - baseline >= 3 && blocks(&a.last_failed_wal, segment) {
                    return Err(WalError::ArchiveFailing {
                        source_name: archive.source().to_string(),
                        segment: a.last_failed_wal,
                        awaited: segment.to_string(),
                        failures: a.failed - baseline,
                    });
                }
            }
            match archive.system_id().await {
                Ok(Some(id)) if id != system_id => {
                    return Err(WalError::SystemIdMismatch {
                        source_name: archive.source().to_string(),
                        registered: id,
                        found: system_id,
                        file: format!("the cluster at {}", self.conn.server()),
                    })
                }
                Ok(Some(id)) => match archive.find(id, segment).await {
                    Ok(found) if !found.is_empty() => return Ok(()),
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => {
                        tracing::info!(error = %e, "listing the WAL archive; retrying")
                    }
                    Err(e) => return Err(e.into()),
                },
                Ok(None) => {}
                Err(e) if e.is_retryable() => {
                    tracing::info!(error = %e, "reading the WAL archive; retrying")
                }
                Err(e) => return Err(e.into()),
            }
            if started.elapsed() >= self.options.archive_timeout {
                return Err(WalError::ArchiveStalled {
                    source_name: archive.source().to_string(),
                    segment: segment.to_string(),
                    waited: self.options.archive_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The method for a server of `version_num`.
    fn method(&self, version_num: u32) -> BackupMethod {
        match self.options.method {
            BackupMethod::Auto if version_num >= 150000 => BackupMethod::Replication,
            BackupMethod::Auto => BackupMethod::PgBasebackup,
            m => m,
        }
    }

    async fn run(&self, writer: &BackupWriter) -> Result<PhysicalMetadata, WalError> {
        let wal_source = self
            .options
            .wal_source
            .clone()
            .unwrap_or_else(|| writer.source().name.clone());
        let archive = WalArchive::new(writer.repository(), &wal_source)?;
        let client = self.conn.connect().await?;
        let facts = self.facts(&client).await?;
        let preflight_segment = self.preflight(&client, &archive).await?;
        tracing::info!(segment = %preflight_segment, "preflight: forced WAL switch archived");
        let start_time: DateTime<Utc> = Utc::now();
        let label = format!("dr {}", writer.id());
        let app = format!(
            "dr_basebackup_{}",
            writer.id().replace(['-', ':', 'T', 'Z'], "").to_lowercase()
        );
        let method = self.method(facts.version_num);
        let baseline = archiver_failures(&client).await;
        // The server waits for the stop segment to be archived before it
        // ends the stream (BASE_BACKUP's WAIT). Watch that wait and bound it.
        let watch = self.watch_archive_wait(&app);
        tokio::pin!(watch);
        let streamed = match method {
            BackupMethod::Replication => {
                let stream = self.stream_replication(writer, &label, &app);
                tokio::select! {
                    r = stream => r?,
                    stalled = &mut watch => return Err(stalled),
                }
            }
            _ => {
                let stream = self.stream_pg_basebackup(writer, &facts, &label, &app);
                tokio::select! {
                    r = stream => r?,
                    stalled = &mut watch => return Err(stalled),
                }
            }
        };
        let Streamed {
            start_lsn,
            timeline,
            stop_lsn,
            stop_timeline,
            backup_label,
            tablespaces,
            pg_basebackup_major,
        } = streamed;
        let stop_segment = stop_lsn.segment_name(stop_timeline, facts.seg_size);
        // The backup is good only once the WAL up to its stop point is in
        // the repository.
        self.wait_archived(&client, &archive, facts.system_id, &stop_segment, baseline)
            .await?;
        let history_file = format!(
            "{}.{:08X}.backup",
            start_lsn.segment_name(timeline, facts.seg_size),
            start_lsn.segment_offset(facts.seg_size)
        );
        let row = client
            .query_one(
                "SELECT now(), txid_snapshot_xmin(txid_current_snapshot())::text",
                &[],
            )
            .await
            .map_err(query_err("reading the stop time", &self.conn))?;
        let stop_time: DateTime<Utc> = row.get::<_, std::time::SystemTime>(0).into();
        let stop_xmin: u64 = row.get::<_, String>(1).parse().unwrap_or_default();
        // Names of the tablespaces sent: known before the backup, or
        // created during it.
        let mut names = facts.tablespaces.clone();
        if tablespaces.iter().any(|t| !names.contains_key(&t.0)) {
            names.extend(tablespace_names(&client, &self.conn).await?);
        }
        let tablespaces: Vec<TablespaceInfo> = tablespaces
            .into_iter()
            .map(|(oid, location, size)| TablespaceInfo {
                oid,
                name: names.get(&oid).cloned().unwrap_or_else(|| oid.to_string()),
                location,
                artifact: format!("{oid}.tar"),
                size_bytes: size,
            })
            .collect();
        Ok(PhysicalMetadata {
            system_identifier: facts.system_id.to_string(),
            server_version: facts.version,
            server_version_num: facts.version_num,
            wal_source,
            wal_segment_size: facts.seg_size,
            timeline,
            start_lsn,
            stop_lsn,
            stop_timeline,
            start_segment: start_lsn.segment_name(timeline, facts.seg_size),
            stop_segment,
            label,
            backup_history_file: history_file,
            backup_label,
            start_time,
            stop_time,
            stop_xmin,
            databases: facts.databases,
            database_sizes: facts.sizes,
            backup_size_bytes: writer.artifacts().iter().map(|a| a.plain_size).sum(),
            pg_basebackup_major,
            method: if method == BackupMethod::Replication {
                BackupMethod::Replication
            } else {
                BackupMethod::PgBasebackup
            },
            tablespaces,
        })
    }

    /// `BASE_BACKUP` over a replication connection: each archive the server
    /// sends (`base.tar`, `<oid>.tar`) and the manifest become artifacts as
    /// they arrive.
    async fn stream_replication(
        &self,
        writer: &BackupWriter,
        label: &str,
        app: &str,
    ) -> Result<Streamed, WalError> {
        let mut conn = ReplicationConnection::connect(&self.conn, app)
            .await
            .map_err(Error::from)?;
        let mut options = BaseBackupOptions::new(label);
        options.fast_checkpoint = self.options.fast_checkpoint;
        let mut current: Option<(RecordedArtifact, String)> = None;
        let result = receive_archives(&mut conn, &options, writer, &mut current).await;
        if let Some((artifact, _)) = current.take() {
            artifact.abort().await;
        }
        let streamed = result?;
        conn.close().await;
        Ok(streamed)
    }

    /// `pg_basebackup --format=tar -D -`: one tar on standard output with the
    /// manifest inside.
    async fn stream_pg_basebackup(
        &self,
        writer: &BackupWriter,
        facts: &ServerFacts,
        label: &str,
        app: &str,
    ) -> Result<Streamed, WalError> {
        let tool = tools::find(
            "pg_basebackup",
            self.options.bin_dir.as_deref(),
            facts.version_num / 10000,
        )
        .await?;
        let (mut cmd, _pass) = self.conn.command(&tool.path)?;
        cmd.args([
            "--pgdata=-",
            "--format=tar",
            "--wal-method=none",
            "--verbose",
            "--no-sync",
        ])
        .arg(format!("--label={label}"))
        .arg(format!(
            "--checkpoint={}",
            if self.options.fast_checkpoint {
                "fast"
            } else {
                "spread"
            }
        ))
        .env("PGAPPNAME", app)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| WalError::Io {
            path: tool.path.clone(),
            source,
        })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let err_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        });
        let mut head = HeadCapture::new(&mut stdout, 256 * 1024);
        writer.write_artifact(BASE_ARTIFACT, &mut head).await?;
        let status = child.wait().await.map_err(|source| WalError::Io {
            path: tool.path.clone(),
            source,
        })?;
        let backup_label = head.file("backup_label").unwrap_or_default();
        let stderr = err_task.await.unwrap_or_default();
        if !status.success() {
            return Err(WalError::Postgres(Error::ToolFailed {
                program: "pg_basebackup".into(),
                status: status.to_string(),
                stderr: tail(&stderr, 2000),
            }));
        }
        let ranges = head.wal_ranges().unwrap_or_default();
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return Err(WalError::Postgres(Error::Tool {
                program: "pg_basebackup".into(),
                reason: format!(
                    "no WAL-Ranges in the backup_manifest at the end of its output ({})",
                    tail(&stderr, 300)
                ),
            }));
        };
        Ok(Streamed {
            start_lsn: first.start,
            timeline: first.timeline,
            stop_lsn: last.end,
            stop_timeline: last.timeline,
            backup_label,
            tablespaces: Vec::new(),
            pg_basebackup_major: tool.major,
        })
    }

    /// Resolves when the backup's walsender has waited for WAL archiving
    /// longer than `archive_timeout` (wait event `BackupWaitWalArchive`).
    async fn watch_archive_wait(&self, app: &str) -> WalError {
        let mut waiting_since: Option<Instant> = None;
        let client = loop {
            match self.conn.connect().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::debug!(error = %e, "archive-wait watcher cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let waiting = client
                .query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event = \
                     'BackupWaitWalArchive'",
                    &[&app],
                )
                .await
                .map(|r| r.is_some())
                .unwrap_or(false);
            match (waiting, waiting_since) {
                (true, None) => waiting_since = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() >= self.options.archive_timeout => {
                    return WalError::ArchiveStalled {
                        source_name: self
                            .options
                            .wal_source
                            .clone()
                            .unwrap_or_else(|| "(backup source)".into()),
                        segment: "the backup's stop segment".into(),
                        waited: self.options.archive_timeout,
                    };
                }
                (false, _) => waiting_since = None,
                _ => {}
            }
        }
    }
}

/// What a base backup stream yielded.
struct Streamed {
    start_lsn: Lsn,
    timeline: u32,
    stop_lsn: Lsn,
    stop_timeline: u32,
    backup_label: String,
    /// `(oid, location, tar bytes)` of each tablespace besides the main one.
    tablespaces: Vec<(u32, String, u64)>,
    pg_basebackup_major: u32,
}

/// How much of `base.tar` is kept to read `backup_label` (its first entry).
const HEAD: usize = 256 * 1024;

/// Whether `name` is an archive name the server may send: `base.tar` or
/// `<oid>.tar`.
fn archive_oid(name: &str) -> Option<Option<u32>> {
    if name == BASE_ARTIFACT {
        return Some(None);
    }
    let oid = name.strip_suffix(".tar")?;
    (!oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| oid.parse().ok().map(Some))
        .flatten()
}

/// Runs `BASE_BACKUP` on `conn` and writes each archive into its artifact;
/// `current` holds the artifact being written, for the caller to abort on
/// error.
async fn receive_archives(
    conn: &mut ReplicationConnection,
    options: &BaseBackupOptions,
    writer: &BackupWriter,
    current: &mut Option<(RecordedArtifact, String)>,
) -> Result<Streamed, WalError> {
    use tokio::io::AsyncWriteExt;
    let server = conn.server().to_string();
    let protocol = |reason: String| {
        WalError::Postgres(Error::Replication(ReplicationError::Protocol {
            server: server.clone(),
            reason,
        }))
    };
    let mut backup = conn.base_backup(options).await.map_err(Error::from)?;
    let (start_lsn, timeline) = (backup.start_lsn(), backup.start_timeline());
    let announced: Vec<(u32, String)> = backup
        .tablespaces()
        .iter()
        .filter_map(|t| Some((t.oid?, t.location.clone().unwrap_or_default())))
        .collect();
    tracing::info!(start_lsn = %start_lsn, timeline, tablespaces = announced.len(), "base backup started");
    let mut head: Vec<u8> = Vec::new();
    let mut sent: Vec<(u32, String, u64)> = Vec::new();
    let mut base_seen = false;
    let mut manifest_seen = false;
    while let Some(event) = backup.next_event().await.map_err(Error::from)? {
        match event {
            BackupEvent::Archive { name, location } => {
                if manifest_seen {
                    return Err(protocol(format!("archive {name:?} after the manifest")));
                }
                let oid = archive_oid(&name)
                    .ok_or_else(|| protocol(format!("an archive named {name:?}")))?;
                finish_current(current, &mut sent).await?;
                match oid {
                    None => base_seen = true,
                    Some(oid) => {
                        let location = location.unwrap_or_default();
                        sent.push((oid, location, 0));
                    }
                }
                *current = Some((writer.artifact(&name)?, name));
            }
            BackupEvent::Manifest => {
                finish_current(current, &mut sent).await?;
                manifest_seen = true;
                *current = Some((
                    writer.artifact(MANIFEST_ARTIFACT)?,
                    MANIFEST_ARTIFACT.into(),
                ));
            }
            BackupEvent::Data(bytes) => {
                let Some((artifact, name)) = current.as_mut() else {
                    return Err(protocol("archive data before any archive began".into()));
                };
                if name == BASE_ARTIFACT && head.len() < HEAD {
                    let take = bytes.len().min(HEAD - head.len());
                    head.extend_from_slice(&bytes[..take]);
                }
                artifact.writer().write_all(&bytes).await.map_err(|e| {
                    dr_storage::Error::from_io(e, format!("writing artifact {name}"))
                })?;
            }
            BackupEvent::Progress(done) => tracing::debug!(bytes = done, "base backup progress"),
        }
    }
    finish_current(current, &mut sent).await?;
    let (stop_lsn, stop_timeline) = backup.finish().await.map_err(Error::from)?;
    if !base_seen || (options.manifest && !manifest_seen) {
        return Err(protocol(format!(
            "the stream ended without {}",
            if base_seen {
                "the manifest"
            } else {
                "base.tar"
            }
        )));
    }
    for (oid, location) in &announced {
        if !sent.iter().any(|(o, _, _)| o == oid) {
            return Err(protocol(format!(
                "tablespace {oid} at {location} was announced but not sent"
            )));
        }
    }
    Ok(Streamed {
        start_lsn,
        timeline,
        stop_lsn,
        stop_timeline,
        backup_label: tar_file(&head, "backup_label").unwrap_or_default(),
        tablespaces: sent,
        pg_basebackup_major: 0,
    })
}

/// Completes the artifact being written and records a tablespace tar's size.
async fn finish_current(
    current: &mut Option<(RecordedArtifact, String)>,
    sent: &mut [(u32, String, u64)],
) -> Result<(), WalError> {
    if let Some((artifact, name)) = current.take() {
        let info = artifact.finish().await?;
        if let Some(Some(oid)) = archive_oid(&name) {
            if let Some(t) = sent.iter_mut().find(|t| t.0 == oid) {
                t.2 = info.plain_size;
            }
        }
        tracing::debug!(artifact = %name, bytes = info.plain_size, "archive stored");
    }
    Ok(())
}

/// The text of file `name` if it lies within the first bytes `head` of a tar.
fn tar_file(head: &[u8], name: &str) -> Option<String> {
    let mut archive = tar::Archive::new(std::io::Cursor::new(head));
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.to_str() == Some(name) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
            return Some(text);
        }
    }
    None
}

/// `oid -> name` of the tablespaces besides `pg_default` and `pg_global`.
async fn tablespace_names(
    client: &Client,
    conn: &ConnectionSettings,
) -> Result<BTreeMap<u32, String>, WalError> {
    let rows = client
        .query(
            "SELECT oid::text, spcname::text FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')",
            &[],
        )
        .await
        .map_err(query_err("listing the tablespaces", conn))?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get::<_, String>(0).parse().ok()?, r.get(1))))
        .collect())
}

/// Keeps the first `limit` bytes of a stream as it passes, to read small
/// files (`backup_label`) at the start of the tar without a second read.
struct HeadCapture<'a, R> {
    inner: &'a mut R,
    head: Vec<u8>,
    limit: usize,
    /// The last bytes of the stream (between `TAIL` and `2 * TAIL`), where
    /// the tar's final entry `backup_manifest` ends with its WAL ranges.
    tail: Vec<u8>,
}

const TAIL: usize = 64 * 1024;

#[derive(Deserialize)]
struct WalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: Lsn,
    #[serde(rename = "End-LSN")]
    end: Lsn,
}

impl<'a, R> HeadCapture<'a, R> {
    fn new(inner: &'a mut R, limit: usize) -> Self {
        HeadCapture {
            inner,
            head: Vec::new(),
            limit,
            tail: Vec::new(),
        }
    }

    /// The `WAL-Ranges` of the `backup_manifest` at the end of the stream
    /// (PostgreSQL 15 docs §77 "Backup Manifest Format"): start and end of
    /// the WAL the backup needs, with their timelines.
    fn wal_ranges(&self) -> Option<Vec<WalRange>> {
        let text = String::from_utf8_lossy(&self.tail);
        let at = text.rfind("\"WAL-Ranges\"")?;
        let rest = &text[at..];
        let open = rest.find('[')?;
        let close = rest.find(']')?;
        serde_json::from_str(&rest[open..=close]).ok()
    }

    /// The text of file `name` if it lies within the captured head.
    fn file(&self, name: &str) -> Option<String> {
        tar_file(&self.head, name)
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for HeadCapture<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut *this.inner).poll_read(cx, buf);
        if r.is_ready() {
            let new = &buf.filled()[before..];
            if this.head.len() < this.limit {
                let take = new.len().min(this.limit - this.head.len());
                this.head.extend_from_slice(&new[..take]);
            }
            this.tail.extend_from_slice(new);
            if this.tail.len() > 2 * TAIL {
                let cut = this.tail.len() - TAIL;
                this.tail.drain(..cut);
            }
        }
        r
    }
}

/// Parses `16MB`, `1GB`, `16777216` into bytes.
fn parse_size(s: &str) -> Option<u32> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u32 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[async_trait]
impl dr_core::BackupSource for PostgresPhysical {
    fn kind(&self) -> &'static str {
        KIND_PHYSICAL
    }

    async fn backup(&self, backup: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        let started = Instant::now();
        let meta = self.run(backup).await?;
        tracing::info!(
            start_lsn = %meta.start_lsn, stop_lsn = %meta.stop_lsn, timeline = meta.timeline,
            elapsed_ms = started.elapsed().as_millis() as u64, "physical base backup complete"
        );
        Ok(serde_json::to_value(&meta).expect("metadata serialises"))
    }
}

/// What `pg_stat_archiver` says about the archiver's failures.
struct ArchiverState {
    /// `failed_count`: failures since the statistics were reset.
    failed: i64,
    /// `last_failed_wal`, empty when none.
    last_failed_wal: String,
    /// The last failure is newer than the last success: still failing.
    failing: bool,
}

async fn archiver_state(client: &tokio_postgres::Client) -> Option<ArchiverState> {
    let row = client
        .query_one(
            "SELECT failed_count, coalesce(last_failed_wal, ''), \
             last_failed_time IS NOT NULL AND (last_archived_time IS NULL OR last_failed_time > last_archived_time) \
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .ok()?;
    Some(ArchiverState {
        failed: row.get(0),
        last_failed_wal: row.get(1),
        failing: row.get(2),
    })
}

/// The archiver's failure count now (0 when it cannot be read): the baseline
/// of [`PostgresPhysical::wait_archived`].
async fn archiver_failures(client: &tokio_postgres::Client) -> i64 {
    archiver_state(client).await.map_or(0, |a| a.failed)
}

/// Whether a failure on `failing` keeps `segment` from being archived: it is
/// `segment` or a segment before it, or a non-segment file (`.history`,
/// `.backup`), which the archiver sends in turn too.
fn blocks(failing: &str, segment: &str) -> bool {
    match WalFileName::parse(failing) {
        Ok(f) if f.kind == WalFileKind::Segment => failing <= segment,
        Ok(_) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archiver_failure_blocks_the_segment_only_from_before_it() {
        let seg = "000000010000000000000005";
        assert!(blocks(seg, seg));
        assert!(blocks("000000010000000000000004", seg));
        assert!(blocks("00000002.history", seg));
        assert!(blocks("000000010000000000000002.00000028.backup", seg));
        assert!(!blocks("000000010000000000000006", seg));
        assert!(!blocks("", seg));
    }

    #[test]
    fn parses_wal_ranges_and_sizes() {
        let mut src: &[u8] = b"";
        let mut cap = HeadCapture::new(&mut src, 10);
        cap.tail = b"{ \"Path\": \"x\" } ],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\"Manifest-Checksum\": \"ab\"}\n".to_vec();
        let r = cap.wal_ranges().unwrap();
        assert_eq!(
            (r[0].timeline, r[0].start, r[0].end),
            (1, Lsn(0x200_0028), Lsn(0x200_0100))
        );
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("16777216"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
    }
}
