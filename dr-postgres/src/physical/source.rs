//! The physical base backup source (kind `postgres-physical`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dr_storage::{BackupWriter, WalArchive};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use crate::conn::ConnectionSettings;
use crate::error::Error;
use crate::tools::{self, tail};
use crate::wal::{Lsn, WalError};

/// The manifest kind of physical backups.
pub const KIND_PHYSICAL: &str = "postgres-physical";

/// The artifact holding the base backup tar (with `backup_manifest` inside).
pub const BASE_ARTIFACT: &str = "base.tar";

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
    pub database_sizes: std::collections::BTreeMap<String, i64>,
    /// Size of the tar stream, bytes.
    pub backup_size_bytes: u64,
    /// Major version of the pg_basebackup used.
    pub pg_basebackup_major: u32,
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
}

impl Default for PhysicalOptions {
    fn default() -> Self {
        PhysicalOptions {
            wal_source: None,
            archive_timeout: Duration::from_secs(120),
            fast_checkpoint: true,
            bin_dir: None,
        }
    }
}

/// A physical base backup of a whole cluster (PostgreSQL 15 docs §26.3.2):
/// `pg_basebackup --format=tar --wal-method=none -D -` streamed into the
/// repository, no local copy. The WAL comes from the continuous archive
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
    sizes: std::collections::BTreeMap<String, i64>,
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
        })
    }

    /// The preflight: `archive_mode` on, an `archive_command` calling
    /// `wal-push`, a single tablespace, and a forced WAL switch whose segment
    /// arrives in `archive` within the bound.
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
                 (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global'))",
                &[],
            )
            .await
            .map_err(&q)?;
        let mode: String = row.get(0);
        let command: String = row.get(1);
        let tablespaces: i64 = row.get(2);
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
        if tablespaces > 0 {
            return Err(WalError::Preflight {
                check: "tablespaces".into(),
                reason: format!(
                    "the cluster has {tablespaces} tablespace(s) besides pg_default; physical backups of several \
                     tablespaces are not supported yet"
                ),
            });
        }
        // Write a record so that the switch really switches, then wait for
        // the completed segment in the repository.
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
        self.wait_archived(archive, facts_sysid, &segment).await?;
        Ok(segment)
    }

    /// Waits, bounded by `archive_timeout`, until `segment` of `system_id`
    /// is in `archive`.
    ///
    /// # Errors
    /// [`WalError::ArchiveStalled`]; [`WalError::SystemIdMismatch`] when the
    /// archive belongs to another cluster.
    pub async fn wait_archived(
        &self,
        archive: &WalArchive,
        system_id: u64,
        segment: &str,
    ) -> Result<(), WalError> {
        let started = Instant::now();
        loop {
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

        let tool = tools::find(
            "pg_basebackup",
            self.options.bin_dir.as_deref(),
            facts.version_num / 10000,
        )
        .await?;
        let label = format!("dr {}", writer.id());
        let app = format!(
            "dr_basebackup_{}",
            writer.id().replace(['-', ':', 'T', 'Z'], "").to_lowercase()
        );
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
        .env("PGAPPNAME", &app)
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
        // The server waits for the stop segment to be archived before it
        // ends the stream (BASE_BACKUP's WAIT, the default with
        // --wal-method=none). Watch that wait and bound it.
        let watch = self.watch_archive_wait(&app);
        let mut head = HeadCapture::new(&mut stdout, 256 * 1024);
        let mut copy = Box::pin(writer.write_artifact(BASE_ARTIFACT, &mut head));
        tokio::pin!(watch);
        let info = tokio::select! {
            r = &mut copy => r?,
            stalled = &mut watch => {
                let _ = child.kill().await;
                return Err(stalled);
            }
        };
        drop(copy);
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
        let (start_lsn, timeline) = (first.start, first.timeline);
        let (stop_lsn, stop_timeline) = (last.end, last.timeline);
        let stop_segment = stop_lsn.segment_name(stop_timeline, facts.seg_size);
        // The backup is good only once the WAL up to its stop point is in
        // the repository.
        self.wait_archived(&archive, facts.system_id, &stop_segment)
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
            backup_size_bytes: info.plain_size,
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
        let mut archive = tar::Archive::new(std::io::Cursor::new(&self.head));
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

#[cfg(test)]
mod tests {
    use super::*;

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
