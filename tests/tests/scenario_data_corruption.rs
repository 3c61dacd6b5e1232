//! Scenario 3 of the runbook (data corruption), end to end on real
//! PostgreSQL through the example plan `examples/plans/data-corruption.toml`
//! and the library (no CLI):
//!
//! 1. A production cluster archives its WAL into a local repository; the
//!    application role `app` writes orders; a physical base backup is taken;
//!    more orders are written (they only exist in the WAL).
//! 2. A bad `UPDATE` by the application at a known time corrupts every order.
//! 3. The plan runs: revoke writes from `app` on production, PITR-restore to
//!    just before the bad `UPDATE` into a new cluster, SQL integrity checks,
//!    rewrite `DATABASE_URL` in the application's env file, grant writes on
//!    the new cluster, check, notify (a local webhook receiver).
//! 4. Asserted: the corrupted rows are back exactly as before the `UPDATE`
//!    (and the rows written after the base backup are there), the
//!    application's writes were refused on production during the run and are
//!    accepted on the new cluster through the new `DATABASE_URL`, and the run
//!    is within the plan's RTO.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dr_core::plan::{
    actions, check_file, ActionRegistry, CheckOptions, Executor, JournalStore, PlanObserver,
    RunStatus, StepStatus,
};
use dr_postgres::physical::{self, PhysicalOptions, PitrActionEnv, PostgresPhysical};
use dr_postgres::testing;
use dr_tests::Fixture;

#[test]
#[ignore = "the WAL helper's entry point (PostgreSQL runs it through archive_command and restore_command), not a test"]
fn helper_entry() {
    dr_tests::helper_entry();
}

const SOURCE: &str = "app-db";

/// Runs SQL with psql as whoever `dsn` names; `Err(stderr)` on failure.
fn psql_as(bin: &Path, dsn: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new(bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            dsn,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Tries an application write on production when the steps that follow the
/// revoke start, and records the outcome.
#[derive(Debug)]
struct WriteProbe {
    bin: PathBuf,
    app_dsn: String,
    seen: Mutex<Vec<(String, Result<String, String>)>>,
}

impl PlanObserver for WriteProbe {
    fn step_started(&self, step: &str, _attempt: u32) {
        if ["pitr-restore", "switch-database-url", "grant-writes"].contains(&step) {
            let r = psql_as(
                &self.bin,
                &self.app_dsn,
                "UPDATE orders SET note = 'written during the run' WHERE id = 1",
            );
            self.seen.lock().unwrap().push((step.to_string(), r));
        }
    }
}

/// A one-shot HTTP receiver for the plan's `notify.webhook` step: answers
/// 200 and hands back the request.
fn webhook_receiver() -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .unwrap();
        String::from_utf8_lossy(&buf).to_string()
    });
    (url, handle)
}

const FINGERPRINT: &str =
    "SELECT count(*) || ' ' || md5(string_agg(id || ':' || customer || ':' || total || ':' || note, ',' ORDER BY id)) FROM orders";

#[tokio::test(flavor = "multi_thread")]
async fn data_corruption_plan_restores_before_the_bad_update() {
    if !testing::should_run() {
        return;
    }
    let f = Fixture::new().await;
    let prod = f.archiving_cluster(&f.helper, SOURCE);
    let bin = prod.bin().to_path_buf();

    // The application: its own role, tables owned by postgres.
    prod.psql("postgres", "CREATE DATABASE app");
    prod.psql(
        "app",
        "CREATE ROLE app LOGIN; \
         CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL, note text NOT NULL DEFAULT ''); \
         CREATE TABLE order_lines (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders(id), qty int NOT NULL); \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app; \
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;",
    );
    let app_prod = format!("postgresql://app@127.0.0.1:{}/app", prod.port());
    let write_orders = |from: i64, to: i64| {
        psql_as(
            &bin,
            &app_prod,
            &format!(
                "INSERT INTO orders (customer, total) SELECT 'customer ' || g, g * 1.25 FROM generate_series({from}, {to}) g; \
                 INSERT INTO order_lines (order_id, qty) SELECT id, 1 + id % 5 FROM orders WHERE id BETWEEN {from} AND {to};"
            ),
        )
        .unwrap();
    };
    write_orders(1, 300);

    // The base backup, then orders that exist only in the archived WAL.
    let backup = PostgresPhysical::new(prod.settings("postgres"), PhysicalOptions::default());
    let manifest = dr_core::job::backup(&f.repo, &backup, SOURCE)
        .await
        .unwrap();
    assert_eq!(manifest.source.kind, physical::KIND_PHYSICAL);
    write_orders(301, 400);
    let truth = prod.psql("app", FINGERPRINT);
    assert!(truth.starts_with("400 "), "{truth}");

    // The instant to recover to, between the last good write and the bad one
    // (server clock; the gaps keep commit times clear of the target).
    std::thread::sleep(Duration::from_millis(1200));
    let target_time = prod.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(1200));
    psql_as(
        &bin,
        &app_prod,
        "UPDATE orders SET total = 0, customer = 'corrupted'",
    )
    .unwrap();
    assert_ne!(prod.psql("app", FINGERPRINT), truth, "the corruption took");
    let seg = prod.switch_wal();
    prod.wait_archived(&seg, Duration::from_secs(60));

    // The application's environment file.
    let env_file = f.dir().join("app.env");
    std::fs::write(
        &env_file,
        format!("APP_MODE=production\nDATABASE_URL={app_prod}\n"),
    )
    .unwrap();
    let restore_dir = f.dir().join("new");

    // The actions: generic, PostgreSQL steps, and PITR from the repository.
    let mut registry = ActionRegistry::new();
    actions::register(&mut registry);
    dr_postgres::plan::register(&mut registry);
    let mut env = PitrActionEnv::new(
        f.repo.clone(),
        f.key.clone(),
        f.helper.clone(),
        f.fetch_args(),
    );
    env.wait_timeout = Duration::from_secs(120);
    physical::register(&mut registry, env);

    let (hook_url, hook) = webhook_receiver();
    let set = BTreeMap::from([
        (
            "app_dsn".to_string(),
            format!("postgresql://postgres@127.0.0.1:{}/app", prod.port()),
        ),
        ("target_time".into(), target_time.clone()),
        ("pg_source".into(), SOURCE.into()),
        ("restore_dir".into(), restore_dir.display().to_string()),
        ("app_env_file".into(), env_file.display().to_string()),
    ]);
    let options = CheckOptions::with_set(set).env(BTreeMap::from([(
        "DR_SLACK_WEBHOOK_URL".to_string(),
        hook_url.clone(),
    )]));
    let plan_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/plans/data-corruption.toml");
    let plan = check_file(&plan_path, &registry, &options).unwrap_or_else(|e| panic!("{e}"));

    let probe = Arc::new(WriteProbe {
        bin: bin.clone(),
        app_dsn: app_prod.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let journal = f.dir().join("journal");
    // notify.webhook reads the URL from the run's environment at run time.
    let report = Executor::new(JournalStore::local(&journal))
        .with_env(BTreeMap::from([(
            "DR_SLACK_WEBHOOK_URL".to_string(),
            hook_url.clone(),
        )]))
        .with_observer(probe.clone())
        .run(&plan)
        .await
        .unwrap();
    let restored_state = JournalStore::local(&journal)
        .load(&report.run_id)
        .await
        .ok()
        .and_then(|j| j.step("pitr-restore").and_then(|s| s.output.clone()));

    // Whatever the outcome, never leave the restored server running.
    let guard = StopOnDrop {
        pgdata: restore_dir.clone(),
        bin: bin.clone(),
        owner: prod.owner(),
    };

    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    for s in &report.steps {
        assert_eq!(
            s.status,
            StepStatus::Succeeded,
            "step {}: {:?}",
            s.name,
            s.error
        );
    }
    assert_eq!(report.rto_secs, Some(3600.0));
    assert_eq!(report.within_rto, Some(true), "{} s", report.duration_secs);
    assert!(report.duration_secs < 120.0, "{} s", report.duration_secs);

    // Writes were refused on production while the plan ran.
    let seen = probe.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (step, r) in &seen {
        let err = r
            .as_ref()
            .expect_err(&format!("app wrote on production before {step}"));
        assert!(err.contains("permission denied"), "{step}: {err}");
    }

    // The application's DATABASE_URL now points at the new cluster, as app.
    let out = restored_state.expect("pitr-restore output in the journal");
    let state: physical::PitrRestoreState = serde_json::from_value(out.state).unwrap();
    let text = std::fs::read_to_string(&env_file).unwrap();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("DATABASE_URL="))
        .unwrap()
        .to_string();
    assert_eq!(Some(&url), state.app_dsn.as_ref());
    assert!(url.starts_with("postgresql://app@127.0.0.1:"), "{url}");
    assert_ne!(url, app_prod);
    assert!(text.contains("APP_MODE=production"), "{text}");
    assert_eq!(state.data_dir, restore_dir);
    let reached = state.reached.as_ref().unwrap();
    assert!(reached.timeline >= 2 && !reached.in_recovery, "{reached:?}");

    // The corrupted rows are back as they were before the bad UPDATE, with
    // the orders that only the WAL held.
    assert_eq!(psql_as(&bin, &url, FINGERPRINT).unwrap(), truth);
    assert_eq!(
        psql_as(
            &bin,
            &url,
            "SELECT count(*) FROM orders WHERE customer = 'corrupted'"
        )
        .unwrap(),
        "0"
    );
    // The application writes on the new cluster ...
    psql_as(
        &bin,
        &url,
        "INSERT INTO orders (customer, total) VALUES ('after the recovery', 1); UPDATE orders SET note = 'ok' WHERE id = 1",
    )
    .unwrap();
    // ... and still not on the corrupted one, kept read-only for forensics.
    let err = psql_as(&bin, &app_prod, "UPDATE orders SET note = 'x' WHERE id = 1").unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    // The new cluster does not archive into the production archive.
    assert_eq!(
        psql_as(&bin, &state.dsn, "SHOW archive_mode").unwrap(),
        "off"
    );

    // The notification went out.
    let request = hook.join().unwrap();
    assert!(request.starts_with("POST /hook"), "{request}");
    assert!(request.contains(&target_time), "{request}");

    drop(guard);
    drop(prod);
}

/// Stops the restored server when the test ends, pass or fail.
struct StopOnDrop {
    pgdata: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.pgdata.join("postmaster.pid").exists() {
            return;
        }
        let mut cmd = std::process::Command::new(self.bin.join("pg_ctl"));
        cmd.args([
            "-D",
            &self.pgdata.display().to_string(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .current_dir("/");
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}
