//! `dr wal-push` and `dr wal-fetch`.

use std::path::PathBuf;

use clap::Args;

use super::RepoArgs;

/// `dr wal-push [--source NAME] %p` (archive_command).
#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The WAL file (`%p`), relative to the data directory.
    pub path: PathBuf,
    /// The WAL archive's source name (the physical backups' source name).
    #[arg(long, env = "DR_WAL_SOURCE")]
    pub source: String,
    /// Repository selection (only the recipients are needed, no key).
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Data directory and retries.
    #[command(flatten)]
    pub options: dr_ops::WalPushOptions,
}

/// `dr wal-fetch [--source NAME] %f %p` (restore_command).
#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// The file PostgreSQL asks for (`%f`).
    pub name: String,
    /// Where to write it (`%p`).
    pub dest: PathBuf,
    /// The WAL archive's source name.
    #[arg(long, env = "DR_WAL_SOURCE")]
    pub source: String,
    /// Repository selection and key.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Standby mode and retries.
    #[command(flatten)]
    pub options: dr_ops::WalFetchOptions,
}
