//! Continuous WAL archiving (PostgreSQL 15 docs §26.3): `dr wal-push %p` as
//! `archive_command`, `dr wal-fetch %f %p` as `restore_command`.
//!
//! - [`names`]: the names PostgreSQL archives ([`WalFileName`]) and [`Lsn`].
//! - [`control`]: the system identifier from a segment's page header and
//!   from `global/pg_control`.
//! - [`wal_push`] / [`wal_fetch`]: the commands, with bounded retries
//!   ([`RetryPolicy`]) and the exit-code rules ([`push_exit_code`],
//!   [`fetch_exit_code`]).
//! - [`timeline`]: timeline history files.
//! - [`retention`]: the archive as retention facts, with each cluster's
//!   segment size; [`continuity`]: gaps on the path recovery follows.
//!
//! The objects live in the repository's [`dr_storage::WalArchive`].

mod archive;
pub mod continuity;
pub mod control;
mod error;
pub mod names;
pub mod retention;
pub mod timeline;

pub use archive::{
    fetch_exit_code, push_exit_code, wal_fetch, wal_push, FetchOptions, FetchReport, PushOptions,
    PushReport, RetryPolicy, EXIT_ABORT_RECOVERY,
};
pub use control::{read_control, segment_header, ControlData, SegmentHeader};
pub use error::WalError;
pub use names::{segment_file_name, Lsn, WalFileKind, WalFileName};
pub use timeline::{History, HistoryEntry};
