//! The shared conformance suite of `dr_core` ([`conformance::all`]) for
//! physical backups: [`PostgresPhysical`] as the source, a
//! [`PostgresPitrRestorer`] as the restore target and a
//! [`PhysicalScratchRestorer`] for the verify job, on a real cluster
//! archiving into the repository (PostgreSQL runs `archive_command` and the
//! restored servers `restore_command` through this test binary, see
//! `common`).
//!
//! Every check of the suite applies to physical backups as it stands:
//! - the backup is listed once and every artifact (`base.tar`,
//!   `backup_manifest`) decodes;
//! - a wrong identity fails with a decryption error before the data
//!   directory is created: the planner reads only the archive (with the
//!   restorer's own keys, which the `restore_command` also uses through the
//!   key file), and the base backup is opened through the restore job's
//!   reader, with the wrong key, before anything is written;
//! - restore, then check: with the target `immediate` the restored, promoted
//!   cluster is the backup's end, so its system identifier and database list
//!   are compared with the manifest, as well as the end of recovery and the
//!   WAL position;
//! - verify with a scratch restore (which also runs `pg_amcheck` where it is
//!   installed) passes and removes the scratch cluster.

mod common;
use common::*;

use std::time::Duration;

use dr_core::{conformance, job, Restorer};
use dr_postgres::physical::{
    PhysicalOptions, PhysicalScratchRestorer, PitrReport, PostgresPhysical, PostgresPitrRestorer,
    RecoveryTarget,
};
use dr_postgres::testing;

fn short_dir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn physical_backup_and_pitr_restorer_conform() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let c = f.archiving_cluster("db");
    c.pgbench_init("bench", 1);

    let source = PostgresPhysical::new(c.settings("postgres"), PhysicalOptions::default());
    let parent = short_dir("drc");
    let pgdata = parent.path().join("data");
    let mut opts = pitr_options(&f, pgdata.clone(), RecoveryTarget::Immediate);
    opts.bin_dir = Some(c.bin().to_path_buf());
    let target = PostgresPitrRestorer::new(opts, f.key.clone());
    let scratch_parent = short_dir("drs");
    let scratch = PhysicalScratchRestorer::new(f.key.clone(), f.helper.clone(), f.fetch_args())
        .with_parent(scratch_parent.path())
        .with_bin_dir(c.bin())
        .with_wait_timeout(Duration::from_secs(120));
    assert!(target.accepts(dr_postgres::KIND_PHYSICAL));
    assert!(!target.accepts(dr_postgres::KIND_LOGICAL));

    conformance::all(&f.repo, &f.key, &source, "db", &target, &scratch).await;

    // The target holds the restored cluster, started on its port; the
    // restore's report is the PITR report.
    let report: PitrReport = target.report().await.expect("a finished restore");
    let port = report.port.expect("started");
    let count = std::process::Command::new(c.bin().join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            &pgdata.display().to_string(),
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "bench",
            "-c",
            "SELECT count(*) FROM pgbench_accounts",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "100000");
    let manifest = f.repo.find_backup(Some("db"), "latest").await.unwrap();
    assert_eq!(report.plan.backup_id, manifest.backup_id);
    // A second restore into the same target is refused until discarded.
    let again = job::restore(&f.repo, &manifest, &f.key, &target)
        .await
        .unwrap_err();
    assert!(
        matches!(again, dr_core::Error::Conflict { .. }),
        "{again:?}"
    );
    target.discard().await.unwrap();
    assert!(!pgdata.exists(), "discard removes the data directory");
    assert!(!pgdata.join("postmaster.pid").exists());
    target.discard().await.unwrap();
    assert_eq!(
        std::fs::read_dir(scratch_parent.path()).unwrap().count(),
        0,
        "the verify job discarded the scratch cluster"
    );

    // Without a server: the check reads pg_control and the recovery signal.
    let mut offline = pitr_options(&f, pgdata.clone(), RecoveryTarget::Latest);
    offline.start = false;
    offline.bin_dir = Some(c.bin().to_path_buf());
    let offline = PostgresPitrRestorer::new(offline, f.key.clone());
    let restored = job::restore(&f.repo, &manifest, &f.key, &offline)
        .await
        .unwrap();
    assert!(restored.bytes_read > 0);
    assert_eq!(restored.details["plan"]["backup_id"], manifest.backup_id);
    let checks = offline.check(&manifest).await.unwrap();
    assert!(checks.ok(), "{checks:?}");
    let names: Vec<_> = checks.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["recovery.signal in place", "system identifier"]);
    let mut other = manifest.clone();
    other.metadata["system_identifier"] = serde_json::json!("1");
    let bad = offline.check(&other).await.unwrap();
    let failed: Vec<_> = bad.failures().map(|c| c.name.clone()).collect();
    assert_eq!(failed, ["system identifier"]);
    offline.discard().await.unwrap();
    assert!(!pgdata.exists());
}
