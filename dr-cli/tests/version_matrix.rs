//! Issue 17: dr's core round trip on every supported PostgreSQL major
//! version other than 15 (which every other test uses): 13, 14, 16, 17 and
//! 18, installed by `scripts/install-pg-versions.sh` under
//! `/opt/dr-pg/<major>` (server-only builds for 13 to 17; 18 with every
//! client program, which the others use as the test machines have no
//! client of their own version).
//!
//! Per version, through the built `dr` binary on a local repository:
//! - a logical backup (pg_dump 18 found through `DR_PG_BIN`), `verify
//!   --restore` into a scratch database and a restore into a new database
//!   with its row counts: on 13, 14 and 16 that is pg_restore 18 into an
//!   older server, which sends `SET transaction_timeout`;
//! - WAL archiving by `dr wal-push` as the server's `archive_command`, a
//!   physical base backup (BASE_BACKUP from 15 on, pg_basebackup before), a
//!   PITR restore to a time with exactly the rows committed before it, with
//!   the server programs of the backup's version; physical `verify
//!   --restore`;
//! - a restore whose server programs cannot be found fails before writing
//!   anything, naming what it searched;
//! - a physical `verify --restore` without those programs fails (exit 1,
//!   a `dr status` problem) rather than calling the backup unproven;
//! - `dr status` and `dr prune --dry-run`.
//!
//! One cluster per test; the versions run as separate tests.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{code, init_repo, ok, psql_port, run, scratch, stderr, wait_until};
use dr_postgres::testing::{self, free_port, version_bin, version_client_bin, TestCluster};

/// Whether the matrix's PostgreSQL builds are installed; a failure instead
/// of a skip under `DR_REQUIRE_SERVERS`.
fn installed(major: u32) -> bool {
    if version_bin(major).is_some() && version_client_bin().is_some() && testing::available() {
        return true;
    }
    assert!(
        std::env::var_os("DR_REQUIRE_SERVERS").is_none(),
        "DR_REQUIRE_SERVERS is set but PostgreSQL {major} or 18's clients are not installed under {} \
         (scripts/install-pg-versions.sh)",
        testing::versions_dir().display()
    );
    eprintln!("skipping: PostgreSQL {major} not installed (scripts/install-pg-versions.sh)");
    false
}

fn round_trip(major: u32) {
    if !installed(major) {
        return;
    }
    let client = version_client_bin().unwrap();
    let server_bin = version_bin(major).unwrap();
    let clients = client.to_str().unwrap();
    let servers = server_bin.to_str().unwrap();
    let dir = scratch("drvm");
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    let key = init_repo(dir.path(), &[], repo_s);
    let key_s = key.to_str().unwrap();
    let physical = format!("pg{major}");
    let logical = format!("app{major}");

    let mut o = common::archiving(&repo, &physical);
    o.major = Some(major);
    let c = TestCluster::start_with(o);
    let version: u32 = c
        .psql("postgres", "SELECT current_setting('server_version_num')")
        .parse()
        .unwrap();
    assert_eq!(
        version / 10000,
        major,
        "the cluster runs PostgreSQL {major}"
    );
    c.psql("postgres", "CREATE DATABASE app");
    c.psql(
        "app",
        "CREATE TABLE t (id int PRIMARY KEY, note text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g; \
         SELECT lo_from_bytea(0, 'large object'::bytea)",
    );
    let common_args = ["--repo", repo_s, "--identity", key_s, "--no-progress"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(common_args.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let dr = |envs: &[(&str, &str)], args: &[&str]| {
        let args = with(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(dir.path(), envs, &args)
    };
    let pg_bin_clients = [("DR_PG_BIN", clients)];

    // Logical: backup, verify --restore, restore with counts.
    ok(
        "logical backup",
        dr(
            &pg_bin_clients,
            &["backup", &logical, "--postgres", &c.dsn("app")],
        ),
    );
    let verified = ok(
        "logical verify --restore",
        dr(
            &pg_bin_clients,
            &[
                "verify",
                "latest",
                "--source",
                &logical,
                "--restore",
                "--scratch",
                &c.dsn("postgres"),
            ],
        ),
    );
    assert!(
        major >= 17 || String::from_utf8_lossy(&verified.stdout).contains("transaction_timeout"),
        "pg_restore 18 into PostgreSQL {major}: the forgiven error is said:\n{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let restored = ok(
        "logical restore",
        dr(
            &pg_bin_clients,
            &[
                "restore",
                "latest",
                "--source",
                &logical,
                "--to",
                &c.dsn("copy"),
            ],
        ),
    );
    assert_eq!(
        major < 17,
        String::from_utf8_lossy(&restored.stdout)
            .contains("warning: pg_restore 18 sent `SET transaction_timeout"),
        "{}",
        String::from_utf8_lossy(&restored.stdout)
    );
    assert_eq!(
        c.psql("copy", "SELECT count(*), sum(id) FROM t"),
        "500|125250"
    );
    assert_eq!(
        c.psql(
            "copy",
            "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
        ),
        "large object"
    );

    // Physical: base backup with archiving, then a PITR restore to a time.
    ok(
        "physical backup",
        dr(
            &pg_bin_clients,
            &[
                "backup",
                &physical,
                "--postgres",
                &c.dsn("postgres"),
                "--physical",
            ],
        ),
    );
    c.psql(
        "app",
        "INSERT INTO t SELECT g, 'kept' FROM generate_series(501, 600) g",
    );
    std::thread::sleep(Duration::from_millis(20));
    let target = c.psql("postgres", "SELECT clock_timestamp()::text");
    std::thread::sleep(Duration::from_millis(20));
    c.psql(
        "app",
        "INSERT INTO t SELECT g, 'lost' FROM generate_series(601, 700) g",
    );
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));

    // Without the server programs of its version the restore refuses before
    // writing anything (no 13..18 layout exists on the test machines but
    // Debian's 15).
    let pgdata = dir.path().join("restored");
    let pgdata_s = pgdata.to_str().unwrap();
    let port = free_port().to_string();
    let pitr = [
        "restore",
        "auto",
        "--source",
        &physical,
        "--pgdata",
        pgdata_s,
        "--target-time",
        &target,
        "--start",
        "--port",
        &port,
    ];
    if major != 15 {
        let refused = dr(&[("PATH", "/usr/bin:/bin")], &pitr);
        assert_ne!(
            code(&refused),
            0,
            "restore without PostgreSQL {major}'s server"
        );
        let e = stderr(&refused);
        assert!(
            e.contains(&format!("no postgres of version {major}")) && e.contains("--pg-bin"),
            "{e}"
        );
        assert!(!pgdata.exists(), "nothing written: {e}");
    }
    ok("PITR restore", dr(&[("DR_PG_BIN", servers)], &pitr));
    let restored_port: u16 = port.parse().unwrap();
    let counts = psql_port(
        &client,
        restored_port,
        "app",
        "SELECT count(*), max(id) FROM t",
    );
    let stopped = stop(&server_bin, &pgdata, c.owner());
    assert_eq!(counts.unwrap(), "600|600", "rows committed before {target}");
    stopped.unwrap();

    // A scratch restore that cannot run here (no server programs of the
    // backup's version) is a failed verification, not an unproven one.
    let failed = dr(
        &[("PATH", "/usr/bin:/bin")],
        &["verify", "latest", "--source", &physical, "--restore"],
    );
    assert_eq!(
        code(&failed),
        1,
        "{}\n{}",
        String::from_utf8_lossy(&failed.stdout),
        stderr(&failed)
    );
    let status = dr(&[], &["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert_ne!(code(&status), 0, "{shown}");
    assert!(
        shown.contains("the last verification") && shown.contains("failed"),
        "{shown}"
    );
    ok(
        "physical verify --restore",
        dr(
            &[("DR_PG_BIN", servers)],
            &["verify", "latest", "--source", &physical, "--restore"],
        ),
    );

    let status = ok("status", dr(&[], &["status", "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for source in [&physical, &logical] {
        let s = status["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == source.as_str())
            .unwrap_or_else(|| panic!("{source} in {status:#}"));
        assert_eq!(s["last_verify"]["ok"], true, "{s:#}");
        assert_eq!(s["problems"].as_array().map(Vec::len), Some(0), "{s:#}");
    }
    ok("prune --dry-run", dr(&[], &["prune", "--dry-run"]));
}

/// `pg_ctl stop` of a restored cluster, as its owner.
fn stop(bin: &Path, pgdata: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    if !pgdata.join("postmaster.pid").exists() {
        return Ok(());
    }
    let mut cmd = std::process::Command::new(bin.join("pg_ctl"));
    cmd.arg("-D").arg(pgdata).args(["-m", "fast", "-w", "stop"]);
    if let Some((uid, gid)) = owner {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    wait_until(
        "the restored server stopped",
        Duration::from_secs(30),
        || !pgdata.join("postmaster.pid").exists(),
    );
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn postgres_13() {
    round_trip(13);
}

#[test]
fn postgres_14() {
    round_trip(14);
}

#[test]
fn postgres_16() {
    round_trip(16);
}

#[test]
fn postgres_17() {
    round_trip(17);
}

#[test]
fn postgres_18() {
    round_trip(18);
}
