//! `postgres.pitr_restore` (crash re-runs, rollback) and
//! `PhysicalScratchRestorer` (`dr verify --restore` of a physical backup) on
//! a real PostgreSQL cluster archiving into a local repository.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dr_core::plan::{Action, ActionContext, Checkpoint, CheckpointSink};
use dr_core::Restorer;
use dr_postgres::physical::{
    self, PhysicalOptions, PhysicalScratchRestorer, PitrActionEnv, PitrRestore, PitrRestoreParams,
    PitrRestoreState, PostgresPhysical,
};
use dr_postgres::testing;
use dr_tests::Fixture;

#[test]
#[ignore = "the WAL helper's entry point (PostgreSQL runs it through archive_command and restore_command), not a test"]
fn helper_entry() {
    dr_tests::helper_entry();
}

/// The executor's journal, in memory.
#[derive(Default)]
struct Saved(Mutex<Option<serde_json::Value>>);

#[async_trait]
impl CheckpointSink for Saved {
    async fn save(&self, state: serde_json::Value) -> dr_core::Result<()> {
        *self.0.lock().unwrap() = Some(state);
        Ok(())
    }
}

fn ctx(previous: Option<serde_json::Value>, sink: Arc<Saved>) -> ActionContext {
    let mut c = ActionContext::new("run-1", "pitr-restore");
    c.checkpoint = Some(Checkpoint::new(previous, sink));
    c.deadline = Some(tokio::time::Instant::now() + Duration::from_secs(180));
    c
}

fn count(bin: &std::path::Path, dsn: &str) -> String {
    let out = std::process::Command::new(bin.join("psql"))
        .args(["-X", "-A", "-t", "-d", dsn, "-c", "SELECT count(*) FROM t"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn pitr_action_reruns_and_rolls_back_and_scratch_verify() {
    if !testing::should_run() {
        return;
    }
    let f = Fixture::new().await;
    let c = f.archiving_cluster(&f.helper, "db");
    let bin = c.bin().to_path_buf();
    c.psql(
        "postgres",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)",
    );
    let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
    let manifest = dr_core::job::backup(&f.repo, &source, "db").await.unwrap();
    c.psql("postgres", "INSERT INTO t SELECT generate_series(101, 150)");
    std::thread::sleep(Duration::from_millis(1100));
    let target = c.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("postgres", "INSERT INTO t SELECT generate_series(151, 170)");
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));

    // ---- postgres.pitr_restore ----
    let mut env = PitrActionEnv::new(
        f.repo.clone(),
        f.key.clone(),
        f.helper.clone(),
        f.fetch_args(),
    );
    env.wait_timeout = Duration::from_secs(120);
    let env = Arc::new(env);
    let dir = f.dir().join("r");
    let params: PitrRestoreParams = serde_json::from_value(serde_json::json!({
        "source": "db", "target_time": target, "data_dir": dir,
    }))
    .unwrap();
    let action = PitrRestore::new(env.clone(), params).unwrap();
    let sink = Arc::new(Saved::default());
    let first = action.run(&ctx(None, sink.clone())).await.unwrap();
    let state: PitrRestoreState = serde_json::from_value(first.state.clone()).unwrap();
    assert_eq!(count(&bin, &state.dsn), "150", "rows of the target time");
    assert_eq!(state.backup_id, manifest.backup_id);
    let saved = sink
        .0
        .lock()
        .unwrap()
        .clone()
        .expect("checkpoint saved before the restore");

    // A re-run after a crash (the checkpoint survives): the same cluster,
    // running or stopped, is reused, not restored again.
    let again = action
        .run(&ctx(Some(saved.clone()), sink.clone()))
        .await
        .unwrap();
    let s2: PitrRestoreState = serde_json::from_value(again.state.clone()).unwrap();
    assert_eq!(s2.dsn, state.dsn);
    assert!(
        again.summary.starts_with("already restored"),
        "{}",
        again.summary
    );
    let mut stop = physical::PitrOptions::new(
        dir.clone(),
        physical::RecoveryTarget::Immediate,
        f.helper.clone(),
        vec![],
    );
    stop.bin_dir = Some(bin.clone());
    physical::stop_server(&stop, 15).await.unwrap();
    let third = action
        .run(&ctx(Some(saved.clone()), sink.clone()))
        .await
        .unwrap();
    let s3: PitrRestoreState = serde_json::from_value(third.state.clone()).unwrap();
    assert_eq!(count(&bin, &s3.dsn), "150");

    // Without the checkpoint, the now non-empty directory is refused.
    let e = action
        .run(&ctx(None, Arc::new(Saved::default())))
        .await
        .unwrap_err();
    assert!(matches!(e, dr_core::Error::Conflict { .. }), "{e:?}");

    // Rollback stops the server and removes the directory; twice is fine.
    action
        .rollback(&ctx(None, sink.clone()), &first)
        .await
        .unwrap();
    assert!(!dir.exists());
    let out = action
        .rollback(&ctx(None, sink.clone()), &first)
        .await
        .unwrap();
    assert!(out.summary.contains("already removed"), "{}", out.summary);

    // A crash in the middle of unpacking: the checkpoint names the directory,
    // which holds a partial restore without the marker. It is removed and
    // restored again.
    std::fs::create_dir_all(dir.join("base")).unwrap();
    std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
    let fourth = action
        .run(&ctx(Some(saved.clone()), sink.clone()))
        .await
        .unwrap();
    let s4: PitrRestoreState = serde_json::from_value(fourth.state.clone()).unwrap();
    assert!(!fourth.summary.starts_with("already"), "{}", fourth.summary);
    assert_eq!(count(&bin, &s4.dsn), "150");
    action
        .rollback(&ctx(None, sink.clone()), &fourth)
        .await
        .unwrap();
    assert!(!dir.exists());

    // A target before the backup fails before anything is created.
    let early: PitrRestoreParams = serde_json::from_value(serde_json::json!({
        "source": "db", "target_time": "2001-01-01T00:00:00Z", "data_dir": dir,
    }))
    .unwrap();
    let e = PitrRestore::new(env.clone(), early)
        .unwrap()
        .run(&ctx(None, Arc::new(Saved::default())))
        .await
        .unwrap_err();
    assert!(matches!(e, dr_core::Error::NotFound { .. }), "{e:?}");
    assert!(!dir.exists());

    // ---- dr verify --restore of the physical backup ----
    let scratch_parent = f.dir().join("s");
    std::fs::create_dir(&scratch_parent).unwrap();
    let scratch = PhysicalScratchRestorer::new(f.key.clone(), f.helper.clone(), f.fetch_args())
        .with_parent(&scratch_parent)
        .with_bin_dir(&bin)
        .with_wait_timeout(Duration::from_secs(120));
    assert!(scratch.accepts(physical::KIND_PHYSICAL));
    assert!(!scratch.accepts("postgres-logical"));
    let report = dr_core::job::verify(&f.repo, &manifest, Some(&f.key), Some(&scratch))
        .await
        .unwrap();
    assert!(report.restore_error.is_none(), "{:?}", report.restore_error);
    let checks = report.checks.clone().unwrap();
    assert!(checks.ok(), "{checks:?}");
    let names: Vec<_> = checks.checks.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"databases") && names.contains(&"system identifier"),
        "{names:?}"
    );
    if bin.join("pg_amcheck").exists() {
        assert!(
            names.iter().any(|n| n.starts_with("pg_amcheck")),
            "{names:?}"
        );
    }
    assert_eq!(report.discarded, Some(true));
    assert_eq!(std::fs::read_dir(&scratch_parent).unwrap().count(), 0);
    report.into_result().unwrap();

    // The check compares with the manifest: a different database list fails.
    let restore = dr_core::job::restore(&f.repo, &manifest, &f.key, &scratch)
        .await
        .unwrap();
    assert!(restore.bytes_read > 0);
    // The scratch server listens on its own socket only, never on TCP.
    let pgdata = restore.details["pgdata"].as_str().unwrap();
    let listen = std::process::Command::new(bin.join("psql"))
        .args([
            "-X", "-A", "-t", "-h", pgdata, "-p", "5432", "-U", "postgres", "-d", "postgres",
        ])
        .args(["-c", "SHOW listen_addresses"])
        .output()
        .unwrap();
    assert!(
        listen.status.success(),
        "{}",
        String::from_utf8_lossy(&listen.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&listen.stdout).trim(), "");
    let mut tampered = manifest.clone();
    tampered.metadata["databases"] = serde_json::json!(["postgres", "missing_db"]);
    tampered.metadata["system_identifier"] = serde_json::json!("1");
    let bad = scratch.check(&tampered).await.unwrap();
    assert!(!bad.ok());
    let failed: Vec<_> = bad.failures().map(|c| c.name.clone()).collect();
    assert_eq!(failed, ["system identifier", "databases"], "{bad:?}");
    scratch.discard().await.unwrap();
    assert_eq!(std::fs::read_dir(&scratch_parent).unwrap().count(), 0);
}
