//! `dr wal-push`, `dr wal-fetch`, and the physical modes of `dr backup`,
//! `dr restore` and `dr verify`: arguments and thin run functions over
//! `dr_postgres::wal` and `dr_postgres::physical`.
//!
//! Physical mode is chosen with `--physical` on `dr backup`, and by the
//! backup's kind (`postgres-physical`) on `dr restore` / `dr verify`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use dr_postgres::physical::{self, PitrOptions, RecoveryTarget, TargetAction};
use dr_postgres::wal::{self, FetchOptions, PushOptions, RetryPolicy};
use dr_storage::{Repository, RepositorySettings, WalArchive};

use crate::args::RepoArgs;
use crate::config::DrConfig;
use crate::exit::Usage;

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
    /// Data directory holding global/pg_control (default: the current one).
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Attempts on transient store errors.
    #[arg(long, env = "DR_WAL_RETRIES", default_value_t = 5)]
    pub retries: u32,
    /// Seconds after which no attempt runs on: a store that never answers
    /// fails within this bound.
    #[arg(long, env = "DR_WAL_RETRY_DEADLINE", default_value_t = 60)]
    pub retry_deadline: u64,
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
    /// Standby mode: persistent transient errors exit 1 (keep retrying)
    /// instead of 200 (stop recovery).
    #[arg(long)]
    pub standby: bool,
    /// Attempts on transient store errors.
    #[arg(long, env = "DR_WAL_RETRIES", default_value_t = 5)]
    pub retries: u32,
    /// Seconds after which no attempt runs on: a store that never answers
    /// fails within this bound.
    #[arg(long, env = "DR_WAL_RETRY_DEADLINE", default_value_t = 60)]
    pub retry_deadline: u64,
}

/// The PITR flags of `dr restore` (flatten into `RestoreArgs`).
#[derive(Debug, Args, Clone, Default)]
pub struct PitrArgs {
    /// Restore a physical backup into this data directory (absent or empty).
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Recover to this time; give an offset (`+00`), else UTC is assumed.
    #[arg(long, value_name = "TIME", group = "pitr_target")]
    pub target_time: Option<String>,
    /// Recover to this LSN.
    #[arg(long, value_name = "LSN", group = "pitr_target")]
    pub target_lsn: Option<String>,
    /// Recover to the commit of this transaction.
    #[arg(long, value_name = "XID", group = "pitr_target")]
    pub target_xid: Option<u64>,
    /// Recover to this restore point.
    #[arg(long, value_name = "NAME", group = "pitr_target")]
    pub target_name: Option<String>,
    /// `immediate` (end of the backup) or `latest` (end of the archive).
    #[arg(long, value_name = "immediate|latest", group = "pitr_target")]
    pub target: Option<String>,
    /// promote, pause or shutdown at the target.
    #[arg(long, default_value = "promote")]
    pub target_action: String,
    /// Start the server and wait until recovery ends.
    #[arg(long)]
    pub start: bool,
    /// Port to write into the restored configuration.
    #[arg(long)]
    pub port: Option<u16>,
    /// Keep the cluster's archive_mode and archive_command in the restored
    /// copy. Without it the copy runs with archive_mode = off: a test or
    /// verification restore that promotes must never push its new timeline
    /// into the production archive (later restores would follow it). Pass
    /// it when the restored cluster is to become the new primary.
    #[arg(long)]
    pub archive: bool,
    /// Deprecated: archive_mode = off is the default now.
    #[arg(long, hide = true)]
    pub no_archive: bool,
    /// Follow this timeline (`recovery_target_timeline`, a number; default:
    /// the newest timeline in the archive). Use it to recover along an older
    /// timeline when a newer one branched off it.
    #[arg(long, value_name = "TLI")]
    pub target_timeline: Option<u32>,
    /// With `--target latest`: restore even though archived WAL has a gap
    /// after the backup (recovery ends at the gap; without this flag the
    /// gap is an error naming it).
    #[arg(long)]
    pub allow_wal_gap: bool,
    /// Restore a tablespace into DIR instead of its original directory
    /// (`OID-or-NAME=DIR`, DIR absolute and empty; repeatable).
    #[arg(long, value_name = "OID-or-NAME=DIR")]
    pub tablespace_mapping: Vec<String>,
}

/// Opens the repository for `wal-push` / `wal-fetch`. A bad location or
/// codec setting keeps its kind (usage); reading `dr-repo.json` runs under
/// `retry` like every other store call, so a store that does not answer is
/// retried and then reported as a store failure, not as a bad repository.
async fn open_wal(
    config: &DrConfig,
    args: &RepoArgs,
    retry: &RetryPolicy,
) -> Result<(Repository, RepositorySettings), dr_postgres::WalError> {
    let s = args.apply(&config.repository);
    let location = s.location()?;
    let codec = s.codec_options()?;
    let store_options = s.store_options();
    let repo = retry
        .run("opening the repository", || async {
            Repository::open(&location, &store_options)
                .await
                .map_err(dr_postgres::WalError::from)
        })
        .await?;
    Ok((repo.with_codec(codec), s))
}

async fn open(config: &DrConfig, args: &RepoArgs) -> Result<(Repository, RepositorySettings)> {
    let s = args.apply(&config.repository);
    let repo = Repository::open(&s.location()?, &s.store_options()).await?;
    let repo = repo.with_codec(s.codec_options()?);
    Ok((repo, s))
}

/// The arguments `restore_command = dr wal-fetch ...` needs to reach the
/// repository with a key *file* (never a key): `--repo`, `--identity`,
/// `--passphrase-file`, with absolute paths.
///
/// # Errors
/// A key file that does not exist.
pub fn fetch_args(s: &RepositorySettings) -> Result<Vec<String>> {
    let mut fetch_args = Vec::new();
    if let Some(u) = &s.url {
        let url = if u.contains("://") {
            u.clone()
        } else {
            std::fs::canonicalize(u)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| u.clone())
        };
        fetch_args.extend(["--repo".to_string(), url]);
    }
    if let Some(i) = &s.identity_file {
        fetch_args.extend([
            "--identity".to_string(),
            std::fs::canonicalize(i)?.display().to_string(),
        ]);
    }
    if let Some(p) = &s.passphrase_file {
        fetch_args.extend([
            "--passphrase-file".to_string(),
            std::fs::canonicalize(p)?.display().to_string(),
        ]);
    }
    Ok(fetch_args)
}

/// Runs `dr wal-push`; returns the exit code (0, or 1..=125). Errors are
/// written to stderr here, so the caller must not map them again.
pub async fn run_wal_push(config: &DrConfig, a: &WalPushArgs, json: bool) -> i32 {
    let result = async {
        let retry = RetryPolicy::new(a.retries, Duration::from_secs(a.retry_deadline));
        let (repo, _) = open_wal(config, &a.repo, &retry).await?;
        let archive = WalArchive::new(&repo, &a.source)?;
        let mut opts = PushOptions::default();
        opts.pgdata = a.pgdata.clone();
        opts.retry = retry;
        wal::wal_push(&archive, &a.path, &opts).await
    }
    .await;
    report(&result, json, "wal-push");
    wal::push_exit_code(&result)
}

/// Runs `dr wal-fetch`; returns the exit code (0; 1 not archived; 200 stop
/// recovery).
pub async fn run_wal_fetch(config: &DrConfig, a: &WalFetchArgs, json: bool) -> i32 {
    let result = async {
        let retry = RetryPolicy::new(a.retries, Duration::from_secs(a.retry_deadline));
        let (repo, s) = open_wal(config, &a.repo, &retry).await?;
        let keys = s.key_source()?;
        let ids = repo.unlock(&keys)?;
        let archive = WalArchive::new(&repo, &a.source)?;
        let mut opts = FetchOptions::default();
        opts.standby = a.standby;
        opts.retry = retry;
        wal::wal_fetch(&archive, &a.name, &a.dest, &ids, &opts).await
    }
    .await;
    report(&result, json, "wal-fetch");
    wal::fetch_exit_code(&result, a.standby)
}

fn report<T: serde::Serialize>(result: &Result<T, dr_postgres::WalError>, json: bool, what: &str) {
    use std::io::Write;
    match result {
        Ok(r) if json => {
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string(r).unwrap_or_default()
            );
        }
        Ok(_) => {}
        Err(e) => {
            let mut msg = format!("{what}: {e}");
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            let _ = writeln!(std::io::stderr(), "error: {msg}");
        }
    }
}

/// The recovery target the flags ask for.
///
/// # Errors
/// A malformed value, or no target flag.
pub fn target(a: &PitrArgs) -> Result<RecoveryTarget> {
    Ok(if let Some(t) = &a.target_time {
        let (t, explicit) = physical::parse_target_time(t)?;
        if !explicit {
            eprintln!(
                "note: --target-time has no offset; using {} (UTC)",
                physical::format_time(&t)
            );
        }
        RecoveryTarget::Time(t)
    } else if let Some(l) = &a.target_lsn {
        RecoveryTarget::Lsn(l.parse()?)
    } else if let Some(x) = a.target_xid {
        RecoveryTarget::Xid(x)
    } else if let Some(n) = &a.target_name {
        RecoveryTarget::Name(n.clone())
    } else {
        match a.target.as_deref() {
            Some("immediate") => RecoveryTarget::Immediate,
            Some("latest") => RecoveryTarget::Latest,
            Some(other) => anyhow::bail!("--target {other:?}: expected immediate or latest"),
            None => anyhow::bail!(
                "a point-in-time restore needs a target: --target-time, --target-lsn, --target-xid, --target-name \
                 or --target immediate|latest"
            ),
        }
    })
}

/// `dr restore <backup|auto> --source NAME ... --pgdata DIR`: plans and runs
/// a point-in-time restore; `backup` is `auto` to choose by target.
///
/// # Errors
/// Bad flags, no backup for the target, restore and recovery failures.
pub async fn run_pitr_restore(
    config: &DrConfig,
    repo_args: &RepoArgs,
    source: &str,
    backup: &str,
    a: &PitrArgs,
) -> Result<physical::PitrReport> {
    // Flags first: a bad one is a usage error before anything is opened.
    let recovery_target = target(a).map_err(Usage::wrap)?;
    let action = a
        .target_action
        .parse::<TargetAction>()
        .map_err(Usage::wrap)?;
    let pgdata = a
        .pgdata
        .clone()
        .ok_or_else(|| Usage::msg("--pgdata DIR is required for a physical restore"))?;
    // pg_ctl and the server need an absolute data directory.
    let pgdata =
        std::path::absolute(&pgdata).with_context(|| format!("--pgdata {}", pgdata.display()))?;
    let (repo, s) = open(config, repo_args).await?;
    let keys = s.key_source().map_err(Usage::wrap)?;
    let ids = repo.unlock(&keys).map_err(Usage::wrap)?;
    let fetch_args = fetch_args(&s)?;
    let mut opts = PitrOptions::new(
        pgdata,
        recovery_target,
        std::env::current_exe()?,
        fetch_args,
    );
    opts.action = action;
    opts.backup = (backup != "auto").then(|| backup.to_string());
    opts.start = a.start;
    opts.port = a.port;
    opts.archive_mode_off = !a.archive || a.no_archive;
    opts.timeline = a.target_timeline;
    opts.allow_wal_gap = a.allow_wal_gap;
    opts.tablespace_mapping = a
        .tablespace_mapping
        .iter()
        .map(|m| m.parse().map_err(dr_core::Error::from))
        .collect::<Result<_, _>>()?;
    // Through dr_core::Error, so that crate::exit::code classifies them.
    let plan = physical::plan_pitr(&repo, &ids, source, &opts)
        .await
        .map_err(dr_core::Error::from)?;
    // SIGINT or SIGTERM while the files are written: the restore stops and
    // removes what it wrote (the data directory is left as it was found); a
    // second signal quits at once.
    let restore = physical::pitr_restore(&repo, &ids, &plan, &opts);
    tokio::pin!(restore);
    let first = crate::agent::shutdown_signal()?;
    let done = tokio::select! {
        r = &mut restore => r,
        () = first => {
            eprintln!(
                "interrupted: stopping the restore and removing what it wrote into {} (again to quit at once)",
                opts.pgdata.display()
            );
            opts.cancel.cancel();
            let second = crate::agent::shutdown_signal()?;
            tokio::select! {
                r = &mut restore => r,
                () = second => bail!(
                    "interrupted twice: {} may hold a partial restore; remove it before restoring again",
                    opts.pgdata.display()
                ),
            }
        }
    };
    Ok(done.map_err(dr_core::Error::from)?)
}
