//! Physical backups of a cluster with tablespaces, taken by the
//! `BASE_BACKUP` replication client, and their point-in-time restore with
//! and without a tablespace mapping, on a real PostgreSQL 15 cluster with
//! archiving on (repository: S3 on moto when `DR_TEST_S3_URL` is set, else a
//! local directory).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dr_core::Restorer;
use dr_postgres::physical::PitrError;
use dr_postgres::physical::{
    self, BackupMethod, PhysicalMetadata, PhysicalOptions, PhysicalScratchRestorer,
    PostgresPhysical, RecoveryTarget, TablespaceMapping,
};
use dr_postgres::testing::{self, TestCluster};

/// A directory under /tmp the `postgres` user owns (short paths: sockets).
fn owned_dir(c: &TestCluster, prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    if let Some((uid, gid)) = c.owner() {
        std::os::unix::fs::chown(d.path(), Some(uid), Some(gid)).unwrap();
    }
    d
}

const CHECKSUM: &str =
    "SELECT count(*) || ' ' || coalesce(md5(string_agg(id || ':' || v, ',' ORDER BY id)), '-')";

/// `count md5` of each test table (t1 in ts1, t2 in ts2, t3 in database d2
/// whose default tablespace is ts2).
async fn checksums(conn: &dr_postgres::ConnectionSettings) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let client = conn.connect().await.unwrap();
    for t in ["t1", "t2"] {
        let v: String = client
            .query_one(&format!("{CHECKSUM} FROM {t}"), &[])
            .await
            .unwrap()
            .get(0);
        out.insert(t.to_string(), v);
    }
    let d2 = conn.with_database("d2").connect().await.unwrap();
    let v: String = d2
        .query_one(&format!("{CHECKSUM} FROM t3"), &[])
        .await
        .unwrap()
        .get(0);
    out.insert("d2.t3".into(), v);
    out
}

/// Every file below `dir` with its size and modification time.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tablespaces_backup_pitr_mapping_and_verify() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let c = f.archiving_cluster("db");
    let spaces = owned_dir(&c, "drts");
    let (loc1, loc2) = (spaces.path().join("one"), spaces.path().join("two"));
    for l in [&loc1, &loc2] {
        std::fs::create_dir(l).unwrap();
        if let Some((uid, gid)) = c.owner() {
            std::os::unix::fs::chown(l, Some(uid), Some(gid)).unwrap();
        }
    }
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE ts1 LOCATION '{}'", loc1.display()),
    );
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE ts2 LOCATION '{}'", loc2.display()),
    );
    c.psql(
        "postgres",
        "CREATE TABLE t1 (id int PRIMARY KEY, v text) TABLESPACE ts1; \
         INSERT INTO t1 SELECT g, md5(g::text) FROM generate_series(1, 20000) g; \
         CREATE TABLE t2 (id int, v text) TABLESPACE ts2; \
         CREATE INDEX t2_id ON t2 (id) TABLESPACE ts1; \
         INSERT INTO t2 SELECT g, repeat('x', g % 100) FROM generate_series(1, 10000) g",
    );
    c.psql("postgres", "CREATE DATABASE d2 TABLESPACE ts2");
    c.psql(
        "d2",
        "CREATE TABLE t3 (id int, v text); INSERT INTO t3 SELECT g, 'd2-' || g FROM generate_series(1, 5000) g",
    );
    let oids: BTreeMap<String, u32> = c
        .psql(
            "postgres",
            "SELECT string_agg(spcname || '=' || oid, ' ') FROM pg_tablespace WHERE spcname LIKE 'ts%'",
        )
        .split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();

    // The backup: base.tar, one tar per tablespace, the manifest.
    let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
    let manifest = dr_core::job::backup(&f.repo, &source, "db").await.unwrap();
    let meta: PhysicalMetadata = serde_json::from_value(manifest.metadata.clone()).unwrap();
    assert_eq!(meta.method, BackupMethod::Replication);
    let mut names: Vec<String> = manifest.artifacts.iter().map(|a| a.name.clone()).collect();
    names.sort();
    let mut expected = vec![
        "backup_manifest".to_string(),
        "base.tar".to_string(),
        format!("{}.tar", oids["ts1"]),
        format!("{}.tar", oids["ts2"]),
    ];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(meta.tablespaces.len(), 2, "{:?}", meta.tablespaces);
    for t in &meta.tablespaces {
        let (name, loc) = if t.oid == oids["ts1"] {
            ("ts1", &loc1)
        } else {
            ("ts2", &loc2)
        };
        assert_eq!(t.name, name);
        assert_eq!(Path::new(&t.location), loc.as_path());
        assert_eq!(t.artifact, format!("{}.tar", t.oid));
        let stored = manifest
            .artifacts
            .iter()
            .find(|a| a.name == t.artifact)
            .unwrap();
        assert_eq!(stored.plain_size, t.size_bytes);
        assert!(t.size_bytes > 100_000, "{t:?}");
    }
    assert!(
        meta.backup_label.contains("START WAL LOCATION"),
        "{}",
        meta.backup_label
    );
    assert!(meta.stop_lsn > meta.start_lsn);

    // After the backup: more rows in both tablespaces, then a named
    // restore point (the ground truth), then rows that must not come back.
    c.psql(
        "postgres",
        "INSERT INTO t1 SELECT g, 'after-' || g FROM generate_series(20001, 23000) g; \
         UPDATE t2 SET v = 'changed' WHERE id % 7 = 0",
    );
    c.psql(
        "d2",
        "DELETE FROM t3 WHERE id > 4000; INSERT INTO t3 VALUES (9001, 'late')",
    );
    c.psql("postgres", "SELECT pg_create_restore_point('tblsp_target')");
    let truth = checksums(&c.settings("postgres")).await;
    c.psql(
        "postgres",
        "INSERT INTO t1 SELECT g, 'too-late' FROM generate_series(23001, 24000) g; DELETE FROM t2",
    );
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));
    assert_ne!(truth, checksums(&c.settings("postgres")).await);

    let parent = owned_dir(&c, "drr");
    let target = RecoveryTarget::Name("tblsp_target".into());

    // Without a mapping the tablespaces go to their original directories,
    // which the running source fills: refused, naming the tablespace,
    // before anything is written.
    let opts = pitr_options(&f, parent.path().join("plain"), target.clone());
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap();
    assert_eq!(plan.tablespaces.len(), 2);
    let err = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap_err();
    match &err {
        PitrError::TablespaceNotEmpty { name, dir, .. } => {
            assert!(name == "ts1" || name == "ts2", "{err}");
            assert!(dir == &loc1 || dir == &loc2, "{err}");
            assert!(
                err.to_string().contains(&dir.display().to_string()),
                "{err}"
            );
        }
        other => panic!("not TablespaceNotEmpty: {other:?}"),
    }
    assert!(!parent.path().join("plain").exists());

    // A mapping naming no tablespace of the backup is refused by the plan.
    let mut opts = pitr_options(&f, parent.path().join("bad"), target.clone());
    opts.tablespace_mapping = vec!["nope=/tmp/x".parse().unwrap()];
    let err = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, PitrError::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("ts1"), "{err}");

    // With a mapping (ts1 by name, ts2 by oid) into empty directories: the
    // restored cluster starts, its tablespaces point there, and every
    // table's rows equal the source's at the restore point.
    let (map1, map2) = (parent.path().join("m1"), parent.path().join("m2"));
    let mut opts = pitr_options(&f, parent.path().join("mapped"), target.clone());
    opts.tablespace_mapping = vec![
        format!("ts1={}", map1.display()).parse().unwrap(),
        TablespaceMapping {
            tablespace: oids["ts2"].to_string(),
            dir: map2.clone(),
        },
    ];
    let before1 = listing(&loc1);
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap();
    let report = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap();
    let restored = dr_postgres::ConnectionSettings::from_dsn(&format!(
        "host={} port={} user=postgres dbname=postgres",
        report.socket_dir.as_ref().unwrap().display(),
        report.port.unwrap()
    ))
    .unwrap();
    assert_eq!(checksums(&restored).await, truth);
    let client = restored.connect().await.unwrap();
    let locations: String = client
        .query_one(
            "SELECT string_agg(spcname || '=' || pg_tablespace_location(oid), ' ' ORDER BY spcname) \
             FROM pg_tablespace WHERE spcname LIKE 'ts%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        locations,
        format!("ts1={} ts2={}", map1.display(), map2.display())
    );
    // The restored cluster writes into its own tablespaces.
    client
        .batch_execute("INSERT INTO t1 VALUES (-1, 'restored'); CHECKPOINT")
        .await
        .unwrap();
    drop(client);
    physical::stop_server(&opts, 15).await.unwrap();
    assert!(std::fs::read_dir(&map1).unwrap().next().is_some());
    assert!(std::fs::read_dir(&map2).unwrap().next().is_some());
    assert_eq!(
        std::fs::read_link(
            parent
                .path()
                .join("mapped/pg_tblspc")
                .join(oids["ts1"].to_string())
        )
        .unwrap(),
        map1
    );
    assert!(!parent.path().join("mapped/tablespace_map").exists());
    assert!(parent.path().join("mapped/backup_manifest").exists());
    // The source's tablespace directories were not written by the restore.
    let after1: Vec<_> = listing(&loc1)
        .into_iter()
        .filter(|(p, _, _)| before1.iter().any(|(q, _, _)| q == p))
        .collect();
    assert_eq!(after1.len(), before1.len());

    // verify --restore: the scratch restore maps every tablespace into its
    // own directory. Stop the source, so that its tablespace directories
    // change only if the verification writes there.
    c.stop();
    let (snap1, snap2) = (listing(&loc1), listing(&loc2));
    let scratch = PhysicalScratchRestorer::new(
        f.key.clone(),
        f.helper.clone(),
        vec![
            "--repo".into(),
            f.url.clone(),
            "--identity".into(),
            f.key_file.display().to_string(),
        ],
    )
    .with_parent(parent.path())
    .with_wait_timeout(Duration::from_secs(120));
    let reader = dr_core::BackupReader::new(f.repo.clone(), manifest.clone(), f.key.clone());
    scratch.restore(&reader).await.unwrap();
    let data = scratch.data_dir().await.unwrap();
    for oid in oids.values() {
        let link = std::fs::read_link(data.join("pg_tblspc").join(oid.to_string())).unwrap();
        assert!(
            link.starts_with(data.parent().unwrap()),
            "tablespace {oid} restored to {} outside the scratch directory",
            link.display()
        );
    }
    let checks = scratch.check(&manifest).await.unwrap();
    for ch in &checks.checks {
        assert_eq!(ch.expected, ch.actual, "{}", ch.name);
    }
    scratch.discard().await.unwrap();
    assert!(!data.exists());
    assert_eq!(listing(&loc1), snap1, "verify wrote into ts1's directory");
    assert_eq!(listing(&loc2), snap2, "verify wrote into ts2's directory");
}

/// The replication client and `pg_basebackup` on the same single-tablespace
/// cluster (`DR_BENCH_SCALE`, default 20: about 300 MB): both restore-ready,
/// timings printed. Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_replication_client_vs_pg_basebackup() {
    if !testing::should_run() {
        return;
    }
    let scale: u32 = std::env::var("DR_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let f = fixture().await;
    let c = f.archiving_cluster("db");
    c.pgbench_init("postgres", scale);
    let size = c.psql(
        "postgres",
        "SELECT pg_size_pretty(sum(pg_database_size(oid))) FROM pg_database",
    );
    for round in 0..2 {
        for method in [BackupMethod::PgBasebackup, BackupMethod::Replication] {
            let mut o = PhysicalOptions::default();
            o.method = method;
            let source = PostgresPhysical::new(c.settings("postgres"), o);
            let started = Instant::now();
            let m = dr_core::job::backup(&f.repo, &source, "db").await.unwrap();
            let meta: PhysicalMetadata = serde_json::from_value(m.metadata.clone()).unwrap();
            assert_eq!(meta.method, method);
            println!(
                "round {round} {method:?}: cluster {size}, {} MB plaintext, {} MB stored, {:.2} s",
                m.plain_size() >> 20,
                m.artifacts.iter().map(|a| a.stored_size).sum::<u64>() >> 20,
                started.elapsed().as_secs_f64()
            );
        }
    }
}
