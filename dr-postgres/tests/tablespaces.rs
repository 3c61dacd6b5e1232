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
use dr_postgres::physical::{
    self, BackupMethod, PhysicalMetadata, PhysicalOptions, PhysicalScratchRestorer, PitrOptions,
    PostgresPhysical, RecoveryTarget,
};
use dr_postgres::testing::{self, ClusterOptions, TestCluster};
use dr_postgres::wal::WalError;

/// Entry point when PostgreSQL runs the helper (`archive_command`,
/// `restore_command`).
#[test]
fn helper_entry() {
    let Ok(args) = std::env::var("DR_HELPER_ARGS") else {
        return;
    };
    let words: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    let code = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run_helper(&words));
    std::process::exit(code);
}

fn archiving_cluster(f: &Fixture, source: &str) -> TestCluster {
    let mut o = ClusterOptions::default();
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!(
            "archive_command = '{} wal-push --repo {} --source {source} %p'",
            f.helper.display(),
            f.url
        ),
        "max_wal_senders = 4".into(),
    ];
    TestCluster::start_with(o)
}

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

fn wait_archived(c: &TestCluster, segment: &str) {
    let started = Instant::now();
    loop {
        let last = c.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last.as_str() >= segment {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{segment} not archived; last {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const CHECKSUM: &str = "SELECT count(*) || ' ' || md5(string_agg(id || ':' || v, ',' ORDER BY id))";

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

fn pitr_options(f: &Fixture, pgdata: PathBuf, target: RecoveryTarget) -> PitrOptions {
    let mut o = PitrOptions::new(
        pgdata,
        target,
        f.helper.clone(),
        vec![
            "--repo".into(),
            f.url.clone(),
            "--identity".into(),
            f.key_file.display().to_string(),
        ],
    );
    o.start = true;
    o.archive_mode_off = true;
    o.port = Some(free_port());
    o.wait_timeout = Duration::from_secs(120);
    o
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn tablespaces_backup_pitr_mapping_and_verify() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let c = archiving_cluster(&f, "db");
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
}
