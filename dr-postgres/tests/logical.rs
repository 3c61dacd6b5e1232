//! Logical backups against real PostgreSQL clusters made with initdb/pg_ctl.

use dr_core::{conformance, job, Error as CoreError, Restorer};
use dr_postgres::testing::{should_run, TestCluster};
use dr_postgres::{
    LogicalMetadata, LogicalRestoreOptions, PostgresLogical, PostgresLogicalRestorer,
};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};

async fn repo() -> (Repository, Identities, tempfile::TempDir) {
    let key = Identities::generate();
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    let repo = Repository::init(
        &loc,
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    (repo, key, dir)
}

fn metadata(m: &dr_storage::Manifest) -> LogicalMetadata {
    serde_json::from_value(m.metadata.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_database_conforms() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("bench", 2);
    let (repo, key, _d) = repo().await;
    let source = PostgresLogical::new(pg.settings("bench"));
    let target = PostgresLogicalRestorer::new(
        pg.settings("bench_restored"),
        LogicalRestoreOptions::default(),
    );
    let scratch = PostgresLogicalRestorer::scratch(
        &pg.settings("postgres"),
        LogicalRestoreOptions::default(),
    );
    conformance::all(&repo, &key, &source, "bench", &target, &scratch).await;

    let m = repo.find_backup(Some("bench"), "latest").await.unwrap();
    let meta = metadata(&m);
    assert_eq!(meta.row_counts["public.pgbench_accounts"], 200_000);
    assert_eq!(meta.database, "bench");
    assert!(meta.system_identifier.is_some());
    assert!(m.artifact("globals.sql").is_some());
    assert_eq!(
        pg.psql("bench_restored", "SELECT count(*) FROM pgbench_accounts"),
        "200000"
    );
    // The scratch database of the verify was dropped.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'dr\\_%'"
        ),
        "0"
    );
}

const AWKWARD: &str = r#"
CREATE ROLE app_owner NOLOGIN;
CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept"."Orders ""2026"" = Q1" (id serial PRIMARY KEY, "Amount €" numeric, note text);
INSERT INTO "Sales Dept"."Orders ""2026"" = Q1" ("Amount €", note) SELECT g, 'row ' || g FROM generate_series(1, 1234) g;
CREATE TABLE "ünïcødé" (k text PRIMARY KEY);
INSERT INTO "ünïcødé" VALUES ('ä'), ('ß'), ('漢');
CREATE TABLE measurements (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements SELECT DATE '2025-06-01' + (g % 400), g FROM generate_series(1, 5000) g;
CREATE SEQUENCE invoice_no START 1000;
SELECT nextval('invoice_no') FROM generate_series(1, 42);
CREATE VIEW big_orders AS SELECT * FROM "Sales Dept"."Orders ""2026"" = Q1" WHERE "Amount €" > 1000;
CREATE MATERIALIZED VIEW order_total AS SELECT sum("Amount €") AS total FROM "Sales Dept"."Orders ""2026"" = Q1";
CREATE TABLE owned (x int);
INSERT INTO owned SELECT generate_series(1, 10);
ALTER TABLE owned OWNER TO app_owner;
SELECT lo_from_bytea(0, 'large object one'), lo_from_bytea(0, 'large object two');
"#;

#[tokio::test(flavor = "multi_thread")]
async fn awkward_schema_restores_into_a_fresh_cluster_with_globals() {
    if !should_run() {
        return;
    }
    let src = TestCluster::start();
    src.psql("postgres", "CREATE DATABASE shop");
    src.psql("shop", AWKWARD);
    let (repo, key, _d) = repo().await;
    let m = job::backup(&repo, &PostgresLogical::new(src.settings("shop")), "shop")
        .await
        .unwrap();
    let counts = metadata(&m).row_counts;
    assert_eq!(counts[r#""Sales Dept"."Orders ""2026"" = Q1""#], 1234);
    assert_eq!(counts[r#"public."ünïcødé""#], 3);
    // A partitioned table is counted through its leaves, once.
    assert_eq!(
        counts["public.measurements_2025"] + counts["public.measurements_2026"],
        5000
    );
    assert!(!counts.contains_key("public.measurements"));
    assert_eq!(counts["(large objects)"], 2);

    let dst = TestCluster::start();
    let mut opts = LogicalRestoreOptions::default();
    opts.globals = true;
    let restorer = PostgresLogicalRestorer::new(dst.settings("shop"), opts);
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let check = restorer.check(&m).await.unwrap();
    assert!(check.ok(), "{:?}", check.failures().collect::<Vec<_>>());
    assert_eq!(
        dst.psql("shop", "SELECT last_value FROM invoice_no"),
        "1041"
    );
    assert_eq!(
        dst.psql(
            "shop",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'"
        ),
        "app_owner"
    );
    assert_eq!(dst.psql("shop", "SELECT count(*) FROM big_orders"), "234");
    assert_eq!(dst.psql("shop", "SELECT total FROM order_total"), "761995");
    assert_eq!(
        dst.psql("shop", "SELECT string_agg(convert_from(lo_get(oid), 'UTF8'), ',' ORDER BY oid) FROM pg_largeobject_metadata"),
        "large object one,large object two"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn row_counts_and_dump_share_one_snapshot_under_writes() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.psql("postgres", "CREATE DATABASE busy");
    pg.psql("busy", "CREATE TABLE events (id bigserial PRIMARY KEY, payload text); INSERT INTO events (payload) SELECT repeat('x', 200) FROM generate_series(1, 50000)");
    let (repo, key, _d) = repo().await;
    let writer_conn = pg.settings("busy");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = tokio::spawn(async move {
        let client = writer_conn.connect().await.unwrap();
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            client
                .execute(
                    "INSERT INTO events (payload) SELECT 'w' FROM generate_series(1, 50)",
                    &[],
                )
                .await
                .unwrap();
            n += 50;
        }
        n
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("busy")), "busy")
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "the writer ran during the backup");
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("busy_copy"), LogicalRestoreOptions::default());
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    let check = restorer.check(&m).await.unwrap();
    assert!(check.ok(), "{:?}", check.failures().collect::<Vec<_>>());
    let live: i64 = pg
        .psql("busy", "SELECT count(*) FROM events")
        .parse()
        .unwrap();
    assert!(
        live > metadata(&m).row_counts["public.events"],
        "writes continued after the snapshot"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_clear_and_leave_targets_untouched() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("bench", 1);
    let (repo, key, _d) = repo().await;

    // A database that does not exist.
    let err = job::backup(&repo, &PostgresLogical::new(pg.settings("nope")), "nope")
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("database \"nope\""), "{err}");
    assert!(repo.list_backups(None).await.unwrap().is_empty());

    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("bench")), "bench")
        .await
        .unwrap();

    // Wrong identity: clear error, no database created.
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("fresh"), LogicalRestoreOptions::default());
    let err = job::restore(&repo, &m, &Identities::generate(), &restorer)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Storage(dr_storage::Error::Decrypt { .. })),
        "{err:?}"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'fresh%'"
        ),
        "0"
    );

    // A non-empty target is refused and stays as it was.
    pg.psql("postgres", "CREATE DATABASE busy");
    pg.psql(
        "busy",
        "CREATE TABLE keep (x int); INSERT INTO keep VALUES (7)",
    );
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("busy"), LogicalRestoreOptions::default());
    let err = job::restore(&repo, &m, &key, &restorer).await.unwrap_err();
    assert!(matches!(err, CoreError::Conflict { .. }), "{err:?}");
    assert_eq!(pg.psql("busy", "SELECT x FROM keep"), "7");

    // With clean it is replaced, only after the new copy is complete.
    let mut opts = LogicalRestoreOptions::default();
    opts.clean = true;
    let restorer = PostgresLogicalRestorer::new(pg.settings("busy"), opts);
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert_eq!(
        pg.psql("busy", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
    assert_eq!(
        pg.psql(
            "busy",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'keep'"
        ),
        "0"
    );

    // A corrupt dump: the restore fails, the target does not exist, no
    // temporary database is left.
    let info = m.artifact("database.pgdump").unwrap();
    let path = dr_storage::object_store::path::Path::from(info.object.as_str());
    let mut bytes = repo
        .store()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    repo.store().put(&path, bytes.into()).await.unwrap();
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("broken"), LogicalRestoreOptions::default());
    let err = job::restore(&repo, &m, &key, &restorer).await.unwrap_err();
    assert!(err.to_string().contains("database.pgdump"), "{err}");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'broken%'"
        ),
        "0"
    );

    // A restored table that differs is reported by name.
    let report = job::verify(&repo, &m, Some(&key), None).await.unwrap();
    assert!(!report.ok());
    pg.psql("busy", "DELETE FROM pgbench_branches");
    let check = PostgresLogicalRestorer::new(pg.settings("busy"), LogicalRestoreOptions::default())
        .check(&m)
        .await
        .unwrap();
    let failures: Vec<_> = check.failures().map(|c| c.name.clone()).collect();
    assert_eq!(failures, vec!["public.pgbench_branches".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_restore_stages_and_cleans_up() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("bench", 1);
    let (repo, key, _d) = repo().await;
    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("bench")), "bench")
        .await
        .unwrap();
    let staging = tempfile::tempdir().unwrap();
    let mut opts = LogicalRestoreOptions::default();
    opts.jobs = 2;
    opts.staging_dir = Some(staging.path().to_path_buf());
    let restorer = PostgresLogicalRestorer::new(pg.settings("par"), opts);
    job::restore(&repo, &m, &key, &restorer).await.unwrap();
    assert!(restorer.check(&m).await.unwrap().ok());
    assert_eq!(
        std::fs::read_dir(staging.path()).unwrap().count(),
        0,
        "staged dump removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pg_dump_older_than_the_server_is_refused() {
    if !should_run() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let pg = TestCluster::start();
    let bin = tempfile::tempdir().unwrap();
    for tool in ["pg_dump", "pg_dumpall"] {
        let path = bin.path().join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{tool} (PostgreSQL) 9.6.24'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (repo, _key, _d) = repo().await;
    let source =
        PostgresLogical::new(pg.settings("postgres")).with_bin_dir(Some(bin.path().to_path_buf()));
    let err = job::backup(&repo, &source, "old").await.unwrap_err();
    assert!(matches!(err, CoreError::InvalidConfig { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("version 9") && text.contains("older than the server"),
        "{text}"
    );
    assert!(repo.list_backups(None).await.unwrap().is_empty());
}

/// A restore killed mid-way leaves its temporary database `<target>_dr_<hex>`
/// behind (the target itself is never half-written). The next restore into
/// the same target drops it when the mark says its process on this host is
/// gone, keeps (and reports) one of a restore on another host, and never
/// touches other databases whose names merely look alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_restores_temporary_database_is_dropped_by_the_next_one() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("src", 1);
    let (repo, key, _d) = repo().await;
    let m = job::backup(&repo, &PostgresLogical::new(pg.settings("src")), "src")
        .await
        .unwrap();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    // A dead process on this host (above any pid_max), another host, and a
    // look-alike without the mark.
    pg.psql("postgres", "CREATE DATABASE copy_dr_0a0b0c");
    pg.psql(
        "postgres",
        &format!(
            "COMMENT ON DATABASE copy_dr_0a0b0c IS 'dr restore in progress: pid 4194305 on {host}'"
        ),
    );
    pg.psql("postgres", "CREATE DATABASE copy_dr_1a1b1c");
    pg.psql(
        "postgres",
        "COMMENT ON DATABASE copy_dr_1a1b1c IS 'dr restore in progress: pid 4194305 on another-host'",
    );
    pg.psql("postgres", "CREATE DATABASE copy_dr_2a2b2c");
    let restorer =
        PostgresLogicalRestorer::new(pg.settings("copy"), LogicalRestoreOptions::default());
    let report = job::restore(&repo, &m, &key, &restorer).await.unwrap();
    let names = pg.psql(
        "postgres",
        "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'copy%'",
    );
    assert_eq!(names, "copy,copy_dr_1a1b1c,copy_dr_2a2b2c");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("dropped copy_dr_0a0b0c")),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("copy_dr_1a1b1c") && w.contains("left alone")),
        "{:?}",
        report.warnings
    );
    // The restored database carries no mark, so it is never taken for a
    // temporary one.
    assert_eq!(
        pg.psql("postgres", "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = 'copy'"),
        ""
    );
}
