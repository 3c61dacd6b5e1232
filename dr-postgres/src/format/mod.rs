//! PostgreSQL's own formats that both WAL archiving ([`crate::wal`]) and
//! physical backups ([`crate::physical`]) read, with no dependency on
//! either:
//!
//! - [`names`]: WAL locations ([`Lsn`]), the names PostgreSQL archives
//!   ([`WalFileName`]) and the segment arithmetic between them
//!   (PostgreSQL 15 docs §30.6 "WAL Internals").
//! - [`control`]: a segment's first page header and `global/pg_control`
//!   (the system identifier, the latest checkpoint).
//! - [`timeline`]: timeline history files (PostgreSQL 15 docs §26.3.5).
//! - [`records`]: WAL records read from archived segments
//!   ([`RecordReader`]), with the few record types a restore must know
//!   about decoded (tablespace creation and drop, transaction ends,
//!   restore points).
//!
//! Errors are [`FormatError`]s, which [`crate::WalError`] and
//! [`crate::physical::PitrError`] take in.

pub mod control;
mod error;
pub mod names;
pub mod records;
pub mod timeline;

pub use control::{read_control, segment_header, ControlData, SegmentHeader};
pub use error::FormatError;
pub use names::{segment_file_name, Lsn, WalFileKind, WalFileName, DEFAULT_SEGMENT_SIZE};
pub use records::{Fed, RecordKind, RecordReader, WalRecord};
pub use timeline::{History, HistoryEntry};
