//! The plan executor: runs a checked plan in dependency order, independent
//! steps at once (up to the plan's `max_parallel`), each attempt under the
//! step's timeout, retries with exponential backoff, the journal written
//! after every change; on failure, the completed steps that have a rollback
//! are rolled back in reverse order of completion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::check::{check, CheckOptions, CheckedPlan, CheckedStep, MAX_BACKOFF};
use super::journal::{
    JournalStore, RollbackRecord, RunJournal, RunStatus, StepRecord, StepStatus, JOURNAL_VERSION,
};
use super::observer::{Approver, NoObserver, PlanObserver};
use super::output::bound_text;
use super::report::RunReport;
use super::spec::{OnFailure, RetryOn};
use super::{ActionContext, ActionOutput, ActionRegistry, Checkpoint, CheckpointSink};
use crate::error::{error_chain, Error, ErrorKind, Result};

/// The default bound of a step's captured output in the journal and report.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// How to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Approve every `approve` step (`--yes`).
    pub assume_yes: bool,
    /// Bound of each step's captured output kept in the journal and report.
    pub max_output_bytes: usize,
    /// The run id to use instead of a new one (must not exist yet).
    pub run_id: Option<String>,
    /// Mark the run as a drill (recorded in the journal).
    pub drill: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            assume_yes: false,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            run_id: None,
            drill: false,
        }
    }
}

impl RunOptions {
    /// Options with `--yes` set or not.
    pub fn assume_yes(mut self, yes: bool) -> Self {
        self.assume_yes = yes;
        self
    }

    /// Options with a given run id.
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }
}

/// A new run id: `<plan>-<UTC time>-<4 hex>`, sortable by time per plan.
pub fn new_run_id(plan: &str) -> String {
    let now = Utc::now();
    let noise = (now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{plan}-{}-{noise:04x}", now.format("%Y%m%dT%H%M%SZ"))
}

/// Runs plans. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    journal: JournalStore,
    observer: Arc<dyn PlanObserver>,
    approver: Option<Arc<dyn Approver>>,
    options: RunOptions,
    env: BTreeMap<String, String>,
}

type Shared = Arc<Mutex<RunJournal>>;

impl Executor {
    /// An executor writing journals to `journal`, with no observer and no
    /// approver.
    pub fn new(journal: JournalStore) -> Self {
        Executor {
            journal,
            observer: Arc::new(NoObserver),
            approver: None,
            options: RunOptions::default(),
            env: BTreeMap::new(),
        }
    }

    /// Environment variables for the run's actions, read before the process
    /// environment ([`ActionContext::env_var`]): a library caller's own
    /// values (those it gave [`super::CheckOptions::env`]), or a test's,
    /// without changing the process's.
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    /// Reports progress to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn PlanObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Asks `approver` at `approve` steps.
    pub fn with_approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = Some(approver);
        self
    }

    /// Sets the run options.
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// The journal store.
    pub fn journal_store(&self) -> &JournalStore {
        &self.journal
    }

    /// Runs `plan` from the start under a new run id. The report says how it
    /// went; a failed step is a report with a failed status, not an `Err`.
    ///
    /// # Errors
    /// Only when the run cannot be conducted: the local journal cannot be
    /// written ([`Error::Unavailable`]), or the given run id exists
    /// ([`Error::AlreadyExists`]).
    pub async fn run(&self, plan: &CheckedPlan) -> Result<RunReport> {
        let run_id = match &self.options.run_id {
            Some(id) => {
                super::journal::validate_run_id(id)?;
                if self.journal.path(id).exists() {
                    return Err(Error::AlreadyExists {
                        what: format!("plan run {id}"),
                    });
                }
                id.clone()
            }
            None => new_run_id(plan.name()),
        };
        let now = Utc::now();
        let journal = RunJournal {
            version: JOURNAL_VERSION,
            run_id,
            plan: plan.spec().clone(),
            variables: plan.journal_variables(),
            drill: self.options.drill,
            assume_yes: self.options.assume_yes,
            status: RunStatus::Running,
            started_at: now,
            updated_at: now,
            ended_at: None,
            resumes: 0,
            failed_step: None,
            steps: plan
                .steps()
                .iter()
                .map(|s| StepRecord::new(&s.name, &s.action))
                .collect(),
        };
        self.drive(plan, journal, false).await
    }

    /// Loads run `run_id`'s journal, checks its plan again against
    /// `registry` (secret variables are read again from the environment) and
    /// continues it: completed steps are not run again; a step that was
    /// running when the process died runs again (actions are idempotent, and
    /// see what it checkpointed); a failed step runs again; an interrupted or
    /// failed rollback goes on.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run; [`Error::Conflict`] for a run
    /// that succeeded or was rolled back; [`Error::InvalidConfig`] when the
    /// plan no longer checks (an action missing from `registry`).
    pub async fn resume(&self, run_id: &str, registry: &ActionRegistry) -> Result<RunReport> {
        let mut journal = self.journal.load(run_id).await?;
        if journal.status.is_final() {
            return Err(Error::Conflict {
                what: format!("plan run {run_id}"),
                reason: format!("it is over ({:?}); start a new run", journal.status),
            });
        }
        let options = CheckOptions {
            set: journal.variables.clone(),
            drill: journal.drill,
            ..Default::default()
        };
        let plan = check(&journal.plan, registry, &options)?;
        for rec in &mut journal.steps {
            match rec.status {
                StepStatus::Running | StepStatus::Skipped => rec.status = StepStatus::Pending,
                StepStatus::Failed
                    if plan
                        .step(&rec.name)
                        .is_some_and(|s| s.on_failure == OnFailure::Abort)
                        && journal.status != RunStatus::RollingBack
                        && journal.status != RunStatus::RollbackFailed =>
                {
                    rec.status = StepStatus::Pending;
                    rec.error = None;
                }
                _ => {}
            }
        }
        if journal.status == RunStatus::Failed {
            journal.status = RunStatus::Running;
            journal.failed_step = None;
        }
        if journal.status == RunStatus::RollbackFailed {
            journal.status = RunStatus::RollingBack;
        }
        journal.resumes += 1;
        journal.ended_at = None;
        if self.options.assume_yes {
            journal.assume_yes = true;
        }
        self.drive(&plan, journal, true).await
    }

    async fn persist(&self, journal: &mut RunJournal) -> Result<()> {
        journal.updated_at = Utc::now();
        if let Some(warning) = self.journal.write(journal).await? {
            self.observer.warning(&warning);
        }
        Ok(())
    }

    async fn drive(
        &self,
        plan: &CheckedPlan,
        mut journal: RunJournal,
        resumed: bool,
    ) -> Result<RunReport> {
        let plan = &Arc::new(plan.clone());
        let run_id = journal.run_id.clone();
        let span = tracing::info_span!("plan_run", run_id = %run_id, plan = %plan.name());
        async move {
            tracing::info!(resumed, "plan run starts");
            self.observer.run_started(&run_id, plan.name(), resumed);
            self.persist(&mut journal).await?;
            let shared: Shared = Arc::new(Mutex::new(journal));

            let rolling_back = shared.lock().await.status == RunStatus::RollingBack;
            let failed = if rolling_back { true } else { self.forward(plan, &shared).await? };

            let mut j = shared.lock().await;
            if failed {
                for rec in &mut j.steps {
                    if rec.status == StepStatus::Pending {
                        rec.status = StepStatus::Skipped;
                    }
                }
                let to_undo = rollback_candidates(plan, &j);
                if to_undo.is_empty() {
                    j.status = RunStatus::Failed;
                } else {
                    j.status = RunStatus::RollingBack;
                    self.persist(&mut j).await?;
                    drop(j);
                    let ok = self.rollback(plan, &shared, to_undo).await?;
                    j = shared.lock().await;
                    j.status = if ok { RunStatus::RolledBack } else { RunStatus::RollbackFailed };
                }
            } else {
                j.status = RunStatus::Succeeded;
            }
            j.ended_at = Some(Utc::now());
            self.persist(&mut j).await?;
            let report = RunReport::from_journal(&j, plan.rto());
            tracing::info!(status = ?report.status, duration_secs = report.duration_secs, "plan run ends");
            self.observer.run_finished(&report);
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Runs pending steps; returns whether a step failed with `abort`.
    async fn forward(&self, plan: &Arc<CheckedPlan>, shared: &Shared) -> Result<bool> {
        // Steps run as tasks, so they progress while this loop waits for the
        // journal; dropping the set (the run is cancelled) aborts them.
        let mut running: JoinSet<(String, Result<ActionOutput>)> = JoinSet::new();
        let mut names: BTreeMap<tokio::task::Id, String> = BTreeMap::new();
        let mut in_flight = BTreeSet::new();
        let mut aborting = false;
        let mut seq = shared
            .lock()
            .await
            .steps
            .iter()
            .filter_map(|s| s.completed_seq)
            .max()
            .unwrap_or(0);
        loop {
            if !aborting {
                let mut j = shared.lock().await;
                let mut launched = false;
                for step in plan.ordered() {
                    if running.len() >= plan.max_parallel() {
                        break;
                    }
                    let rec = j.step(&step.name).expect("journal has the step");
                    if rec.status != StepStatus::Pending || in_flight.contains(&step.name) {
                        continue;
                    }
                    let ready = step.after.iter().all(|d| {
                        let dep = j.step(d).expect("journal has the dependency");
                        dep.status == StepStatus::Succeeded
                            || (dep.status == StepStatus::Failed
                                && plan
                                    .step(d)
                                    .is_some_and(|s| s.on_failure == OnFailure::Continue))
                    });
                    if !ready {
                        continue;
                    }
                    let rec = j.step_mut(&step.name);
                    rec.status = StepStatus::Running;
                    rec.started_at = Some(Utc::now());
                    rec.ended_at = None;
                    rec.error = None;
                    in_flight.insert(step.name.clone());
                    let handle = running.spawn(self.clone().run_step(
                        plan.clone(),
                        step.clone(),
                        shared.clone(),
                    ));
                    names.insert(handle.id(), step.name.clone());
                    launched = true;
                }
                if launched {
                    self.persist(&mut j).await?;
                }
            }
            let (name, result) = match running.join_next_with_id().await {
                None => break,
                Some(Ok((id, done))) => {
                    names.remove(&id);
                    done
                }
                Some(Err(e)) => {
                    let name = names.remove(&e.id()).expect("every task has a step");
                    (
                        name.clone(),
                        Err(Error::failed(
                            format!("step {name}"),
                            format!("the action panicked: {e}"),
                        )),
                    )
                }
            };
            in_flight.remove(&name);
            let step = plan.step(&name).expect("the plan has the step");
            let mut j = shared.lock().await;
            let rec = j.step_mut(&name);
            let end = Utc::now();
            rec.ended_at = Some(end);
            rec.duration_secs = rec
                .started_at
                .map(|s| (end - s).num_milliseconds().max(0) as f64 / 1000.0);
            match result {
                Ok(mut out) => {
                    out.log = bound_text(&out.log, self.options.max_output_bytes);
                    out.summary = plan.mask(out.summary);
                    out.log = plan.mask(out.log);
                    seq += 1;
                    rec.status = StepStatus::Succeeded;
                    rec.output = Some(out);
                    rec.checkpoint = None;
                    rec.completed_seq = Some(seq);
                    tracing::info!(step = %name, "step succeeded");
                }
                Err(e) => {
                    rec.status = StepStatus::Failed;
                    rec.error = Some(plan.mask(error_chain(&e)));
                    tracing::warn!(step = %name, error = %rec.error.as_deref().unwrap_or_default(), "step failed");
                    if step.on_failure == OnFailure::Abort {
                        aborting = true;
                        j.failed_step = Some(name.clone());
                    }
                }
            }
            let rec = j.step(&name).expect("journal has the step").clone();
            self.persist(&mut j).await?;
            drop(j);
            self.observer.step_finished(&rec);
        }
        Ok(aborting)
    }

    fn context(
        &self,
        plan: &CheckedPlan,
        step: &CheckedStep,
        j: &RunJournal,
        checkpoint: Option<Checkpoint>,
    ) -> ActionContext {
        let mut ctx = ActionContext::new(j.run_id.clone(), step.name.clone());
        ctx.outputs = j.outputs();
        ctx.rto_left_secs = plan.rto().map(|rto| {
            let elapsed = (Utc::now() - j.started_at).num_milliseconds() as f64 / 1000.0;
            rto.as_secs_f64() - elapsed
        });
        ctx.assume_yes = j.assume_yes;
        ctx.approver = self.approver.clone();
        ctx.deadline = Some(tokio::time::Instant::now() + step.timeout);
        ctx.checkpoint = checkpoint;
        ctx.env = self.env.clone();
        ctx
    }

    /// One step with its attempts. Returns the step name and the outcome.
    async fn run_step(
        self,
        plan: Arc<CheckedPlan>,
        step: CheckedStep,
        shared: Shared,
    ) -> (String, Result<ActionOutput>) {
        let (plan, step) = (&*plan, &step);
        let name = step.name.clone();
        let span = tracing::info_span!("plan_step", step = %name, action = %step.action);
        let result = async {
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let (ctx, action) = {
                    let mut j = shared.lock().await;
                    let rec = j.step_mut(&name);
                    rec.attempts += 1;
                    let previous = rec.checkpoint.clone();
                    let sink = Arc::new(JournalSink {
                        shared: shared.clone(),
                        store: self.journal.clone(),
                        observer: self.observer.clone(),
                        step: name.clone(),
                    });
                    let ctx = self.context(plan, step, &j, Some(Checkpoint::new(previous, sink)));
                    let action = plan.build_action(step, &j.run_id, &ctx.outputs);
                    self.persist(&mut j).await?;
                    (ctx, action?)
                };
                self.observer.step_started(&name, attempt);
                tracing::info!(attempt, "step attempt starts: {}", plan.mask(action.describe()));
                let outcome = match tokio::time::timeout(step.timeout, action.run(&ctx)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Timeout {
                        what: format!("step {name} ({})", step.action),
                        after: step.timeout,
                    }),
                };
                match outcome {
                    Ok(out) => return Ok(out),
                    Err(e) => {
                        let retryable = match step.retry_on {
                            RetryOn::Retryable => e.is_retryable(),
                            RetryOn::Any => e.kind() != ErrorKind::Usage,
                        };
                        if attempt > step.retries || !retryable {
                            return Err(e);
                        }
                        let delay = backoff(step.backoff, attempt);
                        tracing::info!(attempt, delay_secs = delay.as_secs_f64(), error = %plan.mask(error_chain(&e)), "step attempt failed; retrying");
                        self.observer.step_retrying(&name, attempt, &e, delay);
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
        .instrument(span)
        .await;
        (name, result)
    }

    /// Rolls back `steps` in the given order; returns whether all succeeded.
    async fn rollback(
        &self,
        plan: &CheckedPlan,
        shared: &Shared,
        steps: Vec<String>,
    ) -> Result<bool> {
        let mut all_ok = true;
        for name in steps {
            let step = plan.step(&name).expect("the plan has the step");
            let span = tracing::info_span!("plan_rollback", step = %name, action = %step.action);
            self.observer.rollback_started(&name);
            let (ctx, action, output) = {
                let mut j = shared.lock().await;
                let mut ctx = self.context(plan, step, &j, None);
                ctx.step = name.clone();
                let action = plan.build_rollback(step, &j.run_id, &ctx.outputs);
                let rec = j.step_mut(&name);
                let output = rec.output.clone().unwrap_or_default();
                rec.rollback = Some(RollbackRecord {
                    started_at: Utc::now(),
                    ended_at: None,
                    output: None,
                    error: None,
                });
                self.persist(&mut j).await?;
                (ctx, action, output)
            };
            let own = matches!(step.rollback, Some(super::check::CheckedRollback::Own));
            let result = async {
                let action = action?.ok_or_else(|| Error::failed(format!("rollback of {name}"), "no rollback configured"))?;
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let fut = async {
                        if own {
                            action.rollback(&ctx, &output).await
                        } else {
                            action.run(&ctx).await
                        }
                    };
                    let r = match tokio::time::timeout(step.timeout, fut).await {
                        Ok(r) => r,
                        Err(_) => Err(Error::Timeout {
                            what: format!("rollback of step {name}"),
                            after: step.timeout,
                        }),
                    };
                    match r {
                        Err(e) if attempt <= step.retries && e.is_retryable() => {
                            let delay = backoff(step.backoff, attempt);
                            tracing::info!(attempt, error = %plan.mask(error_chain(&e)), "rollback attempt failed; retrying");
                            self.observer.step_retrying(&name, attempt, &e, delay);
                            tokio::time::sleep(delay).await;
                        }
                        other => return other,
                    }
                }
            }
            .instrument(span)
            .await;
            let mut j = shared.lock().await;
            let rec = j.step_mut(&name);
            let rb = rec.rollback.as_mut().expect("set above");
            rb.ended_at = Some(Utc::now());
            match result {
                Ok(mut out) => {
                    out.log = plan.mask(bound_text(&out.log, self.options.max_output_bytes));
                    out.summary = plan.mask(out.summary);
                    rb.output = Some(out);
                    rec.status = StepStatus::RolledBack;
                    tracing::info!(step = %name, "step rolled back");
                }
                Err(e) => {
                    rb.error = Some(plan.mask(error_chain(&e)));
                    rec.status = StepStatus::RollbackFailed;
                    all_ok = false;
                    tracing::error!(step = %name, error = %rb.error.as_deref().unwrap_or_default(), "rollback failed");
                }
            }
            let rec = rec.clone();
            self.persist(&mut j).await?;
            drop(j);
            self.observer.rollback_finished(&rec);
        }
        Ok(all_ok)
    }
}

/// The steps to roll back, latest completed first: succeeded steps with a
/// rollback, and steps whose rollback failed before (retried on resume).
fn rollback_candidates(plan: &CheckedPlan, j: &RunJournal) -> Vec<String> {
    let mut c: Vec<(u64, String)> = j
        .steps
        .iter()
        .filter(|r| matches!(r.status, StepStatus::Succeeded | StepStatus::RollbackFailed))
        .filter(|r| plan.step(&r.name).is_some_and(|s| s.rollback.is_some()))
        .map(|r| (r.completed_seq.unwrap_or(0), r.name.clone()))
        .collect();
    c.sort_by_key(|x| std::cmp::Reverse(x.0));
    c.into_iter().map(|(_, n)| n).collect()
}

/// The delay before retry number `attempt` (1-based): `base * 2^(attempt-1)`,
/// at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Writes checkpoints into the run's journal.
struct JournalSink {
    shared: Shared,
    store: JournalStore,
    observer: Arc<dyn PlanObserver>,
    step: String,
}

#[async_trait]
impl CheckpointSink for JournalSink {
    async fn save(&self, state: serde_json::Value) -> Result<()> {
        let mut j = self.shared.lock().await;
        j.step_mut(&self.step).checkpoint = Some(state);
        j.updated_at = Utc::now();
        if let Some(w) = self.store.write(&j).await? {
            self.observer.warning(&w);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), Duration::from_millis(100));
        assert_eq!(backoff(b, 2), Duration::from_millis(200));
        assert_eq!(backoff(b, 4), Duration::from_millis(800));
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
    }
}
