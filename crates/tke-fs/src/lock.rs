//! Directory locks: one process at a time works in a directory (an embedded fleet, the
//! units a `tke-unitd` serves).
//!
//! The lock is an advisory `flock` on `<dir>/.lock`, held by an open file: the kernel
//! drops it when the process ends, however it ends, so a crash never leaves a stale lock
//! behind (a lock *file* that merely exists would).

use std::{
    fs::{File, TryLockError},
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::atomic::create_private_dir;

/// The name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = ".lock";

/// How often [`DirLock::acquire`] tries again while another process holds the lock.
const RETRY: Duration = Duration::from_millis(50);

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock (for longer than the wait allowed).
    #[error("{} is in use by another process (it holds {})", dir.display(), lock.display())]
    Busy {
        /// The directory.
        dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The directory or its lock file could not be created or locked.
    #[error("cannot lock {}", lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// An exclusive lock on a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` (created with mode 0700 when missing), or fails at once with
    /// [`LockError::Busy`] when another process holds it.
    ///
    /// # Errors
    /// [`LockError::Busy`], or [`LockError::Io`] when the directory or lock file cannot be
    /// created or locked.
    pub fn try_acquire(dir: &Path) -> Result<Self, LockError> {
        Self::acquire(dir, Duration::ZERO)
    }

    /// Locks `dir` (created with mode 0700 when missing), waiting up to `wait` for another
    /// process to release it.
    ///
    /// # Errors
    /// [`LockError::Busy`] when the lock is still held after `wait`; [`LockError::Io`] when
    /// the directory or lock file cannot be created or locked.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            lock: path.clone(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file, path }),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(RETRY);
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Busy {
                        dir: dir.to_path_buf(),
                        lock: path,
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_busy_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("fleet");
        let first = DirLock::try_acquire(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(first.path(), dir.join(LOCK_FILE));
        // flock is per open file description: a second open in the same process conflicts
        // exactly as another process would.
        match DirLock::try_acquire(&dir) {
            Err(LockError::Busy { dir: d2, lock }) => {
                assert_eq!(d2, dir);
                assert_eq!(lock, dir.join(LOCK_FILE));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        DirLock::try_acquire(&dir).unwrap();
    }

    #[test]
    fn acquire_waits_for_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let first = DirLock::try_acquire(&dir).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            drop(first);
        });
        DirLock::acquire(&dir, Duration::from_secs(30)).unwrap();
        releaser.join().unwrap();
    }

    #[test]
    fn an_unusable_directory_is_an_io_error_naming_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        match DirLock::try_acquire(&file) {
            Err(LockError::Io { lock, .. }) => assert_eq!(lock, file.join(LOCK_FILE)),
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
