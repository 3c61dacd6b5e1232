//! `restore`: a backup into its target, through the kind's
//! [`dr_core::Restorer`] — a PostgreSQL database, a data directory at a
//! recovery target (PITR), a Vault node, a Kubernetes cluster, an etcd
//! snapshot file.

use std::future::Future;

use dr_core::{job, RestoreReport};
use dr_postgres::physical::{self, PitrReport};
use dr_storage::Manifest;

use crate::error::{Error, Result, ResultExt};
use crate::kind::SourceKind;
use crate::ops::Ops;
use crate::options::RestoreOptions;
use crate::registry;

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct RestoreOutcome {
    /// The backup restored.
    #[serde(skip)]
    pub manifest: Manifest,
    /// The restorer's report.
    #[serde(flatten)]
    pub report: RestoreReport,
    /// For a point-in-time restore: the plan and where recovery ended.
    #[serde(skip)]
    pub pitr: Option<PitrReport>,
}

impl RestoreOutcome {
    /// Whether everything was restored (a Kubernetes restore can be
    /// partial: some objects refused).
    pub fn complete(&self) -> bool {
        self.report.complete
    }
}

impl Ops {
    /// Restores backup `selector` (an id, a unique prefix, `latest`, or for
    /// a physical backup `auto`: the newest base backup that reaches the
    /// recovery target) of `source` into the target `opts` names, through
    /// the kind's restorer. `stop` (a signal in `dr`) interrupts a restore
    /// that can clean up after itself: a point-in-time restore stops
    /// writing and removes what it wrote, then this returns
    /// [`Error::Interrupted`].
    ///
    /// # Errors
    /// [`Error::Usage`] when the target flags for the backup's kind are
    /// missing; no such backup; a missing or wrong key; the restorer's
    /// errors (a target that is not empty is a conflict).
    pub async fn restore(
        &self,
        source: Option<&str>,
        selector: &str,
        opts: &RestoreOptions,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<RestoreOutcome> {
        let stray = opts.pitr.given();
        if opts.pitr.pgdata.is_none() && !stray.is_empty() {
            // A point in time asked for without a data directory: never
            // restore the latest state instead without a word.
            return Err(Error::usage(format!(
                "{} apply to a point-in-time restore of a physical backup: give --pgdata DIR \
                 (and --source NAME); a logical backup restores the state it was taken at",
                stray.join(", ")
            )));
        }
        let repo = self.open().await?;
        // A physical restore is chosen by its flags before anything is read,
        // so a bad flag is a usage error whatever the repository holds.
        let pitr = if opts.pitr.pgdata.is_some() {
            let source = source.ok_or_else(|| {
                Error::usage(
                    "a point-in-time restore needs --source NAME (the WAL archive's source)",
                )
            })?;
            let mut pitr_opts = opts
                .pitr
                .options(self.dr_program()?, crate::wal::fetch_args(self.settings())?)?;
            pitr_opts.clean_leftover = opts.clean;
            pitr_opts.bin_dir = self.pg_bin(source);
            Some((source, pitr_opts))
        } else {
            None
        };
        let ids = self.require_identities(&repo, "a restore")?;
        let manifest = match &pitr {
            Some((source, pitr_opts)) if selector == "auto" => {
                let plan = physical::plan_pitr(&repo, &ids, source, pitr_opts)
                    .await
                    .map_err(dr_core::Error::from)?;
                repo.manifest(source, &plan.backup_id).await?
            }
            _ => repo.find_backup(source, selector).await?,
        };
        let kind = SourceKind::of_manifest(&manifest)?;
        let mut cancel = None;
        let pitr_restorer = match pitr {
            Some((_, mut pitr_opts)) => {
                if kind != SourceKind::PostgresPhysical {
                    return Err(Error::usage(format!(
                        "--pgdata restores physical backups; {} is a {} backup",
                        manifest.backup_id, manifest.source.kind
                    )));
                }
                pitr_opts.backup = Some(manifest.backup_id.clone());
                cancel = Some(pitr_opts.cancel.clone());
                Some(registry::pitr_restorer(pitr_opts, ids.clone()))
            }
            None => None,
        };
        let other = match &pitr_restorer {
            Some(_) => None,
            None => Some(
                registry::restorer(
                    kind,
                    self.config(),
                    &manifest,
                    opts,
                    self.pg_bin(&manifest.source.name),
                )
                .await?,
            ),
        };
        let restorer: &dyn dr_core::Restorer = match (&pitr_restorer, &other) {
            (Some(p), _) => p,
            (None, Some(o)) => o.as_ref(),
            (None, None) => unreachable!("one restorer is always built"),
        };
        let report = {
            let restore = job::restore(&repo, &manifest, &ids, restorer);
            tokio::pin!(restore);
            tokio::select! {
                r = &mut restore => r,
                () = stop, if cancel.is_some() => {
                    if let Some(c) = &cancel {
                        c.cancel();
                    }
                    // The restore removes what it wrote before it returns;
                    // one past the point where it could stop (starting the
                    // server, recovery) finishes, and what it made is then
                    // discarded: an interrupted restore leaves nothing.
                    if let Err(e) = restore.await {
                        tracing::info!(error = %dr_core::error_chain(&e), "restore stopped");
                    } else if let Err(e) = restorer.discard().await {
                        return Err(Error::Interrupted(format!(
                            "the restore of {} finished as it was interrupted, and removing it failed \
                             ({}): remove {restorer} by hand",
                            manifest.backup_id,
                            dr_core::error_chain(&e)
                        )));
                    }
                    return Err(Error::Interrupted(format!(
                        "the restore of {} stopped and removed what it wrote into {restorer}",
                        manifest.backup_id
                    )));
                }
            }
        }
        .context_with(|| format!("restore of backup {} into {restorer}", manifest.backup_id))?;
        let pitr = match &pitr_restorer {
            Some(r) => r.report().await,
            None => None,
        };
        Ok(RestoreOutcome {
            manifest,
            report,
            pitr,
        })
    }
}
