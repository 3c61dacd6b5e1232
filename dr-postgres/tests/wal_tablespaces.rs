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
//! - Prevented at the source: `wal-push` (the real push path, as
//!   `archive_command`) records the creations and drops beside the archived
//!   segment (`events/<segment>.json`), `dr status` warns about those after
//!   the newest base backup (a warning, not a problem), a new base backup
//!   ends the warning, and prune deletes an events object with its segment.

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
use dr_storage::{WalArchive, WalEvent};

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

    // Recorded at the source: wal-push wrote the events beside the segments
    // that hold the records, and status warns.
    let sysid = c_sysid(&meta);
    let archive = WalArchive::new(&f.repo, "db").unwrap();
    let recorded = recorded_events(&archive, sysid).await;
    let creates: Vec<_> = recorded
        .iter()
        .filter_map(|(seg, e)| match e {
            WalEvent::TablespaceCreate { oid, path, lsn, .. } => {
                Some((seg.clone(), *oid, path.clone(), lsn.clone()))
            }
            WalEvent::TablespaceDrop { .. } => None,
        })
        .collect();
    assert_eq!(creates.len(), 2, "{recorded:?}");
    assert_eq!(
        (creates[0].1, creates[0].2.as_str()),
        (oid, loc.to_str().unwrap())
    );
    assert_eq!(creates[1].2, loc3.to_str().unwrap());
    let drops = recorded.len() - creates.len();
    assert_eq!(drops, 1, "{recorded:?}");
    // Each recorded LSN lies in the segment it is recorded for.
    for (seg, e) in &recorded {
        let lsn: Lsn = e.lsn().parse().unwrap();
        assert_eq!(&lsn.segment_name(meta.timeline, 1 << 20), seg);
    }
    let warnings = status_warnings(&f).await;
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    for needle in [
        format!("tablespace OID {oid} was created at {}", loc.display()),
        creates[0].3.clone(),
        creates[0].0.clone(),
        manifest.backup_id.clone(),
        "take a new base backup".into(),
    ] {
        assert!(
            warnings[0].contains(&needle),
            "{needle:?} not in {warnings:?}"
        );
    }
    assert!(warnings[2].contains("dropped"), "{warnings:?}");
    let original = snapshot(&loc);
    assert!(original.len() > 2, "{original:?}");

    // The reader finds what pg_waldump finds, and what wal-push recorded.
    let dumped = waldump(&f, c_sysid(&meta), meta.start_lsn, &c).await;
    assert_eq!(dumped.len(), 3, "{dumped:?}");
    assert_eq!(
        recorded
            .iter()
            .map(|(_, e)| e.lsn().parse::<Lsn>().unwrap())
            .collect::<Vec<_>>(),
        dumped.iter().map(|d| d.0).collect::<Vec<_>>()
    );
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

    // A base backup taken after the creation ends the warning.
    let newer = dr_core::job::backup(&f.repo, &source, "db").await.unwrap();
    let newer_meta = physical::PhysicalMetadata::from_manifest(&newer).unwrap();
    assert!(newer_meta.start_lsn > dumped[2].0);
    assert_eq!(status_warnings(&f).await, Vec::<String>::new());

    // Prune (keeping the newest backup only) deletes the older backup's WAL
    // and, with each segment, its events object: none is left behind.
    let mut policies = BTreeMap::new();
    let policy = dr_core::retention::RetentionPolicy {
        keep_last: Some(1),
        pitr_window: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    policies.insert("db".to_string(), policy);
    let sizes =
        dr_postgres::wal::retention::segment_sizes(&f.repo.list_backups(None).await.unwrap());
    let (facts, _) = dr_postgres::wal::retention::retention_facts(&f.repo, "db", &sizes)
        .await
        .unwrap();
    let options = dr_core::prune::PruneOptions::default();
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let plan = dr_core::prune::plan_prune(&f.repo, &policies, &facts, &options, later)
        .await
        .unwrap();
    let deleted: Vec<String> = plan
        .retention
        .wal
        .iter()
        .flat_map(|w| w.deleted.clone())
        .collect();
    for (seg, _) in &recorded {
        assert!(
            deleted.iter().any(|d| d.contains(&format!("/{seg}-"))),
            "{seg} not pruned: {deleted:?}"
        );
    }
    dr_core::prune::prune(&f.repo, &plan, &options)
        .await
        .unwrap();
    assert!(recorded_events(&archive, sysid).await.is_empty());
    let left = archive.list(sysid).await.unwrap();
    for (seg, _) in &recorded {
        assert!(!left.iter().any(|o| &o.name == seg), "{left:?}");
    }
    // What is left is no WAL gap, no problem, no warning.
    let states = dr_postgres::wal::continuity::wal_status(
        &f.repo,
        Some(&f.key),
        &BTreeMap::new(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let db = &states["db"];
    assert!(
        db.gaps.is_empty() && db.problems.is_empty() && db.warnings.is_empty(),
        "{db:?}"
    );
}

/// Every event recorded in `archive` for `sysid`: `(segment, event)`, in
/// WAL order.
async fn recorded_events(archive: &WalArchive, sysid: u64) -> Vec<(String, WalEvent)> {
    let mut out = Vec::new();
    for seg in archive.list_events(sysid).await.unwrap() {
        for e in archive.events(sysid, &seg).await.unwrap() {
            out.push((seg.clone(), e));
        }
    }
    out
}

/// The warnings `dr status` shows for source `db` (through the functions it
/// calls), checking that they are warnings only: not problems.
async fn status_warnings(f: &Fixture) -> Vec<String> {
    let now = chrono::Utc::now();
    let wal =
        dr_postgres::wal::continuity::wal_status(&f.repo, Some(&f.key), &BTreeMap::new(), now)
            .await
            .unwrap();
    let objectives = dr_core::objectives::ObjectivesConfig::default();
    let states = dr_core::status::status_with_wal(&f.repo, &[], &objectives, &wal, now)
        .await
        .unwrap();
    let db = states.iter().find(|s| s.source == "db").unwrap();
    assert_eq!(db.warnings, wal["db"].warnings);
    for w in &db.warnings {
        assert!(!db.problems.contains(w), "{db:?}");
    }
    db.warnings.clone()
}

fn c_sysid(meta: &physical::PhysicalMetadata) -> u64 {
    meta.system_identifier.parse().unwrap()
}

/// The cost of the record scan on a real 16 MiB segment: the time of
/// `wal_push` of one segment (scanned) and of the same bytes pushed as a
/// `.partial` file (not scanned), three times each, and of the scan alone.
/// Prints the figures; run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn push_time_of_a_16_mib_segment() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let mut o = ClusterOptions::default();
    let copies = owned_dir_for_owner("drcp");
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!("archive_command = 'cp %p {}/%f'", copies.path().display()),
    ];
    let c = TestCluster::start_with(o);
    c.psql(
        "postgres",
        "CREATE TABLE fill (id int, v text); \
         INSERT INTO fill SELECT g, md5(g::text) FROM generate_series(1, 150000) g",
    );
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));
    let file = copies.path().join(&seg);
    let data = std::fs::read(&file).unwrap();
    assert_eq!(data.len(), 16 << 20);
    let partial = copies.path().join(format!("{seg}.partial"));
    std::fs::copy(&file, &partial).unwrap();
    let name = WalFileName::parse(&seg).unwrap();
    let t = std::time::Instant::now();
    let events = dr_postgres::wal::segment_events(&name, &data).unwrap();
    let scan = t.elapsed();
    let mut opts = dr_postgres::wal::PushOptions::default();
    opts.pgdata = Some(c.data_dir());
    let (mut scanned, mut plain) = (Vec::new(), Vec::new());
    for i in 0..3 {
        for (path, out) in [(&file, &mut scanned), (&partial, &mut plain)] {
            let archive = WalArchive::new(&f.repo, &format!("t{i}")).unwrap();
            let t = std::time::Instant::now();
            let r = dr_postgres::wal::wal_push(&archive, path, &opts)
                .await
                .unwrap();
            assert!(r.stored);
            out.push(t.elapsed().as_millis());
        }
    }
    println!(
        "16 MiB segment {seg}: scan alone {} ms ({} events); wal_push with the scan {scanned:?} ms, \
         the same bytes as .partial (no scan) {plain:?} ms",
        scan.as_millis(),
        events.len()
    );
}

/// A directory under /tmp that the `postgres` user can write.
fn owned_dir_for_owner(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}
