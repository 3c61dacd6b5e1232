//! What each kind of PostgreSQL backup records in its manifest, typed:
//! [`PhysicalMetadata`] (kind [`KIND_PHYSICAL`]) and [`LogicalMetadata`]
//! (kind [`KIND_LOGICAL`]). The sources write them with serde; front ends,
//! restorers, retention and status read them back with `from_manifest`,
//! never by JSON key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dr_storage::Manifest;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::Lsn;

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
    /// `"failed"` marks a backup that is not good (retention and WAL
    /// continuity leave it out, as `dr_core::prune::facts` does); absent
    /// for every backup the physical source commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

fn pg_basebackup_method() -> BackupMethod {
    BackupMethod::PgBasebackup
}

impl PhysicalMetadata {
    /// Reads the metadata of a physical backup's manifest.
    ///
    /// # Errors
    /// [`Error::Metadata`] when the manifest is of another kind or its
    /// metadata is not a physical backup's (a field missing or of the wrong
    /// type).
    pub fn from_manifest(m: &Manifest) -> Result<Self> {
        from_manifest(m, KIND_PHYSICAL)
    }

    /// Whether the manifest marks the backup as failed (`status`).
    pub fn is_failed(&self) -> bool {
        self.status.as_deref() == Some("failed")
    }

    /// The system identifier as a number (`None` when the recorded text is
    /// not one).
    pub fn system_id(&self) -> Option<u64> {
        self.system_identifier.parse().ok()
    }

    /// The server's major version (`server_version_num / 10000`, e.g. 15).
    pub fn server_major(&self) -> u32 {
        self.server_version_num / 10000
    }
}

/// Artifact name of the database dump.
pub const DUMP_ARTIFACT: &str = "database.pgdump";
/// Artifact name of the globals (`pg_dumpall --globals-only`).
pub const GLOBALS_ARTIFACT: &str = "globals.sql";

/// The manifest kind of logical backups.
pub const KIND_LOGICAL: &str = "postgres-logical";

/// What a logical backup records in its manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogicalMetadata {
    /// `server_version` (`15.4 (Debian ...)`).
    pub server_version: String,
    /// `server_version_num` (150004).
    pub server_version_num: u32,
    /// The database dumped.
    pub database: String,
    /// The cluster's system identifier (`pg_control_system()`), when readable.
    pub system_identifier: Option<String>,
    /// `pg_database_size()` of the database, bytes.
    pub database_size_bytes: i64,
    /// The exported snapshot the dump and the counts share.
    pub snapshot: String,
    /// Exact row counts in that snapshot, by quoted qualified table name.
    pub row_counts: BTreeMap<String, i64>,
    /// Major version of the pg_dump used.
    pub pg_dump_major: u32,
    /// Whether the globals artifact was taken.
    pub globals: bool,
    /// Set when the globals were taken without role passwords (no superuser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globals_warning: Option<String>,
    /// The database's own properties (encoding, locale, owner, privileges,
    /// settings, comment), read in the dump's snapshot. `None` for backups
    /// taken before dr recorded them: those restore with the target
    /// server's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_properties: Option<DatabaseProperties>,
}

/// What `CREATE DATABASE`, `ALTER DATABASE`, `GRANT ... ON DATABASE`,
/// `COMMENT ON DATABASE` and `ALTER ROLE ... IN DATABASE` gave a database:
/// the properties that `pg_dump` without `--create` leaves out of the dump
/// (PostgreSQL 15 docs, pg_dump: "-C ... the database's comment, settings
/// and privileges are dumped only with --create"). Read from `pg_database`,
/// `pg_shdescription` and `pg_db_role_setting`; a column the source server
/// lacks (the locale provider before PostgreSQL 15, ICU rules before 16) is
/// left at its default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
#[non_exhaustive]
pub struct DatabaseProperties {
    /// The server encoding (`pg_encoding_to_char(encoding)`: `UTF8`, `LATIN1`).
    pub encoding: String,
    /// `datcollate` (LC_COLLATE).
    pub collate: String,
    /// `datctype` (LC_CTYPE).
    pub ctype: String,
    /// The locale provider: `libc`, `icu` (PostgreSQL 15+) or `builtin`
    /// (17+), from `datlocprovider`; `libc` before 15.
    pub locale_provider: String,
    /// The provider's locale: `daticulocale` (15, 16) or `datlocale` (17+);
    /// `None` for libc.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// `daticurules` (PostgreSQL 16+), when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icu_rules: Option<String>,
    /// The owner role (`datdba`).
    pub owner: String,
    /// `datconnlimit` (-1: no limit).
    pub connection_limit: i32,
    /// `datallowconn`.
    pub allow_connections: bool,
    /// `datistemplate`.
    pub is_template: bool,
    /// `datacl` as `aclitem` texts (`=Tc/owner`, `app=c/owner`); `None`
    /// when the database has the default privileges (PUBLIC may connect
    /// and create temporary tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<String>>,
    /// `COMMENT ON DATABASE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// `ALTER DATABASE ... SET` entries as the server stores them
    /// (`work_mem=7MB`), in its order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<String>,
    /// `ALTER ROLE <role> IN DATABASE ... SET` entries, by role.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub role_settings: BTreeMap<String, Vec<String>>,
}

impl LogicalMetadata {
    /// Reads the metadata of a logical backup's manifest (its `row_counts`
    /// among them).
    ///
    /// # Errors
    /// [`Error::Metadata`] when the manifest is of another kind or its
    /// metadata is not a logical backup's.
    pub fn from_manifest(m: &Manifest) -> Result<Self> {
        from_manifest(m, KIND_LOGICAL)
    }
}

fn from_manifest<T: serde::de::DeserializeOwned>(m: &Manifest, kind: &str) -> Result<T> {
    let bad = |reason: String| Error::Metadata {
        backup_id: m.backup_id.clone(),
        kind: kind.to_string(),
        reason,
    };
    if m.source.kind != kind {
        return Err(bad(format!("the backup is of kind {:?}", m.source.kind)));
    }
    serde_json::from_value(m.metadata.clone()).map_err(|e| bad(e.to_string()))
}
