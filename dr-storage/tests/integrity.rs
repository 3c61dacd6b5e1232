//! Manifests and `dr-repo.json` carry a digest checked on every read: a
//! flipped digit anywhere is damage naming the object, never a silently
//! different backup.

use std::sync::Arc;

use dr_storage::object_store::path::Path;
use dr_storage::object_store::{ObjectStore, PutPayload};
use dr_storage::{
    Error, Identities, InitOptions, Location, Manifest, Repository, StoreOptions, MANIFEST_VERSION,
    REPO_CONFIG,
};

struct Fixture {
    repo: Repository,
    location: Location,
    _dir: Option<tempfile::TempDir>,
}

async fn fixtures() -> Vec<Fixture> {
    let key = Identities::generate();
    let init = || InitOptions::with_recipients(key.recipients().to_strings());
    let mem = Location::parse(&format!("memory://integrity-{}", rand::random::<u64>())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    vec![
        Fixture {
            repo: Repository::init(&mem, &StoreOptions::default(), init())
                .await
                .unwrap(),
            location: mem,
            _dir: None,
        },
        Fixture {
            repo: Repository::init(&local, &StoreOptions::default(), init())
                .await
                .unwrap(),
            location: local,
            _dir: Some(dir),
        },
    ]
}

async fn read(store: &Arc<dyn ObjectStore>, path: &str) -> String {
    let b = store
        .get(&Path::from(path))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

async fn write(store: &Arc<dyn ObjectStore>, path: &str, text: &str) {
    store
        .put(
            &Path::from(path),
            PutPayload::from(text.as_bytes().to_vec()),
        )
        .await
        .unwrap();
}

/// `text` with the first digit after `"key": ` (searched from `after`, when
/// given) changed to the next digit.
fn flip_digit(text: &str, key: &str) -> String {
    let at = text
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("{key} in {text}"));
    let mut bytes = text.as_bytes().to_vec();
    let i = at
        + bytes[at..]
            .iter()
            .position(|b| b.is_ascii_digit())
            .expect("a digit");
    bytes[i] = b'0' + (bytes[i] - b'0' + 1) % 10;
    String::from_utf8(bytes).unwrap()
}

async fn physical_backup(repo: &Repository, source: &str) -> Manifest {
    let b = repo.begin_backup("postgres-physical", source).unwrap();
    b.write_artifact("base.tar", &mut &b"pages"[..])
        .await
        .unwrap();
    b.commit(serde_json::json!({
        "system_identifier": "7380000000000000001",
        "start_lsn": "0/2000028",
        "stop_lsn": "0/3000100",
        "row_counts": { "public.accounts": 12345 },
    }))
    .await
    .unwrap()
}

fn manifest_object(m: &Manifest) -> String {
    format!("backups/{}/{}/manifest.json", m.source.name, m.backup_id)
}

fn assert_names(e: &Error, object: &str) {
    match e {
        Error::Corrupt { object: o, .. } => assert_eq!(o, object, "{e}"),
        other => panic!("expected Corrupt naming {object}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_digit_in_a_manifest_fails_every_read_naming_it() {
    for f in fixtures().await {
        let store = f.repo.store().clone();
        for key in ["public.accounts", "started_at", "stop_lsn", "backup_id"] {
            let older = physical_backup(&f.repo, "db").await;
            let m = physical_backup(&f.repo, "db").await;
            assert!(m.is_protected());
            assert_eq!(m.format_version, MANIFEST_VERSION);
            let object = manifest_object(&m);
            // Intact: every read path returns it.
            assert_eq!(f.repo.manifest("db", &m.backup_id).await.unwrap(), m);
            assert_eq!(f.repo.find_backup(Some("db"), "latest").await.unwrap(), m);
            let text = read(&store, &object).await;
            let flipped = flip_digit(&text, key);
            assert_ne!(text, flipped);
            write(&store, &object, &flipped).await;

            let e = f.repo.manifest("db", &m.backup_id).await.unwrap_err();
            assert_names(&e, &object);
            let e = f
                .repo
                .find_backup(Some("db"), &m.backup_id)
                .await
                .unwrap_err();
            assert_names(&e, &object);
            // `latest` never silently falls back to an older backup.
            let e = f.repo.find_backup(Some("db"), "latest").await.unwrap_err();
            assert_names(&e, &object);
            let (listed, damaged) = f.repo.list_backups_checked(Some("db")).await.unwrap();
            assert!(listed.iter().all(|l| l.backup_id != m.backup_id));
            assert!(listed.iter().any(|l| l.backup_id == older.backup_id));
            assert!(
                damaged
                    .iter()
                    .any(|d| d.object == object && d.reason.contains("digest")),
                "{}: {key}: {damaged:?}",
                f.location
            );
            assert!(f
                .repo
                .list_backups(Some("db"))
                .await
                .unwrap()
                .iter()
                .all(|l| l.backup_id != m.backup_id));
            // The older one is still found by id.
            assert_eq!(
                f.repo
                    .find_backup(Some("db"), &older.backup_id)
                    .await
                    .unwrap(),
                older
            );
            // Restored bytes read again: back to normal.
            write(&store, &object, &text).await;
            assert_eq!(f.repo.manifest("db", &m.backup_id).await.unwrap(), m);
        }
        // A damaged manifest of an earlier second does not hide the newest
        // backup from `latest`.
        let old = physical_backup(&f.repo, "db").await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let newest = physical_backup(&f.repo, "db").await;
        let object = manifest_object(&old);
        let text = read(&store, &object).await;
        write(&store, &object, &flip_digit(&text, "stop_lsn")).await;
        assert_eq!(
            f.repo.find_backup(Some("db"), "latest").await.unwrap(),
            newest
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_or_renamed_digest_is_damage_and_old_manifests_still_read() {
    let f = fixtures().await.remove(0);
    let store = f.repo.store().clone();
    let m = physical_backup(&f.repo, "db").await;
    let object = manifest_object(&m);
    let text = read(&store, &object).await;
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();

    // Its name flipped: a version 2 manifest without a digest.
    write(&store, &object, &text.replace("\"digest\"", "\"eigest\"")).await;
    let e = f.repo.manifest("db", &m.backup_id).await.unwrap_err();
    assert_names(&e, &object);
    // Any other renamed field: the digest no longer matches.
    write(
        &store,
        &object,
        &text.replace("\"metadata\"", "\"metadatb\""),
    )
    .await;
    let e = f.repo.manifest("db", &m.backup_id).await.unwrap_err();
    assert_names(&e, &object);
    // Removed from a version 2 manifest.
    v.as_object_mut().unwrap().remove("digest");
    write(&store, &object, &serde_json::to_string_pretty(&v).unwrap()).await;
    let e = f.repo.manifest("db", &m.backup_id).await.unwrap_err();
    assert_names(&e, &object);
    // A version 1 manifest, written before digests: read, unprotected.
    v["format_version"] = 1.into();
    write(&store, &object, &serde_json::to_string_pretty(&v).unwrap()).await;
    let old = f.repo.manifest("db", &m.backup_id).await.unwrap();
    assert!(!old.is_protected());
    assert_eq!(old.metadata, m.metadata);
    assert_eq!(f.repo.list_backups(Some("db")).await.unwrap().len(), 1);
    // ... where an unknown field does not parse.
    let mut unknown = v.clone();
    unknown["surprise"] = true.into();
    write(
        &store,
        &object,
        &serde_json::to_string_pretty(&unknown).unwrap(),
    )
    .await;
    let e = f.repo.manifest("db", &m.backup_id).await.unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    // A newer format: refused, and listed as damaged (never an orphan).
    v["format_version"] = (MANIFEST_VERSION + 1).into();
    write(&store, &object, &serde_json::to_string_pretty(&v).unwrap()).await;
    let e = f.repo.manifest("db", &m.backup_id).await.unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { .. }), "{e:?}");
    let (_, damaged) = f.repo.list_backups_checked(None).await.unwrap();
    assert_eq!(damaged.len(), 1);
    assert!(damaged[0].reason.contains("newer dr"), "{damaged:?}");
    // The sealed bytes of a manifest read back as the same manifest.
    write(
        &store,
        &object,
        &String::from_utf8(m.to_stored_bytes()).unwrap(),
    )
    .await;
    assert_eq!(f.repo.manifest("db", &m.backup_id).await.unwrap(), m);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_digit_in_dr_repo_json_fails_opening_it() {
    for f in fixtures().await {
        let store = f.repo.store().clone();
        assert!(f.repo.config().digest.is_some());
        let text = read(&store, REPO_CONFIG).await;
        for key in ["repository_id", "created_at"] {
            // repository_id is hex: make sure a digit follows the key.
            let flipped = if key == "repository_id" {
                let id = &f.repo.config().repository_id;
                let mut other = id.clone().into_bytes();
                other[0] = if other[0] == b'0' { b'1' } else { b'0' };
                text.replace(id.as_str(), std::str::from_utf8(&other).unwrap())
            } else {
                flip_digit(&text, key)
            };
            assert_ne!(flipped, text);
            write(&store, REPO_CONFIG, &flipped).await;
            let e = Repository::open(&f.location, &StoreOptions::default())
                .await
                .unwrap_err();
            assert_names(&e, REPO_CONFIG);
        }
        // A configuration without a digest (made before digests) opens.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("digest");
        write(
            &store,
            REPO_CONFIG,
            &serde_json::to_string_pretty(&v).unwrap(),
        )
        .await;
        let repo = Repository::open(&f.location, &StoreOptions::default())
            .await
            .unwrap();
        assert!(repo.config().digest.is_none());
        assert_eq!(repo.config().repository_id, f.repo.config().repository_id);
        write(&store, REPO_CONFIG, &text).await;
        Repository::open(&f.location, &StoreOptions::default())
            .await
            .unwrap();
    }
}

/// A deleted `dr-repo.json` beside backups is damage, not "no repository":
/// opening names it, and `init` refuses to make a new one (its new
/// repository id would disown the manifests). An empty location is still
/// simply not initialised.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_repository_file_beside_backups_is_damage_and_never_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    let key = Identities::generate();
    let init = || InitOptions::with_recipients(key.recipients().to_strings());
    let repo = Repository::init(&location, &StoreOptions::default(), init())
        .await
        .unwrap();
    physical_backup(&repo, "db").await;
    std::fs::remove_file(dir.path().join("repo").join(REPO_CONFIG)).unwrap();
    let e = Repository::open(&location, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RepositoryFileMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("dr-repo.json is missing"), "{e}");
    let e = Repository::init(&location, &StoreOptions::default(), init())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RepositoryFileMissing { .. }), "{e:?}");
    assert!(!dir.path().join("repo").join(REPO_CONFIG).exists());

    let empty = tempfile::tempdir().unwrap();
    let location = Location::parse(empty.path().to_str().unwrap()).unwrap();
    let e = Repository::open(&location, &StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotInitialized { .. }), "{e:?}");
}
