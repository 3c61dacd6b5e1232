//! One restore at a time per data directory: a lock file inside the target
//! directory, locked with `flock(2)` for the whole restore and holding the
//! restorer's pid and start time.
//!
//! The file is also the mark of a restore in progress: it is removed when
//! the restore ends (successfully or not) and stays only when the process
//! died on the way. A later restore then finds it unlocked and names the
//! directory as the leftover of an interrupted restore instead of "not
//! empty". The kernel releases a `flock` when its holder dies, so a crash
//! never leaves a lock that blocks.
//!
//! The file is created only in an empty (or new) directory, with
//! `O_EXCL`: of two restores starting together exactly one creates it; the
//! other finds it and fails without writing anything.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};

use super::error::PitrError;

/// The lock file's name inside the data directory being restored.
pub(crate) const LOCK_FILE: &str = ".dr-restore-in-progress";

/// A lock file whose content is still empty this long after it was last
/// written is a leftover (its writer died between creating and writing it).
const EMPTY_GRACE: Duration = Duration::from_secs(60);

/// The lock on a data directory being restored; removes the lock file when
/// released with [`RestoreLock::release`].
#[derive(Debug)]
pub(crate) struct RestoreLock {
    path: PathBuf,
    file: Option<Flock<File>>,
}

impl RestoreLock {
    /// Locks `pgdata` for a restore: creates it (and its parents) when
    /// absent, else requires it to be empty. With `clean_leftover`, the
    /// leftover of an interrupted restore (see
    /// [`super::PitrOptions::clean_leftover`]) is emptied under its own
    /// lock file's lock, which this restore then takes over: a second
    /// restore cleaning at the same moment finds it held.
    ///
    /// # Errors
    /// [`PitrError::RestoreInProgress`] when another restore holds it;
    /// [`PitrError::TargetNotEmpty`] when it holds anything (naming the
    /// leftover of an interrupted restore as such); [`PitrError::Io`].
    pub(crate) fn acquire(pgdata: &Path, clean_leftover: bool) -> Result<RestoreLock, PitrError> {
        if let Some(parent) = pgdata.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(PitrError::io(parent))?;
        }
        let created = match std::fs::create_dir(pgdata) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(PitrError::io(pgdata)(e)),
        };
        let path = pgdata.join(LOCK_FILE);
        if !created {
            if std::fs::symlink_metadata(&path).is_ok() {
                if clean_leftover {
                    return take_over_leftover(pgdata, &path);
                }
                return Err(examine(pgdata, &path));
            }
            let mut entries = std::fs::read_dir(pgdata).map_err(PitrError::io(pgdata))?;
            if entries.next().is_some() {
                return Err(PitrError::TargetNotEmpty {
                    dir: pgdata.to_path_buf(),
                    reason: "is not empty; restore into an empty or absent directory".into(),
                });
            }
        }
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(examine(pgdata, &path))
            }
            Err(e) => return Err(PitrError::io(&path)(e)),
        };
        // Blocking: another restore examining the file holds it only for a
        // moment.
        let mut file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| PitrError::io(&path)(std::io::Error::from(e)))?;
        let text = format!(
            "pid {}\nstarted {}\n",
            std::process::id(),
            Utc::now().to_rfc3339()
        );
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(PitrError::io(&path))?;
        Ok(RestoreLock {
            path,
            file: Some(file),
        })
    }

    /// Removes the lock file, then unlocks it: the restore is over.
    pub(crate) fn release(mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %self.path.display(), error = %e, "could not remove the restore's lock file");
            }
        }
        self.file.take();
    }
}

/// Takes over the leftover of an interrupted restore in `pgdata`: locks
/// its lock file (failing as [`examine`] says when it is held, just
/// removed, or fresh), removes everything else the restore wrote, and
/// rewrites the lock file as this restore's.
fn take_over_leftover(pgdata: &Path, path: &Path) -> Result<RestoreLock, PitrError> {
    let not_leftover = || examine(pgdata, path);
    let Ok(file) = OpenOptions::new().read(true).write(true).open(path) else {
        return Err(not_leftover());
    };
    let Ok(mut held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return Err(not_leftover());
    };
    let Facts {
        pid,
        started,
        same,
        fresh,
    } = facts(&mut held, path);
    if !same || (pid.is_none() && fresh) {
        drop(held);
        return Err(not_leftover());
    }
    tracing::warn!(
        pgdata = %pgdata.display(),
        pid = ?pid,
        started = ?started,
        "removing the leftover of an interrupted restore (--clean)"
    );
    // The tablespace directories first: the links that name them go with
    // the data directory. Their contents were written by that restore (it
    // refuses a non-empty tablespace directory); the directories stay.
    let tblspc = pgdata.join("pg_tblspc");
    if let Ok(links) = std::fs::read_dir(&tblspc) {
        for link in links.flatten() {
            if let Ok(target) = std::fs::read_link(link.path()) {
                let target = if target.is_absolute() {
                    target
                } else {
                    tblspc.join(target)
                };
                remove_contents(&target, None)?;
            }
        }
    }
    remove_contents(pgdata, Some(LOCK_FILE))?;
    let text = format!(
        "pid {}\nstarted {}\n",
        std::process::id(),
        Utc::now().to_rfc3339()
    );
    held.set_len(0)
        .and_then(|()| held.write_all_at(text.as_bytes(), 0))
        .and_then(|()| held.sync_all())
        .map_err(PitrError::io(path))?;
    Ok(RestoreLock {
        path: path.to_path_buf(),
        file: Some(held),
    })
}

/// Removes everything inside `dir` (not following symbolic links) but the
/// entry named `keep`; a missing `dir` is empty.
fn remove_contents(dir: &Path, keep: Option<&str>) -> Result<(), PitrError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PitrError::io(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(PitrError::io(dir))?;
        if keep.is_some_and(|k| entry.file_name() == k) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(PitrError::io(&path))?;
        let removed = if kind.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(PitrError::io(&path))?;
    }
    Ok(())
}

/// What a locked lock file says about the restore that made it.
struct Facts {
    /// Its pid, as recorded.
    pid: Option<u32>,
    /// Its start, as recorded.
    started: Option<DateTime<Utc>>,
    /// Whether the locked file is still the one at `path` (not removed and
    /// recreated meanwhile).
    same: bool,
    /// Whether it was written less than [`EMPTY_GRACE`] ago.
    fresh: bool,
}

/// [`Facts`] of the lock file `held`, found at `path`.
fn facts(held: &mut Flock<File>, path: &Path) -> Facts {
    let (pid, started) = read_owner(held);
    let same = match (held.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    let fresh = held
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age < EMPTY_GRACE);
    Facts {
        pid,
        started,
        same,
        fresh,
    }
}

/// `(pid, started)` as the lock file records them.
fn read_owner(file: &mut File) -> (Option<u32>, Option<DateTime<Utc>>) {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
    };
    (
        field("pid ").and_then(|p| p.parse().ok()),
        field("started ")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
    )
}

/// The error for a data directory holding a lock file: held (another
/// restore is writing) or not (an interrupted restore's leftover).
fn examine(pgdata: &Path, path: &Path) -> PitrError {
    let in_progress = |pid: Option<u32>| PitrError::RestoreInProgress {
        dir: pgdata.to_path_buf(),
        pid: pid.unwrap_or(0),
    };
    let file = match File::open(path) {
        Ok(f) => f,
        // Removed meanwhile: the other restore just ended.
        Err(_) => {
            return PitrError::TargetNotEmpty {
                dir: pgdata.to_path_buf(),
                reason: "is not empty (a restore into it just ended); restore into an empty or absent directory"
                    .into(),
            }
        }
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Err((mut file, _)) => in_progress(read_owner(&mut file).0),
        Ok(mut held) => {
            let Facts {
                pid,
                started,
                same,
                fresh,
            } = facts(&mut held, path);
            drop(held);
            if !same {
                PitrError::TargetNotEmpty {
                    dir: pgdata.to_path_buf(),
                    reason: "is not empty (a restore into it just ended); restore into an empty or absent directory"
                        .into(),
                }
            } else if pid.is_none() && fresh {
                // Created an instant ago by a restore not yet holding it.
                in_progress(None)
            } else {
                PitrError::TargetNotEmpty {
                    dir: pgdata.to_path_buf(),
                    reason: format!(
                        "was left by an interrupted dr restore ({}started {}); remove it (and the \
                         tablespace directories its pg_tblspc links point to) and restore again, or \
                         restore again with --clean",
                        pid.map(|p| format!("pid {p}, ")).unwrap_or_default(),
                        started
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| "at an unknown time".into())
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_restore_at_a_time_and_leftovers_are_named() {
        let d = tempfile::tempdir().unwrap();
        let pgdata = d.path().join("a/data");
        let lock = RestoreLock::acquire(&pgdata, false).unwrap();
        match RestoreLock::acquire(&pgdata, false).unwrap_err() {
            PitrError::RestoreInProgress { dir, pid } => {
                assert_eq!(dir, pgdata);
                assert_eq!(pid, std::process::id());
            }
            other => panic!("{other:?}"),
        }
        // The message says who and what.
        let e = RestoreLock::acquire(&pgdata, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("another dr restore (pid") && e.contains(&pgdata.display().to_string()),
            "{e}"
        );
        // Released: the file goes, the directory may be used again.
        lock.release();
        assert!(!pgdata.join(LOCK_FILE).exists());
        RestoreLock::acquire(&pgdata, false).unwrap().release();

        // A leftover: the file stays when its holder died (dropped without
        // release), and the directory is named as an interrupted restore's.
        let lock = RestoreLock::acquire(&pgdata, false).unwrap();
        std::fs::write(pgdata.join("PG_VERSION"), b"15\n").unwrap();
        drop(lock);
        match RestoreLock::acquire(&pgdata, false).unwrap_err() {
            PitrError::TargetNotEmpty { reason, .. } => {
                assert!(reason.contains("interrupted dr restore"), "{reason}");
                assert!(
                    reason.contains(&format!("pid {}", std::process::id())),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        // --clean takes the leftover over: what the interrupted restore
        // wrote goes (the tablespace directory's contents too, the
        // directory stays), the lock file becomes this restore's, and a
        // second cleaner finds it held.
        let ts = d.path().join("ts");
        std::fs::create_dir_all(ts.join("PG_15_202209061")).unwrap();
        std::fs::write(ts.join("PG_15_202209061/x"), b"x").unwrap();
        std::fs::create_dir_all(pgdata.join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink(&ts, pgdata.join("pg_tblspc/16400")).unwrap();
        std::fs::create_dir_all(pgdata.join("base/1")).unwrap();
        std::fs::write(pgdata.join("base/1/1259"), b"page").unwrap();
        let lock = RestoreLock::acquire(&pgdata, true).unwrap();
        let left: Vec<_> = std::fs::read_dir(&pgdata)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec![LOCK_FILE.to_string()]);
        assert!(ts.is_dir());
        assert_eq!(std::fs::read_dir(&ts).unwrap().count(), 0);
        let text = std::fs::read_to_string(pgdata.join(LOCK_FILE)).unwrap();
        assert!(
            text.starts_with(&format!("pid {}\n", std::process::id())),
            "{text}"
        );
        assert!(matches!(
            RestoreLock::acquire(&pgdata, true).unwrap_err(),
            PitrError::RestoreInProgress { .. }
        ));
        lock.release();
        assert_eq!(std::fs::read_dir(&pgdata).unwrap().count(), 0);

        // Not empty, no lock file: the generic refusal, and nothing written,
        // with --clean too.
        let other = d.path().join("b");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("x"), b"x").unwrap();
        match RestoreLock::acquire(&other, true).unwrap_err() {
            PitrError::TargetNotEmpty { reason, .. } => {
                assert!(reason.contains("not empty"), "{reason}")
            }
            e => panic!("{e:?}"),
        }
        assert!(other.join("x").exists());
        match RestoreLock::acquire(&other, false).unwrap_err() {
            PitrError::TargetNotEmpty { reason, .. } => {
                assert!(reason.contains("not empty"), "{reason}")
            }
            e => panic!("{e:?}"),
        }
        assert!(!other.join(LOCK_FILE).exists());
    }
}
