//! HTTP-mock tests (wiremock) for what one real OpenBao node cannot show: a
//! standby's 307 to the active node (backup and restore, the restore's body
//! sent again in full), a cluster without leader (503), a 200 whose body is a
//! truncated archive, a token refused mid-run (expired) and renewed. The
//! responses follow the shapes a real OpenBao 2.x returns (recorded from the
//! test server: `sys/health`, error bodies `{"errors": [...]}`, login `auth`).

mod common;

use std::time::Duration;

use dr_core::job;
use dr_vault::{
    AuthConfig, RestoreOptions, VaultClient, VaultConfig, VaultRaftSnapshot, VaultRestorer,
};
use futures::TryStreamExt;
use secrecy::SecretString;
use wiremock::matchers::{body_bytes, body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SNAPSHOT: &str = "/v1/sys/storage/raft/snapshot";

fn health(standby: bool) -> serde_json::Value {
    serde_json::json!({
        "initialized": true, "sealed": false, "standby": standby,
        "replication_performance_mode": "primary", "replication_dr_mode": "disabled",
        "server_time_utc": 1795965634, "version": "2.7.2",
        "cluster_name": "vault-cluster-8af6f367", "cluster_id": "971e2af0-3172-b4ed-a219-7ea89ab2e7c5"
    })
}

fn config(addr: &str) -> VaultConfig {
    let mut c = VaultConfig::default()
        .with_lookup(|k| (k == "VAULT_ADDR").then(|| addr.to_string()))
        .unwrap();
    c.token = Some(SecretString::from("s.mock-token".to_string()));
    c
}

async fn stored_objects(repo: &dr_storage::Repository, source: &str) -> usize {
    let prefix = dr_storage::object_store::path::Path::from(format!("backups/{source}"));
    repo.store()
        .list(Some(&prefix))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_redirect_is_followed_on_backup_and_restore() {
    let standby = MockServer::start().await;
    let active = MockServer::start().await;
    let archive = common::snapshot_archive(&vec![9u8; 200_000]);
    for server in [&standby, &active] {
        Mock::given(method("GET"))
            .and(path("/v1/sys/health"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(health(server.uri() == standby.uri())),
            )
            .mount(server)
            .await;
    }
    for m in ["GET", "POST"] {
        Mock::given(method(m))
            .and(path(SNAPSHOT))
            .respond_with(
                ResponseTemplate::new(307)
                    .insert_header("Location", format!("{}{SNAPSHOT}", active.uri())),
            )
            .expect(1)
            .mount(&standby)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(SNAPSHOT))
        .and(header("X-Vault-Token", "s.mock-token"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(archive.clone()))
        .expect(1)
        .mount(&active)
        .await;
    // The active node receives the whole snapshot, sent again after the 307.
    Mock::given(method("POST"))
        .and(path(SNAPSHOT))
        .and(body_bytes(archive.clone()))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&active)
        .await;

    let (repo, key) = common::repository().await;
    let source = VaultRaftSnapshot::new(&config(&standby.uri())).unwrap();
    let manifest = job::backup(&repo, &source, "vault")
        .await
        .expect("backup through the standby");
    assert_eq!(manifest.metadata["raft_index"], 42);
    assert_eq!(manifest.metadata["raft_term"], 7);
    let restorer = VaultRestorer::new(
        &config(&standby.uri()),
        RestoreOptions::default().with_poll_interval(Duration::from_millis(10)),
    )
    .unwrap();
    let report = job::restore(&repo, &manifest, &key, &restorer)
        .await
        .expect("restore through the standby");
    assert_eq!(report.bytes_read, archive.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_leader_is_a_clear_retryable_error_and_nothing_is_listed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/sys/health"))
        .respond_with(ResponseTemplate::new(200).set_body_json(health(true)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SNAPSHOT))
        .respond_with(ResponseTemplate::new(503).set_body_json(
            serde_json::json!({"errors": ["local node not active but active cluster node not found"]}),
        ))
        .mount(&server)
        .await;
    let (repo, _) = common::repository().await;
    let source = VaultRaftSnapshot::new(&config(&server.uri())).unwrap();
    let err = job::backup(&repo, &source, "vault")
        .await
        .expect_err("no leader");
    assert!(err.is_retryable(), "{err:?}");
    let chain = format!(
        "{err} / {:?}",
        std::error::Error::source(&err).map(|s| s.to_string())
    );
    assert!(chain.contains("no active node"), "{chain}");
    assert!(repo.list_backups(Some("vault")).await.unwrap().is_empty());
    assert_eq!(stored_objects(&repo, "vault").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_with_a_truncated_archive_is_a_failed_backup_leaving_nothing() {
    let server = MockServer::start().await;
    let archive = common::snapshot_archive(&vec![1u8; 500_000]);
    Mock::given(method("GET"))
        .and(path("/v1/sys/health"))
        .respond_with(ResponseTemplate::new(200).set_body_json(health(false)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SNAPSHOT))
        .respond_with(
            ResponseTemplate::new(200).set_body_bytes(archive[..archive.len() / 2].to_vec()),
        )
        .mount(&server)
        .await;
    let (repo, _) = common::repository().await;
    let source = VaultRaftSnapshot::new(&config(&server.uri())).unwrap();
    let err = job::backup(&repo, &source, "vault")
        .await
        .expect_err("truncated");
    assert_eq!(
        err.kind(),
        dr_core::ErrorKind::VerificationFailed,
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(repo.list_backups(Some("vault")).await.unwrap().is_empty());
    assert_eq!(
        stored_objects(&repo, "vault").await,
        0,
        "the aborted artifact left no object"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_mid_run_is_replaced_by_a_new_approle_login() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("role-id"), "role-123\n").unwrap();
    std::fs::write(dir.path().join("secret-id"), "secret-456\n").unwrap();
    let login = |token: &str| {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "auth": {"client_token": token, "lease_duration": 3600, "renewable": true, "policies": ["dr"]}
        }))
    };
    Mock::given(method("POST"))
        .and(path("/v1/auth/approle/login"))
        .and(body_json(
            serde_json::json!({"role_id": "role-123", "secret_id": "secret-456"}),
        ))
        .respond_with(login("s.first"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/auth/approle/login"))
        .respond_with(login("s.second"))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/sys/health"))
        .respond_with(ResponseTemplate::new(200).set_body_json(health(false)))
        .mount(&server)
        .await;
    // The first token expired before the snapshot request: Vault answers 403.
    Mock::given(method("GET"))
        .and(path(SNAPSHOT))
        .and(header("X-Vault-Token", "s.first"))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(serde_json::json!({"errors": ["permission denied"]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SNAPSHOT))
        .and(header("X-Vault-Token", "s.second"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(common::snapshot_archive(b"state")))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&server.uri());
    cfg.token = None;
    cfg.auth = toml::from_str::<VaultConfig>(&format!(
        "[auth]\nmethod = \"approle\"\nrole_id_file = {:?}\nsecret_id_file = {:?}",
        dir.path().join("role-id"),
        dir.path().join("secret-id")
    ))
    .unwrap()
    .auth;
    assert!(matches!(cfg.auth, AuthConfig::AppRole { .. }));
    let client = VaultClient::new(&cfg).unwrap();
    // Logs in at first use.
    client.get_json("sys/health").await.unwrap();
    let (repo, _) = common::repository().await;
    let manifest = job::backup(&repo, &VaultRaftSnapshot::with_client(client), "vault")
        .await
        .expect("backup after a new login");
    assert_eq!(manifest.metadata["raft_index"], 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_lease_is_renewed_and_kubernetes_login_sends_the_jwt() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwt"), "eyJhbGciOi.jwt.sig").unwrap();
    Mock::given(method("POST"))
        .and(path("/v1/auth/k8s/login"))
        .and(body_json(
            serde_json::json!({"role": "dr", "jwt": "eyJhbGciOi.jwt.sig"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "auth": {"client_token": "s.k8s", "lease_duration": 1, "renewable": true}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/auth/token/renew-self"))
        .and(header("X-Vault-Token", "s.k8s"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "auth": {"client_token": "s.k8s", "lease_duration": 3600, "renewable": true}
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/sys/mounts"))
        .and(header("X-Vault-Token", "s.k8s"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {}})))
        .expect(3)
        .mount(&server)
        .await;
    let mut cfg = config(&server.uri());
    cfg.token = None;
    cfg.auth = AuthConfig::Kubernetes {
        role: "dr".into(),
        jwt_file: Some(dir.path().join("jwt")),
        mount: Some("k8s".into()),
    };
    let client = VaultClient::new(&cfg).unwrap();
    client.get_json("sys/mounts").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.get_json("sys/mounts").await.unwrap(); // renews first
    client.get_json("sys/mounts").await.unwrap(); // the renewed lease is long
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_login_is_a_permission_error_without_the_secret() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("role-id"), "role-123").unwrap();
    std::fs::write(dir.path().join("secret-id"), "secret-456").unwrap();
    Mock::given(method("POST"))
        .and(path("/v1/auth/approle/login"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"errors": ["invalid role or secret ID"]})),
        )
        .mount(&server)
        .await;
    let mut cfg = config(&server.uri());
    cfg.token = None;
    cfg.auth = AuthConfig::AppRole {
        role_id_file: dir.path().join("role-id"),
        secret_id_file: dir.path().join("secret-id"),
        mount: None,
    };
    let client = VaultClient::new(&cfg).unwrap();
    let err: dr_core::Error = client.get_json("sys/mounts").await.unwrap_err().into();
    assert!(
        matches!(err, dr_core::Error::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("invalid role or secret ID"),
        "{err}"
    );
    assert!(!format!("{err:?}").contains("secret-456"));
}

/// A 200 whose connection closes before Content-Length bytes came (a server
/// or proxy dying mid-stream). wiremock always sends whole bodies, so this
/// one is a raw TCP listener on loopback.
#[tokio::test(flavor = "multi_thread")]
async fn a_200_whose_body_breaks_off_is_a_failed_backup_leaving_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let archive = common::snapshot_archive(&vec![4u8; 300_000]);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let archive = archive.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if req.starts_with("GET /v1/sys/health") {
                    let body = health(false).to_string();
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(body.as_bytes()).await;
                } else {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", archive.len());
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&archive[..archive.len() / 3]).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    let (repo, _) = common::repository().await;
    let source = VaultRaftSnapshot::new(&config(&addr)).unwrap();
    let err = job::backup(&repo, &source, "vault")
        .await
        .expect_err("broken body");
    assert!(
        err.is_retryable(),
        "a broken connection may succeed next time: {err:?}"
    );
    let chain = format!(
        "{err}: {:?}",
        std::error::Error::source(&err).map(|s| s.to_string())
    );
    assert!(chain.contains("broke off"), "{chain}");
    assert!(repo.list_backups(Some("vault")).await.unwrap().is_empty());
    assert_eq!(stored_objects(&repo, "vault").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_snapshot_checks_the_stored_archive_and_refuses_other_kinds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/sys/health"))
        .respond_with(ResponseTemplate::new(200).set_body_json(health(false)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SNAPSHOT))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(common::snapshot_archive(b"state")))
        .mount(&server)
        .await;
    let (repo, key) = common::repository().await;
    let manifest = job::backup(
        &repo,
        &VaultRaftSnapshot::new(&config(&server.uri())).unwrap(),
        "vault",
    )
    .await
    .unwrap();
    let facts = dr_vault::verify_snapshot(&dr_core::BackupReader::new(
        repo.clone(),
        manifest.clone(),
        key.clone(),
    ))
    .await
    .unwrap();
    assert_eq!(
        (facts.raft_index, facts.raft_term, facts.state_size),
        (42, 7, 5)
    );

    // A manifest whose recorded facts differ from the stored snapshot.
    let mut tampered = manifest.clone();
    tampered.metadata["raft_index"] = serde_json::json!(41);
    let err = dr_vault::verify_snapshot(&dr_core::BackupReader::new(
        repo.clone(),
        tampered,
        key.clone(),
    ))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), dr_core::ErrorKind::VerificationFailed, "{err}");

    // A wrong key fails as a decryption error.
    let err = dr_vault::verify_snapshot(&dr_core::BackupReader::new(
        repo.clone(),
        manifest.clone(),
        dr_storage::Identities::generate(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            dr_core::Error::Storage(dr_storage::Error::Decrypt { .. })
        ),
        "{err:?}"
    );

    let mut other = manifest;
    other.source.kind = "postgres-logical".into();
    let err = dr_vault::verify_snapshot(&dr_core::BackupReader::new(repo, other, key))
        .await
        .unwrap_err();
    assert!(matches!(err, dr_core::Error::Unsupported { .. }), "{err:?}");
}
