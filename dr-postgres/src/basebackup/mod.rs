//! A `BASE_BACKUP` client over a physical replication connection: every
//! tablespace of a cluster as its own tar stream, plus the backup manifest,
//! handed to the caller chunk by chunk (no local copy).
//!
//! Protocol: PostgreSQL 15 docs §55.4 "Streaming Replication Protocol",
//! `BASE_BACKUP ( option [, ...] )`. The server answers with
//! 1. a result set with the start position and timeline;
//! 2. a result set listing the tablespaces (`spcoid`, `spclocation`,
//!    `size` in kB, NULL unless `PROGRESS`), the main data directory last
//!    with a NULL oid;
//! 3. one `CopyOutResponse` whose `CopyData` messages begin with a type byte
//!    (PostgreSQL 15 and later): `n` a new archive (its name and the
//!    tablespace location, both NUL-terminated), `d` data of the current
//!    archive (or of the manifest), `p` progress (int64 bytes sent), `m` the
//!    manifest follows;
//! 4. a result set with the end position and timeline.
//!
//! The client side of the same exchange is `ReceiveArchiveStreamChunk` in
//! PostgreSQL's `src/bin/pg_basebackup/pg_basebackup.c`. Servers before 15
//! send one `CopyOutResponse` per tablespace with untyped data; this client
//! refuses them ([`ReplicationError::Unsupported`]).
//!
//! ```no_run
//! # async fn f(settings: dr_postgres::ConnectionSettings) -> Result<(), Box<dyn std::error::Error>> {
//! use dr_postgres::basebackup::{BackupEvent, BaseBackupOptions, ReplicationConnection};
//! let mut conn = ReplicationConnection::connect(&settings, "my_backup").await?;
//! let mut backup = conn.base_backup(&BaseBackupOptions::new("nightly")).await?;
//! while let Some(event) = backup.next_event().await? {
//!     match event {
//!         BackupEvent::Archive { name, .. } => println!("{name}"),
//!         BackupEvent::Data(bytes) => { /* write bytes */ }
//!         BackupEvent::Manifest | BackupEvent::Progress(_) => {}
//!     }
//! }
//! let (stop_lsn, stop_timeline) = backup.finish().await?;
//! # Ok(()) }
//! ```

mod connection;

use bytes::Bytes;
use postgres_protocol::message::backend::Message;

pub use crate::error::ReplicationError;
pub use connection::ReplicationConnection;

use crate::format::Lsn;

/// Options of `BASE_BACKUP`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BaseBackupOptions {
    /// `LABEL`: written into `backup_label` and the backup history file.
    pub label: String,
    /// `CHECKPOINT 'fast'` (else `'spread'`).
    pub fast_checkpoint: bool,
    /// `MANIFEST 'yes'`: send the backup manifest after the archives.
    pub manifest: bool,
    /// `TABLESPACE_MAP`: a `tablespace_map` file in the main archive instead
    /// of the `pg_tblspc` symbolic links.
    pub tablespace_map: bool,
    /// `WAIT`: the server waits until the WAL the backup needs is archived
    /// before it ends (the default, needed when the WAL comes from the archive).
    pub wait_for_wal_archive: bool,
    /// `PROGRESS`: the server first sums the tablespaces' sizes (an extra
    /// pass over the directory trees).
    pub progress: bool,
    /// `MAX_RATE` in kB/s (32..=1048576).
    pub max_rate_kbps: Option<u32>,
}

impl BaseBackupOptions {
    /// The defaults (fast checkpoint, manifest, tablespace map, wait) with
    /// `label`.
    pub fn new(label: impl Into<String>) -> Self {
        BaseBackupOptions {
            label: label.into(),
            fast_checkpoint: true,
            manifest: true,
            tablespace_map: true,
            wait_for_wal_archive: true,
            progress: false,
            max_rate_kbps: None,
        }
    }

    /// The command text.
    fn command(&self) -> String {
        let mut o = vec![
            format!("LABEL '{}'", self.label.replace('\'', "''")),
            format!(
                "CHECKPOINT '{}'",
                if self.fast_checkpoint {
                    "fast"
                } else {
                    "spread"
                }
            ),
            "WAL false".to_string(),
            format!("WAIT {}", self.wait_for_wal_archive),
            format!("MANIFEST '{}'", if self.manifest { "yes" } else { "no" }),
            format!("TABLESPACE_MAP {}", self.tablespace_map),
            format!("PROGRESS {}", self.progress),
        ];
        if let Some(r) = self.max_rate_kbps {
            o.push(format!("MAX_RATE {r}"));
        }
        format!("BASE_BACKUP ( {} )", o.join(", "))
    }
}

/// A tablespace the server will send, from the tablespace result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceHeader {
    /// The tablespace's oid; `None` for the main data directory.
    pub oid: Option<u32>,
    /// Its directory on the server; `None` for the main data directory.
    pub location: Option<String>,
    /// Its size in kB, when `PROGRESS` was asked for.
    pub size_kb: Option<i64>,
}

/// What arrives during the copy phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    /// A new archive begins: `base.tar` for the main data directory,
    /// `<oid>.tar` for a tablespace (whose `location` is then set).
    Archive {
        /// The archive's name.
        name: String,
        /// The tablespace's directory on the server.
        location: Option<String>,
    },
    /// Bytes of the current archive, or of the manifest after
    /// [`BackupEvent::Manifest`].
    Data(Bytes),
    /// The backup manifest follows.
    Manifest,
    /// Bytes sent so far, with `PROGRESS`.
    Progress(u64),
}

/// A running `BASE_BACKUP`: read its events with
/// [`next_event`](BaseBackup::next_event) until `None`, then
/// [`finish`](BaseBackup::finish).
#[derive(Debug)]
pub struct BaseBackup<'a> {
    conn: &'a mut ReplicationConnection,
    start_lsn: Lsn,
    start_timeline: u32,
    tablespaces: Vec<TablespaceHeader>,
    copy_done: bool,
}

const WHAT: &str = "BASE_BACKUP";

impl ReplicationConnection {
    /// Starts `BASE_BACKUP` and reads the start position and the tablespace
    /// list.
    ///
    /// # Errors
    /// [`ReplicationError::Unsupported`] before PostgreSQL 15;
    /// [`ReplicationError::Server`] when the server refuses (e.g. another
    /// backup with the same label is not the issue, but `max_wal_senders`
    /// exhausted or a missing REPLICATION attribute is);
    /// [`ReplicationError::Protocol`] for an unexpected answer.
    pub async fn base_backup(
        &mut self,
        options: &BaseBackupOptions,
    ) -> Result<BaseBackup<'_>, ReplicationError> {
        let major = self.server_major().unwrap_or(0);
        if major < 15 {
            return Err(ReplicationError::Unsupported {
                server: self.server().to_string(),
                version: self
                    .parameter("server_version")
                    .unwrap_or("(unknown)")
                    .to_string(),
                reason: "the BASE_BACKUP client needs PostgreSQL 15 or later (one archive stream \
                         for all tablespaces)"
                    .into(),
            });
        }
        let command = options.command();
        tracing::debug!(command = %command, "starting base backup");
        self.send_query(&command).await?;
        let start = self.result_set().await?;
        let (start_lsn, start_timeline) = self.position(&start, "start position")?;
        let rows = self.result_set().await?;
        let mut tablespaces = Vec::with_capacity(rows.len());
        for r in rows {
            let get = |i: usize| r.get(i).cloned().flatten();
            let oid = match get(0) {
                Some(s) => Some(s.parse::<u32>().map_err(|_| ReplicationError::Protocol {
                    server: self.server().to_string(),
                    reason: format!("tablespace oid {s:?} is not a number"),
                })?),
                None => None,
            };
            tablespaces.push(TablespaceHeader {
                oid,
                location: get(1),
                size_kb: get(2).and_then(|s| s.parse().ok()),
            });
        }
        match self.next().await? {
            Message::CopyOutResponse(_) => {}
            Message::ErrorResponse(body) => return Err(self.command_error(WHAT, &body)),
            _ => return Err(self.unexpected("a CopyOutResponse")),
        }
        Ok(BaseBackup {
            conn: self,
            start_lsn,
            start_timeline,
            tablespaces,
            copy_done: false,
        })
    }

    fn unexpected(&self, wanted: &str) -> ReplicationError {
        ReplicationError::Protocol {
            server: self.server().to_string(),
            reason: format!("expected {wanted}"),
        }
    }

    /// Reads one result set (`RowDescription`, `DataRow`s,
    /// `CommandComplete`) as text values.
    async fn result_set(&mut self) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        let mut rows = Vec::new();
        let mut described = false;
        loop {
            match self.next().await? {
                Message::RowDescription(_) => described = true,
                Message::DataRow(body) if described => {
                    rows.push(connection::row_values(&body).map_err(|e| {
                        ReplicationError::Protocol {
                            server: self.server().to_string(),
                            reason: e.to_string(),
                        }
                    })?)
                }
                Message::CommandComplete(_) if described => return Ok(rows),
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => return Err(self.command_error(WHAT, &body)),
                _ => return Err(self.unexpected("a result set")),
            }
        }
    }

    /// `(lsn, timeline)` from a one-row result set.
    fn position(
        &self,
        rows: &[Vec<Option<String>>],
        what: &str,
    ) -> Result<(Lsn, u32), ReplicationError> {
        let bad = || ReplicationError::Protocol {
            server: self.server().to_string(),
            reason: format!("cannot read the {what} from {rows:?}"),
        };
        let row = rows.first().ok_or_else(bad)?;
        let lsn: Lsn = row
            .first()
            .cloned()
            .flatten()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let tli: u32 = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok((lsn, tli))
    }
}

/// Reads a NUL-terminated string at `*at`.
fn cstr(data: &[u8], at: &mut usize) -> Option<String> {
    let rest = data.get(*at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
    *at += end + 1;
    Some(s)
}

/// Decodes one typed `CopyData` payload of the PostgreSQL 15 archive stream.
fn decode_chunk(data: Bytes) -> Result<BackupEvent, String> {
    match data.first() {
        Some(b'n') => {
            let mut at = 1;
            let name = cstr(&data, &mut at).ok_or("a truncated new-archive message")?;
            let location = cstr(&data, &mut at).ok_or("a truncated new-archive message")?;
            if at != data.len() {
                return Err("trailing bytes after a new-archive message".into());
            }
            Ok(BackupEvent::Archive {
                name,
                location: (!location.is_empty()).then_some(location),
            })
        }
        Some(b'd') => Ok(BackupEvent::Data(data.slice(1..))),
        Some(b'p') => {
            let b: [u8; 8] = data
                .get(1..9)
                .and_then(|s| s.try_into().ok())
                .filter(|_| data.len() == 9)
                .ok_or("a progress message that is not 8 bytes")?;
            Ok(BackupEvent::Progress(u64::from_be_bytes(b)))
        }
        Some(b'm') if data.len() == 1 => Ok(BackupEvent::Manifest),
        Some(t) => Err(format!(
            "an unknown archive stream message type {:?}",
            *t as char
        )),
        None => Err("an empty CopyData message".into()),
    }
}

impl BaseBackup<'_> {
    /// The backup's start position (the checkpoint's redo location).
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The timeline at the start.
    pub fn start_timeline(&self) -> u32 {
        self.start_timeline
    }

    /// The tablespaces the server sends, the main data directory last.
    pub fn tablespaces(&self) -> &[TablespaceHeader] {
        &self.tablespaces
    }

    /// The next event of the copy phase; `None` once the server has sent
    /// everything (then call [`finish`](BaseBackup::finish)).
    ///
    /// # Errors
    /// [`ReplicationError::Server`] when the backup fails on the server
    /// (e.g. a file that cannot be read); [`ReplicationError::Protocol`];
    /// [`ReplicationError::Io`].
    pub async fn next_event(&mut self) -> Result<Option<BackupEvent>, ReplicationError> {
        if self.copy_done {
            return Ok(None);
        }
        loop {
            match self.conn.next().await? {
                Message::CopyData(body) => {
                    return decode_chunk(body.into_bytes()).map(Some).map_err(|reason| {
                        ReplicationError::Protocol {
                            server: self.conn.server().to_string(),
                            reason,
                        }
                    })
                }
                Message::CopyDone => {
                    self.copy_done = true;
                    return Ok(None);
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => return Err(self.conn.command_error(WHAT, &body)),
                _ => return Err(self.conn.unexpected("CopyData or CopyDone")),
            }
        }
    }

    /// Reads the end position and waits until the server is ready again.
    ///
    /// # Errors
    /// As [`next_event`](BaseBackup::next_event); a protocol error when
    /// called before the copy phase ended.
    pub async fn finish(self) -> Result<(Lsn, u32), ReplicationError> {
        if !self.copy_done {
            return Err(self
                .conn
                .unexpected("the end of the copy phase before finish()"));
        }
        let end = self.conn.result_set().await?;
        let pos = self.conn.position(&end, "end position")?;
        loop {
            match self.conn.next().await? {
                Message::ReadyForQuery(_) => return Ok(pos),
                Message::CommandComplete(_)
                | Message::NoticeResponse(_)
                | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => return Err(self.conn.command_error(WHAT, &body)),
                _ => return Err(self.conn.unexpected("ReadyForQuery")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_archive_stream_messages() {
        let e = decode_chunk(Bytes::from_static(b"n16384.tar\0/srv/ts1\0")).unwrap();
        assert_eq!(
            e,
            BackupEvent::Archive {
                name: "16384.tar".into(),
                location: Some("/srv/ts1".into())
            }
        );
        let e = decode_chunk(Bytes::from_static(b"nbase.tar\0\0")).unwrap();
        assert_eq!(
            e,
            BackupEvent::Archive {
                name: "base.tar".into(),
                location: None
            }
        );
        assert_eq!(
            decode_chunk(Bytes::from_static(b"dabc")).unwrap(),
            BackupEvent::Data(Bytes::from_static(b"abc"))
        );
        let mut p = vec![b'p'];
        p.extend_from_slice(&4096u64.to_be_bytes());
        assert_eq!(
            decode_chunk(Bytes::from(p)).unwrap(),
            BackupEvent::Progress(4096)
        );
        assert_eq!(
            decode_chunk(Bytes::from_static(b"m")).unwrap(),
            BackupEvent::Manifest
        );
        for bad in [&b"nbase.tar"[..], b"p\0\0", b"x", b"", b"nbase.tar\0\0junk"] {
            assert!(
                decode_chunk(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn command_quotes_the_label() {
        let mut o = BaseBackupOptions::new("it's");
        o.max_rate_kbps = Some(1024);
        let c = o.command();
        assert!(
            c.starts_with("BASE_BACKUP ( LABEL 'it''s', CHECKPOINT 'fast'"),
            "{c}"
        );
        assert!(c.contains("MANIFEST 'yes'") && c.contains("TABLESPACE_MAP true"));
        assert!(
            c.contains("WAL false") && c.ends_with("MAX_RATE 1024 )"),
            "{c}"
        );
    }
}
