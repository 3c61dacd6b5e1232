//! The `dr` repository: where backups live.
//!
//! One prefix in one object store (the [`object_store`] crate: a local
//! directory by default, `s3://`, `gs://`, `az://`, `memory://`) holds
//! `dr-repo.json` and, per source, backups made of encrypted artifacts and a
//! manifest written last.
//!
//! Main types:
//! - [`Location`]: parses a repository URL or path and opens its store.
//! - [`Repository`]: `init`, `open`, list and find backups, read artifacts,
//!   check them, delete backups.
//! - [`BackupWriter`]: writes artifacts through the codec, then commits the
//!   [`Manifest`].
//! - [`Recipients`] / [`Identities`]: age X25519 keys.
//! - [`WalArchive`]: archived PostgreSQL WAL, create-only, named by digest,
//!   the first writer of a file name winning.
//!
//! Features: `testing` adds `testing::FaultyStore`, a fault-injecting
//! store wrapper for tests of code that writes to a repository.
//!
//! Manifests and `dr-repo.json` carry a SHA-256 digest of their canonical
//! JSON, checked on every read: a flipped byte in one is damage naming it
//! ([`Error::Corrupt`]), and a backup whose manifest is damaged is reported,
//! never taken for an orphan (see [`Manifest`] and [`DamagedManifest`]).
//!
//! The codec compresses with zstd, encrypts with age, and records size and
//! SHA-256 of plaintext and stored bytes. Everything streams: memory stays at a
//! few chunk buffers plus `part_size * (upload_concurrency + 1)` of upload
//! buffers (about 40 MiB at the defaults), whatever the backup size.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), dr_storage::Error> {
//! use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};
//! let key = Identities::generate();
//! let location = Location::parse("memory://doc-example")?;
//! let repo = Repository::init(
//!     &location,
//!     &StoreOptions::default(),
//!     InitOptions::with_recipients(key.recipients().to_strings()),
//! )
//! .await?;
//! let backup = repo.begin_backup("example", "notes")?;
//! backup.write_artifact("notes.txt", &mut &b"hello"[..]).await?;
//! let manifest = backup.commit(serde_json::json!({})).await?;
//!
//! let mut reader = repo.open_artifact(&manifest, "notes.txt", &key).await?;
//! let mut text = String::new();
//! tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text).await.unwrap();
//! assert_eq!(text, "hello");
//! # Ok(()) }
//! ```

mod codec;
mod config;
mod durable;
mod error;
mod keys;
mod location;
mod lock;
mod manifest;
mod progress;
mod repo;
#[cfg(feature = "testing")]
pub mod testing;
mod wal;

pub use codec::{ArtifactInfo, ArtifactReader, ArtifactWriter, CodecOptions};
pub use config::RepositorySettings;
pub use durable::DurableLocal;
pub use error::{Error, Result};
pub use keys::{fingerprint, read_passphrase_file, Identities, Recipients, SCRYPT_WORK_FACTOR};
pub use location::{Location, StoreOptions, DEFAULT_LOCATION};
pub use lock::{host_name, Lease, LeaseInfo, LeaseOptions};
pub use manifest::{new_backup_id, CodecInfo, Manifest, SourceRef, MANIFEST_VERSION};
pub use object_store;
pub use progress::{NoProgress, Progress};
pub use repo::{
    validate_source_name, BackupWriter, DamagedManifest, InitOptions, KeySource, RecordedArtifact,
    RepoConfig, Repository, StagingFile, BACKUP_MARK_TTL, FORMAT_VERSION, MANIFEST_ATTEMPTS,
    REPO_CONFIG,
};
pub use wal::{
    sha256_hex, validate_wal_name, wal_claim_path, wal_events_path, write_atomically,
    write_atomically_with, PushOutcome, Registration, WalArchive, WalArchiveInfo, WalConflict,
    WalEvent, WalObject, EVENTS_DIR, WAL_ARCHIVE_VERSION, WAL_ATTEMPTS, WAL_PREFIX,
};
