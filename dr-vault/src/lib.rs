//! `dr-vault`: backups of Vault and OpenBao clusters with integrated (raft)
//! storage.
//!
//! - [`VaultRaftSnapshot`] ([`dr_core::BackupSource`], kind `vault-raft`)
//!   streams `GET /v1/sys/storage/raft/snapshot` through the archive checks
//!   ([`archive`]) into the repository's codec (zstd, age); the backup is
//!   committed only when the gzip'd tar holds exactly `meta.json`,
//!   `state.bin`, `SHA256SUMS`, `SHA256SUMS.sealed` with matching sums. The
//!   raft index and term go into the manifest ([`SnapshotMetadata`]).
//! - [`VaultRestorer`] ([`dr_core::Restorer`]) posts a stored snapshot back
//!   (`snapshot-force` only with [`RestoreOptions::force`]), waits until the
//!   node is unsealed and active, or reports that it sealed itself and what to
//!   do; its check compares the cluster id recorded at backup time.
//! - [`verify_snapshot`] runs the archive checks on a stored snapshot
//!   (`dr verify ID`).
//! - [`register`] adds the `vault.restore` plan step.
//! - [`VaultConfig`]: address, namespace, TLS and auth (token, token file,
//!   AppRole, Kubernetes), from `dr.toml` and the `VAULT_*` variables.
//!
//! The HTTP client follows standbys' `307` redirects (re-sending a restore's
//! body from its start), reports a cluster without leader as
//! [`VaultError::NoLeader`], renews login tokens and logs in again when a
//! token is refused. No token, secret id, JWT or unseal key is ever logged or
//! put in an error.
//!
//! ```no_run
//! # async fn demo(repo: dr_storage::Repository) -> dr_core::Result<()> {
//! let config = dr_vault::VaultConfig::from_env()?;
//! let source = dr_vault::VaultRaftSnapshot::new(&config)?;
//! let manifest = dr_core::job::backup(&repo, &source, "vault").await?;
//! println!("raft index {}", manifest.metadata["raft_index"]);
//! # Ok(()) }
//! ```
//!
//! Tests run against real OpenBao nodes (`scripts/services/openbao.sh`), and
//! against an HTTP mock for what one node cannot show (a standby's redirect,
//! no leader, a truncated body, a token expiring mid-run).

mod action;
pub mod archive;
mod auth;
pub mod check;
mod client;
mod config;
mod error;
mod restore;
mod source;
mod verify;

pub use action::{
    register, VaultActionEnv, VaultRestoreAction, VaultRestoreParams, RESTORE_ACTION,
};
pub use archive::SnapshotFacts;
pub use client::{Health, Leader, SealStatus, VaultClient};
pub use config::{AuthConfig, VaultConfig, DEFAULT_ADDRESS, DEFAULT_K8S_JWT_FILE};
pub use error::{Result, VaultError};
pub use restore::{RestoreOptions, VaultRestorer};
pub use source::{SnapshotMetadata, VaultRaftSnapshot, KIND, SNAPSHOT_ARTIFACT};
pub use verify::verify_snapshot;
