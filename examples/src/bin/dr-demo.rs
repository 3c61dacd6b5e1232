//! The end-to-end demo, each step a real `dr` command, printed:
//!
//! 1. point-in-time recovery, what dr exists for: a throwaway PostgreSQL
//!    cluster archiving its WAL into a fresh local repository through
//!    `dr wal-push`, a physical base backup, a write load, an accident
//!    (rows deleted) under that load, then `dr restore --target-time` to
//!    just before it into a new data directory, the rows compared with the
//!    source's before the accident, and the RPO and RTO reached printed;
//! 2. a logical dump: `dr backup`, `dr verify --restore` and `dr restore`
//!    into a new database, compared table by table.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use dr_examples::{dr_binary, mib, run_timed};
use dr_postgres::testing::{free_port, ClusterOptions, TestCluster};

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn dr(args: &[&str]) -> Result<dr_examples::Timed> {
    println!("    $ dr {}", args.join(" "));
    let mut cmd = Command::new(dr_binary());
    cmd.args(args);
    run_timed(cmd)
}

/// A restored server, stopped when the demo ends (on failure too): the
/// demo leaves nothing running.
struct Restored {
    pgdata: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Restored {
    fn psql(&self, port: u16, sql: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-d", "shop", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()?;
        ensure!(
            out.status.success(),
            "psql on the restored cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if !self.pgdata.join("postmaster.pid").exists() {
            return;
        }
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["-D"])
            .arg(&self.pgdata)
            .args(["-m", "fast", "-w", "stop"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}

/// Makes `dir` enterable by the server's OS user (it runs `dr wal-push`
/// into the repository inside it).
fn open_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn main() -> Result<()> {
    let scale: u32 = std::env::var("DR_DEMO_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let work = tempfile::Builder::new().prefix("dr-demo").tempdir()?;
    open_dir(work.path())?;
    let repo_dir = work.path().join("repo");
    let repo = format!("file://{}", repo_dir.display());
    let key = work.path().join("key.txt");
    let key = key.to_str().context("utf-8 path")?;
    let dr_program = dr_binary();

    step(1, "a fresh age key and a local repository");
    let out = dr(&["key", "generate", "--output", key])?;
    let recipient = out.stdout.trim().to_string();
    dr(&["repo", "init", "--repo", &repo, "--recipient", &recipient])?;

    step(
        2,
        "PostgreSQL: a throwaway cluster (initdb + pg_ctl on a free loopback port) archiving its WAL with dr wal-push",
    );
    let archive_command = format!(
        "{} wal-push --repo {repo} --source shop %p",
        dr_program.display()
    );
    let mut options = ClusterOptions::default();
    options.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!("archive_command = '{archive_command}'"),
        "max_wal_senders = 4".into(),
    ];
    let pg = TestCluster::start_with(options);
    // The server's OS user writes WAL objects into the repository and reads
    // the key when a restored copy fetches WAL: give it both (the key stays
    // mode 0600).
    if let Some((uid, gid)) = pg.owner() {
        std::os::unix::fs::chown(key, Some(uid), Some(gid))?;
        chown_tree(&repo_dir, uid, gid)?;
    }
    println!(
        "    data directory {}, port {}\n    archive_command = '{archive_command}'",
        pg.data_dir().display(),
        pg.port()
    );

    step(
        3,
        &format!("data: pgbench scale {scale} plus a table of random text"),
    );
    pg.pgbench_init("shop", scale);
    pg.psql(
        "shop",
        "CREATE TABLE reviews AS SELECT g AS id, md5(random()::text) || ' ' || md5(random()::text) AS body \
         FROM generate_series(1, 200000) g",
    );
    let source = pg.dsn("shop");
    println!("    {source}");

    step(
        4,
        "physical base backup: BASE_BACKUP -> zstd -> age -> repository; its WAL is archived",
    );
    let base = dr(&[
        "backup",
        "shop",
        "--physical",
        "--postgres",
        &source,
        "--repo",
        &repo,
        "--json",
    ])?;
    let base_manifest: serde_json::Value = serde_json::from_str(&base.stdout)?;
    let base_id = base_manifest[0]["backup_id"]
        .as_str()
        .context("backup id")?
        .to_string();
    let base_stored: u64 = base_manifest[0]["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["stored_size"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "    base backup {base_id}: {} stored in {:.2} s",
        mib(base_stored),
        base.elapsed.as_secs_f64()
    );

    step(
        5,
        "the accident: under a pgbench write load, a third of the reviews are deleted",
    );
    let mut load = Command::new(pg.bin().join("pgbench"))
        .args(["-n", "-c", "2", "-T", "4", "-d", &source])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("pgbench")?;
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let fingerprint =
        "SELECT count(*) || ' ' || md5(string_agg(body, '' ORDER BY id)) FROM reviews";
    let before = pg.psql("shop", fingerprint);
    let target = pg.psql("shop", "SELECT clock_timestamp()");
    std::thread::sleep(std::time::Duration::from_millis(200));
    pg.psql("shop", "DELETE FROM reviews WHERE id % 3 = 0");
    let after = pg.psql("shop", fingerprint);
    println!("    reviews before: {before}\n    target time:    {target} (just before the DELETE)\n    reviews after:  {after}");
    load.wait().context("pgbench")?;
    let last = pg.switch_wal();
    pg.wait_archived(&last, std::time::Duration::from_secs(60));
    println!("    WAL archived through {last}");

    step(
        6,
        "point-in-time recovery to just before the accident, into a new data directory, started",
    );
    let pgdata = work.path().join("restored");
    let port = free_port();
    let restored = Restored {
        pgdata: pgdata.clone(),
        bin: pg.bin().to_path_buf(),
        owner: pg.owner(),
    };
    let pitr = dr(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--repo",
        &repo,
        "--identity",
        key,
        "--pgdata",
        pgdata.to_str().context("utf-8 path")?,
        "--target-time",
        &target,
        "--port",
        &port.to_string(),
        "--start",
        "--json",
    ])?;
    let report: serde_json::Value = serde_json::from_str(&pitr.stdout)?;
    let replayed = report["reached"]["last_replayed_commit"]
        .as_str()
        .unwrap_or("-")
        .to_string();
    println!(
        "    restored {} from base backup {} and replayed WAL to {}; last transaction replayed committed at {replayed}",
        mib(report["bytes"].as_u64().unwrap_or(0)),
        report["plan"]["backup_id"].as_str().unwrap_or("?"),
        report["reached"]["lsn"].as_str().unwrap_or("?"),
    );
    let recovered = restored.psql(port, fingerprint)?;
    println!("    reviews in the restored cluster: {recovered}");
    ensure!(
        recovered == before,
        "the restored reviews differ from the source's before the accident"
    );
    let rpo = chrono::DateTime::parse_from_rfc3339(&replayed)
        .ok()
        .zip(
            chrono::DateTime::parse_from_str(&format!("{target}00"), "%Y-%m-%d %H:%M:%S%.f%z").ok(),
        )
        .map(|(r, t)| (t - r).num_milliseconds());
    drop(restored);
    step(
        7,
        "logical backup: pg_dump (snapshot-consistent row counts) -> zstd -> age -> repository",
    );
    let backup = dr(&[
        "backup",
        "shop-dump",
        "--repo",
        &repo,
        "--postgres",
        &source,
        "--json",
    ])?;
    let manifest: serde_json::Value = serde_json::from_str(&backup.stdout)?;
    let manifest = &manifest[0];
    let id = manifest["backup_id"]
        .as_str()
        .context("backup id")?
        .to_string();
    let plain: u64 = manifest["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["plain_size"].as_u64().unwrap_or(0))
        .sum();
    let stored: u64 = manifest["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["stored_size"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "    backup {id}: {} of dumps stored as {}",
        mib(plain),
        mib(stored)
    );

    step(8, "verify: digests of every object, then a restore into a scratch database compared table by table");
    let verify = dr(&[
        "verify",
        &id,
        "--repo",
        &repo,
        "--identity",
        key,
        "--restore",
        "--scratch",
        &pg.dsn("postgres"),
        "--json",
    ])?;
    let report: serde_json::Value = serde_json::from_str(&verify.stdout)?;
    let checks = report["checks"]["checks"].as_array().context("checks")?;
    ensure!(
        checks.iter().all(|c| c["expected"] == c["actual"]),
        "verify found differences"
    );
    println!(
        "    {} tables compared with the backup's snapshot: all equal; scratch database dropped",
        checks.len()
    );

    step(9, "restore into a new database");
    let restore = dr(&[
        "restore",
        &id,
        "--repo",
        &repo,
        "--identity",
        key,
        "--to",
        &pg.dsn("shop_restored"),
    ])?;
    print!("    {}", restore.stdout);

    step(10, "summary");
    println!("    {:<28} {:>12} {:>12}", "table", "source", "restored");
    let mut all_equal = true;
    for table in [
        "pgbench_accounts",
        "pgbench_branches",
        "pgbench_tellers",
        "pgbench_history",
        "reviews",
    ] {
        let q = format!("SELECT count(*) FROM {table}");
        let a = pg.psql("shop", &q);
        let b = pg.psql("shop_restored", &q);
        all_equal &= a == b;
        println!("    {table:<28} {a:>12} {b:>12}");
    }
    let sums = "SELECT sum(abalance) || '/' || (SELECT md5(string_agg(body, '' ORDER BY id)) FROM reviews) FROM pgbench_accounts";
    ensure!(
        pg.psql("shop", sums) == pg.psql("shop_restored", sums),
        "restored contents differ"
    );
    ensure!(all_equal, "row counts differ");
    println!(
        "    sizes: dump {} -> stored {} (ratio {:.1}x)",
        mib(plain),
        mib(stored),
        plain as f64 / stored.max(1) as f64
    );
    println!(
        "    durations: backup {:.2} s, verify with restore {:.2} s, restore {:.2} s",
        backup.elapsed.as_secs_f64(),
        verify.elapsed.as_secs_f64(),
        restore.elapsed.as_secs_f64()
    );
    if let Some(rss) = backup.peak_rss {
        println!("    dr backup peak RSS: {}", mib(rss));
    }
    println!(
        "    point-in-time recovery: RTO {:.2} s (restore, WAL replay and start, to a running copy); RPO {} \
         (the target time minus the commit time of the last transaction replayed)",
        pitr.elapsed.as_secs_f64(),
        rpo.map_or_else(|| "-".to_string(), |ms| format!("{ms} ms"))
    );
    println!(
        "\ndemo passed: WAL archived, rows deleted and recovered to the second before; a dump backed up, \
         verified by restore, restored; contents equal"
    );
    Ok(())
}

/// Gives `dir` and everything under it to `uid:gid`.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
