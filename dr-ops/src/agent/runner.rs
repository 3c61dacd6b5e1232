//! The agent's loop: asks [`dr_core::schedule::Scheduler`] what is due,
//! runs it through the operations `dr` runs, records metrics, notifies,
//! and stops cleanly on shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dr_core::metrics::{AgentMetrics, RunResult};
use dr_core::schedule::{Clock, CronSchedule, Decision, LastRun, Scheduler, SystemClock};
use dr_core::BackupSource;
use dr_storage::{Identities, Repository};
use tokio::task::JoinSet;

use super::Job;
use crate::config::DrConfig;
use crate::error::Result;

/// What a finished job reports, for metrics and notifications.
#[derive(Debug)]
struct Finished {
    job: Job,
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
/// methods (or [`crate::Ops::agent`]), then [`Agent::run`] it.
pub struct Agent {
    repo: Repository,
    config: Arc<DrConfig>,
    metrics: Arc<AgentMetrics>,
    clock: Arc<dyn Clock>,
    backups: Vec<(String, Arc<dyn BackupSource>, CronSchedule)>,
    prune: Option<CronSchedule>,
    verify: Option<CronSchedule>,
    identities: Option<Identities>,
    grace: Duration,
    refresh: Duration,
    tick: Duration,
    ready: Arc<AtomicBool>,
    page: StatusPage,
    #[cfg(feature = "notify")]
    notifier: Option<Arc<dr_core::notify::Notifier>>,
}

/// The newest status page ([`crate::StatusReport::to_html`]), replaced at
/// each status refresh; `None` before the first.
pub type StatusPage = Arc<std::sync::RwLock<Option<String>>>;

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
            .field("prune", &self.prune.as_ref().map(|p| p.to_string()))
            .field("verify", &self.verify.as_ref().map(|p| p.to_string()))
            .field("grace", &self.grace)
            .finish()
    }
}

impl Agent {
    /// An agent on `repo` with no job yet, under `config` (retention
    /// policies, objectives, PITR windows), recording into `metrics`.
    /// [`crate::Ops::agent`] builds one from the configuration's schedules.
    pub fn new(repo: Repository, config: Arc<DrConfig>, metrics: Arc<AgentMetrics>) -> Self {
        Agent {
            repo,
            config,
            metrics,
            clock: Arc::new(SystemClock),
            backups: Vec::new(),
            prune: None,
            verify: None,
            identities: None,
            grace: Duration::from_secs(300),
            refresh: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            ready: Arc::new(AtomicBool::new(false)),
            page: StatusPage::default(),
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

    /// Prunes the repository with the configuration's retention policies
    /// (backups and WAL, as `dr prune`) on `schedule`.
    pub fn with_prune(mut self, schedule: CronSchedule) -> Self {
        self.prune = Some(schedule);
        self
    }

    /// Verifies the newest backup of each source (configured, scheduled,
    /// or with backups in the repository) on `schedule` and records
    /// each outcome (as `dr verify`); decrypted to the end when the agent
    /// has identities ([`Agent::with_identities`]).
    pub fn with_verify(mut self, schedule: CronSchedule) -> Self {
        self.verify = Some(schedule);
        self
    }

    /// The keys for verification and for reading timeline history files.
    pub fn with_identities(mut self, identities: Option<Identities>) -> Self {
        self.identities = identities;
        self
    }

    /// How long running jobs may finish after shutdown is asked for.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
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

    /// The status page the agent keeps current (served at `/` by dr-agent).
    pub fn status_page(&self) -> StatusPage {
        self.page.clone()
    }

    /// The sources the agent looks after: the scheduled ones and every
    /// configured one.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.backups.iter().map(|(n, _, _)| n.clone()).collect();
        names.extend(self.config.source_names());
        names.sort();
        names.dedup();
        names
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
        let mut jobs: HashMap<String, Job> = HashMap::new();
        let mut add = |job: Job, schedule: &CronSchedule, last: LastRun| {
            let key = job.to_string();
            jobs.insert(key.clone(), job);
            scheduler.add(key, schedule.clone(), last, now)
        };
        for (name, _, schedule) in &self.backups {
            let last = self
                .repo
                .list_backups(Some(name))
                .await?
                .iter()
                .map(|m| m.started_at)
                .max()
                .map_or(LastRun::Never, LastRun::At);
            add(Job::Backup(name.clone()), schedule, last)?;
        }
        if let Some(s) = &self.prune {
            add(Job::Prune, s, LastRun::Unknown)?;
        }
        if let Some(s) = &self.verify {
            add(Job::Verify, s, LastRun::Unknown)?;
        }
        let (advice_tx, mut advice_rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = advice_tx.send(self.refresh(now).await?);
        self.ready.store(true, Ordering::SeqCst);
        tracing::info!(jobs = ?scheduler.jobs().collect::<Vec<_>>(), next = ?scheduler.next_due(), "agent started");

        let refresher = {
            let (repo, config, ids, names, metrics, clock, page) = (
                self.repo.clone(),
                self.config.clone(),
                self.identities.clone(),
                self.names(),
                self.metrics.clone(),
                self.clock.clone(),
                self.page.clone(),
            );
            let every = self.refresh;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let r = refresh(
                        &repo,
                        &config,
                        ids.as_ref(),
                        &names,
                        &metrics,
                        &page,
                        clock.now(),
                    );
                    match r.await {
                        Ok(advice) => {
                            let _ = advice_tx.send(advice);
                        }
                        Err(e) => {
                            tracing::warn!(error = %dr_core::error_chain(&e), "reading the repository status failed")
                        }
                    }
                }
            })
        };

        let mut summary = RunSummary::default();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Job> = HashMap::new();
        let mut notes: JoinSet<()> = JoinSet::new();
        // The tablespace change each source's early base backup was taken
        // for: one early run per change, even if that run fails.
        let mut advised: HashMap<String, String> = HashMap::new();
        tokio::pin!(shutdown);
        loop {
            let now = self.clock.now();
            while let Ok(advice) = advice_rx.try_recv() {
                self.bring_forward(advice, &mut advised, &mut scheduler, now);
            }
            for d in scheduler.poll(now) {
                match d {
                    Decision::Start { job, due, missed } => {
                        if missed > 0 {
                            tracing::info!(%job, %due, missed, "catching up once for missed runs");
                        }
                        let Some(job) = jobs.get(&job).cloned() else {
                            continue;
                        };
                        summary.started += 1;
                        let handle = tasks.spawn(self.job(&job));
                        running.insert(handle.id(), job);
                    }
                    Decision::Skip { job, due, count } => {
                        tracing::warn!(%job, %due, "previous run still going: skipped");
                        summary.skipped += count;
                        if let Some(job) = jobs.get(&job) {
                            self.metrics.runs_skipped(job.kind(), job.source(), count);
                        }
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
                    tracing::warn!(running = ?running.values().map(Job::to_string).collect::<Vec<_>>(), "grace period over: stopping running jobs");
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

    async fn refresh(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<(String, String)>> {
        refresh(
            &self.repo,
            &self.config,
            self.identities.as_ref(),
            &self.names(),
            &self.metrics,
            &self.page,
            now,
        )
        .await
    }

    /// Brings the scheduled base backup of each source in `advice` (source,
    /// LSN of the newest tablespace change after its newest base backup)
    /// forward, once per change: a restore from the older base backup
    /// beside the cluster would replay the change into the original's
    /// tablespace (PostgreSQL 15 docs §26.3.7 "Caveats": take a new base
    /// backup after creating or dropping tablespaces).
    fn bring_forward(
        &self,
        advice: Vec<(String, String)>,
        advised: &mut HashMap<String, String>,
        scheduler: &mut Scheduler,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        for (name, lsn) in advice {
            let physical = self
                .backups
                .iter()
                .any(|(n, s, _)| *n == name && s.kind() == dr_postgres::KIND_PHYSICAL);
            if !physical || advised.get(&name) == Some(&lsn) {
                continue;
            }
            let job = Job::Backup(name.clone()).to_string();
            if scheduler.run_early(&job, now) {
                tracing::info!(source = %name, %lsn, "a tablespace was created or dropped after the newest base backup: taking a base backup now");
                advised.insert(name, lsn);
            }
        }
    }

    fn finished(
        &self,
        r: std::result::Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
        running: &mut HashMap<tokio::task::Id, Job>,
        scheduler: &mut Scheduler,
        summary: &mut RunSummary,
        notes: &mut JoinSet<()>,
    ) {
        let now = self.clock.now();
        let (id, done) = match r {
            Ok((id, done)) => (id, done),
            Err(e) => {
                let id = e.id();
                let Some(job) = running.get(&id).cloned() else {
                    tracing::error!(error = %e, "a job ended that the agent did not start");
                    return;
                };
                let detail = if e.is_cancelled() {
                    summary.aborted.push(job.to_string());
                    "stopped at shutdown after the grace period; nothing was listed".to_string()
                } else {
                    format!("the job panicked: {e}")
                };
                tracing::warn!(%job, %detail, "job ended abnormally");
                if let Job::Backup(source) = &job {
                    let result = if e.is_cancelled() {
                        RunResult::Aborted
                    } else {
                        RunResult::Failure
                    };
                    self.metrics.backup_failed(source, now, result);
                }
                let events = vec![(job.source().map(str::to_string), detail, false)];
                (id, Finished { job, events })
            }
        };
        running.remove(&id);
        scheduler.finished(&done.job.to_string());
        #[cfg(feature = "notify")]
        if let Some(n) = &self.notifier {
            let n = n.clone();
            let kind = done.job.kind().to_string();
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
                            tracing::warn!(?channel, error = %dr_core::error_chain(&e), "notification failed");
                        }
                    }
                }
            });
        }
        #[cfg(not(feature = "notify"))]
        let _ = (done, notes);
    }

    /// The future of one run of `job`: the same operation `dr` runs.
    fn job(&self, job: &Job) -> impl Future<Output = Finished> + Send + 'static {
        let repo = self.repo.clone();
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let clock = self.clock.clone();
        let ids = self.identities.clone();
        let job = job.clone();
        let backup = job
            .source()
            .and_then(|n| self.backups.iter().find(|(name, _, _)| name == n))
            .map(|(n, s, _)| (n.clone(), s.clone()));
        let names = self.names();
        async move {
            let events = match (&job, backup) {
                (Job::Backup(_), Some((name, source))) => {
                    let started = Instant::now();
                    match crate::backup::backup_source(&repo, source.as_ref(), &name).await {
                        Ok(m) => {
                            let took = started.elapsed();
                            tracing::info!(source = %name, backup_id = %m.backup_id, ?took, "scheduled backup done");
                            metrics.backup_succeeded(&name, &m, took);
                            vec![(
                                Some(name),
                                format!(
                                    "backup {} ({} bytes stored)",
                                    m.backup_id,
                                    m.stored_size()
                                ),
                                true,
                            )]
                        }
                        Err(e) => {
                            let detail = dr_core::error_chain(&e);
                            tracing::error!(source = %name, error = %detail, "scheduled backup failed");
                            metrics.backup_failed(&name, clock.now(), RunResult::Failure);
                            vec![(Some(name), detail, false)]
                        }
                    }
                }
                (Job::Backup(name), None) => {
                    vec![(Some(name.clone()), "no such source".to_string(), false)]
                }
                (Job::Prune, _) => {
                    let opts = crate::PruneOptions::default();
                    match crate::prune::run(&repo, &config, &opts, clock.now()).await {
                        Ok(outcome) if outcome.ok() => {
                            metrics.pruned(clock.now());
                            vec![(None, outcome.summary(), true)]
                        }
                        Ok(outcome) => {
                            let detail = outcome.summary();
                            tracing::error!(error = %detail, "scheduled prune found damaged manifests");
                            vec![(None, detail, false)]
                        }
                        Err(e) => {
                            let detail = dr_core::error_chain(&e);
                            tracing::error!(error = %detail, "scheduled prune failed");
                            vec![(None, detail, false)]
                        }
                    }
                }
                (Job::Verify, _) => {
                    // Every source the agent looks after, and every other
                    // source with backups in the repository.
                    let mut names = names;
                    match repo.sources().await {
                        Ok(stored) => names.extend(stored),
                        Err(e) => {
                            tracing::warn!(error = %dr_core::error_chain(&e), "listing the repository's sources failed")
                        }
                    }
                    names.sort();
                    names.dedup();
                    let mut events = Vec::new();
                    for name in names {
                        let (ok, detail) =
                            match crate::verify::verify_latest(&repo, &name, ids.as_ref()).await {
                                Ok(Some(o)) => (o.ok(), o.summary()),
                                Ok(None) => continue,
                                Err(e) => (false, dr_core::error_chain(&e)),
                            };
                        if !ok {
                            tracing::error!(source = %name, error = %detail, "scheduled verification failed");
                        }
                        metrics.verified(&name, clock.now(), ok);
                        events.push((Some(name), detail, ok));
                    }
                    events
                }
            };
            Finished { job, events }
        }
    }
}

/// Reads the status of `names` (with WAL continuity from each source's
/// PITR window, and the newest archived WAL of each) into `metrics`, as
/// `dr status` reads it. Returns the sources for which a new base backup
/// is advised, with the LSN of the change that advises it
/// ([`dr_core::status::WalStatus::base_backup_advised`]).
async fn refresh(
    repo: &Repository,
    config: &DrConfig,
    ids: Option<&Identities>,
    names: &[String],
    metrics: &AgentMetrics,
    page: &StatusPage,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(String, String)>> {
    let status = crate::status::read(repo, config, names, ids, now).await?;
    metrics.observe_status(&status.sources);
    if let Ok(mut p) = page.write() {
        *p = Some(status.to_html(now));
    }
    Ok(status
        .sources
        .iter()
        .filter_map(|s| {
            Some((
                s.source.clone(),
                s.wal.as_ref()?.base_backup_advised.clone()?,
            ))
        })
        .collect())
}
