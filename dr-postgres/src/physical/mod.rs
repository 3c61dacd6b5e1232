//! Physical base backups and point-in-time restore.
//!
//! - [`PostgresPhysical`] (kind `postgres-physical`): preflight (archiving
//!   on and reaching the repository), `pg_basebackup` tar streamed into the
//!   repository, a bounded wait for the WAL the backup needs.
//! - [`plan_pitr`] / [`pitr_restore`]: choose the backup for a
//!   [`RecoveryTarget`], check the timeline history, restore, write
//!   `recovery.signal` and the recovery settings, optionally start and wait.

mod action;
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
