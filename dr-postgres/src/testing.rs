//! Throwaway PostgreSQL clusters for tests and the demo (feature
//! `test-cluster`).
//!
//! A cluster is made with `initdb` in a temporary directory and started with
//! `pg_ctl` on a free loopback port, its socket in the same directory, with
//! `trust` authentication for the superuser `postgres`. `initdb` and the server
//! refuse to run as root: when the process is root, they run as the `postgres`
//! user that Debian's package creates, and the directory is handed to it.
//! Programs come from `DR_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`;
//! [`ClusterOptions::major`] picks a major version installed by
//! `scripts/install-pg-versions.sh` under [`versions_dir`] instead (13 to 18;
//! the client programs then come from 18's full install).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::conn::ConnectionSettings;

/// Options for [`TestCluster::start_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Extra `postgresql.conf` lines.
    pub conf: Vec<String>,
    /// Extra `initdb` arguments, e.g. `["--wal-segsize=1"]` for 1 MiB WAL
    /// segments (PostgreSQL 15 docs, `initdb --wal-segsize`).
    pub initdb_args: Vec<String>,
    /// A major version from [`versions_dir`] instead of the default server.
    pub major: Option<u32>,
}

/// Where `scripts/install-pg-versions.sh` installs PostgreSQL 13 to 18
/// (`DR_PG_VERSIONS_DIR`, default `/opt/dr-pg`), one `<major>/bin` each.
pub fn versions_dir() -> PathBuf {
    std::env::var_os("DR_PG_VERSIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/dr-pg"))
}

/// The server programs of major `major` under [`versions_dir`], when
/// installed.
pub fn version_bin(major: u32) -> Option<PathBuf> {
    let bin = versions_dir().join(major.to_string()).join("bin");
    bin.join("postgres").is_file().then_some(bin)
}

/// The client programs for clusters of [`version_bin`]: 18's full install
/// (the server-only builds of 13 to 17 have no psql, pg_dump or
/// pg_basebackup; 18's read every older server).
pub fn version_client_bin() -> Option<PathBuf> {
    version_bin(18).filter(|b| b.join("psql").is_file())
}

/// A running throwaway cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    client_bin: PathBuf,
    owner: Option<(u32, u32)>,
}

/// The PostgreSQL server programs' directory.
///
/// # Panics
/// When no PostgreSQL server is installed.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DR_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .expect("no PostgreSQL server under /usr/lib/postgresql: run scripts/install-deps.sh")
}

/// Whether a PostgreSQL server is installed here.
pub fn available() -> bool {
    std::env::var_os("DR_PG_BIN").is_some()
        || std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("bin/initdb").exists())
}

/// Returns true when tests needing PostgreSQL should run; false (with a
/// message) when they should skip. With `DR_REQUIRE_SERVERS` set a missing
/// server panics instead.
pub fn should_run() -> bool {
    if available() {
        return true;
    }
    if std::env::var_os("DR_REQUIRE_SERVERS").is_some() {
        panic!("DR_REQUIRE_SERVERS is set but no PostgreSQL server is installed");
    }
    eprintln!("skipping: no PostgreSQL server installed (scripts/install-deps.sh installs it)");
    false
}

/// A loopback TCP port for a test server: free now, never handed out before
/// by this process, outside the kernel's ephemeral range
/// ([`dr_core::conformance::ports::free_port`]).
///
/// # Panics
/// When no port can be bound (this is test support).
pub fn free_port() -> u16 {
    dr_core::conformance::ports::free_port()
}

impl TestCluster {
    /// Makes and starts a cluster with default settings.
    ///
    /// # Panics
    /// When the cluster cannot be made (this is test support).
    pub fn start() -> Self {
        Self::start_with(ClusterOptions::default())
    }

    /// Makes and starts a cluster with `options`.
    ///
    /// # Panics
    /// When the cluster cannot be made.
    pub fn start_with(options: ClusterOptions) -> Self {
        let (bin, client_bin) = match options.major {
            Some(m) => (
                version_bin(m).unwrap_or_else(|| {
                    panic!(
                        "PostgreSQL {m} is not installed under {}: run scripts/install-pg-versions.sh",
                        versions_dir().display()
                    )
                }),
                version_client_bin().expect("PostgreSQL 18's client programs (scripts/install-pg-versions.sh)"),
            ),
            None => (bin_dir(), bin_dir()),
        };
        let dir = tempfile::Builder::new()
            .prefix("drpg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let owner = crate::host::default_owner();
        assert!(
            owner.is_some() || !nix::unistd::geteuid().is_root(),
            "running as root needs the postgres user (Debian's postgresql package makes it)"
        );
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown temp dir");
        }
        let mut cluster = TestCluster {
            dir,
            port: free_port(),
            bin,
            client_bin,
            owner,
        };
        let data = cluster.data_dir();
        let mut initdb = vec![
            "-D",
            data.to_str().expect("utf-8 path"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ];
        initdb.extend(options.initdb_args.iter().map(String::as_str));
        cluster.run("initdb", &initdb);
        let mut conf = vec![
            format!("port = {}", cluster.port),
            "listen_addresses = '127.0.0.1'".into(),
            format!(
                "unix_socket_directories = '{}'",
                cluster.dir.path().display()
            ),
            "fsync = off".into(),
            "full_page_writes = on".into(),
            "max_connections = 50".into(),
            "log_min_messages = warning".into(),
        ];
        conf.extend(options.conf);
        let mut text =
            std::fs::read_to_string(data.join("postgresql.conf")).expect("postgresql.conf");
        text.push_str("\n# dr test cluster\n");
        for line in conf {
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(data.join("postgresql.conf"), text).expect("write postgresql.conf");
        cluster.start_on_a_free_port();
        cluster
    }

    /// Starts the server; when its port was taken between choosing and
    /// binding it (another program chose the same number), moves it to the
    /// next free port and starts again, up to five times.
    fn start_on_a_free_port(&mut self) {
        let log = self.dir.path().join("server.log");
        for attempt in 1.. {
            let logged = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let Err(failure) = self.try_run("pg_ctl", &self.start_args()) else {
                return;
            };
            let text = std::fs::read(&log).unwrap_or_default();
            let new = String::from_utf8_lossy(&text[(logged as usize).min(text.len())..]);
            let clash = new.contains("could not bind") || new.contains("Address already in use");
            if !clash || attempt == 5 {
                panic!("{failure}");
            }
            self.port = free_port();
            let conf = self.data_dir().join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str(&format!("port = {}\n", self.port));
            std::fs::write(&conf, text).expect("write postgresql.conf");
        }
    }

    fn start_args(&self) -> Vec<String> {
        let log = self.dir.path().join("server.log");
        [
            "-D",
            self.data_dir().to_str().expect("utf-8"),
            "-l",
            log.to_str().expect("utf-8"),
            "-w",
            "-t",
            "60",
            "start",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Starts the server (after [`TestCluster::stop`]).
    pub fn start_server(&self) {
        let args = self.start_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("pg_ctl", &args);
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().expect("utf-8"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    /// Runs a server program as the cluster's owner; panics with its output
    /// on failure.
    pub fn run(&self, program: &str, args: &[&str]) {
        if let Err(failure) = self.try_run(program, args) {
            panic!("{failure}");
        }
    }

    /// Runs a server program as the cluster's owner; its output and the
    /// server log on failure.
    fn try_run<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
        &self,
        program: &str,
        args: &[S],
    ) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            return Err(format!(
                "{program} {args:?} failed: {}\n{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The cluster's temporary directory (socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server programs' directory.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The client programs' directory (psql, pgbench, pg_dump): the server's
    /// own, or 18's for a cluster of [`ClusterOptions::major`].
    pub fn client_bin(&self) -> &Path {
        &self.client_bin
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `(uid, gid)` the server runs as, when the tests run as root.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.owner
    }

    /// A DSN for database `db` as the superuser `postgres`.
    pub fn dsn(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Connection settings for database `db`.
    pub fn settings(&self, db: &str) -> ConnectionSettings {
        ConnectionSettings::from_dsn(&self.dsn(db)).expect("valid dsn")
    }

    /// Switches to a new WAL segment (after writing a record, so that there
    /// is one to switch from) and returns the name of the segment closed.
    ///
    /// # Panics
    /// When psql fails.
    pub fn switch_wal(&self) -> String {
        self.psql(
            "postgres",
            "SELECT pg_walfile_name(pg_switch_wal()) FROM (SELECT pg_logical_emit_message(false, 't', 'x')) m",
        )
    }

    /// Waits until `segment` is archived (`pg_stat_archiver`), at most
    /// `limit`.
    ///
    /// # Panics
    /// When it is not archived in time.
    pub fn wait_archived(&self, segment: &str, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        loop {
            let last = self.psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            );
            if last.as_str() >= segment {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "{segment} not archived within {limit:?}; last {last}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Waits until the server has left recovery (`pg_is_in_recovery()` is
    /// false), at most `limit`. A server started with `recovery.signal`
    /// accepts connections while it still replays (hot standby); WAL can be
    /// written only after it has promoted.
    ///
    /// # Panics
    /// When it is still in recovery after `limit`, or psql fails.
    pub fn wait_promoted(&self, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        while self.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(
                started.elapsed() < limit,
                "the server is still in recovery after {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The cluster's system identifier (`pg_control_system()`).
    ///
    /// # Panics
    /// When psql fails.
    pub fn system_id(&self) -> u64 {
        self.psql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )
        .parse()
        .expect("system_identifier is a number")
    }

    /// Runs SQL with `psql` (ON_ERROR_STOP) in database `db`; returns stdout.
    ///
    /// # Panics
    /// When psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.client_bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.dsn(db),
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        if !out.status.success() {
            panic!(
                "psql failed: {}\n{sql}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Initialises pgbench tables at `scale` in database `db` (created if missing).
    ///
    /// # Panics
    /// When pgbench fails.
    pub fn pgbench_init(&self, db: &str, scale: u32) {
        if self.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
        ) == "0"
        {
            self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        }
        let out = Command::new(self.client_bin.join("pgbench"))
            .args(["-i", "-q", "-s", &scale.to_string(), "-d", &self.dsn(db)])
            .output()
            .expect("pgbench");
        if !out.status.success() {
            panic!(
                "pgbench -i failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args([
            "-D",
            self.data_dir().to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
    }
}
