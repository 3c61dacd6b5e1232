//! What the WAL and PITR tests share: a repository with a key, the helper
//! that PostgreSQL runs as `archive_command` / `restore_command` (this test
//! binary, entered through `helper_entry`), and permissions for the
//! `postgres` user.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_postgres::wal::{self, FetchOptions, PushOptions, RetryPolicy};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions, WalArchive};

pub async fn run_helper(words: &[String]) -> i32 {
    let flag = |name: &str| {
        words
            .iter()
            .position(|w| w == name)
            .map(|i| words[i + 1].clone())
    };
    let positional: Vec<&String> = {
        let mut out = Vec::new();
        let mut i = 1;
        while i < words.len() {
            if words[i].starts_with("--") {
                i += 2;
            } else {
                out.push(&words[i]);
                i += 1;
            }
        }
        out
    };
    let location = Location::parse(&flag("--repo").unwrap()).unwrap();
    let repo = match Repository::open(&location, &StoreOptions::default()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("helper: {e}");
            return 3;
        }
    };
    let archive = WalArchive::new(&repo, &flag("--source").unwrap()).unwrap();
    let mut retry = RetryPolicy::default();
    retry.deadline = Duration::from_secs(5);
    match words[0].as_str() {
        "wal-push" => {
            let mut opts = PushOptions::default();
            opts.retry = retry;
            let r = wal::wal_push(&archive, Path::new(positional[0]), &opts).await;
            if let Err(e) = &r {
                eprintln!("wal-push: {e}");
            }
            wal::push_exit_code(&r)
        }
        "wal-fetch" => {
            let ids = Identities::from_file(Path::new(&flag("--identity").unwrap())).unwrap();
            let mut opts = FetchOptions::default();
            opts.retry = retry;
            let r = wal::wal_fetch(
                &archive,
                positional[0],
                Path::new(positional[1]),
                &ids,
                &opts,
            )
            .await;
            if let Err(e) = &r {
                eprintln!("wal-fetch: {e}");
            }
            wal::fetch_exit_code(&r, false)
        }
        other => panic!("unknown helper command {other}"),
    }
}

/// A repository readable and writable by the `postgres` user, and a key file
/// it can read.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub url: String,
    pub repo: Repository,
    pub key: Identities,
    pub key_file: PathBuf,
    pub helper: PathBuf,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("drw")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let url = match std::env::var("DR_TEST_S3_URL") {
        Ok(u) => format!(
            "{}/wal-{}",
            u.trim_end_matches('/'),
            hex::encode(rand::random::<[u8; 6]>())
        ),
        Err(_) => {
            if std::env::var_os("DR_REQUIRE_SERVERS").is_some() {
                panic!("DR_REQUIRE_SERVERS is set but DR_TEST_S3_URL is not");
            }
            let p = dir.path().join("repo");
            std::fs::create_dir(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
            p.display().to_string()
        }
    };
    let key = Identities::generate();
    let key_file = dir.path().join("key.txt");
    std::fs::write(
        &key_file,
        secrecy::ExposeSecret::expose_secret(&key.to_file_text()),
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let repo = Repository::init(
        &Location::parse(&url).unwrap(),
        &StoreOptions::default(),
        InitOptions::with_recipients(key.recipients().to_strings()),
    )
    .await
    .unwrap();
    if !url.starts_with("s3://") {
        chmod_tree(Path::new(&url));
    }
    let helper = dir.path().join("dr-helper.sh");
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nDR_HELPER_ARGS=\"$*\" exec '{}' common::helper_entry --exact --ignored --nocapture --test-threads=1 -q\n",
            exe.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    Fixture {
        _dir: dir,
        url,
        repo,
        key,
        key_file,
        helper,
    }
}

pub fn chmod_tree(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if p.is_dir() { 0o777 } else { 0o666 };
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chmod_tree(&e.unwrap().path());
        }
    }
}

/// Options for a PITR restore of the fixture's repository into `pgdata`:
/// started on a free port, `archive_mode = off`, `restore_command` through
/// the helper.
pub fn pitr_options(
    f: &Fixture,
    pgdata: PathBuf,
    target: dr_postgres::physical::RecoveryTarget,
) -> dr_postgres::physical::PitrOptions {
    let mut o =
        dr_postgres::physical::PitrOptions::new(pgdata, target, f.helper.clone(), f.fetch_args());
    o.start = true;
    o.archive_mode_off = true;
    o.port = Some(free_port());
    o.wait_timeout = Duration::from_secs(120);
    o
}

pub use dr_postgres::testing::free_port;

/// Entry point when PostgreSQL runs the helper (`archive_command`,
/// `restore_command`): `wal-push --repo URL --source S FILE` or
/// `wal-fetch --repo URL --identity F --source S NAME DEST`. Ignored, so
/// never counted as a test; the helper script runs it with `--ignored`.
#[test]
#[ignore = "the WAL helper's entry point (PostgreSQL runs it through archive_command and restore_command), not a test"]
fn helper_entry() {
    let Ok(args) = std::env::var("DR_HELPER_ARGS") else {
        return;
    };
    let words: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    let code = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run_helper(&words));
    std::process::exit(code);
}

impl Fixture {
    /// The arguments `restore_command` passes to the helper's `wal-fetch`:
    /// the repository and the key file.
    pub fn fetch_args(&self) -> Vec<String> {
        vec![
            "--repo".into(),
            self.url.clone(),
            "--identity".into(),
            self.key_file.display().to_string(),
        ]
    }

    /// `archive_command` pushing into this repository as `source`.
    pub fn archive_command(&self, source: &str) -> String {
        format!(
            "archive_command = '{} wal-push --repo {} --source {source} %p'",
            self.helper.display(),
            self.url
        )
    }

    /// A cluster archiving into this repository as `source`.
    pub fn archiving_cluster(&self, source: &str) -> dr_postgres::testing::TestCluster {
        let mut o = dr_postgres::testing::ClusterOptions::default();
        o.conf = vec![
            "wal_level = replica".into(),
            "archive_mode = on".into(),
            self.archive_command(source),
            "max_wal_senders = 4".into(),
        ];
        dr_postgres::testing::TestCluster::start_with(o)
    }
}
