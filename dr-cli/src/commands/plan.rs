//! `dr plan check|run|resume|list` and `dr drill`: the operations of
//! `dr_ops::plans`, with progress on stderr and approval on the terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use dr_core::plan::{ApprovalRequest, Approver, PlanObserver, RunReport, RunStatus, StepRecord};
use dr_ops::plans::RunSettings;

use super::Ctx;
use crate::args::{DrillArgs, DrillCommand, JournalArgs, PlanCommand, PlanRunArgs};
use crate::exit::{Usage, EXIT_FAILED, EXIT_OK, EXIT_VERIFY_FAILED};

/// How long `plan check --preflight` waits for one step's target.
const PREFLIGHT_LIMIT: Duration = Duration::from_secs(15);

fn settings(
    journal: &JournalArgs,
    yes: bool,
    approval_file: Option<&std::path::Path>,
) -> RunSettings {
    let mut s = RunSettings::default();
    s.journal_dir = journal.journal_dir.clone();
    s.assume_yes = yes;
    s.approval_file = approval_file.map(std::path::Path::to_path_buf);
    s.observer = Some(Arc::new(StderrObserver));
    if std::io::stdin().is_terminal() {
        s.approver = Some(Arc::new(TerminalApprover));
    }
    s
}

fn run_settings(a: &PlanRunArgs) -> RunSettings {
    settings(&a.journal, a.yes, a.approval_file.as_deref())
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
pub(super) async fn run(ctx: &Ctx<'_>, cmd: &PlanCommand) -> Result<i32> {
    let json = ctx.cli.json;
    match cmd {
        PlanCommand::Check(c) => {
            let a = &c.plan;
            let (plan, _) = ctx
                .ops(&a.run.repo)
                .check_plan(&a.file, &a.run.set, false)
                .await?;
            let preview = plan.preview();
            if !c.preflight {
                if json {
                    println!("{}", serde_json::to_string_pretty(&preview)?);
                } else {
                    println!("{}", preview.to_text());
                }
                return Ok(EXIT_OK);
            }
            let checks = plan.preflight(PREFLIGHT_LIMIT).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "plan": preview,
                        "preflight": checks,
                    }))?
                );
            } else {
                println!("{}\n\npreflight:", preview.to_text());
                for c in &checks {
                    let (mark, text) = match &c.outcome {
                        Ok(dr_core::plan::Preflight::Reached(t)) => ("ok     ", t.as_str()),
                        Ok(dr_core::plan::Preflight::NotChecked(t)) => ("skipped", t.as_str()),
                        Err(e) => ("FAILED ", e.as_str()),
                    };
                    println!("  {mark} {} ({}): {text}", c.step, c.action);
                }
            }
            Ok(if checks.iter().any(|c| c.failed()) {
                EXIT_VERIFY_FAILED
            } else {
                EXIT_OK
            })
        }
        PlanCommand::Run(a) => {
            let ops = ctx.ops(&a.run.repo);
            let (plan, plan_ctx) = ops.check_plan(&a.file, &a.run.set, false).await?;
            if a.run.dry_run {
                let preview = plan.preview();
                if json {
                    println!("{}", serde_json::to_string_pretty(&preview)?);
                } else {
                    println!("{}\n(dry run: nothing was done)", preview.to_text());
                }
                return Ok(EXIT_OK);
            }
            let report = ops.run_plan(&plan, plan_ctx, &run_settings(&a.run)).await?;
            Ok(finish(&report, json))
        }
        PlanCommand::Resume(a) => {
            let s = settings(&a.journal, a.yes, a.approval_file.as_deref());
            let report = ctx.ops(&a.repo).resume_plan(&a.run_id, &s).await?;
            Ok(finish(&report, json))
        }
        PlanCommand::List(a) => {
            let ops = ctx.ops(&Default::default());
            let runs = ops.list_runs(a.journal_dir.as_deref()).await?;
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
pub(super) async fn drill(ctx: &Ctx<'_>, a: &DrillArgs) -> Result<i32> {
    let json = ctx.cli.json;
    match (&a.command, &a.file) {
        (Some(DrillCommand::List { repo }), _) => {
            let drills = ctx.ops(repo).list_drills().await?;
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
        (Some(DrillCommand::Report { repo, id, html }), _) => {
            let report = ctx.ops(repo).load_drill(id).await?;
            match html.as_deref() {
                Some(p) => super::write_output(p, report.to_html().as_bytes())?,
                None if json => println!("{}", serde_json::to_string_pretty(&report)?),
                None => println!("{}", report.to_markdown()),
            }
            Ok(if report.passed {
                EXIT_OK
            } else {
                EXIT_VERIFY_FAILED
            })
        }
        (None, Some(file)) => {
            let run = &a.run;
            let ops = ctx.ops(&run.repo);
            let (plan, plan_ctx) = ops.check_plan(file, &run.set, true).await?;
            let report = ops.drill(&plan, plan_ctx, &run_settings(run)).await?;
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
