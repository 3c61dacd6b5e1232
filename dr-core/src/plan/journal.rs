//! The run journal: the state of a plan run, written after every change of a
//! step, so a crashed or aborted run can be resumed without redoing what is
//! done.
//!
//! The local file (`<dir>/<run-id>.json`) is authoritative and written
//! atomically (temporary file, fsync, rename, fsync of the directory). When a
//! repository is configured, a copy goes to `plans/runs/<run-id>.json` in it
//! after each local write; a failure there is a warning, not a stop: the
//! repository being down must not block a recovery.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use dr_storage::object_store::{path::Path as ObjectPath, ObjectStore, PutPayload};
use dr_storage::Repository;
use serde::{Deserialize, Serialize};

use super::spec::PlanSpec;
use super::ActionOutput;
use crate::error::{Error, Result};

/// The journal format version.
pub const JOURNAL_VERSION: u32 = 1;

/// Where a repository keeps run journals.
pub const REPOSITORY_JOURNAL_PREFIX: &str = "plans/runs";

/// A run's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are running (or the run crashed while they were).
    Running,
    /// Every step succeeded (or failed with `on_failure = "continue"`).
    Succeeded,
    /// A step failed and nothing needed rolling back, or rollback is not configured.
    Failed,
    /// A step failed and rolling back is under way (or crashed while it was).
    RollingBack,
    /// A step failed and every completed step with a rollback was rolled back.
    RolledBack,
    /// A step failed and at least one rollback failed too: look at the report.
    RollbackFailed,
}

impl RunStatus {
    /// Whether the run is over and cannot be resumed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::RolledBack | RunStatus::RollbackFailed
        )
    }
}

/// A step's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started and not finished (or the run crashed during it).
    Running,
    /// Done.
    Succeeded,
    /// Failed after all attempts.
    Failed,
    /// Not run because the run aborted.
    Skipped,
    /// Done, then undone.
    RolledBack,
    /// Done, and undoing it failed.
    RollbackFailed,
}

/// One step in the journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Action name.
    pub action: String,
    /// State.
    pub status: StepStatus,
    /// Attempts made (over all runs of this run id).
    pub attempts: u32,
    /// When the last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the step finished.
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds from start to end of the last execution (retries included).
    pub duration_secs: Option<f64>,
    /// What the action returned.
    pub output: Option<ActionOutput>,
    /// The last error, with its causes.
    pub error: Option<String>,
    /// What an interrupted attempt saved (see [`Checkpoint`](super::Checkpoint)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_json::Value>,
    /// Order of completion (1, 2, ...), for rolling back in reverse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_seq: Option<u64>,
    /// The rollback: when and what it returned or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
}

/// A step's rollback in the journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RollbackRecord {
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// Output of the rollback.
    pub output: Option<ActionOutput>,
    /// Error of the rollback.
    pub error: Option<String>,
}

impl StepRecord {
    pub(crate) fn new(name: &str, action: &str) -> Self {
        StepRecord {
            name: name.into(),
            action: action.into(),
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            ended_at: None,
            duration_secs: None,
            output: None,
            error: None,
            checkpoint: None,
            completed_seq: None,
            rollback: None,
        }
    }
}

/// A plan run, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunJournal {
    /// [`JOURNAL_VERSION`].
    pub version: u32,
    /// The run id.
    pub run_id: String,
    /// The plan as written, so that `resume` needs no file.
    pub plan: PlanSpec,
    /// The variable values of the run, secret ones left out.
    pub variables: BTreeMap<String, String>,
    /// Whether the run used the plan's drill values.
    #[serde(default)]
    pub drill: bool,
    /// Whether approvals were given in advance.
    #[serde(default)]
    pub assume_yes: bool,
    /// State.
    pub status: RunStatus,
    /// First start.
    pub started_at: DateTime<Utc>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
    /// How many times the run was resumed.
    #[serde(default)]
    pub resumes: u32,
    /// The step that made the run fail.
    pub failed_step: Option<String>,
    /// Steps, in plan order.
    pub steps: Vec<StepRecord>,
}

impl RunJournal {
    /// The record of step `name`.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub(crate) fn step_mut(&mut self, name: &str) -> &mut StepRecord {
        self.steps
            .iter_mut()
            .find(|s| s.name == name)
            .expect("the journal has every step of its plan")
    }

    /// Outputs of the steps that succeeded, by name.
    pub fn outputs(&self) -> BTreeMap<String, ActionOutput> {
        self.steps
            .iter()
            .filter(|s| matches!(s.status, StepStatus::Succeeded))
            .filter_map(|s| s.output.clone().map(|o| (s.name.clone(), o)))
            .collect()
    }
}

/// A run in a listing.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// The plan.
    pub plan: String,
    /// State.
    pub status: RunStatus,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub ended_at: Option<DateTime<Utc>>,
}

/// Where journals are written: a local directory, and a repository when one
/// is configured.
#[derive(Debug, Clone)]
pub struct JournalStore {
    dir: PathBuf,
    repository: Option<Repository>,
}

/// Checks a run id: `[A-Za-z0-9._-]`, at most 128 bytes, not starting with `.`.
///
/// # Errors
/// [`Error::InvalidConfig`] naming the run id.
pub fn validate_run_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            key: "run id".into(),
            reason: format!("{id:?} is not a run id (letters, digits, '.', '_', '-')"),
        })
    }
}

impl JournalStore {
    /// Journals in local directory `dir` (created when missing).
    pub fn local(dir: impl AsRef<Path>) -> Self {
        JournalStore {
            dir: dir.as_ref().to_path_buf(),
            repository: None,
        }
    }

    /// Also copy journals into `repository` (`plans/runs/<run-id>.json`).
    pub fn with_repository(mut self, repository: Repository) -> Self {
        self.repository = Some(repository);
        self
    }

    /// The local directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The local path of a run's journal.
    pub fn path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.json"))
    }

    fn object(run_id: &str) -> ObjectPath {
        ObjectPath::from(format!("{REPOSITORY_JOURNAL_PREFIX}/{run_id}.json"))
    }

    /// Writes the journal locally (atomically and durably), then to the
    /// repository. Returns a warning when only the repository copy failed.
    ///
    /// # Errors
    /// The local write failed: the run must stop, since it could no longer
    /// be resumed faithfully.
    pub async fn write(&self, journal: &RunJournal) -> Result<Option<String>> {
        validate_run_id(&journal.run_id)?;
        let body = serde_json::to_vec_pretty(journal)
            .map_err(|e| Error::failed("serialising the run journal", e.to_string()))?;
        let dir = self.dir.clone();
        let path = self.path(&journal.run_id);
        let local_body = body.clone();
        tokio::task::spawn_blocking(move || write_atomic(&dir, &path, &local_body))
            .await
            .map_err(|e| Error::failed("writing the run journal", e.to_string()))?
            .map_err(|e| Error::Unavailable {
                what: format!("run journal in {}", self.dir.display()),
                source: e.into(),
            })?;
        if let Some(repo) = &self.repository {
            let object = Self::object(&journal.run_id);
            if let Err(e) = repo.store().put(&object, PutPayload::from(body)).await {
                let warning =
                    format!("could not copy the run journal to the repository at {object}: {e}");
                tracing::warn!(run_id = %journal.run_id, error = %e, "run journal not copied to the repository");
                return Ok(Some(warning));
            }
        }
        Ok(None)
    }

    /// Reads a run's journal: the local file, else the repository's copy.
    ///
    /// # Errors
    /// [`Error::NotFound`] when neither has it; [`Error::Failed`] when it
    /// does not parse.
    pub async fn load(&self, run_id: &str) -> Result<RunJournal> {
        validate_run_id(run_id)?;
        let path = self.path(run_id);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match &self.repository {
                Some(repo) => match repo.store().get(&Self::object(run_id)).await {
                    Ok(r) => r
                        .bytes()
                        .await
                        .map_err(|e| dr_storage::Error::store(Self::object(run_id).to_string(), e))?
                        .to_vec(),
                    Err(dr_storage::object_store::Error::NotFound { .. }) => {
                        return Err(Error::NotFound {
                            what: format!("plan run {run_id}"),
                        })
                    }
                    Err(e) => {
                        return Err(
                            dr_storage::Error::store(Self::object(run_id).to_string(), e).into(),
                        )
                    }
                },
                None => {
                    return Err(Error::NotFound {
                        what: format!("plan run {run_id} (in {})", self.dir.display()),
                    })
                }
            },
            Err(e) => {
                return Err(Error::Unavailable {
                    what: format!("run journal {}", path.display()),
                    source: e.into(),
                })
            }
        };
        let journal: RunJournal = serde_json::from_slice(&bytes)
            .map_err(|e| Error::failed(format!("reading run journal {run_id}"), e.to_string()))?;
        if journal.version != JOURNAL_VERSION {
            return Err(Error::Unsupported {
                what: format!("run journal version {}", journal.version),
            });
        }
        Ok(journal)
    }

    /// The runs in the local directory, newest first.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub async fn list(&self) -> Result<Vec<RunSummary>> {
        let mut out = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(Error::Unavailable {
                    what: format!("run journals in {}", self.dir.display()),
                    source: e.into(),
                })
            }
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if validate_run_id(id).is_err() {
                continue;
            }
            match self.load(id).await {
                Ok(j) => out.push(RunSummary {
                    run_id: j.run_id,
                    plan: j.plan.name,
                    status: j.status,
                    started_at: j.started_at,
                    ended_at: j.ended_at,
                }),
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "unreadable run journal skipped")
                }
            }
        }
        out.sort_by_key(|x| std::cmp::Reverse(x.started_at));
        Ok(out)
    }
}

fn write_atomic(dir: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}
