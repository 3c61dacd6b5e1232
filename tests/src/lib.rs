//! Support for the end-to-end tests of `dr` (the `tests/` folder): a local
//! repository that the `postgres` user can read and write, a key file, and
//! the WAL helper that PostgreSQL runs as `archive_command` /
//! `restore_command`.
//!
//! The helper is the test binary itself, run through a small shell script
//! with `DR_HELPER_ARGS` set: each test file has a `helper_entry` test,
//! ignored so that it is never counted as a test (the script runs it with
//! `--ignored`), that calls [`helper_entry`], which runs exactly the library calls `dr wal-push`
//! and `dr wal-fetch` make ([`dr_postgres::wal_push`],
//! [`dr_postgres::wal_fetch`]) and exits with their exit codes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_postgres::testing::{ClusterOptions, TestCluster};
use dr_postgres::wal::{self, FetchOptions, PushOptions, RetryPolicy};
use dr_storage::{Identities, InitOptions, Location, Repository, StoreOptions, WalArchive};

/// When run as the WAL helper (`DR_HELPER_ARGS` set), runs it and exits the
/// process with its exit code; otherwise returns at once.
///
/// # Panics
/// On a malformed helper command line (this is test support).
pub fn helper_entry() {
    let Ok(args) = std::env::var("DR_HELPER_ARGS") else {
        return;
    };
    let words: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    let code = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run_helper(&words));
    std::process::exit(code);
}

async fn run_helper(words: &[String]) -> i32 {
    let flag = |name: &str| {
        words
            .iter()
            .position(|w| w == name)
            .map(|i| words[i + 1].clone())
            .unwrap_or_else(|| panic!("helper: missing {name}"))
    };
    let mut positional = Vec::new();
    let mut i = 1;
    while i < words.len() {
        if words[i].starts_with("--") {
            i += 2;
        } else {
            positional.push(words[i].clone());
            i += 1;
        }
    }
    let location = Location::parse(&flag("--repo")).expect("repo url");
    let repo = match Repository::open(&location, &StoreOptions::default()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("helper: {e}");
            return 3;
        }
    };
    let archive = WalArchive::new(&repo, &flag("--source")).expect("source name");
    let retry = RetryPolicy::new(3, Duration::from_secs(5));
    match words[0].as_str() {
        "wal-push" => {
            let mut opts = PushOptions::default();
            opts.retry = retry;
            let r = wal::wal_push(&archive, Path::new(&positional[0]), &opts).await;
            if let Err(e) = &r {
                eprintln!("wal-push: {e}");
            }
            wal::push_exit_code(&r)
        }
        "wal-fetch" => {
            let ids = Identities::from_file(Path::new(&flag("--identity"))).expect("key file");
            let mut opts = FetchOptions::default();
            opts.retry = retry;
            let r = wal::wal_fetch(
                &archive,
                &positional[0],
                Path::new(&positional[1]),
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

/// A local repository and key file the `postgres` user can use, and the
/// helper script.
#[derive(Debug)]
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The repository URL (a local path).
    pub url: String,
    /// The repository.
    pub repo: Repository,
    /// The key.
    pub key: Identities,
    /// The key file (mode 0644, in the temporary directory).
    pub key_file: PathBuf,
    /// The helper script: `helper wal-push --repo URL --source S %p`.
    pub helper: PathBuf,
}

fn chmod_tree(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if p.is_dir() { 0o777 } else { 0o666 };
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    if p.is_dir() {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            chmod_tree(&e.path());
        }
    }
}

impl Fixture {
    /// Makes the repository (under a short `/tmp` path: sockets live there).
    ///
    /// # Panics
    /// When anything fails (this is test support).
    pub async fn new() -> Fixture {
        Self::make(None).await
    }

    /// As [`Fixture::new`], with the repository under a fresh prefix of the
    /// S3 emulator's bucket (`DR_TEST_S3_URL`; the helper script carries the
    /// emulator's endpoint and credentials, since PostgreSQL runs it with
    /// its own environment). `None` without an emulator, unless
    /// `DR_REQUIRE_SERVERS` is set.
    ///
    /// # Panics
    /// When anything fails (this is test support), or without an emulator
    /// when `DR_REQUIRE_SERVERS` is set.
    pub async fn on_s3() -> Option<Fixture> {
        let Ok(bucket) = std::env::var("DR_TEST_S3_URL") else {
            assert!(
                std::env::var_os("DR_REQUIRE_SERVERS").is_none(),
                "DR_REQUIRE_SERVERS is set but DR_TEST_S3_URL is not"
            );
            println!("skipping the S3 variant: no S3 emulator (DR_TEST_S3_URL)");
            return None;
        };
        let url = format!(
            "{}/e2e-{}",
            bucket.trim_end_matches('/'),
            rand::random::<u64>()
        );
        Some(Self::make(Some(url)).await)
    }

    async fn make(s3: Option<String>) -> Fixture {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("dre")
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let repo_dir = dir.path().join("repo");
        std::fs::create_dir(&repo_dir).expect("repo dir");
        let url = s3.clone().unwrap_or_else(|| repo_dir.display().to_string());
        let key = Identities::generate();
        let key_file = dir.path().join("key.txt");
        std::fs::write(
            &key_file,
            secrecy::ExposeSecret::expose_secret(&key.to_file_text()),
        )
        .expect("key file");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644))
            .expect("chmod key");
        let repo = Repository::init(
            &Location::parse(&url).expect("url"),
            &StoreOptions::default(),
            InitOptions::with_recipients(key.recipients().to_strings()),
        )
        .await
        .expect("repository init");
        chmod_tree(&repo_dir);
        let helper = dir.path().join("dr-helper.sh");
        let exe = std::env::current_exe().expect("current exe");
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\n{}DR_HELPER_ARGS=\"$*\" exec '{}' helper_entry --exact --ignored --nocapture --test-threads=1 -q\n",
                s3_env(s3.is_some()),
                exe.display()
            ),
        )
        .expect("helper");
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755))
            .expect("chmod helper");
        Fixture {
            dir,
            url,
            repo,
            key,
            key_file,
            helper,
        }
    }

    /// The temporary directory (mode 0777).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Arguments `restore_command` passes to `wal-fetch` before `--source`.
    pub fn fetch_args(&self) -> Vec<String> {
        vec![
            "--repo".into(),
            self.url.clone(),
            "--identity".into(),
            self.key_file.display().to_string(),
        ]
    }

    /// Starts a cluster archiving into the repository as `source`, through
    /// `program` (the helper script or the `dr` binary).
    pub fn archiving_cluster(&self, program: &Path, source: &str) -> TestCluster {
        let mut o = ClusterOptions::default();
        o.conf = vec![
            "wal_level = replica".into(),
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} wal-push --repo {} --source {source} %p'",
                program.display(),
                self.url
            ),
            "max_wal_senders = 4".into(),
        ];
        TestCluster::start_with(o)
    }
}

/// The `export` line giving the S3 emulator's endpoint and credentials to
/// a script PostgreSQL runs (empty for a local repository).
fn s3_env(s3: bool) -> String {
    if !s3 {
        return String::new();
    }
    let vars: Vec<String> = [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ]
    .iter()
    .filter_map(|v| Some(format!("{v}='{}'", std::env::var(v).ok()?)))
    .collect();
    format!("export {}\n", vars.join(" "))
}

/// A loopback TCP port for a test server
/// ([`dr_postgres::testing::free_port`]: never handed out twice by one
/// process, outside the ephemeral range).
///
/// # Panics
/// When none can be bound.
pub fn free_port() -> u16 {
    dr_postgres::testing::free_port()
}
