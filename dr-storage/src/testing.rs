//! A fault-injecting [`ObjectStore`] wrapper for tests (feature `testing`).
//!
//! [`FaultyStore`] passes every call to the store it wraps and fails the
//! calls its [`Fault`]s select: the Nth call of one kind ([`Op`]), optionally
//! only on paths containing a string, either *before* the call reaches the
//! store (nothing happened) or *after* it succeeded (the effect happened but
//! the caller sees an error, as after a connection reset on the response: an
//! ambiguous failure). It also counts multipart uploads that were started
//! and neither completed nor aborted ([`FaultyStore::open_uploads`]): a
//! writer that fails must leave none.
//!
//! An injected error is `object_store::Error::Generic` over an
//! `io::ErrorKind::ConnectionReset` whose text contains `injected fault`, so
//! [`crate::Error::is_retryable`] treats it as a network fault.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use dr_storage::object_store::{memory::InMemory, path::Path, ObjectStore};
//! use dr_storage::testing::{Fault, FaultyStore, Op};
//! let store = FaultyStore::new(Arc::new(InMemory::new()));
//! store.inject(Fault::new(Op::Put).nth(2).after_success());
//! store.put(&Path::from("a"), "1".into()).await.unwrap();
//! assert!(store.put(&Path::from("b"), "2".into()).await.is_err());
//! // ... and yet it was written.
//! assert!(store.head(&Path::from("b")).await.is_ok());
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};

/// A kind of store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `put` / `put_opts` (a whole object, conditional or not).
    Put,
    /// Starting a multipart upload (`put_multipart_opts`).
    PutMultipart,
    /// One part of a multipart upload.
    PutPart,
    /// Completing a multipart upload.
    Complete,
    /// Aborting a multipart upload.
    Abort,
    /// `get` / `get_opts` / `get_range(s)` / `head`.
    Get,
    /// `list`, `list_with_offset`, `list_with_delimiter`.
    List,
    /// `delete`.
    Delete,
    /// `copy`, `rename` and their `_if_not_exists` forms.
    Copy,
}

/// Which calls fail, and how. Build with [`Fault::new`] and the methods
/// below; hand to [`FaultyStore::inject`].
#[derive(Debug, Clone)]
pub struct Fault {
    op: Op,
    path_contains: Option<String>,
    nth: usize,
    times: usize,
    after_success: bool,
}

impl Fault {
    /// Fails the first matching call of `op`, before it reaches the store.
    pub fn new(op: Op) -> Self {
        Fault {
            op,
            path_contains: None,
            nth: 1,
            times: 1,
            after_success: false,
        }
    }

    /// Fails from the `n`th matching call on (1-based; default 1).
    pub fn nth(mut self, n: usize) -> Self {
        self.nth = n.max(1);
        self
    }

    /// Fails `n` matching calls in a row (default 1; `usize::MAX`: all).
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    /// Only calls on a path containing `s` match (for parts, completion
    /// and abort: the upload's path).
    pub fn on_paths_containing(mut self, s: impl Into<String>) -> Self {
        self.path_contains = Some(s.into());
        self
    }

    /// The call is carried out, then reported as failed (an ambiguous
    /// failure). Not meaningful for [`Op::List`] and [`Op::Get`], which fail
    /// before.
    pub fn after_success(mut self) -> Self {
        self.after_success = true;
        self
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    seen: usize,
    fired: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadState {
    Open,
    Completed,
    Aborted,
}

#[derive(Debug, Default)]
struct State {
    faults: Vec<Armed>,
    calls: BTreeMap<Op, usize>,
    uploads: Vec<UploadState>,
    injected: usize,
}

/// When a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fire {
    No,
    Before,
    After,
}

impl State {
    fn check(&mut self, op: Op, path: &Path) -> Fire {
        *self.calls.entry(op).or_default() += 1;
        let mut fire = Fire::No;
        for a in self.faults.iter_mut() {
            if a.fault.op != op {
                continue;
            }
            if let Some(s) = &a.fault.path_contains {
                if !path.as_ref().contains(s.as_str()) {
                    continue;
                }
            }
            a.seen += 1;
            if fire == Fire::No && a.seen >= a.fault.nth && a.fired < a.fault.times {
                a.fired += 1;
                fire = if a.fault.after_success {
                    Fire::After
                } else {
                    Fire::Before
                };
            }
        }
        if fire != Fire::No {
            self.injected += 1;
        }
        fire
    }
}

fn injected(op: Op, path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            format!("injected fault: {op:?} on {path}"),
        )),
    }
}

/// An [`ObjectStore`] that fails the calls its [`Fault`]s select. Cheap to
/// clone: clones share faults and counters. See the module docs.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl FaultyStore {
    /// Wraps `inner`, with no fault yet.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyStore {
            inner,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Adds a fault. Faults are checked in the order added; one call fires
    /// at most one fault, but counts toward every fault it matches.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(Armed {
            fault,
            seen: 0,
            fired: 0,
        });
    }

    /// Removes every fault (counters stay).
    pub fn heal(&self) {
        self.lock().faults.clear();
    }

    /// How many calls of `op` were made.
    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many calls failed by injection so far.
    pub fn injected(&self) -> usize {
        self.lock().injected
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.lock()
            .uploads
            .iter()
            .filter(|u| **u == UploadState::Open)
            .count()
    }

    /// Multipart uploads started.
    pub fn uploads_started(&self) -> usize {
        self.lock().uploads.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, op: Op, path: &Path) -> Fire {
        self.lock().check(op, path)
    }

    /// Runs `call` under the faults of `op` on `path`.
    async fn guarded<T>(
        &self,
        op: Op,
        path: &Path,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.check(op, path) {
            Fire::No => call.await,
            Fire::Before => Err(injected(op, path)),
            Fire::After => {
                call.await?;
                Err(injected(op, path))
            }
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.guarded(
            Op::Put,
            location,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        match self.check(Op::PutMultipart, location) {
            Fire::No => {}
            Fire::Before => return Err(injected(Op::PutMultipart, location)),
            Fire::After => {
                // Started on the store, lost on the way back: a leak the
                // caller cannot abort. Counted as open.
                let _ = self.inner.put_multipart_opts(location, opts).await?;
                self.lock().uploads.push(UploadState::Open);
                return Err(injected(Op::PutMultipart, location));
            }
        }
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        let index = {
            let mut s = self.lock();
            s.uploads.push(UploadState::Open);
            s.uploads.len() - 1
        };
        Ok(Box::new(FaultyUpload {
            upload,
            store: self.clone(),
            location: location.clone(),
            index,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if self.check(Op::Get, location) != Fire::No {
            return Err(injected(Op::Get, location));
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if self.check(Op::Get, location) != Fire::No {
            return Err(injected(Op::Get, location));
        }
        self.inner.get_ranges(location, ranges).await
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        if self.check(Op::Get, location) != Fire::No {
            return Err(injected(Op::Get, location));
        }
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.guarded(Op::Delete, location, self.inner.delete(location))
            .await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        if self.check(Op::List, &path) != Fire::No {
            return futures::stream::once(async move { Err(injected(Op::List, &path)) }).boxed();
        }
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        if self.check(Op::List, &path) != Fire::No {
            return futures::stream::once(async move { Err(injected(Op::List, &path)) }).boxed();
        }
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let path = prefix.cloned().unwrap_or_default();
        if self.check(Op::List, &path) != Fire::No {
            return Err(injected(Op::List, &path));
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.guarded(Op::Copy, to, self.inner.copy(from, to)).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.guarded(Op::Copy, to, self.inner.rename(from, to))
            .await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.guarded(Op::Copy, to, self.inner.copy_if_not_exists(from, to))
            .await
    }

    async fn rename_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.guarded(Op::Copy, to, self.inner.rename_if_not_exists(from, to))
            .await
    }
}

/// A multipart upload of a [`FaultyStore`].
#[derive(Debug)]
struct FaultyUpload {
    upload: Box<dyn MultipartUpload>,
    store: FaultyStore,
    location: Path,
    index: usize,
}

impl FaultyUpload {
    fn set(&self, state: UploadState) {
        let mut s = self.store.lock();
        if s.uploads[self.index] == UploadState::Open {
            s.uploads[self.index] = state;
        }
    }
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let location = self.location.clone();
        match self.store.check(Op::PutPart, &location) {
            Fire::No => self.upload.put_part(data),
            Fire::Before => async move { Err(injected(Op::PutPart, &location)) }.boxed(),
            Fire::After => {
                let part = self.upload.put_part(data);
                async move {
                    part.await?;
                    Err(injected(Op::PutPart, &location))
                }
                .boxed()
            }
        }
    }

    async fn complete(&mut self) -> Result<PutResult> {
        match self.store.check(Op::Complete, &self.location) {
            Fire::No => {}
            Fire::Before => return Err(injected(Op::Complete, &self.location)),
            Fire::After => {
                self.upload.complete().await?;
                self.set(UploadState::Completed);
                return Err(injected(Op::Complete, &self.location));
            }
        }
        let r = self.upload.complete().await?;
        self.set(UploadState::Completed);
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        match self.store.check(Op::Abort, &self.location) {
            Fire::No => {}
            Fire::Before => return Err(injected(Op::Abort, &self.location)),
            Fire::After => {
                self.upload.abort().await?;
                self.set(UploadState::Aborted);
                return Err(injected(Op::Abort, &self.location));
            }
        }
        self.upload.abort().await?;
        self.set(UploadState::Aborted);
        Ok(())
    }
}
