//! PostgreSQL for `dr`.
//!
//! - [`ConnectionSettings`]: a DSN or the libpq environment (`PGHOST`,
//!   `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `.pgpass`); passwords
//!   never reach a command line or a log.
//! - Logical backups ([`PostgresLogical`], kind `postgres-logical`): `pg_dump`
//!   custom format streamed into the repository, the cluster's globals, and
//!   exact per-table row counts and the database's own properties
//!   ([`DatabaseProperties`]: encoding, locale, owner, privileges, settings,
//!   comment) from the dump's own snapshot.
//! - [`PostgresLogicalRestorer`]: `pg_restore` into a database under a
//!   temporary name created with the recorded encoding and locale, given
//!   the recorded properties, renamed only on success; its check compares
//!   every table's row count and every property with the manifest.
//! - [`PostgresSourceConfig`]: the `dr.toml` section of a PostgreSQL source.
//! - [`metadata`]: what each kind of backup records in its manifest, typed
//!   ([`PhysicalMetadata`], [`LogicalMetadata`], each with `from_manifest`).
//! - [`wal`]: continuous WAL archiving, `wal-push` / `wal-fetch`
//!   ([`wal_push`], [`wal_fetch`]) with PostgreSQL's exit-code rules
//!   ([`push_exit_code`], [`fetch_exit_code`]), the archive as retention
//!   facts ([`all_retention_facts`]) and its continuity ([`wal_status`]).
//! - [`basebackup`]: a `BASE_BACKUP` client over a physical replication
//!   connection (every tablespace, no local copy).
//! - [`physical`]: physical base backups ([`PostgresPhysical`], kind
//!   `postgres-physical`) and point-in-time restore: [`plan_pitr`] then
//!   [`pitr_restore`] (choosing the backup by target), or
//!   [`PostgresPitrRestorer`] for a given backup; [`PhysicalScratchRestorer`]
//!   for `dr verify --restore`.
//! - [`mod@format`]: PostgreSQL's formats both sides read (LSNs, WAL file names,
//!   `pg_control`, timeline history files).
//! - [`plan`]: the plan steps `postgres.revoke_writes`,
//!   `postgres.grant_writes`, `postgres.sql_check`
//!   ([`register_plan_actions`]); `postgres.restore` / `postgres.verify`
//!   ([`register_logical_actions`]) and `postgres.pitr_restore`
//!   ([`register_pitr_actions`]).
//! - With the `test-cluster` feature, [`testing::TestCluster`] makes
//!   throwaway clusters with `initdb`/`pg_ctl`.
//!
//! Errors: [`Error`] (connections, queries, client programs),
//! [`WalError`] (archiving), [`PitrError`] (point-in-time restore),
//! [`FormatError`], [`PlanError`]; each converts into [`dr_core::Error`].
//!
//! Modules import downwards only: `error` and `format` at the bottom;
//! `conn`, `tools`, `host` and `metadata` on them; `basebackup` and `wal`
//! above those; `plan`, `logical` and `physical` at the top. No module
//! imports one that imports it back.

pub mod basebackup;
pub mod check;
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
pub use dr_core::retention::WalFacts;
pub use dr_core::status::WalStatus;
pub use error::{Error, ReplicationError, Result};
pub use format::{FormatError, Lsn};
pub use logical::action::{register as register_logical_actions, LogicalActionEnv};
pub use logical::{LogicalRestoreOptions, PostgresLogical, PostgresLogicalRestorer};
pub use metadata::{
    BackupMethod, DatabaseProperties, LogicalMetadata, PhysicalMetadata, TablespaceInfo,
    KIND_LOGICAL, KIND_PHYSICAL,
};
pub use physical::{
    format_time, parse_target_time, pitr_restore, plan_pitr, register as register_pitr_actions,
    stop_server, PhysicalOptions, PhysicalScratchRestorer, PitrActionEnv, PitrError, PitrOptions,
    PitrPlan, PitrReport, PostgresPhysical, PostgresPitrRestorer, RecoveryPoint, RecoveryTarget,
    TablespaceMapping, TargetAction, WalTablespace,
};
pub use plan::{register as register_plan_actions, PlanError};
pub use tools::{find as find_tool, Tool};
pub use wal::continuity::wal_status;
pub use wal::retention::all_retention_facts;
pub use wal::{
    fetch_exit_code, push_exit_code, wal_fetch, wal_push, FetchOptions, FetchReport, PushOptions,
    PushReport, RetryPolicy, WalError, EXIT_ABORT_RECOVERY,
};
