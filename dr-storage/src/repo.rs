//! The repository: `dr-repo.json`, backups and their manifests.
//!
//! Layout under the repository root:
//! ```text
//! dr-repo.json                               format version, id, codec, recipients
//! backups/<source>/<backup-id>/manifest.json the commit point, written last
//! backups/<source>/<backup-id>/<artifact>    data objects (<name>.zst.age)
//! ```

use std::sync::{Arc, Mutex};

use age::secrecy::SecretString;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::codec::{self, ArtifactInfo, ArtifactReader, ArtifactWriter, CodecOptions};
use crate::error::{Error, Result};
use crate::keys::{self, Identities, Recipients};
use crate::location::{Location, StoreOptions};
use crate::manifest::{new_backup_id, CodecInfo, Manifest, SourceRef, MANIFEST_VERSION};
use crate::progress::{NoProgress, Progress};

/// The repository format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The name of the repository's configuration object.
pub const REPO_CONFIG: &str = "dr-repo.json";

/// `dr-repo.json`: written once by `dr repo init` with a conditional create.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// [`FORMAT_VERSION`] of the `dr` that made the repository.
    pub format_version: u32,
    /// Random id of the repository.
    pub repository_id: String,
    /// When `dr repo init` ran.
    pub created_at: DateTime<Utc>,
    /// Always `zstd+age-x25519` in this format version.
    pub codec: String,
    /// The `age1...` recipients every artifact is encrypted to.
    pub recipients: Vec<String>,
    /// With a passphrase: the repository's own identity, age-scrypt encrypted
    /// with the passphrase, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_key: Option<String>,
    /// The scrypt work factor of `passphrase_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrypt_work_factor: Option<u8>,
    /// `sha256:<hex>` of the canonical form of the other fields, checked
    /// whenever the repository is opened (computed as [`Manifest`]'s digest).
    /// `None` in a repository made before digests: it is read unprotected.
    /// A `dr` older than digests cannot open a repository whose
    /// `dr-repo.json` has one (unknown field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl RepoConfig {
    /// This configuration with [`RepoConfig::digest`] set to the digest of
    /// its other fields.
    pub fn sealed(mut self) -> Self {
        self.digest = None;
        let value = serde_json::to_value(&self).expect("config serialises");
        self.digest = Some(crate::manifest::digest_of(&value));
        self
    }

    /// Parses and checks the stored bytes of `dr-repo.json`. The format
    /// version is compared with [`FORMAT_VERSION`] before anything else, so
    /// that a newer repository is refused as such.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] for a newer format (naming `location`);
    /// [`Error::Format`] when it does not parse; [`Error::Corrupt`] naming
    /// `dr-repo.json` when its digest does not match.
    pub fn from_stored(location: &str, bytes: &[u8]) -> Result<Self> {
        let format = |source| Error::Format {
            object: REPO_CONFIG.into(),
            what: "repository configuration",
            source,
        };
        let probe: VersionProbe = serde_json::from_slice(bytes).map_err(format)?;
        if probe.format_version > FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                location: location.to_string(),
                found: probe.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(format)?;
        crate::manifest::check_digest(REPO_CONFIG, &value)?;
        serde_json::from_value(value).map_err(format)
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    format_version: u32,
}

/// What `dr repo init` needs.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// `age1...` recipients. Optional when a passphrase is given.
    pub recipients: Vec<String>,
    /// A passphrase protecting a repository identity kept in `dr-repo.json`.
    pub passphrase: Option<SecretString>,
}

impl InitOptions {
    /// Options with these recipients.
    pub fn with_recipients<S: Into<String>>(recipients: impl IntoIterator<Item = S>) -> Self {
        InitOptions {
            recipients: recipients.into_iter().map(Into::into).collect(),
            passphrase: None,
        }
    }
}

/// Where the keys to read data come from.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct KeySource {
    /// Identities (from an identity file).
    pub identities: Option<Identities>,
    /// The repository passphrase.
    pub passphrase: Option<SecretString>,
}

impl KeySource {
    /// Keys from identities alone.
    pub fn identities(identities: Identities) -> Self {
        KeySource {
            identities: Some(identities),
            passphrase: None,
        }
    }
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    location: String,
    /// The directory of a local repository.
    local_root: Option<std::path::PathBuf>,
    config: RepoConfig,
    recipients: Recipients,
    codec: CodecOptions,
    progress: Arc<dyn Progress>,
}

/// An open repository. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.inner.location)
            .field("id", &self.inner.config.repository_id)
            .finish()
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.inner.location)
    }
}

fn backup_prefix(source: &str, id: &str) -> String {
    format!("backups/{source}/{id}")
}

fn manifest_path(source: &str, id: &str) -> String {
    format!("{}/manifest.json", backup_prefix(source, id))
}

/// Checks a source name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64 bytes.
///
/// # Errors
/// [`Error::InvalidName`].
pub fn validate_source_name(name: &str) -> Result<()> {
    validate_segment("source name", name)
}

fn validate_segment(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason| Error::InvalidName {
        what,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("must be 1 to 64 bytes"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(bad("must start with a letter or digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad("may contain only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

impl Repository {
    /// Creates a repository at `location`: writes `dr-repo.json` once, with a
    /// conditional create.
    ///
    /// # Errors
    /// [`Error::AlreadyInitialized`] when one exists; [`Error::InvalidKey`] for
    /// bad recipients or when neither recipients nor a passphrase are given.
    pub async fn init(
        location: &Location,
        store_options: &StoreOptions,
        init: InitOptions,
    ) -> Result<Self> {
        let store = location.open(store_options, true)?;
        let mut recipients = init.recipients.clone();
        let mut passphrase_key = None;
        if let Some(pass) = &init.passphrase {
            let repo_identity = Identities::generate();
            recipients.extend(repo_identity.recipients().to_strings());
            passphrase_key = Some(keys::seal_with_passphrase(&repo_identity, pass)?);
        }
        let parsed = Recipients::parse(&recipients)?;
        let config = RepoConfig {
            format_version: FORMAT_VERSION,
            repository_id: hex::encode(rand::random::<[u8; 8]>()),
            created_at: Utc::now(),
            codec: "zstd+age-x25519".into(),
            recipients: parsed.to_strings(),
            scrypt_work_factor: passphrase_key.as_ref().map(|_| keys::SCRYPT_WORK_FACTOR),
            passphrase_key,
            digest: None,
        }
        .sealed();
        let body = serde_json::to_vec_pretty(&config).expect("config serialises");
        if get_bytes(&store, REPO_CONFIG).await.is_err() && holds_data(&store).await? {
            return Err(Error::RepositoryFileMissing {
                location: location.to_string(),
            });
        }
        match put_create(&store, REPO_CONFIG, body.into()).await {
            Ok(()) => {}
            Err(Error::AlreadyExists { .. }) => {
                return Err(Error::AlreadyInitialized {
                    location: location.to_string(),
                })
            }
            Err(e) => return Err(e),
        }
        tracing::info!(location = %location, id = %config.repository_id, "repository initialised");
        Ok(
            Self::from_parts(store, location.to_string(), config, parsed).rebuild(|i| {
                i.local_root = location.local_path().map(std::path::Path::to_path_buf)
            }),
        )
    }

    /// Opens the repository at `location`, checking the digest of
    /// `dr-repo.json` when it has one.
    ///
    /// # Errors
    /// [`Error::NotInitialized`] without `dr-repo.json`;
    /// [`Error::UnsupportedFormat`] when a newer `dr` made it;
    /// [`Error::Corrupt`] naming `dr-repo.json` when its digest does not
    /// match; [`Error::Format`] when it does not parse.
    pub async fn open(location: &Location, store_options: &StoreOptions) -> Result<Self> {
        let store = location.open(store_options, false)?;
        let root = location.local_path().map(std::path::Path::to_path_buf);
        Ok(Self::open_store(store, location.to_string())
            .await?
            .rebuild(|i| i.local_root = root))
    }

    /// Opens a repository on an already-built store (`location` names it in
    /// messages).
    ///
    /// # Errors
    /// As [`Repository::open`].
    pub async fn open_store(store: Arc<dyn ObjectStore>, location: String) -> Result<Self> {
        let body = match get_bytes(&store, REPO_CONFIG).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) if holds_data(&store).await? => {
                return Err(Error::RepositoryFileMissing { location })
            }
            Err(Error::NotFound { .. }) => return Err(Error::NotInitialized { location }),
            Err(e) => return Err(e),
        };
        let config = RepoConfig::from_stored(&location, &body)?;
        let recipients = Recipients::parse(&config.recipients)?;
        Ok(Self::from_parts(store, location, config, recipients))
    }

    fn from_parts(
        store: Arc<dyn ObjectStore>,
        location: String,
        config: RepoConfig,
        recipients: Recipients,
    ) -> Self {
        Repository {
            inner: Arc::new(Inner {
                store,
                location,
                local_root: None,
                config,
                recipients,
                codec: CodecOptions::default(),
                progress: Arc::new(NoProgress),
            }),
        }
    }

    /// The same repository with other codec options.
    pub fn with_codec(&self, codec: CodecOptions) -> Self {
        self.rebuild(|i| i.codec = codec)
    }

    /// The same repository reporting progress to `progress`.
    pub fn with_progress(&self, progress: Arc<dyn Progress>) -> Self {
        self.rebuild(|i| i.progress = progress)
    }

    fn rebuild(&self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            store: self.inner.store.clone(),
            location: self.inner.location.clone(),
            local_root: self.inner.local_root.clone(),
            config: self.inner.config.clone(),
            recipients: self.inner.recipients.clone(),
            codec: self.inner.codec.clone(),
            progress: self.inner.progress.clone(),
        };
        f(&mut inner);
        Repository {
            inner: Arc::new(inner),
        }
    }

    /// The staging files that `object_store`'s local file system leaves
    /// beside an object (`<object>#<n>`) when a process writing it was
    /// killed (SIGKILL, a crash, a power loss): listings skip them, so
    /// nothing else finds them. Empty for a repository that is not a local
    /// directory. Sorted by path.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be read.
    pub fn staging_leftovers(&self) -> Result<Vec<StagingFile>> {
        let Some(root) = &self.inner.local_root else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Io {
                        what: dir.display().to_string(),
                        source,
                    })
                }
            };
            for entry in entries {
                let entry = entry.map_err(|source| Error::Io {
                    what: dir.display().to_string(),
                    source,
                })?;
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).map_err(|source| Error::Io {
                    what: path.display().to_string(),
                    source,
                })?;
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if !meta.is_file() || !is_staging_name(&entry.file_name().to_string_lossy()) {
                    continue;
                }
                let relative = path.strip_prefix(root).unwrap_or(&path);
                out.push(StagingFile {
                    path: relative.to_string_lossy().into_owned(),
                    size: meta.len(),
                    last_modified: meta
                        .modified()
                        .map(DateTime::<Utc>::from)
                        .unwrap_or_else(|_| Utc::now()),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes a staging file found by [`Repository::staging_leftovers`];
    /// one already gone is not an error.
    ///
    /// # Errors
    /// [`Error::Io`], of kind `InvalidInput` for a path that is not a
    /// staging file inside this local repository.
    pub fn remove_staging(&self, file: &StagingFile) -> Result<()> {
        let name_ok = std::path::Path::new(&file.path)
            .file_name()
            .is_some_and(|n| is_staging_name(&n.to_string_lossy()));
        let inside = std::path::Path::new(&file.path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        let (Some(root), true, true) = (&self.inner.local_root, name_ok, inside) else {
            return Err(Error::Io {
                what: file.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a staging file of this local repository",
                ),
            });
        };
        let path = root.join(&file.path);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                what: path.display().to_string(),
                source,
            }),
        }
    }

    /// The repository configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    /// The object store (rooted at the repository).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The progress sink.
    pub fn progress(&self) -> &Arc<dyn Progress> {
        &self.inner.progress
    }

    /// The codec options.
    pub fn codec(&self) -> &CodecOptions {
        &self.inner.codec
    }

    /// The identities that read this repository's data.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] when no key is given or a passphrase is given for
    /// a repository without one; [`Error::Decrypt`] for a wrong passphrase.
    pub fn unlock(&self, keys: &KeySource) -> Result<Identities> {
        let mut ids = Vec::new();
        if let Some(i) = &keys.identities {
            ids.extend(i.0.iter().cloned());
        }
        if let Some(pass) = &keys.passphrase {
            let sealed =
                self.inner
                    .config
                    .passphrase_key
                    .as_ref()
                    .ok_or_else(|| Error::InvalidKey {
                        what: "passphrase".into(),
                        reason: "this repository was not created with a passphrase".into(),
                    })?;
            ids.extend(keys::open_with_passphrase(sealed, pass)?.0);
        }
        if ids.is_empty() {
            return Err(Error::InvalidKey {
                what: "keys".into(),
                reason: "reading backup data needs an identity file (--identity) or the repository passphrase"
                    .into(),
            });
        }
        Ok(Identities(ids))
    }

    /// Starts a backup of `source` (kind `kind`). Nothing is listed until
    /// [`BackupWriter::commit`] writes the manifest.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad source name.
    pub fn begin_backup(&self, kind: &str, source: &str) -> Result<BackupWriter> {
        validate_source_name(source)?;
        let started_at = Utc::now();
        Ok(BackupWriter {
            repo: self.clone(),
            id: new_backup_id(started_at),
            source: SourceRef {
                kind: kind.to_string(),
                name: source.to_string(),
            },
            started_at,
            artifacts: Arc::new(Mutex::new(Vec::new())),
            abandoned: Default::default(),
            mark: None,
        })
    }

    /// Starts a backup as [`Repository::begin_backup`] does and marks it in
    /// progress for as long as the writer lives: the lease
    /// `locks/backup-<source>-<id>.json` (ttl [`BACKUP_MARK_TTL`]), renewed
    /// in the background and removed by [`BackupWriter::commit`] or
    /// [`BackupWriter::abort`]. Prune never takes the objects of a marked
    /// backup for orphans, however long the backup runs (a base backup of
    /// several TiB can outlast the orphan grace); a killed writer's mark
    /// expires after the ttl and prune removes it. `dr backup` and the agent
    /// start every backup this way. Needs a Tokio runtime.
    ///
    /// # Errors
    /// As [`Repository::begin_backup`]; store errors writing the mark.
    pub async fn begin_backup_marked(&self, kind: &str, source: &str) -> Result<BackupWriter> {
        self.begin_backup_marked_for(kind, source, BACKUP_MARK_TTL)
            .await
    }

    /// As [`Repository::begin_backup_marked`], with a mark living `ttl`
    /// between renewals (renewed every `ttl / 3`).
    ///
    /// # Errors
    /// As [`Repository::begin_backup_marked`].
    pub async fn begin_backup_marked_for(
        &self,
        kind: &str,
        source: &str,
        ttl: std::time::Duration,
    ) -> Result<BackupWriter> {
        let mut writer = self.begin_backup(kind, source)?;
        writer.mark = Some(crate::lock::BackupMark::take(self, source, &writer.id, ttl).await?);
        Ok(writer)
    }

    /// The source names that have at least one object.
    ///
    /// # Errors
    /// Store errors.
    pub async fn sources(&self) -> Result<Vec<String>> {
        let listing = self
            .inner
            .store
            .list_with_delimiter(Some(&Path::from("backups")))
            .await
            .map_err(|e| Error::store("backups/", e))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The committed backups, oldest first (by recorded start time), of one
    /// source or of all. Directories without a manifest (backups in progress or
    /// interrupted) are not listed.
    ///
    /// # Errors
    /// Store errors; [`Error::Format`] for an unreadable manifest.
    pub async fn list_backups(&self, source: Option<&str>) -> Result<Vec<Manifest>> {
        let (manifests, damaged) = self.list_backups_checked(source).await?;
        for d in &damaged {
            tracing::warn!(object = %d.object, reason = %d.reason, "damaged manifest: backup not listed");
        }
        Ok(manifests)
    }

    /// As [`Repository::list_backups`], and the manifests that exist but
    /// cannot be used: they do not parse, their digest does not match, or a
    /// newer `dr` wrote them (a damaged manifest hides its own backup, never
    /// the others). A backup directory without a manifest is in neither list.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_backups_checked(
        &self,
        source: Option<&str>,
    ) -> Result<(Vec<Manifest>, Vec<DamagedManifest>)> {
        let mut damaged = Vec::new();
        let sources = match source {
            Some(s) => vec![s.to_string()],
            None => self.sources().await?,
        };
        let mut out = Vec::new();
        for source in sources {
            let prefix = Path::from(format!("backups/{source}"));
            let listing = self
                .inner
                .store
                .list_with_delimiter(Some(&prefix))
                .await
                .map_err(|e| Error::store(prefix.to_string(), e))?;
            for dir in listing.common_prefixes {
                let Some(id) = dir.filename() else { continue };
                match self.manifest(&source, id).await {
                    Ok(m) => out.push(m),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => match DamagedManifest::from_error(&source, id, &e) {
                        Some(d) => damaged.push(d),
                        None => return Err(e),
                    },
                }
            }
        }
        out.sort_by(|a, b| {
            (a.started_at, &a.source.name, &a.backup_id).cmp(&(
                b.started_at,
                &b.source.name,
                &b.backup_id,
            ))
        });
        Ok((out, damaged))
    }

    /// Reads one manifest and checks its digest ([`Manifest::from_stored`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the backup has no manifest;
    /// [`Error::Corrupt`] naming the manifest when its digest does not match;
    /// [`Error::Format`]; [`Error::UnsupportedFormat`]; store errors.
    pub async fn manifest(&self, source: &str, id: &str) -> Result<Manifest> {
        let path = manifest_path(source, id);
        let body = get_bytes(&self.inner.store, &path).await?;
        Manifest::from_stored(&path, &body)
    }

    /// Finds a backup by id, or `latest`, optionally within one source.
    ///
    /// A damaged manifest is never skipped silently here: an id naming a
    /// backup whose manifest is damaged fails with that damage, and `latest`
    /// fails when a damaged manifest may be the newest backup of the source
    /// (its directory name, the backup id, starts with a time to the second
    /// no earlier than the newest readable one's), instead of returning an
    /// older backup.
    ///
    /// # Errors
    /// [`Error::BackupNotFound`]; with `latest` and no source in a repository
    /// holding several sources, [`Error::InvalidName`] asking for a source;
    /// [`Error::Corrupt`], [`Error::Format`] or [`Error::UnsupportedFormat`]
    /// naming the manifest of the backup asked for (see above).
    pub async fn find_backup(&self, source: Option<&str>, selector: &str) -> Result<Manifest> {
        let (all, damaged) = self.list_backups_checked(source).await?;
        let not_found = || Error::BackupNotFound {
            source_name: source.unwrap_or("*").to_string(),
            id: selector.to_string(),
        };
        if selector == "latest" {
            let mut names: Vec<&str> = all
                .iter()
                .map(|m| m.source.name.as_str())
                .chain(damaged.iter().map(|d| d.source.as_str()))
                .collect();
            names.sort_unstable();
            names.dedup();
            if source.is_none() && names.len() > 1 {
                return Err(Error::InvalidName {
                    what: "backup selector",
                    name: selector.into(),
                    reason: "several sources have backups: name the source (--source)",
                });
            }
            let newest = all.into_iter().next_back();
            // A backup id starts with its start time to the second: a
            // damaged one of the same second or later may be the newest.
            let second = |id: &str| id.split('-').next().unwrap_or(id).to_string();
            let newer_damage = damaged
                .iter()
                .filter(|d| {
                    newest
                        .as_ref()
                        .is_none_or(|m| second(&d.backup_id) >= second(&m.backup_id))
                })
                .max_by(|a, b| a.backup_id.cmp(&b.backup_id));
            if let Some(d) = newer_damage {
                return Err(Error::Corrupt {
                    object: d.object.clone(),
                    reason: format!(
                        "{}; it may be the newest backup of source {}: name an older backup by id to use one",
                        d.reason, d.source
                    ),
                });
            }
            return newest.ok_or_else(not_found);
        }
        let matches: Vec<Manifest> = all
            .into_iter()
            .filter(|m| m.backup_id == selector || m.backup_id.starts_with(selector))
            .collect();
        let damaged_matches: Vec<&DamagedManifest> = damaged
            .iter()
            .filter(|d| d.backup_id == selector || d.backup_id.starts_with(selector))
            .collect();
        match (matches.len(), damaged_matches.as_slice()) {
            (1, []) => Ok(matches.into_iter().next().expect("one")),
            (0, []) => Err(not_found()),
            // The backup asked for: read it again for the typed error.
            (0, [d]) => self.manifest(&d.source, &d.backup_id).await,
            _ => Err(Error::InvalidName {
                what: "backup id",
                name: selector.into(),
                reason: "matches several backups: give more of the id",
            }),
        }
    }

    /// Checks the size and SHA-256 of every stored object of `manifest`
    /// without any key. Returns one outcome per artifact, in manifest order.
    pub async fn check_stored(&self, manifest: &Manifest) -> Vec<(ArtifactInfo, Result<()>)> {
        let mut out = Vec::new();
        for a in &manifest.artifacts {
            let r = codec::check_stored(&self.inner.store, a).await;
            out.push((a.clone(), r));
        }
        out
    }

    /// Opens the decoded plaintext of artifact `name` of `manifest`. The age
    /// header is opened before this returns, so a wrong identity fails here.
    ///
    /// # Errors
    /// [`Error::NotFound`] (no such artifact or object), [`Error::Decrypt`],
    /// [`Error::Corrupt`].
    pub async fn open_artifact(
        &self,
        manifest: &Manifest,
        name: &str,
        identities: &Identities,
    ) -> Result<ArtifactReader> {
        let info = manifest.artifact(name).ok_or_else(|| Error::NotFound {
            object: format!(
                "{}/{name}",
                backup_prefix(&manifest.source.name, &manifest.backup_id)
            ),
        })?;
        ArtifactReader::open(self.inner.store.clone(), info, identities).await
    }

    /// Decodes every artifact of `manifest` to the end, checking plaintext and
    /// stored digests, discarding the output. One outcome per artifact.
    pub async fn check_decoded(
        &self,
        manifest: &Manifest,
        identities: &Identities,
    ) -> Vec<(ArtifactInfo, Result<()>)> {
        let mut out = Vec::new();
        for a in &manifest.artifacts {
            let r = async {
                let mut reader =
                    ArtifactReader::open(self.inner.store.clone(), a, identities).await?;
                tokio::io::copy(&mut reader, &mut tokio::io::sink())
                    .await
                    .map_err(|e| Error::from_io(e, format!("reading {}", a.object)))?;
                Ok(())
            }
            .await;
            out.push((a.clone(), r));
        }
        out
    }

    /// Deletes a backup: the manifest first (so it is no longer listed), then
    /// its data objects. An interruption leaves unlisted orphans, never a
    /// listed backup with missing objects.
    ///
    /// # Errors
    /// Store errors; data objects already gone are not an error.
    pub async fn delete_backup(&self, manifest: &Manifest) -> Result<()> {
        let mpath = manifest_path(&manifest.source.name, &manifest.backup_id);
        match self.inner.store.delete(&Path::from(mpath.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store(mpath, e)),
        }
        let prefix = Path::from(backup_prefix(&manifest.source.name, &manifest.backup_id));
        let objects: Vec<_> = self
            .inner
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::store(prefix.to_string(), e))?;
        for o in objects {
            match self.inner.store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(o.location.to_string(), e)),
            }
        }
        Ok(())
    }

    /// Writes `value` as JSON at `path` with a conditional create.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the object exists.
    pub async fn put_json_create<T: Serialize>(&self, path: &str, value: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(value).expect("serialisable");
        put_create(&self.inner.store, path, body.into()).await
    }
}

/// A manifest that exists but cannot be used: it does not parse, its digest
/// does not match, or a newer `dr` wrote it. Its backup is not listed, and
/// must not be deleted as an orphan either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedManifest {
    /// Source name.
    pub source: String,
    /// Backup id (the directory name).
    pub backup_id: String,
    /// The manifest object.
    pub object: String,
    /// What is wrong with it.
    pub reason: String,
}

impl DamagedManifest {
    /// The damage `e` describes, for the manifest of backup `id` of
    /// `source`: `Some` for [`Error::Format`], [`Error::Corrupt`] and
    /// [`Error::UnsupportedFormat`], `None` for any other error (the store
    /// failed: nothing is known about the manifest).
    pub fn from_error(source: &str, id: &str, e: &Error) -> Option<Self> {
        let reason = match e {
            Error::Format { source: cause, .. } => format!("not a valid manifest: {cause}"),
            Error::Corrupt { reason, .. } => reason.clone(),
            Error::UnsupportedFormat {
                found, supported, ..
            } => format!(
                "format version {found}, this dr reads versions up to {supported}: written by a newer dr, or damaged"
            ),
            _ => return None,
        };
        Some(DamagedManifest {
            source: source.to_string(),
            backup_id: id.to_string(),
            object: manifest_path(source, id),
            reason,
        })
    }
}

/// A backup being written. Data goes into artifacts; [`BackupWriter::commit`]
/// writes the manifest, which makes the backup exist.
#[derive(Debug)]
pub struct BackupWriter {
    repo: Repository,
    id: String,
    source: SourceRef,
    started_at: DateTime<Utc>,
    artifacts: Arc<Mutex<Vec<ArtifactInfo>>>,
    /// The tasks of artifacts dropped before they finished.
    abandoned: crate::codec::Abandoned,
    /// The in-progress mark ([`Repository::begin_backup_marked`]).
    mark: Option<crate::lock::BackupMark>,
}

/// How long a backup's in-progress mark lives between renewals (it is
/// renewed every third of it): a killed backup's objects are protected
/// from prune for at most this long beyond the orphan grace.
pub const BACKUP_MARK_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl BackupWriter {
    /// The backup id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The source.
    pub fn source(&self) -> &SourceRef {
        &self.source
    }

    /// The repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// When the backup started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Opens a new artifact called `name` (path segments of letters, digits,
    /// `.`, `_`, `-`, joined by `/`).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad or duplicate name.
    pub fn artifact(&self, name: &str) -> Result<RecordedArtifact> {
        for seg in name.split('/') {
            validate_segment("artifact name", seg)?;
        }
        if self
            .artifacts
            .lock()
            .expect("artifact list")
            .iter()
            .any(|a| a.name == name)
        {
            return Err(Error::InvalidName {
                what: "artifact name",
                name: name.into(),
                reason: "already written in this backup",
            });
        }
        let object = format!(
            "{}/{name}.zst.age",
            backup_prefix(&self.source.name, &self.id)
        );
        let writer = ArtifactWriter::start(
            self.repo.inner.store.clone(),
            name.to_string(),
            object,
            &self.repo.inner.recipients,
            &self.repo.inner.codec,
            self.repo.inner.progress.clone(),
        )?
        .with_abandoned(self.abandoned.clone());
        Ok(RecordedArtifact {
            writer,
            list: self.artifacts.clone(),
        })
    }

    /// Writes all of `reader` as artifact `name`.
    ///
    /// # Errors
    /// As [`BackupWriter::artifact`] and [`RecordedArtifact::finish`].
    pub async fn write_artifact<R: tokio::io::AsyncRead + Unpin + ?Sized>(
        &self,
        name: &str,
        reader: &mut R,
    ) -> Result<ArtifactInfo> {
        let mut w = self.artifact(name)?;
        w.copy_from(reader).await?;
        w.finish().await
    }

    /// Artifacts completed so far.
    pub fn artifacts(&self) -> Vec<ArtifactInfo> {
        self.artifacts.lock().expect("artifact list").clone()
    }

    /// Writes the manifest (conditional create): from now on the backup is
    /// listed. A transient store failure of that write is ambiguous (the
    /// manifest may have been stored before the connection broke): the
    /// manifest is read back and compared, and written again only when it is
    /// not there, up to [`MANIFEST_ATTEMPTS`] times; the same bytes found
    /// there are success.
    ///
    /// # Errors
    /// [`Error::InvalidName`] when no artifact was written; store errors
    /// (after the attempts, for retryable ones); [`Error::AlreadyExists`]
    /// when other bytes are stored under its name.
    pub async fn commit(mut self, metadata: serde_json::Value) -> Result<Manifest> {
        let mark = self.mark.take();
        let committed = self.write_manifest(metadata).await;
        if let Some(mark) = mark {
            mark.release().await;
        }
        committed
    }

    async fn write_manifest(&self, metadata: serde_json::Value) -> Result<Manifest> {
        let artifacts = self.artifacts();
        if artifacts.is_empty() {
            return Err(Error::InvalidName {
                what: "backup",
                name: self.id.clone(),
                reason: "has no artifact; nothing to commit",
            });
        }
        let manifest = Manifest {
            format_version: MANIFEST_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            repository_id: self.repo.inner.config.repository_id.clone(),
            backup_id: self.id.clone(),
            source: self.source.clone(),
            started_at: self.started_at,
            finished_at: Utc::now(),
            codec: CodecInfo {
                compression: "zstd".into(),
                zstd_level: self.repo.inner.codec.zstd_level,
                encryption: "age-x25519".into(),
            },
            recipients: self.repo.inner.recipients.fingerprints(),
            artifacts,
            metadata,
            digest: None,
        }
        .sealed();
        put_create_confirmed(
            &self.repo.inner.store,
            &manifest_path(&self.source.name, &self.id),
            Bytes::from(manifest.to_stored_bytes()),
        )
        .await?;
        tracing::info!(source = %self.source.name, backup_id = %self.id, "backup committed");
        Ok(manifest)
    }

    /// Removes the data objects written so far (best effort); the backup was
    /// never listed.
    pub async fn abort(mut self) {
        let mark = self.mark.take();
        // Artifacts dropped mid-write (a source stopped by a signal) abort
        // their uploads on their own: wait for that, so that no multipart
        // upload (nor a local store's staging file) outlives the backup.
        crate::codec::wait_abandoned(&self.abandoned).await;
        let prefix = Path::from(backup_prefix(&self.source.name, &self.id));
        let store = &self.repo.inner.store;
        if let Ok(objects) = store.list(Some(&prefix)).try_collect::<Vec<_>>().await {
            for o in objects {
                let _ = store.delete(&o.location).await;
            }
        }
        if let Some(mark) = mark {
            mark.release().await;
        }
    }
}

/// An [`ArtifactWriter`] whose [`finish`](RecordedArtifact::finish) records
/// the artifact in its backup.
#[derive(Debug)]
pub struct RecordedArtifact {
    writer: ArtifactWriter,
    list: Arc<Mutex<Vec<ArtifactInfo>>>,
}

impl RecordedArtifact {
    /// Writes the rest of `reader` into the artifact.
    ///
    /// # Errors
    /// I/O errors of the reader or the upload.
    pub async fn copy_from<R: tokio::io::AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> Result<u64> {
        self.writer.copy_from(reader).await
    }

    /// The writer, for `AsyncWrite` use.
    pub fn writer(&mut self) -> &mut ArtifactWriter {
        &mut self.writer
    }

    /// Completes the artifact and records it in the backup.
    ///
    /// # Errors
    /// As [`ArtifactWriter::finish`].
    pub async fn finish(self) -> Result<ArtifactInfo> {
        let info = self.writer.finish().await?;
        self.list.lock().expect("artifact list").push(info.clone());
        Ok(info)
    }

    /// Aborts the upload.
    pub async fn abort(self) {
        self.writer.abort().await
    }
}

async fn get_bytes(store: &Arc<dyn ObjectStore>, path: &str) -> Result<Bytes> {
    let got = store
        .get(&Path::from(path))
        .await
        .map_err(|e| Error::store(path, e))?;
    got.bytes().await.map_err(|e| Error::store(path, e))
}

/// How many times [`BackupWriter::commit`] tries to write a manifest whose
/// write failed transiently.
pub const MANIFEST_ATTEMPTS: u32 = 4;

/// Writes `body` at `path` with a conditional create, resolving ambiguous
/// failures: after a retryable error it waits (250 ms, then 4 times longer
/// each time), reads the object back and compares: the same bytes are
/// success, other bytes [`Error::AlreadyExists`], none a reason to write
/// again; at most [`MANIFEST_ATTEMPTS`] writes.
///
/// # Errors
/// The last store error; [`Error::AlreadyExists`] when other bytes are
/// there.
async fn put_create_confirmed(store: &Arc<dyn ObjectStore>, path: &str, body: Bytes) -> Result<()> {
    let mut delay = std::time::Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        let error = match put_create(store, path, body.clone().into()).await {
            Ok(()) => return Ok(()),
            Err(e @ Error::AlreadyExists { .. }) => e,
            Err(e) if e.is_retryable() => e,
            Err(e) => return Err(e),
        };
        let exists = matches!(error, Error::AlreadyExists { .. });
        if !exists {
            tracing::info!(
                object = path, attempt, error = %error,
                "writing the manifest failed; checking whether it was stored"
            );
            tokio::time::sleep(delay).await;
            delay *= 4;
        }
        // Read back until the read itself succeeds or the attempts run out.
        loop {
            match get_bytes(store, path).await {
                Ok(stored) if stored == body => return Ok(()),
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        object: path.to_string(),
                    })
                }
                Err(Error::NotFound { .. }) if !exists => break,
                Err(e) if e.is_retryable() && attempt < MANIFEST_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(object = path, attempt, error = %e, "reading the manifest back failed");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(Error::NotFound { .. }) => return Err(error),
                Err(e) => return Err(e),
            }
        }
        if attempt >= MANIFEST_ATTEMPTS {
            return Err(error);
        }
        attempt += 1;
    }
}

async fn put_create(store: &Arc<dyn ObjectStore>, path: &str, body: PutPayload) -> Result<()> {
    store
        .put_opts(
            &Path::from(path),
            body,
            PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| Error::store(path, e))
}

/// A staging file of an interrupted write in a local repository (see
/// [`Repository::staging_leftovers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingFile {
    /// Path relative to the repository directory (`backups/db/ID/x.age#3`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
}

/// `object_store`'s staging name: `<name>#<decimal suffix>`.
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(stem, n)| {
        !stem.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Whether `store` holds any backup or WAL object (one listing call each).
///
/// # Errors
/// The store cannot be listed.
async fn holds_data(store: &Arc<dyn ObjectStore>) -> Result<bool> {
    for prefix in ["backups/", "wal/"] {
        let mut listing = store.list(Some(&Path::from(prefix)));
        match listing.try_next().await {
            Ok(Some(_)) => return Ok(true),
            Ok(None) => {}
            Err(e) => return Err(Error::store(prefix, e)),
        }
    }
    Ok(false)
}
