//! The store failing each kind of write in turn, through a fault-injecting
//! wrapper over the in-memory store and a local directory: no panic, no
//! multipart upload left open, nothing listed, the store's error as the
//! cause; and an ambiguous failure of the manifest's write does not lose
//! the backup.

use std::sync::Arc;

use dr_storage::object_store::path::Path;
use dr_storage::object_store::ObjectStore;
use dr_storage::testing::{Fault, FaultyStore, Op};
use dr_storage::{
    CodecOptions, Error, Identities, InitOptions, Location, Repository, StoreOptions,
};
use futures::TryStreamExt;
use rand::RngCore;
use tokio::io::AsyncWriteExt;

const PART: usize = 64 * 1024;

struct Fixture {
    repo: Repository,
    faults: FaultyStore,
    key: Identities,
    dir: Option<tempfile::TempDir>,
}

/// A repository on a faulty in-memory store and one on a faulty local
/// directory, with small parts so that a few hundred KiB make several.
async fn fixtures() -> Vec<Fixture> {
    let key = Identities::generate();
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let mem = Location::parse(&format!("memory://faults-{}", rand::random::<u64>())).unwrap();
    let local = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    for (loc, d) in [(mem, None), (local, Some(dir))] {
        let plain = Repository::init(
            &loc,
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let faults = FaultyStore::new(plain.store().clone());
        let mut codec = CodecOptions::default();
        codec.part_size = PART;
        codec.upload_concurrency = 2;
        codec.zstd_workers = 0;
        let repo = Repository::open_store(Arc::new(faults.clone()), loc.to_string())
            .await
            .unwrap()
            .with_codec(codec);
        out.push(Fixture {
            repo,
            faults,
            key: key.clone(),
            dir: d,
        });
    }
    out
}

fn incompressible(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// Every object under `backups/` (through the store), and for a local
/// repository every file under `backups/` on disk (staging files of
/// multipart uploads included, which the store's listing skips).
async fn leftovers(f: &Fixture) -> Vec<String> {
    let listed: Vec<_> = f
        .repo
        .store()
        .list(Some(&Path::from("backups")))
        .try_collect()
        .await
        .unwrap();
    let mut out: Vec<String> = listed.iter().map(|o| o.location.to_string()).collect();
    if let Some(d) = &f.dir {
        let mut stack = vec![d.path().join("repo/backups")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.display().to_string());
                }
            }
        }
    }
    out
}

fn assert_store_cause(e: &Error, artifact_object_suffix: &str) {
    match e {
        Error::Store { object, source } => {
            assert!(object.ends_with(artifact_object_suffix), "{e}");
            assert!(
                source.to_string().contains("injected fault"),
                "the store's error is the cause: {e:?}"
            );
        }
        other => panic!("expected the store's error, got {other:?}"),
    }
}

/// One failing write of each kind: the artifact fails with the store's
/// error, no upload stays open, and after the backup's abort nothing is
/// left and the next backup succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_aborts_cleanly_with_the_stores_error() {
    let cases: Vec<(&str, Fault, usize)> = vec![
        ("first part", Fault::new(Op::PutPart), 8 * PART),
        ("third part", Fault::new(Op::PutPart).nth(3), 8 * PART),
        (
            "a part whose response is lost",
            Fault::new(Op::PutPart).nth(2).after_success(),
            8 * PART,
        ),
        (
            "the last part",
            Fault::new(Op::PutPart).nth(5),
            4 * PART + 10,
        ),
        ("completion", Fault::new(Op::Complete), 8 * PART),
        (
            "starting the upload",
            Fault::new(Op::PutMultipart),
            8 * PART,
        ),
        (
            "a small object's single put",
            Fault::new(Op::Put).on_paths_containing(".zst.age"),
            1000,
        ),
    ];
    for (what, fault, size) in cases {
        for f in fixtures().await {
            f.faults.inject(fault.clone());
            let data = incompressible(size);
            let backup = f.repo.begin_backup("test", "db").unwrap();
            let e = backup
                .write_artifact("dump", &mut &data[..])
                .await
                .expect_err(what);
            assert_store_cause(&e, "dump.zst.age");
            assert_eq!(f.faults.injected(), 1, "{what}");
            assert_eq!(f.faults.open_uploads(), 0, "{what}: upload left open");
            backup.abort().await;
            assert!(
                leftovers(&f).await.is_empty(),
                "{what}: {:?}",
                leftovers(&f).await
            );
            assert!(f.repo.list_backups(None).await.unwrap().is_empty());
            // The next backup, with the store healthy again, succeeds.
            f.faults.heal();
            let backup = f.repo.begin_backup("test", "db").unwrap();
            backup.write_artifact("dump", &mut &data[..]).await.unwrap();
            let m = backup.commit(serde_json::json!({})).await.unwrap();
            for (_, r) in f.repo.check_decoded(&m, &f.key).await {
                r.unwrap();
            }
            assert_eq!(f.faults.open_uploads(), 0);
        }
    }
}

/// Writing through `AsyncWrite` (as a streaming source does): the write or
/// the finish returns the store's error, never a panic or a broken pipe.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_returns_the_stores_error() {
    for f in fixtures().await {
        f.faults
            .inject(Fault::new(Op::PutPart).nth(2).times(usize::MAX));
        let backup = f.repo.begin_backup("test", "db").unwrap();
        let mut artifact = backup.artifact("base.tar").unwrap();
        let chunk = incompressible(PART);
        let mut failure = None;
        for _ in 0..64 {
            if let Err(e) = artifact.writer().write_all(&chunk).await {
                failure = Some(Error::from_io(e, "writing base.tar"));
                break;
            }
        }
        let e = match failure {
            Some(e) => {
                // Later calls say it failed; they do not panic.
                assert!(artifact.writer().write_all(b"more").await.is_err());
                let again = artifact.finish().await.unwrap_err();
                assert!(matches!(again, Error::Aborted { .. }), "{again:?}");
                e
            }
            None => artifact.finish().await.unwrap_err(),
        };
        assert_store_cause(&e, "base.tar.zst.age");
        assert_eq!(f.faults.open_uploads(), 0);
        backup.abort().await;
        assert!(leftovers(&f).await.is_empty(), "{:?}", leftovers(&f).await);
    }
}

/// The manifest's conditional create fails once, before or after the store
/// wrote it: the backup is committed all the same, listed once.
#[tokio::test(flavor = "multi_thread")]
async fn one_lost_manifest_write_does_not_lose_the_backup() {
    for after in [false, true] {
        for f in fixtures().await {
            let mut fault = Fault::new(Op::Put).on_paths_containing("manifest.json");
            if after {
                fault = fault.after_success();
            }
            f.faults.inject(fault);
            let backup = f.repo.begin_backup("test", "db").unwrap();
            backup
                .write_artifact("dump", &mut &b"rows"[..])
                .await
                .unwrap();
            let m = backup.commit(serde_json::json!({})).await.unwrap();
            assert_eq!(f.faults.injected(), 1);
            let listed = f.repo.list_backups(None).await.unwrap();
            assert_eq!(listed, vec![m]);
        }
    }
    // A store that keeps failing: the commit fails with the store's error
    // and nothing is listed.
    let f = fixtures().await.remove(0);
    f.faults.inject(
        Fault::new(Op::Put)
            .on_paths_containing("manifest.json")
            .times(usize::MAX),
    );
    let backup = f.repo.begin_backup("test", "db").unwrap();
    backup
        .write_artifact("dump", &mut &b"rows"[..])
        .await
        .unwrap();
    let e = backup.commit(serde_json::json!({})).await.unwrap_err();
    assert!(matches!(e, Error::Store { .. }), "{e:?}");
    assert_eq!(
        f.faults.calls(Op::Put) - 1,
        dr_storage::MANIFEST_ATTEMPTS as usize,
        "one artifact put, then the manifest's attempts"
    );
    assert!(f.repo.list_backups(None).await.unwrap().is_empty());
}

/// The open multipart uploads under `prefix` of the S3 emulator's bucket
/// (`ListMultipartUploads`, unsigned: the emulator does not check): their
/// keys.
fn open_s3_upload_keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "GET /{bucket}?uploads&prefix={prefix} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.contains("ListMultipartUploadsResult"), "{body}");
    body.split("<Upload>")
        .skip(1)
        .filter_map(|u| Some(u.split_once("<Key>")?.1.split_once("</Key>")?.0.to_string()))
        .collect()
}

fn open_s3_uploads(endpoint: &str, bucket: &str, prefix: &str) -> usize {
    open_s3_upload_keys(endpoint, bucket, prefix).len()
}

/// Against the S3 emulator (when the test script started one): a failed
/// part or completion leaves no multipart upload on the server.
#[tokio::test(flavor = "multi_thread")]
async fn s3_failed_uploads_leave_no_multipart_upload() {
    let (Ok(url), Ok(endpoint)) = (
        std::env::var("DR_TEST_S3_URL"),
        std::env::var("AWS_ENDPOINT_URL"),
    ) else {
        return;
    };
    let bucket = url.trim_start_matches("s3://").trim_end_matches('/');
    let key = Identities::generate();
    for fault in [
        Fault::new(Op::PutPart).nth(2),
        Fault::new(Op::Complete),
        Fault::new(Op::PutPart).nth(3).after_success(),
    ] {
        let prefix = format!("faults-{}", rand::random::<u64>());
        let loc = Location::parse(&format!("{}/{prefix}", url.trim_end_matches('/'))).unwrap();
        let plain = Repository::init(
            &loc,
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap();
        let faults = FaultyStore::new(plain.store().clone());
        let mut codec = CodecOptions::default();
        codec.part_size = 5 * 1024 * 1024; // S3's smallest part
        codec.upload_concurrency = 2;
        let repo = Repository::open_store(Arc::new(faults.clone()), loc.to_string())
            .await
            .unwrap()
            .with_codec(codec);
        faults.inject(fault.clone());
        let data = incompressible(16 * 1024 * 1024);
        let backup = repo.begin_backup("test", "db").unwrap();
        let e = backup
            .write_artifact("dump", &mut &data[..])
            .await
            .unwrap_err();
        assert_store_cause(&e, "dump.zst.age");
        assert_eq!(faults.open_uploads(), 0, "{fault:?}");
        assert_eq!(
            open_s3_uploads(&endpoint, bucket, &prefix),
            0,
            "{fault:?}: a multipart upload is left on the server"
        );
        backup.abort().await;
        assert!(repo.list_backups(None).await.unwrap().is_empty());
    }
}

/// A TCP proxy on loopback in front of `upstream` (`host:port`) that
/// resets some connections with a TCP RST (linger 0): connection `i` for
/// which `reset(i)` gives `Some((from_client, after))` is reset once
/// `after` bytes have gone the one way (client to server, or server to
/// client: a lost response to a request the server carried out).
/// Returns the proxy's address and a count of the resets done.
async fn resetting_proxy(
    upstream: String,
    reset: fn(usize) -> Option<(bool, usize)>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resets = Arc::new(AtomicUsize::new(0));
    let done = resets.clone();
    tokio::spawn(async move {
        for i in 0.. {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let fault = reset(i);
            let done = done.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                // Copies `r` to `w`; with a limit, stops after it and says so.
                async fn pump(
                    r: &mut tokio::net::tcp::OwnedReadHalf,
                    w: &mut tokio::net::tcp::OwnedWriteHalf,
                    limit: Option<usize>,
                ) -> bool {
                    let mut sent = 0usize;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => n,
                        };
                        let n = limit.map_or(n, |l| n.min(l - sent));
                        if w.write_all(&buf[..n]).await.is_err() {
                            return false;
                        }
                        sent += n;
                        if limit.is_some_and(|l| sent >= l) {
                            return true;
                        }
                    }
                }
                let (up_limit, down_limit) = match fault {
                    Some((true, after)) => (Some(after), None),
                    Some((false, after)) => (None, Some(after)),
                    None => (None, None),
                };
                let cut = tokio::select! {
                    c = pump(&mut cr, &mut sw, up_limit) => c,
                    c = pump(&mut sr, &mut cw, down_limit) => c,
                };
                if cut {
                    done.fetch_add(1, Ordering::SeqCst);
                    let client = cr.reunite(cw).unwrap();
                    #[allow(deprecated)] // blocks only to send the RST: nothing is left to flush
                    let _ = client.set_linger(Some(std::time::Duration::ZERO));
                    drop(client);
                }
            });
        }
    });
    (addr, resets)
}

/// Issue 20's store faults at the network: the S3 emulator behind a proxy
/// that resets connections mid-request and mid-response. Backups (with
/// multipart uploads), their reads and WAL pushes and fetches through it
/// either succeed with exactly the data written or fail with the store's
/// error, never panic; no multipart upload is left open; every backup
/// listed reads back intact.
#[tokio::test(flavor = "multi_thread")]
async fn s3_behind_a_resetting_proxy_loses_nothing() {
    let (Ok(url), Ok(endpoint)) = (
        std::env::var("DR_TEST_S3_URL"),
        std::env::var("AWS_ENDPOINT_URL"),
    ) else {
        assert!(
            std::env::var_os("DR_REQUIRE_SERVERS").is_none(),
            "DR_REQUIRE_SERVERS is set but the S3 emulator is not"
        );
        return;
    };
    let bucket = url.trim_start_matches("s3://").trim_end_matches('/');
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // Every third connection is reset: half of them after 2 KiB of the
    // request (inside a part's body), half after 300 bytes of the response
    // (the request was carried out; its answer is lost).
    let (proxy, resets) = resetting_proxy(upstream, |i| match i % 6 {
        1 => Some((true, 2048)),
        4 => Some((false, 300)),
        _ => None,
    })
    .await;
    let key = Identities::generate();
    let prefix = format!("resets-{}", rand::random::<u64>());
    let loc = Location::parse(&format!("{}/{prefix}", url.trim_end_matches('/'))).unwrap();
    let direct = Repository::init(
        &loc,
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    let mut via = StoreOptions::default();
    via.endpoint = Some(format!("http://{proxy}"));
    let mut codec = CodecOptions::default();
    codec.part_size = 5 * 1024 * 1024; // S3's smallest part
    codec.upload_concurrency = 2;
    let repo = Repository::open(&loc, &via)
        .await
        .unwrap()
        .with_codec(codec);

    let mut written = std::collections::BTreeMap::new();
    let (mut ok, mut failed, mut wal_ok) = (0, 0, 0);
    let mut segments = Vec::new();
    let mut unknowable = std::collections::BTreeSet::new();
    for round in 0..4 {
        let data = incompressible(11 * 1024 * 1024 + round * 4099);
        let backup = repo.begin_backup_marked("test", "db").await;
        let backup = match backup {
            Ok(b) => b,
            Err(e) => {
                failed += 1;
                println!("round {round}: begin: {e}");
                continue;
            }
        };
        let id = backup.id().to_string();
        let result = match backup.write_artifact("dump", &mut &data[..]).await {
            Ok(_) => backup.commit(serde_json::json!({})).await.map(|_| ()),
            Err(e) => {
                backup.abort().await;
                Err(e)
            }
        };
        match result {
            Ok(()) => {
                ok += 1;
                written.insert(id, data);
            }
            Err(e) => {
                failed += 1;
                assert!(
                    matches!(e, Error::Store { .. }),
                    "round {round}: a failure is the store's: {e:?}"
                );
                // The answer to CreateMultipartUpload was lost: the store
                // has an upload whose id dr never learned (README: the
                // AbortIncompleteMultipartUpload lifecycle rule).
                if format!("{e:?}").contains("CreateMultipartResponseBody") {
                    if let Error::Store { object, .. } = &e {
                        unknowable.insert(format!("{prefix}/{object}"));
                    }
                }
                println!("round {round}: failed cleanly: {e:?}");
            }
        }
        // WAL through the same proxy: a push stores the segment (trying
        // again over transient failures) or fails with the store's error; a
        // fetch gives back exactly what was pushed.
        let archive = dr_storage::WalArchive::new(&repo, "db").unwrap();
        let segment = bytes::Bytes::from(incompressible(1024 * 1024));
        let name = format!("0000000100000000000000{:02X}", round + 1);
        match archive.push(1, &name, segment.clone()).await {
            Ok(_) => {
                wal_ok += 1;
                match archive.fetch(1, &name, &key).await {
                    Ok((_, got)) => assert!(segment == got, "round {round}: WAL {name} differs"),
                    Err(e) => println!("round {round}: WAL fetch failed: {e}"),
                }
            }
            Err(e) => {
                assert!(matches!(e, Error::Store { .. }), "round {round}: {e:?}");
                println!("round {round}: WAL push failed: {e:?}");
            }
        }
        segments.push((name, segment));
    }
    println!(
        "{ok} backup(s) stored, {failed} failed, {} connection(s) reset",
        resets.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(
        resets.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the proxy reset nothing"
    );
    assert!(ok > 0, "no backup got through the proxy");
    assert!(wal_ok > 0, "no WAL push got through the proxy");
    // Pushed again without the proxy (as PostgreSQL retries a failed
    // archive_command), every segment is stored, never a conflict with
    // what a failed push left, and reads back exactly.
    let archive = dr_storage::WalArchive::new(&direct, "db").unwrap();
    for (name, segment) in &segments {
        match archive.push(1, name, segment.clone()).await.unwrap() {
            dr_storage::PushOutcome::Stored(_) | dr_storage::PushOutcome::AlreadyStored(_) => {}
            other => panic!("{name}: {other:?}"),
        }
        assert!(*segment == archive.fetch(1, name, &key).await.unwrap().1);
    }
    for key in open_s3_upload_keys(&endpoint, bucket, &prefix) {
        assert!(
            unknowable.contains(&key),
            "a multipart upload dr knew of is left on the server: {key}"
        );
    }
    // Read directly: every listed backup is whole and is one that
    // succeeded.
    let listed = direct.list_backups(None).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.backup_id.as_str()).collect();
    assert_eq!(ids, written.keys().map(String::as_str).collect::<Vec<_>>());
    for m in &listed {
        let mut reader = direct.open_artifact(m, "dump", &key).await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got)
            .await
            .unwrap();
        assert!(
            got == written[&m.backup_id],
            "backup {} reads back different",
            m.backup_id
        );
    }
}
