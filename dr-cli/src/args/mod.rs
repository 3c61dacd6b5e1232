//! Command-line arguments: every clap type of `dr` and `dr-agent`. The
//! option structs of the operations layer (`dr_ops::RestoreOptions`,
//! `VerifyOptions`, `PruneOptions`, ...) are flattened in, not copied.

mod agent;
mod dns;
mod plan;
mod wal;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use agent::AgentArgs;
pub use dns::DnsCommand;
pub use plan::{
    DrillArgs, DrillCommand, JournalArgs, PlanCheckArgs, PlanCommand, PlanFileArgs, PlanRunArgs,
    ResumeArgs,
};
pub use wal::{WalFetchArgs, WalPushArgs};

/// dr: backups you have proven you can restore.
#[derive(Debug, Parser)]
#[command(
    name = "dr",
    version,
    about = "Disaster recovery: back up PostgreSQL (base backups, WAL archiving, logical dumps), Vault, \
             Kubernetes and etcd into encrypted repositories; verify, prune, restore to a point in time; \
             run recovery plans and drills",
    long_about = None,
    after_help = "Configuration: ./dr.toml or --config. Start with `dr check` on a new host. \
                  Exit codes: 0 success, 1 verification failed, 2 usage, 3 other failure.",
    propagate_version = true
)]
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
    /// Directory searched first for PostgreSQL's programs (pg_dump,
    /// pg_basebackup, pg_restore, psql, pg_ctl, postgres), before a source's
    /// `bin_dir`, the `pg_config` on PATH, /usr/lib/postgresql/<V>/bin,
    /// /usr/pgsql-<V>/bin and PATH. Clients must be at least the server's
    /// version, server programs exactly the data directory's; a program of
    /// the wrong version here is passed over with a warning.
    #[arg(long, global = true, env = "DR_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Repository selection and keys, shared by the commands that need them
/// (the operations layer's own option struct, flattened).
pub type RepoArgs = dr_ops::RepositoryArgs;

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
    /// Check this host's set-up against dr.toml, line by line (OK, WARN,
    /// FAIL with the fix): the repository, the key, each PostgreSQL source's
    /// server and archiving, schedules against the RPO. Exit 1 on a FAIL;
    /// with --nagios, the Nagios plugin codes (0 OK, 1 WARNING, 2 CRITICAL,
    /// 3 UNKNOWN).
    Check(CheckArgs),
    /// archive_command: store one WAL file (`dr wal-push --source NAME %p`).
    WalPush(WalPushArgs),
    /// restore_command: fetch one WAL file (`dr wal-fetch --source NAME %f %p`).
    WalFetch(WalFetchArgs),
    /// Recovery plans: check, run, resume, list runs.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Run a plan as a drill against scratch targets (`dr drill PLAN`), or
    /// list stored drill reports (`dr drill list`).
    Drill(DrillArgs),
    /// DNS records: get, set, failover, rollback.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// Print a shell completion script: `dr completions bash >
    /// /etc/bash_completion.d/dr` (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages: `dr.1` to stdout, or with --dir one page per command
    /// (`dr.1`, `dr-backup.1`, ...).
    Man {
        /// Directory to write every page into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
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
    /// Locking and orphans.
    #[command(flatten)]
    pub options: dr_ops::PruneOptions,
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
    /// Also write the status page to FILE (`-` for stdout): one
    /// self-contained HTML document (no script, no external asset), the
    /// page dr-agent serves at `/`. Written atomically.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// `dr check`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Force a WAL switch on each physical source and wait for its segment
    /// in the repository (writes a little WAL on the server).
    #[arg(long)]
    pub switch_wal: bool,
    /// Print one Nagios status line and exit with the plugin codes.
    #[arg(long, conflicts_with = "json")]
    pub nagios: bool,
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
    /// How deep.
    #[command(flatten)]
    pub options: dr_ops::VerifyOptions,
}

/// `dr restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup id (or a unique prefix), or `latest`; for a physical backup
    /// also `auto` (the newest base backup that reaches the target).
    pub backup: String,
    /// Source name.
    #[arg(long)]
    pub source: Option<String>,
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The target.
    #[command(flatten)]
    pub options: dr_ops::RestoreOptions,
}
