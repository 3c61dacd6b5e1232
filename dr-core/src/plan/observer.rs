//! What a front end sees of a run (progress) and how it answers approvals.
//! Libraries never print: the CLI implements these with a terminal.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::journal::StepRecord;
use super::report::RunReport;
use crate::error::{Error, Result};

/// Progress of a plan run. Every method has a no-op default; calls come from
/// the executor's task, so keep them quick.
pub trait PlanObserver: Debug + Send + Sync + 'static {
    /// A run (new or resumed) starts.
    fn run_started(&self, _run_id: &str, _plan: &str, _resumed: bool) {}
    /// A step starts an attempt (1-based).
    fn step_started(&self, _step: &str, _attempt: u32) {}
    /// An attempt failed and will be retried after `delay`.
    fn step_retrying(&self, _step: &str, _attempt: u32, _error: &Error, _delay: Duration) {}
    /// A step finished (succeeded, failed, skipped).
    fn step_finished(&self, _record: &StepRecord) {}
    /// Rolling back a step starts.
    fn rollback_started(&self, _step: &str) {}
    /// Rolling back a step finished.
    fn rollback_finished(&self, _record: &StepRecord) {}
    /// Something the operator should know that does not stop the run (the
    /// repository copy of the journal could not be written).
    fn warning(&self, _message: &str) {}
    /// The run ended.
    fn run_finished(&self, _report: &RunReport) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl PlanObserver for NoObserver {}

/// A question for an `approve` step.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The run.
    pub run_id: String,
    /// The step asking.
    pub step: String,
    /// What is being approved.
    pub prompt: String,
}

/// Answers `approve` steps: a terminal prompt in the CLI, a file for
/// automation ([`FileApprover`]).
#[async_trait]
pub trait Approver: Debug + Send + Sync + 'static {
    /// `Ok(true)` to go on, `Ok(false)` to refuse.
    ///
    /// # Errors
    /// The approver cannot ask (no terminal, unreadable file).
    async fn approve(&self, request: &ApprovalRequest) -> Result<bool>;
}

/// Approvals from a file, for automation: one entry per line, `*` (approve
/// everything), a step name, or `<run-id>/<step>`; `#` starts a comment. The
/// file is read at each question, so it can be written while the run waits.
#[derive(Debug, Clone)]
pub struct FileApprover {
    path: PathBuf,
}

impl FileApprover {
    /// Approvals read from `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        FileApprover {
            path: path.as_ref().to_path_buf(),
        }
    }
}

#[async_trait]
impl Approver for FileApprover {
    async fn approve(&self, request: &ApprovalRequest) -> Result<bool> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(Error::Unavailable {
                    what: format!("approval file {}", self.path.display()),
                    source: e.into(),
                })
            }
        };
        let entries: BTreeSet<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .collect();
        let qualified = format!("{}/{}", request.run_id, request.step);
        Ok(entries.contains("*")
            || entries.contains(request.step.as_str())
            || entries.contains(qualified.as_str()))
    }
}
