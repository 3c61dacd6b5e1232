//! Issue 22 on a real PostgreSQL 15 cluster (1 MiB WAL segments, archiving
//! into a repository): a restore beside the original never touches what it
//! did not create.
//!
//! - A tablespace created after the newest base backup: a point-in-time
//!   restore whose replay would recreate it at the original's live directory
//!   is refused before anything is written, naming the tablespace's oid, its
//!   path and the LSN of its creation record (checked against `pg_waldump`);
//!   the original's tablespace files are byte-identical before and after
//!   every restore, and its rows are all there after a restart. Recovering
//!   to the LSN the refusal offers works.
//! - Two restores into one directory at once: one restores, the other fails
//!   saying which process is writing the directory, and touches nothing.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_core::Restorer;
use dr_postgres::format::{records, RecordReader, WalFileName};
use dr_postgres::physical::{
    self, PhysicalOptions, PitrError, PostgresPhysical, PostgresPitrRestorer, RecoveryTarget,
};
use dr_postgres::testing::{self, ClusterOptions, TestCluster};
use dr_postgres::Lsn;
use dr_storage::WalArchive;

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

/// Every entry below `dir`: its mode and its bytes (a link's target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let bytes = if m.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .display()
                    .to_string()
                    .into_bytes()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(p, (m.permissions().mode(), bytes));
        }
    }
    out
}

/// The tablespace records `pg_waldump --rmgr=Tablespace` finds in the
/// archived segments from `start` on: `(lsn, prev, desc)`; dr's
/// [`RecordReader`] must find the same.
async fn waldump(f: &Fixture, sysid: u64, start: Lsn, c: &TestCluster) -> Vec<(Lsn, Lsn, String)> {
    let archive = WalArchive::new(&f.repo, "db").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // dr's own reader over the same segments, for comparison.
    let mut reader = RecordReader::new(1 << 20);
    let mut ours = Vec::new();
    for o in archive.list(sysid).await.unwrap() {
        if o.name.len() == 24 {
            let (_, data) = archive.fetch(sysid, &o.name, &f.key).await.unwrap();
            let segno = WalFileName::parse(&o.name).unwrap().segment_no(1 << 20);
            reader
                .feed(&o.name, segno, &data, |r| {
                    if r.rmid == records::RM_TBLSPC && r.lsn >= start {
                        ours.push((r.lsn, r.prev));
                    }
                    true
                })
                .unwrap();
            std::fs::write(dir.path().join(&o.name), data).unwrap();
        }
    }
    // pg_waldump exits non-zero at the end of the WAL; its records are on
    // stdout.
    let out = std::process::Command::new(c.bin().join("pg_waldump"))
        .args(["--rmgr=Tablespace", "-p"])
        .arg(dir.path())
        .args(["-s", &start.to_string()])
        .output()
        .unwrap();
    let theirs: Vec<(Lsn, Lsn, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let field = |k: &str| {
                let at = l.find(k).unwrap() + k.len();
                l[at..]
                    .split([',', ' '])
                    .find(|w| !w.is_empty())
                    .unwrap()
                    .to_string()
            };
            (
                field("lsn: ").parse().unwrap(),
                field("prev ").parse().unwrap(),
                l[l.find("desc: ").unwrap() + 6..].to_string(),
            )
        })
        .collect();
    assert_eq!(
        ours,
        theirs.iter().map(|t| (t.0, t.1)).collect::<Vec<_>>(),
        "dr's WAL reader and pg_waldump disagree"
    );
    theirs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tablespace_created_after_the_backup_is_never_replayed_beside_the_original() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let mut o = ClusterOptions::default();
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        f.archive_command("db"),
        "max_wal_senders = 4".into(),
        "autovacuum = off".into(),
    ];
    o.initdb_args = vec!["--wal-segsize=1".into()];
    let c = TestCluster::start_with(o);
    c.psql(
        "postgres",
        "CREATE TABLE early (id int); INSERT INTO early SELECT generate_series(1, 1000)",
    );
    let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
    let manifest = dr_core::job::backup(&f.repo, &source, "db").await.unwrap();
    let meta = physical::PhysicalMetadata::from_manifest(&manifest).unwrap();

    // After the backup: rows, an instant, a commit after it, then the
    // tablespace, a table in it with rows, and a second tablespace created
    // and dropped.
    c.psql(
        "postgres",
        "INSERT INTO early SELECT generate_series(1001, 1500)",
    );
    let instant = c.psql("postgres", "SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(20));
    c.psql(
        "postgres",
        "CREATE TABLE marker (id int); INSERT INTO marker VALUES (1)",
    );
    let spaces = owned_dir(&c, "drts");
    let (loc, loc3) = (spaces.path().join("ts2"), spaces.path().join("ts3"));
    for l in [&loc, &loc3] {
        std::fs::create_dir(l).unwrap();
        if let Some((uid, gid)) = c.owner() {
            std::os::unix::fs::chown(l, Some(uid), Some(gid)).unwrap();
        }
    }
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE ts2 LOCATION '{}'", loc.display()),
    );
    c.psql(
        "postgres",
        "CREATE TABLE t2 (id int, v text) TABLESPACE ts2; \
         INSERT INTO t2 SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    );
    c.psql(
        "postgres",
        &format!("CREATE TABLESPACE ts3 LOCATION '{}'", loc3.display()),
    );
    c.psql("postgres", "DROP TABLESPACE ts3");
    let oid: u32 = c
        .psql(
            "postgres",
            "SELECT oid FROM pg_tablespace WHERE spcname = 'ts2'",
        )
        .parse()
        .unwrap();
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));
    // The original stopped cleanly, so that its files change only if a
    // restore writes them.
    c.stop();
    let original = snapshot(&loc);
    assert!(original.len() > 2, "{original:?}");

    // The reader finds what pg_waldump finds.
    let dumped = waldump(&f, c_sysid(&meta), meta.start_lsn, &c).await;
    assert_eq!(dumped.len(), 3, "{dumped:?}");
    assert!(
        dumped[0].2.starts_with(&format!("CREATE {oid} ")),
        "{dumped:?}"
    );
    assert!(dumped[2].2.starts_with("DROP "), "{dumped:?}");

    let parent = owned_dir(&c, "drr");
    // To latest, beside the original: refused by the plan, naming the
    // tablespace, its path, the record and the LSN to stop before it.
    let opts = pitr_options(&f, parent.path().join("latest"), RecoveryTarget::Latest);
    let err = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap_err();
    let text = err.to_string();
    let before = match &err {
        PitrError::TablespaceInWal {
            oid: o,
            path,
            lsn,
            before,
            created_at,
            more,
            ..
        } => {
            assert_eq!(*o, oid);
            assert_eq!(path, &loc);
            assert_eq!((*lsn, *before), (dumped[0].0, dumped[0].1));
            assert!(created_at.is_some(), "{err}");
            // ts3's directory exists too (DROP leaves it).
            assert_eq!(more.len(), 1, "{err}");
            assert!(more[0].contains(&dumped[1].0.to_string()), "{err}");
            *before
        }
        other => panic!("not TablespaceInWal: {other:?}"),
    };
    for needle in [
        oid.to_string(),
        loc.display().to_string(),
        dumped[0].0.to_string(),
        format!("--target-lsn {before}"),
        "another host".into(),
        "base backup taken after".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in: {text}");
    }
    assert!(!parent.path().join("latest").exists());
    // A conflict for the front ends (exit non-zero).
    assert!(matches!(
        dr_core::Error::from(err),
        dr_core::Error::Conflict { .. }
    ));

    // The same through the Restorer that `dr restore` and `dr verify
    // --restore` use: refused, nothing written.
    let reader = dr_core::BackupReader::new(f.repo.clone(), manifest.clone(), f.key.clone());
    let restorer = PostgresPitrRestorer::new(opts.clone(), f.key.clone());
    let err = restorer.restore(&reader).await.unwrap_err();
    assert!(matches!(err, dr_core::Error::Conflict { .. }), "{err:?}");
    restorer.discard().await.unwrap();
    assert!(!parent.path().join("latest").exists());

    // A time after the creation: refused too; a time before the commit
    // that precedes it: the creation is not replayed.
    let (t, _) = physical::parse_target_time(&instant).unwrap();
    let opts_t = pitr_options(&f, parent.path().join("time"), RecoveryTarget::Time(t));
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts_t)
        .await
        .unwrap();
    assert!(
        plan.wal_tablespaces.is_empty(),
        "{:?}",
        plan.wal_tablespaces
    );
    let later = chrono::Utc::now().fixed_offset();
    let opts_l = pitr_options(&f, parent.path().join("time2"), RecoveryTarget::Time(later));
    let err = physical::plan_pitr(&f.repo, &f.key, "db", &opts_l)
        .await
        .unwrap_err();
    assert!(matches!(err, PitrError::TablespaceInWal { .. }), "{err}");

    // Mapping the WAL-created tablespace elsewhere: PostgreSQL replays the
    // creation at the recorded path, so the mapping is refused as usage.
    let mut mapped = opts.clone();
    mapped.tablespace_mapping = vec![format!("{oid}={}", parent.path().join("m").display())
        .parse()
        .unwrap()];
    let err = physical::plan_pitr(&f.repo, &f.key, "db", &mapped)
        .await
        .unwrap_err();
    assert!(matches!(err, PitrError::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("cannot be mapped"), "{err}");

    // The choice offered: --target-lsn just before the creation. The
    // restore works, has every row written before, and no ts2.
    let target = RecoveryTarget::Lsn(before);
    let opts = pitr_options(&f, parent.path().join("before"), target.clone());
    let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
        .await
        .unwrap();
    assert!(
        plan.wal_tablespaces.is_empty(),
        "{:?}",
        plan.wal_tablespaces
    );
    let report = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
        .await
        .unwrap();
    let restored = dr_postgres::ConnectionSettings::from_dsn(&format!(
        "host={} port={} user=postgres dbname=postgres",
        report.socket_dir.as_ref().unwrap().display(),
        report.port.unwrap()
    ))
    .unwrap();
    let client = restored.connect().await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM early), (SELECT count(*) FROM marker), \
             (SELECT count(*) FROM pg_tablespace WHERE spcname = 'ts2')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (1500, 1, 0)
    );
    drop(client);
    physical::stop_server(&opts, 15).await.unwrap();
    assert!(!parent
        .path()
        .join("before")
        .join(".dr-restore-in-progress")
        .exists());

    // Two restores into one directory at once: one restores; the other
    // fails at once, naming this process, and leaves the directory alone
    // (its discard removes nothing of the other's).
    let both = parent.path().join("both");
    let mut o1 = pitr_options(&f, both.clone(), target.clone());
    o1.start = false;
    let mut o2 = o1.clone();
    o2.port = Some(free_port());
    let (r1, r2) = (
        PostgresPitrRestorer::new(o1, f.key.clone()),
        PostgresPitrRestorer::new(o2, f.key.clone()),
    );
    let (a, b) = tokio::join!(r1.restore(&reader), r2.restore(&reader));
    let (winner, loser, err) = match (a, b) {
        (Ok(_), Err(e)) => (&r1, &r2, e),
        (Err(e), Ok(_)) => (&r2, &r1, e),
        other => panic!("expected one success and one failure: {other:?}"),
    };
    let text = dr_core::error_chain(&err);
    assert!(
        text.contains(&format!(
            "another dr restore (pid {}) is writing {}",
            std::process::id(),
            both.display()
        )),
        "{text}"
    );
    assert!(matches!(err, dr_core::Error::Conflict { .. }), "{err:?}");
    loser.discard().await.unwrap();
    assert!(both.join("PG_VERSION").exists() && both.join("recovery.signal").exists());
    let checks = winner.check(&manifest).await.unwrap();
    for ch in &checks.checks {
        assert_eq!(ch.expected, ch.actual, "{}", ch.name);
    }
    // A third restore into the finished directory: plainly not empty.
    let err = physical::pitr_restore(
        &f.repo,
        &f.key,
        &plan,
        &pitr_options(&f, both.clone(), target),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PitrError::TargetNotEmpty { .. }), "{err}");
    winner.discard().await.unwrap();

    // The original's tablespace: byte-identical after every restore, and
    // after a restart every row is there.
    assert!(
        snapshot(&loc) == original,
        "a restore wrote into the original's tablespace"
    );
    c.start_server();
    assert_eq!(c.psql("postgres", "SELECT count(*) FROM t2"), "5000");
    assert_eq!(c.psql("postgres", "SELECT count(*) FROM early"), "1500");
}

fn c_sysid(meta: &physical::PhysicalMetadata) -> u64 {
    meta.system_identifier.parse().unwrap()
}
