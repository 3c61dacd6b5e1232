//! Issue 20's tamper suite: every kind of object in a repository gets a
//! flipped byte, a truncation and a deletion, each in a fresh copy of one
//! pristine repository, and every command that reads it is run:
//! `list`, `verify` of each backup, `status`, `prune`.
//! - no command panics or is killed (exit 0 to 3);
//! - a command that fails names the damaged object (its file name or path);
//! - `verify` of a backup whose manifest, data or WAL was damaged fails;
//! - `prune` never deletes anything because of the damage: after it, every
//!   object of the pristine repository is still there except the damaged
//!   one (and, when a manifest was deleted, that backup's directory: a
//!   directory without a manifest is an interrupted backup by definition).
//!
//! The pristine repository: a physical base backup with its archived WAL
//! (and `.claim` objects), a logical backup, a verification record of each;
//! pruned once, so that a second prune of an untouched copy deletes nothing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{chmod_tree, init_repo, ok, scratch};
use dr_postgres::testing::{should_run, TestCluster};

const PHYSICAL: &str = "tb";
const LOGICAL: &str = "ta";

#[derive(Debug, Clone, Copy)]
enum Tamper {
    Flip,
    Truncate,
    Delete,
}

impl Tamper {
    fn apply(self, path: &Path) {
        match self {
            Tamper::Flip => {
                let mut bytes = std::fs::read(path).unwrap();
                let at = bytes.len() / 2;
                // A digit stays a digit in JSON (a changed value, not a
                // syntax error); any other byte has its low bit flipped.
                bytes[at] = match bytes[at] {
                    b'0'..=b'8' => bytes[at] + 1,
                    b'9' => b'0',
                    b => b ^ 0x01,
                };
                std::fs::write(path, bytes).unwrap();
            }
            Tamper::Truncate => {
                let len = std::fs::metadata(path).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                f.set_len(len / 2).unwrap();
            }
            Tamper::Delete => std::fs::remove_file(path).unwrap(),
        }
    }
}

/// Every file under `root`, relative to it.
fn files(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Pristine {
    dir: tempfile::TempDir,
    repo: PathBuf,
    key: PathBuf,
    /// (source, backup id)
    backups: Vec<(String, String)>,
    _cluster: TestCluster,
}

impl Pristine {
    fn new() -> Self {
        let dir = scratch("drtamper");
        let repo = dir.path().join("repo");
        let key = init_repo(dir.path(), &[], repo.to_str().unwrap());
        let cluster = TestCluster::start_with(common::archiving(&repo, PHYSICAL));
        cluster.psql("postgres", "CREATE DATABASE app");
        cluster.psql(
            "app",
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g",
        );
        let p = Pristine {
            dir,
            repo,
            key,
            backups: Vec::new(),
            _cluster: cluster,
        };
        std::fs::write(p.config(&p.repo), p.config_text(&p.repo)).unwrap();
        let run = |args: &[&str]| ok(&args.join(" "), p.dr(&p.repo, args));
        run(&[
            "backup",
            PHYSICAL,
            "--postgres",
            &p._cluster.dsn("postgres"),
            "--physical",
        ]);
        run(&["backup", LOGICAL, "--postgres", &p._cluster.dsn("app")]);
        let last = p._cluster.switch_wal();
        p._cluster
            .wait_archived(&last, std::time::Duration::from_secs(60));
        run(&["verify", "latest", "--source", PHYSICAL]);
        run(&["verify", "latest", "--source", LOGICAL]);
        run(&["prune", "--orphan-grace", "0s"]);
        let out = run(&["list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let backups = list
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["source"]["name"].as_str().unwrap().to_string(),
                    m["backup_id"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>();
        assert_eq!(backups.len(), 2, "{list:#}");
        chmod_tree(p.dir.path());
        Pristine { backups, ..p }
    }

    fn config(&self, repo: &Path) -> PathBuf {
        repo.with_extension("toml")
    }

    fn config_text(&self, repo: &Path) -> String {
        format!(
            "[repository]\nurl = {:?}\nidentity_file = {:?}\n\n\
             [sources.{PHYSICAL}]\nkind = \"postgres-physical\"\n\
             [sources.{PHYSICAL}.retention]\nkeep_last = 10\n\n\
             [sources.{LOGICAL}]\nkind = \"postgres\"\n\
             [sources.{LOGICAL}.retention]\nkeep_last = 10\n",
            repo.display().to_string(),
            self.key.display().to_string(),
        )
    }

    /// `dr ARGS` over the repository at `repo` (its config beside it).
    fn dr(&self, repo: &Path, args: &[&str]) -> Output {
        common::dr(self.dir.path(), &[])
            .arg("--config")
            .arg(self.config(repo))
            .arg("--no-progress")
            .args(args)
            .output()
            .unwrap()
    }

    /// The objects to damage: one of each kind, relative to the
    /// repository, with whether `verify` of a backup must then fail.
    fn targets(&self) -> Vec<(&'static str, PathBuf, bool)> {
        let all = files(&self.repo);
        let find = |what: &str, f: &dyn Fn(&str) -> bool| -> PathBuf {
            all.iter()
                .find(|p| f(&p.to_string_lossy()))
                .unwrap_or_else(|| panic!("no {what} in {all:#?}"))
                .clone()
        };
        let phys_id = &self.backups.iter().find(|b| b.0 == PHYSICAL).unwrap().1;
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                self.repo
                    .join(format!("backups/{PHYSICAL}/{phys_id}/manifest.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let stop = manifest["metadata"]["stop_segment"]
            .as_str()
            .unwrap()
            .to_string();
        vec![
            ("repository file", PathBuf::from("dr-repo.json"), true),
            (
                "logical manifest",
                find("logical manifest", &|p| {
                    p.starts_with(&format!("backups/{LOGICAL}/")) && p.ends_with("manifest.json")
                }),
                true,
            ),
            (
                "logical data",
                find("logical data", &|p| p.ends_with("database.pgdump.zst.age")),
                true,
            ),
            (
                "physical manifest",
                find("physical manifest", &|p| {
                    p.starts_with(&format!("backups/{PHYSICAL}/")) && p.ends_with("manifest.json")
                }),
                true,
            ),
            (
                "physical data",
                find("base.tar", &|p| p.ends_with("base.tar.zst.age")),
                true,
            ),
            (
                "WAL segment",
                find("the stop segment", &|p| {
                    p.contains(&format!("/{stop}-")) && p.ends_with(".zst.age")
                }),
                true,
            ),
            (
                "WAL claim",
                find("a claim", &|p| p.ends_with(&format!("{stop}.claim"))),
                false,
            ),
            (
                "WAL archive identity",
                PathBuf::from(format!("wal/{PHYSICAL}/archive.json")),
                false,
            ),
            (
                "verification record",
                find("a verification record", &|p| {
                    p.starts_with(&format!("verifications/{LOGICAL}/"))
                }),
                false,
            ),
        ]
    }
}

#[test]
fn every_damaged_object_is_named_and_never_costs_other_data() {
    if !should_run() {
        return;
    }
    let p = Pristine::new();
    let pristine = files(&p.repo);
    let mut case = 0;
    for (kind, object, verify_must_fail) in p.targets() {
        for tamper in [Tamper::Flip, Tamper::Truncate, Tamper::Delete] {
            case += 1;
            let what = format!("{kind} ({}) {tamper:?}", object.display());
            let repo = p.dir.path().join(format!("case{case}"));
            copy_tree(&p.repo, &repo);
            std::fs::write(p.config(&repo), p.config_text(&repo)).unwrap();
            tamper.apply(&repo.join(&object));
            let name = object.file_name().unwrap().to_string_lossy().to_string();
            // The backup directory the object belongs to, if any.
            let own_backup = object
                .strip_prefix("backups")
                .ok()
                .and_then(|rest| rest.parent().map(|d| Path::new("backups").join(d)));
            // A WAL object is named by its file name or its segment's.
            let segment: String = name.chars().take(24).collect();
            let names_it = |o: &Output| {
                let t = text(o);
                t.contains(&name)
                    || (kind.starts_with("WAL") && t.contains(&segment))
                    || own_backup
                        .as_ref()
                        .and_then(|d| d.file_name())
                        .is_some_and(|id| t.contains(&*id.to_string_lossy()))
            };
            let checked = |cmd: &str, o: &Output| {
                let code = o.status.code();
                assert!(
                    matches!(code, Some(0..=3)),
                    "{what}: `dr {cmd}` ended with {code:?}:\n{}",
                    text(o)
                );
                if code != Some(0) {
                    assert!(
                        names_it(o),
                        "{what}: `dr {cmd}` failed without naming {name}:\n{}",
                        text(o)
                    );
                }
            };
            let listed = p.dr(&repo, &["list", "--json"]);
            checked("list", &listed);
            let mut a_verify_failed = false;
            for (source, id) in &p.backups {
                let o = p.dr(&repo, &["verify", id, "--source", source]);
                checked("verify", &o);
                let affected = own_backup.as_ref().is_some_and(|d| d.ends_with(id))
                    || (kind == "WAL segment" && source == PHYSICAL)
                    || kind == "repository file";
                if affected && verify_must_fail {
                    assert_ne!(
                        o.status.code(),
                        Some(0),
                        "{what}: verify of {source}/{id} passed:\n{}",
                        text(&o)
                    );
                }
                a_verify_failed |= o.status.code() != Some(0);
            }
            assert!(
                a_verify_failed || !verify_must_fail,
                "{what}: no verification noticed"
            );
            let status = p.dr(&repo, &["status"]);
            checked("status", &status);
            let pruned = p.dr(&repo, &["prune", "--orphan-grace", "0s"]);
            checked("prune", &pruned);
            let after = files(&repo);
            let lost: Vec<_> = pristine
                .difference(&after)
                .filter(|f| **f != object)
                .filter(|f| {
                    !(matches!(tamper, Tamper::Delete)
                        && name == "manifest.json"
                        && own_backup.as_ref().is_some_and(|d| f.starts_with(d)))
                })
                .collect();
            assert!(
                lost.is_empty(),
                "{what}: prune deleted {lost:?}:\n{}",
                text(&pruned)
            );
            std::fs::remove_dir_all(&repo).unwrap();
        }
    }
}
