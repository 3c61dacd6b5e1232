//! Against a real OpenBao node with raft storage (scripts/services/openbao.sh):
//! back up, write more secrets, restore, and read back exactly the secrets of
//! the snapshot's time; the same through the `vault.restore` plan step;
//! `verify_snapshot` on the stored backup; a token without the snapshot
//! capability lists nothing.
//!
//! One test per binary: it restores the shared node, so nothing else may run
//! against it meanwhile.

mod common;

use dr_core::plan::{ActionContext, ActionRegistry};
use dr_core::{job, BackupReader, Restorer};
use dr_vault::{
    verify_snapshot, RestoreOptions, SnapshotMetadata, VaultActionEnv, VaultRaftSnapshot,
    VaultRestorer, KIND,
};

#[tokio::test(flavor = "multi_thread")]
async fn backup_write_restore_reads_back_the_snapshot_secrets() {
    let Some(node) = common::server("DR_TEST_VAULT") else {
        return;
    };
    let (repo, key) = common::repository().await;
    let mount = node.kv_mount().await;
    node.kv_put(&node.token, &mount, "alpha", "one").await;
    node.kv_put(&node.token, &mount, "beta", "two").await;
    let at_snapshot = node.kv_all(&node.token, &mount).await;
    assert_eq!(at_snapshot.len(), 2);

    // Back up.
    let source = VaultRaftSnapshot::new(&node.config()).unwrap();
    let manifest = job::backup(&repo, &source, "vault").await.expect("backup");
    assert_eq!(manifest.source.kind, KIND);
    let meta = SnapshotMetadata::from_manifest(&manifest).unwrap();
    assert!(
        meta.snapshot.raft_index > 0 && meta.snapshot.raft_term > 0,
        "{meta:?}"
    );
    let health = source.client().health().await.unwrap();
    assert_eq!(meta.cluster_id, health.cluster_id);
    assert_eq!(repo.list_backups(Some("vault")).await.unwrap().len(), 1);

    // `dr verify ID`: digests, then the archive checks on the stored snapshot.
    let report = job::verify(&repo, &manifest, Some(&key), None)
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    let facts = verify_snapshot(&BackupReader::new(
        repo.clone(),
        manifest.clone(),
        key.clone(),
    ))
    .await
    .expect("stored snapshot passes the archive checks");
    assert_eq!(
        (facts.raft_index, facts.raft_term),
        (meta.snapshot.raft_index, meta.snapshot.raft_term)
    );

    // Change things after the snapshot.
    node.kv_put(&node.token, &mount, "alpha", "changed").await;
    node.kv_put(&node.token, &mount, "gamma", "three").await;
    assert_ne!(node.kv_all(&node.token, &mount).await, at_snapshot);

    // Restore (same cluster, not forced) and read back exactly the snapshot's secrets.
    let restorer = VaultRestorer::new(&node.config(), RestoreOptions::default()).unwrap();
    let report = job::restore(&repo, &manifest, &key, &restorer)
        .await
        .expect("restore");
    assert_eq!(
        report.bytes_read,
        manifest.plain_size(),
        "the whole snapshot was sent"
    );
    assert_eq!(node.kv_all(&node.token, &mount).await, at_snapshot);
    let checks = restorer.check(&manifest).await.unwrap();
    assert!(checks.ok(), "{checks:?}");

    // The plan step does the same.
    node.kv_put(&node.token, &mount, "delta", "four").await;
    let mut registry = ActionRegistry::new();
    dr_vault::register(
        &mut registry,
        VaultActionEnv {
            repository: repo.clone(),
            identities: key.clone(),
            vault: node.config(),
        },
    );
    let action = registry
        .build(
            "vault.restore",
            &serde_json::json!({"source": "vault", "backup": manifest.backup_id}),
        )
        .unwrap();
    assert!(
        action.describe().contains(&node.addr),
        "{}",
        action.describe()
    );
    let out = action
        .run(&ActionContext::new("run", "restore-vault"))
        .await
        .expect("vault.restore");
    assert!(out.summary.contains(&manifest.backup_id), "{}", out.summary);
    assert_eq!(node.kv_all(&node.token, &mount).await, at_snapshot);

    // Unknown parameters are refused, naming the parameter.
    let err = registry
        .build(
            "vault.restore",
            &serde_json::json!({"source": "vault", "forse": true}),
        )
        .unwrap_err();
    assert!(
        matches!(err, dr_core::Error::InvalidConfig { ref key, .. } if key.contains("forse")),
        "{err}"
    );

    // A token without the snapshot capability: a failed backup, nothing listed.
    let weak = default_policy_token(&node).await;
    let weak_source = VaultRaftSnapshot::new(&node.config_with_token(&weak)).unwrap();
    let err = job::backup(&repo, &weak_source, "vault-weak")
        .await
        .expect_err("403");
    assert!(
        matches!(err, dr_core::Error::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains(&weak),
        "the token never appears in errors"
    );
    assert!(repo
        .list_backups(Some("vault-weak"))
        .await
        .unwrap()
        .is_empty());
}

/// `dr check`'s Vault lines: the root token may take snapshots; a token of
/// the default policy may not (a FAIL naming the path); an address where
/// nothing listens is a FAIL "reachable".
#[tokio::test]
async fn check_names_a_token_that_cannot_take_snapshots() {
    let Some(node) = common::server("DR_TEST_VAULT") else {
        return;
    };
    use dr_core::setup_check::FindingStatus;
    let lines = dr_vault::check::check_vault(&node.config(), "vault").await;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.status == FindingStatus::Ok),
        "{lines:#?}"
    );

    let weak = default_policy_token(&node).await;
    let lines = dr_vault::check::check_vault(&node.config_with_token(&weak), "vault").await;
    let perm = lines
        .iter()
        .find(|l| l.check == "snapshot permission")
        .unwrap();
    assert_eq!(perm.status, FindingStatus::Fail, "{lines:#?}");
    assert!(
        perm.detail.contains("sys/storage/raft/snapshot"),
        "{perm:?}"
    );
    assert!(!perm.detail.contains(&weak), "the token never appears");

    let mut down = node.clone();
    down.addr = format!(
        "http://127.0.0.1:{}",
        dr_core::conformance::ports::free_port()
    );
    let lines = dr_vault::check::check_vault(&down.config(), "vault").await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(
        (lines[0].check.as_str(), lines[0].status),
        ("reachable", FindingStatus::Fail)
    );
}

/// A token of the `default` policy only (no snapshot capability), 5 minutes.
async fn default_policy_token(node: &common::Node) -> String {
    let (s, b) = node
        .call(
            &node.token,
            reqwest::Method::POST,
            "auth/token/create",
            Some(serde_json::json!({"policies": ["default"], "ttl": "5m"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["auth"]["client_token"].as_str().unwrap().to_string()
}
