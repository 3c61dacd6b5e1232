//! Issue 3's WAL archiving rules through the built `dr` binary, run by
//! PostgreSQL 15 itself as `archive_command` and `restore_command`, against a
//! local repository and S3 (moto).
//!
//! The clusters run as the `postgres` user (dr_postgres::testing), so the
//! binary, the key file and a local repository must be reachable by it; every
//! temporary directory here is made under `/tmp` with open permissions.
//!
//! S3 tests need `AWS_ENDPOINT_URL` and `DR_TEST_S3_URL` (exported by
//! `scripts/services/s3.sh`); without them they skip, unless
//! `DR_REQUIRE_SERVERS` is set. The frozen-store test starts a moto server of
//! its own (the test venv's), so that `SIGSTOP` never stalls the other tests.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dr_postgres::testing::{self, free_port, ClusterOptions, TestCluster};
use dr_storage::{Location, Repository, StoreOptions, WalArchive};

mod common;

use common::{chmod_tree, code, ok, scratch, stderr, wait_until, DR};

/// `dr` with none of dr's own variables inherited, plus `envs`.
fn dr(dir: &Path, envs: &[(String, String)]) -> Command {
    let mut c = Command::new(DR);
    c.current_dir(dir);
    for v in [
        "DR_REPO",
        "DR_CONFIG",
        "DR_IDENTITY_FILE",
        "DR_PASSPHRASE",
        "DR_PASSPHRASE_FILE",
        "DR_WAL_SOURCE",
        "DR_WAL_RETRIES",
        "DR_WAL_RETRY_DEADLINE",
    ] {
        c.env_remove(v);
    }
    c.envs(envs.iter().map(|(k, v)| (k, v)));
    c
}

fn run(dir: &Path, envs: &[(String, String)], args: &[&str]) -> Output {
    dr(dir, envs).args(args).output().unwrap()
}

/// A key (readable by `postgres`) and an initialised repository at `url`.
fn init_repo(dir: &Path, envs: &[(String, String)], url: &str) -> PathBuf {
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

/// `archive_command` calling the built binary; `prefix` is put before it
/// (environment assignments for a private S3 endpoint).
fn archiving_cluster(prefix: &str, url: &str, source: &str) -> TestCluster {
    let mut o = ClusterOptions::default();
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!("archive_command = '{prefix}{DR} wal-push --repo {url} --source {source} %p'"),
        "max_wal_senders = 4".into(),
    ];
    TestCluster::start_with(o)
}

/// `psql` over TCP to a server on 127.0.0.1:`port`.
fn psql_port(bin: &Path, port: u16, sql: &str) -> Result<String, String> {
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
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(stderr(&out))
    }
}

/// A restored data directory whose server is stopped on drop.
struct Restored {
    pgdata: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Restored {
    fn pg_ctl(&self, args: &[&str], envs: &[(String, String)]) -> Output {
        let mut c = Command::new(self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(&self.pgdata)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .envs(envs.iter().map(|(k, v)| (k, v)));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c.output().unwrap()
    }

    fn running(&self) -> bool {
        self.pgdata.join("postmaster.pid").exists()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"], &[]);
        }
    }
}

/// Names of timeline-1 segments 1..=last (16 MiB segments: 256 per log file).
fn segments_up_to(last: &str) -> Vec<String> {
    let log = u64::from_str_radix(&last[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&last[16..24], 16).unwrap();
    (1..=log * 256 + seg)
        .map(|n| format!("00000001{:08X}{:08X}", n / 256, n % 256))
        .collect()
}

fn s3_base_url() -> Option<String> {
    match (
        std::env::var("AWS_ENDPOINT_URL"),
        std::env::var("DR_TEST_S3_URL"),
    ) {
        (Ok(_), Ok(u)) => Some(u.trim_end_matches('/').to_string()),
        _ if std::env::var_os("DR_REQUIRE_SERVERS").is_some() => {
            panic!("DR_REQUIRE_SERVERS is set but AWS_ENDPOINT_URL / DR_TEST_S3_URL are not (scripts/services/s3.sh)")
        }
        _ => {
            eprintln!(
                "skipping: AWS_ENDPOINT_URL / DR_TEST_S3_URL not set (scripts/test.sh starts moto)"
            );
            None
        }
    }
}

fn suffix() -> String {
    format!("{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

async fn open_archive(url: &str, endpoint: Option<&str>, source: &str) -> WalArchive {
    let mut o = StoreOptions::default();
    o.endpoint = endpoint.map(str::to_string);
    let repo = Repository::open(&Location::parse(url).unwrap(), &o)
        .await
        .unwrap();
    WalArchive::new(&repo, source).unwrap()
}

/// Rule 1 and 4 end to end: PostgreSQL archives through `dr wal-push` under
/// write load; a physical base backup's `.backup` file, and after a restore
/// that promotes (archiving on, same source) the `.history` file and the new
/// timeline's segments, all reach the repository; no archive attempt fails;
/// the archive of timeline 1 has no gap; and the `.history` file fetched
/// back with `dr wal-fetch` is the server's own, byte for byte.
///
/// No `.partial` here: PostgreSQL archives the old timeline's last segment
/// as `.partial` only when that segment was not archived already (a standby
/// promoted with streamed WAL), and a restore from the archive always has it
/// archived (`CleanupAfterArchiveRecovery` in xlogrecovery.c/xlog.c). The
/// `.partial` rules are tested on the binary in
/// `exit_codes_and_files_left_behind`.
async fn archive_command_round_trip(url: &str) {
    let work = scratch("drc");
    let dir = work.path();
    let key = init_repo(dir, &[], url);
    let a = archiving_cluster("", url, "db");
    a.pgbench_init("postgres", 1);
    let load = Command::new(a.bin().join("pgbench"))
        .args(["-n", "-c", "2", "-T", "2", "-d", &a.dsn("postgres")])
        .output()
        .unwrap();
    assert!(load.status.success(), "pgbench: {}", stderr(&load));
    let mut last = String::new();
    for i in 0..3 {
        a.psql(
            "postgres",
            &format!("UPDATE pgbench_accounts SET abalance = abalance + {i} WHERE aid % 7 = 0"),
        );
        last = a.switch_wal();
    }
    a.wait_archived(&last, Duration::from_secs(60));

    // A physical base backup: PostgreSQL archives its .backup file.
    let out = ok(
        "dr backup --physical",
        run(
            dir,
            &[],
            &[
                "backup",
                "db",
                "--postgres",
                &a.dsn("postgres"),
                "--physical",
                "--repo",
                url,
                "--json",
            ],
        ),
    );
    let sysid = a.system_id();
    let archive = open_archive(url, None, "db").await;
    assert_eq!(archive.system_id().await.unwrap(), Some(sysid));
    let rt = tokio::runtime::Handle::current();
    let list = |history: bool| {
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                if history {
                    archive.list_history(sysid).await
                } else {
                    archive.list(sysid).await
                }
            })
        })
        .unwrap()
    };
    wait_until(
        &format!(
            "a .backup file archived after {}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Duration::from_secs(30),
        || list(false).iter().any(|o| o.name.ends_with(".backup")),
    );
    let stored = list(false);
    let names: Vec<&str> = stored.iter().map(|o| o.name.as_str()).collect();
    for seg in segments_up_to(&last) {
        assert!(names.contains(&seg.as_str()), "{seg} missing: {names:?}");
    }
    assert_eq!(
        a.psql(
            "postgres",
            "SELECT failed_count || ' ' || (archived_count >= 4)::text FROM pg_stat_archiver"
        ),
        "0 true"
    );

    // dr verify reads the backup's WAL: start to stop, with --wal the whole
    // chain; a flipped byte in the start segment fails the verification
    // (exit 1, naming the segment), and --restore does not try a scratch
    // restore that could never reach consistency (exit 1, not 3).
    let id = key.to_str().unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "latest",
            "--source",
            "db",
            "--repo",
            url,
            "--identity",
            id,
        ];
        args.extend_from_slice(extra);
        run(dir, &[], &args)
    };
    let out = ok("dr verify (physical)", verify(&[]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("ok      WAL") && text.contains("start to stop of the backup"),
        "{text}"
    );
    let out = ok("dr verify --wal", verify(&["--wal"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("to the newest archived segment"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let backup_file = stored
        .iter()
        .find(|o| o.name.ends_with(".backup"))
        .unwrap()
        .name
        .clone();
    let start_segment = backup_file[..24].to_string();
    let object = stored
        .iter()
        .find(|o| o.name == start_segment)
        .unwrap()
        .object
        .clone();
    let store = archive.repository().store().clone();
    let path = dr_storage::object_store::path::Path::from(object.as_str());
    let original = tokio::task::block_in_place(|| {
        rt.block_on(async { store.get(&path).await.unwrap().bytes().await.unwrap() })
    });
    let mut damaged = original.to_vec();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x01;
    let put = |bytes: Vec<u8>| {
        tokio::task::block_in_place(|| {
            rt.block_on(async { store.put(&path, bytes.into()).await.unwrap() })
        });
    };
    put(damaged);
    for extra in [&[][..], &["--restore"][..]] {
        let out = verify(extra);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(code(&out), 1, "verify {extra:?}: {text}\n{}", stderr(&out));
        assert!(
            text.contains(&format!("FAILED  WAL segment {start_segment} is damaged")),
            "{text}"
        );
    }
    put(original.to_vec());
    ok("dr verify after the repair", verify(&[]));

    // Restore with archiving on, into the same source, and promote: the new
    // timeline's .history file and the old timeline's .partial segment are
    // archived by `dr wal-push` run by the restored server.
    let pgdata = dir.join("p");
    let port = free_port();
    let restored = Restored {
        pgdata: pgdata.clone(),
        bin: a.bin().to_path_buf(),
        owner: a.owner(),
    };
    ok(
        "dr restore --start",
        run(
            dir,
            &[],
            &[
                "restore",
                "auto",
                "--source",
                "db",
                "--repo",
                url,
                "--identity",
                key.to_str().unwrap(),
                "--pgdata",
                pgdata.to_str().unwrap(),
                "--target",
                "immediate",
                "--port",
                &port.to_string(),
                "--start",
                // This copy is the new primary: it keeps archiving.
                "--archive",
            ],
        ),
    );
    assert_eq!(
        psql_port(restored.bin.as_path(), port, "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );
    let tl2 = psql_port(
        &restored.bin,
        port,
        "SELECT pg_walfile_name(pg_switch_wal()) FROM (SELECT pg_logical_emit_message(false, 't', 'x')) m",
    )
    .unwrap();
    assert!(tl2.starts_with("00000002"), "{tl2}");
    let archived = || {
        list(true).iter().any(|o| o.name == "00000002.history")
            && list(false).iter().any(|o| o.name == tl2)
    };
    let started = Instant::now();
    while !archived() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the restored server did not archive 00000002.history and {tl2}: history {:?}, segments {:?}, \
             pg_stat_archiver {:?}, log:\n{}",
            list(true),
            list(false).iter().map(|o| &o.name).collect::<Vec<_>>(),
            psql_port(&restored.bin, port, "SELECT * FROM pg_stat_archiver"),
            std::fs::read_to_string(pgdata.join("dr-restore.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        psql_port(
            &restored.bin,
            port,
            "SELECT failed_count FROM pg_stat_archiver"
        )
        .unwrap(),
        "0"
    );
    let fetched = dir.join("fetched.history");
    ok(
        "dr wal-fetch 00000002.history",
        run(
            dir,
            &[],
            &[
                "wal-fetch",
                "--repo",
                url,
                "--identity",
                key.to_str().unwrap(),
                "--source",
                "db",
                "00000002.history",
                fetched.to_str().unwrap(),
            ],
        ),
    );
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(pgdata.join("pg_wal/00000002.history")).unwrap()
    );
    assert_eq!(
        a.psql("postgres", "SELECT failed_count FROM pg_stat_archiver"),
        "0"
    );
    drop(restored);
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_command_into_a_local_repository() {
    if !testing::should_run() {
        return;
    }
    let repo = scratch("drl");
    let url = repo.path().join("repo").display().to_string();
    archive_command_round_trip(&url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_command_into_s3() {
    if !testing::should_run() {
        return;
    }
    let Some(base) = s3_base_url() else { return };
    archive_command_round_trip(&format!("{base}/walcli-{}", suffix())).await;
}

/// Rule 2, 3, 5, 6, 7 on the binary's exit codes and stderr, with segments
/// written by real clusters; then dr's start-up time (reported, not asserted).
#[test]
fn exit_codes_and_files_left_behind() {
    if !testing::should_run() {
        return;
    }
    let work = scratch("drx");
    let dir = work.path();
    let url = dir.join("repo").display().to_string();
    let key = init_repo(dir, &[], &url);
    let key = key.to_str().unwrap();
    let a = TestCluster::start();
    a.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g",
    );
    let s1 = a.switch_wal();
    assert_eq!(s1, "000000010000000000000001");
    let s1_path = dir.join("a").join(&s1);
    std::fs::create_dir(dir.join("a")).unwrap();
    std::fs::copy(a.data_dir().join("pg_wal").join(&s1), &s1_path).unwrap();
    a.psql(
        "postgres",
        "INSERT INTO t SELECT g FROM generate_series(1, 1000) g",
    );
    let s2 = a.switch_wal();
    assert_eq!(s2, "000000010000000000000002");
    let s2_content = std::fs::read(a.data_dir().join("pg_wal").join(&s2)).unwrap();
    let push = |file: &Path| {
        run(
            dir,
            &[],
            &[
                "wal-push",
                "--repo",
                &url,
                "--source",
                "db",
                "--pgdata",
                a.data_dir().to_str().unwrap(),
                "--json",
                file.to_str().unwrap(),
            ],
        )
    };
    let fetch = |name: &str, dest: &Path| {
        run(
            dir,
            &[],
            &[
                "wal-fetch",
                "--repo",
                &url,
                "--identity",
                key,
                "--source",
                "db",
                name,
                dest.to_str().unwrap(),
            ],
        )
    };
    let json = |o: &Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).unwrap() };

    // First push stores; the same content again exits 0 and stores nothing.
    let first = ok("wal-push", push(&s1_path));
    assert_eq!(json(&first)["stored"], true);
    let again = ok("wal-push again", push(&s1_path));
    assert_eq!(json(&again)["stored"], false);
    assert_eq!(json(&again)["sha256"], json(&first)["sha256"]);

    // Other content under the same name: 1..=125, both checksums named.
    let original = std::fs::read(&s1_path).unwrap();
    let mut changed = original.clone();
    changed[10_000] ^= 0xFF;
    std::fs::create_dir(dir.join("changed")).unwrap();
    let changed_path = dir.join("changed").join(&s1);
    std::fs::write(&changed_path, &changed).unwrap();
    let out = push(&changed_path);
    let c = code(&out);
    assert!((1..=125).contains(&c), "exit {c}: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&dr_storage::sha256_hex(&original))
            && err.contains(&dr_storage::sha256_hex(&changed)),
        "{err}"
    );

    // The same name from another cluster (another system identifier).
    let b = TestCluster::start();
    std::fs::create_dir(dir.join("b")).unwrap();
    let b_path = dir.join("b").join(&s1);
    std::fs::copy(b.data_dir().join("pg_wal").join(&s1), &b_path).unwrap();
    let out = push(&b_path);
    let c = code(&out);
    let err = stderr(&out);
    assert!((1..=125).contains(&c), "exit {c}: {err}");
    assert!(
        err.contains("system identifier")
            && err.contains(&a.system_id().to_string())
            && err.contains(&b.system_id().to_string()),
        "{err}"
    );

    // The stored object is unchanged by both refused pushes.
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("RECOVERYXLOG");
    ok("wal-fetch", fetch(&s1, &dest));
    assert_eq!(std::fs::read(&dest).unwrap(), original);
    std::fs::remove_file(&dest).unwrap();

    // X.partial is stored and served under its own name, never for X.
    std::fs::create_dir(dir.join("p")).unwrap();
    let partial = dir.join("p").join(format!("{s2}.partial"));
    std::fs::write(&partial, &s2_content).unwrap();
    ok("wal-push .partial", push(&partial));
    let out = fetch(&s2, &dest);
    assert_eq!(
        code(&out),
        1,
        "{s2} served from {s2}.partial: {}",
        stderr(&out)
    );
    assert!(!dest.exists());
    ok("wal-fetch .partial", fetch(&format!("{s2}.partial"), &dest));
    assert_eq!(std::fs::read(&dest).unwrap(), s2_content);
    std::fs::remove_file(&dest).unwrap();

    // A missing segment: exit 1, nothing written.
    let out = fetch("0000000100000000000000F0", &dest);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("0000000100000000000000F0"));
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);

    // Not WAL at all: refused within 1..=125.
    let junk = dir.join("changed").join("000000010000000000000077");
    std::fs::write(&junk, b"not wal").unwrap();
    let out = push(&junk);
    assert!((1..=125).contains(&code(&out)), "{}", stderr(&out));

    // Start-up time: `dr wal-fetch` of a missing segment on a local repository.
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let out = fetch("0000000100000000000000F1", &dest);
            assert_eq!(code(&out), 1);
            t.elapsed()
        })
        .collect();
    times.sort();
    eprintln!(
        "dr start-up: wal-fetch of a missing segment, local repository, 20 runs: median {:?}, min {:?}, max {:?} ({})",
        times[10],
        times[0],
        times[19],
        if cfg!(debug_assertions) { "debug build" } else { "release build" }
    );

    // A damaged object: exit above 125 (stop recovery), and %p is neither
    // created nor left partial; no temporary file remains beside it.
    let object = walk(&PathBuf::from(&url))
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{s1}-"))
        })
        .expect("stored object of s1");
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let out = fetch(&s1, &dest);
    assert!(code(&out) > 125, "exit {}: {}", code(&out), stderr(&out));
    assert!(!dest.exists());
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "files left at %p's directory after a failed fetch"
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A moto server of this test's own, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// The moto the harness started tells which program to run; else the
    /// test venv's.
    fn program() -> Vec<String> {
        if let Some(pid) = std::env::var_os("DR_TEST_RUN_DIR")
            .and_then(|d| std::fs::read_to_string(Path::new(&d).join("moto.pid")).ok())
        {
            if let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", pid.trim())) {
                let words: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                if let Some(i) = words.iter().position(|w| w == "-H") {
                    return words[..i].to_vec();
                }
            }
        }
        let venv = std::env::var("DR_VENV")
            .unwrap_or_else(|_| format!("{}/.cache/dr-test-venv", std::env::var("HOME").unwrap()));
        vec![format!("{venv}/bin/moto_server")]
    }

    fn start() -> Self {
        let program = Self::program();
        let port = free_port();
        let child = Command::new(&program[0])
            .args(&program[1..])
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto ({program:?}): {e}"));
        let moto = Moto { child, port };
        wait_until("moto listens", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto accepts unsigned requests).
    fn create_bucket(&self, bucket: &str) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rule 6 with the real store gone: moto frozen with SIGSTOP while the
/// restored server runs recovery. `dr wal-fetch` retries within its budget
/// (`DR_WAL_RETRIES`, `DR_WAL_RETRY_DEADLINE`; object_store's request timeout
/// `AWS_TIMEOUT`), then exits above 125, so the startup process stops
/// recovery with FATAL instead of promoting. Thawed, the same data directory
/// recovers to the restore point with exactly the rows committed before it.
#[test]
fn frozen_store_stops_recovery_without_promoting() {
    if !testing::should_run() || s3_base_url().is_none() {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket("frozen");
    let url = "s3://frozen/repo";
    let aws = vec![
        ("AWS_ENDPOINT_URL".to_string(), moto.endpoint()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    let work = scratch("drf");
    let dir = work.path();
    let key = init_repo(dir, &aws, url);
    let prefix: String = aws.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let c = archiving_cluster(&prefix, url, "db");
    c.psql(
        "postgres",
        "CREATE TABLE truth (id int PRIMARY KEY); INSERT INTO truth SELECT generate_series(1, 1000)",
    );
    ok(
        "dr backup --physical",
        run(
            dir,
            &aws,
            &[
                "backup",
                "db",
                "--postgres",
                &c.dsn("postgres"),
                "--physical",
                "--repo",
                url,
            ],
        ),
    );
    c.psql(
        "postgres",
        "INSERT INTO truth SELECT generate_series(1001, 1500)",
    );
    c.psql(
        "postgres",
        "SELECT pg_create_restore_point('before_the_end')",
    );
    c.psql(
        "postgres",
        "INSERT INTO truth SELECT generate_series(1501, 1600)",
    );
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));

    let pgdata = dir.join("p");
    let port = free_port();
    ok(
        "dr restore (no start)",
        run(
            dir,
            &aws,
            &[
                "restore",
                "auto",
                "--source",
                "db",
                "--repo",
                url,
                "--identity",
                key.to_str().unwrap(),
                "--pgdata",
                pgdata.to_str().unwrap(),
                "--target-name",
                "before_the_end",
                "--port",
                &port.to_string(),
            ],
        ),
    );
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!("restore_command = '{DR} wal-fetch")),
        "{auto}"
    );
    let restored = Restored {
        pgdata: pgdata.clone(),
        bin: c.bin().to_path_buf(),
        owner: c.owner(),
    };
    // The server's environment reaches restore_command: a small budget keeps
    // the test short.
    let mut server_env = aws.clone();
    server_env.extend([
        ("AWS_TIMEOUT".to_string(), "1s".to_string()),
        ("DR_WAL_RETRIES".into(), "2".into()),
        ("DR_WAL_RETRY_DEADLINE".into(), "2".into()),
    ]);
    let log = dir.join("restored.log");
    let log_s = log.to_str().unwrap().to_string();

    // A copy of the last segment, for wal-push while the store is frozen.
    let seg_file = dir.join("seg").join(&last);
    std::fs::create_dir(dir.join("seg")).unwrap();
    ok(
        "wal-fetch",
        run(
            dir,
            &aws,
            &[
                "wal-fetch",
                "--repo",
                url,
                "--identity",
                key.to_str().unwrap(),
                "--source",
                "db",
                &last,
                seg_file.to_str().unwrap(),
            ],
        ),
    );

    moto.signal("-STOP");
    // The binary alone, against the frozen store: wal-push fails within
    // 1..=125 (PostgreSQL retries it later); wal-fetch exits above 125 and
    // leaves nothing at %p; both within a bound.
    let started = Instant::now();
    let push = dr(dir, &server_env)
        .args([
            "wal-push",
            "--repo",
            url,
            "--source",
            "db",
            seg_file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dest = dir.join("RECOVERYXLOG");
    let out = run(
        dir,
        &server_env,
        &[
            "wal-fetch",
            "--repo",
            url,
            "--identity",
            key.to_str().unwrap(),
            "--source",
            "db",
            &last,
            dest.to_str().unwrap(),
        ],
    );
    let fetch_time = started.elapsed();
    let err = stderr(&out);
    assert!(code(&out) > 125, "exit {}: {err}", code(&out));
    assert!(err.contains("still failing after"), "{err}");
    assert!(
        !err.contains("invalid"),
        "a frozen store is not bad input: {err}"
    );
    assert!(!dest.exists());
    assert!(fetch_time < Duration::from_secs(45), "{fetch_time:?}");
    let pushed = push.wait_with_output().unwrap();
    let push_time = started.elapsed();
    assert!(
        (1..=125).contains(&code(&pushed)),
        "exit {}: {}",
        code(&pushed),
        stderr(&pushed)
    );
    assert!(push_time < Duration::from_secs(45), "{push_time:?}");
    eprintln!(
        "against the frozen store (AWS_TIMEOUT=1s, DR_WAL_RETRIES=2, DR_WAL_RETRY_DEADLINE=2): wal-fetch exit {} \
         after {fetch_time:?}, wal-push exit {} after {push_time:?}",
        code(&out),
        code(&pushed)
    );

    // PostgreSQL's startup process runs restore_command; the store does not
    // answer: recovery stops, the server exits, nothing is promoted.
    let started = Instant::now();
    let out = restored.pg_ctl(&["-l", &log_s, "-w", "-t", "90", "start"], &server_env);
    wait_until("the server stops", Duration::from_secs(90), || {
        !restored.running()
    });
    eprintln!(
        "recovery against the frozen store stopped after {:?} (pg_ctl: {})",
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert!(
        !out.status.success(),
        "pg_ctl start succeeded with the store frozen"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    // PostgreSQL logs exit status 200 as "exit code 200"; dr's own
    // line in the log says what failed.
    assert!(
        text.contains("could not restore file")
            && text.contains("error: wal-fetch:")
            && text.contains("shutting down due to startup process failure"),
        "{text}"
    );
    assert!(!text.contains("selected new timeline ID"), "{text}");
    assert!(
        !text.contains("database system is ready to accept connections"),
        "{text}"
    );
    assert!(
        !pgdata.join("pg_wal/00000002.history").exists(),
        "promoted onto a new timeline while the store was frozen"
    );
    assert!(pgdata.join("recovery.signal").exists());

    // Thawed: the same directory recovers to the restore point.
    moto.signal("-CONT");
    let out = restored.pg_ctl(&["-l", &log_s, "-w", "-t", "90", "start"], &server_env);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        std::fs::read_to_string(&log).unwrap()
    );
    wait_until(
        "recovery reaches the target",
        Duration::from_secs(60),
        || psql_port(&restored.bin, port, "SELECT pg_is_in_recovery()").as_deref() == Ok("f"),
    );
    assert_eq!(
        psql_port(
            &restored.bin,
            port,
            "SELECT count(*) || ' ' || max(id) FROM truth"
        )
        .unwrap(),
        "1500 1500"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("recovery stopping at restore point \"before_the_end\""),
        "{text}"
    );
    assert!(pgdata.join("pg_wal/00000002.history").exists());
    // A restore without --archive never archives its new timeline.
    assert_eq!(
        psql_port(&restored.bin, port, "SHOW archive_mode").unwrap(),
        "off"
    );
    drop(restored);
    drop(c);
}

/// `--retry-deadline` bounds `dr wal-fetch` against a store that accepts
/// connections but never answers: below dr's retry policy object_store
/// retries each request itself (10 retries within 180 s, 30 s request
/// timeout; one `restore_command` call took 181 s before the fix), so the
/// policy cuts each attempt at the rest of the deadline.
#[test]
fn retry_deadline_bounds_wal_fetch_against_a_frozen_store() {
    if !testing::should_run() || s3_base_url().is_none() {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket("hang");
    let url = "s3://hang/repo";
    let aws = vec![
        ("AWS_ENDPOINT_URL".to_string(), moto.endpoint()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    let work = scratch("drh");
    let dir = work.path();
    let key = init_repo(dir, &aws, url);
    moto.signal("-STOP");
    let deadline = Duration::from_secs(5);
    let started = Instant::now();
    let mut child = dr(dir, &aws)
        .args([
            "wal-fetch",
            "--repo",
            url,
            "--identity",
            key.to_str().unwrap(),
            "--source",
            "db",
            "--retry-deadline",
            &deadline.as_secs().to_string(),
            "000000010000000000000001",
            dir.join("RECOVERYXLOG").to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bound = deadline + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    moto.signal("-CONT");
    let status = status.unwrap_or_else(|| {
        panic!("wal-fetch --retry-deadline {deadline:?} still running after {bound:?} against a frozen store")
    });
    assert!(status.code().unwrap() > 125, "{status:?}");
}
