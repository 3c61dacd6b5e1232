//! The `etcd` backup source.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use dr_storage::BackupWriter;
use etcd_client::{Client, ConnectOptions};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// The kind recorded in manifests.
pub const KIND_ETCD: &str = "etcd";

/// The artifact holding the snapshot (exactly the bytes etcd sent).
pub const SNAPSHOT_ARTIFACT: &str = "etcd-snapshot.db";

/// bbolt's magic number, little-endian at offset 16 of the meta page.
const BOLT_MAGIC: [u8; 4] = 0xED0C_DAEDu32.to_le_bytes();

/// `[sources.NAME]` with `kind = "etcd"`:
///
/// ```toml
/// [sources.etcd]
/// kind = "etcd"
/// endpoints = ["http://127.0.0.1:2379"]
/// user = "backup"                           # optional
/// password_file = "/run/secrets/etcd"       # optional; first line
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EtcdSourceConfig {
    /// Client URLs of the members (the snapshot comes from the first that answers).
    pub endpoints: Vec<String>,
    /// A user for etcd's authentication.
    #[serde(default)]
    pub user: Option<String>,
    /// A file whose first line is the user's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connection bound, seconds.
    #[serde(default = "connect_timeout")]
    pub connect_timeout_secs: u64,
}

fn connect_timeout() -> u64 {
    10
}

impl EtcdSourceConfig {
    /// The source this section describes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no endpoint, a password without a user,
    /// an unreadable password file.
    pub fn source(&self) -> Result<EtcdSnapshot> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidConfig {
                key: "endpoints".into(),
                reason: "at least one etcd client URL is needed".into(),
            });
        }
        let password = match &self.password_file {
            None => None,
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|e| Error::InvalidConfig {
                    key: "password_file".into(),
                    reason: format!("{}: {e}", f.display()),
                })?;
                Some(SecretString::from(
                    text.lines().next().unwrap_or_default().to_string(),
                ))
            }
        };
        if password.is_some() != self.user.is_some() {
            return Err(Error::InvalidConfig {
                key: "user".into(),
                reason: "`user` and `password_file` go together".into(),
            });
        }
        let mut s = EtcdSnapshot::new(self.endpoints.clone());
        s.connect_timeout = Duration::from_secs(self.connect_timeout_secs.max(1));
        if let (Some(u), Some(p)) = (&self.user, password) {
            s = s.with_user(u, p);
        }
        Ok(s)
    }
}

/// What an etcd backup records in its manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EtcdMetadata {
    /// The endpoint that sent the snapshot.
    pub endpoint: String,
    /// The server version.
    pub server_version: String,
    /// The cluster id.
    pub cluster_id: u64,
    /// The member that sent the snapshot.
    pub member_id: u64,
    /// The store revision of the snapshot (from its response header, or,
    /// from etcd 3.4 which sends none, read just before: the snapshot holds
    /// at least this revision).
    pub revision: i64,
    /// `HashKV` of the keyspace at `revision` (compare after a restore with
    /// `etcdctl endpoint hashkv --rev`).
    pub hash_kv: u32,
    /// The snapshot's database digest, as etcd appended it.
    pub snapshot_sha256: String,
    /// Bytes of the database (without the 32-byte trailer).
    pub db_size: u64,
}

/// The verified digest of a snapshot stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDigest {
    /// SHA-256 of the database, hex.
    pub sha256: String,
    /// Bytes of the database.
    pub db_size: u64,
}

/// Checks a snapshot as etcd sent it: bbolt magic, and the appended SHA-256
/// of the database.
#[derive(Default)]
struct Checker {
    hasher: Sha256,
    tail: Vec<u8>,
    head: Vec<u8>,
    db_size: u64,
}

impl Checker {
    fn update(&mut self, data: &[u8]) {
        if self.head.len() < 24 {
            let n = (24 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        // Hash everything but the last 32 bytes seen so far.
        self.tail.extend_from_slice(data);
        if self.tail.len() > 32 {
            let cut = self.tail.len() - 32;
            self.hasher.update(&self.tail[..cut]);
            self.db_size += cut as u64;
            self.tail.drain(..cut);
        }
    }

    fn finish(self, what: &str) -> Result<SnapshotDigest> {
        let fail = |reason: String| Error::Verification {
            what: what.to_string(),
            reason,
        };
        if self.tail.len() < 32 || self.head.len() < 24 {
            return Err(fail(format!(
                "snapshot too short ({} bytes)",
                self.db_size + self.tail.len() as u64
            )));
        }
        if self.head[16..20] != BOLT_MAGIC {
            return Err(fail(
                "not a bbolt database (bad magic number in the meta page)".into(),
            ));
        }
        let digest = self.hasher.finalize();
        if digest.as_slice() != self.tail.as_slice() {
            return Err(fail(format!(
                "appended SHA-256 {} does not match the database's {}",
                hex::encode(&self.tail),
                hex::encode(digest)
            )));
        }
        Ok(SnapshotDigest {
            sha256: hex::encode(digest),
            db_size: self.db_size,
        })
    }
}

/// Reads a snapshot to the end and verifies it (bbolt magic, the appended
/// SHA-256).
///
/// # Errors
/// [`Error::Verification`] naming what is wrong; read errors.
pub async fn verify_snapshot<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    what: &str,
) -> Result<SnapshotDigest> {
    let mut checker = Checker::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| dr_storage::Error::from_io(e, what.to_string()))?;
        if n == 0 {
            break;
        }
        checker.update(&buf[..n]);
    }
    checker.finish(what)
}

/// Backs up etcd (kind `etcd`) with a snapshot of one member.
#[derive(Clone)]
pub struct EtcdSnapshot {
    endpoints: Vec<String>,
    user: Option<(String, SecretString)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for EtcdSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSnapshot")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|u| &u.0))
            .finish()
    }
}

impl std::fmt::Display for EtcdSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd at {}", self.endpoints.join(","))
    }
}

impl EtcdSnapshot {
    /// A source over `endpoints` (client URLs).
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdSnapshot {
            endpoints,
            user: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Authenticates as `user`.
    pub fn with_user(mut self, user: &str, password: SecretString) -> Self {
        self.user = Some((user.to_string(), password));
        self
    }

    /// `dr check` of this source (named `name`): one line per endpoint, OK
    /// with the member's version and database size when it answers
    /// `Status`; one that does not is a WARN while another answers (the
    /// snapshot is taken from the first that does), a FAIL when none does.
    pub async fn check(&self, name: &str) -> Vec<dr_core::setup_check::Finding> {
        use dr_core::setup_check::Finding;
        let subject = format!("source {name}");
        if self.endpoints.is_empty() {
            return vec![Finding::fail(
                &subject,
                "reachable",
                "no endpoint configured",
                "set endpoints = [\"https://...:2379\"]",
            )];
        }
        let mut answers = Vec::new();
        for endpoint in &self.endpoints {
            let status = match self.connect(endpoint).await {
                Ok(mut client) => client.status().await.map_err(|source| Error::Etcd {
                    what: format!("status on {endpoint}"),
                    source: Box::new(source),
                }),
                Err(e) => Err(e),
            };
            answers.push((endpoint, status));
        }
        let any_up = answers.iter().any(|(_, s)| s.is_ok());
        answers
            .into_iter()
            .map(|(endpoint, status)| match status {
                Ok(s) => Finding::ok(
                    &subject,
                    "reachable",
                    format!(
                        "{endpoint}: etcd {}, database {} bytes",
                        s.version(),
                        s.db_size()
                    ),
                ),
                Err(e) if any_up => Finding::warn(
                    &subject,
                    "reachable",
                    format!("{endpoint}: {}", dr_core::error_chain(&e)),
                    "snapshots come from another endpoint; check this member",
                ),
                Err(e) => Finding::fail(
                    &subject,
                    "reachable",
                    format!("{endpoint}: {}", dr_core::error_chain(&e)),
                    "check the endpoints, TLS and the user's credentials",
                ),
            })
            .collect()
    }

    async fn connect(&self, endpoint: &str) -> Result<Client> {
        let mut options = ConnectOptions::new().with_connect_timeout(self.connect_timeout);
        if let Some((u, p)) = &self.user {
            options = options.with_user(u.clone(), p.expose_secret().to_string());
        }
        Client::connect([endpoint], Some(options))
            .await
            .map_err(|source| Error::Etcd {
                what: format!("connect to {endpoint}"),
                source: Box::new(source),
            })
    }

    async fn take(&self, backup: &BackupWriter) -> Result<EtcdMetadata> {
        let mut last = None;
        for endpoint in &self.endpoints {
            match self.connect(endpoint).await {
                Ok(client) => return self.take_from(endpoint, client, backup).await,
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "etcd endpoint unavailable; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidConfig {
            key: "endpoints".into(),
            reason: "no etcd endpoint given".into(),
        }))
    }

    async fn take_from(
        &self,
        endpoint: &str,
        mut client: Client,
        backup: &BackupWriter,
    ) -> Result<EtcdMetadata> {
        let etcd = |what: &str| {
            let what = format!("{what} on {endpoint}");
            move |source| Error::Etcd {
                what,
                source: Box::new(source),
            }
        };
        let status = client.status().await.map_err(etcd("status"))?;
        let mut stream = client.snapshot().await.map_err(etcd("snapshot"))?;
        let mut artifact = backup.artifact(SNAPSHOT_ARTIFACT)?;
        let mut checker = Checker::default();
        // etcd 3.4 sends no header with the snapshot; the status read just
        // before gives the revision the snapshot holds at least.
        let mut header = status
            .header()
            .map(|h| (h.cluster_id(), h.member_id(), h.revision()));
        let mut from_stream = false;
        while let Some(msg) = stream.message().await.map_err(etcd("snapshot stream"))? {
            if !from_stream {
                if let Some(h) = msg.header().filter(|h| h.revision() > 0) {
                    header = Some((h.cluster_id(), h.member_id(), h.revision()));
                }
                from_stream = true;
            }
            checker.update(msg.blob());
            artifact
                .writer()
                .write_all(msg.blob())
                .await
                .map_err(|e| dr_storage::Error::from_io(e, SNAPSHOT_ARTIFACT.to_string()))?;
        }
        let digest = match checker.finish(&format!("etcd snapshot from {endpoint}")) {
            Ok(d) => d,
            Err(e) => {
                artifact.abort().await;
                return Err(e);
            }
        };
        artifact.finish().await?;
        let (cluster_id, member_id, revision) = header.unwrap_or_default();
        let hash_kv = client
            .hash_kv(revision)
            .await
            .map_err(etcd("hashkv"))?
            .hash();
        tracing::info!(%endpoint, revision, db_size = digest.db_size, "etcd snapshot taken and verified");
        Ok(EtcdMetadata {
            endpoint: endpoint.to_string(),
            server_version: status.version().to_string(),
            cluster_id,
            member_id,
            revision,
            hash_kv,
            snapshot_sha256: digest.sha256,
            db_size: digest.db_size,
        })
    }
}

#[async_trait]
impl dr_core::BackupSource for EtcdSnapshot {
    fn kind(&self) -> &'static str {
        KIND_ETCD
    }

    async fn backup(&self, backup: &BackupWriter) -> dr_core::Result<serde_json::Value> {
        Ok(serde_json::to_value(self.take(backup).await?).expect("metadata serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(db: &[u8]) -> Vec<u8> {
        let mut v = db.to_vec();
        v.extend_from_slice(&Sha256::digest(db));
        v
    }

    fn fake_db() -> Vec<u8> {
        let mut db = vec![0u8; 4096];
        db[16..20].copy_from_slice(&BOLT_MAGIC);
        db[100] = 7;
        db
    }

    #[tokio::test]
    async fn a_good_snapshot_verifies_in_any_chunking() {
        let snap = snapshot(&fake_db());
        let d = verify_snapshot(&mut &snap[..], "s").await.unwrap();
        assert_eq!(d.db_size, 4096);
        assert_eq!(d.sha256, hex::encode(Sha256::digest(fake_db())));
        let mut c = Checker::default();
        for chunk in snap.chunks(7) {
            c.update(chunk);
        }
        assert_eq!(c.finish("s").unwrap(), d);
    }

    #[tokio::test]
    async fn flipped_truncated_and_foreign_data_fail() {
        let mut snap = snapshot(&fake_db());
        snap[200] ^= 1;
        assert!(matches!(
            verify_snapshot(&mut &snap[..], "s").await,
            Err(Error::Verification { .. })
        ));
        let snap = snapshot(&fake_db());
        assert!(verify_snapshot(&mut &snap[..snap.len() - 1], "s")
            .await
            .is_err());
        let mut db = fake_db();
        db[16] = 0;
        assert!(verify_snapshot(&mut &snapshot(&db)[..], "s").await.is_err());
    }

    #[test]
    fn config_requires_endpoints_and_rejects_typos() {
        let c: EtcdSourceConfig =
            serde_json::from_value(serde_json::json!({"endpoints": []})).unwrap();
        assert!(matches!(c.source(), Err(Error::InvalidConfig { key, .. }) if key == "endpoints"));
        assert!(
            serde_json::from_value::<EtcdSourceConfig>(serde_json::json!({"endpoint": "x"}))
                .is_err()
        );
    }
}
