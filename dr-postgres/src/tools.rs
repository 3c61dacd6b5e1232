//! PostgreSQL's programs (`pg_dump`, `pg_restore`, `psql`, `pg_basebackup`,
//! and the server's `postgres` and `pg_ctl`): where they are and whether
//! their version fits the server they work on.
//!
//! Two rules decide whether a program fits:
//! - a client program must be at least as new as the server (PostgreSQL
//!   docs, pg_dump "Notes": it cannot dump from servers newer than its own
//!   major version); one of the server's own major is preferred, because a
//!   newer `pg_restore` sends settings an older server rejects
//!   (`transaction_timeout`, PostgreSQL 17);
//! - a server program must be of the data directory's major version
//!   (PostgreSQL docs, "Upgrading a PostgreSQL Cluster": the data format
//!   changes between major versions).
//!
//! The search, in order:
//! 1. the explicit directory (`--pg-bin`, `DR_PG_BIN`, `bin_dir` of the
//!    source's `[sources.NAME]` section): used when its program fits; when
//!    it does not, a warning says so and the search goes on;
//! 2. `pg_config --bindir` of the `pg_config` on `PATH`;
//! 3. the distributions' layouts for the wanted major: Debian's
//!    `/usr/lib/postgresql/<V>/bin`, the PGDG RPMs' `/usr/pgsql-<V>/bin`;
//! 4. the same layouts of every other installed major, newest first, and a
//!    source build's `/usr/local/pgsql/bin`;
//! 5. `PATH`.
//!
//! Among the candidates found, one of exactly the wanted major wins; for a
//! client program, the first newer one otherwise. A candidate that does not
//! fit is skipped, and the error when nothing fits lists every candidate
//! with its version.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A located program and its major version.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Program name (`pg_dump`).
    pub name: &'static str,
    /// Full path.
    pub path: PathBuf,
    /// Major version (15 for 15.4).
    pub major: u32,
}

/// Which versions of a program fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// A client of a server of this major: this major or newer.
    Client(u32),
    /// A server program for a data directory of this major: exactly it.
    Server(u32),
}

impl Fit {
    /// The major version the program works with.
    pub fn major(self) -> u32 {
        match self {
            Fit::Client(m) | Fit::Server(m) => m,
        }
    }

    /// Whether a program of major `major` fits.
    pub fn accepts(self, major: u32) -> bool {
        match self {
            Fit::Client(m) => major >= m,
            Fit::Server(m) => major == m,
        }
    }
}

impl std::fmt::Display for Fit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fit::Client(m) => write!(f, "version {m} or newer"),
            Fit::Server(m) => write!(f, "version {m}"),
        }
    }
}

/// Where the search looks: the host's layouts, or a test's.
#[derive(Debug, Clone)]
pub struct Search {
    /// Debian's root of per-version directories (`/usr/lib/postgresql`).
    pub debian_root: PathBuf,
    /// The PGDG RPMs' prefix (`/usr/pgsql-`, followed by the major).
    pub rpm_prefix: String,
    /// A source build's directory (`/usr/local/pgsql/bin`).
    pub source_build: PathBuf,
    /// The `PATH` to search (and to find `pg_config` on).
    pub path: Option<OsString>,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            debian_root: PathBuf::from("/usr/lib/postgresql"),
            rpm_prefix: "/usr/pgsql-".into(),
            source_build: PathBuf::from("/usr/local/pgsql/bin"),
            path: std::env::var_os("PATH"),
        }
    }
}

impl Search {
    /// The directories to look in after the explicit one, in order.
    async fn directories(&self, wanted: u32) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(bindir) = self.pg_config_bindir().await {
            dirs.push(bindir);
        }
        dirs.push(self.debian_root.join(wanted.to_string()).join("bin"));
        dirs.push(PathBuf::from(format!("{}{wanted}/bin", self.rpm_prefix)));
        let mut others: Vec<(u32, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&self.debian_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(v) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                others.push((v, entry.path().join("bin")));
            }
        }
        let rpm = Path::new(&self.rpm_prefix);
        if let (Some(parent), Some(stem)) = (rpm.parent(), rpm.file_name().and_then(|s| s.to_str()))
        {
            for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                let name = entry.file_name();
                if let Some(v) = name
                    .to_str()
                    .and_then(|s| s.strip_prefix(stem))
                    .and_then(|s| s.parse().ok())
                {
                    others.push((v, entry.path().join("bin")));
                }
            }
        }
        others.sort_by_key(|o| std::cmp::Reverse(o.0));
        dirs.extend(others.into_iter().map(|(_, d)| d));
        dirs.push(self.source_build.clone());
        if let Some(path) = &self.path {
            dirs.extend(std::env::split_paths(path));
        }
        dirs
    }

    /// `pg_config --bindir` of the `pg_config` on the search's `PATH`.
    async fn pg_config_bindir(&self) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        let pg_config = std::env::split_paths(path)
            .map(|d| d.join("pg_config"))
            .find(|p| p.is_file())?;
        let out = tokio::process::Command::new(&pg_config)
            .arg("--bindir")
            .output()
            .await
            .ok()?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
    }

    /// Finds program `name` fitting `fit`, trying `explicit` first.
    ///
    /// # Errors
    /// [`Error::Tool`] when no candidate fits, listing every candidate
    /// with its version (or why it could not be read).
    pub async fn find(
        &self,
        name: &'static str,
        explicit: Option<&Path>,
        fit: Fit,
    ) -> Result<Tool> {
        let mut tried: Vec<String> = Vec::new();
        if let Some(dir) = explicit {
            let path = dir.join(name);
            if path.is_file() {
                match version(name, &path).await {
                    Ok(major) if fit.accepts(major) => return Ok(Tool { name, path, major }),
                    Ok(major) => {
                        tracing::warn!(
                            program = %path.display(),
                            version = major,
                            wanted = %fit,
                            "the configured PostgreSQL program does not fit; searching elsewhere"
                        );
                        tried.push(format!("{} (version {major})", path.display()));
                    }
                    Err(e) => tried.push(format!("{} ({e})", path.display())),
                }
            } else {
                tried.push(format!("{} (absent)", path.display()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut found: Vec<Tool> = Vec::new();
        for dir in self.directories(fit.major()).await {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen.insert(real) || explicit.is_some_and(|d| d.join(name) == path) {
                continue;
            }
            match version(name, &path).await {
                Ok(major) => {
                    if !fit.accepts(major) {
                        tried.push(format!("{} (version {major})", path.display()));
                    }
                    found.push(Tool { name, path, major });
                }
                Err(e) => tried.push(format!("{} ({e})", path.display())),
            }
        }
        let exact = found.iter().position(|t| t.major == fit.major());
        let first_fit = found.iter().position(|t| fit.accepts(t.major));
        if let Some(i) = exact.or(first_fit) {
            return Ok(found.swap_remove(i));
        }
        Err(Error::Tool {
            program: name.into(),
            reason: format!(
                "no {name} of {fit} found; {}; point dr at the PostgreSQL {} programs with --pg-bin DIR, \
                 DR_PG_BIN or bin_dir in the source's section",
                if tried.is_empty() {
                    format!(
                        "looked in {}/<version>/bin, {}<version>/bin, {} and PATH",
                        self.debian_root.display(),
                        self.rpm_prefix,
                        self.source_build.display()
                    )
                } else {
                    format!("found only {}", tried.join(", "))
                },
                fit.major()
            ),
        })
    }
}

/// Finds client program `name` for a server of major `server_major`,
/// trying `bin_dir` first (see the module documentation for the order).
///
/// # Errors
/// [`Error::Tool`] when no candidate is new enough, listing what was found.
pub async fn find(name: &'static str, bin_dir: Option<&Path>, server_major: u32) -> Result<Tool> {
    Search::default()
        .find(name, bin_dir, Fit::Client(server_major))
        .await
}

/// The directory of the server programs (`postgres`, `pg_ctl`) of major
/// `major`, trying `bin_dir` first.
///
/// # Errors
/// [`Error::Tool`] when no `postgres` of that major is found, or `pg_ctl`
/// is not beside it.
pub async fn server_bin_dir(bin_dir: Option<&Path>, major: u32) -> Result<PathBuf> {
    let postgres = Search::default()
        .find("postgres", bin_dir, Fit::Server(major))
        .await?;
    let dir = postgres
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if !dir.join("pg_ctl").is_file() {
        return Err(Error::Tool {
            program: "pg_ctl".into(),
            reason: format!(
                "not found beside {} (PostgreSQL {major}'s server programs)",
                postgres.path.display()
            ),
        });
    }
    Ok(dir)
}

async fn version(name: &str, path: &Path) -> Result<u32> {
    let out = tokio::process::Command::new(path)
        .arg("--version")
        .output()
        .await
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_major(&text).ok_or_else(|| Error::Tool {
        program: name.into(),
        reason: format!(
            "cannot read the version of {} from {text:?}",
            path.display()
        ),
    })
}

/// Parses the major version from `pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)`.
fn parse_major(text: &str) -> Option<u32> {
    let after = text.split("(PostgreSQL)").nth(1)?.trim();
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Keeps the last `limit` bytes of a program's standard error.
pub(crate) fn tail(bytes: &[u8], limit: usize) -> String {
    let start = bytes.len().saturating_sub(limit);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("pg_restore (PostgreSQL) 9.6.24\n"), Some(9));
        assert_eq!(parse_major("psql 15"), None);
    }

    /// A fake program that prints `name (PostgreSQL) V.1` as its version.
    fn fake(dir: &Path, name: &str, version: u32) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{name} (PostgreSQL) {version}.1'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    struct Host {
        _root: tempfile::TempDir,
        search: Search,
        root: PathBuf,
    }

    /// A host with Debian 15 and 18 clients, an RPM-layout 13 server, and a
    /// 16 client on PATH.
    fn host() -> Host {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_path_buf();
        fake(&r.join("debian/15/bin"), "pg_restore", 15);
        fake(&r.join("debian/18/bin"), "pg_restore", 18);
        fake(&r.join("debian/18/bin"), "postgres", 18);
        fake(&r.join("opt/pgsql-13/bin"), "postgres", 13);
        fake(&r.join("path"), "pg_restore", 16);
        let search = Search {
            debian_root: r.join("debian"),
            rpm_prefix: format!("{}/opt/pgsql-", r.display()),
            source_build: r.join("local/pgsql/bin"),
            path: Some(r.join("path").into_os_string()),
        };
        Host {
            _root: root,
            search,
            root: r,
        }
    }

    #[tokio::test]
    async fn a_client_of_the_servers_major_is_preferred_then_the_first_newer_one() {
        let h = host();
        let t = h
            .search
            .find("pg_restore", None, Fit::Client(16))
            .await
            .unwrap();
        assert_eq!(
            (t.major, t.path.clone()),
            (16, h.root.join("path/pg_restore"))
        );
        let t = h
            .search
            .find("pg_restore", None, Fit::Client(15))
            .await
            .unwrap();
        assert_eq!(t.path, h.root.join("debian/15/bin/pg_restore"));
        // No 13 client: the newest installed layout comes first.
        let t = h
            .search
            .find("pg_restore", None, Fit::Client(13))
            .await
            .unwrap();
        assert_eq!(t.path, h.root.join("debian/18/bin/pg_restore"));
    }

    #[tokio::test]
    async fn too_old_candidates_are_skipped_and_listed_when_nothing_fits() {
        let h = host();
        let t = h
            .search
            .find("pg_restore", None, Fit::Client(17))
            .await
            .unwrap();
        assert_eq!(t.major, 18);
        let e = h
            .search
            .find("pg_restore", None, Fit::Client(19))
            .await
            .unwrap_err()
            .to_string();
        for listed in [
            "debian/18/bin/pg_restore (version 18)",
            "path/pg_restore (version 16)",
            "--pg-bin",
        ] {
            assert!(e.contains(listed), "{listed} missing from: {e}");
        }
    }

    #[tokio::test]
    async fn a_server_program_must_be_of_the_exact_major_from_any_layout() {
        let h = host();
        let t = h
            .search
            .find("postgres", None, Fit::Server(13))
            .await
            .unwrap();
        assert_eq!(t.path, h.root.join("opt/pgsql-13/bin/postgres"));
        let e = h
            .search
            .find("postgres", None, Fit::Server(16))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("postgres (version 18)") && e.contains("of version 16"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_explicit_directory_wins_when_it_fits_and_is_passed_over_when_not() {
        let h = host();
        let mine = h.root.join("mine");
        fake(&mine, "pg_restore", 17);
        let t = h
            .search
            .find("pg_restore", Some(&mine), Fit::Client(15))
            .await
            .unwrap();
        assert_eq!(t.path, mine.join("pg_restore"));
        // Too old for an 18 server: the search goes on.
        let t = h
            .search
            .find("pg_restore", Some(&mine), Fit::Client(18))
            .await
            .unwrap();
        assert_eq!(t.path, h.root.join("debian/18/bin/pg_restore"));
        let e = h
            .search
            .find("pg_dump", Some(&mine), Fit::Client(15))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("mine/pg_dump (absent)"), "{e}");
    }

    #[tokio::test]
    async fn pg_config_on_path_names_a_directory_searched_before_the_layouts() {
        let h = host();
        let elsewhere = h.root.join("elsewhere/bin");
        fake(&elsewhere, "pg_restore", 15);
        let cfg = h.root.join("cfgpath");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(
            cfg.join("pg_config"),
            format!("#!/bin/sh\necho '{}'\n", elsewhere.display()),
        )
        .unwrap();
        std::fs::set_permissions(
            cfg.join("pg_config"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let mut search = h.search.clone();
        search.path = Some(cfg.into_os_string());
        let t = search
            .find("pg_restore", None, Fit::Client(15))
            .await
            .unwrap();
        assert_eq!(t.path, elsewhere.join("pg_restore"));
    }
}
