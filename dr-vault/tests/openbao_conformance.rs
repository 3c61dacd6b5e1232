//! The dr-core conformance suite for `VaultRaftSnapshot` and `VaultRestorer`
//! against a real OpenBao node (scripts/services/openbao.sh): backup listed
//! and readable, wrong key fails before the target is touched, restore then
//! check, verify with a scratch restore (into the same node: restoring its
//! own snapshot).
//!
//! The node's own check compares its state and cluster id only, which a
//! restore that did nothing would pass. So the source writes a secret right
//! after taking its snapshot, and the check here also compares the node's
//! secrets with the snapshot's: only a restore that really replaced the
//! node's data passes.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dr_core::{BackupSource, CheckReport, RestoreReport, Restorer};
use dr_storage::{BackupWriter, Manifest};
use dr_vault::{RestoreOptions, VaultRaftSnapshot, VaultRestorer};

type Secrets = Arc<Mutex<Vec<(String, String)>>>;

/// The snapshot source, writing a secret into the node once the snapshot
/// is taken; records the secrets the snapshot holds.
struct WritesAfter {
    inner: VaultRaftSnapshot,
    node: common::Node,
    mount: String,
    at_snapshot: Secrets,
}

impl std::fmt::Display for WritesAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::fmt::Debug for WritesAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WritesAfter({})", self.inner)
    }
}

impl std::fmt::Display for ComparesSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::fmt::Debug for ComparesSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ComparesSecrets({})", self.inner)
    }
}

#[async_trait]
impl BackupSource for WritesAfter {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn backup(&self, w: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        let before = self.node.kv_all(&self.node.token, &self.mount).await;
        let meta = self.inner.backup(w).await?;
        *self.at_snapshot.lock().unwrap() = before;
        let n: u64 = rand::random();
        self.node
            .kv_put(
                &self.node.token,
                &self.mount,
                "after-snapshot",
                &n.to_string(),
            )
            .await;
        Ok(meta)
    }
}

/// The restorer, whose check also compares the node's secrets with the
/// snapshot's.
struct ComparesSecrets {
    inner: VaultRestorer,
    node: common::Node,
    mount: String,
    at_snapshot: Secrets,
}

#[async_trait]
impl Restorer for ComparesSecrets {
    fn accepts(&self, kind: &str) -> bool {
        self.inner.accepts(kind)
    }
    async fn restore(&self, backup: &dr_core::BackupReader) -> dr_core::Result<RestoreReport> {
        self.inner.restore(backup).await
    }
    async fn check(&self, manifest: &Manifest) -> dr_core::Result<CheckReport> {
        let mut report = self.inner.check(manifest).await?;
        let expected = format!("{:?}", self.at_snapshot.lock().unwrap());
        let actual = format!(
            "{:?}",
            self.node.kv_all(&self.node.token, &self.mount).await
        );
        report.checks.push(dr_core::Check {
            name: "secrets".into(),
            expected,
            actual,
        });
        Ok(report)
    }
    async fn discard(&self) -> dr_core::Result<()> {
        self.inner.discard().await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_against_openbao() {
    let Some(node) = common::server("DR_TEST_VAULT") else {
        return;
    };
    let (repo, key) = common::repository().await;
    let mount = node.kv_mount().await;
    node.kv_put(&node.token, &mount, "at-snapshot", "kept")
        .await;
    let at_snapshot: Secrets = Arc::default();
    let source = WritesAfter {
        inner: VaultRaftSnapshot::new(&node.config()).unwrap(),
        node: node.clone(),
        mount: mount.clone(),
        at_snapshot: at_snapshot.clone(),
    };
    let restorer = |at: &Secrets| ComparesSecrets {
        inner: VaultRestorer::new(&node.config(), RestoreOptions::default()).unwrap(),
        node: node.clone(),
        mount: mount.clone(),
        at_snapshot: at.clone(),
    };
    let (target, scratch) = (restorer(&at_snapshot), restorer(&at_snapshot));
    dr_core::conformance::all(&repo, &key, &source, "vault-conformance", &target, &scratch).await;
    let now = node.kv_all(&node.token, &mount).await;
    assert!(now.iter().any(|(k, _)| k == "at-snapshot"), "{now:?}");
    assert!(
        !now.iter().any(|(k, _)| k == "after-snapshot"),
        "the restore replaced nothing: {now:?}"
    );
}
