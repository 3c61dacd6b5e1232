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

    // The dry run says what would happen and changes nothing.
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["prune", "--dry-run", "--json"])).unwrap();
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
    assert_eq!(plan["orphans_in_grace"], 1);
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
    let out = env.dr(&["status", "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
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
    let out = env.dr(&["status", "--json", "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
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
}
