//! Manifests: the commit point of a backup, and the digest that protects
//! them and `dr-repo.json` (see [`Manifest`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::ArtifactInfo;
use crate::error::{Error, Result};

/// The manifest format this build writes: 2, a manifest with a
/// [`Manifest::digest`]. Version 1 (no digest) is still read.
pub const MANIFEST_VERSION: u32 = 2;

/// The first manifest format version that must carry a digest.
const FIRST_DIGESTED_VERSION: u32 = 2;

/// The prefix of a digest value: the algorithm.
const DIGEST_PREFIX: &str = "sha256:";

/// The name of the digest field in a protected JSON document.
const DIGEST_FIELD: &str = "digest";

/// Which source a backup came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRef {
    /// The source kind (`postgres-logical`, `postgres-physical`, `vault`, ...).
    pub kind: String,
    /// The configured source name; the repository groups backups by it.
    pub name: String,
}

/// How the artifacts were encoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodecInfo {
    /// Always `zstd` in this format version.
    pub compression: String,
    /// The zstd level used.
    pub zstd_level: i32,
    /// Always `age-x25519` in this format version.
    pub encryption: String,
}

/// `backups/<source>/<backup-id>/manifest.json`: written last, with a
/// conditional create, never overwritten. A backup exists exactly when its
/// manifest does. Readable without any key; its [`digest`](Manifest::digest)
/// is checked on every read.
///
/// # Digests
/// A manifest (format version 2 on) and `dr-repo.json` carry a `"digest"`
/// field: `sha256:` and the hex SHA-256 of the document's *canonical form*
/// without that field. The canonical form is the document as a JSON value,
/// written with no whitespace, object keys sorted by their UTF-8 bytes, and
/// strings and numbers as `serde_json` writes them (RFC 8785's idea, not its
/// exact number format: a reader and a writer of dr agree). Every read checks
/// it, so a flipped digit in a row count, a time or an LSN is found without
/// any key, and reported as [`Error::Corrupt`] naming the object.
///
/// The repository id a manifest records is not compared with
/// `dr-repo.json`'s: `dr repo sync` (issue 15) copies manifests as stored
/// bytes into repositories with their own ids. `dr-repo.json` is protected by
/// its own digest instead ([`crate::RepoConfig::digest`]).
///
/// Format compatibility: a version 1 manifest (written before digests) has no
/// digest and is read without one: it is *unprotected*
/// ([`Manifest::digest`] is `None`). A version 2 manifest without a digest is
/// damage (a flip in the field's name or its removal), as is any unknown
/// field. A manifest of a newer version than [`MANIFEST_VERSION`] is refused
/// ([`Error::UnsupportedFormat`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] at the time of writing.
    pub format_version: u32,
    /// The `dr` version that wrote the backup.
    pub tool_version: String,
    /// The repository the backup belongs to.
    pub repository_id: String,
    /// Sortable UTC timestamp plus a random suffix: `20261129T140502Z-3fa9c1`.
    pub backup_id: String,
    /// The source.
    pub source: SourceRef,
    /// When the backup started (UTC).
    pub started_at: DateTime<Utc>,
    /// When the last artifact was stored (UTC).
    pub finished_at: DateTime<Utc>,
    /// The codec.
    pub codec: CodecInfo,
    /// Fingerprints of the recipients the artifacts are encrypted to.
    pub recipients: Vec<String>,
    /// The stored streams, each with sizes and SHA-256.
    pub artifacts: Vec<ArtifactInfo>,
    /// What the source recorded (server version, LSNs, row counts, ...).
    pub metadata: serde_json::Value,
    /// `sha256:<hex>` of the canonical form of every other field (see [`Manifest`]). `None` only for a version 1 manifest, written before
    /// digests: such a manifest is read unprotected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Manifest {
    /// The artifact called `name`.
    pub fn artifact(&self, name: &str) -> Option<&ArtifactInfo> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Total stored bytes of all artifacts.
    pub fn stored_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.stored_size).sum()
    }

    /// Total plaintext bytes of all artifacts.
    pub fn plain_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.plain_size).sum()
    }

    /// Wall time of the backup.
    pub fn duration(&self) -> chrono::Duration {
        self.finished_at - self.started_at
    }

    /// Whether this manifest carries a digest (false only for a version 1
    /// manifest, read without an integrity check).
    pub fn is_protected(&self) -> bool {
        self.digest.is_some()
    }

    /// This manifest with [`Manifest::digest`] set to the digest of its other
    /// fields (whatever it held before).
    pub fn sealed(mut self) -> Self {
        self.digest = None;
        let value = serde_json::to_value(&self).expect("a manifest serialises");
        self.digest = Some(digest_of(&value));
        self
    }

    /// The bytes stored as `manifest.json`: pretty JSON of
    /// [`Manifest::sealed`].
    pub fn to_stored_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.clone().sealed()).expect("a manifest serialises")
    }

    /// Parses and checks the stored bytes of the manifest `object`.
    ///
    /// # Errors
    /// [`Error::Format`] when it is not JSON or not a manifest (an unknown
    /// field included); [`Error::UnsupportedFormat`] (its `location` is
    /// `object`) for a newer format version; [`Error::Corrupt`] naming
    /// `object` when the digest does not match, or is missing from a
    /// version 2 manifest.
    pub fn from_stored(object: &str, bytes: &[u8]) -> Result<Self> {
        let format = |source| Error::Format {
            object: object.to_string(),
            what: "manifest",
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(format)?;
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if version == 0 {
            return Err(Error::Corrupt {
                object: object.to_string(),
                reason: "its format_version is missing or not a positive number".into(),
            });
        }
        if version > u64::from(MANIFEST_VERSION) {
            return Err(Error::UnsupportedFormat {
                location: object.to_string(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: MANIFEST_VERSION,
            });
        }
        let digested = check_digest(object, &value)?;
        if !digested && version >= u64::from(FIRST_DIGESTED_VERSION) {
            return Err(Error::Corrupt {
                object: object.to_string(),
                reason: format!(
                    "a format version {version} manifest must carry a digest and this one has none"
                ),
            });
        }
        serde_json::from_value(value).map_err(format)
    }
}

/// `sha256:<hex>` of the canonical form of `value` without its top-level
/// `digest` field (see [`Manifest`]).
pub(crate) fn digest_of(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    match value {
        serde_json::Value::Object(map) => {
            let mut without = map.clone();
            without.remove(DIGEST_FIELD);
            write_canonical(&serde_json::Value::Object(without), &mut out);
        }
        other => write_canonical(other, &mut out),
    }
    format!("{DIGEST_PREFIX}{}", hex::encode(Sha256::digest(&out)))
}

/// Checks the `digest` field of the JSON document `object`, when it has one.
/// Returns whether it had one.
///
/// # Errors
/// [`Error::Corrupt`] naming `object` when the digest is not a `sha256:`
/// digest or does not match the document.
pub(crate) fn check_digest(object: &str, value: &serde_json::Value) -> Result<bool> {
    let Some(recorded) = value.get(DIGEST_FIELD) else {
        return Ok(false);
    };
    let corrupt = |reason: String| Error::Corrupt {
        object: object.to_string(),
        reason,
    };
    let Some(recorded) = recorded.as_str() else {
        return Err(corrupt(format!("its digest {recorded} is not a string")));
    };
    if !recorded.starts_with(DIGEST_PREFIX) {
        return Err(corrupt(format!(
            "its digest {recorded:?} is not a {DIGEST_PREFIX} digest"
        )));
    }
    let computed = digest_of(value);
    if computed != recorded {
        return Err(corrupt(format!(
            "its content does not match its digest (recorded {recorded}, content {computed}): \
             the document was changed or damaged after it was written"
        )));
    }
    Ok(true)
}

/// Writes `v` in canonical form: no whitespace, object keys sorted by bytes.
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(map) => {
            out.push(b'{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec");
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec"),
    }
}

/// Makes a new backup id for a backup starting at `at`.
pub fn new_backup_id(at: DateTime<Utc>) -> String {
    let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
    format!("{}-{suffix:06x}", at.format("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_add_up_over_artifacts_and_duration_is_wall_time() {
        let artifact = |name: &str, plain, stored| ArtifactInfo {
            name: name.into(),
            object: format!("backups/db/x/{name}.zst.age"),
            plain_size: plain,
            plain_sha256: String::new(),
            stored_size: stored,
            stored_sha256: String::new(),
        };
        let m = Manifest {
            format_version: crate::FORMAT_VERSION,
            tool_version: "test".into(),
            repository_id: "r".into(),
            backup_id: "x".into(),
            source: SourceRef {
                kind: "test".into(),
                name: "db".into(),
            },
            started_at: "2026-01-02T03:04:05Z".parse().unwrap(),
            finished_at: "2026-01-02T03:05:35.5Z".parse().unwrap(),
            codec: CodecInfo {
                compression: "zstd".into(),
                zstd_level: 3,
                encryption: "age".into(),
            },
            recipients: vec![],
            artifacts: vec![artifact("a", 1000, 300), artifact("b", 24, 77)],
            metadata: serde_json::json!({}),
            digest: None,
        };
        assert_eq!(m.stored_size(), 377);
        assert_eq!(m.plain_size(), 1024);
        assert_eq!(m.duration(), chrono::Duration::milliseconds(90_500));
        assert_eq!(m.artifact("b").map(|a| a.stored_size), Some(77));
        assert!(m.artifact("c").is_none());
    }

    /// The canonical form the README documents ("keys sorted, no
    /// whitespace"), what `jq -cS 'del(.digest)'` prints: anyone can
    /// recompute a digest without dr.
    #[test]
    fn the_canonical_form_is_sorted_keys_and_no_whitespace() {
        let v = serde_json::json!({
            "b": {"d": "x y", "c": null},
            "a": [1, 2, {"z": true, "y": [3]}],
            "digest": "sha256:ignored"
        });
        let mut out = Vec::new();
        write_canonical(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":[1,2,{"y":[3],"z":true}],"b":{"c":null,"d":"x y"},"digest":"sha256:ignored"}"#
        );
        use sha2::Digest as _;
        let expected =
            sha2::Sha256::digest(br#"{"a":[1,2,{"y":[3],"z":true}],"b":{"c":null,"d":"x y"}}"#);
        assert_eq!(digest_of(&v), format!("sha256:{}", hex::encode(expected)));
    }

    #[test]
    fn backup_ids_sort_by_time() {
        let a = new_backup_id("2026-01-02T03:04:05Z".parse().unwrap());
        let b = new_backup_id("2026-01-02T03:04:06Z".parse().unwrap());
        assert!(a.starts_with("20260102T030405Z-"));
        assert_eq!(a.len(), "20260102T030405Z-abcdef".len());
        assert!(a < b);
    }
}
