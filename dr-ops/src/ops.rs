//! [`Ops`]: the operations over one configuration and one repository
//! selection. Each operation's own module adds its methods.

use std::sync::Arc;

use dr_storage::{Identities, InitOptions, KeySource, Progress, Repository, RepositorySettings};

use crate::config::{DrConfig, RepositoryArgs};
use crate::error::{Error, Result};

/// The operations over one configuration and one repository selection.
///
/// Cheap to build; every method opens what it needs. Libraries never
/// print: progress goes to the [`Progress`] given with
/// [`Ops::with_progress`].
#[derive(Clone)]
pub struct Ops {
    config: DrConfig,
    settings: RepositorySettings,
    progress: Option<Arc<dyn Progress>>,
    pg_bin: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("repository", &self.settings.url)
            .field("sources", &self.config.source_names())
            .finish()
    }
}

impl Ops {
    /// The `dr` program that `restore_command` runs (`dr wal-fetch`): this
    /// process's executable.
    pub(crate) fn dr_program(&self) -> Result<std::path::PathBuf> {
        std::env::current_exe().map_err(|e| Error::io("finding the dr program", e))
    }

    /// Operations on `config`, with `args` (flags and `DR_*` variables)
    /// over its `[repository]`.
    pub fn new(config: DrConfig, args: RepositoryArgs) -> Self {
        let settings = args.apply(&config.repository);
        Ops {
            config,
            settings,
            progress: None,
            pg_bin: None,
        }
    }

    /// Searches `dir` first for PostgreSQL's programs (`--pg-bin`,
    /// `DR_PG_BIN`), before a source's `bin_dir` and the host's layouts
    /// (see [`dr_postgres::tools`]); `None` keeps the configured ones.
    pub fn with_pg_bin(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.pg_bin = dir;
        self
    }

    /// The directory searched first for the PostgreSQL programs of source
    /// `source`: [`Ops::with_pg_bin`]'s, else the source's `bin_dir`.
    pub fn pg_bin(&self, source: &str) -> Option<std::path::PathBuf> {
        self.pg_bin.clone().or_else(
            || match self.config.sources.get(source).map(|e| &e.config) {
                Some(
                    crate::SourceConfig::Postgres(c) | crate::SourceConfig::PostgresPhysical(c),
                ) => c.bin_dir.clone(),
                _ => None,
            },
        )
    }

    /// The directory given with [`Ops::with_pg_bin`].
    pub(crate) fn pg_bin_override(&self) -> Option<&std::path::Path> {
        self.pg_bin.as_deref()
    }

    /// Reports bytes and phases of backups, restores and verifications to
    /// `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &DrConfig {
        &self.config
    }

    /// The repository settings in force (flags > environment > file).
    pub fn settings(&self) -> &RepositorySettings {
        &self.settings
    }

    /// Opens the repository, with the configured codec and the progress.
    ///
    /// # Errors
    /// A bad location or codec setting (usage); the repository is missing,
    /// of a newer format, or unreachable.
    pub async fn open(&self) -> Result<Repository> {
        let s = &self.settings;
        let location = s.location()?;
        let repo = Repository::open(&location, &s.store_options()).await?;
        let repo = repo.with_codec(s.codec_options()?);
        Ok(match &self.progress {
            Some(p) => repo.with_progress(p.clone()),
            None => repo,
        })
    }

    /// The keys configured for reading data (identity file or passphrase),
    /// unlocked against `repo`; `None` when none is configured.
    ///
    /// # Errors
    /// An unreadable key file or a key that does not open the repository
    /// (usage errors).
    pub fn identities(&self, repo: &Repository) -> Result<Option<Identities>> {
        if let Some(f) = &self.settings.identity_file {
            warn_if_world_readable(f);
        }
        let keys = self.settings.key_source()?;
        if keys.identities.is_none() && keys.passphrase.is_none() {
            return Ok(None);
        }
        Ok(Some(repo.unlock(&keys)?))
    }

    /// As [`Ops::identities`], but a key is required for what `needed_for`
    /// says.
    ///
    /// # Errors
    /// As [`Ops::identities`]; [`Error::Usage`] when no key is configured.
    pub fn require_identities(&self, repo: &Repository, needed_for: &str) -> Result<Identities> {
        self.identities(repo)?.ok_or_else(|| {
            Error::usage(format!(
                "{needed_for} needs --identity FILE or the repository passphrase \
                 (--passphrase-file or DR_PASSPHRASE)"
            ))
        })
    }

    /// Creates the repository (writes `dr-repo.json` once): encrypted to
    /// `recipients`, else to `[repository] recipients`, or protected by the
    /// configured passphrase.
    ///
    /// # Errors
    /// [`Error::Usage`] without recipients or passphrase; the repository
    /// exists already; store errors.
    pub async fn init_repository(&self, recipients: &[String]) -> Result<Repository> {
        let s = &self.settings;
        let location = s.location()?;
        let mut init = InitOptions::with_recipients(if recipients.is_empty() {
            s.recipients.clone()
        } else {
            recipients.to_vec()
        });
        // Only the passphrase matters here: the identity file is for reading.
        let mut pass_only = s.clone();
        pass_only.identity_file = None;
        init.passphrase = pass_only.key_source()?.passphrase;
        if init.recipients.is_empty() && init.passphrase.is_none() {
            return Err(Error::usage(
                "dr repo init needs --recipient age1... (see `dr key generate`) or a passphrase \
                 (--passphrase-file or DR_PASSPHRASE)",
            ));
        }
        Ok(Repository::init(&location, &s.store_options(), init).await?)
    }

    /// The keys of the settings, without a repository to unlock them
    /// against.
    ///
    /// # Errors
    /// An unreadable key file (usage).
    pub fn key_source(&self) -> Result<KeySource> {
        Ok(self.settings.key_source()?)
    }
}

/// Logs a warning when the key file `path` can be read by every user of
/// the host. (Group-readable is fine: `restore_command` runs as the server's
/// user, which may need a group to read it.)
fn warn_if_world_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode();
        if mode & 0o004 != 0 {
            tracing::warn!(
                "the identity file {} is readable by every user (mode {:o}): anyone on this host can decrypt the \
                 backups; make it 0600, or 0640 with the server's group",
                path.display(),
                mode & 0o777
            );
        }
    }
}

/// Writes a new age identity to `output` (mode 0600; `force` replaces an
/// existing file) and returns its recipient (`age1...`).
///
/// # Errors
/// [`Error::Io`] naming the file (it exists and `force` is not set, or it
/// cannot be written).
pub fn generate_key(output: &std::path::Path, force: bool) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let id = Identities::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let what = || {
        format!(
            "writing identity file {} (use --force to replace it)",
            output.display()
        )
    };
    let mut f = opts.open(output).map_err(|e| Error::io(what(), e))?;
    let text = id.to_file_text();
    f.write_all(secrecy::ExposeSecret::expose_secret(&text).as_bytes())
        .map_err(|e| Error::io(what(), e))?;
    Ok(id.recipients().to_strings().remove(0))
}

impl Ops {
    /// The DNS provider of `[dns]`, for `dr dns` and the `dns.*` plan steps.
    ///
    /// # Errors
    /// [`Error::Usage`] without a `[dns]` section; the provider cannot be
    /// set up (credentials, a TSIG key file).
    pub async fn dns_provider(&self) -> Result<Arc<dyn dr_core::dns::DnsProvider>> {
        let dns = self.config.dns.as_ref().ok_or_else(|| {
            Error::usage(
                "dr dns needs a [dns] section in dr.toml (provider = \"route53\" or \"rfc2136\")",
            )
        })?;
        Ok(dr_dns::connect(dns).await?)
    }
}

impl Ops {
    /// The backups in the repository (of `source` when given), oldest
    /// first, and the backups whose manifest exists but cannot be read
    /// (not listed; a front end warns about them).
    ///
    /// # Errors
    /// The repository cannot be opened or listed.
    pub async fn list(
        &self,
        source: Option<&str>,
    ) -> Result<(Vec<dr_storage::Manifest>, Vec<dr_storage::DamagedManifest>)> {
        let repo = self.open().await?;
        Ok(repo.list_backups_checked(source).await?)
    }

    /// The manifest of backup `selector` (an id, a unique prefix, or
    /// `latest`) of `source`.
    ///
    /// # Errors
    /// No such backup (a usage error), an ambiguous prefix; the repository.
    pub async fn show(&self, source: Option<&str>, selector: &str) -> Result<dr_storage::Manifest> {
        let repo = self.open().await?;
        Ok(repo.find_backup(source, selector).await?)
    }
}
