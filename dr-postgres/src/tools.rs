//! The PostgreSQL client programs (`pg_dump`, `pg_restore`, `pg_dumpall`,
//! `psql`): where they are and whether they are new enough.
//!
//! `pg_dump` must be at least as new as the server (PostgreSQL 15 docs,
//! pg_dump "Notes": it cannot dump from servers newer than its own major
//! version). Programs are looked up in a configured directory, then in
//! `/usr/lib/postgresql/<server major>/bin` (Debian's layout), then the newest
//! `/usr/lib/postgresql/*/bin`, then `PATH`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A located client program and its major version.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Program name (`pg_dump`).
    pub name: &'static str,
    /// Full path.
    pub path: PathBuf,
    /// Major version (15 for 15.4).
    pub major: u32,
}

/// Finds `name` for a server of major version `server_major`.
///
/// # Errors
/// [`Error::Tool`] when the program is not found, its version does not parse,
/// or it is older than the server.
pub async fn find(name: &'static str, bin_dir: Option<&Path>, server_major: u32) -> Result<Tool> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = bin_dir {
        candidates.push(dir.join(name));
    } else {
        candidates.push(PathBuf::from(format!(
            "/usr/lib/postgresql/{server_major}/bin/{name}"
        )));
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin").join(name)))
            })
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|(_, p)| p));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
        }
    }
    let Some(path) = candidates.into_iter().find(|p| p.is_file()) else {
        return Err(Error::Tool {
            program: name.into(),
            reason: match bin_dir {
                Some(d) => format!("not found in {}", d.display()),
                None => "not found under /usr/lib/postgresql/*/bin or on PATH; install the PostgreSQL client \
                         (Debian: postgresql-client-<version>) or set bin_dir"
                    .into(),
            },
        });
    };
    let major = version(name, &path).await?;
    if major < server_major {
        return Err(Error::Tool {
            program: name.into(),
            reason: format!(
                "{} is version {major}, older than the server (version {server_major}); install the client of \
                 version {server_major} or newer",
                path.display()
            ),
        });
    }
    Ok(Tool { name, path, major })
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

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("pg_restore (PostgreSQL) 9.6.24\n"), Some(9));
        assert_eq!(parse_major("psql 15"), None);
    }
}
