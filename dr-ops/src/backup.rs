//! `backup`: configured sources, or an ad-hoc PostgreSQL database, into the
//! repository (manifest last: a backup is listed only once complete).

use std::path::PathBuf;

use dr_core::{job, BackupSource};
use dr_storage::{Manifest, Repository};

use crate::error::{Error, Result, ResultExt};
use crate::ops::Ops;
use crate::registry::{build_source, dsn_arg};

/// What to back up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BackupTarget {
    /// Every configured source.
    All,
    /// The configured source of this name.
    Source(String),
    /// A PostgreSQL database not in the configuration.
    Postgres {
        /// The source name to record (default: the database name).
        name: Option<String>,
        /// The DSN (the password from PGPASSWORD, ~/.pgpass or
        /// `password_file`, never from a command line).
        dsn: String,
        /// A password file.
        password_file: Option<PathBuf>,
        /// Skip the cluster's globals (roles, tablespaces).
        no_globals: bool,
        /// A physical base backup (for PITR) instead of a logical dump.
        physical: bool,
    },
}

impl Ops {
    /// The sources `target` names, built, with their names. Nothing is
    /// opened yet, so a bad source is a usage error before the repository
    /// is touched.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown source or nothing to back up; the
    /// source's settings are invalid.
    pub async fn sources(
        &self,
        target: &BackupTarget,
    ) -> Result<Vec<(String, Box<dyn BackupSource>)>> {
        if let BackupTarget::Postgres {
            name,
            dsn,
            password_file,
            no_globals,
            physical,
        } = target
        {
            let mut conn = dsn_arg(dsn, "--postgres")?;
            if let Some(f) = password_file {
                conn = conn
                    .with_password_file(f)
                    .map_err(|e| Error::config("--password-file", e))?;
            }
            let name = match name {
                Some(n) => n.clone(),
                None => {
                    // The database's name, when it can name a source.
                    let n = conn.dbname().to_string();
                    dr_storage::validate_source_name(&n).map_err(|e| {
                        Error::usage(format!(
                            "the database name {n:?} cannot name a source ({e}): give one, \
                             `dr backup NAME --postgres DSN`"
                        ))
                    })?;
                    n
                }
            };
            let bin_dir = self.pg_bin_override().map(std::path::Path::to_path_buf);
            let source: Box<dyn BackupSource> = if *physical {
                let mut opts = dr_postgres::physical::PhysicalOptions::default();
                opts.bin_dir = bin_dir;
                Box::new(dr_postgres::physical::PostgresPhysical::new(conn, opts))
            } else {
                Box::new(
                    dr_postgres::PostgresLogical::new(conn)
                        .with_globals(!no_globals)
                        .with_bin_dir(bin_dir),
                )
            };
            return Ok(vec![(name, source)]);
        }
        let names = match target {
            BackupTarget::Source(n) => {
                self.config().source(n)?;
                vec![n.clone()]
            }
            _ => self.config().source_names(),
        };
        if names.is_empty() {
            return Err(Error::usage(
                "nothing to back up: name a configured source, or give --postgres DSN",
            ));
        }
        let mut out = Vec::new();
        for name in names {
            let entry = self.config().source(&name)?;
            let source = build_source(&entry.config, self.pg_bin_override())
                .await
                .map_err(|e| e.context(format!("sources.{name}")))?;
            out.push((name, source));
        }
        Ok(out)
    }

    /// Backs up what `target` names, one source after the other; stops at
    /// the first failure (whose backup is not listed). `done` is called
    /// after each committed backup (a front end prints it). When `stop`
    /// completes (a signal in `dr`), the running backup is abandoned: its
    /// data objects and upload removed, nothing listed.
    ///
    /// # Errors
    /// As [`Ops::sources`]; the repository; the first backup that fails,
    /// naming its source; `dr_core::Error::Interrupted` when stopped.
    pub async fn backup(
        &self,
        target: &BackupTarget,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
        mut done: impl FnMut(&Manifest),
    ) -> Result<Vec<Manifest>> {
        use futures::FutureExt as _;
        let sources = self.sources(target).await?;
        let repo = self.open().await?;
        let stop = stop.boxed().shared();
        let mut manifests = Vec::new();
        for (name, source) in sources {
            let m = job::backup_until(&repo, source.as_ref(), &name, stop.clone())
                .await
                .context_with(|| format!("backup of {name} ({source})"))?;
            done(&m);
            manifests.push(m);
        }
        Ok(manifests)
    }
}

/// Backs up one source into `repo` as `name`: the one function `dr backup`
/// and `dr-agent`'s scheduled backups both run.
///
/// # Errors
/// The source's or the repository's failure, naming the source; nothing is
/// listed.
pub async fn backup_source(
    repo: &Repository,
    source: &dyn BackupSource,
    name: &str,
) -> Result<Manifest> {
    job::backup(repo, source, name)
        .await
        .context_with(|| format!("backup of {name} ({source})"))
}
