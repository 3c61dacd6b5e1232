//! The physical base backup source (kind `postgres-physical`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dr_storage::{BackupWriter, WalArchive};
use tokio_postgres::Client;

use super::stream::{StreamRequest, Streamed};
use crate::conn::ConnectionSettings;
use crate::error::Error;
use crate::format::{WalFileKind, WalFileName};
use crate::metadata::{BackupMethod, PhysicalMetadata, TablespaceInfo, KIND_PHYSICAL};
use crate::wal::WalError;

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
        let request = StreamRequest {
            conn: &self.conn,
            fast_checkpoint: self.options.fast_checkpoint,
            bin_dir: self.options.bin_dir.as_deref(),
            label: &label,
            app: &app,
        };
        let streamed = match method {
            BackupMethod::Replication => {
                let stream = request.replication(writer);
                tokio::select! {
                    r = stream => r?,
                    stalled = &mut watch => return Err(stalled),
                }
            }
            _ => {
                let stream = request.pg_basebackup(writer, facts.version_num);
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
            status: None,
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
    fn parses_sizes() {
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("16777216"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
    }
}
