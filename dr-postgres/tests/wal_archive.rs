//! The archiving rules of `wal-push` / `wal-fetch` on real clusters with
//! `archive_mode = on`, against S3 (moto, when `DR_TEST_S3_URL` is set) or a
//! local directory.
//!
//! PostgreSQL runs `archive_command` itself. It calls this test binary
//! through a small shell script (the `common::helper_entry` test, selected by
//! `DR_HELPER_ARGS`), which runs exactly the library calls `dr wal-push` and
//! `dr wal-fetch` make and exits with their exit codes.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dr_postgres::testing;
use dr_postgres::wal::{
    self, FetchOptions, PushOptions, RetryPolicy, WalError, EXIT_ABORT_RECOVERY,
};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions, WalArchive};

#[tokio::test(flavor = "multi_thread")]
async fn archiving_rules_on_real_clusters() {
    if !testing::should_run() {
        return;
    }
    let f = fixture().await;
    let a = f.archiving_cluster("db");
    a.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 50000) g",
    );
    let seg = a.switch_wal();
    a.wait_archived(&seg, Duration::from_secs(60));
    let archive = WalArchive::new(&f.repo, "db").unwrap();
    let sysid = a.system_id();
    // archive.json names cluster A, and every archived segment is there.
    assert_eq!(archive.system_id().await.unwrap(), Some(sysid));
    let stored = archive.list(sysid).await.unwrap();
    assert!(stored.iter().any(|o| o.name == seg), "{seg} in {stored:?}");
    assert_eq!(
        a.psql("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0"
    );

    // Rule 5: fetch writes the exact content atomically; rule 6: a missing
    // name is an authoritative not-found (exit 1) and creates nothing.
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join(&seg);
    let fopts = FetchOptions::default();
    wal::wal_fetch(&archive, &seg, &dest, &f.key, &fopts)
        .await
        .unwrap();
    let content = std::fs::read(&dest).unwrap();
    assert_eq!(content.len(), 16 << 20);
    let missing = work.path().join("missing");
    let r = wal::wal_fetch(
        &archive,
        "0000000100000000000000FF",
        &missing,
        &f.key,
        &fopts,
    )
    .await;
    assert!(matches!(r, Err(WalError::NotArchived { .. })), "{r:?}");
    assert_eq!(wal::fetch_exit_code(&r, false), 1);
    assert!(!missing.exists());

    // Rule 2: the same content again is success; other content fails,
    // naming both checksums, and the stored object is unchanged.
    let popts = PushOptions::default();
    let again = wal::wal_push(&archive, &dest, &popts).await.unwrap();
    assert!(!again.stored);
    let mut changed = content.clone();
    changed[10_000] ^= 0xFF;
    let other_dir = tempfile::tempdir().unwrap();
    let changed_path = other_dir.path().join(&seg);
    std::fs::write(&changed_path, &changed).unwrap();
    let r = wal::wal_push(&archive, &changed_path, &popts).await;
    let Err(e @ WalError::Conflict { .. }) = &r else {
        panic!("{r:?}")
    };
    let msg = e.to_string();
    assert!(
        msg.contains(&dr_storage::sha256_hex(&content))
            && msg.contains(&dr_storage::sha256_hex(&changed)),
        "{msg}"
    );
    let code = wal::push_exit_code(&r);
    assert!((1..=125).contains(&code), "{code}");
    wal::wal_fetch(&archive, &seg, &dest, &f.key, &fopts)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), content);

    // Rule 4 and 7: .partial, .history and .backup names; X.partial is never
    // served for X.
    let partial = other_dir.path().join(format!("{seg}.partial"));
    std::fs::write(&partial, &changed).unwrap();
    wal::wal_push(&archive, &partial, &popts).await.unwrap();
    wal::wal_fetch(&archive, &seg, &dest, &f.key, &fopts)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        content,
        "X.partial served for X"
    );
    wal::wal_fetch(&archive, &format!("{seg}.partial"), &dest, &f.key, &fopts)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), changed);
    let mut hopts = PushOptions::default();
    hopts.pgdata = Some(a.data_dir());
    let hist = other_dir.path().join("00000002.history");
    std::fs::write(&hist, "1\t0/3000000\tno recovery target specified\n").unwrap();
    assert!(wal::wal_push(&archive, &hist, &hopts).await.unwrap().stored);
    std::fs::write(&hist, "1\t0/4000000\tother\n").unwrap();
    assert!(matches!(
        wal::wal_push(&archive, &hist, &hopts).await,
        Err(WalError::Conflict { .. })
    ));
    let backup = other_dir.path().join(format!("{seg}.00000028.backup"));
    std::fs::write(&backup, "START WAL LOCATION: 0/2000028\n").unwrap();
    wal::wal_push(&archive, &backup, &hopts).await.unwrap();
    // Without pg_control a .history file has no system identifier: refused.
    let r = wal::wal_push(&archive, &backup, &PushOptions::default()).await;
    assert!(matches!(r, Err(WalError::InvalidInput { .. })), "{r:?}");
    // Not WAL at all.
    let junk = other_dir.path().join("000000010000000000000077");
    std::fs::write(&junk, b"not wal").unwrap();
    assert!(matches!(
        wal::wal_push(&archive, &junk, &popts).await,
        Err(WalError::NotWal { .. })
    ));
    let junk = other_dir.path().join("pg_internal.init");
    std::fs::write(&junk, b"x").unwrap();
    assert!(matches!(
        wal::wal_push(&archive, &junk, &popts).await,
        Err(WalError::InvalidInput { .. })
    ));

    // Rule 3: a second cluster archiving into the same source is refused by
    // its archive_command, which PostgreSQL counts as failures.
    let b = f.archiving_cluster("db");
    assert_ne!(b.system_id(), sysid);
    b.psql("postgres", "CREATE TABLE t AS SELECT 1");
    b.switch_wal();
    let started = Instant::now();
    while b.psql("postgres", "SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "B's archiving never failed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        b.psql("postgres", "SELECT archived_count FROM pg_stat_archiver"),
        "0"
    );
    let log = std::fs::read_to_string(b.dir().join("server.log")).unwrap();
    assert!(log.contains("system identifier"), "B's log: {log}");
    assert_eq!(archive.system_id().await.unwrap(), Some(sysid));
    drop(b);
    drop(a);
}

/// An object store that fails every call while `down` is set (a stand-in for
/// an unreachable store; the real one is moto stopped, see pitr tests).
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn object_store::ObjectStore>,
    down: Arc<AtomicBool>,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

impl Flaky {
    fn check(&self) -> object_store::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "flaky",
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "store is down",
                )),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.check()?;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.check()?;
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.check()?;
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &object_store::path::Path) -> object_store::Result<()> {
        self.check()?;
        self.inner.delete(location).await
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        if let Err(e) = self.check() {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.check()?;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        self.check()?;
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        self.check()?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// Rule 6 with a store that goes away: fetch retries with a bound, then
/// exits above 125 so that recovery stops (1 in standby mode); push fails
/// within 1..125. A store that comes back within the bound is not an error.
#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_then_stop_recovery() {
    let key = Identities::generate();
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let down = Arc::new(AtomicBool::new(false));
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(Flaky {
        inner: inner.clone(),
        down: down.clone(),
    });
    Repository::init(
        &Location::parse("memory://flaky-init").unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    // Write dr-repo.json into the flaky store's backing memory.
    let cfg = serde_json::json!({
        "format_version": dr_storage::FORMAT_VERSION, "repository_id": "flaky", "created_at": "2026-01-01T00:00:00Z",
        "codec": "zstd+age-x25519", "recipients": key.recipients().to_strings()
    });
    inner
        .put(
            &object_store::path::Path::from("dr-repo.json"),
            serde_json::to_vec(&cfg).unwrap().into(),
        )
        .await
        .unwrap();
    let repo = Repository::open_store(store, "flaky".into()).await.unwrap();
    let archive = WalArchive::new(&repo, "db").unwrap();
    archive.register(42).await.unwrap();
    archive
        .push(
            42,
            "000000010000000000000001",
            bytes::Bytes::from_static(b"segment"),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("RECOVERYXLOG");
    let mut opts = FetchOptions::default();
    opts.retry = RetryPolicy::new(4, Duration::from_secs(10));
    down.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let r = wal::wal_fetch(&archive, "000000010000000000000001", &dest, &key, &opts).await;
    assert!(
        matches!(r, Err(WalError::RetriesExhausted { attempts: 4, .. })),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(wal::fetch_exit_code(&r, false), EXIT_ABORT_RECOVERY);
    assert_eq!(wal::fetch_exit_code(&r, true), 1);
    assert!(!dest.exists());

    // The store comes back during the retries: success.
    let d = down.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        d.store(false, Ordering::SeqCst);
    });
    down.store(true, Ordering::SeqCst);
    wal::wal_fetch(&archive, "000000010000000000000001", &dest, &key, &opts)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"segment");
}
