//! The agent's loop: asks [`dr_core::schedule::Scheduler`] what is due,
//! runs it through the same library calls as `dr` (`job::backup`,
//! `job::verify`, `prune::plan_prune`/`prune`), records metrics, notifies,
//! and stops cleanly on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use dr_core::metrics::{AgentMetrics, RunResult};
use dr_core::objectives::ObjectivesConfig;
use dr_core::retention::RetentionPolicy;
use dr_core::schedule::{Clock, CronSchedule, Decision, LastRun, Scheduler, SystemClock};
use dr_core::{job, BackupSource};
use dr_storage::{Identities, Repository};
use tokio::task::JoinSet;

const PRUNE: &str = "prune";
const VERIFY: &str = "verify";
const BACKUP_PREFIX: &str = "backup:";

/// What a finished job reports, for metrics and notifications.
#[derive(Debug)]
struct Finished {
    job: String,
    /// (source, outcome detail, ok) per event to notify.
    #[cfg_attr(not(feature = "notify"), allow(dead_code))]
    events: Vec<(Option<String>, String, bool)>,
}

/// How a run of [`Agent::run`] ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Runs started.
    pub started: u64,
    /// Runs skipped because the previous run of the job was still going.
    pub skipped: u64,
    /// Jobs stopped at shutdown after the grace period.
    pub aborted: Vec<String>,
}

/// The long-running agent. Build it with [`Agent::new`] and the `with_*`
/// methods (or [`super::from_config`]), then [`Agent::run`] it.
pub struct Agent {
    repo: Repository,
    metrics: Arc<AgentMetrics>,
    clock: Arc<dyn Clock>,
    backups: Vec<(String, Arc<dyn BackupSource>, CronSchedule)>,
    prune: Option<(CronSchedule, BTreeMap<String, RetentionPolicy>)>,
    verify: Option<(CronSchedule, Option<Identities>)>,
    objectives: ObjectivesConfig,
    pitr_windows: BTreeMap<String, Duration>,
    grace: Duration,
    refresh: Duration,
    tick: Duration,
    ready: Arc<AtomicBool>,
    #[cfg(feature = "notify")]
    notifier: Option<Arc<dr_core::notify::Notifier>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field(
                "backups",
                &self
                    .backups
                    .iter()
                    .map(|(n, _, s)| (n, s.to_string()))
                    .collect::<Vec<_>>(),
            )
            .field("prune", &self.prune.as_ref().map(|p| p.0.to_string()))
            .field("verify", &self.verify.as_ref().map(|p| p.0.to_string()))
            .field("grace", &self.grace)
            .finish()
    }
}

impl Agent {
    /// An agent on `repo` with no job yet, recording into `metrics`.
    pub fn new(repo: Repository, metrics: Arc<AgentMetrics>) -> Self {
        Agent {
            repo,
            metrics,
            clock: Arc::new(SystemClock),
            backups: Vec::new(),
            prune: None,
            verify: None,
            objectives: ObjectivesConfig::default(),
            pitr_windows: BTreeMap::new(),
            grace: Duration::from_secs(300),
            refresh: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            ready: Arc::new(AtomicBool::new(false)),
            #[cfg(feature = "notify")]
            notifier: None,
        }
    }

    /// Backs up `source` as `name` on `schedule`.
    pub fn with_backup(
        mut self,
        name: &str,
        source: Arc<dyn BackupSource>,
        schedule: CronSchedule,
    ) -> Self {
        self.backups.push((name.to_string(), source, schedule));
        self
    }

    /// Prunes the repository with `policies` on `schedule`.
    pub fn with_prune(
        mut self,
        schedule: CronSchedule,
        policies: BTreeMap<String, RetentionPolicy>,
    ) -> Self {
        self.prune = Some((schedule, policies));
        self
    }

    /// Verifies the newest backup of each scheduled source on `schedule`;
    /// with `identities`, decrypted to the end.
    pub fn with_verify(mut self, schedule: CronSchedule, identities: Option<Identities>) -> Self {
        self.verify = Some((schedule, identities));
        self
    }

    /// The objectives exported as `objective_*_seconds`.
    pub fn with_objectives(mut self, objectives: ObjectivesConfig) -> Self {
        self.objectives = objectives;
        self
    }

    /// How long running jobs may finish after shutdown is asked for.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The PITR window of each source (`pitr_window` in its retention):
    /// WAL continuity is checked from the window's anchor.
    pub fn with_pitr_windows(mut self, windows: BTreeMap<String, Duration>) -> Self {
        self.pitr_windows = windows;
        self
    }

    /// How often the repository is read for status and WAL.
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// The clock (a [`dr_core::schedule::ManualClock`] in tests) and the
    /// longest the loop sleeps before looking at it again.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>, tick: Duration) -> Self {
        self.clock = clock;
        self.tick = tick;
        self
    }

    /// Sends notifications through `notifier`.
    #[cfg(feature = "notify")]
    pub fn with_notifier(mut self, notifier: Arc<dr_core::notify::Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The flag `/ready` reports: set once the repository was read, cleared
    /// when shutting down.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    fn names(&self) -> Vec<String> {
        self.backups.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Runs until `shutdown` completes; then starts nothing new, lets
    /// running jobs finish within the grace period, and stops the rest. A
    /// stopped backup never wrote its manifest, so nothing half-done is
    /// listed (its data objects are removed by the next `prune` once older
    /// than the orphan grace).
    ///
    /// # Errors
    /// The repository cannot be read at start; a schedule is added twice.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<RunSummary> {
        let now = self.clock.now();
        let mut scheduler = Scheduler::new();
        for (name, _, schedule) in &self.backups {
            let last = self
                .repo
                .list_backups(Some(name))
                .await?
                .iter()
                .map(|m| m.started_at)
                .max()
                .map_or(LastRun::Never, LastRun::At);
            scheduler.add(
                format!("{BACKUP_PREFIX}{name}"),
                schedule.clone(),
                last,
                now,
            )?;
        }
        if let Some((s, _)) = &self.prune {
            scheduler.add(PRUNE, s.clone(), LastRun::Unknown, now)?;
        }
        if let Some((s, _)) = &self.verify {
            scheduler.add(VERIFY, s.clone(), LastRun::Unknown, now)?;
        }
        refresh(
            &self.repo,
            &self.names(),
            &self.objectives,
            &self.pitr_windows,
            &self.metrics,
            now,
        )
        .await?;
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!(jobs = ?scheduler.jobs().collect::<Vec<_>>(), next = ?scheduler.next_due(), "agent started");

        let refresher = {
            let (repo, names, objectives, windows, metrics, clock) = (
                self.repo.clone(),
                self.names(),
                self.objectives.clone(),
                self.pitr_windows.clone(),
                self.metrics.clone(),
                self.clock.clone(),
            );
            let every = self.refresh;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) =
                        refresh(&repo, &names, &objectives, &windows, &metrics, clock.now()).await
                    {
                        tracing::warn!(error = %format!("{e:#}"), "reading the repository status failed");
                    }
                }
            })
        };

        let mut summary = RunSummary::default();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut notes: JoinSet<()> = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let now = self.clock.now();
            for d in scheduler.poll(now) {
                match d {
                    Decision::Start { job, due, missed } => {
                        if missed > 0 {
                            tracing::info!(%job, %due, missed, "catching up once for missed runs");
                        }
                        summary.started += 1;
                        let handle = tasks.spawn(self.job(&job));
                        running.insert(handle.id(), job);
                    }
                    Decision::Skip { job, due, count } => {
                        tracing::warn!(%job, %due, "previous run still going: skipped");
                        summary.skipped += count;
                        let (kind, source) = split(&job);
                        self.metrics.runs_skipped(kind, source, count);
                    }
                }
            }
            let wait = scheduler
                .next_due()
                .and_then(|t| (t - self.clock.now()).to_std().ok())
                .unwrap_or_default()
                .min(self.tick);
            tokio::select! {
                () = &mut shutdown => break,
                Some(r) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.finished(r, &mut running, &mut scheduler, &mut summary, &mut notes);
                }
                () = tokio::time::sleep(wait) => {}
            }
        }

        self.ready.store(false, Ordering::SeqCst);
        refresher.abort();
        tracing::info!(running = tasks.len(), grace = ?self.grace, "shutting down: no new runs");
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                Some(r) = tasks.join_next_with_id() => {
                    self.finished(r, &mut running, &mut scheduler, &mut summary, &mut notes);
                }
                () = &mut deadline => {
                    tracing::warn!(running = ?running.values().collect::<Vec<_>>(), "grace period over: stopping running jobs");
                    tasks.abort_all();
                    while let Some(r) = tasks.join_next_with_id().await {
                        self.finished(r, &mut running, &mut scheduler, &mut summary, &mut notes);
                    }
                }
            }
        }
        // Notifications of the last runs get a short while to go out.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while notes.join_next().await.is_some() {}
        })
        .await;
        tracing::info!(?summary, "agent stopped");
        Ok(summary)
    }

    fn finished(
        &self,
        r: std::result::Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
        running: &mut HashMap<tokio::task::Id, String>,
        scheduler: &mut Scheduler,
        summary: &mut RunSummary,
        notes: &mut JoinSet<()>,
    ) {
        let now = self.clock.now();
        let (id, done) = match r {
            Ok((id, done)) => (id, done),
            Err(e) => {
                let id = e.id();
                let job = running.get(&id).cloned().unwrap_or_default();
                let detail = if e.is_cancelled() {
                    summary.aborted.push(job.clone());
                    "stopped at shutdown after the grace period; nothing was listed".to_string()
                } else {
                    format!("the job panicked: {e}")
                };
                tracing::warn!(%job, %detail, "job ended abnormally");
                let (kind, source) = split(&job);
                if kind == "backup" {
                    let result = if e.is_cancelled() {
                        RunResult::Aborted
                    } else {
                        RunResult::Failure
                    };
                    self.metrics
                        .backup_failed(source.unwrap_or_default(), now, result);
                }
                (
                    id,
                    Finished {
                        job: job.clone(),
                        events: vec![(source.map(str::to_string), detail, false)],
                    },
                )
            }
        };
        running.remove(&id);
        scheduler.finished(&done.job);
        #[cfg(feature = "notify")]
        if let Some(n) = &self.notifier {
            let n = n.clone();
            let kind = split(&done.job).0.to_string();
            notes.spawn(async move {
                for (source, detail, ok) in done.events {
                    let event = dr_core::notify::Event {
                        job: kind.clone(),
                        source,
                        outcome: if ok {
                            dr_core::notify::Outcome::Success
                        } else {
                            dr_core::notify::Outcome::Failure
                        },
                        at: now,
                        detail,
                    };
                    for (channel, r) in n.notify(&event, now).await {
                        if let Err(e) = r {
                            tracing::warn!(?channel, error = %error_chain(&e), "notification failed");
                        }
                    }
                }
            });
        }
        #[cfg(not(feature = "notify"))]
        let _ = (done, notes);
    }

    /// The future of one run of `job`.
    fn job(&self, job: &str) -> impl Future<Output = Finished> + Send + 'static {
        let repo = self.repo.clone();
        let metrics = self.metrics.clone();
        let clock = self.clock.clone();
        let job = job.to_string();
        let backup = job
            .strip_prefix(BACKUP_PREFIX)
            .and_then(|n| self.backups.iter().find(|(name, _, _)| name == n))
            .map(|(n, s, _)| (n.clone(), s.clone()));
        let prune = self.prune.as_ref().map(|p| p.1.clone());
        let verify = self.verify.as_ref().map(|v| v.1.clone());
        let names = self.names();
        async move {
            let events = if let Some((name, source)) = backup {
                let started = Instant::now();
                match job::backup(&repo, source.as_ref(), &name).await {
                    Ok(m) => {
                        let took = started.elapsed();
                        tracing::info!(source = %name, backup_id = %m.backup_id, ?took, "scheduled backup done");
                        metrics.backup_succeeded(&name, &m, took);
                        vec![(
                            Some(name),
                            format!("backup {} ({} bytes stored)", m.backup_id, m.stored_size()),
                            true,
                        )]
                    }
                    Err(e) => {
                        let detail = error_chain(&e);
                        tracing::error!(source = %name, error = %detail, "scheduled backup failed");
                        metrics.backup_failed(&name, clock.now(), RunResult::Failure);
                        vec![(Some(name), detail, false)]
                    }
                }
            } else if job == PRUNE {
                let policies = prune.unwrap_or_default();
                match run_prune(&repo, &policies, clock.now()).await {
                    Ok(detail) => {
                        metrics.pruned(clock.now());
                        vec![(None, detail, true)]
                    }
                    Err(e) => {
                        let detail = format!("{e:#}");
                        tracing::error!(error = %detail, "scheduled prune failed");
                        vec![(None, detail, false)]
                    }
                }
            } else if job == VERIFY {
                let ids = verify.flatten();
                let mut events = Vec::new();
                for name in names {
                    let (ok, detail) = match verify_latest(&repo, &name, ids.as_ref()).await {
                        Ok(Some(d)) => (true, d),
                        Ok(None) => continue,
                        Err(e) => (false, format!("{e:#}")),
                    };
                    if !ok {
                        tracing::error!(source = %name, error = %detail, "scheduled verification failed");
                    }
                    metrics.verified(&name, clock.now(), ok);
                    events.push((Some(name), detail, ok));
                }
                events
            } else {
                vec![(None, format!("unknown job {job}"), false)]
            };
            Finished { job, events }
        }
    }
}

fn split(job: &str) -> (&str, Option<&str>) {
    match job.strip_prefix(BACKUP_PREFIX) {
        Some(s) => ("backup", Some(s)),
        None => (job, None),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn run_prune(
    repo: &Repository,
    policies: &BTreeMap<String, RetentionPolicy>,
    now: DateTime<Utc>,
) -> Result<String> {
    let opts = dr_core::prune::PruneOptions::default();
    let plan = dr_core::prune::plan_prune(repo, policies, &[], &opts, now).await?;
    let report = dr_core::prune::prune(repo, &plan, &opts).await?;
    Ok(format!(
        "pruned {} backup(s), {} WAL object(s), {} orphan(s); {} bytes freed",
        report.backups_deleted.len(),
        report.wal_deleted,
        report.orphans_deleted,
        report.bytes_freed
    ))
}

/// Verifies the newest backup of `name`; `None` when it has none.
async fn verify_latest(
    repo: &Repository,
    name: &str,
    ids: Option<&Identities>,
) -> Result<Option<String>> {
    let Some(m) = repo
        .list_backups(Some(name))
        .await?
        .into_iter()
        .max_by_key(|m| m.finished_at)
    else {
        return Ok(None);
    };
    let report = job::verify(repo, &m, ids, None).await?.into_result()?;
    Ok(Some(format!(
        "backup {} verified ({} artifact(s){})",
        report.backup_id,
        report.artifacts.len(),
        if ids.is_some() {
            ", decrypted"
        } else {
            ", stored digests only"
        }
    )))
}

/// Reads the status of `names` from the repository, with WAL continuity
/// (from each source's PITR window in `windows`) and the newest archived WAL
/// of each, into `metrics`. The agent holds no key for this, so timeline
/// switches are inferred from the `.history` file names.
async fn refresh(
    repo: &Repository,
    names: &[String],
    objectives: &ObjectivesConfig,
    windows: &BTreeMap<String, Duration>,
    metrics: &AgentMetrics,
    now: DateTime<Utc>,
) -> Result<()> {
    let wal = dr_postgres::wal::continuity::wal_status(repo, None, windows, now).await?;
    let statuses = dr_core::status::status_with_wal(repo, names, objectives, &wal, now).await?;
    metrics.observe_status(&statuses);
    Ok(())
}
