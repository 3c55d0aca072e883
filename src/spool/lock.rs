//! The exclusive lock on a spool directory: one process at a time uses it, whether the
//! instance that owns it or an adopter draining it (`adopt.rs`).
//!
//! # The `LOCK` file
//!
//! Every spool directory has a `LOCK` file held with `flock(2)` (`LOCK_EX | LOCK_NB`,
//! through `std::fs::File::try_lock`) for as long as the spool is open. The kernel drops
//! the lock when the process dies, however it dies, so a free lock means nobody is
//! using the directory. The owner writes its pid into the file for operators
//! (`cat LOCK`), which also refreshes the mtime adopters check; nothing reads it.
//!
//! A lock alone is not enough: an adopter renames a directory while holding its lock,
//! so whoever takes a lock then checks the lock file is still the one at the path it
//! opened. If it is not, the directory it locked is no longer the one it wanted.
//!
//! - The owner ([`lock_own_dir`]) creates the directory and the file if needed, waits
//!   up to `lock_wait` for the lock and, if an adopter renamed the directory meanwhile,
//!   starts over with a fresh directory.
//! - An adopter ([`try_lock_dir`]) never creates a `LOCK` (a directory without one is
//!   not a spool, or is being removed) and never waits: a held lock means its owner is
//!   alive.
//!
//! A [`DirLock`] releases the lock when dropped; the spool keeps it for as long as
//! anything can touch the directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::SpoolError;

/// Name of the lock file inside a spool directory.
pub const LOCK_FILE: &str = "LOCK";
/// How often a blocked owner retries its lock.
const LOCK_POLL: Duration = Duration::from_millis(25);

/// An exclusive `flock` on a spool directory's `LOCK` file; released on drop.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the lock of our own spool directory `dir`, creating it if needed.
pub(crate) fn lock_own_dir(dir: &Path, wait: Duration) -> Result<DirLock, SpoolError> {
    let deadline = Instant::now() + wait;
    let lock_path = dir.join(LOCK_FILE);
    let io_err = |path: &Path, source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    };
    loop {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        if try_lock(&file).map_err(|e| io_err(&lock_path, e))? {
            if still_at(&file, &lock_path) {
                // For operators (`cat LOCK`); also refreshes the mtime adopters check.
                let pid = format!("{}\n", std::process::id());
                let _ = file
                    .set_len(0)
                    .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
                return Ok(DirLock { _file: file });
            }
            // An adopter renamed the directory between our open and our lock.
            continue;
        }
        if Instant::now() >= deadline {
            return Err(SpoolError::Locked {
                path: dir.to_path_buf(),
            });
        }
        std::thread::sleep(LOCK_POLL);
    }
}

/// Takes the lock of another spool directory `dir` if it is free now; `None` when
/// someone holds it, when it has no `LOCK` file, or when it was renamed meanwhile.
pub(crate) fn try_lock_dir(dir: &Path) -> io::Result<Option<DirLock>> {
    let lock_path = dir.join(LOCK_FILE);
    // Never create a LOCK: a directory without one is not a spool (or is being removed).
    let file = match OpenOptions::new().read(true).write(true).open(&lock_path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !try_lock(&file)? || !still_at(&file, &lock_path) {
        return Ok(None);
    }
    Ok(Some(DirLock { _file: file }))
}

/// `try_lock` (`flock(LOCK_EX | LOCK_NB)`): `Ok(false)` when someone else holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(err)) => Err(err),
    }
}

/// Whether `file` is still the file at `path` (not renamed away or replaced).
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
