//! Recovery plans and drills: check, run, resume, list, with the action
//! registry wired from the configuration ([`crate::registry::action_registry`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dr_core::drill::{DrillReport, DrillSummary};
use dr_core::plan::{
    check_file, parse_set, ActionRegistry, Approver, CheckOptions, CheckedPlan, Executor,
    FileApprover, JournalStore, PlanObserver, RunOptions, RunReport, RunSummary,
};
use dr_storage::{Identities, Repository};

use crate::error::{Error, Result};
use crate::ops::Ops;
use crate::registry::action_registry;

/// How a plan run is carried out: where its journal goes and who approves.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RunSettings {
    /// Directory of the local run journals (default `[plans] journal_dir`,
    /// else `./dr-runs`).
    pub journal_dir: Option<PathBuf>,
    /// Approve every `approve` step in advance.
    pub assume_yes: bool,
    /// Approvals from a file (automation); see [`FileApprover`].
    pub approval_file: Option<PathBuf>,
    /// Who answers an `approve` step when neither of the above does (a
    /// terminal prompt in `dr`).
    pub approver: Option<Arc<dyn Approver>>,
    /// Who is told of each step (progress on stderr in `dr`).
    pub observer: Option<Arc<dyn PlanObserver>>,
}

impl std::fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSettings")
            .field("journal_dir", &self.journal_dir)
            .field("assume_yes", &self.assume_yes)
            .field("approval_file", &self.approval_file)
            .finish()
    }
}

/// The repository and keys a plan's actions use, when they can be had (a
/// plan without repository steps runs without them), and the registry
/// wired from them.
#[derive(Debug)]
pub struct PlanContext {
    /// The repository (journals and drill reports go there too).
    pub repository: Option<Repository>,
    /// Its keys.
    pub identities: Option<Identities>,
    /// Every action that can run here.
    pub registry: ActionRegistry,
}

impl Ops {
    /// The repository when it opens, its keys when configured, and the
    /// action registry.
    ///
    /// # Errors
    /// A `[dns]` provider that cannot be set up.
    pub async fn plan_context(&self) -> Result<PlanContext> {
        let repository = match self.open().await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::info!(error = %dr_core::error_chain(&e), "no repository for this plan");
                None
            }
        };
        let identities = repository
            .as_ref()
            .and_then(|r| self.identities(r).ok().flatten());
        let registry = action_registry(
            self.config(),
            repository.as_ref(),
            identities.as_ref(),
            self.settings(),
            self.dr_program()?,
            self.pg_bin_override().map(std::path::Path::to_path_buf),
        )
        .await?;
        Ok(PlanContext {
            repository,
            identities,
            registry,
        })
    }

    /// Checks the plan in `file` with `set` (`KEY=VALUE` variables):
    /// actions, parameters, dependencies, variables; as a drill when
    /// `drill`. Nothing runs.
    ///
    /// # Errors
    /// [`Error::Config`] naming the plan file, the step and the key.
    pub async fn check_plan(
        &self,
        file: &Path,
        set: &[String],
        drill: bool,
    ) -> Result<(CheckedPlan, PlanContext)> {
        let ctx = self.plan_context().await?;
        let mut vars = BTreeMap::new();
        for kv in set {
            let (k, v) = parse_set(kv).map_err(|e| Error::config("--set", e))?;
            vars.insert(k, v);
        }
        let opts = CheckOptions::with_set(vars).drill(drill);
        let plan = check_file(file, &ctx.registry, &opts).map_err(|e| {
            Error::config(format!("plan {}", file.display()), dr_core::Error::from(e))
        })?;
        Ok((plan, ctx))
    }

    /// The executor of plan runs: journals in the journal directory and in
    /// the repository, approvals as `settings` say.
    pub fn executor(&self, settings: &RunSettings, repository: Option<Repository>) -> Executor {
        let dir = self
            .config()
            .plans
            .journal_dir(settings.journal_dir.as_deref());
        let mut store = JournalStore::local(dir);
        if let Some(r) = repository {
            store = store.with_repository(r);
        }
        let mut ex = Executor::new(store)
            .with_options(RunOptions::default().assume_yes(settings.assume_yes));
        if let Some(o) = &settings.observer {
            ex = ex.with_observer(o.clone());
        }
        if let Some(f) = &settings.approval_file {
            ex = ex.with_approver(Arc::new(FileApprover::new(f)));
        } else if let Some(a) = &settings.approver {
            ex = ex.with_approver(a.clone());
        }
        ex
    }

    /// Runs a checked plan: steps in dependency order, the journal written
    /// after every step, completed steps rolled back on failure.
    ///
    /// # Errors
    /// Journal errors; a failed step is a report with a failed status.
    pub async fn run_plan(
        &self,
        plan: &CheckedPlan,
        ctx: PlanContext,
        settings: &RunSettings,
    ) -> Result<RunReport> {
        Ok(self.executor(settings, ctx.repository).run(plan).await?)
    }

    /// Continues run `run_id` after a crash or abort, without redoing
    /// completed steps.
    ///
    /// # Errors
    /// No such run; journal errors.
    pub async fn resume_plan(&self, run_id: &str, settings: &RunSettings) -> Result<RunReport> {
        let ctx = self.plan_context().await?;
        let ex = self.executor(settings, ctx.repository);
        Ok(ex.resume(run_id, &ctx.registry).await?)
    }

    /// The runs in the journal directory.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub async fn list_runs(&self, journal_dir: Option<&Path>) -> Result<Vec<RunSummary>> {
        let dir = self.config().plans.journal_dir(journal_dir);
        Ok(JournalStore::local(dir).list().await?)
    }

    /// Runs a checked plan as a drill against scratch targets, evaluates
    /// its checklist (RTO, RPO, every step) and stores the report in the
    /// repository under `drills/`.
    ///
    /// # Errors
    /// Journal and repository errors; a failed checklist is a report that
    /// did not pass.
    pub async fn drill(
        &self,
        plan: &CheckedPlan,
        ctx: PlanContext,
        settings: &RunSettings,
    ) -> Result<DrillReport> {
        let repo = ctx.repository.clone();
        let ex = self.executor(settings, ctx.repository);
        Ok(dr_core::drill::run_drill(&ex, plan, repo.as_ref()).await?)
    }

    /// The drill reports stored in the repository.
    ///
    /// # Errors
    /// The repository cannot be opened or read.
    pub async fn list_drills(&self) -> Result<Vec<DrillSummary>> {
        let repo = self.open().await?;
        Ok(dr_core::drill::list_drills(&repo).await?)
    }

    /// The stored report of drill `id`.
    ///
    /// # Errors
    /// No such drill; the repository cannot be opened or read.
    pub async fn load_drill(&self, id: &str) -> Result<dr_core::drill::DrillReport> {
        let repo = self.open().await?;
        Ok(dr_core::drill::load_drill(&repo, id).await?)
    }
}
