//! Helpers shared by the `dr` binary's integration tests: scratch
//! directories the `postgres` user can use, running `dr` with none of dr's
//! own variables inherited, and checking its exit.
//!
//! The test clusters run as the `postgres` user (dr_postgres::testing), so
//! every directory here is made under `/tmp` (socket paths are limited to
//! 107 bytes) with open permissions.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The binary under test.
pub const DR: &str = env!("CARGO_BIN_EXE_dr");

/// dr's own variables, never inherited from the test's environment.
const DR_VARIABLES: &[&str] = &[
    "DR_REPO",
    "DR_CONFIG",
    "DR_IDENTITY_FILE",
    "DR_PASSPHRASE",
    "DR_PASSPHRASE_FILE",
    "DR_WAL_SOURCE",
    "DR_WAL_RETRIES",
    "DR_WAL_RETRY_DEADLINE",
    "DR_PG_BIN",
];

/// A scratch directory under /tmp that the `postgres` user can enter and
/// write.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Opens `p` and everything under it to every user.
pub fn chmod_tree(p: &Path) {
    let mode = if p.is_dir() { 0o777 } else { 0o666 };
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chmod_tree(&e.unwrap().path());
        }
    }
}

/// `dr` run from `dir` with none of dr's own variables inherited, plus
/// `envs`.
pub fn dr(dir: &Path, envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(DR);
    c.current_dir(dir);
    for v in DR_VARIABLES {
        c.env_remove(v);
    }
    c.envs(envs.iter().copied());
    c
}

/// Runs `dr ARGS` (see [`dr`]).
pub fn run(dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    dr(dir, envs).args(args).output().unwrap()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code (a test failure when ended by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().expect("dr ended by a signal")
}

/// `o`, after checking it succeeded (else a failure naming `what`, with
/// its output).
pub fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    o
}

/// A key (readable by `postgres`) in `dir` and a repository initialised at
/// `url` (opened to every user when local); returns the key's path.
pub fn init_repo(dir: &Path, envs: &[(&str, &str)], url: &str) -> std::path::PathBuf {
    let key = dir.join("key.txt");
    let out = ok(
        "key generate",
        run(
            dir,
            envs,
            &["key", "generate", "--output", key.to_str().unwrap()],
        ),
    );
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(
        "repo init",
        run(
            dir,
            envs,
            &["repo", "init", "--repo", url, "--recipient", &recipient],
        ),
    );
    if !url.contains("://") {
        chmod_tree(Path::new(url));
    }
    key
}

/// Cluster options that archive every WAL segment into the local
/// repository `repo` under `source` with the built `dr wal-push`, as
/// `archive_command` (and allow base backups over replication).
pub fn archiving(repo: &Path, source: &str) -> dr_postgres::testing::ClusterOptions {
    let mut o = dr_postgres::testing::ClusterOptions::default();
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!(
            "archive_command = '{DR} wal-push --repo {} --source {source} %p'",
            repo.display()
        ),
        "max_wal_senders = 4".into(),
    ];
    o
}

/// Waits until `f` holds, polling every 100 ms; fails after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `psql` of `bin` over TCP to a server on 127.0.0.1:`port` as `postgres`,
/// in database `db`.
pub fn psql_port(bin: &Path, port: u16, db: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", db, "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
