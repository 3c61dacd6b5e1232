//! Retention on a real WAL archive: physical base backups and WAL pushed by a
//! real cluster's `archive_command`, pruned by the policy, and the kept
//! backup still restores (a scratch PITR to its consistency point) from the
//! WAL that is left. On a local repository and on the S3 emulator.

use std::collections::BTreeMap;
use std::time::Duration;

use dr_core::prune::{plan_prune, prune, PruneOptions};
use dr_core::retention::RetentionPolicy;
use dr_postgres::physical::{PhysicalOptions, PhysicalScratchRestorer, PostgresPhysical};
use dr_postgres::testing;
use dr_postgres::wal::retention::all_retention_facts;
use dr_tests::Fixture;

#[test]
#[ignore = "the WAL helper's entry point (PostgreSQL runs it through archive_command and restore_command), not a test"]
fn helper_entry() {
    dr_tests::helper_entry();
}

fn lsn(v: &serde_json::Value) -> u64 {
    dr_core::prune::parse_lsn(v).expect("an LSN")
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_keeps_the_pitr_window_and_the_kept_backup_restores() {
    if !testing::should_run() {
        return;
    }
    prune_then_restore(Fixture::new().await).await;
}

/// The same against the S3 emulator: WAL pushed by `archive_command` and
/// fetched by `restore_command` through S3, base backups, prune.
#[tokio::test(flavor = "multi_thread")]
async fn on_s3_prune_keeps_the_pitr_window_and_the_kept_backup_restores() {
    if !testing::should_run() {
        return;
    }
    if let Some(f) = Fixture::on_s3().await {
        assert!(f.url.starts_with("s3://"), "{}", f.url);
        prune_then_restore(f).await;
    }
}

async fn prune_then_restore(f: Fixture) {
    let c = f.archiving_cluster(&f.helper, "db");
    c.psql("postgres", "CREATE TABLE t (id int)");
    let mut manifests = Vec::new();
    for round in 0..3 {
        c.psql(
            "postgres",
            &format!("INSERT INTO t SELECT generate_series(1, 1000) + {round} * 1000"),
        );
        let seg = c.switch_wal();
        c.wait_archived(&seg, Duration::from_secs(60));
        let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
        manifests.push(dr_core::job::backup(&f.repo, &source, "db").await.unwrap());
        std::thread::sleep(Duration::from_millis(1200));
    }
    let seg = c.switch_wal();
    c.wait_archived(&seg, Duration::from_secs(60));

    let (wal, last) = all_retention_facts(&f.repo).await.unwrap();
    assert!(last.contains_key("db"), "the newest archived time is known");
    let segments_before = wal.iter().filter(|w| w.start_lsn.is_some()).count();
    assert!(segments_before >= 6, "{segments_before} segments archived");

    // A one-second PITR window: the newest backup (started more than a second
    // ago) anchors it; the older two go, with the WAL before the anchor.
    let mut policies = BTreeMap::new();
    policies.insert(
        "db".to_string(),
        RetentionPolicy {
            pitr_window: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    );
    let opts = PruneOptions::default();
    let plan = plan_prune(&f.repo, &policies, &wal, &opts, chrono::Utc::now())
        .await
        .unwrap();
    let deleted: Vec<&str> = plan.retention.deletions().map(|b| b.id.as_str()).collect();
    assert_eq!(
        deleted,
        vec![
            manifests[0].backup_id.as_str(),
            manifests[1].backup_id.as_str()
        ]
    );
    let anchor_start = lsn(&manifests[2].metadata["start_lsn"]);
    let chain = &plan.retention.wal[0];
    assert_eq!(chain.keep_from_lsn, Some(anchor_start));
    assert!(!chain.deleted.is_empty(), "WAL before the window goes");
    for w in &wal {
        let gone = chain.deleted.contains(&w.object);
        match (w.start_lsn, w.end_lsn) {
            (Some(_), Some(e)) => assert_eq!(gone, e <= anchor_start, "{}", w.object),
            _ => assert!(!gone, "history files are kept: {}", w.object),
        }
    }

    let report = prune(&f.repo, &plan, &opts).await.unwrap();
    assert_eq!(report.backups_deleted.len(), 2);
    assert_eq!(report.wal_deleted, chain.deleted.len());
    let listed = f.repo.list_backups(Some("db")).await.unwrap();
    assert_eq!(listed, vec![manifests[2].clone()]);
    // Idempotent.
    let (wal_after, _) = all_retention_facts(&f.repo).await.unwrap();
    let again = plan_prune(&f.repo, &policies, &wal_after, &opts, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(again.retention.deletions().count(), 0);
    assert!(again.retention.wal.iter().all(|w| w.deleted.is_empty()));

    // The kept backup still restores from the WAL that is left.
    let scratch = PhysicalScratchRestorer::new(f.key.clone(), f.helper.clone(), f.fetch_args())
        .with_bin_dir(c.bin().to_path_buf());
    let report = dr_core::job::verify(&f.repo, &manifests[2], Some(&f.key), Some(&scratch))
        .await
        .unwrap();
    assert!(report.ok(), "{report:#?}");
}
