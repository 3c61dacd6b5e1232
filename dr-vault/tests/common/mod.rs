//! Helpers shared by the dr-vault integration tests.
#![allow(dead_code, missing_docs)]

use std::io::Write as _;

use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};
use dr_vault::VaultConfig;
use rand::Rng;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

/// A real server from the harness (`scripts/services/openbao.sh`), or `None`
/// (test skipped) when its variables are unset and DR_REQUIRE_SERVERS is not.
pub fn server(prefix: &str) -> Option<Node> {
    let get = |k: &str| {
        std::env::var(format!("{prefix}_{k}"))
            .ok()
            .filter(|v| !v.is_empty())
    };
    match (get("ADDR"), get("TOKEN"), get("UNSEAL_KEY")) {
        (Some(addr), Some(token), Some(unseal_key)) => Some(Node {
            addr,
            token,
            unseal_key,
        }),
        _ => {
            if std::env::var_os("DR_REQUIRE_SERVERS").is_some() {
                panic!("{prefix}_ADDR/_TOKEN/_UNSEAL_KEY are unset but DR_REQUIRE_SERVERS is set: start scripts/services/openbao.sh");
            }
            eprintln!("skipped: {prefix}_ADDR unset (no OpenBao; see scripts/services/openbao.sh)");
            None
        }
    }
}

#[derive(Clone)]
pub struct Node {
    pub addr: String,
    pub token: String,
    pub unseal_key: String,
}

impl Node {
    pub fn config(&self) -> VaultConfig {
        self.config_with_token(&self.token)
    }

    pub fn config_with_token(&self, token: &str) -> VaultConfig {
        let mut c = VaultConfig::default()
            .with_lookup(|k| (k == "VAULT_ADDR").then(|| self.addr.clone()))
            .unwrap();
        c.token = Some(SecretString::from(token.to_string()));
        c
    }

    /// A raw HTTP call with `token`, returning status and JSON body.
    pub async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Enables a KV v2 engine at a random mount and returns the mount.
    pub async fn kv_mount(&self) -> String {
        let mount = format!("drtest{}", rand::thread_rng().gen::<u32>());
        let (s, b) = self
            .call(
                &self.token,
                reqwest::Method::POST,
                &format!("sys/mounts/{mount}"),
                Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        assert!(s == 204 || s == 200, "enable kv: {s} {b}");
        mount
    }

    pub async fn kv_put(&self, token: &str, mount: &str, key: &str, value: &str) {
        // A fresh mount is ready to write after a moment.
        for _ in 0..50 {
            let (s, _) = self
                .call(
                    token,
                    reqwest::Method::POST,
                    &format!("{mount}/data/{key}"),
                    Some(serde_json::json!({"data": {"value": value}})),
                )
                .await;
            if s == 200 || s == 204 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("cannot write {mount}/{key}");
    }

    /// The value of a KV v2 key, or None when it does not exist.
    pub async fn kv_get(&self, token: &str, mount: &str, key: &str) -> Option<String> {
        let (s, b) = self
            .call(
                token,
                reqwest::Method::GET,
                &format!("{mount}/data/{key}"),
                None,
            )
            .await;
        match s {
            200 => Some(
                b["data"]["data"]["value"]
                    .as_str()
                    .expect("value")
                    .to_string(),
            ),
            404 => None,
            _ => panic!("read {mount}/{key}: {s} {b}"),
        }
    }

    /// Every key of a KV v2 mount with its value.
    pub async fn kv_all(&self, token: &str, mount: &str) -> Vec<(String, String)> {
        let (s, b) = self
            .call(
                token,
                reqwest::Method::from_bytes(b"LIST").unwrap(),
                &format!("{mount}/metadata"),
                None,
            )
            .await;
        if s == 404 {
            return Vec::new();
        }
        assert_eq!(s, 200, "list {mount}: {b}");
        let mut out = Vec::new();
        for k in b["data"]["keys"].as_array().unwrap() {
            let k = k.as_str().unwrap().to_string();
            if let Some(v) = self.kv_get(token, mount, &k).await {
                out.push((k, v));
            }
        }
        out.sort();
        out
    }
}

/// A fresh in-memory repository and its key.
pub async fn repository() -> (Repository, Identities) {
    let key = Identities::generate();
    let name = format!("memory://vault-test-{}", rand::thread_rng().gen::<u64>());
    let repo = Repository::init(
        &Location::parse(&name).unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    (repo, key)
}

/// A gzip'd tar of `(name, content)` members.
pub fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        tar.append_data(&mut h, name, *data).unwrap();
    }
    let mut out = tar.into_inner().unwrap().finish().unwrap();
    out.flush().unwrap();
    out
}

/// An archive in the raft snapshot format (as OpenBao writes it) with
/// `state` as `state.bin`, raft index 42 and term 7.
pub fn snapshot_archive(state: &[u8]) -> Vec<u8> {
    let meta = format!(
        r#"{{"Version":1,"ID":"bolt-snapshot","Index":42,"Term":7,"Peers":null,"Configuration":{{"Servers":[{{"Suffrage":0,"ID":"node-a","Address":"127.0.0.1:8201"}}]}},"ConfigurationIndex":1,"Size":{}}}"#,
        state.len()
    );
    let sums = format!(
        "{}  meta.json\n{}  state.bin\n",
        hex::encode(Sha256::digest(meta.as_bytes())),
        hex::encode(Sha256::digest(state))
    );
    tar_gz(&[
        ("meta.json", meta.as_bytes()),
        ("state.bin", state),
        ("SHA256SUMS", sums.as_bytes()),
        ("SHA256SUMS.sealed", b"\x0a\xb4sealed"),
    ])
}
