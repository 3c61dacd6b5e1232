//! Issue 20: the README's "Recovering without dr" section, followed
//! literally. The `sh` blocks of that section are read from README.md (at
//! compile time, so an edited README rebuilds this test) and run with
//! `bash -euo pipefail`, with the section's variables (`REPO`, `SOURCE`,
//! `KEY`, `WORK`, `PGDATA`, `PGBIN`, `PORT`, ...) set here: README and test
//! cannot drift apart.
//!
//! dr is used only to make the repository (`dr repo init`, `wal-push` as the
//! cluster's `archive_command`, `dr backup`); every read goes through the
//! README's commands: `age`, `zstd`, `tar`, coreutils, `jq` and PostgreSQL's
//! programs. The cluster runs as the `postgres` user
//! (dr_postgres::testing), so the scratch directories are open to it.
//!
//! Needs PostgreSQL and the `age`, `zstd`, `jq` programs
//! (`scripts/install-deps.sh`); without them the test skips, unless
//! `DR_REQUIRE_SERVERS` is set.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{chmod_tree, ok, scratch, DR};
use dr_postgres::testing::{self, free_port, ClusterOptions, TestCluster};

/// The README whose section is followed.
const README: &str = include_str!("../../README.md");

const SECTION: &str = "## Recovering without dr";

/// The passphrase of the test repository.
const PASSPHRASE: &str = "correct horse battery staple";

/// The `sh` blocks of subsection `### {title}` of the section, in order.
fn blocks(title: &str) -> Vec<String> {
    let start = README
        .find(&format!("\n{SECTION}\n"))
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} section"));
    let section = &README[start + 1..];
    let end = section[SECTION.len()..]
        .find("\n## ")
        .map_or(section.len(), |e| e + SECTION.len());
    let section = &section[..end];
    let head = format!("\n### {title}\n");
    let from = section
        .find(&head)
        .unwrap_or_else(|| panic!("no subsection {head:?} in the README's {SECTION:?}"));
    let sub = &section[from + head.len()..];
    let sub = &sub[..sub.find("\n### ").unwrap_or(sub.len())];
    let mut out = Vec::new();
    let mut rest = sub;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let close = body.find("\n```").expect("an unclosed ```sh block");
        out.push(body[..close + 1].to_string());
        rest = &body[close + 4..];
    }
    assert!(
        !out.is_empty(),
        "subsection {title:?} of the README has no sh block"
    );
    out
}

/// Writes `blocks` as one script under `dir` and returns its path.
fn script(dir: &Path, name: &str, blocks: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, blocks.concat()).unwrap();
    path
}

/// `bash -euo pipefail SCRIPT` with `envs`, from the directory `cwd`.
fn bash(cwd: &Path, script: &Path, envs: &[(&str, String)]) -> Command {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail"])
        .arg(script)
        .current_dir(cwd)
        .stdin(Stdio::null());
    for v in ["PGDATABASE", "PGPORT", "PGUSER", "PGHOST", "PGSERVICE"] {
        c.env_remove(v);
    }
    c.envs(envs.iter().map(|(k, v)| (k, v)));
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn open_dir(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    p.to_path_buf()
}

/// `dr ARGS` from `dir` (none of dr's variables inherited), which must
/// succeed.
fn dr(dir: &Path, args: &[&str]) -> Output {
    ok(
        &format!("dr {}", args.join(" ")),
        common::run(dir, &[], args),
    )
}

fn sha256_file(p: &Path) -> String {
    let out = ok(
        "sha256sum",
        Command::new("sha256sum").arg(p).output().unwrap(),
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The programs the section uses besides PostgreSQL's: true when all are
/// here; without them the test skips, or fails under `DR_REQUIRE_SERVERS`.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["age", "zstd", "jq", "tar", "basenc", "script"]
        .into_iter()
        .filter(|t| {
            !Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("DR_REQUIRE_SERVERS").is_some() {
        panic!(
            "DR_REQUIRE_SERVERS is set but {missing:?} are not installed (scripts/install-deps.sh)"
        );
    }
    eprintln!("skipping: {missing:?} not installed (scripts/install-deps.sh installs them)");
    false
}

/// The newest manifest of `kind` under `backups/<source>/`, parsed, and its path.
fn newest_manifest(repo: &Path, source: &str, kind: &str) -> (PathBuf, serde_json::Value) {
    let mut found: Vec<(PathBuf, serde_json::Value)> =
        std::fs::read_dir(repo.join("backups").join(source))
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path().join("manifest.json");
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).ok()?).unwrap();
                (v["source"]["kind"] == kind).then_some((p, v))
            })
            .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.pop().unwrap_or_else(|| panic!("no {kind} backup"))
}

/// A data directory restored by the README's commands; its server is
/// stopped on drop.
struct Restored {
    pgdata: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.pgdata.join("postmaster.pid").exists() {
            let mut c = Command::new(self.bin.join("pg_ctl"));
            c.arg("-D")
                .arg(&self.pgdata)
                .args(["-m", "immediate", "-w", "stop"])
                .current_dir("/")
                .stdin(Stdio::null());
            if let Some((uid, gid)) = self.owner {
                c.uid(uid).gid(gid);
            }
            let _ = c.output();
        }
    }
}

/// `psql` over TCP to the server on 127.0.0.1:`port`, which must succeed.
fn psql_port(bin: &Path, port: u16, sql: &str) -> String {
    common::psql_port(bin, port, "postgres", sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The README's recovery by hand: a PostgreSQL 15 cluster archives through
/// `dr wal-push` into a passphrase repository (with a recipient too); a
/// physical backup with `dr backup --physical`, rows written after it and
/// archived, a logical backup; then, with the README's commands only: the
/// layout's decode and manifest-digest commands (a changed manifest is
/// refused), the passphrase key unlocked with `age`, the physical backup
/// restored into a new data directory whose server replays the archived WAL
/// through the README's `restore_command` script (the rows written after
/// the backup are there), that script's refusals (a flipped byte, a wrong
/// digest in the name, a `.partial` only, a missing file), and the logical
/// dump restored with the unlocked key.
#[test]
fn readme_recovery_by_hand() {
    if !testing::should_run() || !tools_present() {
        return;
    }
    let started = Instant::now();
    let work = scratch("drw");
    let dir = work.path();
    let repo = dir.join("repo");
    let repo_s = repo.to_str().unwrap().to_string();

    // The repository, made by dr: a recipient and a passphrase.
    let key = dir.join("key.txt");
    let recipient =
        String::from_utf8(dr(dir, &["key", "generate", "--output", key.to_str().unwrap()]).stdout)
            .unwrap()
            .trim()
            .to_string();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pass_file = dir.join("passphrase");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    dr(
        dir,
        &[
            "repo",
            "init",
            "--repo",
            &repo_s,
            "--recipient",
            &recipient,
            "--passphrase-file",
            pass_file.to_str().unwrap(),
        ],
    );
    chmod_tree(&repo);

    // A cluster archiving into it; a physical backup, then rows after it.
    let mut o = ClusterOptions::default();
    o.conf = vec![
        "wal_level = replica".into(),
        "archive_mode = on".into(),
        format!("archive_command = '{DR} wal-push --repo {repo_s} --source db %p'"),
        "max_wal_senders = 4".into(),
    ];
    let a = TestCluster::start_with(o);
    a.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, phase text NOT NULL); \
         INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g",
    );
    dr(
        dir,
        &[
            "backup",
            "db",
            "--postgres",
            &a.dsn("postgres"),
            "--physical",
            "--repo",
            &repo_s,
        ],
    );
    a.psql(
        "postgres",
        "INSERT INTO t SELECT g, 'after' FROM generate_series(101, 150) g",
    );
    let last = a.switch_wal();
    a.wait_archived(&last, Duration::from_secs(60));
    dr(
        dir,
        &[
            "backup",
            "logi",
            "--postgres",
            &a.dsn("postgres"),
            "--repo",
            &repo_s,
        ],
    );
    chmod_tree(&repo);
    let sysid = a.system_id();

    // "What dr writes": decode one object (the physical backup's
    // backup_manifest) and check it against the manifest; check the
    // manifest's digest, and that a changed manifest fails it.
    let (manifest_path, manifest) = newest_manifest(&repo, "db", "postgres-physical");
    let layout = blocks("What dr writes");
    assert_eq!(layout.len(), 2, "the decode block and the digest block");
    let lw = open_dir(&dir.join("layout"));
    let artifact = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "backup_manifest")
        .expect("a backup_manifest artifact");
    let decoded = lw.join("backup_manifest");
    let decode = script(&lw, "decode.sh", &layout[..1]);
    ok(
        "README: decode one object",
        bash(
            &lw,
            &decode,
            &[
                ("KEY", key.display().to_string()),
                (
                    "OBJECT",
                    repo.join(artifact["object"].as_str().unwrap())
                        .display()
                        .to_string(),
                ),
                ("FILE", decoded.display().to_string()),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(
        sha256_file(&decoded),
        artifact["plain_sha256"].as_str().unwrap()
    );
    assert!(std::fs::read_to_string(&decoded)
        .unwrap()
        .contains("PostgreSQL-Backup-Manifest-Version"));
    let digest = script(&lw, "digest.sh", &layout[1..]);
    let check = |m: &Path| {
        bash(&lw, &digest, &[("MANIFEST", m.display().to_string())])
            .output()
            .unwrap()
    };
    ok("README: manifest digest", check(&manifest_path));
    let changed = lw.join("changed.json");
    let body = std::fs::read_to_string(&manifest_path).unwrap();
    let size = artifact["plain_size"].as_u64().unwrap();
    let from = format!("\"plain_size\": {size},");
    assert!(body.contains(&from));
    std::fs::write(
        &changed,
        body.replacen(&from, &format!("\"plain_size\": {},", size + 1), 1),
    )
    .unwrap();
    let o = check(&changed);
    assert!(
        !o.status.success(),
        "a changed manifest passed: {}",
        text(&o)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("DAMAGED"));

    // "The key of a passphrase repository": age asks on the terminal, so
    // the block runs under script(1) with the passphrase on its input.
    let unlocked = dir.join("unlocked.txt");
    let kw = open_dir(&dir.join("key"));
    let unlock = script(
        &kw,
        "unlock.sh",
        &blocks("The key of a passphrase repository"),
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("bash -euo pipefail {}", unlock.display()))
        .arg("/dev/null")
        .current_dir(&kw)
        .env("REPO", &repo)
        .env("WORK", &kw)
        .env("KEY", &unlocked)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSPHRASE}\n").as_bytes())
        .unwrap();
    ok("README: unlock the key", child.wait_with_output().unwrap());
    let unlocked_text = std::fs::read_to_string(&unlocked).unwrap();
    assert!(unlocked_text.contains("AGE-SECRET-KEY-1"));
    assert_ne!(unlocked_text, std::fs::read_to_string(&key).unwrap());

    // "Restoring a physical base backup and its WAL", into a new data
    // directory beside the running source.
    let pw = open_dir(&dir.join("phys"));
    let pgdata = dir.join("restored");
    let port = free_port();
    let restored = Restored {
        pgdata: pgdata.clone(),
        bin: a.bin().to_path_buf(),
        owner: a.owner(),
    };
    let physical = script(
        &pw,
        "physical.sh",
        &blocks("Restoring a physical base backup and its WAL"),
    );
    ok(
        "README: physical restore",
        bash(
            &pw,
            &physical,
            &[
                ("REPO", repo_s.clone()),
                ("SOURCE", "db".into()),
                ("KEY", key.display().to_string()),
                ("WORK", pw.display().to_string()),
                ("PGDATA", pgdata.display().to_string()),
                ("PGBIN", a.bin().display().to_string()),
                ("PORT", port.to_string()),
                ("PGHOST", "127.0.0.1".into()),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(psql_port(a.bin(), port, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        psql_port(
            a.bin(),
            port,
            "SELECT phase || ' ' || count(*) FROM t GROUP BY phase ORDER BY phase"
        ),
        "after 50\nbefore 100",
        "the rows written after the base backup come from the archived WAL; log:\n{}",
        std::fs::read_to_string(pw.join("postgres.log")).unwrap_or_default()
    );
    drop(restored);

    // The README's restore_command script on its own.
    let restore_wal = pw.join("restore-wal");
    let seg_dir = format!("wal/db/{sysid}/{}", &last[..16]);
    let good = std::fs::read_dir(repo.join(&seg_dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(&format!("{last}-")) && n.ends_with(".zst.age")
        })
        .expect("the last segment's object");
    let good_name = good.file_name().unwrap().to_str().unwrap().to_string();
    let sha = good_name[last.len() + 1..good_name.len() - ".zst.age".len()].to_string();
    let fetch = |fake_repo: &Path, name: &str, dest: &Path| -> Output {
        Command::new(&restore_wal)
            .arg(fake_repo)
            .args(["db", &sysid.to_string()])
            .arg(&key)
            .arg(name)
            .arg(dest)
            .current_dir(&pw)
            .output()
            .unwrap()
    };
    let fake = |label: &str, file: &str, bytes: &[u8]| -> PathBuf {
        let root = pw.join(label);
        std::fs::create_dir_all(root.join(&seg_dir)).unwrap();
        std::fs::write(root.join(&seg_dir).join(file), bytes).unwrap();
        root
    };
    let stored = std::fs::read(&good).unwrap();
    let dest = pw.join("fetched");
    let o = fetch(&repo, &last, &dest);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sha256_file(&dest), sha);
    std::fs::remove_file(&dest).unwrap();
    let mut flipped = stored.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x01;
    let no_file_left = |what: &str, o: &Output, want: i32| {
        assert_eq!(o.status.code(), Some(want), "{what}: {}", text(o));
        let left: Vec<_> = std::fs::read_dir(&pw)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("fetched"))
            .collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
    };
    let o = fetch(&fake("flipped", &good_name, &flipped), &last, &dest);
    no_file_left("a flipped byte", &o, 200);
    let wrong = format!("{last}-{}.zst.age", "0".repeat(64));
    let o = fetch(&fake("misnamed", &wrong, &stored), &last, &dest);
    no_file_left("another digest in the name", &o, 200);
    assert!(String::from_utf8_lossy(&o.stderr).contains(&sha));
    let partial = format!("{last}.partial-{sha}.zst.age");
    let o = fetch(&fake("partial", &partial, &stored), &last, &dest);
    no_file_left("only a .partial", &o, 1);
    let o = fetch(&repo, "000000010000000F000000FF", &dest);
    no_file_left("a missing segment", &o, 1);

    // "Restoring a logical dump", with the key unlocked from the passphrase.
    let gw = open_dir(&dir.join("logical"));
    let logical = script(&gw, "logical.sh", &blocks("Restoring a logical dump"));
    ok(
        "README: logical restore",
        bash(
            &gw,
            &logical,
            &[
                ("REPO", repo_s.clone()),
                ("SOURCE", "logi".into()),
                ("KEY", unlocked.display().to_string()),
                ("WORK", gw.display().to_string()),
                ("PGBIN", a.bin().display().to_string()),
                ("DBNAME", "restored_logical".into()),
                ("PGHOST", "127.0.0.1".into()),
                ("PGPORT", a.port().to_string()),
                ("PGUSER", "postgres".into()),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_eq!(
        a.psql(
            "restored_logical",
            "SELECT phase || ' ' || count(*) FROM t GROUP BY phase ORDER BY phase"
        ),
        "after 50\nbefore 100"
    );
    eprintln!("recovered without dr in {:?}", started.elapsed());
}
