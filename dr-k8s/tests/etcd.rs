//! The etcd source against a real etcd (scripts/services/etcd.sh exports
//! DR_TEST_ETCD_ENDPOINT): snapshot, verify, restore the file with
//! `etcdctl snapshot restore`, start etcd on it and read the data back.

#![cfg(feature = "etcd")]

use std::process::{Command, Stdio};
use std::time::Duration;

use dr_core::{conformance, job, Restorer};
use dr_k8s::etcd::{EtcdMetadata, EtcdSnapshot, EtcdSnapshotFile};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};

fn endpoint() -> Option<String> {
    match std::env::var("DR_TEST_ETCD_ENDPOINT") {
        Ok(e) => Some(e),
        Err(_) if std::env::var_os("DR_REQUIRE_SERVERS").is_some() => {
            panic!("DR_TEST_ETCD_ENDPOINT is not set and DR_REQUIRE_SERVERS is")
        }
        Err(_) => {
            eprintln!(
                "DR_TEST_ETCD_ENDPOINT not set: etcd tests skipped (scripts/test.sh starts etcd)"
            );
            None
        }
    }
}

fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl runs");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

use dr_core::conformance::ports::free_port;

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_conforms_and_restores_with_etcdctl() {
    let Some(ep) = endpoint() else { return };
    let prefix = format!("/dr-test-{}/", std::process::id());
    for i in 0..50 {
        etcdctl(
            &ep,
            &["put", &format!("{prefix}key{i}"), &format!("value {i}")],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let key = Identities::generate();
    let repo = Repository::init(
        &Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    let source = EtcdSnapshot::new(vec![ep.clone()]);
    let target = EtcdSnapshotFile::new(dir.path().join("restored"));
    let scratch = EtcdSnapshotFile::new(dir.path().join("scratch"));
    conformance::all(&repo, &key, &source, "etcd", &target, &scratch).await;

    let m = repo.find_backup(Some("etcd"), "latest").await.unwrap();
    let meta: EtcdMetadata = serde_json::from_value(m.metadata.clone()).unwrap();
    assert!(meta.revision >= 50, "revision recorded: {meta:?}");
    assert_eq!(meta.snapshot_sha256.len(), 64);
    assert!(meta.server_version.starts_with("3."));
    assert!(
        !dir.path().join("scratch").read_dir().unwrap().any(|_| true),
        "scratch file discarded"
    );

    // The restored file is what `etcdctl snapshot restore` takes.
    let file = target.path().expect("restored file");
    let data = dir.path().join("etcd-restored");
    let (cport, pport) = (free_port(), free_port());
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .args([
            "--name",
            "restored",
            "--initial-cluster",
            &format!("restored=http://127.0.0.1:{pport}"),
        ])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{pport}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "snapshot restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curl = format!("http://127.0.0.1:{cport}");
    let mut etcd = Command::new("etcd")
        .args(["--name", "restored", "--data-dir", data.to_str().unwrap()])
        .args([
            "--listen-client-urls",
            &curl,
            "--advertise-client-urls",
            &curl,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{pport}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{pport}"),
        ])
        .args([
            "--initial-cluster",
            &format!("restored=http://127.0.0.1:{pport}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut value = String::new();
    for _ in 0..100 {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={curl}"))
            .args(["get", &format!("{prefix}key42"), "--print-value-only"])
            .output()
            .unwrap();
        if out.status.success() {
            value = String::from_utf8_lossy(&out.stdout).trim().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The keyspace hash at the snapshot's revision is the one recorded.
    let hashkv = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={curl}"))
        .args([
            "endpoint",
            "hashkv",
            "--rev",
            &meta.revision.to_string(),
            "-w",
            "json",
        ])
        .output()
        .unwrap();
    let _ = etcd.kill();
    let _ = etcd.wait();
    assert_eq!(value, "value 42");
    let hv: serde_json::Value = serde_json::from_slice(&hashkv.stdout).expect("hashkv json");
    assert_eq!(
        hv[0]["HashKV"]["hash"].as_u64(),
        Some(meta.hash_kv as u64),
        "{hv}"
    );

    // A corrupted file fails the check.
    std::fs::write(&file, b"garbage").unwrap();
    let report = target.check(&m).await.unwrap();
    assert!(!report.ok());
    job::verify(&repo, &m, Some(&key), None)
        .await
        .unwrap()
        .into_result()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_unavailable() {
    if endpoint().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = Identities::generate();
    let repo = Repository::init(
        &Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    let source = EtcdSnapshot::new(vec![format!("http://127.0.0.1:{}", free_port())]);
    let err = job::backup(&repo, &source, "etcd").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(repo.list_backups(Some("etcd")).await.unwrap().is_empty());
}

/// `dr check`'s etcd lines: a live endpoint is OK with its version; a dead
/// one beside it is a warning; only dead ones fail.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_each_endpoint() {
    let Some(live) = endpoint() else {
        return;
    };
    use dr_core::setup_check::FindingStatus;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let lines = EtcdSnapshot::new(vec![live.clone(), dead.clone()])
        .check("etcd")
        .await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0].status, FindingStatus::Ok, "{lines:#?}");
    assert!(
        lines[0].detail.starts_with(&format!("{live}: etcd 3.")),
        "{lines:#?}"
    );
    assert_eq!(lines[1].status, FindingStatus::Warn, "{lines:#?}");
    let lines = EtcdSnapshot::new(vec![dead.clone()]).check("etcd").await;
    assert_eq!(lines[0].status, FindingStatus::Fail, "{lines:#?}");
    assert!(lines[0].detail.starts_with(&dead), "{lines:#?}");
}
