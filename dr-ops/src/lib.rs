//! `dr-ops`: the operations of `dr`, once, for every front end.
//!
//! `dr` (the command line), `dr-agent` (the scheduler) and any Rust program
//! that embeds dr call the same functions here, so a backup, a restore, a
//! verification, a prune or a status read behaves the same whoever asks for
//! it. The front ends parse arguments, render, map [`Error::kind`] to exit
//! codes and handle signals; nothing else.
//!
//! - [`DrConfig`]: the `dr.toml` model (repository, sources, objectives,
//!   DNS, plans, agent), with cron expressions and the time zone parsed at
//!   load and unknown keys refused.
//! - [`registry`]: the source-kind registry (a `[sources.NAME]` kind to its
//!   [`dr_core::BackupSource`], a backup's kind to its
//!   [`dr_core::Restorer`] and scratch restorer) and the plan-action
//!   registry.
//! - [`Ops`]: one method per operation: [`Ops::backup`], [`Ops::restore`],
//!   [`Ops::verify`] (recording the outcome for `dr status`),
//!   [`Ops::plan_prune`] / [`Ops::prune`] (with the WAL archive's facts),
//!   [`Ops::status`], [`Ops::wal_push`] / [`Ops::wal_fetch`], plans and
//!   drills ([`plans`]).
//! - [`agent::Agent`]: `dr-agent`'s scheduler, whose jobs are the same
//!   functions.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> dr_ops::Result<()> {
//! use dr_ops::{DrConfig, Ops, RepositoryArgs};
//!
//! let key = dr_storage::Identities::generate();
//! let config = DrConfig::parse(&format!(
//!     "[repository]\nurl = 'memory://ops-doc'\nrecipients = ['{}']\n",
//!     key.recipients().to_strings()[0]
//! ))?;
//! let ops = Ops::new(config, RepositoryArgs::default());
//! ops.init_repository(&[]).await?;
//! let status = ops.status().await?;
//! assert!(status.sources.is_empty());
//! # Ok(()) }
//! ```
//!
//! Features: `clap` derives `clap::Args` on the option structs
//! ([`RepositoryArgs`], [`RestoreOptions`], [`VerifyOptions`],
//! [`PruneOptions`], ...) so a command line flattens them; `notify` (on by
//! default) the agent's webhook and SMTP notifications.

pub mod agent;
pub mod backup;
pub mod check;
pub mod config;
mod error;
mod kind;
mod ops;
mod options;
pub mod plans;
pub mod prune;
pub mod registry;
pub mod restore;
pub mod status;
pub mod status_page;
pub mod verify;
pub mod wal;

pub use backup::{backup_source, BackupTarget};
pub use check::CheckOptions;
pub use config::{
    AgentConfig, DrConfig, PlanSettings, RepositoryArgs, Schedules, SourceConfig, SourceEntry,
};
pub use error::{BoxError, Error, Result, ResultExt};
pub use kind::SourceKind;
pub use ops::{generate_key, Ops};
pub use options::{ExistingMode, PitrArgs, RecoveryTargetArg, RestoreOptions, TargetActionArg};
pub use prune::{PruneOptions, PruneOutcome};
pub use restore::RestoreOutcome;
pub use status::StatusReport;
pub use verify::{verify_backup, verify_latest, ArchiveCheck, VerifyOptions, VerifyOutcome};
pub use wal::{fetch_args, WalFetchOptions, WalPushOptions, WalRetryOptions};
