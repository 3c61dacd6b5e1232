//! The dr-core conformance suite for `VaultRaftSnapshot` and `VaultRestorer`
//! against a real OpenBao node (scripts/services/openbao.sh): backup listed
//! and readable, wrong key fails before the target is touched, restore then
//! check, verify with a scratch restore (into the same node: restoring its
//! own snapshot).

mod common;

use dr_vault::{RestoreOptions, VaultRaftSnapshot, VaultRestorer};

#[tokio::test(flavor = "multi_thread")]
async fn conformance_against_openbao() {
    let Some(node) = common::server("DR_TEST_VAULT") else {
        return;
    };
    let (repo, key) = common::repository().await;
    let source = VaultRaftSnapshot::new(&node.config()).unwrap();
    let target = VaultRestorer::new(&node.config(), RestoreOptions::default()).unwrap();
    let scratch = VaultRestorer::new(&node.config(), RestoreOptions::default()).unwrap();
    dr_core::conformance::all(&repo, &key, &source, "vault-conformance", &target, &scratch).await;
}
