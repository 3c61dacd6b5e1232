//! PostgreSQL for `dr`.
//!
//! - [`ConnectionSettings`]: a DSN or the libpq environment (`PGHOST`,
//!   `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `.pgpass`); passwords
//!   never reach a command line or a log.
//! - Logical backups ([`PostgresLogical`], kind `postgres-logical`): `pg_dump`
//!   custom format streamed into the repository, the cluster's globals, and
//!   exact per-table row counts from the dump's own snapshot.
//! - [`PostgresLogicalRestorer`]: `pg_restore` into a database under a
//!   temporary name, renamed only on success; its check compares every
//!   table's row count with the manifest.
//! - [`PostgresSourceConfig`]: the `dr.toml` section of a PostgreSQL source.
//! - [`metadata`]: what each kind of backup records in its manifest, typed
//!   ([`PhysicalMetadata`], [`LogicalMetadata`], each with `from_manifest`).
//! - [`mod@format`]: PostgreSQL's formats that WAL archiving and physical
//!   backups both read (LSNs, WAL file names, `pg_control`, timeline
//!   history files).
//! - [`wal`]: continuous WAL archiving, `wal-push` / `wal-fetch`
//!   ([`wal_push`], [`wal_fetch`]) with PostgreSQL's exit-code rules.
//! - [`basebackup`]: a `BASE_BACKUP` client over a physical replication
//!   connection (every tablespace, no local copy).
//! - [`physical`]: physical base backups ([`PostgresPhysical`], kind
//!   `postgres-physical`) and point-in-time restore: [`plan_pitr`] then
//!   [`pitr_restore`] (choosing the backup by target), or
//!   [`PostgresPitrRestorer`] for a given backup; [`PhysicalScratchRestorer`]
//!   for `dr verify --restore`.
//! - With the `test-cluster` feature, [`testing::TestCluster`] makes
//!   throwaway clusters with `initdb`/`pg_ctl`.

pub mod basebackup;
mod config;
mod conn;
mod error;
pub mod format;
mod host;
pub mod logical;
pub mod metadata;
pub mod physical;
pub mod plan;
#[cfg(feature = "test-cluster")]
pub mod testing;
mod tools;
pub mod wal;

pub use config::PostgresSourceConfig;
pub use conn::{ConnectionSettings, PassFile};
pub use error::{Error, ReplicationError, Result};
pub use logical::{
    LogicalMetadata, LogicalRestoreOptions, PostgresLogical, PostgresLogicalRestorer, KIND_LOGICAL,
};
pub use metadata::PhysicalMetadata;
pub use physical::{
    pitr_restore, plan_pitr, PhysicalScratchRestorer, PitrError, PitrOptions, PostgresPhysical,
    PostgresPitrRestorer, RecoveryTarget, KIND_PHYSICAL,
};
pub use tools::{find as find_tool, Tool};
pub use wal::{wal_fetch, wal_push, WalError};
