#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod file;
mod local;
mod progress;
pub mod wire;

pub use file::{WrappedDataKey, MAX_DATA_KEY};
pub use local::{
    default_rewrap_workers, GeneratedKeys, InstanceUnits, LocalKms, UnitCallError, UnitRef,
    DEFAULT_REWRAP_WORKERS, PKCS11_REWRAP_WORKERS,
};
pub use progress::{reencrypt_all, ProgressReport};
use tke_keystore::{Created, KeyId, KeyName};
use tke_proto::Vp;
use zeroize::Zeroizing;

/// What the service tells about a key (never its material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its id.
    pub id: KeyId,
    /// Its name (names need not be unique).
    pub name: KeyName,
    /// When it was created.
    pub created: Created,
    /// The VP of the master key that wraps it now.
    pub vp: Vp,
}

/// A master key rotation of the instance's key storage, from the master key with VP
/// `from` (the units' current register) to the one with VP `to` (their committed new
/// register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// VP of the master key the records are moved away from.
    pub from: Vp,
    /// VP of the master key the records are moved to.
    pub to: Vp,
}

/// Where a rotation's re-encryption stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Records already wrapped under the rotation's `to` key.
    pub done: u64,
    /// Records in the store.
    pub total: u64,
}

impl Progress {
    /// Records still wrapped under the rotation's `from` key.
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.done)
    }
}

/// The instance's key storage at a glance: what the zeroize guard and the rotation
/// pre-checks read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Records in the store.
    pub total: u64,
    /// Each VP that wraps at least one record, with its count, in VP order.
    pub by_vp: Vec<(Vp, u64)>,
    /// The rotation in progress, if any.
    pub rotation: Option<Rotation>,
    /// Where the store lives (a file, a server's instance), for messages.
    pub location: String,
}

/// Errors of the key-management service. Each names the key, unit or store it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// Create, wrap and unwrap wait for the end of a master key rotation.
    #[error(
        "rotation in progress: the master key of this instance is being rotated; \
         list, show and delete work, create, wrap and unwrap are refused until the \
         rotation finishes (`tke auto-mk-rotate --resume` finishes an interrupted one)"
    )]
    RotationInProgress,
    /// No key has this id.
    #[error("no key with id {0} in this instance's key storage (see `tke kms list`)")]
    NoSuchKey(KeyId),
    /// A rotation was asked for that does not match the one in progress, or none is.
    #[error("{0}")]
    Rotation(String),
    /// No unit of the instance can do the operation (none holds the master key with the
    /// VP needed, or none answers).
    #[error("{0}")]
    NoUnit(String),
    /// No unit of the instance holds a master key: the instance was never initialized.
    #[error(
        "service instance {instance} has no master key yet: run `tke auto-init` first \
         (key storage needs a master key)"
    )]
    NoMasterKey {
        /// The instance.
        instance: String,
    },
    /// A unit refused or failed the operation.
    #[error("crypto unit {unit}: {message}")]
    Unit {
        /// The unit, as the operator sees it.
        unit: String,
        /// What it said.
        message: String,
    },
    /// The key storage failed.
    #[error(transparent)]
    Store(#[from] tke_keystore::StoreError),
    /// The service could not be reached (a `tke-unitd` server).
    #[error("{0}")]
    Transport(String),
    /// The input was not acceptable (e.g. an empty data key or a wrapped blob that is not
    /// ours); the message says what to do.
    #[error("{0}")]
    Input(String),
}

/// The key-management service of one service instance.
///
/// Implementations: in-process over the embedded fleet's units and key storage file; on a
/// `tke-unitd` server next to its units; over HTTPS from a client to a server.
pub trait KeyService: Send + Sync {
    /// Creates `count` root keys (at least one), each generated inside a unit that holds
    /// the current master key and stored wrapped under it, in one store transaction.
    /// With `count` > 1 the keys are named `NAME-1` … `NAME-count`.
    ///
    /// # Errors
    /// [`KmsError::RotationInProgress`]; [`KmsError::NoUnit`]; [`KmsError::Unit`];
    /// [`KmsError::Store`].
    fn create(&self, name: &KeyName, count: u32) -> Result<Vec<KeyInfo>, KmsError>;

    /// Every key, in creation order.
    ///
    /// # Errors
    /// [`KmsError::Store`].
    fn list(&self) -> Result<Vec<KeyInfo>, KmsError>;

    /// One key.
    ///
    /// # Errors
    /// [`KmsError::NoSuchKey`]; [`KmsError::Store`].
    fn show(&self, id: &KeyId) -> Result<KeyInfo, KmsError>;

    /// Deletes a key (its wrapped data keys can no longer be unwrapped).
    ///
    /// # Errors
    /// [`KmsError::NoSuchKey`]; [`KmsError::Store`].
    fn delete(&self, id: &KeyId) -> Result<(), KmsError>;

    /// Wraps a data key under a root key, inside a unit.
    ///
    /// # Errors
    /// [`KmsError::RotationInProgress`]; [`KmsError::NoSuchKey`]; [`KmsError::Input`];
    /// [`KmsError::NoUnit`]; [`KmsError::Unit`].
    fn wrap(&self, id: &KeyId, data_key: &[u8]) -> Result<Vec<u8>, KmsError>;

    /// Unwraps a data key that [`KeyService::wrap`] wrapped under this root key.
    ///
    /// # Errors
    /// [`KmsError::RotationInProgress`]; [`KmsError::NoSuchKey`]; [`KmsError::Input`];
    /// [`KmsError::NoUnit`]; [`KmsError::Unit`].
    fn unwrap(&self, id: &KeyId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError>;

    /// Counts, VPs and the rotation in progress.
    ///
    /// # Errors
    /// [`KmsError::Store`].
    fn summary(&self) -> Result<Summary, KmsError>;

    /// Starts (or, when the same one is already in progress, continues) a rotation:
    /// from then on create, wrap and unwrap are refused. Durable before it returns.
    ///
    /// # Errors
    /// [`KmsError::Rotation`] when another rotation is in progress or `from` is `to`;
    /// [`KmsError::Store`].
    fn begin_rotation(&self, rotation: Rotation) -> Result<(), KmsError>;

    /// Re-encrypts up to `max_records` records of the rotation in progress inside a unit
    /// that holds both keys (current `from`, committed new `to`), each batch in one store
    /// transaction, and says where the rotation stands. Call again until
    /// [`Progress::remaining`] is 0.
    ///
    /// # Errors
    /// [`KmsError::Rotation`] when no rotation is in progress; [`KmsError::NoUnit`];
    /// [`KmsError::Unit`]; [`KmsError::Store`].
    fn reencrypt(&self, max_records: u64) -> Result<Progress, KmsError>;

    /// Ends the rotation in progress once no record is left under `from`, after making
    /// the store durable: only then may the units discard the old master key.
    ///
    /// # Errors
    /// [`KmsError::Rotation`] when records are left under `from` or no rotation is in
    /// progress; [`KmsError::Store`].
    fn finish_rotation(&self) -> Result<(), KmsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_never_underflows() {
        assert_eq!(Progress { done: 3, total: 10 }.remaining(), 7);
        assert_eq!(
            Progress {
                done: 10,
                total: 10
            }
            .remaining(),
            0
        );
        assert_eq!(
            Progress {
                done: 11,
                total: 10
            }
            .remaining(),
            0
        );
    }

    #[test]
    fn the_rotation_message_says_what_still_works() {
        let m = KmsError::RotationInProgress.to_string();
        assert!(m.contains("rotation in progress") && m.contains("list, show and delete"));
    }
}
