//! Receiving a base backup into the repository: the archives of
//! `BASE_BACKUP` over a replication connection ([`crate::basebackup`]), each
//! its own artifact as it arrives, or the single tar `pg_basebackup` writes
//! on standard output, with `backup_label` and the `backup_manifest`'s WAL
//! ranges picked out of the stream as it passes (PostgreSQL 15 docs §77
//! "Backup Manifest Format").

use std::path::Path;
use std::process::Stdio;

use dr_storage::{BackupWriter, RecordedArtifact};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::basebackup::{BackupEvent, BaseBackupOptions, ReplicationConnection, ReplicationError};
use crate::conn::ConnectionSettings;
use crate::error::Error;
use crate::format::Lsn;
use crate::metadata::{BASE_ARTIFACT, MANIFEST_ARTIFACT};
use crate::tools::{self, tail};
use crate::wal::WalError;

/// How a base backup is requested: the server, and the options of
/// [`PostgresPhysical`](super::PostgresPhysical) that the stream needs.
pub(super) struct StreamRequest<'a> {
    /// The server (a user with the REPLICATION attribute).
    pub(super) conn: &'a ConnectionSettings,
    /// Request an immediate checkpoint.
    pub(super) fast_checkpoint: bool,
    /// Directory of the client programs (`pg_basebackup`).
    pub(super) bin_dir: Option<&'a Path>,
    /// The backup label given to the server.
    pub(super) label: &'a str,
    /// `application_name` of the backup's connection (watched in
    /// `pg_stat_activity`).
    pub(super) app: &'a str,
}

impl StreamRequest<'_> {
    /// `BASE_BACKUP` over a replication connection: each archive the server
    /// sends (`base.tar`, `<oid>.tar`) and the manifest become artifacts as
    /// they arrive.
    pub(super) async fn replication(&self, writer: &BackupWriter) -> Result<Streamed, WalError> {
        let (label, app) = (self.label, self.app);
        let mut conn = ReplicationConnection::connect(self.conn, app)
            .await
            .map_err(Error::from)?;
        let mut options = BaseBackupOptions::new(label);
        options.fast_checkpoint = self.fast_checkpoint;
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
    pub(super) async fn pg_basebackup(
        &self,
        writer: &BackupWriter,
        version_num: u32,
    ) -> Result<Streamed, WalError> {
        let (label, app) = (self.label, self.app);
        let tool = tools::find("pg_basebackup", self.bin_dir, version_num / 10000).await?;
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
            if self.fast_checkpoint {
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
}

/// What a base backup stream yielded.
pub(super) struct Streamed {
    pub(super) start_lsn: Lsn,
    pub(super) timeline: u32,
    pub(super) stop_lsn: Lsn,
    pub(super) stop_timeline: u32,
    pub(super) backup_label: String,
    /// `(oid, location, tar bytes)` of each tablespace besides the main one.
    pub(super) tablespaces: Vec<(u32, String, u64)>,
    pub(super) pg_basebackup_major: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wal_ranges() {
        let mut src: &[u8] = b"";
        let mut cap = HeadCapture::new(&mut src, 10);
        cap.tail = b"{ \"Path\": \"x\" } ],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\"Manifest-Checksum\": \"ab\"}\n".to_vec();
        let r = cap.wal_ranges().unwrap();
        assert_eq!(
            (r[0].timeline, r[0].start, r[0].end),
            (1, Lsn(0x200_0028), Lsn(0x200_0100))
        );
    }
}
