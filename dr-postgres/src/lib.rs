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
//! - With the `test-cluster` feature, [`testing::TestCluster`] makes
//!   throwaway clusters with `initdb`/`pg_ctl`.

mod config;
mod conn;
mod error;
pub mod logical;
#[cfg(feature = "test-cluster")]
pub mod testing;
mod tools;

pub use config::PostgresSourceConfig;
pub use conn::{ConnectionSettings, PassFile};
pub use error::{Error, Result};
pub use logical::{LogicalMetadata, LogicalRestoreOptions, PostgresLogical, PostgresLogicalRestorer, KIND_LOGICAL};
pub use tools::{find as find_tool, Tool};
