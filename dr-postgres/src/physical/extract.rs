//! Tar extraction for a restore: one thread parses the archive, a pool of
//! writer threads writes the files.
//!
//! A base backup's data is a few large relation files (up to 1 GiB segments)
//! and many small ones. `tar`'s own `unpack_in` writes each file from the
//! parsing thread in 8 KiB `write(2)` calls, so the writes and the parsing
//! are serial and the restore is bound by one core's system time. Here the
//! parsing thread reads each regular file's data in 1 MiB pieces and hands
//! them to the writers, which place them with positioned writes
//! (`pwrite(2)`): pieces of one file are written in parallel, and the file's
//! modification time is set by whichever writer finishes its last piece.
//! Each written piece is handed to the kernel's writeback at once
//! ([`start_writeback`]), so the disk is busy during the restore rather than
//! after it.
//!
//! Paths are checked before anything is written: an entry must name a path
//! below the target directory (`..`, absolute paths and parents that are
//! symbolic links are errors, not skipped entries), and a regular file is
//! created only if it does not exist yet. Directories are made here, their
//! modes applied at the end (deepest first), so a read-only directory cannot
//! block its own files; symbolic links, hard links and other entry types go
//! through `tar`'s own `unpack_in`.
//! Memory is bounded: [`PIECES_IN_FLIGHT`] pieces of [`PIECE`] bytes.

use std::collections::HashSet;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Size of one piece of file data handed to a writer, in bytes.
pub(crate) const PIECE: usize = 1 << 20;
/// Pieces allocated (and so at most in flight) per extraction.
pub(crate) const PIECES_IN_FLIGHT: usize = 8;

/// A regular file being written.
struct Target {
    file: File,
    path: PathBuf,
    /// Pieces not yet written, plus one that the parsing thread holds until
    /// it has handed out all of them.
    pending: AtomicUsize,
    mtime: Option<SystemTime>,
}

impl Target {
    /// Marks one piece (or the parser's hold) done; the last one sets the
    /// modification time, after every write.
    fn done(&self) -> io::Result<()> {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(t) = self.mtime {
                self.file
                    .set_modified(t)
                    .map_err(|e| at(&self.path, "setting the modification time of", e))?;
            }
        }
        Ok(())
    }
}

/// Asks the kernel to start writing a range just written back to disk, so
/// that the device works while the restore goes on and the final `syncfs`
/// waits only for the tail. `POSIX_FADV_DONTNEED` starts writeback of dirty
/// pages (and drops only pages already clean); PostgreSQL's `pg_flush_data`
/// uses it where `sync_file_range` is not available (src/backend/storage/
/// file/fd.c). A hint: failure changes nothing but the timing.
fn start_writeback(file: &File, offset: u64, len: usize) {
    let _ = nix::fcntl::posix_fadvise(
        file,
        offset as i64,
        len as i64,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

struct Piece {
    target: Arc<Target>,
    offset: u64,
    len: usize,
    buf: Vec<u8>,
}

/// An I/O error with the path and the operation it failed in, keeping the
/// original as its source.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
struct AtPath {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn at(path: &Path, what: &'static str, source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        AtPath {
            what,
            path: path.to_path_buf(),
            source,
        },
    )
}

/// Extracts the tar archive read from `input` into the existing directory
/// `dest` with `writers` writer threads (at least one), leaving out the
/// entries whose path `skip` selects.
///
/// # Errors
/// The first error of the parse (the reader's own errors unchanged, so a
/// codec's verdict inside stays findable), of an entry's path
/// ([`io::ErrorKind::InvalidData`] naming it), or of a write (naming the
/// file). What was written stays; the caller removes it.
pub(crate) fn extract<R: Read>(
    input: R,
    dest: &Path,
    writers: usize,
    skip: impl Fn(&Path) -> bool,
    cancelled: impl Fn() -> bool,
) -> io::Result<()> {
    let (work_tx, work_rx) = sync_channel::<Piece>(PIECES_IN_FLIGHT);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(PIECES_IN_FLIGHT);
    for _ in 0..PIECES_IN_FLIGHT {
        free_tx
            .send(vec![0u8; PIECE])
            .expect("the channel holds every piece");
    }
    // std's receiver has one owner: the writers take turns through a mutex.
    let work_rx = Mutex::new(work_rx);
    let failed: Mutex<Option<io::Error>> = Mutex::new(None);
    let parsed = std::thread::scope(|s| {
        for _ in 0..writers.max(1) {
            let free_tx = free_tx.clone();
            let (work_rx, failed) = (&work_rx, &failed);
            s.spawn(move || write_pieces(work_rx, &free_tx, failed));
        }
        drop(free_tx);
        let parsed = parse(input, dest, &skip, &cancelled, &work_tx, &free_rx, &failed);
        drop(work_tx);
        parsed
    });
    let written = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    match (parsed, written) {
        // The parse's own error (a codec's verdict on the input) first.
        (Err(e), _) if !is_stopped(&e) => Err(e),
        (_, Some(e)) => Err(e),
        (parsed, None) => parsed,
    }
}

/// The parse stopped early: a writer failed or the caller cancelled.
#[derive(Debug, thiserror::Error)]
#[error("the extraction was stopped")]
struct Stopped;

fn is_stopped(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
}

/// A writer thread: writes pieces until the parser hangs up. After the first
/// failure (of any writer) it only returns the buffers.
fn write_pieces(
    work: &Mutex<Receiver<Piece>>,
    free: &std::sync::mpsc::SyncSender<Vec<u8>>,
    failed: &Mutex<Option<io::Error>>,
) {
    loop {
        let piece = match work.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(p) => p,
            Err(_) => return,
        };
        let already = failed.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if !already {
            let written = piece
                .target
                .file
                .write_all_at(&piece.buf[..piece.len], piece.offset)
                .map_err(|e| at(&piece.target.path, "writing", e))
                .map(|()| start_writeback(&piece.target.file, piece.offset, piece.len))
                .and_then(|()| piece.target.done());
            if let Err(e) = written {
                failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        }
        // The parser may have stopped waiting; a closed channel is fine.
        let _ = free.send(piece.buf);
    }
}

fn parse<R: Read>(
    input: R,
    dest: &Path,
    skip: &dyn Fn(&Path) -> bool,
    cancelled: &dyn Fn() -> bool,
    work: &std::sync::mpsc::SyncSender<Piece>,
    free: &Receiver<Vec<u8>>,
    failed: &Mutex<Option<io::Error>>,
) -> io::Result<()> {
    // Stop early when a writer failed (its error is the one reported) or
    // the caller cancelled.
    let stop = || cancelled() || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    let stopped = || io::Error::new(io::ErrorKind::Interrupted, Stopped);
    let mut dirs = Dirs::new(dest);
    let mut modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(false);
    for entry in archive.entries()? {
        if stop() {
            return Err(stopped());
        }
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if skip(&path) {
            continue;
        }
        let Some(rel) = relative(&path)? else {
            continue; // "./": the target directory itself
        };
        let header = entry.header();
        let mode = header.mode().ok().map(|m| m & 0o7777);
        match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = rel.parent() {
                    dirs.ensure(parent)?;
                }
                let full = dest.join(&rel);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&full)
                    .map_err(|e| at(&full, "creating", e))?;
                if let Some(m) = mode {
                    file.set_permissions(Permissions::from_mode(m))
                        .map_err(|e| at(&full, "setting the mode of", e))?;
                }
                let size = entry.size();
                let pieces = usize::try_from(size.div_ceil(PIECE as u64))
                    .map_err(|_| invalid(&path, "is too large for this platform"))?;
                let target = Arc::new(Target {
                    file,
                    path: full,
                    pending: AtomicUsize::new(pieces + 1),
                    mtime: header
                        .mtime()
                        .ok()
                        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
                });
                let mut offset = 0u64;
                while offset < size {
                    if stop() {
                        return Err(stopped());
                    }
                    let len = (size - offset).min(PIECE as u64) as usize;
                    let mut buf = free
                        .recv()
                        .map_err(|_| io::Error::other("the file writers stopped"))?;
                    entry.read_exact(&mut buf[..len])?;
                    work.send(Piece {
                        target: Arc::clone(&target),
                        offset,
                        len,
                        buf,
                    })
                    .map_err(|_| io::Error::other("the file writers stopped"))?;
                    offset += len as u64;
                }
                target.done()?;
            }
            tar::EntryType::Directory => {
                dirs.ensure(&rel)?;
                if let Some(m) = mode {
                    modes.push((dest.join(&rel), m));
                }
            }
            _ => {
                if let Some(parent) = rel.parent() {
                    dirs.ensure(parent)?;
                }
                entry.unpack_in(dest)?;
            }
        }
    }
    // Deepest first, so that a directory its owner may not search does not
    // stop the mode of one below it from being set; by depth, not by the
    // archive's order, where a directory's entry may follow its contents.
    modes.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
    for (dir, mode) in &modes {
        std::fs::set_permissions(dir, Permissions::from_mode(*mode))
            .map_err(|e| at(dir, "setting the mode of", e))?;
    }
    Ok(())
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("archive entry {}: {what}", path.display()),
    )
}

/// The entry's path relative to the target directory, `None` for the
/// directory itself.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] for a path that is absolute or contains
/// `..`: a base backup never holds one.
fn relative(path: &Path) -> io::Result<Option<PathBuf>> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => rel.push(p),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(path, "leaves the target directory"))
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// The directories below the target known to be real directories (not
/// symbolic links), made as needed.
struct Dirs<'a> {
    root: &'a Path,
    known: HashSet<PathBuf>,
}

impl<'a> Dirs<'a> {
    fn new(root: &'a Path) -> Self {
        Dirs {
            root,
            known: HashSet::new(),
        }
    }

    /// Makes sure `rel` (relative to the root) is a directory, creating it
    /// (mode 0700) and its parents as needed.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] when `rel` or a parent exists as
    /// something else, a symbolic link included: nothing is written through
    /// a link.
    fn ensure(&mut self, rel: &Path) -> io::Result<()> {
        if rel.as_os_str().is_empty() || self.known.contains(rel) {
            return Ok(());
        }
        if let Some(parent) = rel.parent() {
            self.ensure(parent)?;
        }
        let full = self.root.join(rel);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(invalid(
                    rel,
                    "is a directory in the archive but exists as something else",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .mode(0o700)
                .create(&full)
                .map_err(|e| at(&full, "creating", e))?,
            Err(e) => return Err(at(&full, "checking", e)),
        }
        self.known.insert(rel.to_path_buf());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32, mtime: u64) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Directory);
        b.append_data(&mut h, path, &[][..]).unwrap();
    }

    /// Deterministic bytes that differ at every offset of a piece, so a
    /// piece written at the wrong offset shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 65536) as u8)
            .collect()
    }

    #[test]
    fn files_of_every_size_arrive_whole_with_mode_and_mtime() {
        let sizes = [0, 1, PIECE - 1, PIECE, PIECE + 1, 5 * PIECE + 12345];
        let tar = archive(|b| {
            dir(b, "base", 0o700);
            dir(b, "base/1", 0o700);
            for (i, n) in sizes.iter().enumerate() {
                file(
                    b,
                    &format!("base/1/{i}"),
                    &pattern(*n),
                    0o640,
                    1_700_000_000 + i as u64,
                );
            }
            // A file whose parent directory has no entry of its own.
            file(b, "pg_wal/archive_status/x", b"y", 0o600, 1_700_000_000);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, "pg_tblspc/16384", "/elsewhere")
                .unwrap();
        });
        let dest = tempfile::tempdir().unwrap();
        extract(&tar[..], dest.path(), 2, |_| false, || false).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            let p = dest.path().join(format!("base/1/{i}"));
            assert_eq!(
                std::fs::read(&p).unwrap(),
                pattern(*n),
                "file {i} of {n} bytes"
            );
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o640);
            assert_eq!(m.mtime(), 1_700_000_000 + i as i64, "mtime of file {i}");
        }
        assert_eq!(
            std::fs::read(dest.path().join("pg_wal/archive_status/x")).unwrap(),
            b"y"
        );
        assert_eq!(
            std::fs::read_link(dest.path().join("pg_tblspc/16384")).unwrap(),
            Path::new("/elsewhere")
        );
    }

    #[test]
    fn skipped_entries_are_left_out() {
        let tar = archive(|b| {
            file(b, "tablespace_map", b"16384 /x\n", 0o600, 0);
            file(b, "PG_VERSION", b"15\n", 0o600, 0);
        });
        let dest = tempfile::tempdir().unwrap();
        extract(
            &tar[..],
            dest.path(),
            1,
            |p| p == Path::new("tablespace_map"),
            || false,
        )
        .unwrap();
        assert!(!dest.path().join("tablespace_map").exists());
        assert!(dest.path().join("PG_VERSION").exists());
    }

    #[test]
    fn a_path_leaving_the_target_is_refused() {
        // tar::Builder refuses such names itself: write the header raw.
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_size(1);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[b'x'; 512]);
        tar.extend_from_slice(&[0; 1024]);
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("d");
        std::fs::create_dir(&dest).unwrap();
        let err = extract(&tar[..], &dest, 2, |_| false, || false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("../escape"), "{err}");
        assert!(!outer.path().join("escape").exists());
    }

    #[test]
    fn nothing_is_written_through_a_symbolic_link() {
        let outside = tempfile::tempdir().unwrap();
        let tar = archive(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, "pg_wal", outside.path()).unwrap();
            file(b, "pg_wal/000000010000000000000001", b"wal", 0o600, 0);
        });
        let dest = tempfile::tempdir().unwrap();
        let err = extract(&tar[..], dest.path(), 2, |_| false, || false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let tar = archive(|b| file(b, "PG_VERSION", b"15\n", 0o600, 0));
        let dest = tempfile::tempdir().unwrap();
        std::fs::write(dest.path().join("PG_VERSION"), b"keep").unwrap();
        let err = extract(&tar[..], dest.path(), 2, |_| false, || false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(
            std::fs::read(dest.path().join("PG_VERSION")).unwrap(),
            b"keep"
        );
    }

    #[test]
    fn long_names_hard_links_and_late_directory_entries() {
        let long_dir = "d".repeat(120);
        let long_file = format!("{long_dir}/{}", "f".repeat(150));
        let pax_name = format!("pax/{}", "p".repeat(200));
        let tar = archive(|b| {
            // GNU long name entries (the builder writes them for long paths).
            file(b, &long_file, &pattern(PIECE), 0o600, 1_700_000_001);
            // A pax extended header naming the next entry.
            b.append_pax_extensions([("path", pax_name.as_bytes())])
                .unwrap();
            file(b, "pax/short", b"pax data", 0o600, 1_700_000_002);
            // Files first, their directory's entry (and mode) after them.
            file(b, "late/a", b"a", 0o600, 1_700_000_003);
            file(b, "./late/b", b"", 0o600, 1_700_000_004);
            dir(b, "late", 0o750);
            // A hard link to a file written just before.
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            h.set_mode(0o600);
            b.append_link(&mut h, "late/hard", "late/a").unwrap();
        });
        let dest = tempfile::tempdir().unwrap();
        extract(&tar[..], dest.path(), 2, |_| false, || false).unwrap();
        let long = dest.path().join(&long_file);
        assert_eq!(std::fs::read(&long).unwrap(), pattern(PIECE));
        assert_eq!(std::fs::metadata(&long).unwrap().mtime(), 1_700_000_001);
        assert_eq!(
            std::fs::read(dest.path().join(&pax_name)).unwrap(),
            b"pax data"
        );
        assert!(!dest.path().join("pax/short").exists());
        let late = std::fs::metadata(dest.path().join("late")).unwrap();
        assert_eq!(late.mode() & 0o7777, 0o750);
        assert_eq!(std::fs::read(dest.path().join("late/a")).unwrap(), b"a");
        let b_meta = std::fs::metadata(dest.path().join("late/b")).unwrap();
        assert_eq!((b_meta.len(), b_meta.mtime()), (0, 1_700_000_004));
        let hard = std::fs::metadata(dest.path().join("late/hard")).unwrap();
        assert_eq!(hard.nlink(), 2);
        assert_eq!(std::fs::read(dest.path().join("late/hard")).unwrap(), b"a");
    }

    /// Directory modes go deepest first whatever the archive's order: a
    /// parent whose entry comes after its subdirectory's and that its owner
    /// may not search (as a user other than root) must not stop the
    /// subdirectory's mode from being set.
    #[test]
    fn directory_modes_are_set_deepest_first_in_any_entry_order() {
        let tar = archive(|b| {
            dir(b, "a/b", 0o750);
            file(b, "a/b/f", b"f", 0o600, 0);
            dir(b, "a", 0o600);
        });
        let dest = tempfile::tempdir().unwrap();
        let extracted = extract(&tar[..], dest.path(), 2, |_| false, || false);
        let a = dest.path().join("a");
        let a_mode = std::fs::metadata(&a).unwrap().mode() & 0o7777;
        // Searchable again, so that the check below and the clean-up work.
        std::fs::set_permissions(&a, Permissions::from_mode(0o700)).unwrap();
        extracted.unwrap();
        assert_eq!(a_mode, 0o600);
        let b_mode = std::fs::metadata(a.join("b")).unwrap().mode() & 0o7777;
        assert_eq!(b_mode, 0o750);
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let tar = archive(|b| file(b, "big", &pattern(3 * PIECE), 0o600, 0));
        let dest = tempfile::tempdir().unwrap();
        let err = extract(&tar[..2 * PIECE], dest.path(), 2, |_| false, || false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn a_cancelled_extraction_stops_between_pieces() {
        let tar = archive(|b| {
            file(b, "small", b"x", 0o600, 0);
            file(b, "big", &pattern(20 * PIECE), 0o600, 0);
        });
        let dest = tempfile::tempdir().unwrap();
        let pieces = std::sync::atomic::AtomicUsize::new(0);
        let err = extract(
            &tar[..],
            dest.path(),
            2,
            |_| false,
            || pieces.fetch_add(1, Ordering::SeqCst) > 3,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted, "{err}");
        assert!(is_stopped(&err));
        let big = std::fs::metadata(dest.path().join("big")).unwrap().len();
        assert!(big < 20 * PIECE as u64, "{big} bytes written");
    }
}
