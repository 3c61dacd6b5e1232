//! The checks of a raft snapshot archive, run on the bytes as they stream.
//!
//! A Vault/OpenBao raft snapshot (`GET /v1/sys/storage/raft/snapshot`) is a
//! gzip'd tar of exactly four files, written by `physical/raft/snapshot.go` of
//! Vault and OpenBao: `meta.json` (the hashicorp/raft `SnapshotMeta`),
//! `state.bin` (the FSM state), `SHA256SUMS` (the `sha256sum` lines of the two
//! files before it) and `SHA256SUMS.sealed` (those sums encrypted with the
//! cluster's keyring, which the server checks on restore).
//!
//! The checks:
//! - the archive is a complete gzip stream (its CRC is checked) holding a
//!   complete tar;
//! - it holds exactly the four members, each once, each a regular file;
//! - the SHA-256 of `meta.json` and `state.bin` match `SHA256SUMS`, which
//!   lists exactly those two;
//! - `SHA256SUMS.sealed` is non-empty;
//! - `meta.json` parses, and its `Size` equals the size of `state.bin`.
//!
//! [`ArchiveChecker`] runs them on a blocking thread fed by a bounded channel,
//! so a snapshot is checked while it is uploaded, in constant memory.

use std::collections::BTreeMap;
use std::io::{self, Read};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Result, VaultError};

/// The members of a raft snapshot archive, in the order Vault writes them.
pub const MEMBERS: [&str; 4] = ["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"];

/// Bounds for the small members (a `meta.json` of a large cluster is a few KiB).
const SMALL_MEMBER_LIMIT: u64 = 1 << 20;

/// What a valid snapshot archive says about itself; recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotFacts {
    /// The raft index of the snapshot (`meta.json` `Index`).
    pub raft_index: u64,
    /// The raft term of the snapshot (`meta.json` `Term`).
    pub raft_term: u64,
    /// The snapshot id (`meta.json` `ID`).
    pub snapshot_id: String,
    /// The raft snapshot format version (`meta.json` `Version`).
    pub snapshot_version: u64,
    /// The raft servers (ids) in the snapshot's configuration.
    pub raft_servers: Vec<String>,
    /// The size of `state.bin`.
    pub state_size: u64,
    /// The SHA-256 of `state.bin`, hex.
    pub state_sha256: String,
    /// The size of the gzip'd archive.
    pub archive_size: u64,
}

/// hashicorp/raft `SnapshotMeta` as Vault serializes it into `meta.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RaftMeta {
    #[serde(default)]
    version: u64,
    #[serde(rename = "ID", default)]
    id: String,
    index: u64,
    term: u64,
    size: u64,
    #[serde(default)]
    configuration: Option<RaftConfiguration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfiguration {
    #[serde(default)]
    servers: Option<Vec<RaftServer>>,
}

#[derive(Debug, Deserialize)]
struct RaftServer {
    #[serde(rename = "ID", default)]
    id: String,
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Runs every check on the archive read from `reader` to its end.
///
/// `what` names the archive in errors (`GET http://127.0.0.1:8200`, an object).
///
/// # Errors
/// [`VaultError::Archive`] naming the failed check.
pub fn check_archive<R: Read>(what: &str, reader: R) -> Result<SnapshotFacts> {
    let bad = |reason: String| VaultError::Archive {
        what: what.to_string(),
        reason,
    };
    let read_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad("the archive is truncated (the gzip or tar stream ends early)".into())
        } else {
            bad(format!("the archive does not decode as gzip'd tar: {e}"))
        }
    };
    let mut reader = io::BufReader::with_capacity(64 * 1024, reader);
    if io::BufRead::fill_buf(&mut reader)
        .map_err(|e| bad(format!("cannot read the archive: {e}")))?
        .is_empty()
    {
        return Err(bad("the snapshot is empty (0 bytes)".into()));
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(Counting {
        inner: reader,
        count: 0,
    }));
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut meta: Option<(Vec<u8>, String)> = None;
    let mut state: Option<(u64, String)> = None;
    let mut sums: Option<String> = None;
    let mut sealed_len: Option<u64> = None;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !MEMBERS.contains(&name.as_str()) {
            return Err(bad(format!(
                "unknown member {name:?}; a raft snapshot holds exactly {}",
                MEMBERS.join(", ")
            )));
        }
        if seen.insert(name.clone(), ()).is_some() {
            return Err(bad(format!("member {name} appears twice")));
        }
        if !entry.header().entry_type().is_file() {
            return Err(bad(format!("member {name} is not a regular file")));
        }
        match name.as_str() {
            "meta.json" => {
                let bytes =
                    read_small(&mut entry, &name).map_err(|e| member_err(what, &name, e))?;
                let sum = hex::encode(Sha256::digest(&bytes));
                meta = Some((bytes, sum));
            }
            "state.bin" => {
                let mut hasher = Sha256::new();
                let n = io::copy(&mut entry, &mut HashWriter(&mut hasher))
                    .map_err(|e| member_err(what, &name, e))?;
                state = Some((n, hex::encode(hasher.finalize())));
            }
            "SHA256SUMS" => {
                let bytes =
                    read_small(&mut entry, &name).map_err(|e| member_err(what, &name, e))?;
                sums = Some(
                    String::from_utf8(bytes)
                        .map_err(|_| bad("SHA256SUMS is not UTF-8 text".into()))?,
                );
            }
            _ => {
                let n = io::copy(&mut entry, &mut io::sink())
                    .map_err(|e| member_err(what, &name, e))?;
                sealed_len = Some(n);
            }
        }
    }
    // Read the gzip stream to its end: the trailer's CRC-32 and length are
    // checked only there.
    let mut gz = archive.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(read_err)?;
    let archive_size = gz.into_inner().count;
    let missing: Vec<&str> = MEMBERS
        .iter()
        .copied()
        .filter(|m| !seen.contains_key(*m))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!("missing member(s) {}", missing.join(", "))));
    }
    let (meta_bytes, meta_sum) = meta.expect("seen");
    let (state_size, state_sum) = state.expect("seen");
    let listed = parse_sums(&sums.expect("seen")).map_err(bad)?;
    for (file, actual) in [("meta.json", &meta_sum), ("state.bin", &state_sum)] {
        match listed.get(file) {
            None => return Err(bad(format!("SHA256SUMS does not list {file}"))),
            Some(expected) if expected != actual => {
                return Err(bad(format!(
                    "SHA-256 of {file} is {actual}, SHA256SUMS says {expected}"
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(other) = listed
        .keys()
        .find(|k| *k != "meta.json" && *k != "state.bin")
    {
        return Err(bad(format!("SHA256SUMS lists an unknown file {other:?}")));
    }
    if sealed_len == Some(0) {
        return Err(bad("SHA256SUMS.sealed is empty".into()));
    }
    let meta: RaftMeta = serde_json::from_slice(&meta_bytes)
        .map_err(|e| bad(format!("meta.json is not a raft snapshot meta: {e}")))?;
    if meta.size != state_size {
        return Err(bad(format!(
            "meta.json says state.bin has {} bytes, it has {state_size}",
            meta.size
        )));
    }
    Ok(SnapshotFacts {
        raft_index: meta.index,
        raft_term: meta.term,
        snapshot_id: meta.id,
        snapshot_version: meta.version,
        raft_servers: meta
            .configuration
            .and_then(|c| c.servers)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.id)
            .collect(),
        state_size,
        state_sha256: state_sum,
        archive_size,
    })
}

fn member_err(what: &str, name: &str, e: io::Error) -> VaultError {
    VaultError::Archive {
        what: what.to_string(),
        reason: if e.kind() == io::ErrorKind::UnexpectedEof {
            format!("the archive is truncated inside {name}")
        } else {
            format!("cannot read {name}: {e}")
        },
    }
}

fn read_small(r: &mut impl Read, name: &str) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(SMALL_MEMBER_LIMIT + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > SMALL_MEMBER_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is larger than {SMALL_MEMBER_LIMIT} bytes"),
        ));
    }
    Ok(buf)
}

/// Parses `sha256sum` output: `<64 hex>  <name>` (or ` *<name>`) per line.
fn parse_sums(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (sum, rest) = line
            .split_once(' ')
            .ok_or_else(|| format!("SHA256SUMS line {} is not `<sha256>  <file>`", i + 1))?;
        let name = rest.trim_start_matches(' ').trim_start_matches('*');
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("SHA256SUMS line {} has no SHA-256", i + 1));
        }
        if out
            .insert(name.to_string(), sum.to_ascii_lowercase())
            .is_some()
        {
            return Err(format!("SHA256SUMS lists {name} twice"));
        }
    }
    Ok(out)
}

struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A [`Read`] over chunks sent through a channel (on a blocking thread).
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Runs [`check_archive`] on a blocking thread over chunks fed to it, so
/// that a stream is checked while it is written elsewhere.
#[derive(Debug)]
pub struct ArchiveChecker {
    tx: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<Result<SnapshotFacts>>,
}

impl ArchiveChecker {
    /// Starts a checker; `what` names the archive in errors.
    pub fn start(what: impl Into<String>) -> Self {
        let what = what.into();
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::task::spawn_blocking(move || {
            check_archive(
                &what,
                ChannelReader {
                    rx,
                    current: Bytes::new(),
                },
            )
        });
        ArchiveChecker { tx: Some(tx), task }
    }

    /// Feeds the next chunk. Returns `false` when the checker has stopped
    /// (it found an error): call [`ArchiveChecker::finish`] to get it.
    pub async fn feed(&mut self, chunk: Bytes) -> bool {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        }
    }

    /// Ends the input and returns the outcome of the checks.
    ///
    /// # Errors
    /// [`VaultError::Archive`] naming the failed check.
    pub async fn finish(mut self) -> Result<SnapshotFacts> {
        self.tx.take();
        self.task.await.map_err(|e| VaultError::Archive {
            what: "snapshot".into(),
            reason: format!("the checker failed: {e}"),
        })?
    }
}

/// Runs the checks on an [`tokio::io::AsyncRead`] to its end (a stored artifact).
///
/// # Errors
/// [`VaultError::Archive`]; errors of `reader` (a decryption or digest error
/// of the repository) as [`VaultError::Storage`].
pub async fn check_async<R: tokio::io::AsyncRead + Unpin>(
    what: &str,
    reader: &mut R,
) -> Result<SnapshotFacts> {
    let mut checker = ArchiveChecker::start(what);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                drop(checker);
                return Err(dr_storage::Error::from_io(e, what.to_string()).into());
            }
        };
        if n == 0 {
            break;
        }
        if !checker.feed(Bytes::copy_from_slice(&buf[..n])).await {
            break;
        }
    }
    checker.finish().await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a snapshot archive from `(name, content)` members.
    pub(crate) fn build(members: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.append_data(&mut h, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    /// A valid snapshot with `state` as `state.bin`.
    pub(crate) fn valid_members(state: &[u8]) -> Vec<(String, Vec<u8>)> {
        let meta = format!(
            r#"{{"Version":1,"ID":"bolt-snapshot","Index":42,"Term":7,"Peers":null,"Configuration":{{"Servers":[{{"Suffrage":0,"ID":"node-a","Address":"127.0.0.1:8201"}}]}},"ConfigurationIndex":1,"Size":{}}}"#,
            state.len()
        );
        let sums = format!(
            "{}  meta.json\n{}  state.bin\n",
            hex::encode(Sha256::digest(meta.as_bytes())),
            hex::encode(Sha256::digest(state))
        );
        vec![
            ("meta.json".into(), meta.into_bytes()),
            ("state.bin".into(), state.to_vec()),
            ("SHA256SUMS".into(), sums.into_bytes()),
            ("SHA256SUMS.sealed".into(), b"\x0a\xb4sealed-sums".to_vec()),
        ]
    }

    pub(crate) fn valid(state: &[u8]) -> Vec<u8> {
        let m = valid_members(state);
        build(
            &m.iter()
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect::<Vec<_>>(),
        )
    }

    fn reason(bytes: &[u8]) -> String {
        match check_archive("test", bytes) {
            Err(VaultError::Archive { reason, .. }) => reason,
            other => panic!("expected an archive error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_archive_yields_its_facts() {
        let f = check_archive("test", &valid(b"state bytes")[..]).unwrap();
        assert_eq!((f.raft_index, f.raft_term), (42, 7));
        assert_eq!(f.raft_servers, vec!["node-a".to_string()]);
        assert_eq!(f.state_size, 11);
        assert_eq!(f.state_sha256, hex::encode(Sha256::digest(b"state bytes")));
    }

    #[test]
    fn empty_input_is_refused() {
        assert!(reason(b"").contains("empty"), "{}", reason(b""));
    }

    #[test]
    fn truncated_archives_are_refused_at_every_cut() {
        let ok = valid(&vec![7u8; 100_000]);
        for cut in [
            1,
            10,
            ok.len() / 3,
            ok.len() / 2,
            ok.len() - 9,
            ok.len() - 1,
        ] {
            let r = reason(&ok[..cut]);
            assert!(
                r.contains("truncated") || r.contains("decode"),
                "cut at {cut}: {r}"
            );
        }
    }

    #[test]
    fn a_wrong_sum_is_refused() {
        let mut m = valid_members(b"state");
        m[1].1 = b"STATE".to_vec();
        let r = reason(&build(
            &m.iter()
                .map(|(n, d)| (n.as_str(), d.as_slice()))
                .collect::<Vec<_>>(),
        ));
        assert!(r.contains("SHA-256 of state.bin"), "{r}");
    }

    #[test]
    fn unknown_missing_duplicate_and_empty_members_are_refused() {
        let m = valid_members(b"state");
        let refs: Vec<(&str, &[u8])> = m.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let mut extra = refs.clone();
        extra.push(("evil.sh", b"x"));
        assert!(reason(&build(&extra)).contains("unknown member \"evil.sh\""));
        assert!(reason(&build(&refs[..3])).contains("missing member(s) SHA256SUMS.sealed"));
        let mut dup = refs.clone();
        dup.insert(1, refs[0]);
        assert!(reason(&build(&dup)).contains("twice"));
        let mut empty_sealed = refs.clone();
        empty_sealed[3] = ("SHA256SUMS.sealed", b"");
        assert!(reason(&build(&empty_sealed)).contains("SHA256SUMS.sealed is empty"));
    }

    #[test]
    fn sums_must_list_exactly_the_two_files_and_meta_must_match() {
        let m = valid_members(b"state");
        let mut refs: Vec<(&str, &[u8])> =
            m.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let partial = String::from_utf8(m[2].1.clone())
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
            + "\n";
        refs[2] = ("SHA256SUMS", partial.as_bytes());
        assert!(reason(&build(&refs)).contains("does not list state.bin"));

        let bad_meta = br#"{"Index":1,"Term":1,"Size":999}"#;
        let sums = format!(
            "{}  meta.json\n{}  state.bin\n",
            hex::encode(Sha256::digest(bad_meta)),
            hex::encode(Sha256::digest(b"state"))
        );
        let refs = vec![
            ("meta.json", &bad_meta[..]),
            ("state.bin", &b"state"[..]),
            ("SHA256SUMS", sums.as_bytes()),
            ("SHA256SUMS.sealed", &b"s"[..]),
        ];
        assert!(reason(&build(&refs)).contains("meta.json says state.bin has 999 bytes"));
    }

    #[test]
    fn not_gzip_is_refused() {
        let r = reason(b"this is not a gzip stream at all");
        assert!(r.contains("decode"), "{r}");
    }

    #[test]
    fn a_flipped_byte_is_found() {
        let ok = valid(&vec![3u8; 50_000]);
        let mut bad = ok.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(check_archive("test", &bad[..]).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_checker_runs_over_fed_chunks() {
        let ok = valid(&vec![5u8; 300_000]);
        let mut c = ArchiveChecker::start("chunks");
        for chunk in ok.chunks(1000) {
            assert!(c.feed(Bytes::copy_from_slice(chunk)).await);
        }
        assert_eq!(c.finish().await.unwrap().state_size, 300_000);

        let mut c = ArchiveChecker::start("chunks");
        let mut w = Vec::new();
        w.write_all(&ok[..ok.len() - 100]).unwrap();
        for chunk in w.chunks(1000) {
            if !c.feed(Bytes::copy_from_slice(chunk)).await {
                break;
            }
        }
        assert!(matches!(c.finish().await, Err(VaultError::Archive { .. })));
    }
}
