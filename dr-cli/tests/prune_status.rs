//! `dr prune` and `dr status` on a real cluster's backups in a local repository.

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use dr_postgres::testing::{should_run, TestCluster};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn dr(&self, args: &[&str]) -> Output {
        Command::cargo_bin("dr")
            .unwrap()
            .current_dir(self.dir.path())
            .env_remove("DR_REPO")
            .env("DR_CONFIG", self.path("dr.toml"))
            .args(args)
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.dr(args);
        assert!(
            out.status.success(),
            "dr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn setup(pg: &TestCluster, extra: &str) -> Env {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let key = env.path("key.txt");
    let out = Command::cargo_bin("dr")
        .unwrap()
        .args(["key", "generate", "--output"])
        .arg(&key)
        .output()
        .unwrap();
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::write(
        env.path("dr.toml"),
        format!(
            "[repository]\nurl = \"{}\"\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n\n\
             [sources.db]\nkind = \"postgres\"\ndsn = \"{}\"\nglobals = false\n{extra}",
            env.path("repo").display(),
            key.display(),
            pg.dsn("db")
        ),
    )
    .unwrap();
    env.ok(&["repo", "init"]);
    env
}

#[test]
fn prune_keeps_exactly_what_the_policy_says() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let env = setup(&pg, "[sources.db.retention]\nkeep_last = 2\n");
    for _ in 0..4 {
        env.ok(&["backup", "db"]);
    }
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["backup_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);

    // An orphan of a crashed backup two days ago, and one of a running backup.
    let old = env.path("repo/backups/db/20200101T000000Z-dead00");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("database.pgdump.zst.age"), b"partial").unwrap();
    let st = std::process::Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(old.join("database.pgdump.zst.age"))
        .status()
        .unwrap();
    assert!(st.success());
    let young = env.path("repo/backups/db/29990101T000000Z-beef00");
    std::fs::create_dir_all(&young).unwrap();
    std::fs::write(young.join("database.pgdump.zst.age"), b"running").unwrap();
    // Staging files that object_store's local store leaves when a writer is
    // killed (SIGKILL): listings skip them; prune removes those older than
    // the grace period, in a kept backup's directory and in the WAL archive
    // too, and leaves a young one (an upload in progress).
    let kept_dir = env.path(&format!("repo/backups/db/{}", ids[3]));
    let stale_staging = [
        kept_dir.join("database.pgdump.zst.age#3"),
        env.path("repo/wal/db/000000010000000000000001-abc.age#12"),
    ];
    for f in &stale_staging {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"half an upload").unwrap();
        let st = std::process::Command::new("touch")
            .args(["-d", "2 days ago"])
            .arg(f)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let young_staging = kept_dir.join("database.pgdump.zst.age#4");
    std::fs::write(&young_staging, b"uploading").unwrap();

    // Verification records: of two backups that go and of the newest.
    for id in [&ids[0], &ids[1], &ids[3]] {
        env.ok(&["verify", id]);
    }
    let records = || -> Vec<String> {
        let mut r: Vec<String> = std::fs::read_dir(env.path("repo/verifications/db"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        r.sort();
        r
    };
    assert_eq!(records().len(), 3);

    // The dry run says what would happen and changes nothing.
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--dry-run", "--json"])).unwrap();
    assert_eq!(plan["verifications"].as_array().unwrap().len(), 2, "{plan}");
    let decisions = plan["retention"]["backups"].as_array().unwrap();
    let deleted: Vec<&str> = decisions
        .iter()
        .filter(|d| d["kept_by"].as_array().unwrap().is_empty())
        .map(|d| d["backup"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec![ids[0].as_str(), ids[1].as_str()]);
    let newest = decisions
        .iter()
        .find(|d| d["backup"]["id"] == ids[3].as_str())
        .unwrap();
    let rules: Vec<&str> = newest["kept_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"keep_last") && rules.contains(&"newest good backup"),
        "{rules:?}"
    );
    assert_eq!(plan["orphans"].as_array().unwrap().len(), 1);
    let staging: Vec<&str> = plan["staging"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        staging,
        vec![
            format!("backups/db/{}/database.pgdump.zst.age#3", ids[3]).as_str(),
            "wal/db/000000010000000000000001-abc.age#12"
        ],
        "{plan}"
    );
    assert_eq!(plan["orphans_in_grace"], 2);
    let human = env.ok(&["prune", "--dry-run"]);
    assert!(
        human.contains("DELETE") && human.contains("keep (keep_last"),
        "{human}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&env.ok(&["list", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );

    env.ok(&["prune"]);
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let left: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec![ids[2].as_str(), ids[3].as_str()]);
    assert!(!env
        .path(&format!("repo/backups/db/{}", ids[0]))
        .join("manifest.json")
        .exists());
    assert!(
        !old.join("database.pgdump.zst.age").exists(),
        "old orphan removed"
    );
    assert!(
        young.join("database.pgdump.zst.age").exists(),
        "a running backup's objects are left alone"
    );
    for f in &stale_staging {
        assert!(!f.exists(), "{} removed", f.display());
    }
    assert!(young_staging.exists(), "a young staging file is left alone");
    assert!(kept_dir.join("manifest.json").exists());
    std::fs::remove_file(&young_staging).unwrap();
    // Only the record of the kept backup is left.
    let left_records = records();
    assert_eq!(left_records.len(), 1, "{left_records:?}");
    assert!(left_records[0].ends_with(&format!("-{}.json", ids[3])));
    // Idempotent, and what is left still verifies.
    let again: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--dry-run", "--json"])).unwrap();
    assert!(again["retention"]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| !d["kept_by"].as_array().unwrap().is_empty()));
    env.ok(&["verify", "latest"]);

    // A prune lock held by another process: refused with a clear message.
    std::fs::create_dir_all(env.path("repo/locks")).unwrap();
    std::fs::write(
        env.path("repo/locks/prune.json"),
        r#"{"name":"prune","holder":"otherhost:1:x","purpose":"dr prune","acquired_at":"2020-01-01T00:00:00Z","expires_at":"2020-01-01T00:05:00Z"}"#,
    )
    .unwrap();
    let out = env.dr(&["prune"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("otherhost:1:x") && err.contains("--break-stale-lock"),
        "{err}"
    );
    env.ok(&["prune", "--break-stale-lock"]);
    assert!(!env.path("repo/locks/prune.json").exists());
}

#[test]
fn status_flags_a_source_older_than_its_rpo() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let env = setup(&pg, "");
    let toml = std::fs::read_to_string(env.path("dr.toml")).unwrap();
    // No backup yet: violated.
    let out = env.dr(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no backup"));
    env.ok(&["backup", "db"]);
    std::fs::write(
        env.path("dr.toml"),
        format!("{toml}\n[objectives]\nrpo = \"1h\"\n"),
    )
    .unwrap();
    let prom = env.path("dr.prom");
    let page = env.path("status.html");
    let out = env.dr(&[
        "status",
        "--prometheus",
        prom.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<h1>dr status: <span class=\"ok\">OK</span></h1>"),
        "{html}"
    );
    assert!(html.contains("<tr><td>db</td>"), "{html}");
    let text = std::fs::read_to_string(&prom).unwrap();
    for metric in [
        "backup_last_success_timestamp_seconds{source=\"db\"}",
        "backup_size_bytes{source=\"db\"}",
        "objective_rpo_seconds{source=\"db\"} 3600",
        "objective_rpo_met{source=\"db\"} 1",
    ] {
        assert!(text.contains(metric), "{metric} missing from\n{text}");
    }
    // An RPO shorter than the backup's age: exit 1, and the metric says so.
    std::fs::write(
        env.path("dr.toml"),
        format!("{toml}\n[objectives]\nrpo = \"1h\"\n[objectives.sources.db]\nrpo = \"1s\"\n"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = env.dr(&[
        "status",
        "--json",
        "--prometheus",
        prom.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(">VIOLATED</td>") && html.contains("PROBLEMS"),
        "{html}"
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["sources"][0]["rpo_met"], false);
    assert!(s["last_drill"].is_null());
    assert!(std::fs::read_to_string(&prom)
        .unwrap()
        .contains("objective_rpo_met{source=\"db\"} 0"));
}

#[test]
fn prune_never_trades_intact_backups_for_a_damaged_newest_one() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let env = setup(&pg, "[sources.db.retention]\nkeep_last = 1\n");
    for _ in 0..3 {
        env.ok(&["backup", "db"]);
    }
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["backup_id"].as_str().unwrap().to_string())
        .collect();
    // One flipped byte in the newest backup's dump.
    let obj = env.path(&format!(
        "repo/backups/db/{}/database.pgdump.zst.age",
        ids[2]
    ));
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&obj, bytes).unwrap();

    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--dry-run", "--json"])).unwrap();
    let decision = |id: &str| {
        plan["retention"]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["backup"]["id"] == id)
            .unwrap()["kept_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert!(decision(&ids[0]).is_empty(), "the oldest goes");
    let middle = decision(&ids[1]);
    assert!(
        middle.iter().any(|r| r == "newest good backup"),
        "{middle:?}"
    );
    let newest = decision(&ids[2]);
    assert!(
        newest.iter().any(|r| r.starts_with("damaged")),
        "{newest:?}"
    );
    env.ok(&["prune"]);
    // The intact backup is still there and restores.
    let out = env.dr(&["restore", &ids[1], "--to", &pg.dsn("back")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.psql("back", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );
}

#[test]
fn a_damaged_manifest_hides_only_its_own_backup_and_status_says_so() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let env = setup(&pg, "");
    env.ok(&["backup", "db"]);
    env.ok(&["backup", "db"]);
    let list: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"])).unwrap();
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["backup_id"].as_str().unwrap().to_string())
        .collect();
    let manifest = env.path(&format!("repo/backups/db/{}/manifest.json", ids[1]));
    let text = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    let out = env.dr(&["list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged manifest"));
    // The intact backup still verifies and restores by id.
    env.ok(&["verify", &ids[0]]);
    let out = env.dr(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = s["sources"][0]["problems"].to_string();
    assert!(problems.contains("damaged manifest"), "{problems}");
    // Issue 20: prune never takes the damaged backup's data for orphans,
    // even past the grace period, and says so with a non-zero exit.
    let data = |id: &str| {
        let mut v: Vec<_> = std::fs::read_dir(env.path(&format!("repo/backups/db/{id}")))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    let before = data(&ids[1]);
    let out = env.dr(&["prune", "--dry-run", "--orphan-grace", "0s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED manifest"));
    let out = env.dr(&["prune", "--orphan-grace", "0s"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&ids[1]));
    assert_eq!(
        data(&ids[1]),
        before,
        "prune deleted the damaged backup's objects"
    );
    env.ok(&["verify", &ids[0]]);
    // `latest` means the same to dr and to the agent: the damaged manifest
    // may be the newest, so verifying `latest` fails (never an older backup
    // in its place) and the failure is what `dr status` shows.
    let out = env.dr(&["verify", "latest", "--source", "db"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let by_agent = rt.block_on(async {
        let config = dr_ops::DrConfig::load(&env.path("dr.toml")).unwrap();
        let ops = dr_ops::Ops::new(config, Default::default());
        let repo = ops.open().await.unwrap();
        dr_ops::verify_latest(&repo, "db", None).await
    });
    assert!(
        by_agent.is_err(),
        "the agent's verification picked another backup"
    );
    let out = env.dr(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["sources"][0]["last_verify"]["ok"], false, "{s:#}");
}

/// Closes the current WAL segment (after writing a record) and waits until
/// the server archived it.
fn switch_and_wait(pg: &TestCluster) -> String {
    let seg = pg.switch_wal();
    pg.wait_archived(&seg, std::time::Duration::from_secs(60));
    seg
}

fn chmod_tree(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if p.is_dir() { 0o777 } else { 0o666 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chmod_tree(&e.unwrap().path());
        }
    }
}

/// The stored object of WAL file `name` in the local repository.
fn wal_object(repo: &std::path::Path, name: &str) -> PathBuf {
    let mut found = Vec::new();
    let mut stack = vec![repo.join("wal")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&format!("{name}-")))
            {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found.remove(0)
}

/// A cluster with 1 MiB WAL segments archiving through `dr wal-push` into a
/// local repository, with source `db` (`postgres-physical`) configured with
/// `extra` TOML after it.
fn physical_env(extra: &str) -> (Env, TestCluster, PathBuf, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("drs")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let env = Env { dir };
    let dr = assert_cmd::cargo::cargo_bin("dr");
    let repo = env.path("repo");
    let key = env.path("key.txt");
    let mut o = dr_postgres::testing::ClusterOptions::default();
    // 1 MiB segments: LSN ranges and segment names must use the cluster's
    // real segment size (recorded by the physical backup), not 16 MiB.
    o.initdb_args = vec!["--wal-segsize=1".into()];
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!(
            "archive_command = '{} wal-push --repo {} --source db %p'",
            dr.display(),
            repo.display()
        ),
        "max_wal_senders = 4".into(),
    ];
    let pg = TestCluster::start_with(o);
    let out = Command::cargo_bin("dr")
        .unwrap()
        .args(["key", "generate", "--output"])
        .arg(&key)
        .output()
        .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::write(
        env.path("dr.toml"),
        format!(
            "[repository]\nurl = \"{}\"\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n\n\
             [sources.db]\nkind = \"postgres-physical\"\ndsn = \"{}\"\n{extra}",
            repo.display(),
            key.display(),
            pg.dsn("postgres")
        ),
    )
    .unwrap();
    env.ok(&["repo", "init"]);
    chmod_tree(&repo);
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT generate_series(1, 1000) AS id",
    );
    (env, pg, dr, repo, key)
}

#[test]
fn prune_removes_wal_before_the_window_with_the_real_segment_size() {
    if !should_run() {
        return;
    }
    let (env, pg, _, repo, _) = physical_env("[sources.db.retention]\npitr_window = \"1s\"\n");
    let mut ids = Vec::new();
    for _ in 0..2 {
        for _ in 0..3 {
            switch_and_wait(&pg);
        }
        let out: serde_json::Value =
            serde_json::from_str(&env.ok(&["--json", "backup", "db"])).unwrap();
        ids.push(out[0]["backup_id"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    switch_and_wait(&pg);
    let show: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "show", &ids[1]])).unwrap();
    let anchor_segment = show["metadata"]["start_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--dry-run", "--json"])).unwrap();
    let wal = &plan["retention"]["wal"][0];
    // The second backup anchors the one-second window: WAL before its start
    // segment goes, at 1 MiB per segment.
    let (hi, lo) = show["metadata"]["start_lsn"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    let anchor_lsn =
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    assert_eq!(wal["keep_from_lsn"], anchor_lsn, "{plan:#}");
    assert_eq!(
        anchor_lsn >> 20,
        u64::from_str_radix(&anchor_segment[16..], 16).unwrap(),
        "1 MiB segments"
    );
    let deleted: Vec<String> = wal["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert!(deleted.len() >= 3, "{plan:#}");
    for d in &deleted {
        let name = d.rsplit('/').next().unwrap();
        assert!(
            name[..24] < anchor_segment[..],
            "{name} is not before {anchor_segment}"
        );
    }
    let out: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--json"])).unwrap();
    assert_eq!(out["report"]["wal_deleted"], deleted.len());
    assert_eq!(
        out["report"]["backups_deleted"],
        serde_json::json!([ids[0]])
    );
    for d in &deleted {
        assert!(!repo.join(d).exists(), "{d} still stored");
    }
    // What is left is continuous from the window's anchor.
    let out = env.dr(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{s:#}");
    assert_eq!(
        s["sources"][0]["wal"]["checked_from"],
        anchor_segment.as_str()
    );
    assert_eq!(s["sources"][0]["wal"]["gaps"], serde_json::json!([]));
}

#[test]
fn status_names_wal_gaps_and_follows_a_timeline_switch() {
    if !should_run() {
        return;
    }
    let (env, pg, dr, repo, key) = physical_env("");
    switch_and_wait(&pg);
    env.ok(&["backup", "db"]);
    for _ in 0..3 {
        switch_and_wait(&pg);
    }
    let status = |args: &[&str]| {
        let out = env.dr(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, json) = status(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    let wal = &s["sources"][0]["wal"];
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(wal["segment_size"], 1 << 20, "{json}");
    assert_eq!(wal["gaps"].as_array().unwrap().len(), 0, "{json}");
    assert!(wal["segments_checked"].as_u64().unwrap() >= 4, "{json}");

    // A timeline switch: archive recovery from the repository to the end of
    // the archive, then promotion onto timeline 2 (00000002.history, and the
    // old timeline's last segment as .partial).
    pg.stop();
    let data = pg.data_dir();
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.auto.conf"))
        .unwrap();
    std::io::Write::write_all(
        &mut conf,
        format!(
            "restore_command = '{} wal-fetch --repo {} --identity {} --source db %f %p'\n",
            dr.display(),
            repo.display(),
            key.display()
        )
        .as_bytes(),
    )
    .unwrap();
    drop(conf);
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    if let Some((uid, gid)) = pg.owner() {
        std::os::unix::fs::chown(data.join("recovery.signal"), Some(uid), Some(gid)).unwrap();
    }
    pg.start_server();
    pg.wait_promoted(std::time::Duration::from_secs(60));
    let mut last = String::new();
    for _ in 0..4 {
        last = switch_and_wait(&pg);
    }
    assert!(last.starts_with("00000002"), "{last}");
    let (code, json) = status(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    let wal = &s["sources"][0]["wal"];
    assert_eq!(
        code,
        Some(0),
        "the switch is explained by 00000002.history: {json}"
    );
    assert_eq!(wal["history_read"], true);
    assert_eq!(wal["gaps"].as_array().unwrap().len(), 0, "{json}");
    assert_eq!(wal["last_segment"].as_str(), Some(last.as_str()), "{json}");

    // Lose two segments in the middle of timeline 2.
    let seg = |n: u64| format!("00000002{:08X}{:08X}", n >> 12, n & 0xfff);
    let last_no = u64::from_str_radix(&last[8..16], 16).unwrap() * 4096
        + u64::from_str_radix(&last[16..], 16).unwrap();
    std::fs::remove_file(wal_object(&repo, &seg(last_no - 2))).unwrap();
    std::fs::remove_file(wal_object(&repo, &seg(last_no - 1))).unwrap();
    let prom = env.path("dr.prom");
    let (code, json) = status(&["status", "--json", "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{json}");
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    let gaps = s["sources"][0]["wal"]["gaps"].as_array().unwrap().clone();
    assert_eq!(gaps.len(), 1, "{json}");
    assert_eq!(gaps[0]["timeline"], 2);
    assert_eq!(gaps[0]["after"].as_str(), Some(seg(last_no - 3).as_str()));
    assert_eq!(
        gaps[0]["first_missing"].as_str(),
        Some(seg(last_no - 2).as_str())
    );
    assert_eq!(gaps[0]["next"].as_str(), Some(last.as_str()));
    assert_eq!(gaps[0]["missing_segments"], 2);
    let expected = format!(
        "WAL gap on timeline 2 after {}: next archived is {last} (2 segments missing)",
        seg(last_no - 3)
    );
    assert!(
        s["sources"][0]["problems"].to_string().contains(&expected),
        "{json}"
    );
    assert!(std::fs::read_to_string(&prom)
        .unwrap()
        .contains("wal_archive_gaps{source=\"db\"} 1"));
    let (code, text) = status(&["status"]);
    assert_eq!(code, Some(1));
    assert!(text.contains(&format!("db: {expected}")), "{text}");
    assert!(text.contains("1 GAP"), "{text}");
    // A restore to "latest" would stop at the gap and promote there: it is
    // refused, naming the missing segment, before anything is written.
    let pgdata = env.path("latest");
    let out = env.dr(&[
        "restore",
        "auto",
        "--source",
        "db",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target",
        "latest",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("WAL segment {} is not archived", seg(last_no - 2))),
        "{err}"
    );
    assert!(!pgdata.exists());
}

/// SIGTERM while `dr verify --restore` runs its scratch cluster: the
/// verification stops, the scratch server is stopped and its directory
/// removed, and the exit status says it failed (3), not that the backup is
/// good (0) or damaged (1).
#[test]
fn an_interrupted_scratch_verify_leaves_nothing_behind() {
    use std::os::unix::fs::PermissionsExt;
    if !should_run() {
        return;
    }
    let (env, _pg, dr, _, _) = physical_env("");
    env.ok(&["backup", "db"]);
    let scratch = env.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Signalled once the scratch restore has written its data directory.
    let restoring = || {
        std::fs::read_dir(&scratch)
            .unwrap()
            .flatten()
            .any(|d| d.path().join("data/PG_VERSION").exists())
    };
    interrupt(
        &env,
        &dr,
        &["verify", "latest", "--restore"],
        &[("TMPDIR", scratch.as_path())],
        restoring,
        "-TERM",
    );
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // And no scratch server still running from the removed directory.
    let needle = scratch.to_str().unwrap().as_bytes();
    let running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .filter(|c| c.windows(needle.len()).any(|w| w == needle))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
}

/// SIGINT while `dr restore` writes the files of a physical backup: the
/// restore stops, removes the data directory it created and exits 3; a
/// second restore into the same path then succeeds.
#[test]
fn an_interrupted_restore_removes_what_it_wrote() {
    if !should_run() {
        return;
    }
    let (env, pg, dr, _, _) = physical_env("");
    pg.psql(
        "postgres",
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g + 1)::text) AS body \
         FROM generate_series(1, 600000) g",
    );
    env.ok(&["backup", "db"]);
    let pgdata = env.path("restored");
    let args = [
        "restore",
        "auto",
        "--source",
        "db",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target",
        "immediate",
    ];
    interrupt(
        &env,
        &dr,
        &args,
        &[],
        || pgdata.join("base").exists(),
        "-INT",
    );
    assert!(!pgdata.exists(), "{} left behind", pgdata.display());
    // Nothing is in the way of the next attempt.
    env.ok(&args);
    assert!(pgdata.join("recovery.signal").exists());
}

/// Runs `dr args` (with `envs`), sends it `signal` as soon as `ready()`
/// holds, and checks that it stopped as interrupted: exit 128 + the
/// signal's number (130 for INT, 143 for TERM), "interrupted" on stderr.
fn interrupt(
    env: &Env,
    dr: &std::path::Path,
    args: &[&str],
    envs: &[(&str, &std::path::Path)],
    ready: impl Fn() -> bool,
    signal: &str,
) {
    let child = std::process::Command::new(dr)
        .current_dir(env.dir.path())
        .env_remove("DR_REPO")
        .env("DR_CONFIG", env.path("dr.toml"))
        .envs(envs.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "dr {args:?} never got ready to be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let killed = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = match signal {
        "-INT" => 130,
        "-TERM" => 143,
        other => panic!("no exit code known for {other}"),
    };
    assert_eq!(out.status.code(), Some(expected), "dr {args:?}: {err}");
    assert!(err.contains("interrupted"), "dr {args:?}: {err}");
}

/// Every object under `wal/` of a local repository, relative to it.
fn wal_objects(repo: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![repo.join("wal")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                found.push(p.strip_prefix(repo).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The divergence of issue 14: `dr-agent`'s scheduled prune must prune the
/// WAL archive as `dr prune` does. Two copies of one repository; `dr prune`
/// on one, the agent's prune job (built from the same file as `dr-agent`
/// builds it) on the other; the same backups and WAL must remain.
#[test]
fn the_agents_prune_removes_the_same_wal_as_dr_prune() {
    if !should_run() {
        return;
    }
    let (env, pg, _, repo, _) = physical_env(
        "[sources.db.retention]\npitr_window = \"1s\"\n[agent]\nprune_schedule = \"* * * * *\"\n",
    );
    for _ in 0..2 {
        for _ in 0..3 {
            switch_and_wait(&pg);
        }
        env.ok(&["backup", "db"]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    switch_and_wait(&pg);
    pg.stop();
    let twin = env.path("twin");
    copy_tree(&repo, &twin);
    let before = wal_objects(&repo);
    assert_eq!(wal_objects(&twin), before);

    let out: serde_json::Value = serde_json::from_str(&env.ok(&["prune", "--json"])).unwrap();
    let by_cli = wal_objects(&repo);
    assert!(
        out["report"]["wal_deleted"].as_u64().unwrap() >= 3,
        "{out:#}"
    );
    assert!(by_cli.len() < before.len());

    // The agent on the twin, on a clock moved past the next minute.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt.block_on(async {
        use std::sync::Arc;
        let config = dr_ops::DrConfig::load(&env.path("dr.toml")).unwrap();
        let ops = dr_ops::Ops::new(
            config,
            dr_ops::RepositoryArgs::with_repo(twin.to_str().unwrap()),
        );
        let metrics = Arc::new(dr_core::metrics::AgentMetrics::new());
        let clock = Arc::new(dr_core::schedule::ManualClock::new(chrono::Utc::now()));
        let agent = ops
            .agent(metrics.clone())
            .await
            .unwrap()
            .with_clock(clock.clone(), std::time::Duration::from_millis(10));
        let ready = agent.ready_flag();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // Only once the agent has scheduled its jobs does the clock move.
        while !ready.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        clock.advance(chrono::Duration::seconds(61));
        let pruned = || {
            metrics.encode().lines().any(|l| {
                l.strip_prefix("prune_last_success_timestamp_seconds ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
        };
        while !pruned() {
            assert!(
                std::time::Instant::now() < deadline,
                "the scheduled prune did not run"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
        run.await.unwrap().unwrap()
    });
    assert_eq!(summary.started, 1, "{summary:?}");
    assert_eq!(
        wal_objects(&twin),
        by_cli,
        "the agent pruned other WAL than dr prune"
    );
    let list = |r: &std::path::Path| {
        let v: serde_json::Value =
            serde_json::from_str(&env.ok(&["list", "--json", "--repo", r.to_str().unwrap()]))
                .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["backup_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&twin), list(&repo));
}

/// Issue 20: a WAL file name stored with two contents (pushes that raced
/// before names were claimed) is a problem `dr status` names, exit 1.
#[test]
fn status_names_a_wal_file_stored_with_two_contents() {
    if !should_run() {
        return;
    }
    let (env, pg, _, repo, _) = physical_env("");
    env.ok(&["backup", "db"]);
    let seg = switch_and_wait(&pg);
    pg.stop();
    let out = env.dr(&["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stored = wal_object(&repo, &seg);
    let file = stored.file_name().unwrap().to_str().unwrap().to_string();
    // `<name>-<sha256 of the plaintext><suffix>`: the same name, another digest.
    let sha = &file[seg.len() + 1..seg.len() + 65];
    let other = file.replace(sha, &"0".repeat(64));
    std::fs::copy(&stored, stored.with_file_name(&other)).unwrap();
    let out = env.dr(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{s:#}");
    let problems = s["sources"][0]["problems"].to_string();
    assert!(problems.contains(&seg), "{s:#}");
}
