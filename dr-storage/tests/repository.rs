//! Repository behaviour, run against every store that is reachable here: an
//! in-memory store and a local directory always, and S3 when `DR_TEST_S3_URL`
//! names a bucket URL (the test script starts moto and sets it; the same test
//! runs against LocalStack or AWS through `AWS_ENDPOINT_URL`).

use std::sync::Arc;

use dr_storage::object_store::path::Path;
use dr_storage::object_store::{ObjectStore, PutPayload};
use dr_storage::{Error, Identities, InitOptions, Location, Repository, StoreOptions};
use rand::RngCore;
use tokio::io::AsyncReadExt;

fn random_bytes(n: usize) -> Vec<u8> {
    // Half random, half repetitive: compressible but not trivially.
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v[..n / 2]);
    for (i, b) in v[n / 2..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    v
}

struct Fixture {
    repo: Repository,
    key: Identities,
    location: Location,
    _dir: Option<tempfile::TempDir>,
}

async fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    let key = Identities::generate();
    let init = || InitOptions::with_recipients(key.recipients().to_strings());
    let mem = Location::parse(&format!("memory://repo-{}", rand::random::<u64>())).unwrap();
    out.push(Fixture {
        repo: Repository::init(&mem, &StoreOptions::default(), init())
            .await
            .unwrap(),
        key: key.clone(),
        location: mem,
        _dir: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let local = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    out.push(Fixture {
        repo: Repository::init(&local, &StoreOptions::default(), init())
            .await
            .unwrap(),
        key: key.clone(),
        location: local,
        _dir: Some(dir),
    });
    if let Ok(url) = std::env::var("DR_TEST_S3_URL") {
        let s3 = Location::parse(&format!(
            "{}/storage-{}",
            url.trim_end_matches('/'),
            rand::random::<u64>()
        ))
        .unwrap();
        out.push(Fixture {
            repo: Repository::init(&s3, &StoreOptions::default(), init())
                .await
                .unwrap(),
            key: key.clone(),
            location: s3,
            _dir: None,
        });
    } else if std::env::var("DR_REQUIRE_SERVERS").is_ok() {
        panic!("DR_REQUIRE_SERVERS is set but DR_TEST_S3_URL is not");
    }
    out
}

async fn read_all(
    repo: &Repository,
    m: &dr_storage::Manifest,
    name: &str,
    key: &Identities,
) -> Result<Vec<u8>, Error> {
    let mut r = repo.open_artifact(m, name, key).await?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .await
        .map_err(|e| Error::from_io(e, "test read"))?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_large_multipart_stream() {
    for f in fixtures().await {
        let data = random_bytes(21 * 1024 * 1024 + 17);
        let backup = f.repo.begin_backup("test", "big").unwrap();
        backup
            .write_artifact("data.bin", &mut &data[..])
            .await
            .unwrap();
        backup.write_artifact("empty", &mut &b""[..]).await.unwrap();
        let m = backup.commit(serde_json::json!({"k": 1})).await.unwrap();
        assert_eq!(m.artifacts.len(), 2);
        assert_eq!(
            m.artifact("data.bin").unwrap().plain_size,
            data.len() as u64
        );
        assert!(m.stored_size() < m.plain_size(), "compressed");
        let back = read_all(&f.repo, &m, "data.bin", &f.key).await.unwrap();
        assert!(back == data, "{}: round trip differs", f.location);
        assert!(read_all(&f.repo, &m, "empty", &f.key)
            .await
            .unwrap()
            .is_empty());
        let listed = f.repo.list_backups(Some("big")).await.unwrap();
        assert_eq!(listed, vec![m.clone()]);
        for (_, r) in f.repo.check_stored(&m).await {
            r.unwrap();
        }
        // A reopened repository sees the same.
        let again = Repository::open(&f.location, &StoreOptions::default())
            .await
            .unwrap();
        assert_eq!(again.find_backup(Some("big"), "latest").await.unwrap(), m);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_byte_anywhere_is_found_and_named() {
    for f in fixtures().await {
        let data = random_bytes(300_000);
        let backup = f.repo.begin_backup("test", "flip").unwrap();
        backup.write_artifact("a", &mut &data[..]).await.unwrap();
        let m = backup.commit(serde_json::json!({})).await.unwrap();
        let info = m.artifact("a").unwrap().clone();
        let store = f.repo.store().clone();
        let path = Path::from(info.object.as_str());
        let original = store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        for pos in [0, 40, original.len() / 2, original.len() - 1] {
            let mut bad = original.clone();
            bad[pos] ^= 0x01;
            store.put(&path, PutPayload::from(bad)).await.unwrap();
            let (_, r) = f.repo.check_stored(&m).await.pop().unwrap();
            match r {
                Err(Error::Corrupt { object, .. }) => assert_eq!(object, info.object),
                other => panic!("flip at {pos}: {other:?}"),
            }
            let err = read_all(&f.repo, &m, "a", &f.key).await.unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { object, .. } if *object == info.object),
                "flip at {pos}: {err:?}"
            );
        }
        store
            .put(&path, PutPayload::from(original.clone()))
            .await
            .unwrap();
        read_all(&f.repo, &m, "a", &f.key).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_missing_and_wrong_key_are_clear_errors() {
    for f in fixtures().await {
        let data = random_bytes(200_000);
        let backup = f.repo.begin_backup("test", "t").unwrap();
        backup.write_artifact("a", &mut &data[..]).await.unwrap();
        let m = backup.commit(serde_json::json!({})).await.unwrap();
        let info = m.artifact("a").unwrap().clone();
        let store = f.repo.store().clone();
        let path = Path::from(info.object.as_str());
        let original = store.get(&path).await.unwrap().bytes().await.unwrap();

        let wrong = Identities::generate();
        let err = f.repo.open_artifact(&m, "a", &wrong).await.unwrap_err();
        assert!(
            matches!(err, Error::Decrypt { ref object, .. } if *object == info.object),
            "{err:?}"
        );

        store
            .put(
                &path,
                PutPayload::from(original.slice(..original.len() - 1000)),
            )
            .await
            .unwrap();
        let err = read_all(&f.repo, &m, "a", &f.key).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");

        store.delete(&path).await.unwrap();
        let (_, r) = f.repo.check_stored(&m).await.pop().unwrap();
        assert!(
            matches!(r, Err(Error::NotFound { ref object }) if *object == info.object),
            "{r:?}"
        );
        let err = read_all(&f.repo, &m, "a", &f.key).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_listed_before_commit_and_aborts_leave_nothing() {
    for f in fixtures().await {
        let backup = f.repo.begin_backup("test", "partial").unwrap();
        let mut w = backup.artifact("a").unwrap();
        let data = random_bytes(20 * 1024 * 1024);
        w.copy_from(&mut &data[..]).await.unwrap();
        drop(w); // a crash before finish
        assert!(f
            .repo
            .list_backups(Some("partial"))
            .await
            .unwrap()
            .is_empty());
        // The abort waits for the dropped artifact's uploader to abort its
        // multipart upload (or remove its staging file).
        backup.abort().await;
        let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
            f.repo.store().list(Some(&Path::from("backups/partial"))),
        )
        .await
        .unwrap();
        assert!(left.is_empty(), "{}: left {left:?}", f.location);
        // The next backup of the same source succeeds.
        let backup = f.repo.begin_backup("test", "partial").unwrap();
        backup.write_artifact("a", &mut &b"ok"[..]).await.unwrap();
        backup.commit(serde_json::json!({})).await.unwrap();
        assert_eq!(f.repo.list_backups(Some("partial")).await.unwrap().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn init_is_once_and_newer_formats_are_refused() {
    for f in fixtures().await {
        let err = Repository::init(
            &f.location,
            &StoreOptions::default(),
            InitOptions::with_recipients(f.key.recipients().to_strings()),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::AlreadyInitialized { .. }), "{err:?}");
        let store: Arc<dyn ObjectStore> = f.repo.store().clone();
        let mut cfg: serde_json::Value = serde_json::from_slice(
            &store
                .get(&Path::from("dr-repo.json"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        cfg["format_version"] = 99.into();
        cfg["some_future_field"] = true.into();
        store
            .put(
                &Path::from("dr-repo.json"),
                PutPayload::from(serde_json::to_vec(&cfg).unwrap()),
            )
            .await
            .unwrap();
        let err = Repository::open(&f.location, &StoreOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFormat { found: 99, .. }),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifests_are_never_overwritten() {
    for f in fixtures().await {
        f.repo
            .put_json_create("backups/x/1/manifest.json", &1)
            .await
            .unwrap();
        let err = f
            .repo
            .put_json_create("backups/x/1/manifest.json", &2)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn passphrase_repositories_need_the_passphrase_only_to_read() {
    let loc = Location::parse(&format!("memory://pass-{}", rand::random::<u64>())).unwrap();
    let mut init = InitOptions::default();
    init.passphrase = Some("correct horse".to_string().into());
    let repo = Repository::init(&loc, &StoreOptions::default(), init)
        .await
        .unwrap();
    let backup = repo.begin_backup("test", "p").unwrap();
    backup
        .write_artifact("a", &mut &b"secret rows"[..])
        .await
        .unwrap();
    let m = backup.commit(serde_json::json!({})).await.unwrap();
    let mut keys = dr_storage::KeySource::default();
    keys.passphrase = Some("wrong".to_string().into());
    assert!(matches!(
        repo.unlock(&keys).unwrap_err(),
        Error::Decrypt { .. }
    ));
    keys.passphrase = Some("correct horse".to_string().into());
    let ids = repo.unlock(&keys).unwrap();
    assert_eq!(
        read_all(&repo, &m, "a", &ids).await.unwrap(),
        b"secret rows"
    );
}

mod codec_round_trips {
    use super::*;
    use dr_storage::CodecOptions;
    use proptest::prelude::*;

    /// Writes `data` as one artifact with `codec` into a fresh in-memory
    /// repository and reads it back.
    async fn round_trip(codec: CodecOptions, data: &[u8]) -> (dr_storage::ArtifactInfo, Vec<u8>) {
        let key = Identities::generate();
        let loc = Location::parse(&format!("memory://codec-{}", rand::random::<u64>())).unwrap();
        let repo = Repository::init(
            &loc,
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .unwrap()
        .with_codec(codec);
        let b = repo.begin_backup("test", "codec").unwrap();
        let info = b.write_artifact("a", &mut &data[..]).await.unwrap();
        let m = b.commit(serde_json::json!({})).await.unwrap();
        (info, read_all(&repo, &m, "a", &key).await.unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any size around part boundaries (none, one, several parts, a
        /// byte short or over), with and without zstd workers, reads back
        /// exactly, with its size and digest recorded.
        #[test]
        fn any_size_round_trips_around_part_boundaries(
            parts in 0usize..4,
            delta in -2i64..=2,
            part_kib in prop::sample::select(vec![64usize, 96, 128]),
            workers in 0u32..3,
            level in prop::sample::select(vec![1i32, 3, 9]),
        ) {
            let part = part_kib * 1024;
            let size = (parts as i64 * part as i64 + delta).max(0) as usize;
            let data = random_bytes(size);
            let mut codec = CodecOptions::default();
            codec.part_size = part;
            codec.zstd_workers = workers;
            codec.zstd_level = level;
            codec.upload_concurrency = 2;
            let (info, back) = tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(round_trip(codec, &data));
            prop_assert_eq!(info.plain_size, size as u64);
            prop_assert_eq!(&info.plain_sha256, &dr_storage::sha256_hex(&data));
            prop_assert!(back == data, "{} bytes read back differ", size);
        }
    }
}
