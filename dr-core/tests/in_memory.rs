//! The conformance suites against the in-memory implementations.

use dr_core::{conformance, job, Error, InMemoryRestorer, InMemorySource};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions};

async fn repo() -> (Repository, Identities) {
    let key = Identities::generate();
    let loc = Location::parse(&format!("memory://core-{}", rand_id())).unwrap();
    let repo = Repository::init(
        &loc,
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    (repo, key)
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory_implementations_conform() {
    let (repo, key) = repo().await;
    let source = InMemorySource::new();
    source.insert("a", vec![1u8; 100_000]);
    source.insert("b", b"hello".to_vec());
    conformance::all(
        &repo,
        &key,
        &source,
        "mem",
        &InMemoryRestorer::new(),
        &InMemoryRestorer::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_source_leaves_nothing_listed() {
    let (repo, _) = repo().await;
    let empty = InMemorySource::new();
    let err = job::backup(&repo, &empty, "empty").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    assert!(repo.list_backups(Some("empty")).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_a_restored_difference() {
    let (repo, key) = repo().await;
    let source = InMemorySource::new();
    source.insert("a", b"x".to_vec());
    let m = job::backup(&repo, &source, "d").await.unwrap();
    let target = InMemoryRestorer::new();
    job::restore(&repo, &m, &key, &target).await.unwrap();
    target.tamper("a", b"y".to_vec());
    let report = dr_core::Restorer::check(&target, &m).await.unwrap();
    assert_eq!(report.failures().count(), 1);
    // A restore into a non-empty target is refused.
    let err = job::restore(&repo, &m, &key, &target).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }));
}

/// A scratch target whose restore never ends (a restore still writing when
/// the operator interrupts), and that records its discard.
#[derive(Debug, Default)]
struct HangingScratch {
    restoring: std::sync::atomic::AtomicBool,
    discarded: std::sync::atomic::AtomicBool,
}

impl std::fmt::Display for HangingScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hanging scratch target")
    }
}

#[async_trait::async_trait]
impl dr_core::Restorer for HangingScratch {
    fn accepts(&self, _kind: &str) -> bool {
        true
    }
    async fn restore(&self, _: &dr_core::BackupReader) -> dr_core::Result<dr_core::RestoreReport> {
        self.restoring
            .store(true, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
    async fn check(&self, _: &dr_storage::Manifest) -> dr_core::Result<dr_core::CheckReport> {
        unreachable!("the restore never ends")
    }
    async fn discard(&self) -> dr_core::Result<()> {
        self.discarded
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_scratch_verify_discards_the_scratch_target() {
    let (repo, key) = repo().await;
    let source = InMemorySource::new();
    source.insert("a", b"x".to_vec());
    let m = job::backup(&repo, &source, "d").await.unwrap();
    let scratch = HangingScratch::default();
    // Stopped once the scratch restore has begun.
    let stop = async {
        while !scratch.restoring.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let err = job::verify_until(&repo, &m, Some(&key), &scratch, stop)
        .await
        .unwrap_err();
    assert!(
        scratch.discarded.load(std::sync::atomic::Ordering::SeqCst),
        "not discarded"
    );
    assert!(err.to_string().contains("verification of backup"), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("interrupted"),
        "{err:?}"
    );
}
