//! Errors of the key store. Each names the store file and, where there is one, the key.

use std::{io, path::PathBuf};

use crate::{KeyId, RotationMarker};

/// A value that breaks the rules of its type ([`crate::KeyId`], [`crate::KeyName`],
/// [`crate::WrappedKey`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyDataError {
    /// A key id is not 16 bytes.
    #[error("a key id is 16 bytes, not {actual}")]
    IdLength {
        /// The length given.
        actual: usize,
    },
    /// A key id is neither a UUID nor 32 hex digits.
    #[error("{text:?} is not a key id; give it as a UUID (8-4-4-4-12 hex digits)")]
    IdSyntax {
        /// The text given (its first 64 characters).
        text: String,
    },
    /// A key name is empty.
    #[error("a key name cannot be empty")]
    NameEmpty,
    /// A key name is too long.
    #[error("a key name has at most {max} characters, this one has {length}")]
    NameTooLong {
        /// Its length in characters.
        length: usize,
        /// The longest name allowed.
        max: usize,
    },
    /// A key name holds a character it may not.
    #[error(
        "a key name cannot hold {character:?} (character {position}); use ASCII letters, \
         digits, '.', '_' and '-', starting with a letter or digit"
    )]
    NameCharacter {
        /// The first character refused.
        character: char,
        /// Its place in the name, from 1.
        position: usize,
    },
    /// A verification pattern is not 32 bytes.
    #[error("a verification pattern is 32 bytes, not {actual}")]
    VpLength {
        /// The length given.
        actual: usize,
    },
    /// Wrapped key material is empty or too long.
    #[error("wrapped key material is 1 to {max} bytes, not {actual}")]
    WrappedLength {
        /// The length given.
        actual: usize,
        /// The longest value allowed.
        max: usize,
    },
}

/// Why a key store operation failed. Nothing was changed by a failed operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file could not be created.
    #[error("cannot create the key store {}", path.display())]
    Create {
        /// The store file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The store file could not be opened or inspected.
    #[error("cannot open the key store {}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The store file can be read by other users than its owner.
    #[error(
        "the key store {} has mode {mode:04o}; it must be readable and writable by its owner \
         only (0600)",
        path.display()
    )]
    Permissions {
        /// The store file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is an SQLite database but not a TKE key store, or an empty file.
    #[error("{} is not a TKE key store", path.display())]
    NotAStore {
        /// The file.
        path: PathBuf,
    },
    /// The store was written by another version of its format.
    #[error(
        "the key store {} has format version {found}; this program reads version {expected}",
        path.display()
    )]
    Version {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The version this program reads.
        expected: i64,
    },
    /// The database refused an operation.
    #[error("key store {}: cannot {action}", store.display())]
    Database {
        /// The store file.
        store: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A record with this id is already stored.
    #[error("key store {} already holds a key with id {id}", store.display())]
    DuplicateId {
        /// The store file.
        store: PathBuf,
        /// The id.
        id: KeyId,
    },
    /// No record has this id.
    #[error("key store {} holds no key with id {id}", store.display())]
    NotFound {
        /// The store file.
        store: PathBuf,
        /// The id.
        id: KeyId,
    },
    /// A stored row breaks the rules of its values: the file was changed by other means.
    #[error("key store {}: row {row} of table {table} is malformed", store.display())]
    Malformed {
        /// The store file.
        store: PathBuf,
        /// The table.
        table: &'static str,
        /// The SQLite row id.
        row: i64,
        /// The rule it breaks.
        #[source]
        source: KeyDataError,
    },
    /// A rewrap was asked from a VP to the same VP.
    #[error(
        "key store {}: cannot rewrap from VP {vp} to the same VP",
        store.display()
    )]
    SameVp {
        /// The store file.
        store: PathBuf,
        /// The VP given twice.
        vp: tke_proto::Vp,
    },
    /// The rewrap function failed for a key; its whole batch was left unchanged.
    #[error(
        "key store {}: rewrapping key {id} failed; its batch was left unchanged",
        store.display()
    )]
    Rewrap {
        /// The store file.
        store: PathBuf,
        /// The key whose rewrap failed.
        id: KeyId,
        /// What the rewrap function reported.
        #[source]
        source: RewrapError,
    },
    /// The batch rewrap function failed; the whole batch was left unchanged.
    #[error(
        "key store {}: rewrapping a batch of {count} keys (the first {first}) failed; the \
         batch was left unchanged",
        store.display()
    )]
    RewrapBatch {
        /// The store file.
        store: PathBuf,
        /// The batch's first key.
        first: KeyId,
        /// How many keys the batch holds.
        count: usize,
        /// What the rewrap function reported.
        #[source]
        source: RewrapError,
    },
    /// The batch rewrap function returned another number of values than it was given.
    #[error(
        "key store {}: a batch rewrap returned {actual} keys for {expected}; the batch was \
         left unchanged",
        store.display()
    )]
    RewrapCount {
        /// The store file.
        store: PathBuf,
        /// How many were given.
        expected: usize,
        /// How many came back.
        actual: usize,
    },
    /// A rotation was begun while another one is in progress.
    #[error(
        "key store {}: a rotation from VP {} to VP {} is in progress; finish it first",
        store.display(), in_progress.from, in_progress.to
    )]
    OtherRotation {
        /// The store file.
        store: PathBuf,
        /// The rotation in progress.
        in_progress: RotationMarker,
    },
    /// A rotation was ended that is not the one in progress (or none is).
    #[error(
        "key store {}: {}",
        store.display(),
        match in_progress {
            Some(m) => format!("the rotation in progress is from VP {} to VP {}", m.from, m.to),
            None => "no rotation is in progress".to_owned(),
        }
    )]
    NotThisRotation {
        /// The store file.
        store: PathBuf,
        /// The rotation in progress, if any.
        in_progress: Option<RotationMarker>,
    },
    /// A rotation cannot end while records are still wrapped under its old master key.
    #[error(
        "key store {}: {count} keys are still wrapped under the master key with VP {vp}; \
         re-encrypt them before the rotation ends",
        store.display()
    )]
    RecordsLeft {
        /// The store file.
        store: PathBuf,
        /// The old master key's VP.
        vp: tke_proto::Vp,
        /// How many records it still wraps.
        count: u64,
    },
}

impl StoreError {
    /// The rotation in progress, when this error is about one.
    pub fn rotation_in_progress(&self) -> Option<&RotationMarker> {
        match self {
            Self::OtherRotation { in_progress, .. } => Some(in_progress),
            Self::NotThisRotation { in_progress, .. } => in_progress.as_ref(),
            _ => None,
        }
    }
}

/// What a rewrap function reports when it cannot rewrap a key (the unit's error, for
/// instance). It is kept whole as the source of [`StoreError::Rewrap`].
pub type RewrapError = Box<dyn std::error::Error + Send + Sync + 'static>;
