//! Against two real OpenBao nodes (scripts/services/openbao.sh): a snapshot of
//! cluster 1 is refused by cluster 2 without `force`; with `force` and
//! cluster 1's unseal key it replaces cluster 2's data, and the original root
//! token then applies. A forced restore without unseal keys reports that the
//! node sealed itself. Node 2 is brought back to its own state at the end.

mod common;

use dr_core::{job, Restorer};
use dr_vault::{RestoreOptions, VaultRaftSnapshot, VaultRestorer};

#[tokio::test(flavor = "multi_thread")]
async fn forced_restore_into_a_second_fresh_cluster() {
    let Some(one) = common::server("DR_TEST_VAULT") else {
        return;
    };
    let Some(two) = common::server("DR_TEST_VAULT2") else {
        return;
    };
    let (repo, key) = common::repository().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = |name: &str, k: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, k).unwrap();
        p
    };
    let one_key = key_file("one.key", &one.unseal_key);
    let two_key = key_file("two.key", &two.unseal_key);

    let mount = one.kv_mount().await;
    one.kv_put(&one.token, &mount, "db-password", "s3cr3t")
        .await;
    let at_snapshot = one.kv_all(&one.token, &mount).await;
    let snap_one = job::backup(
        &repo,
        &VaultRaftSnapshot::new(&one.config()).unwrap(),
        "one",
    )
    .await
    .unwrap();
    let snap_two = job::backup(
        &repo,
        &VaultRaftSnapshot::new(&two.config()).unwrap(),
        "two",
    )
    .await
    .unwrap();
    let two_cluster = VaultRaftSnapshot::new(&two.config())
        .unwrap()
        .client()
        .health()
        .await
        .unwrap()
        .cluster_id;

    // Without force: refused by the server, cluster 2 untouched.
    let plain = VaultRestorer::new(&two.config(), RestoreOptions::default()).unwrap();
    let err = job::restore(&repo, &snap_one, &key, &plain)
        .await
        .expect_err("needs force");
    assert!(
        err.to_string().contains("force") || format!("{err:?}").contains("force"),
        "{err:?}"
    );
    assert_eq!(
        plain.client().health().await.unwrap().cluster_id,
        two_cluster
    );
    assert!(
        !plain.check(&snap_one).await.unwrap().ok(),
        "cluster 2 still has its own cluster id"
    );

    // With force and cluster 1's unseal key: cluster 2 now serves cluster 1's data.
    let forced = VaultRestorer::new(
        &two.config(),
        RestoreOptions::default()
            .forced(true)
            .with_unseal_key_files(vec![one_key]),
    )
    .unwrap();
    let report = job::restore(&repo, &snap_one, &key, &forced)
        .await
        .expect("forced restore");
    assert_eq!(report.details["unsealed_by_dr"], true, "{report:?}");
    let checks = forced.check(&snap_one).await.unwrap();
    assert!(checks.ok(), "{checks:?}");
    assert_eq!(
        two.kv_all(&one.token, &mount).await,
        at_snapshot,
        "cluster 1's root token reads cluster 1's secrets on node 2"
    );

    // Forced restore of cluster 2's own old snapshot without unseal keys: the
    // node seals itself and the error says what to do.
    let no_keys = VaultRestorer::new(
        &two.config_with_token(&one.token),
        RestoreOptions::default().forced(true),
    )
    .unwrap();
    let err = job::restore(&repo, &snap_two, &key, &no_keys)
        .await
        .expect_err("sealed");
    let msg = err.to_string();
    assert!(
        msg.contains("sealed itself") && msg.contains("unseal"),
        "{msg}"
    );
    assert!(!msg.contains(&two.unseal_key) && !msg.contains(&one.token));

    // Put node 2 back: unseal with its own key, and it is cluster 2 again.
    let back = VaultRestorer::new(
        &two.config(),
        RestoreOptions::default().with_unseal_key_files(vec![two_key]),
    )
    .unwrap();
    back.client()
        .unseal(&secrecy::SecretString::from(two.unseal_key.clone()))
        .await
        .unwrap();
    let mut active = false;
    for _ in 0..100 {
        if back
            .client()
            .health()
            .await
            .map(|h| h.is_active())
            .unwrap_or(false)
        {
            active = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(active, "node 2 active again");
    assert!(back.check(&snap_two).await.unwrap().ok());
}
