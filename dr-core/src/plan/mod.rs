//! Recovery plans: ordered, resumable, timed steps with rollback.
//!
//! A plan is a TOML file (or a [`PlanSpec`] built in Rust) of named steps,
//! each running an [`Action`] that a system crate provides (`postgres.*`,
//! `dns.*`, ...) or a generic one ([`actions`]: `exec`, `wait`, `approve`,
//! `http.check`, `notify.webhook`).
//!
//! The flow, plan first then execute (as rustic's `prune_plan`/`prune`):
//! 1. [`PlanSpec::from_toml`] parses; [`check`] (or [`check_file`]) validates
//!    everything before anything runs: unknown action, missing or ill-typed
//!    parameter, unknown variable, bad duration, unknown `after`, cycle,
//!    unreachable step. Every problem is a [`PlanIssue`] naming its step and key.
//! 2. The [`CheckedPlan`] prints ([`CheckedPlan::preview`]): that is
//!    `plan check` and `--dry-run`.
//! 3. [`Executor::run`] runs it: dependency order, independent steps at once,
//!    a timeout per attempt, retries with exponential backoff, the journal
//!    ([`JournalStore`]) written after every change, rollback of completed
//!    steps in reverse order when a step fails. [`Executor::resume`]
//!    continues a run after a crash or abort without redoing completed steps.
//! 4. The [`RunReport`] renders as JSON and Markdown, with the total against
//!    the plan's RTO.
//!
//! Progress goes to a [`PlanObserver`] (no-op by default); `approve` steps ask
//! an [`Approver`] (a terminal in the CLI, [`FileApprover`] for automation).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dr_core::Result<()> {
//! use dr_core::plan::{actions, check, CheckOptions, Executor, JournalStore, PlanSpec, RunStatus, StepSpec};
//!
//! let mut registry = dr_core::plan::ActionRegistry::new();
//! actions::register(&mut registry);
//! let spec = PlanSpec::new("smoke")
//!     .rto("1m")
//!     .step(StepSpec::new("hello", "exec").param("argv", serde_json::json!(["echo", "hello"])))
//!     .step(StepSpec::new("pause", "wait").param("duration", "10ms").after(["hello"]));
//! let plan = check(&spec, &registry, &CheckOptions::default())?;
//! print!("{}", plan.preview().to_text());
//!
//! let journal = tempfile::tempdir().unwrap();
//! let report = Executor::new(JournalStore::local(journal.path())).run(&plan).await?;
//! assert_eq!(report.status, RunStatus::Succeeded);
//! assert_eq!(report.within_rto, Some(true));
//! # Ok(()) }
//! ```

mod action;
pub mod actions;
mod check;
mod executor;
mod journal;
mod observer;
mod output;
mod report;
mod spec;
mod vars;

/// [`crate::error_chain`], under the path it had first.
pub use crate::error::error_chain;
pub use action::{
    parse_params, Action, ActionContext, ActionFactory, ActionOutput, ActionRegistry, Checkpoint,
    CheckpointSink, Preflight,
};
pub use check::{
    check, check_file, parse_set, CheckOptions, CheckedPlan, CheckedRollback, CheckedStep,
    PlanErrors, PlanIssue, PlanPreview, StepPreflight, DEFAULT_BACKOFF, DEFAULT_MAX_PARALLEL,
    DEFAULT_STEP_TIMEOUT, MAX_BACKOFF,
};
pub use executor::{backoff, new_run_id, Executor, RunOptions, DEFAULT_MAX_OUTPUT_BYTES};
pub use journal::{
    validate_run_id, JournalStore, RollbackRecord, RunJournal, RunStatus, RunSummary, StepRecord,
    StepStatus, JOURNAL_VERSION, REPOSITORY_JOURNAL_PREFIX,
};
pub use observer::{ApprovalRequest, Approver, FileApprover, NoObserver, PlanObserver};
pub use output::{bound_text, BoundedBuffer};
pub use report::{RunReport, StepReport};
pub use spec::{
    DrillCheck, DrillSpec, OnFailure, PlanSpec, RetryOn, RollbackAction, RollbackSpec, StepSpec,
    VariableSpec,
};
