#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod sqlite;
mod types;

use std::{num::NonZeroUsize, path::Path};

use tke_proto::Vp;

pub use error::{KeyDataError, RewrapError, StoreError};
pub use sqlite::SqliteKeyStore;
pub use types::{Created, KeyId, KeyName, Record, WrappedKey};

/// Where a listing continues: after the record it was taken from, in the listing order
/// (creation time, then id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    created: Created,
    id: KeyId,
}

impl ListCursor {
    /// The cursor that continues a listing after `record`.
    pub fn after(record: &Record) -> Self {
        Self {
            created: record.created,
            id: record.id,
        }
    }
}

/// Rewraps one key: takes its id and its material wrapped under the master key of the
/// batch's `from` VP, returns it wrapped under the master key of the `to` VP.
pub type RewrapFn<'a> = dyn FnMut(&KeyId, &WrappedKey) -> Result<WrappedKey, RewrapError> + 'a;

/// The key storage of one service instance.
///
/// Every record is tagged with the VP of the master key that wraps it, and each change
/// is one transaction: after a crash, every record is still tagged with the VP of the
/// key that wraps it. SQLite ([`SqliteKeyStore`]) is the embedded implementation; a
/// shared database can implement the same trait.
pub trait KeyStore {
    /// Where the store lives (its file), for messages.
    fn location(&self) -> &Path;

    /// Stores a new record.
    ///
    /// # Errors
    /// [`StoreError::DuplicateId`] when its id is taken; [`StoreError::Database`].
    fn insert(&mut self, record: &Record) -> Result<(), StoreError>;

    /// Stores new records in one transaction: all of them or, on error, none.
    ///
    /// # Errors
    /// [`StoreError::DuplicateId`] for the first id already taken (or given twice);
    /// [`StoreError::Database`].
    fn insert_all(&mut self, records: &[Record]) -> Result<(), StoreError>;

    /// The record with this id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Malformed`]; [`StoreError::Database`].
    fn get(&self, id: &KeyId) -> Result<Record, StoreError>;

    /// Up to `limit` records in creation order (ties by id), starting after `after`
    /// when given. An empty page means the end.
    ///
    /// # Errors
    /// [`StoreError::Malformed`]; [`StoreError::Database`].
    fn list(
        &self,
        after: Option<&ListCursor>,
        limit: NonZeroUsize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Deletes the record with this id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Database`].
    fn delete(&mut self, id: &KeyId) -> Result<(), StoreError>;

    /// How many records the store holds.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    fn count(&self) -> Result<u64, StoreError>;

    /// How many records are wrapped under the master key with this VP.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    fn count_by_vp(&self, vp: &Vp) -> Result<u64, StoreError>;

    /// Each VP that tags at least one record, with its count, in VP order.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    fn vp_counts(&self) -> Result<Vec<(Vp, u64)>, StoreError>;

    /// The rotation step: takes up to `limit` records tagged `from`, rewraps each with
    /// `rewrap`, and stores them tagged `to`, all in one transaction. If `rewrap` fails
    /// for any record, nothing of the batch changes. Returns how many records moved; 0
    /// means none is left under `from`.
    ///
    /// # Errors
    /// [`StoreError::SameVp`] when `from` is `to`; [`StoreError::Rewrap`] naming the key
    /// whose rewrap failed; [`StoreError::Malformed`]; [`StoreError::Database`].
    fn rewrap_batch(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut RewrapFn<'_>,
    ) -> Result<usize, StoreError>;

    /// Makes every committed change durable (survives a power loss). Call it before
    /// acting on what the store says, e.g. before discarding an old master key.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    fn sync(&mut self) -> Result<(), StoreError>;
}
