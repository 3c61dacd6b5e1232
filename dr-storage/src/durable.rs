//! A local-directory store whose writes are durable when they return.
//!
//! `object_store`'s [`LocalFileSystem`] (0.12) writes through a staging file
//! and a rename but never calls `fsync`, so after a power loss a WAL segment
//! that `wal-push` reported as archived (and PostgreSQL then recycled) could
//! be gone, or a manifest could survive while its data did not. PostgreSQL 15
//! docs §26.3.1: the archive command must not report success until the file
//! is safely stored. [`DurableLocal`] wraps it and, after every completed
//! write (put, multipart completion, copy, rename), syncs the file and the
//! directories from it up to the repository root (a new object may have
//! created its directories), as pgBackRest does for a posix repository.
//! Reads, lists and deletes pass through unchanged.

use std::fmt;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// [`LocalFileSystem`] with `fsync` after writes. See the module docs.
#[derive(Debug)]
pub struct DurableLocal {
    inner: Arc<LocalFileSystem>,
    root: PathBuf,
}

impl DurableLocal {
    /// Wraps `inner`, whose prefix is the directory `root`.
    pub fn new(inner: LocalFileSystem, root: impl Into<PathBuf>) -> Self {
        DurableLocal {
            inner: Arc::new(inner),
            root: root.into(),
        }
    }

    async fn sync(&self, location: &Path) -> Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || sync_file_and_dirs(&file, &root))
            .await
            .map_err(|e| generic(std::io::Error::other(e)))?
            .map_err(generic)
    }
}

fn generic(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem (fsync)",
        source: Box::new(e),
    }
}

/// Syncs `file`, then each directory from its parent up to `root` inclusive.
fn sync_file_and_dirs(file: &FsPath, root: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

impl fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (fsync)", self.inner)
    }
}

#[async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DurableUpload {
            upload,
            store: DurableLocal {
                inner: self.inner.clone(),
                root: self.root.clone(),
            },
            location: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy(from, to).await?;
        self.sync(to).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename(from, to).await?;
        self.sync(to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.copy_if_not_exists(from, to).await?;
        self.sync(to).await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename_if_not_exists(from, to).await?;
        self.sync(to).await
    }
}

/// A multipart upload whose completion syncs the file.
#[derive(Debug)]
struct DurableUpload {
    upload: Box<dyn MultipartUpload>,
    store: DurableLocal,
    location: Path,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.upload.complete().await?;
        self.store.sync(&self.location).await?;
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::{PutMode, WriteMultipart};

    #[tokio::test]
    async fn writes_land_and_read_back_through_the_wrapper() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableLocal::new(
            LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
            dir.path(),
        );
        let p = Path::from("a/b/c.bin");
        store
            .put_opts(&p, PutPayload::from_static(b"one"), PutMode::Create.into())
            .await
            .unwrap();
        let again = store
            .put_opts(&p, PutPayload::from_static(b"two"), PutMode::Create.into())
            .await;
        assert!(matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        assert_eq!(std::fs::read(dir.path().join("a/b/c.bin")).unwrap(), b"one");

        let m = Path::from("a/m.bin");
        let mut w = WriteMultipart::new(store.put_multipart(&m).await.unwrap());
        w.write(&[7u8; 1000]);
        w.finish().await.unwrap();
        let got = store.get(&m).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.len(), 1000);
        let listed: Vec<_> = store
            .list(Some(&Path::from("a")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
    }
}
