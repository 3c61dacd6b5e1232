//! `dr plan check|run|resume|list` and `dr drill`: the registry of every
//! action dr knows, wired from dr.toml, over `dr_core::plan`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use clap::{Args, Subcommand};
use dr_core::plan::{
    actions, check_file, parse_set, ActionRegistry, ApprovalRequest, Approver, CheckOptions,
    CheckedPlan, Executor, FileApprover, JournalStore, PlanObserver, RunOptions, RunReport,
    RunStatus, StepRecord,
};
use dr_storage::{Identities, Repository, RepositorySettings};

use crate::args::RepoArgs;
use crate::config::DrConfig;
use crate::exit::{Usage, EXIT_FAILED, EXIT_OK, EXIT_VERIFY_FAILED};

/// `dr plan ...`
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Validate a plan (actions, parameters, dependencies, variables) and
    /// print it in order. Nothing runs.
    Check(PlanFileArgs),
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
    /// The plan to drill.
    #[command(flatten)]
    pub run: Option<PlanFileArgs>,
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
}

/// The repository and keys when they can be had (a plan without repository
/// steps runs without them).
async fn repository(
    config: &DrConfig,
    args: &RepoArgs,
) -> (Option<Repository>, Option<Identities>, RepositorySettings) {
    let s = args.apply(&config.repository);
    let Ok(location) = s.location() else {
        return (None, None, s);
    };
    let repo = match Repository::open(&location, &s.store_options()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "no repository for this plan");
            return (None, None, s);
        }
    };
    let ids = s.key_source().ok().and_then(|k| repo.unlock(&k).ok());
    (Some(repo), ids, s)
}

/// Every action dr can run, wired from the configuration: the generic ones,
/// PostgreSQL's, and those whose system is configured (DNS with `[dns]`;
/// Vault restores and PITR with a repository and its key; Kubernetes steps
/// through KUBECONFIG).
///
/// # Errors
/// A `[dns]` section whose provider cannot be set up.
pub async fn registry(
    config: &DrConfig,
    repo: Option<&Repository>,
    ids: Option<&Identities>,
    s: &RepositorySettings,
) -> Result<ActionRegistry> {
    let mut registry = ActionRegistry::new();
    actions::register(&mut registry);
    dr_postgres::plan::register(&mut registry);
    dr_k8s::register(
        &mut registry,
        dr_k8s::KubeContext::new(dr_k8s::ClusterConfig::default()),
    );
    if let Some(dns) = &config.dns {
        let provider = dr_dns::connect(dns).await.map_err(dr_core::Error::from)?;
        dr_dns::register(&mut registry, provider);
    }
    if let (Some(repo), Some(ids)) = (repo, ids) {
        let vault = dr_vault::VaultConfig::from_env().unwrap_or_default();
        dr_vault::register(
            &mut registry,
            dr_vault::VaultActionEnv {
                repository: repo.clone(),
                identities: ids.clone(),
                vault,
            },
        );
        dr_postgres::logical::action::register(
            &mut registry,
            dr_postgres::logical::action::LogicalActionEnv {
                repository: repo.clone(),
                identities: ids.clone(),
            },
        );
        let fetch_args = crate::wal::fetch_args(s)?;
        dr_postgres::physical::register(
            &mut registry,
            dr_postgres::physical::PitrActionEnv::new(
                repo.clone(),
                ids.clone(),
                std::env::current_exe()?,
                fetch_args,
            ),
        );
    }
    Ok(registry)
}

fn journal_dir(config: &DrConfig, args: &JournalArgs) -> PathBuf {
    args.journal_dir
        .clone()
        .or_else(|| config.plans.journal_dir.clone())
        .unwrap_or_else(|| PathBuf::from("dr-runs"))
}

async fn checked(
    config: &DrConfig,
    a: &PlanFileArgs,
    drill: bool,
    values_needed: bool,
) -> Result<(CheckedPlan, Option<Repository>)> {
    let (repo, ids, s) = repository(config, &a.repo).await;
    let registry = registry(config, repo.as_ref(), ids.as_ref(), &s).await?;
    let mut set = BTreeMap::new();
    for kv in &a.set {
        let (k, v) = parse_set(kv).map_err(Usage::wrap)?;
        set.insert(k, v);
    }
    let opts = CheckOptions::with_set(set).drill(drill);
    let _ = values_needed;
    let plan = check_file(&a.file, &registry, &opts)
        .map_err(|e| Usage::wrap(dr_core::Error::from(e)))
        .with_context(|| format!("plan {}", a.file.display()))?;
    Ok((plan, repo))
}

fn executor(
    config: &DrConfig,
    journal: &JournalArgs,
    repo: Option<Repository>,
    yes: bool,
    approvals: Option<&Path>,
) -> Executor {
    let mut store = JournalStore::local(journal_dir(config, journal));
    if let Some(r) = repo {
        store = store.with_repository(r);
    }
    let mut ex = Executor::new(store)
        .with_observer(Arc::new(StderrObserver))
        .with_options(RunOptions::default().assume_yes(yes));
    if let Some(f) = approvals {
        ex = ex.with_approver(Arc::new(FileApprover::new(f)));
    } else if std::io::stdin().is_terminal() {
        ex = ex.with_approver(Arc::new(TerminalApprover));
    }
    ex
}

fn finish(report: &RunReport, json: bool) -> i32 {
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_markdown());
    }
    match report.status {
        RunStatus::Succeeded => EXIT_OK,
        _ => EXIT_FAILED,
    }
}

/// Runs a `dr plan` command.
///
/// # Errors
/// Plan errors (usage), journal and repository errors.
pub async fn run(config: &DrConfig, cmd: &PlanCommand, json: bool) -> Result<i32> {
    match cmd {
        PlanCommand::Check(a) => {
            let (plan, _) = checked(config, a, false, false).await?;
            let preview = plan.preview();
            if json {
                println!("{}", serde_json::to_string_pretty(&preview)?);
            } else {
                println!("{}", preview.to_text());
            }
            Ok(EXIT_OK)
        }
        PlanCommand::Run(a) => {
            let (plan, repo) = checked(config, a, false, !a.dry_run).await?;
            if a.dry_run {
                let preview = plan.preview();
                if json {
                    println!("{}", serde_json::to_string_pretty(&preview)?);
                } else {
                    println!("{}\n(dry run: nothing was done)", preview.to_text());
                }
                return Ok(EXIT_OK);
            }
            let ex = executor(config, &a.journal, repo, a.yes, a.approval_file.as_deref());
            let report = ex.run(&plan).await?;
            Ok(finish(&report, json))
        }
        PlanCommand::Resume(a) => {
            let (repo, ids, s) = repository(config, &a.repo).await;
            let registry = registry(config, repo.as_ref(), ids.as_ref(), &s).await?;
            let ex = executor(config, &a.journal, repo, a.yes, a.approval_file.as_deref());
            let report = ex.resume(&a.run_id, &registry).await?;
            Ok(finish(&report, json))
        }
        PlanCommand::List(a) => {
            let runs = JournalStore::local(journal_dir(config, a)).list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs");
            } else {
                for r in runs {
                    println!(
                        "{}  {}  {:?}  {}",
                        r.run_id,
                        r.plan,
                        r.status,
                        r.started_at.to_rfc3339()
                    );
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// Runs `dr drill`.
///
/// # Errors
/// As [`run`]; a drill that fails its checklist exits 1.
pub async fn drill(config: &DrConfig, a: &DrillArgs, json: bool) -> Result<i32> {
    match (&a.command, &a.run) {
        (Some(DrillCommand::List { repo }), _) => {
            let (repo, _, _) = repository(config, repo).await;
            let repo =
                repo.ok_or_else(|| Usage::msg("dr drill list needs a repository (--repo)"))?;
            let drills = dr_core::drill::list_drills(&repo).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&drills)?);
            } else if drills.is_empty() {
                println!("no drills");
            } else {
                for d in drills {
                    println!(
                        "{}  {}  {}  {:.1} s  {}",
                        d.id,
                        d.plan,
                        d.started_at.to_rfc3339(),
                        d.duration_secs,
                        if d.passed { "passed" } else { "FAILED" }
                    );
                }
            }
            Ok(EXIT_OK)
        }
        (None, Some(run)) => {
            let (plan, repo) = checked(config, run, true, true).await?;
            let ex = executor(
                config,
                &run.journal,
                repo.clone(),
                run.yes,
                run.approval_file.as_deref(),
            );
            let report = dr_core::drill::run_drill(&ex, &plan, repo.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", report.to_markdown());
            }
            Ok(if report.passed {
                EXIT_OK
            } else {
                EXIT_VERIFY_FAILED
            })
        }
        (None, None) => Err(Usage::msg("dr drill PLAN, or dr drill list")),
    }
}

/// Step progress on stderr.
#[derive(Debug)]
struct StderrObserver;

impl PlanObserver for StderrObserver {
    fn run_started(&self, run_id: &str, plan: &str, resumed: bool) {
        eprintln!(
            "{} run {run_id} of plan {plan}",
            if resumed { "resuming" } else { "starting" }
        );
    }
    fn step_started(&self, step: &str, attempt: u32) {
        if attempt > 1 {
            eprintln!("  -> {step} (attempt {attempt})");
        } else {
            eprintln!("  -> {step}");
        }
    }
    fn step_retrying(&self, step: &str, attempt: u32, error: &dr_core::Error, delay: Duration) {
        eprintln!("     {step}: attempt {attempt} failed ({error}); retrying in {delay:?}");
    }
    fn step_finished(&self, r: &StepRecord) {
        eprintln!(
            "  <- {} {:?} ({:.1} s)",
            r.name,
            r.status,
            r.duration_secs.unwrap_or_default()
        );
    }
    fn rollback_started(&self, step: &str) {
        eprintln!("  rolling back {step}");
    }
    fn warning(&self, message: &str) {
        eprintln!("  warning: {message}");
    }
}

/// Asks on the terminal.
#[derive(Debug)]
struct TerminalApprover;

#[async_trait]
impl Approver for TerminalApprover {
    async fn approve(&self, request: &ApprovalRequest) -> dr_core::Result<bool> {
        let prompt = format!("[{}] {} [y/N] ", request.step, request.prompt);
        let answer = tokio::task::spawn_blocking(move || {
            eprint!("{prompt}");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map(|_| line)
        })
        .await
        .map_err(|e| dr_core::Error::failed("approval prompt", e.to_string()))?
        .map_err(|e| dr_core::Error::failed("approval prompt", e.to_string()))?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
    }
}
