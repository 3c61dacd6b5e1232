//! Repository locations: a URL or a path, opened as an [`ObjectStore`].

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;

use crate::durable::DurableLocal;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};

/// The default repository: a directory `./dr-repo` beside the caller.
pub const DEFAULT_LOCATION: &str = "./dr-repo";

/// Options for opening an object store that the URL alone does not carry.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StoreOptions {
    /// SSE-KMS key id for S3 uploads (`x-amz-server-side-encryption: aws:kms`).
    pub sse_kms_key_id: Option<String>,
    /// S3 endpoint; defaults to `AWS_ENDPOINT_URL` from the environment.
    pub endpoint: Option<String>,
    /// S3 region; defaults to `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
}

/// A parsed repository location.
///
/// Accepted forms:
/// - a bare path (`./dr-repo`, `/srv/backups`) or `file:///srv/backups`;
/// - `s3://bucket/prefix`, configured from the AWS environment
///   (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...; see
///   `object_store::aws::AmazonS3Builder::from_env`);
/// - `gs://bucket/prefix` and `az://container/prefix` (the `object_store`
///   builders' own environment);
/// - `memory://name`: an in-memory store shared within the process, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// A cloud bucket URL (`s3://`, `gs://`, `az://`).
    Cloud {
        /// The URL scheme.
        scheme: String,
        /// Bucket or container.
        bucket: String,
        /// Prefix inside the bucket, without leading or trailing `/`.
        prefix: String,
    },
    /// A named in-process memory store.
    Memory(String),
}

impl Location {
    /// Parses a location string.
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] for an unknown scheme, a URL without bucket,
    /// or credentials embedded in the URL.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidLocation {
            location: redact(s),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if !s.contains("://") {
            return Ok(Location::Local(PathBuf::from(s)));
        }
        let url = Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are not accepted; use the environment or a credentials file",
            ));
        }
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|_| invalid("file:// needs an absolute path"))?;
                Ok(Location::Local(path))
            }
            "memory" => Ok(Location::Memory(
                url.host_str().unwrap_or("default").to_string(),
            )),
            scheme @ ("s3" | "s3a" | "gs" | "az" | "azure" | "abfs") => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| invalid("no bucket in the URL"))?
                    .to_string();
                let prefix = url.path().trim_matches('/').to_string();
                let scheme = match scheme {
                    "s3a" => "s3",
                    "azure" | "abfs" => "az",
                    s => s,
                };
                Ok(Location::Cloud {
                    scheme: scheme.to_string(),
                    bucket,
                    prefix,
                })
            }
            other => Err(invalid(&format!(
                "unsupported scheme {other}:// (use a path, file://, s3://, gs://, az:// or memory://)"
            ))),
        }
    }

    /// Opens the object store rooted at this location.
    ///
    /// With `create`, a local directory is created when missing; otherwise a
    /// missing directory is [`Error::NotInitialized`].
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] when the store cannot be configured.
    pub fn open(&self, options: &StoreOptions, create: bool) -> Result<Arc<dyn ObjectStore>> {
        let invalid = |reason: String| Error::InvalidLocation {
            location: self.to_string(),
            reason,
        };
        match self {
            Location::Local(path) => {
                if !path.exists() {
                    if !create {
                        return Err(Error::NotInitialized {
                            location: self.to_string(),
                        });
                    }
                    std::fs::create_dir_all(path).map_err(|source| Error::Io {
                        what: path.display().to_string(),
                        source,
                    })?;
                }
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| invalid(e.to_string()))?
                    .with_automatic_cleanup(true);
                // new_with_prefix canonicalises; sync up to the same directory.
                let root = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                Ok(Arc::new(DurableLocal::new(fs, root)))
            }
            Location::Memory(name) => {
                static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let mut stores = STORES
                    .get_or_init(Default::default)
                    .lock()
                    .expect("memory store registry poisoned");
                let store = stores
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone();
                Ok(store)
            }
            Location::Cloud {
                scheme,
                bucket,
                prefix,
            } => {
                let store: Arc<dyn ObjectStore> = match scheme.as_str() {
                    "s3" => {
                        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                        let endpoint = options
                            .endpoint
                            .clone()
                            .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
                            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
                        if let Some(endpoint) = endpoint {
                            if endpoint.starts_with("http://") {
                                builder = builder.with_allow_http(true);
                            }
                            builder = builder.with_endpoint(endpoint);
                        }
                        let region = options
                            .region
                            .clone()
                            .or_else(|| std::env::var("AWS_REGION").ok())
                            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
                        if let Some(region) = region {
                            builder = builder.with_region(region);
                        }
                        if let Some(key) = &options.sse_kms_key_id {
                            builder = builder.with_sse_kms_encryption(key);
                        }
                        Arc::new(builder.build().map_err(|e| invalid(e.to_string()))?)
                    }
                    "gs" => Arc::new(
                        GoogleCloudStorageBuilder::from_env()
                            .with_bucket_name(bucket)
                            .build()
                            .map_err(|e| invalid(e.to_string()))?,
                    ),
                    "az" => Arc::new(
                        MicrosoftAzureBuilder::from_env()
                            .with_container_name(bucket)
                            .build()
                            .map_err(|e| invalid(e.to_string()))?,
                    ),
                    other => return Err(invalid(format!("unsupported scheme {other}"))),
                };
                if prefix.is_empty() {
                    Ok(store)
                } else {
                    Ok(Arc::new(PrefixStore::new(store, prefix.as_str())))
                }
            }
        }
    }

    /// The local directory, for a local location.
    pub fn local_path(&self) -> Option<&FsPath> {
        match self {
            Location::Local(p) => Some(p),
            _ => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Memory(n) => write!(f, "memory://{n}"),
            Location::Cloud {
                scheme,
                bucket,
                prefix,
            } => write!(f, "{scheme}://{bucket}/{prefix}"),
        }
    }
}

/// Removes user info and query from a URL-like string, for messages.
fn redact(s: &str) -> String {
    match Url::parse(s) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => s.split('?').next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_accepted_forms() {
        assert_eq!(
            Location::parse("./dr-repo").unwrap(),
            Location::Local("./dr-repo".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/r").unwrap(),
            Location::Local("/tmp/r".into())
        );
        assert_eq!(
            Location::parse("s3://bucket/a/b/").unwrap(),
            Location::Cloud {
                scheme: "s3".into(),
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse("memory://t1").unwrap(),
            Location::Memory("t1".into())
        );
    }

    #[test]
    fn refuses_credentials_and_unknown_schemes() {
        let err = Location::parse("s3://key:secret@bucket/p").unwrap_err();
        assert!(matches!(err, Error::InvalidLocation { .. }));
        assert!(!err.to_string().contains("secret"));
        assert!(matches!(
            Location::parse("ftp://host/x").unwrap_err(),
            Error::InvalidLocation { .. }
        ));
        assert!(matches!(
            Location::parse("s3:///nobucket").unwrap_err(),
            Error::InvalidLocation { .. }
        ));
    }
}
