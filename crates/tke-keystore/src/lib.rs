#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;
mod lazy;
mod sqlite;
mod types;

use std::{num::NonZeroUsize, path::Path};

use tke_proto::Vp;

pub use error::{KeyDataError, RewrapError, StoreError};
pub use lazy::LazySqliteKeyStore;
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

/// Rewraps a whole batch in one go (one call to a unit): takes the batch's values
/// wrapped under the master key of the `from` VP and returns them wrapped under the one
/// of the `to` VP, as many and in the same order.
pub type BatchRewrapFn<'a> = dyn FnMut(&[WrappedKey]) -> Result<Vec<WrappedKey>, RewrapError> + 'a;

/// Where a pipelined re-encryption reads on ([`KeyStore::read_batch`]): after the last
/// record of the batch it came from, in the store's own order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchCursor(i64);

impl BatchCursor {
    /// The cursor after the record at `position` (a store's own row position).
    pub fn after(position: i64) -> Self {
        Self(position)
    }

    /// The position it continues after.
    pub fn position(self) -> i64 {
        self.0
    }
}

/// Records read for re-encryption and not changed yet ([`KeyStore::read_batch`]): each
/// one's position in the store, id and wrapped value. Once a unit has rewrapped the
/// values, [`KeyStore::commit_batch`] stores them.
#[derive(Debug, Default)]
pub struct ReadBatch {
    positions: Vec<i64>,
    ids: Vec<KeyId>,
    wrapped: Vec<WrappedKey>,
}

impl ReadBatch {
    /// A batch from its records' positions (ascending, in the store's own numbering),
    /// ids and wrapped values, all of the same length: for [`KeyStore`] implementations.
    ///
    /// # Errors
    /// [`StoreError::RewrapCount`] (naming `store`) when the lengths differ.
    pub fn new(
        store: &Path,
        positions: Vec<i64>,
        ids: Vec<KeyId>,
        wrapped: Vec<WrappedKey>,
    ) -> Result<Self, StoreError> {
        if ids.len() != positions.len() || wrapped.len() != positions.len() {
            return Err(StoreError::RewrapCount {
                store: store.to_owned(),
                expected: positions.len(),
                actual: ids.len().min(wrapped.len()),
            });
        }
        Ok(Self {
            positions,
            ids,
            wrapped,
        })
    }

    /// The records' positions in the store.
    pub fn positions(&self) -> &[i64] {
        &self.positions
    }

    /// The records' ids.
    pub fn ids(&self) -> &[KeyId] {
        &self.ids
    }

    /// The records' values, wrapped under the master key the batch was read for.
    pub fn wrapped(&self) -> &[WrappedKey] {
        &self.wrapped
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether it holds no record: none is left to read.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Where the next read continues; `None` for an empty batch.
    pub fn next(&self) -> Option<BatchCursor> {
        self.positions.last().copied().map(BatchCursor)
    }
}

/// The master key rotation in progress on a store: its records are being moved from the
/// master key with VP `from` to the one with VP `to`. Stored in the store itself, so
/// that every process using the store sees it, and it survives a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RotationMarker {
    /// VP of the master key the records are moved away from.
    pub from: Vp,
    /// VP of the master key the records are moved to.
    pub to: Vp,
}

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

    /// The same step as [`KeyStore::rewrap_batch`], with the whole batch given to
    /// `rewrap` at once (a unit rewraps a batch in one call). If `rewrap` fails, or
    /// returns another number of values than it was given, nothing of the batch changes.
    ///
    /// # Errors
    /// [`StoreError::SameVp`]; [`StoreError::RewrapBatch`] naming the batch's first key;
    /// [`StoreError::RewrapCount`]; [`StoreError::Malformed`]; [`StoreError::Database`].
    fn rewrap_batch_whole(
        &mut self,
        from: &Vp,
        to: &Vp,
        limit: NonZeroUsize,
        rewrap: &mut BatchRewrapFn<'_>,
    ) -> Result<usize, StoreError>;

    /// The first half of a pipelined rotation step: reads, without changing anything, up
    /// to `limit` records tagged `from` that come after `after` in the store's order (from
    /// the first when `None`). The reader can read the next batch while a unit rewraps
    /// this one; an empty batch means none is left after `after`.
    ///
    /// # Errors
    /// [`StoreError::Malformed`]; [`StoreError::Database`].
    fn read_batch(
        &self,
        from: &Vp,
        after: Option<BatchCursor>,
        limit: NonZeroUsize,
    ) -> Result<ReadBatch, StoreError>;

    /// The second half: stores `new` (the values of `batch`, rewrapped from `from` to
    /// `to`, in the same order) tagged `to`, all in one transaction. A record of the batch
    /// that is no longer the one read under `from` (deleted or moved meanwhile) is left
    /// as it is. Returns how many records moved.
    ///
    /// # Errors
    /// [`StoreError::SameVp`]; [`StoreError::RewrapCount`] when `new` is not as long as
    /// the batch (nothing changes); [`StoreError::Database`].
    fn commit_batch(
        &mut self,
        from: &Vp,
        to: &Vp,
        batch: &ReadBatch,
        new: &[WrappedKey],
    ) -> Result<usize, StoreError>;

    /// The rotation in progress, if any.
    ///
    /// # Errors
    /// [`StoreError::Malformed`]; [`StoreError::Database`].
    fn rotation(&self) -> Result<Option<RotationMarker>, StoreError>;

    /// Records that `marker`'s rotation is in progress, durably (one transaction). Doing
    /// it again for the same rotation changes nothing.
    ///
    /// # Errors
    /// [`StoreError::OtherRotation`] when another rotation is in progress;
    /// [`StoreError::SameVp`] when `from` is `to`; [`StoreError::Database`].
    fn begin_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError>;

    /// Ends `marker`'s rotation once no record is left under its `from` VP (checked in
    /// the same transaction that clears the marker), then makes the store durable
    /// ([`KeyStore::sync`]).
    ///
    /// # Errors
    /// [`StoreError::NotThisRotation`] when `marker`'s rotation is not the one in
    /// progress; [`StoreError::RecordsLeft`]; [`StoreError::Database`].
    fn finish_rotation(&mut self, marker: &RotationMarker) -> Result<(), StoreError>;

    /// Makes every committed change durable (survives a power loss). Call it before
    /// acting on what the store says, e.g. before discarding an old master key.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    fn sync(&mut self) -> Result<(), StoreError>;
}
