//! Continuous WAL archiving (PostgreSQL 15 docs §26.3): `dr wal-push %p` as
//! `archive_command`, `dr wal-fetch %f %p` as `restore_command`.
//!
//! - [`wal_push`] / [`wal_fetch`]: the commands, with bounded retries
//!   ([`RetryPolicy`]) and the exit-code rules ([`push_exit_code`],
//!   [`fetch_exit_code`]); their error is [`WalError`].
//! - [`segment_events`]: the tablespace creations and drops in a segment,
//!   which [`wal_push`] records beside it for `dr status`.
//! - [`retention`]: the archive as retention facts, with each cluster's
//!   segment size; [`continuity`]: gaps on the path recovery follows;
//!   [`verify_backup_wal`]: a physical backup's WAL read and checked.
//! - [`names`], [`control`], [`timeline`]: PostgreSQL's formats, from
//!   [`crate::format`] (kept here under their old paths).
//!
//! The objects live in the repository's [`dr_storage::WalArchive`]. This
//! module reads physical backups' manifests through
//! [`crate::metadata::PhysicalMetadata`] and never imports
//! [`crate::physical`].

mod archive;
pub mod continuity;
mod error;
mod events;
pub mod retention;
mod verify;

pub use crate::format::{control, names, timeline};
pub use archive::{
    fetch_exit_code, push_exit_code, wal_fetch, wal_push, FetchOptions, FetchReport, PushOptions,
    PushReport, RetryPolicy, EXIT_ABORT_RECOVERY,
};
pub use control::{read_control, segment_header, ControlData, SegmentHeader};
pub use error::WalError;
pub use events::segment_events;
pub use names::{segment_file_name, Lsn, WalFileKind, WalFileName};
pub use timeline::{History, HistoryEntry};
pub use verify::{verify_backup_wal, WalVerification};
