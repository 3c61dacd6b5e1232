//! The "done when" of retention: a month of history, made by the real tools
//! against a real cluster, pruned under the runbook's policy.
//!
//! One cluster (1 MiB WAL segments, `initdb --wal-segsize=1`, so that the
//! archive's LSN ranges must come from the segment size the physical
//! backups record) archives every segment through the WAL helper (the
//! library calls of `dr wal-push`). For each of 31 simulated days the test
//! writes rows to a ground-truth table, takes a physical base backup of
//! source `db` (and every second day a logical backup of source
//! `db-logical`), writes more rows, sets a named restore point and closes
//! the WAL segment. Halfway, the cluster goes through archive recovery and
//! promotion: a real timeline switch, with `00000002.history`.
//!
//! Simulated time: the backups are made within a minute or two, then the
//! test rewrites the recorded times in the manifests it made
//! (`started_at`/`finished_at` and the physical metadata's
//! `start_time`/`stop_time`, shifted together) to a fixed timeline over the
//! last 31 days. The WAL itself is real and untouched: retention orders WAL
//! by LSN, never by time.
//!
//! Then, with `now` the end of that timeline:
//! - prune (plan + carry out, exactly as `dr prune` calls them) keeps
//!   exactly the set the runbook policy gives (`pitr_window = 7d`,
//!   `keep_within = 7d`, `keep_weekly = 13` for `db`; `keep_daily = 14`
//!   for `db-logical`), computed here from the timeline without the engine;
//!   deletes exactly the WAL before the window's anchor that no kept backup
//!   needs, and keeps `.history`;
//! - the WAL status (as `dr status` computes it) finds no gap in what is
//!   left, and the status flags `db-logical`, whose newest backup is older
//!   than its RPO, and not `db`;
//! - every kept physical backup is PITR-restored and started: those in the
//!   PITR window to the restore point after them, the older weekly ones to
//!   their consistency point, each checked against the ground-truth rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use dr_core::objectives::ObjectivesConfig;
use dr_core::prune::{plan_prune, prune, PruneOptions};
use dr_core::retention::RetentionPolicy;
use dr_postgres::physical::{self, PhysicalOptions, PitrOptions, PostgresPhysical, RecoveryTarget};
use dr_postgres::testing::{self, ClusterOptions, TestCluster};
use dr_postgres::wal::continuity::wal_status;
use dr_postgres::wal::retention::all_retention_facts;
use dr_postgres::PostgresLogical;
use dr_storage::Manifest;
use dr_tests::{free_port, Fixture};

const DAYS: i64 = 31;
/// The day after whose backup the cluster switches to timeline 2.
const SWITCH_DAY: i64 = 10;
const SEG: u64 = 1 << 20;

#[test]
#[ignore = "the WAL helper's entry point (PostgreSQL runs it through archive_command and restore_command), not a test"]
fn helper_entry() {
    dr_tests::helper_entry();
}

/// The simulated start time of the physical backup of day `k` (0-based):
/// the newest one two hours before `now`.
fn physical_time(now: DateTime<Utc>, k: i64) -> DateTime<Utc> {
    now - chrono::Duration::days(DAYS - 1 - k) - chrono::Duration::hours(2)
}

/// The logical backup of day `k` (even days only): two days earlier still,
/// so that the newest is 2 days old: older than its 1-day RPO.
fn logical_time(now: DateTime<Utc>, k: i64) -> DateTime<Utc> {
    physical_time(now, k) - chrono::Duration::days(2)
}

/// Rewrites the recorded times of a manifest the test made, keeping its
/// durations.
fn set_recorded_start(repo_dir: &Path, m: &Manifest, at: DateTime<Utc>) -> Manifest {
    let path = repo_dir
        .join("backups")
        .join(&m.source.name)
        .join(&m.backup_id)
        .join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let shift = at - m.started_at;
    let shifted = |s: &serde_json::Value| {
        let t: DateTime<Utc> = serde_json::from_value(s.clone()).unwrap();
        serde_json::to_value(t + shift).unwrap()
    };
    v["started_at"] = shifted(&v["started_at"]);
    v["finished_at"] = shifted(&v["finished_at"]);
    for key in ["start_time", "stop_time"] {
        if v["metadata"].get(key).is_some() {
            v["metadata"][key] = shifted(&v["metadata"][key]);
        }
    }
    // Written as dr writes it: sealed with a digest of the shifted content.
    let m: Manifest = serde_json::from_value(v).unwrap();
    std::fs::write(&path, m.to_stored_bytes()).unwrap();
    m.sealed()
}

fn lsn(v: &serde_json::Value) -> u64 {
    dr_core::prune::parse_lsn(v).expect("an LSN")
}

/// Every stored WAL object under `wal/<source>/` as (object path relative to
/// the repository, PostgreSQL file name).
fn wal_files(repo_dir: &Path, source: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![repo_dir.join("wal").join(source)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let file = p.file_name().unwrap().to_str().unwrap().to_string();
            let Some(stem) = file.strip_suffix(".zst.age") else {
                continue;
            };
            let name = stem.rsplit_once('-').unwrap().0.to_string();
            let rel = p.strip_prefix(repo_dir).unwrap().display().to_string();
            out.insert(rel, name);
        }
    }
    out
}

/// The LSN range of an archived file with pages (`None` for `.history`),
/// from its name and the cluster's segment size.
fn range_of(name: &str, seg_size: u64) -> Option<(u64, u64)> {
    if name.ends_with(".history") {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let start = (log * (0x1_0000_0000 / seg_size) + seg) * seg_size;
    Some((start, start + seg_size))
}

fn count(c: &TestCluster) -> i64 {
    c.psql("postgres", "SELECT count(*) FROM truth")
        .parse()
        .unwrap()
}

struct Day {
    physical: Manifest,
    /// Rows when the physical backup started.
    rows_at_backup: i64,
    /// Rows at the restore point `rp_<k>` set after it.
    rows_at_restore_point: i64,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_month_of_history_is_pruned_exactly_and_every_kept_backup_restores() {
    if !testing::should_run() {
        return;
    }
    let started = std::time::Instant::now();
    let now: DateTime<Utc> = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let f = Fixture::new().await;
    let repo_dir = PathBuf::from(&f.url);
    let mut o = ClusterOptions::default();
    o.initdb_args = vec!["--wal-segsize=1".into()];
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!(
            "archive_command = '{} wal-push --repo {} --source db %p'",
            f.helper.display(),
            f.url
        ),
        "max_wal_senders = 4".into(),
    ];
    let c = TestCluster::start_with(o);
    assert_eq!(c.psql("postgres", "SHOW wal_segment_size"), "1MB");
    c.psql("postgres", "CREATE TABLE truth (day int, id int, at text)");

    let mut days: Vec<Day> = Vec::new();
    let mut logical: Vec<(i64, Manifest)> = Vec::new();
    for k in 0..DAYS {
        c.psql(
            "postgres",
            &format!("INSERT INTO truth SELECT {k}, g, 'before' FROM generate_series(1, 100) g"),
        );
        let seg = c.switch_wal();
        c.wait_archived(&seg, Duration::from_secs(60));
        let rows_at_backup = count(&c);
        let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
        let m = dr_core::job::backup(&f.repo, &source, "db").await.unwrap();
        let m = set_recorded_start(&repo_dir, &m, physical_time(now, k));
        if k % 2 == 0 {
            let source = PostgresLogical::new(c.settings("postgres")).with_globals(false);
            let l = dr_core::job::backup(&f.repo, &source, "db-logical")
                .await
                .unwrap();
            logical.push((k, set_recorded_start(&repo_dir, &l, logical_time(now, k))));
        }
        c.psql(
            "postgres",
            &format!("INSERT INTO truth SELECT {k}, g, 'after' FROM generate_series(1, 50) g"),
        );
        c.psql(
            "postgres",
            &format!("SELECT pg_create_restore_point('rp_{k}')"),
        );
        let rows_at_restore_point = count(&c);
        let seg = c.switch_wal();
        c.wait_archived(&seg, Duration::from_secs(60));
        days.push(Day {
            physical: m,
            rows_at_backup,
            rows_at_restore_point,
        });
        if k == SWITCH_DAY {
            // Archive recovery from the repository to its end, then
            // promotion onto timeline 2.
            c.stop();
            let data = c.data_dir();
            let mut conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
            conf.push_str(&format!(
                "restore_command = '{} wal-fetch --repo {} --identity {} --source db %f %p'\n",
                f.helper.display(),
                f.url,
                f.key_file.display()
            ));
            std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
            std::fs::write(data.join("recovery.signal"), "").unwrap();
            if let Some((uid, gid)) = c.owner() {
                for p in ["postgresql.auto.conf", "recovery.signal"] {
                    std::os::unix::fs::chown(data.join(p), Some(uid), Some(gid)).unwrap();
                }
            }
            c.start_server();
            c.wait_promoted(Duration::from_secs(60));
            let current = c.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
            assert!(current.starts_with("00000002"), "{current}");
        }
    }
    eprintln!("history made in {:.1} s", started.elapsed().as_secs_f64());

    // The policy of the runbook (examples/dr.toml).
    let mut policies = BTreeMap::new();
    policies.insert(
        "db".to_string(),
        RetentionPolicy {
            pitr_window: Some(Duration::from_secs(7 * 86400)),
            keep_within: Some(Duration::from_secs(7 * 86400)),
            keep_weekly: Some(13),
            ..Default::default()
        },
    );
    policies.insert(
        "db-logical".to_string(),
        RetentionPolicy {
            keep_daily: Some(14),
            ..Default::default()
        },
    );

    // What the policy keeps, from the timeline alone.
    let window_start = now - chrono::Duration::days(7);
    let anchor = (0..DAYS)
        .filter(|&k| physical_time(now, k) <= window_start)
        .max()
        .expect("a backup before the window");
    let mut kept_physical: BTreeSet<i64> = (anchor..DAYS).collect();
    let mut newest_per_week: BTreeMap<(i32, u32), i64> = BTreeMap::new();
    for k in 0..DAYS {
        let w = physical_time(now, k).iso_week();
        newest_per_week.insert((w.year(), w.week()), k);
    }
    assert!(newest_per_week.len() <= 13);
    kept_physical.extend(newest_per_week.values());
    let mut newest_per_day: BTreeMap<chrono::NaiveDate, i64> = BTreeMap::new();
    for (k, _) in &logical {
        newest_per_day.insert(logical_time(now, *k).date_naive(), *k);
    }
    let kept_logical: BTreeSet<i64> = newest_per_day.values().rev().take(14).copied().collect();
    assert!(kept_physical.len() < days.len() && kept_logical.len() < logical.len());

    // What WAL goes: before the anchor's start, needed by no kept backup.
    let anchor_start = lsn(&days[anchor as usize].physical.metadata["start_lsn"]);
    let kept_ranges: Vec<(u64, u64)> = kept_physical
        .iter()
        .map(|&k| {
            let md = &days[k as usize].physical.metadata;
            (lsn(&md["start_lsn"]), lsn(&md["stop_lsn"]))
        })
        .collect();
    let wal_before = wal_files(&repo_dir, "db");
    assert!(wal_before.values().any(|n| n == "00000002.history"));
    assert!(wal_before.values().any(|n| n.ends_with(".partial")));
    let expected_wal_deleted: BTreeSet<String> = wal_before
        .iter()
        .filter(|(_, name)| match range_of(name, SEG) {
            None => false,
            Some((s, e)) => {
                e <= anchor_start && !kept_ranges.iter().any(|&(rs, re)| s <= re && e > rs)
            }
        })
        .map(|(obj, _)| obj.clone())
        .collect();
    assert!(
        expected_wal_deleted.len() > 20,
        "{} of {} WAL objects to delete",
        expected_wal_deleted.len(),
        wal_before.len()
    );

    // Prune, as `dr prune` does it.
    let (wal, _) = all_retention_facts(&f.repo).await.unwrap();
    let opts = PruneOptions::default();
    let plan = plan_prune(&f.repo, &policies, &wal, &opts, now)
        .await
        .unwrap();
    let report = prune(&f.repo, &plan, &opts).await.unwrap();

    let listed = f.repo.list_backups(None).await.unwrap();
    let ids = |m: &[Manifest], source: &str| -> BTreeSet<String> {
        m.iter()
            .filter(|m| m.source.name == source)
            .map(|m| m.backup_id.clone())
            .collect()
    };
    let expected_physical_ids: BTreeSet<String> = kept_physical
        .iter()
        .map(|&k| days[k as usize].physical.backup_id.clone())
        .collect();
    let expected_logical_ids: BTreeSet<String> = logical
        .iter()
        .filter(|(k, _)| kept_logical.contains(k))
        .map(|(_, m)| m.backup_id.clone())
        .collect();
    assert_eq!(
        ids(&listed, "db"),
        expected_physical_ids,
        "physical backups kept"
    );
    assert_eq!(
        ids(&listed, "db-logical"),
        expected_logical_ids,
        "logical backups kept"
    );
    assert_eq!(
        report.backups_deleted.len(),
        days.len() + logical.len() - expected_physical_ids.len() - expected_logical_ids.len()
    );
    // Their objects are gone too, not only the manifests.
    for (source, want) in [
        ("db", &expected_physical_ids),
        ("db-logical", &expected_logical_ids),
    ] {
        let dirs: BTreeSet<String> = std::fs::read_dir(repo_dir.join("backups").join(source))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(&dirs, want, "backup directories of {source}");
    }
    let wal_after = wal_files(&repo_dir, "db");
    let deleted: BTreeSet<String> = wal_before
        .keys()
        .filter(|o| !wal_after.contains_key(*o))
        .cloned()
        .collect();
    assert_eq!(deleted, expected_wal_deleted, "WAL deleted");
    assert_eq!(report.wal_deleted, expected_wal_deleted.len());
    assert!(
        wal_after.values().any(|n| n == "00000002.history"),
        ".history is kept forever"
    );

    // Idempotent.
    let (wal, _) = all_retention_facts(&f.repo).await.unwrap();
    let again = plan_prune(&f.repo, &policies, &wal, &opts, now)
        .await
        .unwrap();
    assert_eq!(again.retention.deletions().count(), 0);
    assert!(again.retention.wal.iter().all(|w| w.deleted.is_empty()));

    // Status, as `dr status` computes it.
    let windows: BTreeMap<String, Duration> =
        [("db".to_string(), Duration::from_secs(7 * 86400))].into();
    let wal_states = wal_status(&f.repo, Some(&f.key), &windows, now)
        .await
        .unwrap();
    let db_wal = &wal_states["db"];
    assert!(
        db_wal.gaps.is_empty() && db_wal.problems.is_empty(),
        "{db_wal:#?}"
    );
    assert!(db_wal.history_read);
    assert_eq!(db_wal.segment_size, SEG as u32);
    let anchor_segment = days[anchor as usize].physical.metadata["start_segment"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        db_wal.checked_from.as_deref(),
        Some(anchor_segment.as_str())
    );
    let objectives: ObjectivesConfig = serde_json::from_value(serde_json::json!({
        "rpo": "15m",
        "sources": { "db-logical": { "rpo": "1d" } },
    }))
    .unwrap();
    let statuses = dr_core::status::status_with_wal(
        &f.repo,
        &["db".to_string(), "db-logical".to_string()],
        &objectives,
        &wal_states,
        Utc::now(),
    )
    .await
    .unwrap();
    let json = serde_json::to_value(&statuses).unwrap();
    let by_name = |n: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == n)
            .unwrap()
            .clone()
    };
    let db = by_name("db");
    assert_eq!(db["rpo_met"], true, "{db:#}");
    assert_eq!(db["problems"], serde_json::json!([]), "{db:#}");
    let stale = by_name("db-logical");
    assert_eq!(stale["rpo_met"], false, "{stale:#}");
    let problems = stale["problems"].to_string();
    assert!(
        problems.contains("newest recovery point is 2days") && problems.contains("RPO is 1day"),
        "{problems}"
    );
    assert!(!statuses.iter().all(dr_core::status::SourceStatus::ok));

    // Every kept physical backup restores inside its window.
    let parent = tempfile::Builder::new()
        .prefix("drm")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for &k in &kept_physical {
        let day = &days[k as usize];
        let (target, expected) = if k >= anchor {
            (
                RecoveryTarget::Name(format!("rp_{k}")),
                day.rows_at_restore_point,
            )
        } else {
            // Older than the PITR window: kept weekly, restorable to its
            // consistency point.
            (RecoveryTarget::Immediate, day.rows_at_backup)
        };
        let mut opts = PitrOptions::new(
            parent.path().join(format!("d{k}")),
            target.clone(),
            f.helper.clone(),
            f.fetch_args(),
        );
        opts.backup = Some(day.physical.backup_id.clone());
        opts.start = true;
        opts.archive_mode_off = true;
        opts.port = Some(free_port());
        opts.wait_timeout = Duration::from_secs(120);
        opts.bin_dir = Some(c.bin().to_path_buf());
        let plan = physical::plan_pitr(&f.repo, &f.key, "db", &opts)
            .await
            .unwrap_or_else(|e| panic!("day {k}: {e}"));
        let report = physical::pitr_restore(&f.repo, &f.key, &plan, &opts)
            .await
            .unwrap_or_else(|e| panic!("day {k} to {target}: {e}"));
        let conn = dr_postgres::ConnectionSettings::from_dsn(&format!(
            "host={} port={} user=postgres dbname=postgres",
            report.socket_dir.as_ref().unwrap().display(),
            report.port.unwrap()
        ))
        .unwrap();
        let client = conn.connect().await.unwrap();
        let row = client
            .query_one(
                "SELECT count(*), coalesce(max(day), -1), count(*) FILTER (WHERE day = $1 AND at = 'after') \
                 FROM truth",
                &[&(k as i32)],
            )
            .await
            .unwrap();
        let (rows, max_day, after): (i64, i32, i64) = (row.get(0), row.get(1), row.get(2));
        drop(client);
        physical::stop_server(&opts, 15).await.unwrap();
        assert_eq!(rows, expected, "day {k} restored to {target}");
        assert_eq!(i64::from(max_day), k, "day {k}: no later day's rows");
        assert_eq!(after, if k >= anchor { 50 } else { 0 }, "day {k}");
        std::fs::remove_dir_all(parent.path().join(format!("d{k}"))).ok();
    }
    eprintln!(
        "{} physical + {} logical backups, {} kept; {} WAL objects deleted; {} restores; {:.1} s in all",
        days.len(),
        logical.len(),
        expected_physical_ids.len() + expected_logical_ids.len(),
        expected_wal_deleted.len(),
        kept_physical.len(),
        started.elapsed().as_secs_f64()
    );
}
