//! `dr check` for a PostgreSQL source: what a backup, the WAL archive and a
//! recovery need from the server and from this host, checked before the
//! night they are needed. Each check is a [`Finding`] with its fix.
//!
//! The settings checked and why (PostgreSQL 15 docs §26.3.1 "Setting Up WAL
//! Archiving", §20.5.3 "Archiving"): `wal_level` at least `replica`,
//! `archive_mode` `on` or `always`, an `archive_command` that runs
//! `dr wal-push` for this source, and `archive_timeout` (a segment is
//! archived only once full or after `archive_timeout`, so an idle server
//! with `archive_timeout = 0` can hold the newest changes past any RPO).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dr_core::setup_check::Finding;

use crate::conn::ConnectionSettings;

/// What to check of one source.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SourceCheck {
    /// The source's name (`[sources.NAME]`), which `--source` in
    /// `archive_command` must name.
    pub name: String,
    /// A physical source (base backups and the WAL archive), else a logical
    /// one (`pg_dump`).
    pub physical: bool,
    /// The source's recovery point objective, when one is set.
    pub rpo: Option<Duration>,
    /// Directory of the PostgreSQL programs searched first.
    pub bin_dir: Option<PathBuf>,
    /// The key file `restore_command` (`dr wal-fetch`) reads as the
    /// server's user during a recovery.
    pub identity_file: Option<PathBuf>,
}

impl SourceCheck {
    /// A check of source `name`.
    pub fn new(name: impl Into<String>, physical: bool) -> Self {
        SourceCheck {
            name: name.into(),
            physical,
            rpo: None,
            bin_dir: None,
            identity_file: None,
        }
    }
}

/// Checks the server `conn` reaches against `check`. Never fails: what
/// cannot be checked is a finding too.
pub async fn check_source(conn: &ConnectionSettings, check: &SourceCheck) -> Vec<Finding> {
    let subject = format!("source {}", check.name);
    let mut out = Vec::new();
    let client = match conn.connect().await {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail(
                &subject,
                "reachable",
                format!("{}: {}", conn.target(), dr_core::error_chain(&e)),
                "check the DSN, that the server runs, and that pg_hba.conf admits this host and user",
            ));
            return out;
        }
    };
    let settings = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
             current_setting('wal_level'), current_setting('archive_mode'), \
             current_setting('archive_command'), \
             (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'), \
             current_setting('data_directory'), \
             (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await;
    let row = match settings {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::fail(
                &subject,
                "settings",
                format!(
                    "cannot read the server's settings: {}",
                    dr_core::error_chain(&e)
                ),
                "connect as a superuser or a member of pg_read_all_settings",
            ));
            return out;
        }
    };
    let version: String = row.get(0);
    let major = row.get::<_, i32>(1) as u32 / 10000;
    out.push(if (13..=18).contains(&major) {
        Finding::ok(
            &subject,
            "reachable",
            format!("{}: PostgreSQL {version}", conn.target()),
        )
    } else {
        Finding::fail(
            &subject,
            "server version",
            format!("PostgreSQL {version}"),
            "dr supports PostgreSQL 13 to 18",
        )
    });
    let programs: &[&'static str] = match (check.physical, major) {
        (false, _) => &["pg_dump", "pg_restore"],
        (true, m) if m < 15 => &["pg_basebackup"],
        (true, _) => &[],
    };
    for program in programs {
        out.push(match crate::tools::find(program, check.bin_dir.as_deref(), major).await {
            Ok(t) => Finding::ok(
                &subject,
                *program,
                format!("{} (version {})", t.path.display(), t.major),
            ),
            Err(e) => Finding::fail(
                &subject,
                *program,
                e.to_string(),
                "install the PostgreSQL client programs of the server's version, or set bin_dir",
            ),
        });
    }
    if !check.physical {
        return out;
    }
    let (wal_level, mode, command): (String, String, String) = (row.get(2), row.get(3), row.get(4));
    let timeout = Duration::from_secs(row.get::<_, i32>(5).max(0) as u64);
    let data_dir: String = row.get(6);
    let replication: Option<bool> = row.get(7);
    out.push(if replication == Some(true) {
        Finding::ok(&subject, "replication", format!("role {} may take base backups", conn.user()))
    } else {
        Finding::fail(
            &subject,
            "replication",
            format!("role {} has neither REPLICATION nor SUPERUSER", conn.user()),
            format!("ALTER ROLE {} REPLICATION (and admit it to the replication database in pg_hba.conf)", conn.user()),
        )
    });
    out.push(if wal_level == "minimal" {
        Finding::fail(
            &subject,
            "wal_level",
            "minimal: the WAL cannot rebuild a base backup",
            "set wal_level = replica and restart the server",
        )
    } else {
        Finding::ok(&subject, "wal_level", wal_level)
    });
    out.push(if mode == "on" || mode == "always" {
        Finding::ok(&subject, "archive_mode", mode)
    } else {
        Finding::fail(
            &subject,
            "archive_mode",
            format!("{mode}: no WAL is archived"),
            format!(
                "set archive_mode = on and archive_command = 'dr wal-push --source {} %p', then restart the server",
                check.name
            ),
        )
    });
    out.push(archive_command_finding(&subject, &check.name, &command));
    out.push(archive_timeout_finding(&subject, timeout, check.rpo));
    // What the server's user must reach: the dr program it runs and the key
    // restore_command reads. Only when the data directory is on this host.
    let owner = std::fs::metadata(&data_dir).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.uid(), m.gid())
    });
    let Some((uid, gid)) = owner else {
        out.push(Finding::warn(
            &subject,
            "server user access",
            format!(
                "the data directory {data_dir} is not on this host (or not visible to this user)"
            ),
            "run dr check on the database host to check what the server's user can read",
        ));
        return out;
    };
    let groups = user_groups(uid, gid);
    if let Some(program) = command_program(&command) {
        out.push(match can_access(Path::new(&program), uid, &groups, Want::Execute) {
            Ok(()) => Finding::ok(&subject, "dr program", format!("{program} runs as uid {uid}")),
            Err(why) => Finding::fail(
                &subject,
                "dr program",
                format!("the server's user (uid {uid}) cannot run {program}: {why}"),
                "install dr where the server's user can run it (e.g. /usr/local/bin, mode 0755)",
            ),
        });
    }
    if let Some(key) = &check.identity_file {
        out.push(match can_access(key, uid, &groups, Want::Read) {
            Ok(()) => Finding::ok(&subject, "key file", format!("{} readable by uid {uid}", key.display())),
            Err(why) => Finding::fail(
                &subject,
                "key file",
                format!(
                    "the server's user (uid {uid}) cannot read {}: {why}; restore_command (dr wal-fetch) fails in a recovery",
                    key.display()
                ),
                "make the key file owned by the server's user (mode 0600), or its group (mode 0640)",
            ),
        });
    }
    out
}

/// The `archive_command` line: it must run `dr wal-push` for this source.
fn archive_command_finding(subject: &str, source: &str, command: &str) -> Finding {
    let fix = format!("set archive_command = 'dr wal-push --source {source} %p' and reload");
    if !command.contains("wal-push") {
        let what = if command.is_empty() {
            "empty"
        } else {
            "does not run dr wal-push"
        };
        return Finding::fail(
            subject,
            "archive_command",
            format!("{what} ({command:?})"),
            fix,
        );
    }
    match command_source(command) {
        Some(s) if s == source => Finding::ok(subject, "archive_command", command),
        Some(other) => Finding::fail(
            subject,
            "archive_command",
            format!(
                "archives as source {other:?}, not {source:?}: the WAL goes under another name"
            ),
            fix,
        ),
        None => Finding::fail(
            subject,
            "archive_command",
            format!("names no --source ({command:?})"),
            fix,
        ),
    }
}

/// The `archive_timeout` line against the RPO.
fn archive_timeout_finding(subject: &str, timeout: Duration, rpo: Option<Duration>) -> Finding {
    let shown = humantime::format_duration(timeout).to_string();
    match rpo {
        Some(rpo) if timeout.is_zero() => Finding::warn(
            subject,
            "archive_timeout",
            format!("0 (off): an idle server can keep its newest changes unarchived longer than the RPO ({})", humantime::format_duration(rpo)),
            format!("set archive_timeout below the RPO, e.g. '{}'", humantime::format_duration(rpo / 4)),
        ),
        Some(rpo) if timeout > rpo => Finding::fail(
            subject,
            "archive_timeout",
            format!("{shown} is longer than the RPO ({})", humantime::format_duration(rpo)),
            format!("set archive_timeout below the RPO, e.g. '{}'", humantime::format_duration(rpo / 4)),
        ),
        Some(rpo) => Finding::ok(subject, "archive_timeout", format!("{shown} (RPO {})", humantime::format_duration(rpo))),
        None if timeout.is_zero() => Finding::warn(
            subject,
            "archive_timeout",
            "0 (off), and no RPO is set: an idle server's newest changes wait until a segment fills",
            "set an RPO in [objectives] and archive_timeout below it",
        ),
        None => Finding::ok(subject, "archive_timeout", shown),
    }
}

/// The `--source` an `archive_command` names (`--source NAME` or
/// `--source=NAME`, quotes removed).
fn command_source(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let unquote = |w: &str| w.trim_matches(|c| c == '\'' || c == '"').to_string();
    words.iter().enumerate().find_map(|(i, w)| {
        if let Some(v) = w.strip_prefix("--source=") {
            Some(unquote(v))
        } else if *w == "--source" {
            words.get(i + 1).map(|v| unquote(v))
        } else {
            None
        }
    })
}

/// The program an `archive_command` runs: its first word, when it is an
/// absolute path (a bare name is looked up in the server's PATH, which this
/// host's check cannot see).
fn command_program(command: &str) -> Option<String> {
    let first = command.split_whitespace().next()?;
    let first = first.trim_matches(|c| c == '\'' || c == '"');
    first.starts_with('/').then(|| first.to_string())
}

/// The groups of the user `uid` (its primary `gid` and supplementary ones).
fn user_groups(uid: u32, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        if let Ok(name) = std::ffi::CString::new(user.name) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)) {
                groups.extend(list.into_iter().map(|g| g.as_raw()));
            }
        }
    }
    groups
}

/// What a user needs of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Read,
    Execute,
}

/// Whether user `uid` with `groups` may read (or run) `path`: search
/// permission on every directory above it, and read (or execute) permission
/// on it, by the owner, group, other classes of the mode (POSIX file
/// permission rules; root needs an execute bit to run). ACLs are not read.
fn can_access(path: &Path, uid: u32, groups: &[u32], want: Want) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let allowed = |m: &std::fs::Metadata, bit: u32| -> bool {
        let mode = m.mode();
        if uid == 0 {
            return bit != 1 || mode & 0o111 != 0;
        }
        let class = if m.uid() == uid {
            6
        } else if groups.contains(&m.gid()) {
            3
        } else {
            0
        };
        mode & (bit << class) != 0
    };
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(path)
    };
    let mut dir = PathBuf::from("/");
    for part in path
        .parent()
        .into_iter()
        .flat_map(|p| p.components().skip(1))
    {
        dir.push(part);
        let m = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allowed(&m, 1) {
            return Err(format!(
                "no search permission on the directory {}",
                dir.display()
            ));
        }
    }
    let m = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (bit, what) = match want {
        Want::Read => (4, "read"),
        Want::Execute => (1, "execute"),
    };
    if allowed(&m, bit) {
        Ok(())
    } else {
        use std::os::unix::fs::PermissionsExt;
        Err(format!(
            "no {what} permission (mode {:o}, owner uid {})",
            m.permissions().mode() & 0o7777,
            m.uid()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_core::setup_check::FindingStatus;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_archive_command_must_name_this_source() {
        let ok = archive_command_finding("s", "db", "/usr/bin/dr wal-push --source db %p");
        assert_eq!(ok.status, FindingStatus::Ok);
        let eq = archive_command_finding("s", "db", "dr wal-push --source='db' %p");
        assert_eq!(eq.status, FindingStatus::Ok, "{eq:?}");
        let other = archive_command_finding("s", "db", "dr wal-push --source app %p");
        assert_eq!(other.status, FindingStatus::Fail);
        assert!(other.detail.contains("\"app\""), "{other:?}");
        let none = archive_command_finding("s", "db", "dr wal-push %p");
        assert!(none.detail.contains("names no --source"), "{none:?}");
        let cp = archive_command_finding("s", "db", "cp %p /archive/%f");
        assert!(cp.detail.contains("does not run dr wal-push"), "{cp:?}");
        assert!(archive_command_finding("s", "db", "")
            .detail
            .starts_with("empty"));
        assert_eq!(
            command_program("'/opt/dr/bin/dr' wal-push").as_deref(),
            Some("/opt/dr/bin/dr")
        );
        assert_eq!(command_program("dr wal-push"), None);
    }

    #[test]
    fn archive_timeout_is_judged_against_the_rpo() {
        let m = Duration::from_secs(60);
        let s = |t, r| archive_timeout_finding("s", t, r).status;
        assert_eq!(s(Duration::ZERO, Some(15 * m)), FindingStatus::Warn);
        assert_eq!(s(Duration::ZERO, None), FindingStatus::Warn);
        assert_eq!(s(5 * m, Some(15 * m)), FindingStatus::Ok);
        assert_eq!(s(15 * m, Some(15 * m)), FindingStatus::Ok);
        assert_eq!(s(16 * m, Some(15 * m)), FindingStatus::Fail);
        assert_eq!(s(16 * m, None), FindingStatus::Ok);
        let f = archive_timeout_finding("s", 20 * m, Some(15 * m));
        assert!(f.fix.unwrap().contains("3m 45s"));
    }

    #[test]
    fn access_follows_the_mode_of_the_file_and_every_directory_above() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let key = sub.join("key");
        std::fs::write(&key, "x").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let stranger = 54_321;
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };

        set(&key, 0o600);
        assert!(can_access(&key, me, &[], Want::Read).is_ok());
        let err = can_access(&key, stranger, &[], Want::Read).unwrap_err();
        assert!(err.contains("no read permission (mode 600"), "{err}");
        // The group may read at 0640 when the user is in the file's group.
        set(&key, 0o640);
        let gid = std::fs::metadata(&key)
            .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
            .unwrap();
        assert!(can_access(&key, stranger, &[gid], Want::Read).is_ok());
        assert!(can_access(&key, stranger, &[gid + 1], Want::Read).is_err());
        // Readable file, closed directory above it.
        set(&key, 0o644);
        assert!(can_access(&key, stranger, &[], Want::Read).is_ok());
        set(&sub, 0o700);
        let err = can_access(&key, stranger, &[], Want::Read).unwrap_err();
        assert!(
            err.contains("no search permission") && err.contains("sub"),
            "{err}"
        );
        set(&sub, 0o755);
        // Execute needs an execute bit, even for root.
        assert!(can_access(&key, 0, &[], Want::Execute).is_err());
        set(&key, 0o755);
        assert!(can_access(&key, 0, &[], Want::Execute).is_ok());
        assert!(can_access(&key, stranger, &[], Want::Execute).is_ok());
        assert!(can_access(&dir.path().join("absent"), me, &[], Want::Read).is_err());
    }
}
