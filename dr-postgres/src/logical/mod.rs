//! Logical backups: `pg_dump` custom format of one database plus the cluster's
//! globals, with exact per-table row counts and the database's own
//! properties ([`DatabaseProperties`]: encoding, locale, owner, privileges,
//! settings, comment) from the same snapshot.

pub mod action;
mod counts;
mod properties;
mod restore;
mod source;

pub use crate::metadata::{
    DatabaseProperties, LogicalMetadata, DUMP_ARTIFACT, GLOBALS_ARTIFACT, KIND_LOGICAL,
};
pub use counts::{count_tables, quote_ident, split_qualified};
pub use restore::{LogicalRestoreOptions, PostgresLogicalRestorer};
pub use source::PostgresLogical;
