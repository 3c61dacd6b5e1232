//! Connection settings: a DSN or the libpq environment, and the password.
//!
//! Follows libpq's rules (PostgreSQL 15 docs §34.1 "Database Connection
//! Control Functions", §34.15 "Environment Variables", §34.16 "The Password
//! File"): values missing from the DSN come from `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE`; the password from the DSN, a password file, `PGPASSWORD`, or
//! `~/.pgpass` (`PGPASSFILE`), in that order. A password is never logged and
//! never put on a command line: child programs get it through a temporary
//! password file of mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use tokio::process::Command;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use crate::error::{Error, Result};

/// Where and as whom to connect. `Debug` never shows the password.
#[derive(Clone)]
pub struct ConnectionSettings {
    host: Host,
    port: u16,
    user: String,
    dbname: String,
    password: Option<SecretString>,
}

impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSettings")
            .field("target", &self.target())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ConnectionSettings {
    /// Settings from a DSN (`postgresql://user@host:port/db` or
    /// `host=... dbname=...`), completed from the libpq environment.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the DSN does not parse or asks for TLS
    /// (not supported yet: use a local socket or a TLS tunnel).
    pub fn from_dsn(dsn: &str) -> Result<Self> {
        let config: tokio_postgres::Config =
            dsn.parse()
                .map_err(|e: tokio_postgres::Error| Error::InvalidConfig {
                    key: "dsn".into(),
                    reason: e.to_string(),
                })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(Error::InvalidConfig {
                key: "dsn sslmode".into(),
                reason: "sslmode=require is not supported yet".into(),
            });
        }
        let mut s = Self::from_env()?;
        if let Some(h) = config.get_hosts().first() {
            s.host = h.clone();
        }
        if let Some(p) = config.get_ports().first() {
            s.port = *p;
        }
        if let Some(u) = config.get_user() {
            s.user = u.to_string();
        }
        match config.get_dbname() {
            Some(d) => s.dbname = d.to_string(),
            None if env("PGDATABASE").is_none() => s.dbname = s.user.clone(),
            None => {}
        }
        if let Some(p) = config.get_password() {
            s.password = Some(SecretString::from(String::from_utf8_lossy(p).into_owned()));
        } else {
            s.password = s.lookup_password()?;
        }
        Ok(s)
    }

    /// Whether the DSN itself carries a password (`postgresql://u:pw@h/db`
    /// or `password=...`), as opposed to one from the environment or a
    /// password file. `false` for a DSN that does not parse.
    pub fn dsn_has_password(dsn: &str) -> bool {
        dsn.parse::<tokio_postgres::Config>()
            .is_ok_and(|c| c.get_password().is_some())
    }

    /// Settings from `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`
    /// and the password file, with libpq's defaults (local socket, port 5432,
    /// the OS user).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a `PGPORT` that is not a port.
    pub fn from_env() -> Result<Self> {
        let host = match env("PGHOST") {
            Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            Some(h) => Host::Tcp(h),
            None if Path::new("/var/run/postgresql").exists() => {
                Host::Unix("/var/run/postgresql".into())
            }
            None => Host::Tcp("localhost".into()),
        };
        let port = match env("PGPORT") {
            Some(p) => p.parse().map_err(|_| Error::InvalidConfig {
                key: "PGPORT".into(),
                reason: format!("{p:?} is not a port number"),
            })?,
            None => 5432,
        };
        let user = env("PGUSER").unwrap_or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| "postgres".into())
        });
        let dbname = env("PGDATABASE").unwrap_or_else(|| user.clone());
        let mut s = ConnectionSettings {
            host,
            port,
            user,
            dbname,
            password: None,
        };
        s.password = s.lookup_password()?;
        Ok(s)
    }

    fn lookup_password(&self) -> Result<Option<SecretString>> {
        if let Some(p) = env("PGPASSWORD") {
            return Ok(Some(SecretString::from(p)));
        }
        let file = env("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
        match file {
            Some(f) if f.exists() => Ok(pgpass_lookup(
                &f,
                &self.host_string(),
                self.port,
                &self.dbname,
                &self.user,
            )),
            _ => Ok(None),
        }
    }

    /// Reads the password from a file (first line), replacing any other source.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file; [`Error::InvalidConfig`] when it is empty.
    pub fn with_password_file(mut self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(Error::InvalidConfig {
                key: format!("password file {}", path.display()),
                reason: "empty".into(),
            });
        }
        self.password = Some(SecretString::from(line.to_string()));
        Ok(self)
    }

    /// The same server and user with no password, whatever the DSN,
    /// `PGPASSWORD` or the password file gave: a connection that a server
    /// requiring one refuses.
    pub fn without_password(mut self) -> Self {
        self.password = None;
        self
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, dbname: &str) -> Self {
        let mut s = self.clone();
        s.dbname = dbname.to_string();
        s
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host (a name or a socket directory), for the replication client.
    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// The password, for the replication client's authentication exchange.
    pub(crate) fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }

    /// The host name, or the socket directory.
    pub fn host_string(&self) -> String {
        match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        }
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host_string(), self.port)
    }

    /// `host:port/database`, for messages.
    pub fn target(&self) -> String {
        format!("{}/{}", self.server(), self.dbname)
    }

    /// A DSN without the password (for `restore_command` lines, reports).
    pub fn dsn_without_password(&self) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            quote_kv(&self.host_string()),
            self.port,
            quote_kv(&self.user),
            quote_kv(&self.dbname)
        )
    }

    /// Connects with `tokio-postgres`; the connection task runs on the runtime.
    ///
    /// # Errors
    /// [`Error::NoSuchDatabase`] when the database does not exist;
    /// [`Error::Connect`] otherwise.
    pub async fn connect(&self) -> Result<Client> {
        let mut config = tokio_postgres::Config::new();
        match &self.host {
            Host::Tcp(h) => config.host(h),
            Host::Unix(p) => config.host_path(p),
        };
        config
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("dr")
            .connect_timeout(std::time::Duration::from_secs(30));
        if let Some(p) = &self.password {
            config.password(p.expose_secret());
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) {
                Error::NoSuchDatabase {
                    database: self.dbname.clone(),
                    server: self.server(),
                }
            } else {
                Error::Connect {
                    target: self.target(),
                    source: e,
                }
            }
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(client)
    }

    /// A command for a libpq client program connected to this database:
    /// `-h -p -U -d` on the command line, the password (if any) in a
    /// temporary password file named by `PGPASSFILE`. Keep the returned guard
    /// until the program has exited.
    ///
    /// # Errors
    /// [`Error::Io`] when the password file cannot be written.
    pub fn command(&self, program: &Path) -> Result<(Command, Option<PassFile>)> {
        let mut cmd = Command::new(program);
        cmd.arg("--host")
            .arg(self.host_string())
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--username")
            .arg(&self.user)
            .arg("--no-password")
            .env_remove("PGPASSWORD")
            .env("PGAPPNAME", "dr")
            .kill_on_drop(true);
        let guard = match &self.password {
            Some(p) => {
                let f = PassFile::write(p)?;
                cmd.env("PGPASSFILE", f.path());
                Some(f)
            }
            None => None,
        };
        Ok((cmd, guard))
    }
}

fn quote_kv(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A password file for one libpq program that exists only in memory: an
/// anonymous file (`memfd_create(2)`, mode 0600, close-on-exec) that the
/// program opens through `/proc/<dr's pid>/fd/<n>` (libpq requires a
/// regular file without group or world access: PostgreSQL docs §34.16
/// "The Password File"; a memfd is one). Nothing is written to disk, and it
/// is gone when dr exits, even on SIGKILL. Like a 0600 file, only processes
/// of the same user (and root) can open it while it exists.
#[derive(Debug)]
pub struct PassFile {
    _memfd: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl PassFile {
    fn write(password: &SecretString) -> Result<Self> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        use std::os::fd::AsRawFd;
        let io = |source: std::io::Error| Error::Io {
            path: PathBuf::from("(in-memory password file)"),
            source,
        };
        let fd = memfd_create(c"dr-pgpass", MFdFlags::MFD_CLOEXEC)
            .map_err(|e| io(std::io::Error::from(e)))?;
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| io(std::io::Error::from(e)))?;
        let escaped = password
            .expose_secret()
            .replace('\\', "\\\\")
            .replace(':', "\\:");
        let mut f = std::fs::File::from(fd.try_clone().map_err(io)?);
        f.write_all(format!("*:*:*:*:{escaped}\n").as_bytes())
            .map_err(io)?;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            fd.as_raw_fd()
        ));
        Ok(PassFile { _memfd: fd, path })
    }

    /// The path a program opens it by (`/proc/<pid>/fd/<n>`), for
    /// `PGPASSFILE`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Looks a password up in a `.pgpass` file (§34.16): lines
/// `hostname:port:database:username:password`, `*` matches anything, `\`
/// escapes `:` and `\`. A file readable by group or others is ignored, as
/// libpq does.
fn pgpass_lookup(file: &Path, host: &str, port: u16, db: &str, user: &str) -> Option<SecretString> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %file.display(), "password file has group or world access; ignored");
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let host_ok = fields[0] == "*"
            || fields[0] == host
            || (fields[0] == "localhost" && host.starts_with('/'));
        if host_ok
            && (fields[1] == "*" || fields[1] == port)
            && (fields[2] == "*" || fields[2] == db)
            && (fields[3] == "*" || fields[3] == user)
        {
            return Some(SecretString::from(fields[4].clone()));
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("one field").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_fields_and_escapes() {
        assert_eq!(
            split_pgpass(r"h:5432:db:u:pa\:ss\\w"),
            vec!["h", "5432", "db", "u", r"pa:ss\w"]
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(&f, "# c\nother:*:*:*:no\n127.0.0.1:5432:*:app:s3cret\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = pgpass_lookup(&f, "127.0.0.1", 5432, "x", "app").unwrap();
        assert_eq!(p.expose_secret(), "s3cret");
        assert!(pgpass_lookup(&f, "127.0.0.1", 5433, "x", "app").is_none());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(pgpass_lookup(&f, "127.0.0.1", 5432, "x", "app").is_none());
    }

    #[test]
    fn without_password_drops_the_dsns_password() {
        let s = ConnectionSettings::from_dsn("host=h user=u password=pw dbname=d").unwrap();
        assert!(s.password().is_some());
        let s = s.without_password();
        assert!(s.password().is_none());
        assert_eq!((s.user(), s.dbname()), ("u", "d"));
    }

    #[test]
    fn dsn_parsing_and_no_password_in_debug() {
        let s = ConnectionSettings::from_dsn("postgresql://app:pw@127.0.0.1:6543/shop").unwrap();
        assert_eq!(s.target(), "127.0.0.1:6543/shop");
        assert_eq!(s.user(), "app");
        assert!(!format!("{s:?}").contains("pw"));
        assert!(!s.dsn_without_password().contains("pw"));
        let err = ConnectionSettings::from_dsn("postgresql://h:notaport/x").unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }));
    }

    #[test]
    fn password_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let s = ConnectionSettings::from_dsn("postgresql://app:p:w@127.0.0.1:6543/shop").unwrap();
        let (_, guard) = s.command(Path::new("/bin/true")).unwrap();
        let guard = guard.unwrap();
        let path = guard.path().to_path_buf();
        // In memory: nothing on a file system to leave behind.
        assert!(path.starts_with("/proc/"), "{}", path.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "*:*:*:*:p\\:w\n");
        drop(guard);
        assert!(!path.exists());
    }
}
