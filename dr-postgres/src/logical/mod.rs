//! Logical backups: `pg_dump` custom format of one database plus the cluster's
//! globals, with exact per-table row counts from the same snapshot.

pub mod action;
mod counts;
mod restore;
mod source;

pub use counts::{count_tables, quote_ident, split_qualified};
pub use restore::{LogicalRestoreOptions, PostgresLogicalRestorer};
pub use source::{LogicalMetadata, PostgresLogical, KIND_LOGICAL};

/// Artifact name of the database dump.
pub const DUMP_ARTIFACT: &str = "database.pgdump";
/// Artifact name of the globals (`pg_dumpall --globals-only`).
pub const GLOBALS_ARTIFACT: &str = "globals.sql";
