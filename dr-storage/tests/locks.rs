//! Repository leases on every reachable store: the in-memory store, a local
//! directory, and S3 (moto) when `DR_TEST_S3_URL` is set.

use std::time::Duration;

use dr_storage::{
    Error, Identities, InitOptions, LeaseOptions, Location, Repository, StoreOptions,
};

async fn repos() -> Vec<(Location, Repository, Option<tempfile::TempDir>)> {
    let key = Identities::generate();
    let init = || InitOptions::with_recipients(key.recipients().to_strings());
    let mut out = Vec::new();
    let mem = Location::parse(&format!("memory://locks-{}", rand::random::<u64>())).unwrap();
    out.push((
        mem.clone(),
        Repository::init(&mem, &StoreOptions::default(), init())
            .await
            .unwrap(),
        None,
    ));
    let dir = tempfile::tempdir().unwrap();
    let local = Location::parse(dir.path().join("r").to_str().unwrap()).unwrap();
    out.push((
        local.clone(),
        Repository::init(&local, &StoreOptions::default(), init())
            .await
            .unwrap(),
        Some(dir),
    ));
    if let Ok(url) = std::env::var("DR_TEST_S3_URL") {
        let s3 = Location::parse(&format!(
            "{}/locks-{}",
            url.trim_end_matches('/'),
            rand::random::<u64>()
        ))
        .unwrap();
        out.push((
            s3.clone(),
            Repository::init(&s3, &StoreOptions::default(), init())
                .await
                .unwrap(),
            None,
        ));
    } else if std::env::var("DR_REQUIRE_SERVERS").is_ok() {
        panic!("DR_REQUIRE_SERVERS is set but DR_TEST_S3_URL is not");
    }
    out
}

fn opts(ttl_ms: u64) -> LeaseOptions {
    let mut o = LeaseOptions::default();
    o.ttl = Duration::from_millis(ttl_ms);
    o.purpose = "test".into();
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn one_of_many_racers_wins() {
    for (loc, _repo, _d) in repos().await {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            // Separate handles on the same location, as separate processes have.
            let repo = Repository::open(&loc, &StoreOptions::default())
                .await
                .unwrap();
            tasks.push(tokio::spawn(async move {
                repo.acquire_lease("prune", &opts(60_000)).await
            }));
        }
        let mut won = Vec::new();
        let mut lost = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(l) => won.push(l),
                Err(Error::Locked { .. }) => lost += 1,
                Err(e) => panic!("{loc}: {e:?}"),
            }
        }
        assert_eq!(won.len(), 1, "{loc}: exactly one holder");
        assert_eq!(lost, 7);
        won.pop().unwrap().release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_release_and_stale_leases() {
    for (loc, repo, _d) in repos().await {
        let mut lease = repo.acquire_lease("prune", &opts(1_500)).await.unwrap();
        lease.renew().await.unwrap();
        let before = lease.info().expires_at;
        tokio::time::sleep(Duration::from_millis(50)).await;
        lease.renew().await.unwrap();
        assert!(lease.info().expires_at > before, "{loc}: renewal extends");
        // Held: a second taker fails, naming the holder.
        let err = repo.acquire_lease("prune", &opts(1_000)).await.unwrap_err();
        match err {
            Error::Locked { holder, stale, .. } => {
                assert_eq!(holder, lease.info().holder);
                assert!(!stale);
            }
            other => panic!("{loc}: {other:?}"),
        }
        // Waiting for it succeeds once it is released.
        let waiter = {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut o = opts(5_000);
                o.wait = Duration::from_secs(10);
                repo.acquire_lease("prune", &o).await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        lease.release().await.unwrap();
        let second = waiter.await.unwrap().unwrap();
        // A lease left to expire is stale: refused without the flag, broken with it.
        drop(second);
        tokio::time::sleep(Duration::from_millis(5_100)).await;
        let err = repo.acquire_lease("prune", &opts(1_000)).await.unwrap_err();
        assert!(
            matches!(err, Error::Locked { stale: true, .. }),
            "{loc}: {err:?}"
        );
        assert!(err.to_string().contains("--break-stale-lock"));
        let mut o = opts(1_000);
        o.break_stale = true;
        let third = repo.acquire_lease("prune", &o).await.unwrap();
        third.release().await.unwrap();
        assert!(repo.lease_info("prune").await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_lease_is_noticed_on_renewal() {
    for (loc, repo, _d) in repos().await {
        let mut lease = repo.acquire_lease("x", &opts(100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut o = opts(60_000);
        o.break_stale = true;
        let other = repo.acquire_lease("x", &o).await.unwrap();
        let err = lease.renew().await.unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{loc}: {err:?}");
        other.release().await.unwrap();
    }
}

/// The lease of a process of this host that has exited (a `dr prune` killed
/// with SIGKILL) is broken at once, not after its lifetime; a lease of a
/// live process, or of a process that cannot be looked up here (another
/// host, another PID namespace), is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_lease_of_an_exited_local_process_is_broken_at_once() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let mut live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let lease = |holder: String, namespace: Option<&str>| {
        let now = chrono::Utc::now();
        let mut v = serde_json::json!({
            "name": "prune",
            "holder": holder,
            "purpose": "prune (killed)",
            "acquired_at": now,
            "expires_at": now + chrono::Duration::minutes(5),
        });
        if let Some(ns) = namespace {
            v["pid_namespace"] = ns.into();
        }
        serde_json::to_vec(&v).unwrap()
    };
    let path = dr_storage::object_store::path::Path::from("locks/prune.json");
    for (loc, repo, _d) in repos().await {
        let kept = [
            (
                format!("{host}:{}:aaaa", live.id()),
                Some(namespace.as_str()),
            ),
            (format!("elsewhere:{dead}:aaaa"), Some(namespace.as_str())),
            (format!("{host}:{dead}:aaaa"), Some("pid:[1]")),
            (format!("{host}:{dead}:aaaa"), None),
        ];
        for (holder, ns) in kept {
            repo.store()
                .put(&path, lease(holder.clone(), ns).into())
                .await
                .unwrap();
            let err = repo.acquire_lease("prune", &opts(1_000)).await.unwrap_err();
            match err {
                Error::Locked {
                    holder: h, stale, ..
                } => {
                    assert_eq!(h, holder, "{loc}");
                    assert!(!stale, "{loc}");
                }
                other => panic!("{loc}: {holder} {ns:?}: {other:?}"),
            }
        }
        repo.store()
            .put(
                &path,
                lease(format!("{host}:{dead}:aaaa"), Some(&namespace)).into(),
            )
            .await
            .unwrap();
        let lease = repo.acquire_lease("prune", &opts(1_000)).await.unwrap();
        assert_ne!(lease.info().holder, format!("{host}:{dead}:aaaa"), "{loc}");
        assert_eq!(
            lease.info().pid_namespace.as_deref(),
            Some(namespace.as_str())
        );
        lease.release().await.unwrap();
    }
    live.kill().unwrap();
    let _ = live.wait();
}

/// A backup begun with its mark is in progress while it is written (the
/// mark renewed past its ttl), and no longer once committed, aborted, or
/// dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_backups_mark_lives_exactly_as_long_as_its_writer() {
    for (loc, repo, _d) in repos().await {
        let ttl = Duration::from_millis(600);
        let w = repo.begin_backup_marked_for("t", "db", ttl).await.unwrap();
        let name = format!("backup-db-{}", w.id());
        let first = repo.lease_info(&name).await.unwrap().unwrap();
        assert!(
            repo.backup_in_progress("db", w.id()).await.unwrap(),
            "{loc}"
        );
        tokio::time::sleep(ttl * 2).await;
        let later = repo.lease_info(&name).await.unwrap().unwrap();
        assert!(later.expires_at > first.expires_at, "{loc}: not renewed");
        assert!(
            repo.backup_in_progress("db", w.id()).await.unwrap(),
            "{loc}"
        );
        w.write_artifact("a", &mut &b"x"[..]).await.unwrap();
        let m = w.commit(serde_json::json!({})).await.unwrap();
        assert!(
            !repo.backup_in_progress("db", &m.backup_id).await.unwrap(),
            "{loc}"
        );
        assert!(repo.lease_info(&name).await.unwrap().is_none(), "{loc}");

        let w = repo.begin_backup_marked_for("t", "db", ttl).await.unwrap();
        let id = w.id().to_string();
        w.abort().await;
        assert!(!repo.backup_in_progress("db", &id).await.unwrap(), "{loc}");

        let w = repo.begin_backup_marked_for("t", "db", ttl).await.unwrap();
        let id = w.id().to_string();
        drop(w);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while repo.backup_in_progress("db", &id).await.unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "{loc}: a dropped writer's mark stays"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(repo.stale_backup_marks().await.unwrap().is_empty(), "{loc}");
    }
}
