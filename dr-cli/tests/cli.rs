//! The `dr` binary end to end: exit codes, stderr, `--json`, against a real
//! PostgreSQL cluster and a local repository.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use dr_postgres::testing::{should_run, TestCluster};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn repo(&self) -> String {
        format!("file://{}", self.path("repo").display())
    }
    fn key(&self) -> String {
        self.path("key.txt").display().to_string()
    }
    /// `dr` in the temp dir with a clean environment for dr's own variables.
    fn dr(&self) -> Command {
        let mut c = Command::cargo_bin("dr").unwrap();
        c.current_dir(self.dir.path())
            .env_remove("DR_REPO")
            .env_remove("DR_CONFIG")
            .env_remove("DR_IDENTITY_FILE")
            .env_remove("DR_PASSPHRASE")
            .env_remove("DR_PASSPHRASE_FILE");
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.dr().args(args).output().unwrap()
    }
    fn init(&self) {
        let out = self.run(&["key", "generate", "--output", &self.key()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(recipient.starts_with("age1"));
        let out = self.run(&[
            "repo",
            "init",
            "--repo",
            &self.repo(),
            "--recipient",
            &recipient,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.run(&a);
        assert!(
            out.status.success(),
            "dr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn backup_list_verify_restore_end_to_end() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let env = Env::new();
    env.init();
    let dsn = pg.dsn("db");
    let backups = env.json(&["backup", "--repo", &env.repo(), "--postgres", &dsn]);
    assert_eq!(backups[0]["source"]["name"], "db");
    assert_eq!(
        backups[0]["metadata"]["row_counts"]["public.pgbench_accounts"],
        100000
    );

    let list = env.json(&["list", "--repo", &env.repo()]);
    assert_eq!(list.as_array().unwrap().len(), 1);

    let report = env.json(&[
        "verify",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        &env.key(),
    ]);
    assert!(report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["error"].is_null()));

    let report = env.json(&[
        "verify",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        &env.key(),
        "--restore",
        "--scratch",
        &pg.dsn("postgres"),
    ]);
    assert_eq!(report["discarded"], true);
    assert!(report["checks"]["checks"].as_array().unwrap().len() >= 4);

    let out = env.run(&[
        "restore",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        &env.key(),
        "--to",
        &pg.dsn("copy"),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        pg.psql("copy", "SELECT count(*) FROM pgbench_accounts"),
        "100000"
    );

    // Restoring again into the now non-empty database is refused.
    let out = env.run(&[
        "restore",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        &env.key(),
        "--to",
        &pg.dsn("copy"),
    ]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("already holds objects"),
        "{}",
        stderr(&out)
    );

    // A wrong identity: exit 2, clear message, target untouched.
    let other = env.path("other.txt");
    env.run(&["key", "generate", "--output", other.to_str().unwrap()]);
    let out = env.run(&[
        "restore",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        other.to_str().unwrap(),
        "--to",
        &pg.dsn("other"),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot decrypt"), "{}", stderr(&out));
    // A password in a DSN on the command line works but is warned about,
    // and is not echoed.
    let with_pw = dsn.replace("postgres@", "postgres:s3cr3t-pw@");
    let out = env.run(&["backup", "--repo", &env.repo(), "--postgres", &with_pw]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--postgres connection string holds a password"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("s3cr3t-pw")
            && !String::from_utf8_lossy(&out.stdout).contains("s3cr3t-pw")
    );
    // The same wrong key on verify: a usage error (2), not a damaged backup (1).
    let out = env.run(&[
        "verify",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot decrypt"), "{}", stderr(&out));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'other%'"
        ),
        "0"
    );
}

fn objects(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo.join("backups")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn damaged_repositories_fail_verification_naming_the_object() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("db", 1);
    let env = Env::new();
    env.init();
    env.json(&["backup", "--repo", &env.repo(), "--postgres", &pg.dsn("db")]);
    let data: Vec<PathBuf> = objects(&env.path("repo"))
        .into_iter()
        .filter(|p| p.to_str().unwrap().ends_with(".zst.age"))
        .collect();
    assert_eq!(data.len(), 2);
    for obj in &data {
        let original = std::fs::read(obj).unwrap();
        let name = obj.file_name().unwrap().to_str().unwrap();
        // One flipped byte, with and without a key.
        let mut bad = original.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x20;
        std::fs::write(obj, &bad).unwrap();
        for with_key in [false, true] {
            let mut args = vec!["verify", "latest", "--repo"];
            let repo = env.repo();
            let key = env.key();
            args.push(&repo);
            if with_key {
                args.extend(["--identity", &key]);
            }
            let out = env.run(&args);
            assert_eq!(
                code(&out),
                1,
                "flip in {name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(name) && stdout.contains("corrupt"),
                "{stdout}"
            );
            // With a key too, the damage is named as the stored digest that
            // differs, not only as "does not decode".
            assert!(stdout.contains("manifest says"), "{stdout}");
        }
        // Truncated.
        std::fs::write(obj, &original[..original.len() - 10]).unwrap();
        let out = env.run(&[
            "verify",
            "latest",
            "--repo",
            &env.repo(),
            "--identity",
            &env.key(),
        ]);
        assert_eq!(code(&out), 1);
        assert!(String::from_utf8_lossy(&out.stdout).contains(name));
        // Missing.
        std::fs::remove_file(obj).unwrap();
        let out = env.run(&["verify", "latest", "--repo", &env.repo()]);
        assert_eq!(code(&out), 1);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(name) && stdout.contains("missing"),
            "{stdout}"
        );
        std::fs::write(obj, &original).unwrap();
    }
    let out = env.run(&[
        "verify",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        &env.key(),
    ]);
    assert_eq!(code(&out), 0);

    // dr status shows the last verification: the passing one just made.
    let status = env.json(&["status", "--repo", &env.repo()]);
    let v = &status["sources"][0]["last_verify"];
    assert_eq!(v["ok"], true, "{status}");
    assert_eq!(v["level"], "decoded", "{status}");
    // A failed verification is a problem of the source: status exits 1 and
    // names it, in JSON and in text.
    let obj = &data[0];
    let original = std::fs::read(obj).unwrap();
    let mut bad = original.clone();
    bad[10] ^= 1;
    std::fs::write(obj, &bad).unwrap();
    assert_eq!(
        code(&env.run(&["verify", "latest", "--repo", &env.repo()])),
        1
    );
    std::fs::write(obj, &original).unwrap();
    let out = env.run(&["status", "--repo", &env.repo(), "--json"]);
    assert_eq!(code(&out), 1);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s0 = &status["sources"][0];
    assert_eq!(s0["last_verify"]["ok"], false, "{status}");
    assert_eq!(s0["last_verify"]["level"], "stored", "{status}");
    assert!(
        s0["problems"].to_string().contains("the last verification"),
        "{status}"
    );
    let text =
        String::from_utf8_lossy(&env.run(&["status", "--repo", &env.repo()]).stdout).to_string();
    assert!(
        text.contains("last verified") && text.contains("FAILED"),
        "{text}"
    );

    // A repository of a newer format: exit 2 naming the version.
    let cfg = env.path("repo/dr-repo.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 7");
    std::fs::write(&cfg, text).unwrap();
    let out = env.run(&["list", "--repo", &env.repo()]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("format version 7"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_backup_killed_mid_upload_leaves_nothing_listed() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    // Random text does not compress: the upload takes long enough to be killed.
    pg.psql("postgres", "CREATE DATABASE big");
    pg.psql(
        "big",
        "CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) AS v \
         FROM generate_series(1, 1500000) g",
    );
    let env = Env::new();
    env.init();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("dr"))
        .args([
            "backup",
            "--repo",
            &env.repo(),
            "--postgres",
            &pg.dsn("big"),
        ])
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until 1 MiB of data has been written (mid upload), then kill
    // without warning.
    let written = |repo: &Path| -> u64 {
        objects(repo)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while written(&env.path("repo")) < 1 << 20 {
        assert!(std::time::Instant::now() < deadline, "no upload started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before 1 MiB was written"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended before it was killed"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the backup was killed before it finished"
    );
    let list = env.json(&["list", "--repo", &env.repo()]);
    assert_eq!(list, serde_json::json!([]), "a killed backup is not listed");
    // The next backup succeeds and is the only one listed.
    env.json(&[
        "backup",
        "--repo",
        &env.repo(),
        "--postgres",
        &pg.dsn("big"),
    ]);
    let list = env.json(&["list", "--repo", &env.repo()]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let out = env.run(&[
        "verify",
        "latest",
        "--repo",
        &env.repo(),
        "--identity",
        &env.key(),
    ]);
    assert_eq!(code(&out), 0);

    // SIGTERM (what systemd, Kubernetes and `timeout` send) mid upload: the
    // backup is abandoned cleanly: exit 143, its objects and staging files
    // removed, no password file left in TMPDIR, nothing listed.
    let before = objects(&env.path("repo"));
    let tmp = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("dr"))
        .args([
            "backup",
            "--repo",
            &env.repo(),
            "--postgres",
            &pg.dsn("big"),
        ])
        .env("TMPDIR", tmp.path())
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while objects(&env.path("repo")).len() <= before.len() {
        assert!(std::time::Instant::now() < deadline, "no upload started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix_kill(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let mut after = objects(&env.path("repo"));
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "the interrupted backup left objects");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let list = env.json(&["list", "--repo", &env.repo()]);
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// Sends SIGNAL (`TERM`, `INT`) to `pid` with kill(1).
fn nix_kill(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn configuration_file_sources_and_precedence() {
    if !should_run() {
        return;
    }
    let pg = TestCluster::start();
    pg.pgbench_init("shop", 1);
    let env = Env::new();
    env.init();
    let cfg = env.path("dr.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"{}\"\nidentity_file = \"{}\"\n\n[sources.shop]\nkind = \"postgres\"\ndsn = \"{}\"\n",
            env.path("not-this-repo").display(),
            env.key(),
            pg.dsn("shop")
        ),
    )
    .unwrap();
    // The file names a repository that does not exist; DR_REPO overrides it.
    let out = env
        .dr()
        .args(["backup", "shop"])
        .env("DR_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("not-this-repo"));
    let out = env
        .dr()
        .args(["backup", "shop"])
        .env("DR_CONFIG", &cfg)
        .env("DR_REPO", env.repo())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A flag beats the environment.
    let out = env
        .dr()
        .args(["list", "--repo", &env.repo()])
        .env("DR_CONFIG", &cfg)
        .env("DR_REPO", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // verify --restore takes the scratch server from the configured source.
    let out = env
        .dr()
        .args(["verify", "latest", "--restore"])
        .env("DR_CONFIG", &cfg)
        .env("DR_REPO", env.repo())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Unknown keys are errors naming the key.
    std::fs::write(&cfg, "[repository]\nurll = \"x\"\n").unwrap();
    let out = env
        .dr()
        .args(["list"])
        .env("DR_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("urll"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    let out = env.run(&["backup"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("nothing to back up"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["list", "--repo", "ftp://x/y"]);
    assert_eq!(code(&out), 2);
    let out = env.run(&["repo", "init", "--repo", &env.repo()]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--recipient"), "{}", stderr(&out));
    let out = env.run(&[
        "repo",
        "init",
        "--repo",
        &env.repo(),
        "--recipient",
        "age1bogus",
    ]);
    assert_eq!(code(&out), 2);
    let out = env.run(&["frobnicate"]);
    assert_eq!(code(&out), 2);
    // A point in time without --pgdata is refused, never a restore of the
    // latest state instead.
    let out = env.run(&[
        "restore",
        "latest",
        "--to",
        "postgresql://u@127.0.0.1/x",
        "--target-time",
        "2020-01-01 00:00:00+00",
    ]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--target-time"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--pgdata"), "{}", stderr(&out));
    // Under --json a flag clap refuses is a JSON error on stdout too.
    let out = env.run(&["--json", "list", "--no-such-flag"]);
    assert_eq!(code(&out), 2);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["exit_code"], 2);
    assert!(
        body["error"].as_str().unwrap().contains("--no-such-flag"),
        "{body}"
    );
    // --help is not an error.
    assert_eq!(code(&env.run(&["--help"])), 0);
    // A key file is never overwritten without --force.
    env.run(&["key", "generate", "--output", &env.key()]);
    let out = env.run(&["key", "generate", "--output", &env.key()]);
    assert_ne!(code(&out), 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.key()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// `dr completions SHELL` and `dr man` come from the argument definitions,
/// need no configuration (a broken dr.toml does not stop them), and know
/// every command.
#[test]
fn completions_and_man_pages_cover_every_command() {
    let env = Env::new();
    std::fs::write(env.path("dr.toml"), "[repository\n").unwrap();
    let out = env.run(&["completions", "bash"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    std::fs::write(env.path("dr.bash"), &script).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(env.path("dr.bash"))
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for command in ["backup", "restore", "wal-push", "check", "plan", "drill"] {
        assert!(script.contains(command), "bash completion lacks {command}");
    }
    for shell in ["zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert_eq!(code(&out), 0);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("wal-fetch"),
            "{shell}"
        );
    }
    assert_eq!(code(&env.run(&["completions", "tcsh"])), 2);

    let out = env.run(&["man"]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH dr 1"));
    let out = env.run(&["man", "--dir", env.path("man").to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for page in [
        "dr.1",
        "dr-backup.1",
        "dr-check.1",
        "dr-plan-run.1",
        "dr-wal-fetch.1",
    ] {
        let text = std::fs::read_to_string(env.path("man").join(page)).unwrap();
        assert!(text.starts_with(".ie") && text.contains(".TH"), "{page}");
    }
    // A reader that goes away (`dr check | head -1`) is not a crash: exit 0
    // and no panic, whichever way the command prints.
    std::fs::remove_file(env.path("dr.toml")).unwrap();
    for args in [&["check", "--repo", "absent"][..], &["man"][..]] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("dr"))
            .args(args)
            .current_dir(env.path(""))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
    // --help describes the tool for its users.
    let help = String::from_utf8(env.run(&["--help"]).stdout).unwrap();
    assert!(
        help.starts_with("Disaster recovery: back up PostgreSQL"),
        "{help}"
    );
}
