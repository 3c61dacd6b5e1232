//! Physical base backups and point-in-time restore.
//!
//! - [`PostgresPhysical`] (kind `postgres-physical`): preflight
//!   (archiving on and reaching the repository), every tablespace streamed
//!   into the repository as its own tar artifact by the `BASE_BACKUP`
//!   client ([`crate::basebackup`], PostgreSQL 15+; `pg_basebackup` for
//!   older servers without tablespaces), a bounded wait for the WAL the
//!   backup needs. It records [`PhysicalMetadata`]. Its errors are
//!   [`WalError`](crate::WalError)s (archiving).
//! - Point-in-time restore, plan first, then execute:
//!   - planning ([`plan_pitr`] → [`PitrPlan`]): choose the backup for a
//!     [`RecoveryTarget`], check the timeline history and the archive for
//!     gaps, place the tablespaces (original directories or a
//!     [`TablespaceMapping`]), read the WAL recovery will replay for
//!     tablespaces it creates ([`WalTablespace`]; one in a directory that
//!     exists on this host is refused, PostgreSQL 15 docs §26.3.7
//!     "Caveats"), and say out loud what the timeline choice means
//!     ([`PitrPlan::warnings`]);
//!   - restoring ([`pitr_restore`] → [`PitrReport`]): lock the target
//!     directory (one restore at a time; an interrupted restore's leftover
//!     is named as such), unpack the tars, write `recovery.signal` and the
//!     recovery settings;
//!   - the server's lifecycle: start it and wait for the recovery to end
//!     ([`RecoveryPoint`]), [`stop_server`].
//!
//!   Its error is [`PitrError`].
//! - Restorers: [`PostgresPitrRestorer`] (a restore of the given backup into
//!   a data directory) and [`PhysicalScratchRestorer`] (`dr verify
//!   --restore`), both [`dr_core::Restorer`]s.
//! - The plan step `postgres.pitr_restore` ([`PitrRestore`], [`register`]).

mod action;
mod error;
mod extract;
mod lock;
mod plan;
mod replay;
mod restore;
mod restorer;
mod server;
mod source;
mod stream;
mod target;
mod verify;

pub use crate::metadata::{
    BackupMethod, PhysicalMetadata, TablespaceInfo, BASE_ARTIFACT, KIND_PHYSICAL, MANIFEST_ARTIFACT,
};
pub use action::{
    register, PitrActionEnv, PitrRestore, PitrRestoreParams, PitrRestoreState, ReachedPoint,
    PITR_RESTORE,
};
pub use error::PitrError;
pub use plan::{plan_pitr, PitrOptions, PitrPlan, TablespaceMapping, TablespacePlacement};
pub use replay::WalTablespace;
pub use restore::{pitr_restore, PitrReport};
pub use restorer::PostgresPitrRestorer;
pub use server::{stop_server, RecoveryPoint, PORT_ATTEMPTS};
pub use source::{PhysicalOptions, PostgresPhysical};
pub use target::{format_time, parse_target_time, RecoveryTarget, TargetAction};
pub use verify::PhysicalScratchRestorer;
