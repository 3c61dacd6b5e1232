//! Physical base backups and point-in-time restore on a real cluster with
//! archiving on, under pgbench write load, against S3 (moto, when
//! `DR_TEST_S3_URL` is set) or a local directory.
//!
//! PostgreSQL runs `archive_command` itself. It calls this test binary
//! through a small shell script (the `common::helper_entry` test, selected by
//! `DR_HELPER_ARGS`), which runs exactly the library calls `dr wal-push` and
//! `dr wal-fetch` make and exits with their exit codes.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dr_postgres::physical::PitrError;
use dr_postgres::physical::{
    self, PhysicalMetadata, PhysicalOptions, PostgresPhysical, RecoveryTarget,
};
use dr_postgres::testing::{self, ClusterOptions, TestCluster};
use dr_storage::WalArchive;

/// Ground truth: a table of (id, committed_at) written continuously, one row
/// per transaction, while pgbench writes too.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn start_load(c: &TestCluster) -> Load {
    c.psql(
        "postgres",
        "CREATE TABLE truth (id bigserial PRIMARY KEY, committed_at timestamptz NOT NULL)",
    );
    c.pgbench_init("postgres", 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    let dsn = c.dsn("postgres");
    let bin = c.bin().to_path_buf();
    let s = stop.clone();
    let d = dsn.clone();
    threads.push(std::thread::spawn(move || {
        // One transaction per row; committed_at is the commit time written
        // with clock_timestamp() as the last statement of the transaction.
        let mut child = std::process::Command::new(bin.join("psql"))
            .args(["-X", "-q", "-d", &d])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        use std::io::Write;
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            writeln!(
                stdin,
                "INSERT INTO truth (committed_at) VALUES (clock_timestamp());"
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(child.stdin.take());
        child.wait().unwrap();
    }));
    let bin = c.bin().to_path_buf();
    let s = stop.clone();
    threads.push(std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::process::Command::new(bin.join("pgbench"))
                .args(["-n", "-q", "-c", "2", "-T", "1", "-d", &dsn])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }));
    Load { stop, threads }
}

impl Load {
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

fn restore_dir(parent: &Path, name: &str) -> PathBuf {
    parent.join(name)
}

/// Restores to `target` and returns (rows present, max committed_at, max id).
async fn restore_and_count(
    f: &Fixture,
    parent: &Path,
    name: &str,
    target: RecoveryTarget,
) -> (i64, String, physical::PitrReport) {
    let opts = pitr_options(f, restore_dir(parent, name), target);
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap();
    let report = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap();
    let conn = dr_postgres::ConnectionSettings::from_dsn(&format!(
        "host={} port={} user=postgres dbname=postgres",
        report.socket_dir.as_ref().unwrap().display(),
        report.port.unwrap()
    ))
    .unwrap();
    let client = conn.connect().await.unwrap();
    let row = client
        .query_one("SELECT count(*), coalesce(max(id), 0), archive_mode FROM truth, (SELECT current_setting('archive_mode') AS archive_mode) s GROUP BY archive_mode", &[])
        .await
        .unwrap();
    let count: i64 = row.get(0);
    let max_id: i64 = row.get(1);
    let last: String = client
        .query_one(
            "SELECT coalesce(max(committed_at)::text, '') FROM truth",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mode: String = row.get(2);
    assert_eq!(mode, "off", "a restored test cluster must not archive");
    // Ids are dense and in commit order: every row up to max_id is present.
    assert_eq!(count, max_id, "rows missing below the last one restored");
    physical::stop_server(&opts, 15).await.unwrap();
    (max_id, last, report)
}

#[tokio::test(flavor = "multi_thread")]
async fn pitr_to_time_lsn_and_name_under_load() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let c = f.archiving_cluster("db");
    let load = start_load(&c);
    std::thread::sleep(Duration::from_secs(1));

    // Base backup: preflight, pg_basebackup streamed, stop segment archived.
    let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
    let manifest = dr_core::job::backup(&f.repo, &source, "db").await.unwrap();
    assert_eq!(manifest.source.kind, physical::KIND_PHYSICAL);
    let meta: PhysicalMetadata = serde_json::from_value(manifest.metadata.clone()).unwrap();
    assert!(meta.stop_lsn > meta.start_lsn);
    assert!(
        meta.backup_label.contains("START WAL LOCATION"),
        "{}",
        meta.backup_label
    );
    assert!(meta.databases.contains(&"postgres".to_string()));
    let archive = WalArchive::new(&f.repo, "db").unwrap();
    let sysid: u64 = meta.system_identifier.parse().unwrap();
    assert!(!archive
        .find(sysid, &meta.stop_segment)
        .await
        .unwrap()
        .is_empty());
    let before_backup_end = chrono::Utc::now() - chrono::Duration::hours(1);

    // Targets after the backup, under load.
    std::thread::sleep(Duration::from_millis(1500));
    let t1: String = c.psql("postgres", "SELECT clock_timestamp()");
    let t1_rows: i64 = c
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM truth WHERE committed_at <= '{t1}'"),
        )
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let lsn_row = c.psql(
        "postgres",
        "SELECT (SELECT max(id) FROM truth) || ' ' || pg_current_wal_lsn()",
    );
    let (lsn_max_id, lsn) = lsn_row.split_once(' ').unwrap();
    let lsn_max_id: i64 = lsn_max_id.parse().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    // Writers wait on the lock, so the restore point sits exactly after row
    // name_max.
    let out = c.psql(
        "postgres",
        "BEGIN; LOCK TABLE truth IN EXCLUSIVE MODE; SELECT max(id) FROM truth; \
         SELECT pg_create_restore_point('before_the_end'); COMMIT;",
    );
    let name_max: i64 = out.lines().next().unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    load.stop();
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));

    let parent = tempfile::Builder::new()
        .prefix("drr")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o777)).unwrap();

    // Time: every row committed at or before the target, none after.
    let (t, explicit) = physical::parse_target_time(&t1).unwrap();
    assert!(explicit);
    let (max_id, last, report) =
        restore_and_count(&f, parent.path(), "t", RecoveryTarget::Time(t)).await;
    let after: String = c.psql("postgres", &format!("SELECT string_agg(id || '@' || committed_at, ', ') FROM truth WHERE id > {t1_rows} AND id <= {max_id} + 1"));
    assert_eq!(
        max_id, t1_rows,
        "time target {t1}: restored up to {last}; live rows after: {after}; {:?}",
        report.plan.settings
    );
    let reached = report.reached.unwrap();
    assert!(
        reached.timeline >= 2,
        "promoted onto a new timeline: {reached:?}"
    );

    // LSN: the row visible at that LSN is there, and not much later ones.
    let (max_id, _, _) = restore_and_count(
        &f,
        parent.path(),
        "l",
        RecoveryTarget::Lsn(lsn.parse().unwrap()),
    )
    .await;
    assert!(
        max_id >= lsn_max_id,
        "LSN target lost committed rows: {max_id} < {lsn_max_id}"
    );
    assert!(
        max_id <= lsn_max_id + 2,
        "LSN target replayed too far: {max_id} vs {lsn_max_id}"
    );

    // Name: the restore point.
    let (max_id, _, _) = restore_and_count(
        &f,
        parent.path(),
        "n",
        RecoveryTarget::Name("before_the_end".into()),
    )
    .await;
    assert_eq!(max_id, name_max);

    // --target-action shutdown: success only when the server stopped AT the
    // target; a target past the end of the archive is a failed recovery
    // (the server also shuts down then), never reported as reached.
    let mut opts = pitr_options(
        &f,
        parent.path().join("shut"),
        RecoveryTarget::Name("before_the_end".into()),
    );
    opts.action = physical::TargetAction::Shutdown;
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap();
    physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .expect("shutdown at a reachable restore point");
    let future: chrono::DateTime<chrono::FixedOffset> =
        chrono::DateTime::parse_from_rfc3339("2100-01-01T00:00:00+00:00").unwrap();
    let mut opts = pitr_options(
        &f,
        parent.path().join("past-end"),
        RecoveryTarget::Time(future),
    );
    opts.action = physical::TargetAction::Shutdown;
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap();
    let err = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .expect_err("a target past the archive's end is not reached");
    assert!(
        err.to_string().contains("recovery") || format!("{err:?}").contains("recovery target"),
        "{err:?}"
    );

    // The same backup to the same target twice: no collision (archive_mode
    // off, nothing pushed), same result.
    let (again, _, _) = restore_and_count(&f, parent.path(), "t2", RecoveryTarget::Time(t)).await;
    assert_eq!(again, t1_rows);
    assert!(
        archive.list_history(sysid).await.unwrap().is_empty(),
        "a test restore archived a timeline"
    );

    // A target before the first backup's stop point is a hard error.
    let opts = pitr_options(
        &f,
        parent.path().join("early"),
        RecoveryTarget::Time(before_backup_end.fixed_offset()),
    );
    let err = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, PitrError::NoBackupForTarget { .. }), "{err}");
    assert!(!parent.path().join("early").exists());

    // A non-empty target directory is refused before anything is written.
    let busy = parent.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), b"x").unwrap();
    let opts = pitr_options(&f, busy.clone(), RecoveryTarget::Immediate);
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap();
    let err = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, PitrError::TargetNotEmpty { .. }), "{err}");

    // A damaged base backup fails the restore, and what it had unpacked is
    // removed: no half-restored data directory (with a backup_label) stays.
    let manifest = f
        .repo
        .find_backup(Some("db"), &plan.backup_id)
        .await
        .unwrap();
    let base = manifest
        .artifacts
        .iter()
        .find(|a| a.name == "base.tar")
        .unwrap();
    let store = f.repo.store().clone();
    let object = dr_storage::object_store::path::Path::from(base.object.as_str());
    let original = store.get(&object).await.unwrap().bytes().await.unwrap();
    let mut bad = original.to_vec();
    let at = bad.len() * 3 / 4;
    bad[at] ^= 0x40;
    store.put(&object, bad.into()).await.unwrap();
    let broken = parent.path().join("broken");
    let opts = pitr_options(&f, broken.clone(), RecoveryTarget::Immediate);
    let err = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap_err();
    store.put(&object, original.into()).await.unwrap();
    // Named as damage (exit 1 in the CLI), not as a local I/O failure.
    assert!(
        matches!(err, PitrError::Storage(dr_storage::Error::Corrupt { .. })),
        "{err:?}"
    );
    assert_eq!(
        dr_core::Error::from(err).kind(),
        dr_core::ErrorKind::VerificationFailed
    );
    assert!(
        !broken.exists(),
        "the failed restore left {}",
        broken.display()
    );
}

/// A base backup while archive_command fails is marked failed within the
/// bound, with an error saying archiving is broken; nothing is listed.
#[tokio::test(flavor = "multi_thread")]
async fn backup_fails_when_archiving_is_broken() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let mut o = ClusterOptions::default();
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        // Calls wal-push, but into a repository that does not exist.
        format!(
            "archive_command = '{} wal-push --repo /nonexistent/repo --source db %p'",
            f.helper.display()
        ),
    ];
    let c = TestCluster::start_with(o);
    // A long bound: the archiver's own failures (pg_stat_archiver) end the
    // wait long before it.
    let mut opts = PhysicalOptions::default();
    opts.archive_timeout = Duration::from_secs(120);
    let source = PostgresPhysical::new(c.settings("postgres"), opts);
    let started = Instant::now();
    let err = dr_core::job::backup(&f.repo, &source, "db")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    assert!(
        text.contains("WAL archiving is broken") && text.contains("archive_command failed"),
        "{text}"
    );
    assert!(f.repo.list_backups(Some("db")).await.unwrap().is_empty());

    // archive_mode off: refused by the preflight, naming the setting.
    let plain = TestCluster::start();
    let source = PostgresPhysical::new(plain.settings("postgres"), PhysicalOptions::default());
    let err = dr_core::job::backup(&f.repo, &source, "db2")
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("archive_mode"), "{err:?}");
}

/// `--start` without `--port`: the restored server listens where the
/// backup's configuration says (here the source's own port), and dr
/// connects there, not to 5432. While the source still holds that port the
/// start fails with a hint naming the port, and nothing is left running.
#[tokio::test(flavor = "multi_thread")]
async fn a_started_restore_listens_where_its_configuration_says() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let c = f.archiving_cluster("cfgport");
    let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
    dr_core::job::backup(&f.repo, &source, "cfgport")
        .await
        .unwrap();
    let parent = tempfile::Builder::new()
        .prefix("drp")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let restore = |name: &str| {
        let mut opts = pitr_options(&f, parent.path().join(name), RecoveryTarget::Immediate);
        opts.port = None;
        opts
    };

    // The source runs on the configured port: the start fails, says why,
    // and stops nothing but leaves nothing running.
    let opts = restore("busy");
    let plan = physical::plan_pitr(&f.repo, &f.key, "cfgport", &opts)
        .await
        .unwrap();
    let err = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap_err();
    let text = dr_core::error_chain(&err);
    assert!(text.contains("the port is in use"), "{text}");
    assert!(!opts.pgdata.join("postmaster.pid").exists(), "{text}");
    assert_eq!(c.psql("postgres", "SELECT 1"), "1");

    // With the port free, the restored server takes it and dr finds it.
    c.stop();
    let opts = restore("free");
    let plan = physical::plan_pitr(&f.repo, &f.key, "cfgport", &opts)
        .await
        .unwrap();
    let report = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap();
    assert_eq!(report.port, Some(c.port()));
    let conn = dr_postgres::ConnectionSettings::from_dsn(&format!(
        "host={} port={} user=postgres dbname=postgres",
        report.socket_dir.as_ref().unwrap().display(),
        c.port()
    ))
    .unwrap();
    let client = conn.connect().await.unwrap();
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    drop(client);
    physical::stop_server(&opts, 15).await.unwrap();

    // A port dr chose (`port_chosen`, the plan action's default) that another
    // program takes before the server binds it: the start moves to another
    // free port, writes it, and reports where the server listens. An
    // operator's port is never moved (the "busy" case above).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let mut opts = restore("moved");
    opts.port = Some(taken);
    opts.port_chosen = true;
    let plan = physical::plan_pitr(&f.repo, &f.key, "cfgport", &opts)
        .await
        .unwrap();
    let report = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap();
    let moved = report.port.unwrap();
    assert_ne!(moved, taken);
    let auto = std::fs::read_to_string(opts.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains(&format!("port = '{moved}'")), "{auto}");
    assert!(!auto.contains(&format!("port = '{taken}'")), "{auto}");
    let log = std::fs::read_to_string(opts.pgdata.join("dr-restore.log")).unwrap_or_default();
    let conn = dr_postgres::ConnectionSettings::from_dsn(&format!(
        "host={} port={moved} user=postgres dbname=postgres",
        report.socket_dir.as_ref().unwrap().display(),
    ))
    .unwrap();
    let client = conn
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    drop(client);
    drop(held);
    physical::stop_server(&opts, 15).await.unwrap();
}
