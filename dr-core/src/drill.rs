//! Drills: a recovery plan run against scratch targets, judged against the
//! runbook's checklist, with the report kept in the repository
//! (`drills/<id>.json`).
//!
//! The checklist (DESIGN.md, "Validation the runbook asks for"):
//! 1. the backup exists and is readable,
//! 2. a restore completes without errors,
//! 3. data integrity is verified,
//! 4. the application connects,
//! 5. the time to restore is below the objective (the plan's `rto`).
//!
//! Items 1 to 4 are proved by the steps that carry the matching `drill` tag
//! (`drill = ["restore"]`): an item passes when at least one step carries it
//! and all of those succeeded. Item 5 passes when the run succeeded within
//! the plan's RTO; a plan without `rto` fails it. The scratch targets are the
//! plan's `[drill.variables]`: check the plan with
//! [`CheckOptions::drill`](crate::plan::CheckOptions) set.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dr_core::Result<()> {
//! use dr_core::drill;
//! use dr_core::plan::{actions, check, ActionRegistry, CheckOptions, DrillCheck, Executor, JournalStore, PlanSpec, StepSpec};
//!
//! let mut registry = ActionRegistry::new();
//! actions::register(&mut registry);
//! let spec = PlanSpec::new("drill-doc").rto("1m").step(
//!     StepSpec::new("all", "exec")
//!         .param("argv", serde_json::json!(["true"]))
//!         .drill(&DrillCheck::ALL),
//! );
//! let plan = check(&spec, &registry, &CheckOptions::default().drill(true))?;
//! let dir = tempfile::tempdir().unwrap();
//! let report = drill::run_drill(&Executor::new(JournalStore::local(dir.path())), &plan, None).await?;
//! assert!(report.passed);
//! # Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use dr_storage::object_store::{path::Path as ObjectPath, ObjectStore};
use dr_storage::Repository;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{
    CheckedPlan, DrillCheck, Executor, RunOptions, RunReport, RunStatus, StepStatus,
};

/// Where drill reports live in a repository.
pub const DRILL_PREFIX: &str = "drills";

/// One item of the checklist.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChecklistItem {
    /// `backup`, `restore`, `integrity`, `app` or `rto`.
    pub check: String,
    /// The runbook's words.
    pub description: String,
    /// Whether it passed.
    pub passed: bool,
    /// Which steps proved it, or why it failed.
    pub detail: String,
}

/// A drill's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillReport {
    /// The drill id (the run id).
    pub id: String,
    /// The plan.
    pub plan: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Whether every checklist item passed.
    pub passed: bool,
    /// The checklist.
    pub checklist: Vec<ChecklistItem>,
    /// The plan run.
    pub run: RunReport,
}

/// A drill in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillSummary {
    /// Id.
    pub id: String,
    /// Plan.
    pub plan: String,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// Whether it passed.
    pub passed: bool,
    /// Run duration in seconds.
    pub duration_secs: f64,
    /// The RTO in seconds.
    pub rto_secs: Option<f64>,
}

impl DrillReport {
    /// The listing line of this drill.
    pub fn summary(&self) -> DrillSummary {
        DrillSummary {
            id: self.id.clone(),
            plan: self.plan.clone(),
            started_at: self.started_at,
            passed: self.passed,
            duration_secs: self.run.duration_secs,
            rto_secs: self.run.rto_secs,
        }
    }

    /// The report as one self-contained HTML page ([`crate::html`]): the
    /// outcome, the runbook checklist ticked or not, then the run's
    /// timeline of steps against the RTO and its table
    /// ([`RunReport::to_html_body`]). For post-mortems and audits.
    pub fn to_html(&self) -> String {
        use crate::html::escape;
        let mut h = crate::html::head(&format!("drill {}", self.id));
        h.push_str(&format!(
            "<h1>Drill {}: {} — <span class=\"{}\">{}</span></h1>\n<h2>Checklist</h2>\n\
             <table><tr><th>check</th><th>result</th><th>detail</th></tr>\n",
            escape(&self.id),
            escape(&self.plan),
            if self.passed { "ok" } else { "bad" },
            if self.passed { "PASSED" } else { "FAILED" }
        ));
        for c in &self.checklist {
            h.push_str(&format!(
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>\n",
                escape(&c.description),
                if c.passed { "ok" } else { "bad" },
                if c.passed {
                    "&#10003; pass"
                } else {
                    "&#10007; FAIL"
                },
                escape(&c.detail)
            ));
        }
        h.push_str("</table>\n<h2>Run</h2>\n");
        h.push_str(&self.run.to_html_body());
        h.push_str("</body></html>\n");
        h
    }

    /// The report as Markdown: the checklist, then the run.
    pub fn to_markdown(&self) -> String {
        let mut md = format!(
            "# Drill `{}`: {} — {}\n\n| check | result | detail |\n|---|---|---|\n",
            self.id,
            self.plan,
            if self.passed { "PASSED" } else { "**FAILED**" }
        );
        for c in &self.checklist {
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                c.description,
                if c.passed { "pass" } else { "**FAIL**" },
                c.detail.replace('|', "\\|")
            ));
        }
        md.push('\n');
        md.push_str(&self.run.to_markdown().replacen("# ", "## ", 1));
        md
    }
}

/// Judges a run against the checklist. See the module docs.
pub fn evaluate(plan: &CheckedPlan, run: &RunReport) -> Vec<ChecklistItem> {
    let mut items = Vec::new();
    for check in DrillCheck::ALL {
        let steps: Vec<_> = plan
            .steps()
            .iter()
            .filter(|s| s.drill.contains(&check))
            .collect();
        let key = serde_json::to_value(check)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let (passed, detail) = if steps.is_empty() {
            (
                false,
                "no step of the plan proves it (tag one with `drill`)".to_string(),
            )
        } else {
            let failed: Vec<String> = steps
                .iter()
                .filter_map(|s| {
                    let r = run.steps.iter().find(|r| r.name == s.name)?;
                    (r.status != StepStatus::Succeeded && r.status != StepStatus::RolledBack)
                        .then(|| format!("{} {:?}", s.name, r.status).to_lowercase())
                })
                .collect();
            let names = steps
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if failed.is_empty() {
                (true, format!("proved by {names}"))
            } else {
                (false, format!("not proved: {}", failed.join(", ")))
            }
        };
        items.push(ChecklistItem {
            check: key,
            description: check.description().to_string(),
            passed,
            detail,
        });
    }
    let (passed, detail) = match run.rto_secs {
        None => (false, "the plan declares no rto".to_string()),
        Some(rto) if run.status != RunStatus::Succeeded => (
            false,
            format!("the run did not succeed (objective {rto:.0}s)"),
        ),
        Some(rto) => (
            run.duration_secs <= rto,
            format!(
                "{:.1}s against an objective of {rto:.0}s",
                run.duration_secs
            ),
        ),
    };
    items.push(ChecklistItem {
        check: "rto".into(),
        description: "time to restore below the objective".into(),
        passed,
        detail,
    });
    items
}

/// Runs `plan` as a drill (the plan checked with `CheckOptions::drill`),
/// judges it, and stores the report in `repository` when one is given.
///
/// # Errors
/// Those of [`Executor::run`] and of [`store_drill`]; a failing drill is a
/// report with `passed == false`, not an error.
pub async fn run_drill(
    executor: &Executor,
    plan: &CheckedPlan,
    repository: Option<&Repository>,
) -> Result<DrillReport> {
    let options = RunOptions {
        drill: true,
        ..Default::default()
    };
    let run = executor.clone().with_options(options).run(plan).await?;
    let checklist = evaluate(plan, &run);
    let report = DrillReport {
        id: run.run_id.clone(),
        plan: run.plan.clone(),
        started_at: run.started_at,
        ended_at: run.ended_at,
        passed: checklist.iter().all(|c| c.passed),
        checklist,
        run,
    };
    tracing::info!(drill = %report.id, passed = report.passed, "drill finished");
    if let Some(repo) = repository {
        store_drill(repo, &report).await?;
    }
    Ok(report)
}

fn drill_path(id: &str) -> String {
    format!("{DRILL_PREFIX}/{id}.json")
}

/// Writes `report` to `drills/<id>.json` (never overwrites).
///
/// # Errors
/// [`Error::Storage`] ([`dr_storage::Error::AlreadyExists`] when a drill of
/// that id is stored).
pub async fn store_drill(repository: &Repository, report: &DrillReport) -> Result<()> {
    crate::plan::validate_run_id(&report.id)?;
    repository
        .put_json_create(&drill_path(&report.id), report)
        .await?;
    Ok(())
}

/// Reads drill `id`.
///
/// # Errors
/// [`Error::NotFound`]; [`Error::Failed`] when the report does not parse.
pub async fn load_drill(repository: &Repository, id: &str) -> Result<DrillReport> {
    crate::plan::validate_run_id(id)?;
    let path = drill_path(id);
    let bytes = match repository
        .store()
        .get(&ObjectPath::from(path.as_str()))
        .await
    {
        Ok(r) => r
            .bytes()
            .await
            .map_err(|e| dr_storage::Error::store(path.clone(), e))?,
        Err(dr_storage::object_store::Error::NotFound { .. }) => {
            return Err(Error::NotFound {
                what: format!("drill {id}"),
            })
        }
        Err(e) => return Err(dr_storage::Error::store(path, e).into()),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::failed(format!("reading drill report {id}"), e.to_string()))
}

/// The drills stored in `repository`, newest first.
///
/// # Errors
/// The store cannot be listed or a report read.
pub async fn list_drills(repository: &Repository) -> Result<Vec<DrillSummary>> {
    let prefix = ObjectPath::from(DRILL_PREFIX);
    let objects: Vec<_> = repository
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| dr_storage::Error::store(DRILL_PREFIX, e))?;
    let mut out = Vec::new();
    for o in objects {
        let Some(id) = o
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .map(str::to_string)
        else {
            continue;
        };
        match load_drill(repository, &id).await {
            Ok(r) => out.push(r.summary()),
            Err(e) => {
                tracing::warn!(object = %o.location, error = %e, "unreadable drill report skipped")
            }
        }
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.started_at));
    Ok(out)
}

/// The newest drill (for `dr status`).
///
/// # Errors
/// As [`list_drills`].
pub async fn last_drill(repository: &Repository) -> Result<Option<DrillSummary>> {
    Ok(list_drills(repository).await?.into_iter().next())
}
