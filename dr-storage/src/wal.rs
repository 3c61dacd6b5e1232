//! Archived PostgreSQL WAL in the repository.
//!
//! Layout (like pgBackRest's archive, so an identical re-push is recognised
//! from the object name alone, without any key):
//! ```text
//! wal/<source>/archive.json                                   the system identifier this source archives
//! wal/<source>/<system-id>/<first 16 hex of name>/<name>-<sha256>.zst.age   segments, .partial, .backup
//! wal/<source>/<system-id>/history/<name>-<sha256>.zst.age                  timeline .history files
//! ```
//! `<sha256>` is the SHA-256 of the plaintext. Objects are written with a
//! conditional create and never overwritten (PostgreSQL 15 docs §26.3.1: "the
//! archive command should generally be designed to refuse to overwrite any
//! pre-existing archive file").
//!
//! The digest in the object name lets an identical re-push be recognised,
//! but it also means two pushes of *different* content for one name write two
//! different objects, which no create-only write can refuse. So the first
//! writer of a *name* wins with a claim, written with a conditional create
//! before the data object:
//! ```text
//! wal/<source>/<system-id>/<dir>/<name>.claim      {"name": ..., "plain_sha256": ..., "claimed_at": ...}
//! ```
//! A push whose content differs from the claimed one is a
//! [`PushOutcome::Conflict`] and writes nothing; the same content (a retry,
//! a concurrent push of the same file, or a push after one that stopped
//! between its claim and its data) goes on and stores or finds the data
//! object. Claims are never read to serve WAL: an archive written before
//! claims (data objects only) reads as before, and a name that got two
//! contents there is reported by [`WalArchive::conflicts`]. Prune removes a
//! claim before its data object ([`wal_claim_path`]).
//!
//! What the WAL of a segment does outside the data directory is recorded
//! beside it, in plaintext (no key needed to read it), by `wal-push`:
//! ```text
//! wal/<source>/<system-id>/events/<segment name>.json   [{"kind": "tablespace_create", "oid": 16390,
//!                                                         "path": "/srv/ts2", "lsn": "0/3000060"}, ...]
//! ```
//! one JSON array of [`WalEvent`]s (tablespace creations and drops, in WAL
//! order), written with a conditional create and only for a segment that
//! holds at least one such record: a segment without an events object holds
//! none, or was archived by a `dr` before events were recorded. Replaying a
//! `CREATE TABLESPACE` record writes at the path in the record, outside the
//! restored data directory (PostgreSQL 15 docs §26.3.7 "Caveats": take a new
//! base backup after creating or dropping a tablespace), so `dr status`
//! reads these objects to warn when one lies after the newest base backup.
//! Prune removes a segment's events object before its data object
//! ([`wal_events_path`]); events objects are never WAL objects (not listed
//! by [`WalArchive::list`]).
//!
//! Pushing needs only the recipients in `dr-repo.json`; fetching needs a key.
//! A WAL object is small (one segment, 16 MiB by default), so it is encoded
//! in memory and stored with one conditional `PUT`.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{Error, Result};
use crate::keys::{Identities, Recipients};
use crate::repo::{validate_source_name, Repository};

/// The top-level prefix of archived WAL.
pub const WAL_PREFIX: &str = "wal";

/// The format of `archive.json` this build writes.
pub const WAL_ARCHIVE_VERSION: u32 = 1;

const STORED_SUFFIX: &str = ".zst.age";

const CLAIM_SUFFIX: &str = ".claim";

/// The directory of events objects under a system identifier (see the
/// module docs).
pub const EVENTS_DIR: &str = "events";

const EVENTS_SUFFIX: &str = ".json";

/// One WAL record of an archived segment whose replay acts outside the data
/// directory, as recorded in `events/<segment>.json` (see the module docs).
/// Serialised with a `kind` tag: `{"kind": "tablespace_create", "oid": ..,
/// "path": .., "lsn": ..}` or `{"kind": "tablespace_drop", "oid": ..,
/// "lsn": ..}`. `lsn` is where the record starts, PostgreSQL's `X/X` form.
/// Record layouts: PostgreSQL's `src/include/commands/tablespace.h`
/// (`xl_tblspc_create_rec`, `xl_tblspc_drop_rec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WalEvent {
    /// `XLOG_TBLSPC_CREATE`: `CREATE TABLESPACE`.
    TablespaceCreate {
        /// The tablespace's OID (0 when `continued` and not in this segment).
        oid: u32,
        /// The directory written in the record (when `continued`: as much of
        /// it as this segment holds, possibly nothing).
        path: String,
        /// Where the record starts.
        lsn: String,
        /// The record runs on into the next segment: it was recognised by
        /// its header, and `oid` and `path` may be incomplete. Absent
        /// (false) in records of older versions.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        continued: bool,
    },
    /// `XLOG_TBLSPC_DROP`: `DROP TABLESPACE`.
    TablespaceDrop {
        /// The tablespace's OID (0 when `continued` and not in this segment).
        oid: u32,
        /// Where the record starts.
        lsn: String,
        /// As for [`WalEvent::TablespaceCreate`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        continued: bool,
    },
}

impl WalEvent {
    /// Where the record starts (`X/X`).
    pub fn lsn(&self) -> &str {
        match self {
            WalEvent::TablespaceCreate { lsn, .. } | WalEvent::TablespaceDrop { lsn, .. } => lsn,
        }
    }
}

/// How many times [`WalArchive::push`] and [`WalArchive::fetch`] try when
/// the store fails transiently ([`Error::is_retryable`]: a connection reset
/// or a cut response, which `object_store` itself does not retry for
/// conditional creates and response bodies).
pub const WAL_ATTEMPTS: u32 = 4;

/// Runs `op` until it succeeds, fails for good, or [`WAL_ATTEMPTS`] tries
/// failed transiently, waiting 250 ms, then 1 s, then 4 s between them.
/// Only for operations that are safe to repeat: a push is (the first
/// writer's claim decides; the digest is in the object's name), a read is.
async fn retry_transient<T, F, Fut>(what: &str, name: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = std::time::Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.is_retryable() && attempt < WAL_ATTEMPTS => {
                tracing::info!(name, attempt, error = %e, "{what} WAL failed transiently; trying again");
                tokio::time::sleep(delay).await;
                delay *= 4;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Whether `name` is a full segment's name (24 hex digits): only those get
/// an events object.
fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The events object of the WAL data object `object`
/// (`wal/<source>/<system-id>/<dir>/<segment>-<sha256>.zst.age` ->
/// `wal/<source>/<system-id>/events/<segment>.json`); `None` when `object`
/// is not the data object of a full segment. Prune deletes it before the
/// data object, so that no events object outlives its segment.
pub fn wal_events_path(object: &str) -> Option<String> {
    let (dir, file) = object.rsplit_once('/')?;
    if !object.starts_with(&format!("{WAL_PREFIX}/")) {
        return None;
    }
    let (name, _) = parse_stored(file)?;
    if !is_segment_name(name) {
        return None;
    }
    let (sysdir, _) = dir.rsplit_once('/')?;
    Some(format!("{sysdir}/{EVENTS_DIR}/{name}{EVENTS_SUFFIX}"))
}

/// `<name>.claim`: which content the first push of a WAL file name stored.
/// Written once with a conditional create, before the data object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct WalClaim {
    /// The PostgreSQL file name.
    name: String,
    /// SHA-256 of the plaintext that owns the name, hex.
    plain_sha256: String,
    /// When the claim was made.
    claimed_at: DateTime<Utc>,
}

/// Whether this push owns the name, or which content does.
enum Claimed {
    /// The name is claimed for the pushed content (by this call or an
    /// earlier push of the same content).
    Ours,
    /// Another content owns the name.
    Other(WalClaim),
}

/// The claim object of the WAL data object `object`
/// (`.../<name>-<sha256>.zst.age` -> `.../<name>.claim`); `None` when
/// `object` is not a WAL data object. Prune deletes the claim before the data
/// object, so that an interruption leaves a data object without a claim (the
/// layout written before claims, read as before) and never a claim without
/// its data.
pub fn wal_claim_path(object: &str) -> Option<String> {
    let (dir, file) = object.rsplit_once('/')?;
    if !object.starts_with(&format!("{WAL_PREFIX}/")) {
        return None;
    }
    let (name, _) = parse_stored(file)?;
    Some(format!("{dir}/{name}{CLAIM_SUFFIX}"))
}

/// A WAL file name stored with two or more different contents (a split
/// brain: two clusters, or two servers after a failover, archiving into one
/// source). `wal-fetch` refuses such a name; an operator must remove the
/// wrong object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalConflict {
    /// The system identifier it is stored under.
    pub system_id: u64,
    /// The PostgreSQL file name.
    pub name: String,
    /// The stored objects of that name, one per content, sorted by digest.
    pub objects: Vec<WalObject>,
}

impl std::fmt::Display for WalConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shas: Vec<&str> = self
            .objects
            .iter()
            .map(|o| o.plain_sha256.as_str())
            .collect();
        write!(
            f,
            "WAL file {} of system {} is archived with {} different contents (sha256 {}): wal-fetch refuses it until the wrong object is removed",
            self.name,
            self.system_id,
            self.objects.len(),
            shas.join(", ")
        )
    }
}

/// `wal/<source>/archive.json`: which cluster a source's archive belongs to.
/// Written once, with a conditional create, by the first push.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WalArchiveInfo {
    /// [`WAL_ARCHIVE_VERSION`].
    pub format_version: u32,
    /// The source name.
    pub source: String,
    /// The PostgreSQL system identifier, decimal (a string: JSON numbers
    /// lose precision above 2^53).
    pub system_identifier: String,
    /// When the first push registered it.
    pub registered_at: DateTime<Utc>,
}

impl WalArchiveInfo {
    /// The system identifier as a number.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the recorded value is not a number.
    pub fn system_id(&self, object: &str) -> Result<u64> {
        self.system_identifier.parse().map_err(|_| Error::Corrupt {
            object: object.to_string(),
            reason: format!(
                "system_identifier {:?} is not a number",
                self.system_identifier
            ),
        })
    }
}

/// The outcome of [`WalArchive::register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// This call created `archive.json` for the system identifier.
    Created,
    /// `archive.json` already names this system identifier.
    Matches,
    /// `archive.json` names another cluster.
    Differs {
        /// The system identifier recorded there.
        registered: u64,
    },
}

/// One stored WAL object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalObject {
    /// The PostgreSQL file name (`000000010000000000000003`, `00000002.history`).
    pub name: String,
    /// SHA-256 of the plaintext, hex (from the object name).
    pub plain_sha256: String,
    /// The object path relative to the repository root.
    pub object: String,
    /// Stored bytes.
    pub stored_size: u64,
    /// When the store last modified it.
    pub last_modified: DateTime<Utc>,
}

/// The outcome of [`WalArchive::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The object was stored by this call.
    Stored(WalObject),
    /// An object with the same name and the same content was already there.
    AlreadyStored(WalObject),
    /// An object with the same name and other content is there; nothing was
    /// written.
    Conflict {
        /// What is stored.
        existing: WalObject,
        /// SHA-256 of the content that was pushed.
        pushed_sha256: String,
    },
}

/// Checks a WAL file name: 1 to 64 bytes of letters, digits and `.`, not
/// starting with `.`; anything but a `.history` file starts with 16 hex
/// digits (timeline and log number).
///
/// # Errors
/// [`Error::InvalidName`].
pub fn validate_wal_name(name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        what: "WAL file name",
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("must be 1 to 64 bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') || name.starts_with('.') {
        return Err(bad(
            "may contain only letters, digits and '.', and not start with '.'",
        ));
    }
    if !name.ends_with(".history")
        && (name.len() < 16 || !name.as_bytes()[..16].iter().all(u8::is_ascii_hexdigit))
    {
        return Err(bad(
            "must start with 16 hex digits (timeline and log) or be a .history file",
        ));
    }
    Ok(())
}

/// The directory of `name` under the system identifier.
fn wal_dir(name: &str) -> &str {
    if name.ends_with(".history") {
        "history"
    } else {
        &name[..16]
    }
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Splits a stored file name `<name>-<sha256>.zst.age`.
fn parse_stored(file: &str) -> Option<(&str, &str)> {
    let stem = file.strip_suffix(STORED_SUFFIX)?;
    let (name, sha) = stem.rsplit_once('-')?;
    (sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some((name, sha))
}

/// The WAL archive of one source in a repository. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WalArchive {
    repo: Repository,
    source: String,
}

impl std::fmt::Display for WalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{WAL_PREFIX}/{}", self.repo, self.source)
    }
}

impl WalArchive {
    /// The archive of `source` in `repo`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad source name.
    pub fn new(repo: &Repository, source: &str) -> Result<Self> {
        validate_source_name(source)?;
        Ok(WalArchive {
            repo: repo.clone(),
            source: source.to_string(),
        })
    }

    /// The source name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    fn store(&self) -> &std::sync::Arc<dyn ObjectStore> {
        self.repo.store()
    }

    /// The path of `archive.json`.
    pub fn info_path(&self) -> String {
        format!("{WAL_PREFIX}/{}/archive.json", self.source)
    }

    fn dir_path(&self, system_id: u64, name: &str) -> String {
        format!("{WAL_PREFIX}/{}/{system_id}/{}", self.source, wal_dir(name))
    }

    /// The claim object of `name` (see the module docs).
    fn claim_path(&self, system_id: u64, name: &str) -> String {
        format!("{}/{name}{CLAIM_SUFFIX}", self.dir_path(system_id, name))
    }

    /// Claims `name` for content `sha` with a conditional create, or reads
    /// whose it is.
    ///
    /// # Errors
    /// Store errors; [`Error::Corrupt`] for a claim that does not parse.
    async fn claim(&self, system_id: u64, name: &str, sha: &str) -> Result<Claimed> {
        let path = self.claim_path(system_id, name);
        let claim = WalClaim {
            name: name.to_string(),
            plain_sha256: sha.to_string(),
            claimed_at: Utc::now(),
        };
        // A claim can vanish between the failed create and the read only
        // when prune removes an old name: try again, a few times.
        for _ in 0..3 {
            match self.repo.put_json_create(&path, &claim).await {
                Ok(()) => return Ok(Claimed::Ours),
                Err(Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            let got = match self.store().get(&StorePath::from(path.as_str())).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(Error::store(path, e)),
            };
            let body = got
                .bytes()
                .await
                .map_err(|e| Error::store(path.as_str(), e))?;
            let held: WalClaim = serde_json::from_slice(&body).map_err(|e| Error::Corrupt {
                object: path.clone(),
                reason: format!("not a WAL claim: {e}"),
            })?;
            return Ok(if held.plain_sha256 == sha {
                Claimed::Ours
            } else {
                Claimed::Other(held)
            });
        }
        Err(Error::NotFound { object: path })
    }

    /// When `name` was first archived, as its claim records it
    /// (`claimed_at`, written by the pushing `dr`): unlike an object's
    /// modification time, it survives copying the repository. `None` for a
    /// name without a claim (archived by an older dr).
    ///
    /// # Errors
    /// Store errors; [`Error::Corrupt`] for a claim that does not parse.
    pub async fn claimed_at(&self, system_id: u64, name: &str) -> Result<Option<DateTime<Utc>>> {
        let path = self.claim_path(system_id, name);
        let body = match self.store().get(&StorePath::from(path.as_str())).await {
            Ok(g) => g
                .bytes()
                .await
                .map_err(|e| Error::store(path.as_str(), e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(path, e)),
        };
        let held: WalClaim = serde_json::from_slice(&body).map_err(|e| Error::Corrupt {
            object: path.clone(),
            reason: format!("not a WAL claim: {e}"),
        })?;
        Ok(Some(held.claimed_at))
    }

    /// The object path for `name` with plaintext digest `sha`.
    pub fn object_path(&self, system_id: u64, name: &str, sha: &str) -> String {
        format!(
            "{}/{name}-{sha}{STORED_SUFFIX}",
            self.dir_path(system_id, name)
        )
    }

    /// The events object of segment `name` (see the module docs).
    pub fn events_path(&self, system_id: u64, name: &str) -> String {
        format!(
            "{WAL_PREFIX}/{}/{system_id}/{EVENTS_DIR}/{name}{EVENTS_SUFFIX}",
            self.source
        )
    }

    /// Records `events` of segment `name` with a conditional create: `true`
    /// when this call wrote the object, `false` when it was already there
    /// (the same segment pushed again: its events are the same, since its
    /// content is claimed). Writes nothing for no events.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when `name` is not a full segment's name;
    /// store errors.
    pub async fn put_events(
        &self,
        system_id: u64,
        name: &str,
        events: &[WalEvent],
    ) -> Result<bool> {
        if !is_segment_name(name) {
            return Err(Error::InvalidName {
                what: "WAL segment name",
                name: name.to_string(),
                reason: "events are recorded for full segments only (24 hex digits)",
            });
        }
        if events.is_empty() {
            return Ok(false);
        }
        match self
            .repo
            .put_json_create(&self.events_path(system_id, name), &events)
            .await
        {
            Ok(()) => Ok(true),
            Err(Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The segments of `system_id` that have an events object, sorted by
    /// name. One listing of the `events/` directory; no key needed.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_events(&self, system_id: u64) -> Result<Vec<String>> {
        let prefix = format!("{WAL_PREFIX}/{}/{system_id}/{EVENTS_DIR}", self.source);
        let listed: Vec<_> = self
            .store()
            .list(Some(&StorePath::from(prefix.as_str())))
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix.as_str(), e))?;
        let mut out: Vec<String> = listed
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.strip_suffix(EVENTS_SUFFIX)?;
                is_segment_name(name).then(|| name.to_string())
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The events recorded for segment `name`; empty when it has no events
    /// object.
    ///
    /// # Errors
    /// Store errors; [`Error::Format`] for an object that does not parse.
    pub async fn events(&self, system_id: u64, name: &str) -> Result<Vec<WalEvent>> {
        let path = self.events_path(system_id, name);
        let got = match self.store().get(&StorePath::from(path.as_str())).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Error::store(path, e)),
        };
        let body = got
            .bytes()
            .await
            .map_err(|e| Error::store(path.as_str(), e))?;
        serde_json::from_slice(&body).map_err(|source| Error::Format {
            object: path,
            what: "WAL events",
            source,
        })
    }

    /// Reads `archive.json`; `None` before the first push.
    ///
    /// # Errors
    /// Store errors; [`Error::Format`] when it does not parse.
    pub async fn info(&self) -> Result<Option<WalArchiveInfo>> {
        let path = self.info_path();
        let got = match self.store().get(&StorePath::from(path.as_str())).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(path, e)),
        };
        let body = got
            .bytes()
            .await
            .map_err(|e| Error::store(path.as_str(), e))?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|source| Error::Format {
                object: path,
                what: "WAL archive description",
                source,
            })
    }

    /// The registered system identifier, if any.
    ///
    /// # Errors
    /// As [`WalArchive::info`].
    pub async fn system_id(&self) -> Result<Option<u64>> {
        match self.info().await? {
            Some(i) => Ok(Some(i.system_id(&self.info_path())?)),
            None => Ok(None),
        }
    }

    /// Registers `system_id` as the cluster of this archive (a conditional
    /// create of `archive.json`), or compares it with the one registered.
    ///
    /// # Errors
    /// Store errors.
    pub async fn register(&self, system_id: u64) -> Result<Registration> {
        if let Some(id) = self.system_id().await? {
            return Ok(if id == system_id {
                Registration::Matches
            } else {
                Registration::Differs { registered: id }
            });
        }
        let info = WalArchiveInfo {
            format_version: WAL_ARCHIVE_VERSION,
            source: self.source.clone(),
            system_identifier: system_id.to_string(),
            registered_at: Utc::now(),
        };
        match self.repo.put_json_create(&self.info_path(), &info).await {
            Ok(()) => {
                tracing::info!(source = %self.source, system_id, "WAL archive registered");
                Ok(Registration::Created)
            }
            // Another pusher won the race: compare with what it wrote.
            Err(Error::AlreadyExists { .. }) => match self.system_id().await? {
                Some(id) if id == system_id => Ok(Registration::Matches),
                Some(id) => Ok(Registration::Differs { registered: id }),
                None => Err(Error::NotFound {
                    object: self.info_path(),
                }),
            },
            Err(e) => Err(e),
        }
    }

    async fn list_dir(&self, prefix: &str) -> Result<Vec<WalObject>> {
        let listed: Vec<_> = self
            .store()
            .list(Some(&StorePath::from(prefix)))
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix, e))?;
        let mut out: Vec<WalObject> = listed
            .into_iter()
            .filter_map(|m| {
                let file = m.location.filename()?;
                let (name, sha) = parse_stored(file)?;
                Some(WalObject {
                    name: name.to_string(),
                    plain_sha256: sha.to_string(),
                    object: m.location.to_string(),
                    stored_size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.name, &a.plain_sha256).cmp(&(&b.name, &b.plain_sha256)));
        Ok(out)
    }

    /// The stored objects called exactly `name` (`X.partial` is not `X`).
    /// An empty result is authoritative: the listing succeeded.
    ///
    /// # Errors
    /// [`Error::InvalidName`]; store errors.
    pub async fn find(&self, system_id: u64, name: &str) -> Result<Vec<WalObject>> {
        validate_wal_name(name)?;
        let all = self.list_dir(&self.dir_path(system_id, name)).await?;
        Ok(all.into_iter().filter(|o| o.name == name).collect())
    }

    /// Every stored object of `system_id`, sorted by name.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(&self, system_id: u64) -> Result<Vec<WalObject>> {
        self.list_dir(&format!("{WAL_PREFIX}/{}/{system_id}", self.source))
            .await
    }

    /// The timeline history files of `system_id`.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_history(&self, system_id: u64) -> Result<Vec<WalObject>> {
        self.list_dir(&format!("{WAL_PREFIX}/{}/{system_id}/history", self.source))
            .await
    }

    /// Stores `plain` as `name`, create-only, the first writer of the name
    /// winning: the content is claimed for the name with a conditional
    /// create, then stored (see the module docs). The same content already
    /// stored is [`PushOutcome::AlreadyStored`]; other content, stored or
    /// claimed, even by a push running at the same moment, is
    /// [`PushOutcome::Conflict`] and nothing is written (its `existing`
    /// object may still be on its way when only the claim is there: then its
    /// `stored_size` is 0 and `last_modified` the claim's time). The system
    /// identifier must have been checked by the caller
    /// ([`WalArchive::register`]). Retrying after an error is safe.
    ///
    /// # Errors
    /// [`Error::InvalidName`]; store and codec errors; [`Error::Corrupt`]
    /// for an unreadable claim. `Ok` means the object is completely stored.
    pub async fn push(
        &self,
        system_id: u64,
        name: &str,
        plain: bytes::Bytes,
    ) -> Result<PushOutcome> {
        retry_transient("pushing", name, || {
            self.push_once(system_id, name, plain.clone())
        })
        .await
    }

    async fn push_once(
        &self,
        system_id: u64,
        name: &str,
        plain: bytes::Bytes,
    ) -> Result<PushOutcome> {
        let existing = self.find(system_id, name).await?;
        if !existing.is_empty() {
            let sha = sha256_hex(&plain);
            if let Some(same) = existing.iter().find(|o| o.plain_sha256 == sha) {
                return Ok(PushOutcome::AlreadyStored(same.clone()));
            }
            if let Some(other) = existing.into_iter().next() {
                return Ok(PushOutcome::Conflict {
                    existing: other,
                    pushed_sha256: sha,
                });
            }
        }
        let recipients = Recipients::parse(&self.repo.config().recipients)?;
        let level = self.repo.codec().zstd_level;
        let (stored, sha) = {
            let what = format!("{}/{name}", self.dir_path(system_id, name));
            // One zstd thread: a segment is small, and zstd's workers copy
            // their input, which costs more than it saves (measured: 21-25 ms
            // single-threaded against 33-38 ms with one or two workers for a
            // 16 MiB segment); the digest runs on the second core meanwhile.
            tokio::task::spawn_blocking(move || {
                codec::encode_buffer(&plain, &recipients, level, 0, &what)
            })
            .await
            .map_err(|e| Error::Io {
                what: format!("encoding {name}"),
                source: std::io::Error::other(e),
            })??
        };
        let object = self.object_path(system_id, name, &sha);
        if let Claimed::Other(held) = self.claim(system_id, name, &sha).await? {
            let existing = self
                .find(system_id, name)
                .await?
                .into_iter()
                .find(|o| o.plain_sha256 == held.plain_sha256)
                .unwrap_or_else(|| WalObject {
                    name: name.to_string(),
                    object: self.object_path(system_id, name, &held.plain_sha256),
                    plain_sha256: held.plain_sha256.clone(),
                    stored_size: 0,
                    last_modified: held.claimed_at,
                });
            tracing::warn!(
                name, claimed = %held.plain_sha256, pushed = %sha,
                "WAL file name already claimed by other content"
            );
            return Ok(PushOutcome::Conflict {
                existing,
                pushed_sha256: sha,
            });
        }
        let stored_size = stored.len() as u64;
        let put = self
            .store()
            .put_opts(
                &StorePath::from(object.as_str()),
                stored.into(),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        let obj = WalObject {
            name: name.to_string(),
            plain_sha256: sha.clone(),
            object: object.clone(),
            stored_size,
            last_modified: Utc::now(),
        };
        match put {
            Ok(_) => {
                tracing::debug!(object = %object, stored_size, "WAL object stored");
                Ok(PushOutcome::Stored(obj))
            }
            // The digest is in the name: an object already at this path holds
            // the same plaintext (a concurrent push of the same file).
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PushOutcome::AlreadyStored(obj)),
            Err(e) => Err(Error::store(object, e)),
        }
    }

    /// Every WAL file name of this source stored with two or more different
    /// contents, under any system identifier, sorted by system identifier
    /// and name. One listing of `wal/<source>/`, no object read, no key
    /// needed: for `dr status`.
    ///
    /// # Errors
    /// Store errors.
    pub async fn conflicts(&self) -> Result<Vec<WalConflict>> {
        let prefix = format!("{WAL_PREFIX}/{}", self.source);
        let mut by_name: std::collections::BTreeMap<(u64, String), Vec<WalObject>> =
            std::collections::BTreeMap::new();
        let listed: Vec<_> = self
            .store()
            .list(Some(&StorePath::from(prefix.as_str())))
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix.as_str(), e))?;
        for m in listed {
            let path = m.location.to_string();
            // wal/<source>/<system-id>/<dir>/<file>
            let parts: Vec<&str> = path.split('/').collect();
            let [_, _, sysid, _, file] = parts.as_slice() else {
                continue;
            };
            let (Ok(sysid), Some((name, sha))) = (sysid.parse::<u64>(), parse_stored(file)) else {
                continue;
            };
            by_name
                .entry((sysid, name.to_string()))
                .or_default()
                .push(WalObject {
                    name: name.to_string(),
                    plain_sha256: sha.to_string(),
                    object: path.clone(),
                    stored_size: m.size,
                    last_modified: m.last_modified,
                });
        }
        Ok(by_name
            .into_iter()
            .filter(|(_, objects)| objects.len() > 1)
            .map(|((system_id, name), mut objects)| {
                objects.sort_by(|a, b| a.plain_sha256.cmp(&b.plain_sha256));
                WalConflict {
                    system_id,
                    name,
                    objects,
                }
            })
            .collect())
    }

    /// The one object called exactly `name` and its stored bytes.
    ///
    /// # Errors
    /// As [`WalArchive::fetch`], without the decoding errors.
    async fn get_one(&self, system_id: u64, name: &str) -> Result<(WalObject, bytes::Bytes)> {
        let found = self.find(system_id, name).await?;
        let obj = match found.as_slice() {
            [] => {
                return Err(Error::NotFound {
                    object: format!("{}/{name}", self.dir_path(system_id, name)),
                })
            }
            [one] => one.clone(),
            [first, second, ..] => {
                return Err(Error::Corrupt {
                    object: format!("{}/{name}", self.dir_path(system_id, name)),
                    reason: format!(
                        "two different objects carry this name (sha256 {} and {}); remove the wrong one",
                        first.plain_sha256, second.plain_sha256
                    ),
                })
            }
        };
        let path = StorePath::from(obj.object.as_str());
        let got = self
            .store()
            .get(&path)
            .await
            .map_err(|e| Error::store(obj.object.as_str(), e))?;
        let stored = got
            .bytes()
            .await
            .map_err(|e| Error::store(obj.object.as_str(), e))?;
        Ok((obj, stored))
    }

    /// Reads, decrypts and checks the object called exactly `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] only when the listing succeeded and holds no such
    /// name; [`Error::Corrupt`] when two objects of that name differ or the
    /// content does not match its digest; [`Error::Decrypt`]; store errors.
    pub async fn fetch(
        &self,
        system_id: u64,
        name: &str,
        identities: &Identities,
    ) -> Result<(WalObject, Vec<u8>)> {
        let (obj, stored) =
            retry_transient("fetching", name, || self.get_one(system_id, name)).await?;
        let identities = identities.clone();
        let o = obj.clone();
        let plain = tokio::task::spawn_blocking(move || {
            codec::decode_buffer(&stored, &identities, &o.plain_sha256, &o.object)
        })
        .await
        .map_err(|e| Error::Io {
            what: format!("decoding {}", obj.object),
            source: std::io::Error::other(e),
        })??;
        Ok((obj, plain))
    }

    /// Reads the stored object `obj` (from [`WalArchive::list`]) and, with
    /// `identities`, decrypts and decompresses it and checks its plaintext
    /// against the SHA-256 in its name; without, checks only that it can be
    /// read whole and holds as many bytes as listed. The plaintext is
    /// dropped. Returns the plaintext size (with a key) or the stored size.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the object (a size or digest mismatch, a
    /// frame that does not decode); [`Error::Decrypt`]; store errors.
    pub async fn check_object(
        &self,
        obj: &WalObject,
        identities: Option<&Identities>,
    ) -> Result<u64> {
        let path = StorePath::from(obj.object.as_str());
        let stored = self
            .store()
            .get(&path)
            .await
            .map_err(|e| Error::store(obj.object.as_str(), e))?
            .bytes()
            .await
            .map_err(|e| Error::store(obj.object.as_str(), e))?;
        if stored.len() as u64 != obj.stored_size || stored.is_empty() {
            return Err(Error::Corrupt {
                object: obj.object.clone(),
                reason: format!("{} bytes read, {} listed", stored.len(), obj.stored_size),
            });
        }
        let Some(identities) = identities else {
            return Ok(obj.stored_size);
        };
        let identities = identities.clone();
        let o = obj.clone();
        tokio::task::spawn_blocking(move || {
            codec::decode_buffer_to(
                &stored,
                &identities,
                &o.plain_sha256,
                &o.object,
                &mut std::io::sink(),
            )
        })
        .await
        .map_err(|e| Error::Io {
            what: format!("decoding {}", obj.object),
            source: std::io::Error::other(e),
        })?
    }

    /// [`WalArchive::fetch`] into the file `dest`, atomically: the content is
    /// streamed to a temporary file in the same directory while its digest
    /// is checked, and renamed over `dest` only when it matches. On any error
    /// `dest` is untouched and the temporary file removed. Not synced:
    /// PostgreSQL syncs the restored files it keeps.
    ///
    /// # Errors
    /// As [`WalArchive::fetch`]; [`Error::Io`] naming the file.
    pub async fn fetch_to_path(
        &self,
        system_id: u64,
        name: &str,
        identities: &Identities,
        dest: &Path,
    ) -> Result<WalObject> {
        let (obj, stored) =
            retry_transient("fetching", name, || self.get_one(system_id, name)).await?;
        let dest = dest.to_path_buf();
        let identities = identities.clone();
        let o = obj.clone();
        tokio::task::spawn_blocking(move || {
            // No fsync: PostgreSQL makes a restored file durable itself when
            // it keeps it (durable_rename in KeepFileRestoredFromArchive,
            // src/backend/access/transam/xlogarchive.c), and after a crash
            // recovery asks the archive again. The rename still guarantees
            // no partial file at `dest`.
            write_atomically_with(&dest, false, |f| {
                codec::decode_buffer_to(&stored, &identities, &o.plain_sha256, &o.object, f)
                    .map(drop)
            })
        })
        .await
        .map_err(|e| Error::Io {
            what: "writing the fetched WAL file".into(),
            source: std::io::Error::other(e),
        })??;
        Ok(obj)
    }
}

/// Writes `data` to `dest` through a synced temporary file and a rename,
/// then syncs the directory.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    write_atomically_with(dest, true, |f| {
        f.write_all(data).map_err(|source| Error::Io {
            what: dest.display().to_string(),
            source,
        })
    })
}

/// Creates a temporary file beside `dest`, lets `fill` write it, syncs it
/// (when `sync`) and renames it over `dest`, then syncs the directory (when
/// `sync`). When `fill` or any step fails, the temporary file is removed and
/// `dest` is untouched: never a partial file at `dest`.
///
/// # Errors
/// The error of `fill`; [`Error::Io`] naming the file.
pub fn write_atomically_with(
    dest: &Path,
    sync: bool,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.dr-{}.tmp",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let io = |path: &Path, source| Error::Io {
        what: path.display().to_string(),
        source,
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        fill(&mut f)?;
        if sync {
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        drop(f);
        std::fs::rename(&tmp, dest).map_err(|e| io(dest, e))?;
        if sync {
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InitOptions, Location, StoreOptions};

    async fn archive(name: &str) -> (WalArchive, Identities) {
        let key = Identities::generate();
        let repo = Repository::init(
            &Location::parse(&format!("memory://wal-{name}")).unwrap(),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        (WalArchive::new(&repo, "db").unwrap(), key)
    }

    #[test]
    fn names() {
        validate_wal_name("000000010000000000000001").unwrap();
        validate_wal_name("00000002.history").unwrap();
        validate_wal_name("000000010000000000000001.partial").unwrap();
        validate_wal_name("000000010000000000000001.00000028.backup").unwrap();
        assert!(validate_wal_name("../x").is_err());
        assert!(validate_wal_name("").is_err());
        assert!(validate_wal_name("zz0000010000000000000001").is_err());
        assert_eq!(wal_dir("000000010000000A00000001"), "000000010000000A");
        assert_eq!(wal_dir("00000002.history"), "history");
        let sha = "a".repeat(64);
        assert_eq!(
            parse_stored(&format!("000000010000000000000001.partial-{sha}.zst.age")),
            Some(("000000010000000000000001.partial", sha.as_str()))
        );
        assert_eq!(parse_stored("x-abc.zst.age"), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn events_sit_beside_their_segment_and_are_not_wal() {
        let (archive, _) = archive("events").await;
        let seg = "000000010000000000000003";
        let PushOutcome::Stored(o) = archive.push(7, seg, vec![1u8; 64].into()).await.unwrap()
        else {
            panic!()
        };
        let ev = vec![WalEvent::TablespaceCreate {
            oid: 16_390,
            path: "/srv/ts2".into(),
            lsn: "0/3000060".into(),
            continued: false,
        }];
        assert!(!archive.put_events(7, seg, &[]).await.unwrap());
        assert!(archive.put_events(7, seg, &ev).await.unwrap());
        // Create-only: a second push of the segment finds it there.
        assert!(!archive.put_events(7, seg, &ev).await.unwrap());
        assert!(archive
            .put_events(7, "00000002.history", &ev)
            .await
            .is_err());
        assert_eq!(
            wal_events_path(&o.object).unwrap(),
            archive.events_path(7, seg)
        );
        assert_eq!(
            archive.events_path(7, seg),
            "wal/db/7/events/000000010000000000000003.json"
        );
        let partial = o.object.replace(seg, &format!("{seg}.partial"));
        assert_eq!(wal_events_path(&partial), None);
        assert_eq!(archive.list_events(7).await.unwrap(), vec![seg.to_string()]);
        assert_eq!(archive.events(7, seg).await.unwrap(), ev);
        assert!(archive
            .events(7, "000000010000000000000004")
            .await
            .unwrap()
            .is_empty());
        // Not a WAL object, and no conflict.
        let listed = archive.list(7).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(archive.conflicts().await.unwrap().is_empty());
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(json[0]["kind"], "tablespace_create");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn push_is_create_only_and_fetch_checks() {
        let (a, key) = archive("push").await;
        assert_eq!(a.register(7).await.unwrap(), Registration::Created);
        assert_eq!(a.register(7).await.unwrap(), Registration::Matches);
        assert_eq!(
            a.register(8).await.unwrap(),
            Registration::Differs { registered: 7 }
        );
        let seg = "000000010000000000000001";
        let data = vec![5u8; 100_000];
        let PushOutcome::Stored(o) = a.push(7, seg, data.clone().into()).await.unwrap() else {
            panic!()
        };
        assert_eq!(o.plain_sha256, sha256_hex(&data));
        assert!(matches!(
            a.push(7, seg, data.clone().into()).await.unwrap(),
            PushOutcome::AlreadyStored(_)
        ));
        let PushOutcome::Conflict {
            existing,
            pushed_sha256,
        } = a
            .push(7, seg, bytes::Bytes::from_static(b"other"))
            .await
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(existing.plain_sha256, sha256_hex(&data));
        assert_eq!(pushed_sha256, sha256_hex(b"other"));
        a.push(
            7,
            &format!("{seg}.partial"),
            bytes::Bytes::from_static(b"partial"),
        )
        .await
        .unwrap();
        let (_, got) = a.fetch(7, seg, &key).await.unwrap();
        assert_eq!(got, data);
        assert!(matches!(
            a.fetch(7, "000000010000000000000002", &key).await,
            Err(Error::NotFound { .. })
        ));
        // X.partial is never served for X, and X never for X.partial.
        let (_, p) = a.fetch(7, &format!("{seg}.partial"), &key).await.unwrap();
        assert_eq!(p, b"partial");
        let wrong = Identities::generate();
        assert!(matches!(
            a.fetch(7, seg, &wrong).await,
            Err(Error::Decrypt { .. })
        ));
        assert_eq!(a.list(7).await.unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_push_stopped_between_claim_and_data_is_finished_by_the_next() {
        let (a, key) = archive("claim-only").await;
        let seg = "000000010000000000000009";
        let sha = sha256_hex(b"mine");
        // As a push that stopped after its claim: no data object yet.
        assert!(matches!(
            a.claim(1, seg, &sha).await.unwrap(),
            Claimed::Ours
        ));
        assert!(a.find(1, seg).await.unwrap().is_empty());
        let PushOutcome::Conflict {
            existing,
            pushed_sha256,
        } = a
            .push(1, seg, bytes::Bytes::from_static(b"theirs"))
            .await
            .unwrap()
        else {
            panic!("other content must conflict with the claim")
        };
        assert_eq!(existing.plain_sha256, sha);
        assert_eq!(existing.stored_size, 0);
        assert_eq!(pushed_sha256, sha256_hex(b"theirs"));
        assert!(a.find(1, seg).await.unwrap().is_empty(), "nothing written");
        // The claimed content, pushed again, is stored.
        assert!(matches!(
            a.push(1, seg, bytes::Bytes::from_static(b"mine"))
                .await
                .unwrap(),
            PushOutcome::Stored(_)
        ));
        let (_, got) = a.fetch(1, seg, &key).await.unwrap();
        assert_eq!(got, b"mine");
        // An unreadable claim is damage naming it.
        let claim = a.claim_path(1, "00000003.history");
        a.store()
            .put(&StorePath::from(claim.as_str()), b"{".to_vec().into())
            .await
            .unwrap();
        let e = a
            .push(1, "00000003.history", bytes::Bytes::from_static(b"h"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { object, .. } if *object == claim),
            "{e:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn fetch_detects_corruption_and_writes_atomically() {
        let (a, key) = archive("corrupt").await;
        let seg = "000000010000000000000003";
        let PushOutcome::Stored(o) = a
            .push(1, seg, bytes::Bytes::from_static(b"good"))
            .await
            .unwrap()
        else {
            panic!()
        };
        // Replace the stored object with another encoding under the same name.
        let recipients = key.recipients();
        let (bad, _) = codec::encode_buffer(b"evil", &recipients, 3, 0, "x").unwrap();
        a.store()
            .put(&StorePath::from(o.object.as_str()), bad.into())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let err = a.fetch_to_path(1, seg, &key, &dest).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary file left"
        );
        a.push(
            1,
            "00000002.history",
            bytes::Bytes::from_static(b"1\t0/3000000\tno reason\n"),
        )
        .await
        .unwrap();
        a.fetch_to_path(1, "00000002.history", &key, &dest)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"1\t0/3000000\tno reason\n");
        assert_eq!(a.list_history(1).await.unwrap().len(), 1);
    }
}
