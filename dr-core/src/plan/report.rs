//! The run report: every step's start, end, duration, outcome and output, and
//! the total against the RTO. JSON for scripts, Markdown for people.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::journal::{RunJournal, RunStatus, StepStatus};

/// A step in the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Action.
    pub action: String,
    /// Outcome.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Start.
    pub started_at: Option<DateTime<Utc>>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Duration in seconds.
    pub duration_secs: Option<f64>,
    /// The action's one-line summary.
    pub summary: Option<String>,
    /// Captured output (bounded by the executor).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log: String,
    /// The error, if it failed.
    pub error: Option<String>,
    /// What the rollback did, or why it failed.
    pub rollback: Option<String>,
}

/// A plan run's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// The run id (`dr plan resume <id>`).
    pub run_id: String,
    /// The plan.
    pub plan: String,
    /// Outcome.
    pub status: RunStatus,
    /// Start of the first execution.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Wall time from first start to end (or to now, for a run not ended),
    /// in seconds, resumes included: the time the outage lasted.
    pub duration_secs: f64,
    /// The RTO in seconds, if the plan has one.
    pub rto_secs: Option<f64>,
    /// Whether the run ended within the RTO.
    pub within_rto: Option<bool>,
    /// How many times it was resumed.
    pub resumes: u32,
    /// The step that made the run fail.
    pub failed_step: Option<String>,
    /// Steps, in plan order.
    pub steps: Vec<StepReport>,
}

impl RunReport {
    /// The report of a journal, measured against `rto`.
    pub fn from_journal(journal: &RunJournal, rto: Option<std::time::Duration>) -> RunReport {
        let end = journal.ended_at.unwrap_or_else(Utc::now);
        let duration_secs = (end - journal.started_at).num_milliseconds().max(0) as f64 / 1000.0;
        let rto_secs = rto.map(|d| d.as_secs_f64());
        RunReport {
            run_id: journal.run_id.clone(),
            plan: journal.plan.name.clone(),
            status: journal.status,
            started_at: journal.started_at,
            ended_at: journal.ended_at,
            duration_secs,
            rto_secs,
            within_rto: rto_secs
                .map(|r| journal.status == RunStatus::Succeeded && duration_secs <= r),
            resumes: journal.resumes,
            failed_step: journal.failed_step.clone(),
            steps: journal
                .steps
                .iter()
                .map(|s| StepReport {
                    name: s.name.clone(),
                    action: s.action.clone(),
                    status: s.status,
                    attempts: s.attempts,
                    started_at: s.started_at,
                    ended_at: s.ended_at,
                    duration_secs: s.duration_secs,
                    summary: s.output.as_ref().map(|o| o.summary.clone()),
                    log: s.output.as_ref().map(|o| o.log.clone()).unwrap_or_default(),
                    error: s.error.clone(),
                    rollback: s.rollback.as_ref().map(|r| match (&r.output, &r.error) {
                        (_, Some(e)) => format!("failed: {e}"),
                        (Some(o), None) => o.summary.clone(),
                        (None, None) => "started, not finished".into(),
                    }),
                })
                .collect(),
        }
    }

    /// Whether every step succeeded (or was allowed to fail).
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Succeeded
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// The report as Markdown: a summary, a table of steps, then the output
    /// of steps that have any.
    pub fn to_markdown(&self) -> String {
        let mut md = format!("# Plan run `{}`: {}\n\n", self.run_id, self.plan);
        md.push_str(&format!("- status: **{}**\n", status_word(self.status)));
        md.push_str(&format!("- started: {}\n", self.started_at.to_rfc3339()));
        if let Some(end) = self.ended_at {
            md.push_str(&format!("- ended: {}\n", end.to_rfc3339()));
        }
        md.push_str(&format!("- duration: {}\n", secs(self.duration_secs)));
        if let (Some(rto), Some(ok)) = (self.rto_secs, self.within_rto) {
            md.push_str(&format!(
                "- RTO: {} — {}\n",
                secs(rto),
                if ok { "met" } else { "**not met**" }
            ));
        }
        if self.resumes > 0 {
            md.push_str(&format!("- resumed {} time(s)\n", self.resumes));
        }
        if let Some(f) = &self.failed_step {
            md.push_str(&format!("- failed step: `{f}`\n"));
        }
        md.push_str("\n| step | action | outcome | attempts | start | duration | summary |\n|---|---|---|---|---|---|---|\n");
        for s in &self.steps {
            let summary = s
                .error
                .as_deref()
                .map(|e| format!("error: {e}"))
                .or_else(|| s.summary.clone())
                .unwrap_or_default();
            let summary = match &s.rollback {
                Some(rb) => format!("{summary}; rollback: {rb}"),
                None => summary,
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                s.name,
                s.action,
                step_word(s.status),
                s.attempts,
                s.started_at
                    .map(|t| t.format("%H:%M:%S").to_string())
                    .unwrap_or_default(),
                s.duration_secs.map(secs).unwrap_or_default(),
                cell(&summary)
            ));
        }
        for s in self.steps.iter().filter(|s| !s.log.is_empty()) {
            md.push_str(&format!(
                "\n## Output of `{}`\n\n```text\n{}\n```\n",
                s.name,
                s.log.replace("```", "'''")
            ));
        }
        md
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl RunReport {
    /// The run as HTML body content (no page around it): a summary, a
    /// timeline with one lane per step (its start and duration against the
    /// run's, a dashed line at the RTO), and the table of steps. Every value
    /// escaped ([`crate::html::escape`]).
    pub fn to_html_body(&self) -> String {
        use crate::html::escape;
        use std::fmt::Write as _;
        let mut h = String::new();
        let ok = self.succeeded();
        let _ = writeln!(
            h,
            "<p>Run {} of plan {}: <span class=\"{}\">{}</span>; started {}, took {}{}{}.</p>",
            escape(&self.run_id),
            escape(&self.plan),
            if ok { "ok" } else { "bad" },
            escape(status_word(self.status)),
            escape(&self.started_at.to_rfc3339()),
            escape(&secs(self.duration_secs)),
            match (self.rto_secs, self.within_rto) {
                (Some(r), Some(true)) =>
                    format!(" (RTO {}: <span class=\"ok\">met</span>)", escape(&secs(r))),
                (Some(r), _) => format!(
                    " (RTO {}: <span class=\"bad\">not met</span>)",
                    escape(&secs(r))
                ),
                _ => String::new(),
            },
            if self.resumes > 0 {
                format!(", resumed {} time(s)", self.resumes)
            } else {
                String::new()
            }
        );
        // The timeline's scale: the run or the RTO, whichever is longer.
        let scale = self
            .duration_secs
            .max(self.rto_secs.unwrap_or(0.0))
            .max(0.001);
        let pct = |v: f64| (v / scale * 100.0).clamp(0.0, 100.0);
        h.push_str("<table><tr><th>step</th><th>action</th><th>outcome</th><th>attempts</th><th>timeline</th><th>duration</th><th>summary</th></tr>\n");
        for s in &self.steps {
            let offset = s
                .started_at
                .map(|t| (t - self.started_at).num_milliseconds().max(0) as f64 / 1000.0);
            let lane = match (offset, s.duration_secs) {
                (Some(o), Some(d)) => format!(
                    "<span class=\"span {}\" style=\"left:{:.2}%;width:{:.2}%\"></span>",
                    if matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped) {
                        "ok"
                    } else {
                        "bad"
                    },
                    pct(o),
                    pct(d).max(0.3)
                ),
                _ => String::new(),
            };
            let rto = self
                .rto_secs
                .map(|r| {
                    format!(
                        "<span class=\"rto\" style=\"left:{:.2}%\" title=\"RTO\"></span>",
                        pct(r)
                    )
                })
                .unwrap_or_default();
            let mut summary = s
                .error
                .as_deref()
                .map(|e| format!("error: {e}"))
                .or_else(|| s.summary.clone())
                .unwrap_or_default();
            if let Some(rb) = &s.rollback {
                summary.push_str(&format!("; rollback: {rb}"));
            }
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td><div class=\"lane\">{lane}{rto}</div></td><td>{}</td><td>{}</td></tr>",
                escape(&s.name),
                escape(&s.action),
                if matches!(s.status, StepStatus::Succeeded | StepStatus::Skipped) { "ok" } else { "bad" },
                escape(step_word(s.status)),
                s.attempts,
                escape(&s.duration_secs.map(secs).unwrap_or_else(|| "-".into())),
                escape(&summary)
            );
        }
        h.push_str("</table>\n");
        h
    }
}

fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        humantime::format_duration(std::time::Duration::from_secs(s.round() as u64)).to_string()
    }
}

fn status_word(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running (interrupted: resume it)",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::RollingBack => "rolling back (interrupted: resume it)",
        RunStatus::RolledBack => "failed, rolled back",
        RunStatus::RollbackFailed => "failed, ROLLBACK FAILED",
    }
}

fn step_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "skipped",
        StepStatus::RolledBack => "rolled back",
        StepStatus::RollbackFailed => "ROLLBACK FAILED",
    }
}
