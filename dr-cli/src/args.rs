//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// dr: backups you have proven you can restore.
#[derive(Debug, Parser)]
#[command(name = "dr", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default ./dr.toml when present).
    #[arg(long, global = true, env = "DR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug). `DR_LOG` takes a
    /// tracing filter instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bar.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Repository selection and keys, shared by the commands that need them.
#[derive(Debug, Args, Clone, Default)]
pub struct RepoArgs {
    /// Repository: a path, file://, s3://bucket/prefix, gs://, az:// (default ./dr-repo).
    #[arg(long, env = "DR_REPO", value_name = "URL")]
    pub repo: Option<String>,
    /// Age identity file for reading backup data.
    #[arg(long, env = "DR_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// File holding the repository passphrase (or set DR_PASSPHRASE).
    #[arg(long, env = "DR_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl RepoArgs {
    /// The `[repository]` settings with these flags (and their `DR_*`
    /// variables) applied over them: flags > environment > file.
    pub fn apply(&self, file: &dr_storage::RepositorySettings) -> dr_storage::RepositorySettings {
        let mut s = file.clone();
        if let Some(r) = &self.repo {
            s.url = Some(r.clone());
        }
        if let Some(i) = &self.identity {
            s.identity_file = Some(i.clone());
        }
        if let Some(p) = &self.passphrase_file {
            s.passphrase_file = Some(p.clone());
        }
        s
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Age keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Repository administration.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Back up a source (a configured NAME, or --postgres DSN); without either,
    /// every configured source.
    Backup(BackupArgs),
    /// List backups.
    List(ListArgs),
    /// Show one backup's manifest.
    Show(ShowArgs),
    /// Verify a backup: every object's size and SHA-256; with a key, decrypt
    /// everything; with --restore, restore into a scratch target and compare.
    Verify(VerifyArgs),
    /// Restore a backup.
    Restore(Box<RestoreArgs>),
    /// Apply the retention policies of dr.toml: delete expired backups, the
    /// WAL no kept backup needs, and orphaned objects.
    Prune(PruneArgs),
    /// Per source: the newest recovery point against the RPO; exit 1 when an
    /// objective is violated.
    Status(StatusArgs),
    /// archive_command: store one WAL file (`dr wal-push --source NAME %p`).
    WalPush(crate::wal::WalPushArgs),
    /// restore_command: fetch one WAL file (`dr wal-fetch --source NAME %f %p`).
    WalFetch(crate::wal::WalFetchArgs),
    /// Recovery plans: check, run, resume, list runs.
    #[command(subcommand)]
    Plan(crate::plan_cmd::PlanCommand),
    /// Run a plan as a drill against scratch targets (`dr drill PLAN`), or
    /// list stored drill reports (`dr drill list`).
    Drill(crate::plan_cmd::DrillArgs),
    /// DNS records: get, set, failover, rollback.
    #[command(subcommand)]
    Dns(crate::dns_cmd::DnsCommand),
}

/// `dr prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print the plan (what is kept by which rule, what is deleted) and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Break a `prune` lock whose holder let it expire.
    #[arg(long)]
    pub break_stale_lock: bool,
    /// Wait this long for another prune to finish (e.g. `5m`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub lock_wait: std::time::Duration,
    /// Objects under no manifest are removed only when older than this.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub orphan_grace: std::time::Duration,
}

/// `dr status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also write the Prometheus text format to FILE (`-` for stdout), for a
    /// node_exporter textfile collector. Written atomically.
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
}

/// `dr key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new age identity (mode 0600) and print its recipient.
    Generate {
        /// Where to write the identity.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `dr repo ...`
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create a repository (writes dr-repo.json once).
    Init {
        /// Repository selection.
        #[command(flatten)]
        repo: RepoArgs,
        /// Age recipient (age1...) every backup is encrypted to; repeatable.
        #[arg(long = "recipient", value_name = "AGE1...")]
        recipients: Vec<String>,
    },
}

/// `dr backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Configured source name (or the name for an ad-hoc --postgres source).
    pub name: Option<String>,
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Back up this PostgreSQL database (a DSN; the password from PGPASSWORD,
    /// ~/.pgpass or --password-file, never from the command line).
    #[arg(long, value_name = "DSN")]
    pub postgres: Option<String>,
    /// Password file for --postgres.
    #[arg(long, value_name = "FILE", requires = "postgres")]
    pub password_file: Option<PathBuf>,
    /// Skip the cluster globals (roles, tablespaces) for --postgres.
    #[arg(long, requires = "postgres")]
    pub no_globals: bool,
    /// A physical base backup of --postgres's cluster (for PITR) instead of a
    /// logical dump; needs archiving into the same repository (`dr wal-push`).
    #[arg(long, requires = "postgres")]
    pub physical: bool,
}

/// `dr list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// `dr show`
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Backup id (or a unique prefix), or `latest`.
    pub backup: String,
    /// Source name, when ids are ambiguous or for `latest`.
    #[arg(long)]
    pub source: Option<String>,
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// `dr verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup id (or a unique prefix), or `latest`.
    pub backup: String,
    /// Source name.
    #[arg(long)]
    pub source: Option<String>,
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also restore into a scratch target and compare it with the backup.
    #[arg(long)]
    pub restore: bool,
    /// PostgreSQL server for the scratch database (a DSN; a database
    /// dr_verify_<random> is created there and dropped afterwards). Default:
    /// the configured source's server.
    #[arg(long, value_name = "DSN", env = "DR_SCRATCH_DSN")]
    pub scratch: Option<String>,
    /// Apply the backup's globals to the scratch server and keep owners;
    /// without it the scratch restore runs with --no-owner --no-privileges.
    #[arg(long)]
    pub globals: bool,
}

/// `dr restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id (or a unique prefix), or `latest`.
    pub backup: String,
    /// Source name.
    #[arg(long)]
    pub source: Option<String>,
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Target PostgreSQL database (a DSN); created if missing.
    #[arg(long, value_name = "DSN")]
    pub to: Option<String>,
    /// Password file for the target.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Replace a target database that already holds objects.
    #[arg(long)]
    pub clean: bool,
    /// Apply the backup's globals (roles, tablespaces) first.
    #[arg(long)]
    pub globals: bool,
    /// Parallel pg_restore jobs (above 1 the dump is staged to a local file).
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
    /// Directory for the staged dump of a parallel restore.
    #[arg(long, value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,
    /// Point-in-time restore of a physical backup (`--pgdata DIR` and a target).
    #[command(flatten)]
    pub pitr: crate::wal::PitrArgs,
    /// Vault: use `snapshot-force` (a snapshot of another cluster).
    #[arg(long)]
    pub force: bool,
    /// Vault: unseal key files to unseal a node that sealed itself after a
    /// forced restore (repeatable).
    #[arg(long, value_name = "FILE")]
    pub unseal_key_file: Vec<PathBuf>,
    /// Kubernetes: map a namespace to another, `OLD=NEW` (repeatable).
    #[arg(long, value_name = "OLD=NEW")]
    pub namespace_map: Vec<String>,
    /// Kubernetes: what to do with objects that exist: `report` or `update`.
    #[arg(long, default_value = "report")]
    pub existing: String,
    /// Kubernetes: a server-side dry run.
    #[arg(long)]
    pub server_dry_run: bool,
    /// etcd: write the verified snapshot file into this directory (then run
    /// `etcdctl snapshot restore` on it on the target node).
    #[arg(long, value_name = "DIR")]
    pub etcd_snapshot_dir: Option<PathBuf>,
}
