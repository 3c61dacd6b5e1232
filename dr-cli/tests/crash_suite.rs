//! Issue 20's crash and signal suite: `dr` killed (SIGKILL) or stopped
//! (SIGTERM, SIGINT) at random moments of its long commands — logical
//! backup, physical base backup, `wal-push`, prune, PITR restore — and after
//! each stop the repository must be coherent and the next run must succeed:
//! - every listed backup verifies (digests, with the key);
//! - `dr status` names no problem;
//! - after SIGTERM/SIGINT, the command exits 143/130 (or 0 when it had
//!   finished) and leaves nothing: no new backup listed, no restored
//!   directory;
//! - the same command run again to the end succeeds (a killed restore's
//!   leftover is taken over with `--clean`, a pushed segment is pushed
//!   again, prune breaks the lease of its dead predecessor).
//!
//! Reproducible: the moments come from a seeded generator (`DR_CRASH_SEED`,
//! printed; default a fixed seed), as fractions of each command's measured
//! undisturbed duration. One PostgreSQL 15 cluster archiving into a local
//! repository; about 15 MB of random text so that each command runs long
//! enough to be stopped in the middle.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{chmod_tree, init_repo, ok, scratch, stderr};
use dr_postgres::testing::{should_run, TestCluster};
use rand::{Rng, SeedableRng};

const PHYSICAL: &str = "crash-base";
const LOGICAL: &str = "crash-app";
const WAL_ONLY: &str = "crash-wal";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Job {
    LogicalBackup,
    PhysicalBackup,
    WalPush,
    Prune,
    Restore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Term,
    Int,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Kill => "KILL",
            Stop::Term => "TERM",
            Stop::Int => "INT",
        }
    }

    /// The exit code of a command stopped by this signal.
    fn code(self) -> Option<i32> {
        match self {
            Stop::Kill => None,
            Stop::Term => Some(143),
            Stop::Int => Some(130),
        }
    }
}

struct World {
    dir: tempfile::TempDir,
    config: PathBuf,
    _cluster: TestCluster,
    segment: PathBuf,
    restores: u32,
    verified: std::collections::HashSet<String>,
}

impl World {
    fn new() -> Self {
        let dir = scratch("drcrash");
        let repo = dir.path().join("repo");
        let key = init_repo(dir.path(), &[], repo.to_str().unwrap());
        let cluster = TestCluster::start_with(common::archiving(&repo, PHYSICAL));
        cluster.psql("postgres", "CREATE DATABASE app");
        cluster.psql(
            "app",
            "CREATE TABLE t AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v \
             FROM generate_series(1, 200000) g",
        );
        let config = dir.path().join("dr.toml");
        std::fs::write(
            &config,
            format!(
                "[repository]\nurl = {repo:?}\nidentity_file = {key:?}\n\n\
                 [sources.{PHYSICAL}]\nkind = \"postgres-physical\"\ndsn = {phys:?}\n\
                 [sources.{PHYSICAL}.retention]\nkeep_last = 2\n\n\
                 [sources.{LOGICAL}]\nkind = \"postgres\"\ndsn = {app:?}\n\
                 [sources.{LOGICAL}.retention]\nkeep_last = 2\n",
                repo = repo.display().to_string(),
                key = key.display().to_string(),
                phys = cluster.dsn("postgres"),
                app = cluster.dsn("app"),
            ),
        )
        .unwrap();
        // A real, full segment for wal-push runs of a source of its own.
        let closed = cluster.switch_wal();
        let segment = dir.path().join(&closed);
        std::fs::copy(cluster.data_dir().join("pg_wal").join(&closed), &segment).unwrap();
        chmod_tree(dir.path());
        World {
            dir,
            config,
            _cluster: cluster,
            segment,
            restores: 0,
            verified: Default::default(),
        }
    }

    fn dr(&self, args: &[&str]) -> Command {
        let mut c = common::dr(self.dir.path(), &[]);
        c.arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(args);
        c
    }

    fn restore_dir(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("restored{n}"))
    }

    /// The arguments of `job`; a restore goes to directory `restores`.
    fn args(&self, job: Job, clean: bool) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match job {
            Job::LogicalBackup => s(&["backup", LOGICAL]),
            Job::PhysicalBackup => s(&["backup", PHYSICAL]),
            Job::WalPush => s(&[
                "wal-push",
                "--source",
                WAL_ONLY,
                self.segment.to_str().unwrap(),
            ]),
            Job::Prune => s(&["prune", "--orphan-grace", "0s"]),
            Job::Restore => {
                let mut a = s(&[
                    "restore",
                    "auto",
                    "--source",
                    PHYSICAL,
                    "--pgdata",
                    self.restore_dir(self.restores).to_str().unwrap(),
                    "--target",
                    "immediate",
                ]);
                if clean {
                    a.push("--clean".into());
                }
                a
            }
        }
    }

    /// Runs `job` to its end; fails the test unless it succeeds.
    fn complete(&self, job: Job, clean: bool) -> Duration {
        let args = self.args(job, clean);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        ok(
            &format!("{job:?} run to its end"),
            self.dr(&args).output().unwrap(),
        );
        started.elapsed()
    }

    fn listed(&self) -> Vec<(String, String)> {
        let out = ok("list", self.dr(&["list", "--json"]).output().unwrap());
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["source"]["name"].as_str().unwrap().to_string(),
                    m["backup_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Every listed backup's objects are all there at their recorded size;
    /// each backup verifies fully (digests, with the key) the first time it
    /// is seen; status names no problem.
    fn coherent(&mut self, after: &str) {
        let out = ok("list", self.dr(&["list", "--json"]).output().unwrap());
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let repo = self.dir.path().join("repo");
        for m in list.as_array().unwrap() {
            for a in m["artifacts"].as_array().unwrap() {
                let object = repo.join(a["object"].as_str().unwrap());
                let size = std::fs::metadata(&object).map(|m| m.len()).ok();
                assert_eq!(
                    size,
                    a["stored_size"].as_u64(),
                    "{after}: object {} of a listed backup",
                    object.display()
                );
            }
        }
        for (source, id) in self.listed() {
            if !self.verified.insert(id.clone()) {
                continue;
            }
            let out = self
                .dr(&["verify", &id, "--source", &source])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{after}: listed backup {source}/{id} does not verify:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            );
        }
        let out = self.dr(&["status", "--json"]).output().unwrap();
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{after}: status --json: {e}\n{}", stderr(&out)));
        for s in status["sources"].as_array().unwrap() {
            assert_eq!(
                s["problems"].as_array().map(Vec::len),
                Some(0),
                "{after}: status problems of {}: {:#}",
                s["source"],
                s["problems"]
            );
        }
    }
}

/// Runs every `args` at once and returns their outputs, in order.
fn at_once(w: &World, runs: &[Vec<String>]) -> Vec<std::process::Output> {
    let children: Vec<_> = runs
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            w.dr(&a)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Issue 20's races: two of each writer at once (backups of one source,
/// wal-push of one segment, prune), and a prune with no orphan grace while
/// a base backup is being written. The repository is coherent after each.
fn races(w: &mut World) {
    for job in [Job::LogicalBackup, Job::PhysicalBackup, Job::WalPush] {
        let source = match job {
            Job::LogicalBackup => LOGICAL,
            _ => PHYSICAL,
        };
        let before = w.listed().iter().filter(|(s, _)| s == source).count();
        let args = w.args(job, false);
        for (i, out) in at_once(w, &[args.clone(), args]).iter().enumerate() {
            ok(&format!("race of two {job:?}: run {i}"), out.clone());
        }
        if job != Job::WalPush {
            let after = w.listed().iter().filter(|(s, _)| s == source).count();
            assert_eq!(
                after,
                before + 2,
                "race of two {job:?}: both backups listed"
            );
        }
        w.coherent(&format!("race of two {job:?}"));
    }

    // Two prunes: one holds the lease; the other prunes too (after it) or
    // stops at once naming the holder. Nothing else.
    w.complete(Job::LogicalBackup, false);
    let args = w.args(Job::Prune, false);
    let outs = at_once(w, &[args.clone(), args]);
    assert!(
        outs.iter().any(|o| o.status.success()),
        "race of two prunes: one succeeds"
    );
    for o in &outs {
        assert!(
            o.status.success() || stderr(o).contains("lock prune is held by"),
            "race of two prunes: exit {:?}: {}",
            o.status.code(),
            stderr(o)
        );
    }
    w.coherent("race of two prunes");

    // A prune with no orphan grace while a base backup is being written:
    // the backup's finished objects are not orphans; it completes and
    // verifies.
    let args = w.args(Job::PhysicalBackup, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let backup = w
        .dr(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let known: std::collections::HashSet<String> =
        w.listed().into_iter().map(|(_, id)| id).collect();
    let dir = w.dir.path().join("repo/backups").join(PHYSICAL);
    // The first finished data object of the new backup (no staging name).
    let started = Instant::now();
    let mut caught = false;
    while started.elapsed() < Duration::from_secs(120) {
        let written = std::fs::read_dir(&dir).unwrap().flatten().any(|d| {
            let id = d.file_name().to_string_lossy().into_owned();
            !known.contains(&id)
                && std::fs::read_dir(d.path()).is_ok_and(|mut f| {
                    f.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().ends_with(".age")))
                })
        });
        if written {
            caught = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let prune = w.dr(&["prune", "--orphan-grace", "0s"]).output().unwrap();
    let out = backup.wait_with_output().unwrap();
    ok("the base backup raced by a prune", out);
    let prune = ok("the prune racing a base backup", prune);
    println!(
        "prune during a base backup (caught mid-write: {caught}):\n{}",
        String::from_utf8_lossy(&prune.stdout)
    );
    assert!(
        caught,
        "the base backup wrote no data object before it ended"
    );
    w.coherent("a prune racing a base backup");
}

fn signal(pid: u32, stop: Stop) {
    let status = Command::new("kill")
        .arg(format!("-{}", stop.name()))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{} {pid}", stop.name());
}

/// Whether what a restore wrote into `dir` is gone (the directory with it).
fn removed(dir: &Path) -> bool {
    !dir.exists()
}

#[test]
fn stopped_at_random_moments_dr_leaves_a_coherent_repository() {
    if !should_run() {
        return;
    }
    let seed: u64 = std::env::var("DR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_207);
    println!("DR_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut w = World::new();

    // Undisturbed runs: each command's duration, and a history to prune
    // and restore from.
    let mut took = std::collections::HashMap::new();
    for job in [
        Job::PhysicalBackup,
        Job::LogicalBackup,
        Job::WalPush,
        Job::PhysicalBackup,
        Job::LogicalBackup,
        Job::Restore,
        Job::Prune,
    ] {
        let d = w.complete(job, false);
        if job == Job::Restore {
            w.restores += 1;
        }
        took.insert(job, d);
    }
    w.coherent("the undisturbed runs");

    let jobs = [
        Job::LogicalBackup,
        Job::PhysicalBackup,
        Job::WalPush,
        Job::Prune,
        Job::Restore,
    ];
    let stops = [Stop::Kill, Stop::Term, Stop::Int];
    let rounds: usize = std::env::var("DR_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    for round in 0..rounds {
        // Every job and every signal at least once, then at random.
        let job = if round < jobs.len() {
            jobs[round]
        } else {
            jobs[rng.gen_range(0..jobs.len())]
        };
        let stop = stops[if round < stops.len() {
            round
        } else {
            rng.gen_range(0..stops.len())
        }];
        let fraction: f64 = rng.gen_range(0.05..1.1);
        let at = took[&job].mul_f64(fraction);
        let what = format!(
            "round {round}: {job:?} stopped by SIG{} after {at:?}",
            stop.name()
        );
        println!("{what}");
        let before = w.listed();
        // Prune deletes the oldest backups: add one so it has work.
        if job == Job::Prune {
            w.complete(Job::LogicalBackup, false);
        }
        let args = w.args(job, false);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = w
            .dr(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let pid = child.id();
        std::thread::sleep(at);
        let finished_before = started.elapsed();
        signal(pid, stop);
        let out = child.wait_with_output().unwrap();
        let code = out.status.code();
        let finished = code == Some(0);
        if !finished {
            // Backups and restores stop cleanly on SIGINT/SIGTERM; wal-push
            // and prune keep the signal's default action (PostgreSQL's
            // archiver treats a signalled archive_command as fatal).
            let clean_stop = matches!(job, Job::LogicalBackup | Job::PhysicalBackup | Job::Restore);
            match stop.code() {
                Some(expected) if clean_stop => {
                    assert_eq!(code, Some(expected), "{what}: {}", stderr(&out))
                }
                _ => assert!(
                    code.is_none() || code == stop.code(),
                    "{what}: exit {code:?}: {}",
                    stderr(&out)
                ),
            }
            match job {
                Job::LogicalBackup | Job::PhysicalBackup => {
                    assert_eq!(w.listed(), before, "{what}: a stopped backup is not listed")
                }
                Job::Restore if stop != Stop::Kill => assert!(
                    removed(&w.restore_dir(w.restores)),
                    "{what}: the interrupted restore removes what it wrote"
                ),
                _ => {}
            }
        }
        println!("  exit {code:?} (signalled after {finished_before:?})");
        w.coherent(&what);
        // The next run succeeds: a killed restore's leftover is taken over
        // with --clean; a finished one is left alone and the next restore
        // goes elsewhere.
        match job {
            Job::Restore if !finished && w.restore_dir(w.restores).exists() => {
                w.complete(Job::Restore, true);
                w.restores += 1;
            }
            Job::Restore => {
                if finished {
                    w.restores += 1;
                }
                w.complete(Job::Restore, false);
                w.restores += 1;
            }
            _ => {
                w.complete(job, false);
            }
        }
        w.coherent(&format!("{what}, then run again"));
    }
    races(&mut w);
    // The segment pushed by stopped and repeated runs is whole.
    let fetched = w.dir.path().join("fetched");
    ok(
        "wal-fetch of the segment pushed under signals",
        w.dr(&[
            "wal-fetch",
            "--source",
            WAL_ONLY,
            w.segment.file_name().unwrap().to_str().unwrap(),
            fetched.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
    );
    assert!(
        std::fs::read(&fetched).unwrap() == std::fs::read(&w.segment).unwrap(),
        "the fetched segment is the pushed one"
    );
}
