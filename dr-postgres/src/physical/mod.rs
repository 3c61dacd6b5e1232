//! Physical base backups and point-in-time restore.
//!
//! - [`PostgresPhysical`] (kind `postgres-physical`): preflight (archiving
//!   on and reaching the repository), every tablespace streamed into the
//!   repository as its own tar artifact by the `BASE_BACKUP` client
//!   ([`crate::basebackup`], PostgreSQL 15+; `pg_basebackup` for older
//!   servers without tablespaces), a bounded wait for the WAL the backup needs.
//! - [`plan_pitr`] / [`pitr_restore`]: choose the backup for a
//!   [`RecoveryTarget`], check the timeline history, restore (tablespaces
//!   into their original directories or a [`TablespaceMapping`]), write
//!   `recovery.signal` and the recovery settings, optionally start and wait.

mod action;
mod extract;
mod restore;
mod source;
mod target;
mod verify;

pub use action::{
    register, PitrActionEnv, PitrRestore, PitrRestoreParams, PitrRestoreState, ReachedPoint,
    PITR_RESTORE,
};
pub use restore::{
    pitr_restore, plan_pitr, stop_server, PitrOptions, PitrPlan, PitrReport, RecoveryPoint,
    TablespaceMapping, TablespacePlacement,
};
pub use source::{
    BackupMethod, PhysicalMetadata, PhysicalOptions, PostgresPhysical, TablespaceInfo,
    BASE_ARTIFACT, KIND_PHYSICAL, MANIFEST_ARTIFACT,
};
pub use target::{format_time, parse_target_time, RecoveryTarget, TargetAction};
pub use verify::PhysicalScratchRestorer;
