//! The `[repository]` section of `dr.toml`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::codec::CodecOptions;
use crate::error::Result;
use crate::keys::{read_passphrase_file, Identities};
use crate::location::{Location, StoreOptions, DEFAULT_LOCATION};
use crate::repo::KeySource;

/// `[repository]` in `dr.toml`:
///
/// ```toml
/// [repository]
/// url = "s3://backups/prod"          # default: ./dr-repo
/// recipients = ["age1..."]            # used by `dr repo init`
/// identity_file = "/etc/dr/key.txt"   # needed only to read data
/// sse_kms_key_id = "alias/backups"    # S3 server-side encryption
/// zstd_level = 3
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositorySettings {
    /// Repository URL or path (default `./dr-repo`).
    #[serde(default)]
    pub url: Option<String>,
    /// `age1...` recipients for `dr repo init`.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Age identity file, for reading data.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// File holding the repository passphrase (first line).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// SSE-KMS key id for S3.
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    /// S3 endpoint (default `AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region (default `AWS_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// zstd level, 1..=22 (default 3).
    #[serde(default)]
    pub zstd_level: Option<i32>,
    /// zstd worker threads (default: CPUs, at most 4).
    #[serde(default)]
    pub zstd_workers: Option<u32>,
    /// Multipart part size in MiB (default 8).
    #[serde(default)]
    pub part_size_mib: Option<usize>,
    /// Parts uploaded at once (default 4).
    #[serde(default)]
    pub upload_concurrency: Option<usize>,
}

impl RepositorySettings {
    /// The location (`url`, or `./dr-repo`).
    ///
    /// # Errors
    /// [`crate::Error::InvalidLocation`].
    pub fn location(&self) -> Result<Location> {
        Location::parse(self.url.as_deref().unwrap_or(DEFAULT_LOCATION))
    }

    /// Store options.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            sse_kms_key_id: self.sse_kms_key_id.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
        }
    }

    /// Codec options, defaults where unset.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] naming `zstd_level` or `part_size_mib`
    /// when out of range.
    pub fn codec_options(&self) -> Result<CodecOptions> {
        let mut c = CodecOptions::default();
        if let Some(l) = self.zstd_level {
            if !(1..=22).contains(&l) {
                return Err(crate::Error::InvalidName {
                    what: "zstd_level",
                    name: l.to_string(),
                    reason: "must be 1 to 22",
                });
            }
            c.zstd_level = l;
        }
        if let Some(w) = self.zstd_workers {
            c.zstd_workers = w;
        }
        if let Some(p) = self.part_size_mib {
            if p < 5 {
                return Err(crate::Error::InvalidName {
                    what: "part_size_mib",
                    name: p.to_string(),
                    reason: "must be at least 5 (the S3 minimum part size)",
                });
            }
            c.part_size = p * 1024 * 1024;
        }
        if let Some(n) = self.upload_concurrency {
            c.upload_concurrency = n.max(1);
        }
        Ok(c)
    }

    /// The keys for reading data: the identity file and/or the passphrase
    /// (from `passphrase_file`, else the `DR_PASSPHRASE` environment variable).
    ///
    /// # Errors
    /// Unreadable or malformed files.
    pub fn key_source(&self) -> Result<KeySource> {
        let mut keys = KeySource::default();
        if let Some(f) = &self.identity_file {
            keys.identities = Some(Identities::from_file(f)?);
        }
        if let Some(f) = &self.passphrase_file {
            keys.passphrase = Some(read_passphrase_file(f)?);
        } else if let Ok(p) = std::env::var("DR_PASSPHRASE") {
            if !p.is_empty() {
                keys.passphrase = Some(p.into());
            }
        }
        Ok(keys)
    }
}
