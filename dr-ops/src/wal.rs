//! `wal-push` and `wal-fetch`: PostgreSQL's `archive_command` and
//! `restore_command`, with their exit-code rules (PostgreSQL "Continuous
//! Archiving and Point-in-Time Recovery", 26.3.1 and 26.3.4).

use std::path::PathBuf;
use std::time::Duration;

use dr_postgres::wal::{self, FetchOptions, PushOptions, RetryPolicy};
use dr_postgres::WalError;
use dr_storage::{Repository, RepositorySettings, WalArchive};

use crate::error::{Error, Result};
use crate::ops::Ops;

/// The retry budget of `wal-push` and `wal-fetch` on transient store
/// errors. With the `clap` feature these are their flags.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct WalRetryOptions {
    /// Attempts on transient store errors.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "DR_WAL_RETRIES", default_value_t = 5)
    )]
    pub retries: u32,
    /// Seconds after which no attempt runs on: a store that never answers
    /// fails within this bound.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "DR_WAL_RETRY_DEADLINE", default_value_t = 60)
    )]
    pub retry_deadline: u64,
}

impl Default for WalRetryOptions {
    fn default() -> Self {
        WalRetryOptions {
            retries: 5,
            retry_deadline: 60,
        }
    }
}

impl WalRetryOptions {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.retries, Duration::from_secs(self.retry_deadline))
    }
}

/// `dr wal-push` options. With the `clap` feature these are its flags.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct WalPushOptions {
    /// Data directory holding global/pg_control (default: the current one).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR"))]
    pub pgdata: Option<PathBuf>,
    /// Retries.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub retry: WalRetryOptions,
}

/// `dr wal-fetch` options. With the `clap` feature these are its flags.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[non_exhaustive]
pub struct WalFetchOptions {
    /// Standby mode: persistent transient errors exit 1 (keep retrying)
    /// instead of 200 (stop recovery).
    #[cfg_attr(feature = "clap", arg(long))]
    pub standby: bool,
    /// Retries.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub retry: WalRetryOptions,
}

impl Ops {
    /// Opens the repository for `wal-push` / `wal-fetch`. A bad location or
    /// codec setting keeps its kind (usage); reading `dr-repo.json` runs
    /// under `retry` like every other store call, so a store that does not
    /// answer is retried and then reported as a store failure, not as a bad
    /// repository.
    async fn open_wal(&self, retry: &RetryPolicy) -> Result<Repository, WalError> {
        let s = self.settings();
        let location = s.location()?;
        let codec = s.codec_options()?;
        let store_options = s.store_options();
        let repo = retry
            .run("opening the repository", || async {
                Repository::open(&location, &store_options)
                    .await
                    .map_err(WalError::from)
            })
            .await?;
        Ok(repo.with_codec(codec))
    }

    /// Stores WAL file `path` (`%p`) in `source`'s archive, once,
    /// create-only. The result maps to PostgreSQL's rules with
    /// [`wal::push_exit_code`].
    ///
    /// # Errors
    /// [`WalError`]: different content already archived under the name, a
    /// segment of another cluster, store failures after the retries.
    pub async fn wal_push(
        &self,
        source: &str,
        path: &std::path::Path,
        opts: &WalPushOptions,
    ) -> Result<wal::PushReport, WalError> {
        let retry = opts.retry.policy();
        let repo = self.open_wal(&retry).await?;
        let archive = WalArchive::new(&repo, source)?;
        let mut o = PushOptions::default();
        o.pgdata = opts.pgdata.clone();
        o.retry = retry;
        wal::wal_push(&archive, path, &o).await
    }

    /// Fetches WAL file `name` (`%f`) of `source`'s archive into `dest`
    /// (`%p`), atomically and after checking its digest. The result maps to
    /// PostgreSQL's rules with [`wal::fetch_exit_code`].
    ///
    /// # Errors
    /// [`WalError`]: not archived, a missing or wrong key, store failures
    /// after the retries.
    pub async fn wal_fetch(
        &self,
        source: &str,
        name: &str,
        dest: &std::path::Path,
        opts: &WalFetchOptions,
    ) -> Result<wal::FetchReport, WalError> {
        let retry = opts.retry.policy();
        let repo = self.open_wal(&retry).await?;
        let keys = self.settings().key_source()?;
        let ids = repo.unlock(&keys)?;
        let archive = WalArchive::new(&repo, source)?;
        let mut o = FetchOptions::default();
        o.standby = opts.standby;
        o.retry = retry;
        wal::wal_fetch(&archive, name, dest, &ids, &o).await
    }
}

/// The arguments `restore_command = dr wal-fetch ...` needs to reach the
/// repository with a key *file* (never a key): `--repo`, `--identity`,
/// `--passphrase-file`, with absolute paths (the server runs the command in
/// its data directory).
///
/// # Errors
/// [`Error::Io`] for a key file that does not exist.
pub fn fetch_args(s: &RepositorySettings) -> Result<Vec<String>> {
    let absolute = |flag: &str, p: &std::path::Path| {
        std::fs::canonicalize(p)
            .map(|p| p.display().to_string())
            .map_err(|e| Error::io(format!("{flag} {}", p.display()), e))
    };
    let mut args = Vec::new();
    if let Some(u) = &s.url {
        let url = if u.contains("://") {
            u.clone()
        } else {
            std::fs::canonicalize(u)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| u.clone())
        };
        args.extend(["--repo".to_string(), url]);
    }
    if let Some(i) = &s.identity_file {
        args.extend(["--identity".to_string(), absolute("--identity", i)?]);
    }
    if let Some(p) = &s.passphrase_file {
        args.extend([
            "--passphrase-file".to_string(),
            absolute("--passphrase-file", p)?,
        ]);
    }
    Ok(args)
}
