//! dr-agent: the loop with a controlled clock (catch-up, overlap, shutdown),
//! the built binary against a real PostgreSQL (SIGTERM during a backup,
//! `/metrics` over HTTP parsed with a Prometheus text parser), notifications
//! (webhook against wiremock: what a Slack endpoint does with a POST cannot
//! run here; email against a local aiosmtpd sink), and the example YAML.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use dr_core::metrics::AgentMetrics;
use dr_core::schedule::{CronSchedule, ManualClock, Tz};
use dr_core::{BackupSource, InMemorySource};
use dr_ops::agent::{Agent, RunSummary};
use dr_ops::DrConfig;
use dr_postgres::testing::{free_port, should_run, TestCluster};
use dr_storage::{BackupWriter, Identities, InitOptions, Location, Repository, StoreOptions};
use tokio::sync::{oneshot, Semaphore};

#[cfg(feature = "notify")]
fn require(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("DR_REQUIRE_SERVERS").is_some() => {
            panic!("{var} is not set (DR_REQUIRE_SERVERS)")
        }
        _ => {
            eprintln!("skipped: {var} is not set");
            None
        }
    }
}

async fn memory_repo() -> Repository {
    let key = Identities::generate();
    let name = format!("memory://agent-{}", rand_suffix());
    Repository::init(
        &Location::parse(&name).unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap()
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        Utc::now().timestamp_nanos_opt().unwrap_or_default() ^ std::process::id() as i64
    )
}

fn t(h: u32, m: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, h, m, 0).unwrap()
}

fn six_hourly() -> CronSchedule {
    CronSchedule::parse("0 */6 * * *", Tz::UTC).unwrap()
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(repo: &Repository, source: &str) -> usize {
    repo.list_backups(Some(source)).await.unwrap().len()
}

/// A source that writes one artifact, counts the run as started, then
/// waits for a permit (never, if none is given).
#[derive(Debug)]
struct GatedSource {
    gate: Arc<Semaphore>,
    started: Arc<std::sync::atomic::AtomicUsize>,
}

impl GatedSource {
    fn new(gate: &Arc<Semaphore>) -> (Arc<Self>, Arc<std::sync::atomic::AtomicUsize>) {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let source = GatedSource {
            gate: gate.clone(),
            started: started.clone(),
        };
        (Arc::new(source), started)
    }
}

/// Waits until `started` counts `n` runs.
async fn runs_started(started: &std::sync::atomic::AtomicUsize, n: usize) {
    wait_for(&format!("{n} run(s) to start"), || {
        let k = started.load(std::sync::atomic::Ordering::SeqCst);
        async move { k >= n }
    })
    .await;
}

impl std::fmt::Display for GatedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gated test source")
    }
}

#[async_trait]
impl BackupSource for GatedSource {
    fn kind(&self) -> &'static str {
        "test-gated"
    }
    async fn backup(&self, backup: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        backup
            .write_artifact("part-1", &mut &b"first half"[..])
            .await?;
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.gate.acquire().await.expect("gate").forget();
        backup
            .write_artifact("part-2", &mut &b"second half"[..])
            .await?;
        Ok(serde_json::json!({}))
    }
}

/// A source that always fails, as a database that is down.
#[cfg(feature = "notify")]
#[derive(Debug)]
struct DownSource;

#[cfg(feature = "notify")]
impl std::fmt::Display for DownSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("down test source")
    }
}

#[cfg(feature = "notify")]
#[async_trait]
impl BackupSource for DownSource {
    fn kind(&self) -> &'static str {
        "test-down"
    }
    async fn backup(&self, _: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        Err(dr_core::Error::failed(
            "connecting to db.internal:5432",
            "connection refused",
        ))
    }
}

/// Runs `agent` in a task; returns the shutdown trigger and the handle.
fn spawn(agent: Agent) -> (oneshot::Sender<()>, tokio::task::JoinHandle<RunSummary>) {
    let (tx, rx) = oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        agent
            .run(async move {
                let _ = rx.await;
            })
            .await
            .unwrap()
    });
    (tx, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_follow_a_controlled_clock() {
    let repo = memory_repo().await;
    let source = InMemorySource::new();
    source.insert("t", b"rows".to_vec());
    let clock = Arc::new(ManualClock::new(t(7, 0)));
    let metrics = Arc::new(AgentMetrics::new());
    let agent = Agent::new(repo.clone(), Arc::new(DrConfig::default()), metrics.clone())
        .with_backup("app", Arc::new(source), six_hourly())
        .with_clock(clock.clone(), Duration::from_millis(10));
    let (stop, h) = spawn(agent);
    // No backup yet: one catch-up run at once.
    wait_for("the catch-up backup", || async {
        count(&repo, "app").await == 1
    })
    .await;
    clock.set(t(11, 59));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&repo, "app").await, 1, "nothing is due before 12:00");
    clock.set(t(12, 0));
    wait_for("the 12:00 backup", || async {
        count(&repo, "app").await == 2
    })
    .await;
    // The clock jumps a day ahead (a suspended host): one run, not four.
    clock.set(t(12, 0) + chrono::Duration::days(1));
    wait_for("the catch-up after the jump", || async {
        count(&repo, "app").await == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        count(&repo, "app").await,
        3,
        "a burst of runs after the jump"
    );
    stop.send(()).unwrap();
    let summary = h.await.unwrap();
    assert_eq!(summary.started, 3);
    assert_eq!(summary.skipped, 0);
    assert!(summary.aborted.is_empty());
    let text = metrics.encode();
    assert!(
        text.contains("backup_runs_total{source=\"app\",result=\"success\"} 3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_run_is_skipped_and_counted() {
    let repo = memory_repo().await;
    let gate = Arc::new(Semaphore::new(0));
    let (gated, started) = GatedSource::new(&gate);
    let clock = Arc::new(ManualClock::new(t(7, 0)));
    let metrics = Arc::new(AgentMetrics::new());
    let agent = Agent::new(repo.clone(), Arc::new(DrConfig::default()), metrics.clone())
        .with_backup("slow", gated, six_hourly())
        .with_clock(clock.clone(), Duration::from_millis(10));
    let (stop, h) = spawn(agent);
    runs_started(&started, 1).await;
    // The 07:00 catch-up is still running at 12:00: skipped and counted.
    clock.set(t(12, 0));
    wait_for("the skip to be counted", || {
        let text = metrics.encode();
        async move { text.contains("scheduled_runs_skipped_total{source=\"slow\",job=\"backup\"} 1") }
    })
    .await;
    assert_eq!(count(&repo, "slow").await, 0);
    gate.add_permits(1);
    wait_for("the first backup", || async {
        count(&repo, "slow").await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        count(&repo, "slow").await,
        1,
        "the skipped run was started later"
    );
    clock.set(t(18, 0));
    gate.add_permits(1);
    wait_for("the 18:00 backup", || async {
        count(&repo, "slow").await == 2
    })
    .await;
    stop.send(()).unwrap();
    let summary = h.await.unwrap();
    assert_eq!((summary.started, summary.skipped), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_then_aborts_and_lists_nothing() {
    let repo = memory_repo().await;
    let gate = Arc::new(Semaphore::new(0));
    let (gated, started) = GatedSource::new(&gate);
    let metrics = Arc::new(AgentMetrics::new());
    let agent = Agent::new(repo.clone(), Arc::new(DrConfig::default()), metrics.clone())
        .with_backup("stuck", gated, six_hourly())
        .with_clock(
            Arc::new(ManualClock::new(t(7, 0))),
            Duration::from_millis(10),
        )
        .with_grace(Duration::from_millis(300));
    let (stop, h) = spawn(agent);
    runs_started(&started, 1).await;
    let asked = Instant::now();
    stop.send(()).unwrap();
    let summary = h.await.unwrap();
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "did not wait for the grace period"
    );
    assert_eq!(summary.aborted, vec!["backup:stuck".to_string()]);
    assert_eq!(count(&repo, "stuck").await, 0);
    let text = metrics.encode();
    assert!(
        text.contains("backup_runs_total{source=\"stuck\",result=\"aborted\"} 1"),
        "{text}"
    );

    // A run that finishes within the grace period is committed.
    let gate = Arc::new(Semaphore::new(0));
    let (gated, started) = GatedSource::new(&gate);
    let agent = Agent::new(repo.clone(), Arc::new(DrConfig::default()), metrics.clone())
        .with_backup("stuck", gated, six_hourly())
        .with_clock(
            Arc::new(ManualClock::new(t(7, 0))),
            Duration::from_millis(10),
        )
        .with_grace(Duration::from_secs(10));
    let ready = agent.ready_flag();
    let (stop, h) = spawn(agent);
    runs_started(&started, 1).await;
    stop.send(()).unwrap();
    // Shutting down (no longer ready) before the run is let finish.
    wait_for("the agent to start shutting down", || {
        let r = ready.load(std::sync::atomic::Ordering::SeqCst);
        async move { !r }
    })
    .await;
    gate.add_permits(1);
    let summary = h.await.unwrap();
    assert!(summary.aborted.is_empty());
    assert_eq!(count(&repo, "stuck").await, 1);
}

// ---- the binary against PostgreSQL ----

struct AgentEnv {
    dir: tempfile::TempDir,
    port: u16,
}

impl AgentEnv {
    async fn new(pg: &TestCluster, extra: &str) -> (Self, Repository, Identities) {
        let dir = tempfile::tempdir().unwrap();
        let key = Identities::generate();
        let url = format!("file://{}", dir.path().join("repo").display());
        let repo = Repository::init(
            &Location::parse(&url).unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let port = free_port();
        let config = format!(
            r#"
[repository]
url = "{url}"

[sources.db]
kind = "postgres"
dsn = "{dsn}"
bin_dir = "{bin}"
globals = false
# Yearly: the first run is the catch-up for a source without backups.
schedule = "0 0 1 1 *"

[agent]
listen = "127.0.0.1:{port}"
{extra}
"#,
            dsn = pg.dsn("db"),
            bin = pg.bin().display(),
        );
        std::fs::write(dir.path().join("dr.toml"), config).unwrap();
        (AgentEnv { dir, port }, repo, key)
    }

    fn start(&self) -> Child {
        start_agent(&self.dir.path().join("dr.toml"), &self.log())
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Starts the built `dr-agent` on `config` with none of dr's variables
/// inherited, logging at info into `log`.
fn start_agent(config: &Path, log: &Path) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("dr-agent"))
        .arg("--config")
        .arg(config)
        .env_remove("DR_CONFIG")
        .env_remove("DR_AGENT_LISTEN")
        .env_remove("DR_REPO")
        .env_remove("DR_IDENTITY_FILE")
        .env("DR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dr-agent did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn scrape(env: &AgentEnv) -> Option<String> {
    let r = reqwest::get(env.url("/metrics")).await.ok()?;
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    r.text().await.ok()
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_over_http_after_a_real_backup() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let (env, repo, _) = AgentEnv::new(&pg, "").await;
    let mut child = env.start();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(t) = scrape(&env).await {
            text = t;
            if text.contains("result=\"success\"") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = reqwest::get(env.url("/health")).await.unwrap();
    let ready = reqwest::get(env.url("/ready")).await.unwrap();
    let page = reqwest::get(env.url("/")).await.unwrap();
    let page_type = page.headers()["content-type"].to_str().unwrap().to_string();
    let page_status = page.status();
    let page = page.text().await.unwrap();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(health.status(), 200);
    assert_eq!(ready.status(), 200);
    // The status page: HTML, the configured source in its table.
    assert_eq!(page_status, 200);
    assert_eq!(page_type, "text/html; charset=utf-8");
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("<h1>dr status: "),
        "{page}"
    );
    assert!(page.contains("<tr><td>db</td>"), "{page}");

    let scrape = parse(&text);
    let backups = repo.list_backups(Some("db")).await.unwrap();
    assert_eq!(backups.len(), 1, "{log}");
    let m = &backups[0];
    let db = [("source", "db")];
    assert_eq!(
        sample(
            &scrape,
            "backup_runs_total",
            &[("source", "db"), ("result", "success")]
        ),
        Some(1.0),
        "{text}"
    );
    let last = sample(&scrape, "backup_last_success_timestamp_seconds", &db).unwrap();
    assert!(
        (last - m.finished_at.timestamp_millis() as f64 / 1000.0).abs() < 0.001,
        "{last} {text}"
    );
    assert_eq!(
        sample(&scrape, "backup_size_bytes", &db),
        Some(m.stored_size() as f64)
    );
    assert!(sample(&scrape, "backup_duration_seconds", &db).unwrap() > 0.0);
    assert_eq!(sample(&scrape, "objective_rpo_seconds", &db), Some(900.0));
    assert_eq!(sample(&scrape, "objective_rto_seconds", &db), Some(3600.0));
    assert!(sample(&scrape, "backup_last_failure_timestamp_seconds", &db).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_backup_leaves_no_half_backup() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let (env, repo, key) = AgentEnv::new(&pg, "shutdown_grace = \"1s\"").await;
    // A session holding an exclusive lock: pg_dump waits on it, so the
    // backup is in progress for as long as the test wants.
    let mut holder = Command::new(pg.bin().join("psql"))
        .args(["-X", "-q", "-d", &pg.dsn("db"), "-c"])
        .arg("BEGIN; LOCK TABLE pgbench_accounts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(300);")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = env.start();
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = 'db'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.psql("postgres", waiting) == "0" {
        assert!(
            Instant::now() < deadline,
            "the backup never reached the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let asked = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let log = std::fs::read_to_string(env.log()).unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "stopped before the grace period"
    );
    assert!(log.contains("grace period over"), "{log}");
    assert!(
        repo.list_backups(None).await.unwrap().is_empty(),
        "a half backup is listed"
    );
    // Release the lock: the server ends the holder's session (a backend
    // in pg_sleep does not notice its client going away).
    pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()",
    );
    let _ = holder.kill();
    let _ = holder.wait();

    // The next run succeeds, and the backup is whole.
    let mut child = env.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&repo, "db").await == 0 {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "no backup after the restart:\n{}",
                std::fs::read_to_string(env.log()).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let m = repo.list_backups(Some("db")).await.unwrap().remove(0);
    let report = dr_core::job::verify(&repo, &m, Some(&key), None)
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let p = dir.path().join("dr.toml");
        std::fs::write(&p, text).unwrap();
        p
    };
    for (text, needle) in [
        (
            "[sources.db]\nkind = 'postgres'\ndsn = 'postgresql://u@h/db'\nschedule = '0 */6 * *'\n",
            "sources.db.schedule",
        ),
        ("[agent]\ntime_zone = 'Mars/Olympus'\n", "Mars/Olympus"),
        ("[agent]\nprune_schedul = '0 3 * * *'\n", "prune_schedul"),
        ("[agent.notify.email]\nhost = 'h'\nfrom = 'nobody'\nto = ['a@b.c']\n", "agent.notify.email.from"),
    ] {
        let out = Command::new(assert_cmd::cargo::cargo_bin("dr-agent"))
            .arg("--config")
            .arg(write(text))
            .env_remove("DR_CONFIG")
            .env_remove("DR_REPO")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
    }
}

// ---- notifications ----

#[cfg(feature = "notify")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_the_webhook_once_per_interval() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/T0/B0/SECRET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let config: dr_core::notify::NotifyConfig = toml::from_str(&format!(
        "min_interval = \"1d\"\n[webhook]\nurl = \"{}/hooks/T0/B0/SECRET\"\nformat = \"json\"\n",
        server.uri()
    ))
    .unwrap();
    let notifier = Arc::new(dr_core::notify::Notifier::new(&config).unwrap());
    let repo = memory_repo().await;
    let clock = Arc::new(ManualClock::new(t(7, 0)));
    let metrics = Arc::new(AgentMetrics::new());
    let agent = Agent::new(repo.clone(), Arc::new(DrConfig::default()), metrics.clone())
        .with_backup("app-db", Arc::new(DownSource), six_hourly())
        .with_clock(clock.clone(), Duration::from_millis(10))
        .with_notifier(notifier);
    let (stop, h) = spawn(agent);
    wait_for("the first notification", || async {
        server.received_requests().await.unwrap_or_default().len() == 1
    })
    .await;
    // Fails again at 12:00: counted, but held back by the rate limit.
    clock.set(t(12, 0));
    wait_for("the second failure", || {
        let text = metrics.encode();
        async move { text.contains("backup_runs_total{source=\"app-db\",result=\"failure\"} 2") }
    })
    .await;
    stop.send(()).unwrap();
    h.await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["source"], "app-db");
    assert_eq!(body["outcome"], "failure");
    assert_eq!(body["job"], "backup");
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("dr: backup of app-db FAILED"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert_eq!(requests[0].headers["content-type"], "application/json");
}

#[cfg(feature = "notify")]
#[tokio::test]
async fn webhook_errors_are_reported_without_the_url() {
    use dr_core::notify::{Event, Notifier, NotifyConfig, NotifyError, Outcome};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let event = Event {
        job: "backup".into(),
        source: Some("vault".into()),
        outcome: Outcome::Failure,
        at: Utc::now(),
        detail: "sealed".into(),
    };
    let cfg: NotifyConfig =
        toml::from_str(&format!("[webhook]\nurl = \"{}/SECRET\"\n", server.uri())).unwrap();
    let out = Notifier::new(&cfg)
        .unwrap()
        .notify(&event, Utc::now())
        .await;
    assert!(
        matches!(out[0].1, Err(NotifyError::WebhookStatus { status: 500 })),
        "{out:?}"
    );
    // Nobody listening: unavailable (retryable), and the secret path is not in the error chain.
    let port = free_port();
    let cfg: NotifyConfig = toml::from_str(&format!(
        "[webhook]\nurl = \"http://127.0.0.1:{port}/SECRET\"\n"
    ))
    .unwrap();
    let out = Notifier::new(&cfg)
        .unwrap()
        .notify(&event, Utc::now())
        .await;
    let e = out.into_iter().next().unwrap().1.unwrap_err();
    let mut chain = format!("{e}");
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        chain.push_str(&format!(": {c}"));
        cur = c.source();
    }
    assert!(!chain.contains("SECRET"), "{chain}");
    assert!(dr_core::Error::from(e).is_retryable());
}

#[cfg(feature = "notify")]
struct SmtpSink {
    child: Child,
    out: PathBuf,
    port: u16,
}

#[cfg(feature = "notify")]
impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "notify")]
fn smtp_sink(python: &str, dir: &Path) -> SmtpSink {
    let port = free_port();
    let out = dir.join("smtp.out");
    let child = Command::new(python)
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Debugging",
        ])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    SmtpSink { child, out, port }
}

#[cfg(feature = "notify")]
#[tokio::test]
async fn email_reaches_a_local_smtp_sink() {
    use dr_core::notify::{Event, Notifier, NotifyConfig, Outcome};

    let Some(python) = require("DR_TEST_SMTP_PYTHON") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = smtp_sink(&python, dir.path());
    let cfg: NotifyConfig = toml::from_str(&format!(
        "on_success = true\n[email]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"dr-agent <dr@example.com>\"\nto = [\"oncall@example.com\", \"dba@example.com\"]\n",
        sink.port
    ))
    .unwrap();
    let n = Notifier::new(&cfg).unwrap();
    let event = Event {
        job: "backup".into(),
        source: Some("app-db".into()),
        outcome: Outcome::Failure,
        at: Utc::now(),
        detail: "pg_dump: error: connection refused".into(),
    };
    let out = n.notify(&event, Utc::now()).await;
    assert_eq!(out.len(), 1);
    assert!(out[0].1.is_ok(), "{:?}", out[0].1);
    let ok = Event {
        outcome: Outcome::Success,
        detail: "backup 20240501T070000Z".into(),
        ..event.clone()
    };
    assert!(n.notify(&ok, Utc::now()).await[0].1.is_ok());
    // The same failure again within the interval: held back, nothing sent.
    assert!(n.notify(&event, Utc::now()).await.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&sink.out).unwrap();
        if text.matches("END MESSAGE").count() >= 2 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(text.matches("END MESSAGE").count(), 2, "{text}");
    assert!(
        text.contains("Subject: dr: backup of app-db FAILED"),
        "{text}"
    );
    assert!(
        text.contains("Subject: dr: backup of app-db succeeded"),
        "{text}"
    );
    assert!(
        text.contains("pg_dump: error: connection refused"),
        "{text}"
    );
    assert!(
        text.contains("oncall@example.com") && text.contains("dba@example.com"),
        "{text}"
    );
}

// ---- the examples ----

#[test]
fn every_example_yaml_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut kinds = Vec::new();
    let mut files = 0;
    for dir in ["kubernetes", "alerts"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = entry.unwrap().path();
            if !matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&p).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v = serde_yaml::Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                if let Some(k) = v.get("kind").and_then(|k| k.as_str()) {
                    kinds.push(k.to_string());
                }
            }
        }
    }
    assert!(files >= 5, "{files} YAML files");
    for k in [
        "Deployment",
        "ServiceMonitor",
        "CronJob",
        "Service",
        "ConfigMap",
    ] {
        assert!(
            kinds.iter().any(|x| x == k),
            "no {k} in examples/kubernetes: {kinds:?}"
        );
    }
}

/// Every alert rule has a summary and a `runbook_url` naming a section of
/// README.md that exists (GitHub's heading anchors: lower case, spaces to
/// hyphens, punctuation dropped).
#[test]
fn every_alert_links_a_readme_section() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let anchors: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let text = std::fs::read_to_string(root.join("examples/alerts/dr.rules.yml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            alerts += 1;
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}");
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no runbook_url"));
            let anchor = url
                .strip_prefix("README.md#")
                .unwrap_or_else(|| panic!("{name}: {url}"));
            assert!(
                anchors.iter().any(|a| a == anchor),
                "{name}: no README section #{anchor} in {anchors:?}"
            );
        }
    }
    assert!(alerts >= 7, "{alerts} alerts");
}

use serde::Deserialize as _;

/// `dr status` (the binary) on a repository, as JSON, with its exit code.
fn dr_status(config: &Path) -> (serde_json::Value, Option<i32>) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("dr"))
        .env_remove("DR_REPO")
        .env("DR_CONFIG", config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    (
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        }),
        out.status.code(),
    )
}

/// The divergence of issue 14: the agent's scheduled verification must be
/// recorded in the repository exactly as `dr verify` records it, so `dr
/// status` (and its `verify_last_success_timestamp_seconds`) sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_verification_is_recorded_as_dr_verify_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = Identities::generate();
    let key_file = dir.path().join("key.txt");
    std::fs::write(
        &key_file,
        secrecy::ExposeSecret::expose_secret(&key.to_file_text()),
    )
    .unwrap();
    let repo_dir = dir.path().join("repo");
    let repo = Repository::init(
        &Location::parse(repo_dir.to_str().unwrap()).unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    let source = InMemorySource::new();
    source.insert("t", b"rows".to_vec());
    let m = dr_core::job::backup(&repo, &source, "app").await.unwrap();
    let config_file = dir.path().join("dr.toml");
    std::fs::write(
        &config_file,
        format!(
            "[repository]\nurl = \"{}\"\nidentity_file = \"{}\"\n[agent]\nverify_schedule = \"* * * * *\"\n",
            repo_dir.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let (before, _) = dr_status(&config_file);
    assert!(before["sources"][0]["last_verify"].is_null(), "{before:#}");

    // The agent, built from the file as dr-agent builds it, on a clock that
    // is then moved past the next minute.
    let config = DrConfig::load(&config_file).unwrap();
    let ops = dr_ops::Ops::new(config, Default::default());
    let metrics = Arc::new(AgentMetrics::new());
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let agent = ops
        .agent(metrics.clone())
        .await
        .unwrap()
        .with_clock(clock.clone(), Duration::from_millis(10));
    let ready = agent.ready_flag();
    let (stop, h) = spawn(agent);
    // Only once the agent has scheduled its jobs does the clock move.
    wait_for("the agent to start", || async {
        ready.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    clock.advance(chrono::Duration::seconds(61));
    wait_for("the scheduled verification", || async {
        metrics
            .encode()
            .contains("verify_last_success_timestamp_seconds{source=\"app\"}")
    })
    .await;
    stop.send(()).unwrap();
    assert_eq!(h.await.unwrap().started, 1);

    let (after_agent, code) = dr_status(&config_file);
    assert_eq!(code, Some(0), "{after_agent:#}");
    let by_agent = after_agent["sources"][0]["last_verify"].clone();
    assert_eq!(
        by_agent["backup_id"],
        m.backup_id.as_str(),
        "{after_agent:#}"
    );
    assert_eq!(by_agent["ok"], true);
    assert_eq!(by_agent["level"], "decoded");

    // `dr verify` on the same backup records the same outcome.
    let out = Command::new(assert_cmd::cargo::cargo_bin("dr"))
        .env_remove("DR_REPO")
        .env("DR_CONFIG", &config_file)
        .args(["verify", "latest", "--source", "app"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (after_cli, _) = dr_status(&config_file);
    let by_cli = &after_cli["sources"][0]["last_verify"];
    for field in ["source", "backup_id", "level", "ok", "unproven", "problems"] {
        assert_eq!(by_cli[field], by_agent[field], "{field}");
    }
    assert!(by_cli["verified_at"].as_str() >= by_agent["verified_at"].as_str());
    let prom = Command::new(assert_cmd::cargo::cargo_bin("dr"))
        .env_remove("DR_REPO")
        .env("DR_CONFIG", &config_file)
        .args(["status", "--prometheus", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8(prom.stdout).unwrap();
    assert!(
        sample(
            &parse(&text),
            "verify_last_success_timestamp_seconds",
            &[("source", "app")]
        )
        .is_some(),
        "{text}"
    );
}

/// Issue 22: a tablespace created after the newest base backup (recorded
/// by `dr wal-push` as the segment holding it is archived) makes the agent
/// take a base backup ahead of its yearly schedule, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablespace_created_after_the_base_backup_brings_the_next_one_forward() {
    if !should_run() {
        return;
    }
    let dir = common::scratch("dragentts");
    let repo_dir = dir.path().join("repo");
    let key = common::init_repo(dir.path(), &[], repo_dir.to_str().unwrap());
    let pg = TestCluster::start_with(common::archiving(&repo_dir, "base"));
    let port = free_port();
    let config = dir.path().join("dr.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = {repo:?}\nidentity_file = {key:?}\n\n\
             [sources.base]\nkind = \"postgres-physical\"\ndsn = {dsn:?}\n\
             # Yearly: the first run is the catch-up for a source without backups.\n\
             schedule = \"0 0 1 1 *\"\n\n\
             [agent]\nlisten = \"127.0.0.1:{port}\"\nrefresh_interval = \"1s\"\n",
            repo = repo_dir.display().to_string(),
            key = key.display().to_string(),
            dsn = pg.dsn("postgres"),
        ),
    )
    .unwrap();
    common::chmod_tree(dir.path());
    let log = dir.path().join("agent.log");
    let mut child = start_agent(&config, &log);
    let repo = Repository::open(
        &Location::parse(repo_dir.to_str().unwrap()).unwrap(),
        &StoreOptions::default(),
    )
    .await
    .unwrap();
    let backups = || async { repo.list_backups(Some("base")).await.unwrap() };
    let deadline = Instant::now() + Duration::from_secs(90);
    while backups().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no catch-up base backup:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = backups().await;
    assert_eq!(first.len(), 1);

    let location = tempfile::Builder::new()
        .prefix("dragentts2")
        .tempdir_in("/tmp")
        .unwrap();
    if let Some((uid, gid)) = pg.owner() {
        std::os::unix::fs::chown(location.path(), Some(uid), Some(gid)).unwrap();
    }
    pg.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE ts2 LOCATION '{}'",
            location.path().display()
        ),
    );
    let created_at: dr_postgres::format::Lsn = pg
        .psql("postgres", "SELECT pg_current_wal_lsn()")
        .trim()
        .parse()
        .unwrap();
    pg.switch_wal();
    let deadline = Instant::now() + Duration::from_secs(90);
    while backups().await.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no base backup after the tablespace change:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}\n{text}");
    assert!(
        text.contains("a tablespace was created or dropped after the newest base backup: taking a base backup now"),
        "{text}"
    );
    let all = backups().await;
    assert_eq!(all.len(), 2, "one early base backup for one change");
    let start = dr_postgres::PhysicalMetadata::from_manifest(&all[1])
        .unwrap()
        .start_lsn;
    assert!(
        start > created_at,
        "the early base backup starts after the change ({start} <= {created_at})"
    );
}
