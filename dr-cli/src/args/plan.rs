//! `dr plan` and `dr drill`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::RepoArgs;

/// `dr plan ...`
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Validate a plan (actions, parameters, dependencies, variables) and
    /// print it in order. Nothing runs, and nothing outside is touched
    /// unless --preflight.
    Check(PlanCheckArgs),
    /// Run a plan: steps in dependency order, journal after every step,
    /// rollback of completed steps on failure.
    Run(PlanFileArgs),
    /// Continue a run after a crash or abort, without redoing completed steps.
    Resume(ResumeArgs),
    /// List the runs in the journal directory.
    List(JournalArgs),
}

/// Where journals live.
#[derive(Debug, Args, Clone)]
pub struct JournalArgs {
    /// Directory of run journals (default `[plans] journal_dir` or ./dr-runs).
    #[arg(long, env = "DR_JOURNAL_DIR", value_name = "DIR")]
    pub journal_dir: Option<PathBuf>,
}

/// A plan file and how to run it.
#[derive(Debug, Args, Clone)]
pub struct PlanFileArgs {
    /// The plan (TOML).
    pub file: PathBuf,
    /// Variables, approvals, repository and journals.
    #[command(flatten)]
    pub run: PlanRunArgs,
}

/// How a plan runs: its variables, approvals, repository and journals
/// (shared by `dr plan run|check` and `dr drill`).
#[derive(Debug, Args, Clone)]
pub struct PlanRunArgs {
    /// A variable, `key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Resolve and print what each step would do, then stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Approve every `approve` step in advance.
    #[arg(long)]
    pub yes: bool,
    /// Approvals from a file (automation): see dr_core::plan::FileApprover.
    #[arg(long, value_name = "FILE")]
    pub approval_file: Option<PathBuf>,
    /// Repository selection (journals and drill reports go there too).
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Journals.
    #[command(flatten)]
    pub journal: JournalArgs,
}

/// `dr plan check`
#[derive(Debug, Args, Clone)]
pub struct PlanCheckArgs {
    /// The plan and its variables.
    #[command(flatten)]
    pub plan: PlanFileArgs,
    /// After the offline check, touch what each step will work on, changing
    /// nothing: connect to its database, read its DNS record, find its
    /// program, its base backup and server programs, open a connection to
    /// its URL. Steps that use an earlier step's output are not checked.
    /// Exit 1 when something could not be reached.
    #[arg(long)]
    pub preflight: bool,
}

/// `dr plan resume`
#[derive(Debug, Args, Clone)]
pub struct ResumeArgs {
    /// The run id (`dr plan list`).
    pub run_id: String,
    /// Approve every `approve` step in advance.
    #[arg(long)]
    pub yes: bool,
    /// Approvals from a file.
    #[arg(long, value_name = "FILE")]
    pub approval_file: Option<PathBuf>,
    /// Repository selection.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Journals.
    #[command(flatten)]
    pub journal: JournalArgs,
}

/// `dr drill PLAN` or `dr drill list`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DrillArgs {
    /// `list`.
    #[command(subcommand)]
    pub command: Option<DrillCommand>,
    /// The plan to drill (clap leaves an optional flattened group unset
    /// beside a subcommand, so the file is its own optional argument).
    pub file: Option<PathBuf>,
    /// How it runs.
    #[command(flatten)]
    pub run: PlanRunArgs,
}

/// `dr drill list`
#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// The drill reports stored in the repository.
    List {
        /// Repository selection.
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// One stored drill report: Markdown, JSON with --json, or with --html
    /// FILE a self-contained page (the checklist, a timeline of the steps
    /// against the RTO).
    Report {
        /// Repository selection.
        #[command(flatten)]
        repo: RepoArgs,
        /// The drill's id (`dr drill list`).
        id: String,
        /// Write the HTML page to FILE (`-` for stdout).
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
    },
}
