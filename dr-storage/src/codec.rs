//! The stream codec: plaintext -> zstd -> age -> stored object, with the size and
//! SHA-256 of both the plaintext and the stored bytes.
//!
//! Encoding and decoding run on a blocking thread (zstd and age are synchronous
//! `Write`/`Read` adapters) joined to the async side by bounded channels, so the
//! memory in flight is a few chunk buffers plus the multipart upload buffers,
//! whatever the size of the stream.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::PollSender;

use crate::error::{Error, Result};
use crate::keys::{Identities, Recipients};
use crate::progress::Progress;

/// Size of the chunks passed between the async side and the codec thread.
const CHUNK: usize = 256 * 1024;

/// Size of the plaintext chunks a decoder hands on, in bytes. zstd returns at
/// most one block (128 KiB) per read; the decoder fills a whole chunk first,
/// so that each hand-off (a thread wake-up for the digest and one for the
/// consumer) carries a megabyte.
const DECODE_CHUNK: usize = 1024 * 1024;

/// zstd multi-threaded job size (bytes).
const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// Codec settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CodecOptions {
    /// zstd level, 1..=22 (default 3).
    pub zstd_level: i32,
    /// zstd worker threads; 0 compresses on the codec thread itself.
    /// Default: the number of CPUs, at most 4.
    pub zstd_workers: u32,
    /// Multipart part size in bytes (default 8 MiB; S3 needs at least 5 MiB).
    pub part_size: usize,
    /// Parts uploaded at once (default 4). Upload memory is about
    /// `part_size * (upload_concurrency + 1)`.
    pub upload_concurrency: usize,
}

impl Default for CodecOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        CodecOptions {
            zstd_level: 3,
            zstd_workers: cpus.min(4),
            part_size: 8 * 1024 * 1024,
            upload_concurrency: 4,
        }
    }
}

/// What the repository records about one stored stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ArtifactInfo {
    /// The artifact's name inside its backup (`database.pgdump`).
    pub name: String,
    /// The object path relative to the repository root.
    pub object: String,
    /// Plaintext bytes.
    pub plain_size: u64,
    /// SHA-256 of the plaintext, hex.
    pub plain_sha256: String,
    /// Stored (compressed and encrypted) bytes.
    pub stored_size: u64,
    /// SHA-256 of the stored bytes, hex.
    pub stored_sha256: String,
}

struct Tally {
    hasher: Sha256,
    bytes: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }
    fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

/// `Write` end of the codec thread: hashes the stored bytes and hands them to
/// the uploader in chunks.
struct ChannelWrite {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    tally: Tally,
}

impl ChannelWrite {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl Write for ChannelWrite {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.tally.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream being written into one repository object.
///
/// Write the plaintext through [`AsyncWrite`], then call
/// [`ArtifactWriter::finish`]; only `finish` makes the object complete. Dropping
/// the writer or calling [`ArtifactWriter::abort`] aborts the upload and leaves
/// no parts on the store.
///
/// When the store fails (a part, the completion, the start of the upload),
/// the multipart upload is aborted, and the store's error, as
/// [`Error::Store`] naming the object with the store's error as its source,
/// is what the next write, [`ArtifactWriter::copy_from`] or
/// [`ArtifactWriter::finish`] returns; a write returns it inside an
/// `io::Error` that [`Error::from_io`] unwraps. No failure panics.
pub struct ArtifactWriter {
    name: String,
    object: String,
    tx: Option<PollSender<Bytes>>,
    plain: Tally,
    progress: Arc<dyn Progress>,
    encoder: Option<JoinHandle<Result<(u64, String)>>>,
    uploader: Option<JoinHandle<Result<()>>>,
    commit: Option<tokio::sync::oneshot::Sender<()>>,
    /// The encoder's outcome, once joined.
    encoded: Option<Result<(u64, String)>>,
    /// The uploader's outcome, once joined.
    uploaded: Option<Result<()>>,
    /// The failure already returned, for later calls.
    failed: Option<String>,
    /// Where a writer dropped before `finish` leaves its tasks, so that the
    /// backup's abort can wait until they have aborted the upload.
    abandoned: Option<Abandoned>,
}

/// The tasks of artifact writers dropped before they finished: each aborts
/// its upload on its own; [`wait_abandoned`] waits until they have.
#[derive(Clone, Default)]
pub(crate) struct Abandoned(Arc<std::sync::Mutex<Vec<futures::future::BoxFuture<'static, ()>>>>);

impl std::fmt::Debug for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|v| v.len()).unwrap_or_default();
        write!(f, "Abandoned({n})")
    }
}

impl Abandoned {
    fn push(&self, tasks: futures::future::BoxFuture<'static, ()>) {
        self.0.lock().expect("abandoned list").push(tasks);
    }
}

/// Waits until every dropped writer's tasks of `abandoned` have ended (their
/// multipart uploads aborted, a local store's staging files removed).
pub(crate) async fn wait_abandoned(abandoned: &Abandoned) {
    let pending: Vec<_> = std::mem::take(&mut *abandoned.0.lock().expect("abandoned list"));
    futures::future::join_all(pending).await;
}

impl std::fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("object", &self.object)
            .field("plain_bytes", &self.plain.bytes)
            .finish()
    }
}

/// The outcome of a joined task.
fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>, what: String) -> Result<T> {
    r.map_err(|e| Error::Io {
        what,
        source: io::Error::other(e),
    })?
}

impl ArtifactWriter {
    pub(crate) fn start(
        store: Arc<dyn ObjectStore>,
        name: String,
        object: String,
        recipients: &Recipients,
        options: &CodecOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<Self> {
        let (plain_tx, mut plain_rx) = mpsc::channel::<Bytes>(4);
        let (stored_tx, stored_rx) = mpsc::channel::<Bytes>(4);
        let recipients = recipients.clone();
        let opts = options.clone();
        let obj = object.clone();
        let encoder = tokio::task::spawn_blocking(move || -> Result<(u64, String)> {
            let io_err = |source: io::Error| Error::Io {
                what: format!("encoding {obj}"),
                source,
            };
            let out = ChannelWrite {
                tx: stored_tx,
                buf: BytesMut::with_capacity(CHUNK * 2),
                tally: Tally::new(),
            };
            let encryptor = age::Encryptor::with_recipients(
                recipients.0.iter().map(|r| r as &dyn age::Recipient),
            )
            .map_err(|e| Error::InvalidKey {
                what: "repository recipients".into(),
                reason: e.to_string(),
            })?;
            let age_out = encryptor.wrap_output(out).map_err(io_err)?;
            let mut zstd =
                zstd::stream::write::Encoder::new(age_out, opts.zstd_level).map_err(io_err)?;
            if opts.zstd_workers > 0 {
                zstd.multithread(opts.zstd_workers).map_err(io_err)?;
                // Smaller jobs than zstd's default (4 x window) bound the
                // memory of each worker; the ratio is unchanged at level 3.
                zstd.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))
                    .map_err(io_err)?;
            }
            while let Some(chunk) = plain_rx.blocking_recv() {
                zstd.write_all(&chunk).map_err(io_err)?;
            }
            let age_out = zstd.finish().map_err(io_err)?;
            let mut out = age_out.finish().map_err(io_err)?;
            out.send().map_err(io_err)?;
            Ok(out.tally.finish())
        });
        let (commit_tx, commit_rx) = tokio::sync::oneshot::channel::<()>();
        let uploader = tokio::spawn(upload(
            store,
            object.clone(),
            options.part_size.max(1),
            options.upload_concurrency.max(1),
            stored_rx,
            commit_rx,
        ));
        Ok(ArtifactWriter {
            name,
            object,
            tx: Some(PollSender::new(plain_tx)),
            plain: Tally::new(),
            progress,
            encoder: Some(encoder),
            uploader: Some(uploader),
            commit: Some(commit_tx),
            encoded: None,
            uploaded: None,
            failed: None,
            abandoned: None,
        })
    }

    /// The object path this writer fills.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Writes the rest of `reader` into the artifact.
    ///
    /// # Errors
    /// I/O errors of the reader; the store's error ([`Error::Store`]) when
    /// the upload failed, or the codec's; the upload is then aborted.
    pub async fn copy_from<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> Result<u64> {
        let object = self.object.clone();
        tokio::io::copy(reader, self)
            .await
            .map_err(|e| Error::from_io(e, format!("writing {object}")))
    }

    /// Once the encoder has stopped early: stops the upload (it aborts
    /// without the commit signal), joins both tasks and returns the cause
    /// of the failure: the store's error before the codec's broken pipe.
    fn poll_failure(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        self.tx.take();
        self.commit.take();
        if let Some(h) = self.encoder.as_mut() {
            let r = std::task::ready!(Pin::new(h).poll(cx));
            self.encoder = None;
            self.encoded = Some(joined(r, format!("encoding {}", self.object)));
        }
        if let Some(h) = self.uploader.as_mut() {
            let r = std::task::ready!(Pin::new(h).poll(cx));
            self.uploader = None;
            self.uploaded = Some(joined(r, format!("uploading {}", self.object)));
        }
        Poll::Ready(self.take_cause())
    }

    /// The cause of a failure from the joined outcomes; remembers its text.
    fn take_cause(&mut self) -> Error {
        let uploaded = self.uploaded.take();
        let encoded = self.encoded.take();
        let cause = match (uploaded, encoded) {
            (Some(Err(e)), _) if !matches!(e, Error::Aborted { .. }) => e,
            (_, Some(Err(e))) => e,
            (Some(Err(e)), _) => e,
            _ => Error::Aborted {
                what: format!("upload of {}", self.object),
            },
        };
        self.failed = Some(chain(&cause));
        cause
    }

    /// The error for a call after the failure was reported.
    fn failed_before(&self) -> Error {
        Error::Aborted {
            what: format!(
                "upload of {} (it failed: {})",
                self.object,
                self.failed.as_deref().unwrap_or("finished or aborted")
            ),
        }
    }

    /// Completes the object: flushes the codec, completes the upload, and
    /// returns what the manifest records.
    ///
    /// # Errors
    /// Any failure of the codec or the upload, the store's first
    /// ([`Error::Store`] naming the object); the upload is then aborted.
    /// After a write already returned a failure, [`Error::Aborted`] saying
    /// so.
    pub async fn finish(mut self) -> Result<ArtifactInfo> {
        self.tx.take(); // closes the plaintext channel: the encoder finishes
        let (Some(encoder), Some(uploader)) = (self.encoder.take(), self.uploader.take()) else {
            return Err(self.failed_before());
        };
        let encoded = joined(encoder.await, format!("encoding {}", self.object));
        if let (Ok(_), Some(commit)) = (&encoded, self.commit.take()) {
            let _ = commit.send(());
        }
        self.commit.take();
        let uploaded = joined(uploader.await, format!("uploading {}", self.object));
        if encoded.is_err() || uploaded.is_err() {
            self.encoded = Some(encoded);
            self.uploaded = Some(uploaded);
            return Err(self.take_cause());
        }
        let (stored_size, stored_sha256) = encoded?;
        let plain = std::mem::replace(&mut self.plain, Tally::new());
        let (plain_size, plain_sha256) = plain.finish();
        Ok(ArtifactInfo {
            name: self.name.clone(),
            object: self.object.clone(),
            plain_size,
            plain_sha256,
            stored_size,
            stored_sha256,
        })
    }

    /// Aborts the upload and waits until it is aborted; nothing of this
    /// object remains on the store (as far as the store's abort succeeds).
    pub async fn abort(mut self) {
        self.tx.take();
        self.commit.take();
        if let Some(e) = self.encoder.take() {
            let _ = e.await;
        }
        if let Some(u) = self.uploader.take() {
            let _ = u.await;
        }
    }
}

/// `e` and its causes, `": "`-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Uploads the stored bytes arriving on `rx` into `object`: with one `put`
/// when they fit in one part, else as a multipart upload of `part_size`
/// parts, at most `concurrency` in flight. The object is completed only
/// once `commit` fires; when it is dropped instead, or anything fails, the
/// parts in flight are stopped and the multipart upload aborted (awaited)
/// before this returns.
///
/// # Errors
/// [`Error::Store`] (or another [`Error::store`] mapping) naming `object`
/// with the store's error; [`Error::Aborted`] without the commit signal.
async fn upload(
    store: Arc<dyn ObjectStore>,
    object: String,
    part_size: usize,
    concurrency: usize,
    mut rx: mpsc::Receiver<Bytes>,
    commit: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    let path = Path::from(object.as_str());
    let fail = |e: object_store::Error| Error::store(object.as_str(), e);
    let mut upload: Option<Box<dyn MultipartUpload>> = None;
    let mut parts: JoinSet<object_store::Result<()>> = JoinSet::new();
    let outcome = async {
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        while let Some(mut chunk) = rx.recv().await {
            // A part that already failed stops the upload early.
            while let Some(done) = parts.try_join_next() {
                part_result(done, &object)?;
            }
            while !chunk.is_empty() {
                let take = (part_size - pending_len).min(chunk.len());
                pending.push(chunk.split_to(take));
                pending_len += take;
                if pending_len < part_size {
                    continue;
                }
                let up = match &mut upload {
                    Some(u) => u,
                    None => upload.insert(store.put_multipart(&path).await.map_err(fail)?),
                };
                while parts.len() >= concurrency {
                    let done = parts.join_next().await.expect("parts in flight");
                    part_result(done, &object)?;
                }
                let payload: PutPayload = std::mem::take(&mut pending).into_iter().collect();
                pending_len = 0;
                parts.spawn(up.put_part(payload));
            }
        }
        // Complete only when `finish` says the encoder succeeded; a dropped
        // writer or a failed encoder aborts.
        if commit.await.is_err() {
            return Ok(false);
        }
        let last: PutPayload = pending.into_iter().collect();
        match upload.as_mut() {
            None => {
                store.put(&path, last).await.map_err(fail)?;
            }
            Some(up) => {
                if pending_len > 0 {
                    parts.spawn(up.put_part(last));
                }
                while let Some(done) = parts.join_next().await {
                    part_result(done, &object)?;
                }
                up.complete().await.map_err(fail)?;
            }
        }
        Ok(true)
    }
    .await;
    let error = match outcome {
        Ok(true) => return Ok(()),
        Ok(false) => Error::Aborted {
            what: format!("upload of {object}"),
        },
        Err(e) => e,
    };
    // Unblock the encoder, stop the parts in flight, then abort: the store
    // drops the parts sent.
    drop(rx);
    parts.shutdown().await;
    if let Some(mut up) = upload {
        if let Err(e) = up.abort().await {
            tracing::warn!(object = %object, error = %chain(&e), "aborting the multipart upload failed");
        }
    }
    Err(error)
}

/// The outcome of one joined part upload.
fn part_result(
    done: std::result::Result<object_store::Result<()>, tokio::task::JoinError>,
    object: &str,
) -> Result<()> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::store(object, e)),
        Err(e) => Err(Error::Io {
            what: format!("uploading a part of {object}"),
            source: io::Error::other(e),
        }),
    }
}

impl Drop for ArtifactWriter {
    fn drop(&mut self) {
        // A writer dropped before `finish` never completes its upload: with the
        // commit signal gone, the uploader task aborts it on its own. Its
        // tasks are handed to the backup, whose abort waits for them.
        self.commit.take();
        self.tx.take();
        if let Some(abandoned) = &self.abandoned {
            let encoder = self.encoder.take();
            let uploader = self.uploader.take();
            if encoder.is_some() || uploader.is_some() {
                abandoned.push(Box::pin(async move {
                    if let Some(u) = uploader {
                        let _ = u.await;
                    }
                    if let Some(e) = encoder {
                        let _ = e.await;
                    }
                }));
            }
        }
    }
}

impl ArtifactWriter {
    /// Hands this writer's tasks to `abandoned` if it is dropped before it
    /// finished.
    pub(crate) fn with_abandoned(mut self, abandoned: Abandoned) -> Self {
        self.abandoned = Some(abandoned);
        self
    }
}

impl AsyncWrite for ArtifactWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(tx) = this.tx.as_mut() else {
            if this.encoder.is_some() || this.uploader.is_some() {
                // A failure is being collected (an earlier call returned
                // Pending on it).
                let cause = std::task::ready!(this.poll_failure(cx));
                return Poll::Ready(Err(cause.into_io()));
            }
            let e = match &this.failed {
                Some(_) => this.failed_before(),
                None => Error::Aborted {
                    what: format!("artifact {} (closed)", this.object),
                },
            };
            return Poll::Ready(Err(e.into_io()));
        };
        match tx.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            // The encoder stopped: the upload or the codec failed.
            Poll::Ready(Err(_)) => {
                let cause = std::task::ready!(this.poll_failure(cx));
                return Poll::Ready(Err(cause.into_io()));
            }
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.len().min(CHUNK);
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        if tx.send_item(chunk.clone()).is_err() {
            let cause = std::task::ready!(this.poll_failure(cx));
            return Poll::Ready(Err(cause.into_io()));
        }
        this.plain.update(&chunk);
        this.progress.add_bytes(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `Read` over the stored bytes that hashes what passes.
struct TallyRead<R> {
    inner: R,
    tally: Tally,
}

impl<R: Read> Read for TallyRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally.update(&buf[..n]);
        Ok(n)
    }
}

/// The decoded plaintext of one artifact, as an [`AsyncRead`].
///
/// The sizes and SHA-256 of both the stored bytes and the plaintext are checked
/// against the manifest when the stream ends: a mismatch is an error returned
/// by the final read instead of end-of-file, so a consumer never sees a clean
/// end of a corrupt artifact. Errors carry an [`Error`] that
/// [`Error::from_io`] recovers.
pub struct ArtifactReader {
    inner: StreamReader<tokio_stream_adapter::Receiver, Bytes>,
    decoder: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ArtifactReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactReader").finish_non_exhaustive()
    }
}

mod tokio_stream_adapter {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use tokio::sync::mpsc;

    /// `Stream` over a channel receiver.
    pub struct Receiver(pub mpsc::Receiver<std::io::Result<Bytes>>);

    impl futures::Stream for Receiver {
        type Item = std::io::Result<Bytes>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

impl ArtifactReader {
    /// Starts decoding `info` from `store`. Returns once the age header has been
    /// opened with `identities`, so a wrong key fails here, before any output.
    pub(crate) async fn open(
        store: Arc<dyn ObjectStore>,
        info: &ArtifactInfo,
        identities: &Identities,
    ) -> Result<Self> {
        let stored = open_stored(&store, &info.object).await?;
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let info_for_check = info.clone();
        let info = info.clone();
        let identities = identities.clone();
        let decoder = tokio::task::spawn_blocking(move || {
            let mut ready = Some(ready_tx);
            let outcome = decode(stored.into_blocking(), &info, &identities, &tx, &mut ready);
            if let Err(e) = outcome {
                match ready.take() {
                    Some(r) => {
                        let _ = r.send(Err(e));
                    }
                    None => {
                        let _ = tx.blocking_send(Err(e.into_io()));
                    }
                }
            }
        });
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(Error::Decrypt { object, reason })) => {
                // A damaged header looks like a wrong key to age: tell the two
                // apart by the stored digest before blaming the key.
                check_stored(&store, &info_for_check).await?;
                return Err(Error::Decrypt { object, reason });
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Io {
                    what: "decoder thread".into(),
                    source: io::Error::other("stopped before opening the stream"),
                })
            }
        }
        Ok(ArtifactReader {
            inner: StreamReader::new(tokio_stream_adapter::Receiver(rx)),
            decoder: Some(decoder),
        })
    }
}

impl Drop for ArtifactReader {
    fn drop(&mut self) {
        // The decoder thread ends on its own when the channel closes.
        self.decoder.take();
    }
}

impl AsyncRead for ArtifactReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

type StoredStream = StreamReader<futures::stream::BoxStream<'static, io::Result<Bytes>>, Bytes>;

/// The stored bytes of one object, opened for reading.
pub(crate) enum Stored {
    /// A file of a local repository, read directly: `object_store` streams a
    /// local file in 8 KiB reads, each its own blocking task, which made a
    /// restore from a local repository wait on its input.
    File {
        file: io::Take<std::fs::File>,
        object: String,
    },
    /// Any other store's byte stream.
    Stream(StoredStream),
}

impl Stored {
    /// A blocking reader over the bytes (call from a blocking thread).
    pub(crate) fn into_blocking(self) -> Box<dyn Read + Send> {
        match self {
            Stored::File { file, object } => Box::new(LocalRead { file, object }),
            Stored::Stream(s) => Box::new(SyncIoBridge::new(s)),
        }
    }
}

/// Reads of a local object, with errors naming it like the store's own.
struct LocalRead {
    file: io::Take<std::fs::File>,
    object: String,
}

impl Read for LocalRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf).map_err(|e| {
            Error::Io {
                what: format!("reading {}", self.object),
                source: e,
            }
            .into_io()
        })
    }
}

/// Opens the stored bytes of `object`.
pub(crate) async fn open_stored(store: &Arc<dyn ObjectStore>, object: &str) -> Result<Stored> {
    let got = store
        .get(&Path::from(object))
        .await
        .map_err(|e| Error::store(object, e))?;
    let range = got.range.clone();
    match got.payload {
        object_store::GetResultPayload::File(mut file, _) => {
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(range.start))
                .map_err(|e| Error::Io {
                    what: format!("reading {object}"),
                    source: e,
                })?;
            Ok(Stored::File {
                file: file.take(range.end - range.start),
                object: object.to_string(),
            })
        }
        object_store::GetResultPayload::Stream(stream) => {
            let obj = object.to_string();
            let stream = stream
                .map(move |r| r.map_err(|e| Error::store(obj.clone(), e).into_io()))
                .boxed();
            Ok(Stored::Stream(StreamReader::new(stream)))
        }
    }
}

fn decode<R: Read>(
    input: R,
    info: &ArtifactInfo,
    identities: &Identities,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    ready: &mut Option<tokio::sync::oneshot::Sender<Result<()>>>,
) -> Result<()> {
    let object = info.object.as_str();
    let corrupt = |reason: String| Error::Corrupt {
        object: object.to_string(),
        reason,
    };
    let io_fail = |e: io::Error| {
        let e = Error::from_io(e, format!("reading {object}"));
        match e {
            Error::Io { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof => {
                corrupt("truncated".into())
            }
            Error::Io { source, .. } if source.kind() == io::ErrorKind::InvalidData => {
                corrupt(format!("does not decode: {source}"))
            }
            other => other,
        }
    };
    let mut stored = TallyRead {
        inner: input,
        tally: Tally::new(),
    };
    let plain = {
        let decryptor = age::Decryptor::new(&mut stored).map_err(|e| match e {
            age::DecryptError::Io(e) => io_fail(e),
            e => corrupt(format!("not an age file: {e}")),
        })?;
        let reader = decryptor.decrypt(identities.as_dyn()).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::Decrypt {
                object: object.to_string(),
                reason: "no identity given matches the recipients it was encrypted to (wrong identity file?)"
                    .into(),
            },
            age::DecryptError::Io(e) => io_fail(e),
            e => corrupt(e.to_string()),
        })?;
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        let mut zstd = zstd::stream::read::Decoder::new(reader).map_err(io_fail)?;
        // The plaintext digest runs on its own thread over the same chunks
        // (shared, not copied): on a restore it costs about as much as
        // decompressing, and the consumer (tar extraction) is a third thread.
        let (htx, hrx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        let hashed = std::thread::scope(|s| {
            let hasher = s.spawn(move || {
                let mut plain = Tally::new();
                for chunk in hrx {
                    plain.update(&chunk);
                }
                plain
            });
            let decoded = (|| -> Result<bool> {
                let mut buf = vec![0u8; DECODE_CHUNK];
                loop {
                    let mut n = 0;
                    while n < buf.len() {
                        match zstd.read(&mut buf[n..]).map_err(io_fail)? {
                            0 => break,
                            got => n += got,
                        }
                    }
                    if n == 0 {
                        return Ok(true);
                    }
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    // The hasher only stops when this side drops htx.
                    let _ = htx.send(chunk.clone());
                    if tx.blocking_send(Ok(chunk)).is_err() {
                        // The consumer stopped reading: nothing more to check.
                        return Ok(false);
                    }
                }
            })();
            drop(htx);
            let plain = hasher
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            decoded.map(|complete| complete.then_some(plain))
        })?;
        match hashed {
            Some(plain) => plain,
            None => return Ok(()),
        }
    };
    // Anything after the end of the age stream is corruption too.
    io::copy(&mut stored, &mut io::sink()).map_err(io_fail)?;
    let (stored_size, stored_sha) = stored.tally.finish();
    if stored_size != info.stored_size || stored_sha != info.stored_sha256 {
        return Err(corrupt(format!(
            "stored bytes: {stored_size} bytes sha256 {stored_sha}, manifest says {} bytes sha256 {}",
            info.stored_size, info.stored_sha256
        )));
    }
    let (plain_size, plain_sha) = plain.finish();
    if plain_size != info.plain_size || plain_sha != info.plain_sha256 {
        return Err(corrupt(format!(
            "plaintext: {plain_size} bytes sha256 {plain_sha}, manifest says {} bytes sha256 {}",
            info.plain_size, info.plain_sha256
        )));
    }
    Ok(())
}

/// Checks the stored bytes of an artifact (size and SHA-256) without a key.
///
/// # Errors
/// [`Error::NotFound`] when the object is missing, [`Error::Corrupt`] naming
/// the object when size or digest differ.
pub(crate) async fn check_stored(store: &Arc<dyn ObjectStore>, info: &ArtifactInfo) -> Result<()> {
    let stored = open_stored(store, &info.object).await?;
    let object = info.object.clone();
    let (size, sha) = tokio::task::spawn_blocking(move || -> Result<(u64, String)> {
        let mut reader = stored.into_blocking();
        let mut tally = Tally::new();
        let mut buf = vec![0u8; DECODE_CHUNK];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Error::from_io(e, format!("reading {object}")))?;
            if n == 0 {
                return Ok(tally.finish());
            }
            tally.update(&buf[..n]);
        }
    })
    .await
    .map_err(|e| Error::Io {
        what: format!("checking {}", info.object),
        source: io::Error::other(e),
    })??;
    if size != info.stored_size || sha != info.stored_sha256 {
        return Err(Error::Corrupt {
            object: info.object.clone(),
            reason: format!(
                "{size} bytes sha256 {sha}, manifest says {} bytes sha256 {}",
                info.stored_size, info.stored_sha256
            ),
        });
    }
    Ok(())
}

/// The chunk the in-memory WAL codec hands between its threads.
const WAL_CHUNK: usize = 1024 * 1024;

/// Chunks in flight between the decoding thread and the hashing thread.
const WAL_CHUNKS_IN_FLIGHT: usize = 3;

/// SHA-256 of `data` on a second thread while `work` runs on this one, so
/// hashing a WAL segment overlaps compressing it (on a 2-core machine the
/// digest of a 16 MiB segment costs about as much as compressing it).
fn with_parallel_sha256<T>(data: &[u8], work: impl FnOnce() -> T) -> (T, String) {
    std::thread::scope(|s| {
        let hasher = s.spawn(|| hex::encode(Sha256::digest(data)));
        let out = work();
        let sha = hasher
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (out, sha)
    })
}

/// Encodes a small stream held in memory (a WAL segment) in one go: zstd at
/// `zstd_level` with `zstd_workers` threads (0: the calling thread), then age
/// to `recipients`, while a second thread computes the SHA-256 of the
/// plaintext. Returns the stored bytes and the plaintext digest (hex).
/// Crate-internal hook for `wal`, which needs the whole object before a
/// conditional create.
pub(crate) fn encode_buffer(
    plain: &[u8],
    recipients: &Recipients,
    zstd_level: i32,
    zstd_workers: u32,
    object: &str,
) -> Result<(Vec<u8>, String)> {
    let io_err = |source: io::Error| Error::Io {
        what: format!("encoding {object}"),
        source,
    };
    let (compressed, sha) = with_parallel_sha256(plain, || {
        let mut c = zstd::bulk::Compressor::new(zstd_level)?;
        if zstd_workers > 0 {
            c.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(zstd_workers))?;
        }
        c.compress(plain)
    });
    let compressed = compressed.map_err(io_err)?;
    let encryptor =
        age::Encryptor::with_recipients(recipients.0.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::InvalidKey {
                what: "repository recipients".into(),
                reason: e.to_string(),
            })?;
    let mut out = Vec::with_capacity(compressed.len() + 256);
    let mut w = encryptor.wrap_output(&mut out).map_err(io_err)?;
    w.write_all(&compressed).map_err(io_err)?;
    w.finish().map_err(io_err)?;
    Ok((out, sha))
}

/// Decodes stored bytes held in memory (age, then zstd) into `out` in
/// 1 MiB chunks, hashing each chunk on a second thread, and checks the
/// plaintext against `plain_sha256` (hex). Returns the plaintext size.
/// `out` has received unchecked bytes when this fails: write to a temporary
/// file and discard it on error. Crate-internal hook for `wal`, whose objects
/// carry only the plaintext digest in their name.
///
/// # Errors
/// [`Error::Decrypt`] for a key that does not open it, [`Error::Corrupt`]
/// when it does not decode or the digest differs, [`Error::Io`] when `out`
/// fails.
pub(crate) fn decode_buffer_to(
    stored: &[u8],
    identities: &Identities,
    plain_sha256: &str,
    object: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    let corrupt = |reason: String| Error::Corrupt {
        object: object.to_string(),
        reason,
    };
    let decryptor =
        age::Decryptor::new(stored).map_err(|e| corrupt(format!("not an age file: {e}")))?;
    let reader = decryptor.decrypt(identities.as_dyn()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => Error::Decrypt {
            object: object.to_string(),
            reason: "no identity given matches the recipients it was encrypted to (wrong identity file?)".into(),
        },
        e => corrupt(e.to_string()),
    })?;
    let mut decoder = zstd::stream::read::Decoder::new(reader)
        .map_err(|e| corrupt(format!("does not decode: {e}")))?;
    let (full_tx, full_rx) =
        std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(WAL_CHUNKS_IN_FLIGHT);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(WAL_CHUNKS_IN_FLIGHT);
    for _ in 0..WAL_CHUNKS_IN_FLIGHT {
        let _ = free_tx.send(vec![0u8; WAL_CHUNK]);
    }
    let (size, sha) = std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                // The decoder may have stopped early: a closed pool is fine.
                let _ = free_tx.send(buf);
            }
            hex::encode(h.finalize())
        });
        let produced = (|| -> Result<u64> {
            let mut total = 0u64;
            loop {
                let Ok(mut buf) = free_rx.recv() else {
                    return Err(corrupt("the hashing thread stopped".into()));
                };
                let mut n = 0;
                while n < buf.len() {
                    match decoder.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(corrupt(format!("does not decode: {e}"))),
                    }
                }
                if n == 0 {
                    return Ok(total);
                }
                out.write_all(&buf[..n]).map_err(|source| Error::Io {
                    what: format!("writing the decoded {object}"),
                    source,
                })?;
                total += n as u64;
                if full_tx.send((buf, n)).is_err() {
                    return Err(corrupt("the hashing thread stopped".into()));
                }
            }
        })();
        drop(full_tx);
        let sha = hasher
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        produced.map(|size| (size, sha))
    })?;
    if sha != plain_sha256 {
        return Err(corrupt(format!(
            "plaintext sha256 {sha}, the object name says {plain_sha256}"
        )));
    }
    Ok(size)
}

/// [`decode_buffer_to`] into memory.
///
/// # Errors
/// As [`decode_buffer_to`].
pub(crate) fn decode_buffer(
    stored: &[u8],
    identities: &Identities,
    plain_sha256: &str,
    object: &str,
) -> Result<Vec<u8>> {
    let mut plain = Vec::new();
    decode_buffer_to(stored, identities, plain_sha256, object, &mut plain)?;
    Ok(plain)
}

#[cfg(test)]
mod wal_codec_timing {
    /// Not a test: prints encode timings for a real WAL segment
    /// (`DR_SEGMENT=path cargo test --release -p dr-storage wal_codec_timing -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn wal_codec_timing() {
        let Ok(path) = std::env::var("DR_SEGMENT") else {
            return;
        };
        let plain = std::fs::read(path).unwrap();
        let key = crate::keys::Identities::generate();
        let r = key.recipients();
        for workers in [0u32, 1, 2, 0, 1, 2] {
            let t = std::time::Instant::now();
            for _ in 0..10 {
                super::encode_buffer(&plain, &r, 3, workers, "x").unwrap();
            }
            let t2 = std::time::Instant::now();
            for _ in 0..10 {
                let mut c = zstd::bulk::Compressor::new(3).unwrap();
                if workers > 0 {
                    c.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(workers))
                        .unwrap();
                }
                c.compress(&plain).unwrap();
            }
            let t3 = std::time::Instant::now();
            for _ in 0..10 {
                let _ = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&plain));
            }
            println!(
                "workers {workers}: encode+hash {:?}, compress only {:?}, hash only {:?}",
                (t2 - t) / 10,
                (t3 - t2) / 10,
                t3.elapsed() / 10
            );
        }
    }
}
