//! A SQLite key store whose file is made by the first write: reading a store that does
//! not exist yet (the zeroize guard asking whether keys would be lost, `tke kms list` on a
//! fresh instance) answers "empty" and leaves the disk as it was.

use std::{
    num::NonZeroUsize,
    path::{Path, PathBuf},
};

use tke_proto::Vp;

use crate::{
    BatchCursor, BatchRewrapFn, KeyId, KeyStore, ListCursor, ReadBatch, Record, RewrapFn,
    RotationMarker, SqliteKeyStore, StoreError, WrappedKey,
};

/// [`SqliteKeyStore`] at `path`, opened if the file exists and created (0600) by the first
/// write otherwise (with its directory, 0700, if missing). Until then every read answers
/// as an empty store does.
#[derive(Debug)]
pub struct LazySqliteKeyStore {
    path: PathBuf,
    store: Option<SqliteKeyStore>,
}

impl LazySqliteKeyStore {
    /// The store at `path`: opened now if the file exists (with every check of
    /// [`SqliteKeyStore::open`]), else made at the first write.
    ///
    /// # Errors
    /// The errors of [`SqliteKeyStore::open`] for an existing file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = if path.exists() {
            Some(SqliteKeyStore::open(path)?)
        } else {
            None
        };
        Ok(Self {
            path: path.to_owned(),
            store,
        })
    }

    /// Whether the file exists (was there at open, or was made by a write).
    pub fn exists(&self) -> bool {
        self.store.is_some()
    }

    fn write(&mut self) -> Result<&mut SqliteKeyStore, StoreError> {
        let store = match self.store.take() {
            Some(s) => s,
            None => {
                if let Some(dir) = self.path.parent() {
                    tke_fs::create_private_dir(dir).map_err(|source| StoreError::Create {
                        path: self.path.clone(),
                        source,
                    })?;
                }
                SqliteKeyStore::create(&self.path)?
            }
        };
        Ok(self.store.insert(store))
    }
}

impl KeyStore for LazySqliteKeyStore {
    fn location(&self) -> &Path {
        &self.path
    }

    fn insert(&mut self, record: &Record) -> Result<(), StoreError> {
        self.write()?.insert(record)
    }

    fn insert_all(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.write()?.insert_all(records)
    }

    fn get(&self, id: &KeyId) -> Result<Record, StoreError> {
        match &self.store {
            Some(s) => s.get(id),
            None => Err(StoreError::NotFound {
                store: self.path.clone(),
                id: *id,
            }),
        }
    }

    fn list(
        &self,
        after: Option<&ListCursor>,
        limit: NonZeroUsize,
    ) -> Result<Vec<Record>, StoreError> {
        match &self.store {
            Some(s) => s.list(after, limit),
            None => Ok(Vec::new()),
        }
    }

    fn delete(&mut self, id: &KeyId) -> Result<(), StoreError> {
        match &mut self.store {
            Some(s) => s.delete(id),
            None => Err(StoreError::NotFound {
                store: self.path.clone(),
                id: *id,
            }),
        }
    }

    fn count(&self) -> Result<u64, StoreError> {
        self.store.as_ref().map_or(Ok(0), SqliteKeyStore::count)
    }

    fn count_by_vp(&self, vp: &Vp) -> Result<u64, StoreError> {
        self.store.as_ref().map_or(Ok(0), |s| s.count_by_vp(vp))
    }

    fn vp_counts(&self) -> Result<Vec<(Vp, u64)>, StoreError> {
        self.store
            .as_ref()
            .map_or(Ok(Vec::new()), SqliteKeyStore::vp_counts)
    }

    fn rewrap_batch(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut RewrapFn<'_>,
    ) -> Result<usize, StoreError> {
        match &mut self.store {
            Some(s) => s.rewrap_batch(from, to, limit, rewrap),
            None if from == to => Err(StoreError::SameVp {
                store: self.path.clone(),
                vp: *from,
            }),
            None => Ok(0),
        }
    }

    fn rewrap_batch_whole(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut BatchRewrapFn<'_>,
    ) -> Result<usize, StoreError> {
        match &mut self.store {
            Some(s) => s.rewrap_batch_whole(from, to, limit, rewrap),
            None if from == to => Err(StoreError::SameVp {
                store: self.path.clone(),
                vp: *from,
            }),
            None => Ok(0),
        }
    }

    fn read_batch(
        &self,
        from: &Vp,
        after: Option<BatchCursor>,
        limit: NonZeroUsize,
    ) -> Result<ReadBatch, StoreError> {
        self.store.as_ref().map_or(Ok(ReadBatch::default()), |s| {
            s.read_batch(from, after, limit)
        })
    }

    fn commit_batch(
        &mut self,
        from: &Vp,
        to: &Vp,
        batch: &ReadBatch,
        new: &[WrappedKey],
    ) -> Result<usize, StoreError> {
        match &mut self.store {
            Some(s) => s.commit_batch(from, to, batch, new),
            None if from == to => Err(StoreError::SameVp {
                store: self.path.clone(),
                vp: *from,
            }),
            None => Ok(0),
        }
    }

    fn rotation(&self) -> Result<Option<RotationMarker>, StoreError> {
        self.store
            .as_ref()
            .map_or(Ok(None), SqliteKeyStore::rotation)
    }

    fn begin_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError> {
        // The marker must be durable: a rotation makes the file.
        self.write()?.begin_rotation(marker)
    }

    fn finish_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError> {
        match &mut self.store {
            Some(s) => s.finish_rotation(marker),
            None => Err(StoreError::NotThisRotation {
                store: self.path.clone(),
                in_progress: None,
            }),
        }
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        match &mut self.store {
            Some(s) => s.sync(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_leave_the_disk_alone_and_the_first_write_makes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("k.keys");
        let mut s = LazySqliteKeyStore::open(&path).unwrap();
        assert_eq!(s.count().unwrap(), 0);
        assert!(s.vp_counts().unwrap().is_empty());
        assert!(s.rotation().unwrap().is_none());
        let one = NonZeroUsize::MIN;
        assert!(s.list(None, one).unwrap().is_empty());
        assert!(matches!(
            s.get(&KeyId::random()),
            Err(StoreError::NotFound { .. })
        ));
        s.sync().unwrap();
        assert!(!path.exists() && !s.exists());
        let vp = tke_proto::MasterKey::random().vp();
        let r = Record::new(
            crate::KeyName::new("a").unwrap(),
            crate::WrappedKey::new(vec![7; 40]).unwrap(),
            vp,
        );
        s.insert(&r).unwrap();
        assert!(path.exists() && s.exists());
        assert_eq!(LazySqliteKeyStore::open(&path).unwrap().count().unwrap(), 1);
    }
}
