//! Where a unit keeps its non-secret state: the [`StateStore`] trait, the file store of a
//! unit directory and an in-memory store.

use core::fmt;
use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use tke_fs::atomic;

use crate::state::STATE_FILE;

/// Where a unit loads and saves its non-secret state (counter, thresholds, administrator
/// certificates, registers, pending importer: see "Files in a unit directory" in the crate
/// docs), so that the state machine does no I/O of its own.
///
/// The state is one opaque record, the unit's encoding of it (the JSON document of
/// [`STATE_FILE`]): a store keeps it as it likes, and no store needs to be a file per save.
/// A store that journals the records of several units and makes them durable with one
/// fsync (group commit) fits behind this trait: [`StateStore::save`] may wait for the
/// group's fsync, as long as it returns only once this record is durable.
///
/// Implementations: [`FileStore`] (`unit.json` in the unit directory, written atomically)
/// and [`MemoryStore`] (for tests and benchmarks). The record is not secret, but `Debug`
/// need not show it.
pub trait StateStore: Send + fmt::Debug {
    /// How errors name the store: the state file for [`FileStore`].
    fn location(&self) -> &Path;

    /// The record saved last, or `None` when the store holds no unit (never saved, or
    /// removed).
    ///
    /// # Errors
    /// The store's I/O error.
    fn load(&self) -> io::Result<Option<Vec<u8>>>;

    /// Replaces the record. The unit calls it before it answers a command that changed
    /// its state; when it returns `Ok`, the record must survive a crash.
    ///
    /// # Errors
    /// The store's I/O error. The previous record must then still be the one
    /// [`StateStore::load`] returns: the unit keeps its previous state and answers an
    /// internal error.
    fn save(&mut self, record: &[u8]) -> io::Result<()>;

    /// Whether the store carries the audit record of each command with its state
    /// ([`StateStore::save_audited`]). When `false` (the default) the unit appends the
    /// record to its audit log and makes it durable before it calls [`StateStore::save`].
    fn carries_audit(&self) -> bool {
        false
    }

    /// Replaces the record, as [`StateStore::save`] does, and makes `audit` (the DER of
    /// the audit record of the command that produced the state) durable with it, in the
    /// same flush; then writes that record to the unit's audit log ([`crate::AUDIT_FILE`],
    /// one line at its end) before it returns, so that the log reads it. Called only when
    /// [`StateStore::carries_audit`] is `true`.
    ///
    /// # Errors
    /// As [`StateStore::save`]: neither the state nor the audit record was saved. The
    /// default refuses (the store does not carry audit records).
    fn save_audited(&mut self, record: &[u8], audit: &[u8]) -> io::Result<()> {
        let _ = (record, audit);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the state store {} does not carry audit records",
                self.location().display()
            ),
        ))
    }

    /// Removes the record: the store no longer holds a unit ([`crate::Unit::discard`]).
    /// Removing from an empty store succeeds.
    ///
    /// # Errors
    /// The store's I/O error.
    fn remove(&mut self) -> io::Result<()>;
}

/// The state file [`STATE_FILE`] of a unit directory, written atomically (temporary file,
/// fsync, rename, directory fsync) with mode 0600: the format existing unit directories
/// hold.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The store of the unit directory `dir` (which need not exist yet).
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(STATE_FILE),
        }
    }
}

impl StateStore for FileStore {
    fn location(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&mut self, record: &[u8]) -> io::Result<()> {
        atomic::write_private(&self.path, record)
    }

    fn remove(&mut self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }
}

/// A state record in memory, for tests and benchmarks: a unit runs with no file at all.
///
/// Clones share the record (as yubihsm.rs's `MockHsm` shares its state between clones of
/// its connector): keep a clone to reopen the unit after dropping it, or to look at what
/// it saved. Nothing survives the process.
#[derive(Clone, Default)]
pub struct MemoryStore {
    record: Arc<Mutex<Option<Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<Vec<u8>>) -> T) -> T {
        // A panic elsewhere cannot leave a half-written record: each access replaces it
        // whole.
        f(&mut self.record.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.with(|r| r.as_ref().map(Vec::len));
        f.debug_struct("MemoryStore")
            .field("record_bytes", &len)
            .finish()
    }
}

impl StateStore for MemoryStore {
    fn location(&self) -> &Path {
        Path::new("(memory store)")
    }

    fn load(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.with(|r| r.clone()))
    }

    fn save(&mut self, record: &[u8]) -> io::Result<()> {
        self.with(|r| *r = Some(record.to_vec()));
        Ok(())
    }

    fn remove(&mut self) -> io::Result<()> {
        self.with(|r| *r = None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_and_removes() {
        let d = tempfile::tempdir().unwrap();
        let mut s = FileStore::new(d.path());
        assert_eq!(s.location(), d.path().join(STATE_FILE));
        assert_eq!(s.load().unwrap(), None);
        s.save(b"one").unwrap();
        s.save(b"two").unwrap();
        assert_eq!(fs::read(d.path().join(STATE_FILE)).unwrap(), b"two");
        assert_eq!(
            FileStore::new(d.path()).load().unwrap().as_deref(),
            Some(&b"two"[..])
        );
        s.remove().unwrap();
        assert_eq!(s.load().unwrap(), None);
        s.remove().unwrap();
    }

    #[test]
    fn memory_store_clones_share_the_record() {
        let mut s = MemoryStore::new();
        let other = s.clone();
        assert_eq!(other.load().unwrap(), None);
        s.save(b"state").unwrap();
        assert_eq!(other.load().unwrap().as_deref(), Some(&b"state"[..]));
        assert_eq!(
            format!("{other:?}"),
            "MemoryStore { record_bytes: Some(5) }"
        );
        s.remove().unwrap();
        assert_eq!(other.load().unwrap(), None);
    }
}
