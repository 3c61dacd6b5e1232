//! The first writer of a WAL file name wins: racing pushes of different
//! content for one name store exactly one of them, the others get a conflict
//! naming both digests; racing pushes of the same content all succeed. On
//! the in-memory store, a local directory, and S3 when `DR_TEST_S3_URL` is
//! set.

use std::sync::Arc;

use bytes::Bytes;
use dr_storage::object_store::path::Path;
use dr_storage::object_store::ObjectStore;
use dr_storage::{
    sha256_hex, wal_claim_path, Identities, InitOptions, Location, PushOutcome, Repository,
    StoreOptions, WalArchive,
};
use futures::TryStreamExt;

const SEG: &str = "000000010000000000000007";
const RACERS: usize = 8;

async fn archives() -> Vec<(WalArchive, Identities, Option<tempfile::TempDir>)> {
    let key = Identities::generate();
    let init = || InitOptions::with_recipients(key.recipients().to_strings());
    let mem = Location::parse(&format!("memory://wal-race-{}", rand::random::<u64>())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
    let mut stores = vec![(mem, None), (local, Some(dir))];
    // S3 when the test script started the emulator: its conditional create.
    if let Ok(url) = std::env::var("DR_TEST_S3_URL") {
        let loc = format!(
            "{}/wal-race-{}",
            url.trim_end_matches('/'),
            rand::random::<u64>()
        );
        stores.push((Location::parse(&loc).unwrap(), None));
    }
    let mut out = Vec::new();
    for (loc, d) in stores {
        let repo = Repository::init(&loc, &StoreOptions::default(), init())
            .await
            .unwrap();
        out.push((WalArchive::new(&repo, "db").unwrap(), key.clone(), d));
    }
    out
}

async fn race(archive: &WalArchive, contents: Vec<Bytes>) -> Vec<PushOutcome> {
    let barrier = Arc::new(tokio::sync::Barrier::new(contents.len()));
    let tasks: Vec<_> = contents
        .into_iter()
        .map(|c| {
            let a = archive.clone();
            let b = barrier.clone();
            tokio::spawn(async move {
                b.wait().await;
                a.push(1, SEG, c).await.unwrap()
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_pushes_of_different_content_store_exactly_one() {
    for (archive, key, _dir) in archives().await {
        let contents: Vec<Bytes> = (0..RACERS)
            .map(|i| Bytes::from(vec![i as u8; 64 * 1024]))
            .collect();
        let outcomes = race(&archive, contents.clone()).await;
        let stored: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| match o {
                PushOutcome::Stored(o) => Some(o.plain_sha256.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(stored.len(), 1, "{archive}: {outcomes:?}");
        let winner = stored[0].to_string();
        let mut pushed: Vec<String> = vec![winner.clone()];
        for o in &outcomes {
            match o {
                PushOutcome::Stored(_) => {}
                PushOutcome::Conflict {
                    existing,
                    pushed_sha256,
                } => {
                    assert_eq!(existing.plain_sha256, winner, "names the stored content");
                    assert_ne!(pushed_sha256, &winner);
                    pushed.push(pushed_sha256.clone());
                }
                other => panic!("{archive}: {other:?}"),
            }
        }
        let mut all: Vec<String> = contents.iter().map(|c| sha256_hex(c)).collect();
        all.sort();
        pushed.sort();
        assert_eq!(pushed, all, "each conflict names its own content");
        // One object, the winner's, is what is served.
        let listed = archive.list(1).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let (_, got) = archive.fetch(1, SEG, &key).await.unwrap();
        assert_eq!(sha256_hex(&got), winner);
        assert!(archive.conflicts().await.unwrap().is_empty());
        // A later push of another content conflicts; of the winner's, succeeds.
        let winning = contents
            .iter()
            .find(|c| sha256_hex(c) == winner)
            .unwrap()
            .clone();
        assert!(matches!(
            archive.push(1, SEG, winning).await.unwrap(),
            PushOutcome::AlreadyStored(_)
        ));
        assert!(matches!(
            archive
                .push(1, SEG, Bytes::from_static(b"late"))
                .await
                .unwrap(),
            PushOutcome::Conflict { .. }
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_pushes_of_the_same_content_all_succeed() {
    for (archive, key, _dir) in archives().await {
        let content = Bytes::from(vec![42u8; 64 * 1024]);
        let outcomes = race(&archive, vec![content.clone(); RACERS]).await;
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, PushOutcome::Stored(_)))
            .count();
        assert_eq!(stored, 1, "{outcomes:?}");
        assert!(outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Stored(_) | PushOutcome::AlreadyStored(_))));
        let (_, got) = archive.fetch(1, SEG, &key).await.unwrap();
        assert_eq!(got, content);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_written_before_claims_reads_and_reports_two_contents() {
    for (archive, key, _dir) in archives().await {
        let store: Arc<dyn ObjectStore> = archive.repository().store().clone();
        // The old layout: data objects only. Two of them for one name, as
        // the old race left them.
        archive
            .push(1, SEG, Bytes::from_static(b"first"))
            .await
            .unwrap();
        let first = archive.find(1, SEG).await.unwrap().remove(0);
        let claim = wal_claim_path(&first.object).unwrap();
        assert!(claim.ends_with(&format!("/{SEG}.claim")), "{claim}");
        store.delete(&Path::from(claim.as_str())).await.unwrap();
        // Alone, it reads as before and takes identical re-pushes.
        assert!(matches!(
            archive
                .push(1, SEG, Bytes::from_static(b"first"))
                .await
                .unwrap(),
            PushOutcome::AlreadyStored(_)
        ));
        let (_, got) = archive.fetch(1, SEG, &key).await.unwrap();
        assert_eq!(got, b"first");
        // A second content written by an old dr, beside it.
        let second = archive.object_path(1, SEG, &sha256_hex(b"second"));
        store
            .copy(
                &Path::from(first.object.as_str()),
                &Path::from(second.as_str()),
            )
            .await
            .unwrap();
        let conflicts = archive.conflicts().await.unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].name, SEG);
        assert_eq!(conflicts[0].system_id, 1);
        assert_eq!(conflicts[0].objects.len(), 2);
        let text = conflicts[0].to_string();
        assert!(
            text.contains(&sha256_hex(b"first")) && text.contains(&sha256_hex(b"second")),
            "{text}"
        );
        // Nothing wrong is served.
        assert!(archive.fetch(1, SEG, &key).await.is_err());
        // A claim is not an object of the archive.
        archive
            .push(1, "000000010000000000000008", Bytes::from_static(b"next"))
            .await
            .unwrap();
        let listed: Vec<_> = store
            .list(Some(&Path::from("wal/db")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert_eq!(archive.list(1).await.unwrap().len(), 3);
    }
}

#[test]
fn claim_paths() {
    let sha = "a".repeat(64);
    assert_eq!(
        wal_claim_path(&format!(
            "wal/db/7/0000000100000000/000000010000000000000003.partial-{sha}.zst.age"
        ))
        .as_deref(),
        Some("wal/db/7/0000000100000000/000000010000000000000003.partial.claim")
    );
    assert_eq!(
        wal_claim_path(&format!("wal/db/7/history/00000002.history-{sha}.zst.age")).as_deref(),
        Some("wal/db/7/history/00000002.history.claim")
    );
    assert_eq!(wal_claim_path("wal/db/7/history/x.claim"), None);
    assert_eq!(wal_claim_path("backups/db/1/x.zst.age"), None);
}
