//! `dr-core`: what every part of `dr` shares.
//!
//! - The traits: [`BackupSource`] (takes a consistent backup as named byte
//!   streams plus metadata) and [`Restorer`] (reads a backup into a target and
//!   checks it against the backup's snapshot).
//! - The jobs: [`job::backup`] (source -> repository, manifest last),
//!   [`job::restore`], [`job::verify`] (digests of every object, optionally a
//!   scratch restore and the source's own check).
//! - The error model: [`Error`] with [`ErrorKind`] for front ends and
//!   [`Error::is_retryable`] for retries; [`error_chain`] prints an error with
//!   its causes.
//! - [`dns`]: the [`dns::DnsProvider`] trait, its record model and
//!   [`dns::InMemoryDnsProvider`]; [`plan`]: recovery plans.
//! - [`serde_duration`]: durations in configuration (`"5m"`) and reports
//!   (seconds).
//! - In-memory implementations ([`InMemorySource`], [`InMemoryRestorer`]) and,
//!   with the `conformance` feature, the suites every implementation runs
//!   (`conformance::source`, `conformance::dns`).
//!
//! `dr-core` depends on `dr-storage` and on no system crate. It re-exports the
//! repository types its traits name ([`BackupWriter`], [`Manifest`],
//! [`Repository`], [`Identities`], ...), so an implementor of
//! [`BackupSource`] or [`Restorer`] needs only `dr-core`.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> dr_core::Result<()> {
//! use dr_core::{job, InMemoryRestorer, InMemorySource, Restorer};
//! use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};
//!
//! let key = Identities::generate();
//! let repo = Repository::init(
//!     &Location::parse("memory://core-doc")?,
//!     &StoreOptions::default(),
//!     InitOptions::with_recipients(key.recipients().to_strings()),
//! )
//! .await?;
//! let source = InMemorySource::new();
//! source.insert("table-a", b"1,2,3".to_vec());
//! let manifest = job::backup(&repo, &source, "demo").await?;
//!
//! let scratch = InMemoryRestorer::new();
//! let report = job::verify(&repo, &manifest, Some(&key), Some(&scratch)).await?;
//! assert!(report.ok());
//! # Ok(()) }
//! ```

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod dns;
pub mod drill;
mod error;
pub mod html;
pub mod job;
mod memory;
pub mod metrics;
#[cfg(feature = "notify")]
pub mod notify;
pub mod objectives;
pub mod plan;
pub mod prune;
pub mod retention;
pub mod schedule;
pub mod serde_duration;
pub mod setup_check;
mod source;
pub mod status;
pub mod verification;

pub use error::{error_chain, storage_error_kind, BoxError, Error, ErrorKind, Result};
pub use memory::{InMemoryRestorer, InMemorySource};
pub use source::{BackupReader, BackupSource, Check, CheckReport, RestoreReport, Restorer};

// The repository types the traits' signatures name, so that an implementor of
// `BackupSource` or `Restorer` needs only `dr-core`.
pub use dr_storage::{
    ArtifactInfo, ArtifactReader, BackupWriter, Identities, Manifest, RecordedArtifact, Repository,
    SourceRef,
};
