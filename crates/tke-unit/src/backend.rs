//! The [`Backend`] trait: where a unit's secrets live and every operation that touches
//! them.
//!
//! # What a backend holds
//!
//! * the **device key** (P-256), made when the unit is created, never destroyed;
//! * **master key objects** (AES-256), each named by a random [`KeyHandle`];
//! * **importer keys** (P-256, single use), each named by its key id (SHA-256 of its
//!   public point, as in [`tke_proto::transport::ImporterKey`]).
//!
//! # What the unit holds
//!
//! The registers are the unit's *non-secret* state (its state file): for each register,
//! its [`tke_proto::RegisterState`], the verification pattern and the [`KeyHandle`] of the
//! master key object it refers to; and the key id of the pending importer, if any. A
//! backend knows nothing of registers, thresholds or counters.
//!
//! # How the register operations map to the trait
//!
//! | Unit operation | Backend calls, in this order |
//! | --- | --- |
//! | random generation | [`Backend::generate_master_key`], then the unit writes its state |
//! | importer generation | [`Backend::generate_importer`], then state, then [`Backend::retain`] (destroys the old importer) |
//! | export | [`Backend::seal`] (ECDH + KDF + wrap), then [`Backend::sign`] over the envelope |
//! | import | [`Backend::import`] (ECDH + KDF + unwrap, stores a new object), then state, then [`Backend::retain`] (destroys the importer) |
//! | import from parts | [`Backend::import_parts`] (per part: ECDH + KDF + unwrap + VP check; then the XOR, stored as a new object), then state, then [`Backend::retain`] (destroys the importer) |
//! | commit | state only (the VP was computed when the object was made) |
//! | set immediate (promotion new → current) | state (current := the new register's handle, new := empty), then [`Backend::retain`] (destroys the old current object) |
//! | clear new / clear current | state, then [`Backend::retain`] |
//! | zeroize | state, then [`Backend::zeroize`] |
//! | service `generateKeys` | [`Backend::generate_root_keys`] under the current register's object |
//! | service `wrapData` / `unwrapData` | [`Backend::wrap_data`] / [`Backend::unwrap_data`] under the object of the register the VP names |
//! | service `rewrap` | [`Backend::rewrap_root_keys`] from the current to the new register's object |
//! | every response | [`Backend::sign`] with the device key |
//!
//! The service operations read registers and change nothing: no state write, no object
//! kept. Root keys exist in the clear only inside the backend and only during the call.
//!
//! # Crash safety
//!
//! The backend persists each of its own changes atomically before returning. The unit
//! then follows one rule: **a secret is created before the state refers to it, and
//! destroyed only after the state has stopped referring to it.** A crash between the two
//! writes therefore leaves at worst an *orphan* — a secret that no register refers to —
//! and never a register that claims a value the backend lacks; an acknowledged master key
//! is never lost. [`crate::Unit::open`] checks every reference and destroys orphans
//! ([`Backend::retain`]).

use core::fmt;
use std::path::PathBuf;

#[cfg(feature = "pkcs11")]
use crate::pkcs11::TokenRef;
use tke_proto::{
    p256::{ecdsa::DerSignature, PublicKey},
    parts::{self, MasterKeyPart, SealedPart},
    transport::{ImporterKey, MkEnvelope},
    DeviceContext, Digest32, MasterKey, ProtoError, UnitId, Vp,
};

/// Names one master key object in a backend: 16 random bytes, shown as hex. Not secret:
/// it says where a value is, not what it is (a PKCS#11 backend uses it as `CKA_ID`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHandle(pub [u8; 16]);

impl KeyHandle {
    /// A fresh random handle.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        Self(b)
    }

    /// Parses 32 hex digits.
    ///
    /// # Errors
    /// [`ProtoError::Hex`] or [`ProtoError::Length`].
    pub fn from_hex(s: &str) -> Result<Self, ProtoError> {
        let bytes = hex::decode(s).map_err(|_| ProtoError::Hex { what: "key handle" })?;
        let arr: [u8; 16] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| ProtoError::Length {
                what: "key handle",
                expected: 16,
                actual: bytes.len(),
            })?;
        Ok(Self(arr))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHandle({})", self.to_hex())
    }
}

impl fmt::Display for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The secrets the unit's state refers to; [`Backend::retain`] destroys every other
/// master key object and importer key (never the device key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSecrets {
    /// Master key objects referred to by a register.
    pub master_keys: Vec<KeyHandle>,
    /// The pending importer key, if any.
    pub importer: Option<Digest32>,
}

/// Errors of a backend. Each names the file or object concerned; none carries secret
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Reading or writing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done ("read", "write", "create").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A secrets file is not valid DER.
    #[error("{} is corrupt", path.display())]
    Der {
        /// The file.
        path: PathBuf,
        /// The decoder's error (with the byte position).
        source: tke_proto::der::Error,
    },
    /// A secrets file decodes but holds an invalid value.
    #[error("{} is corrupt: {what}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The secrets belong to another unit.
    #[error("{} holds the secrets of crypto unit {}, not of {}", path.display(), found.uuid(), expected.uuid())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// The unit expected.
        expected: UnitId,
        /// The unit the file names.
        found: UnitId,
    },
    /// No master key object has this handle.
    #[error("the backend holds no master key with handle {handle}")]
    UnknownMasterKey {
        /// The handle asked for.
        handle: KeyHandle,
    },
    /// No importer key has this key id.
    #[error("the backend holds no importer key with key id {key_id}")]
    UnknownImporter {
        /// The key id asked for.
        key_id: Digest32,
    },
    /// A transport input was refused (the envelope does not unwrap with this importer,
    /// or its value does not match its VP). The unit answers "invalid data".
    #[error("the master key envelope was refused")]
    Rejected(#[source] ProtoError),
    /// A cryptographic operation failed inside the backend.
    #[error("cryptographic operation failed")]
    Crypto(#[source] ProtoError),
    /// A wrapped root key does not unwrap under the master key: malformed, wrapped under
    /// another master key, or not a 32-byte root key. The unit answers
    /// [`tke_proto::ModuleError::SERVICE_WRAPPED_KEY`].
    #[error(
        "wrapped root key number {index} of the request does not unwrap under master key {handle}"
    )]
    WrappedKey {
        /// The master key object.
        handle: KeyHandle,
        /// Its position in the request (0 for `wrapData` and `unwrapData`).
        index: usize,
    },
    /// Wrapped data does not unwrap under the root key given. The unit answers
    /// [`tke_proto::ModuleError::SERVICE_WRAPPED_DATA`].
    #[error("the wrapped data does not unwrap under the root key given")]
    WrappedData,
    /// A configuration file is not valid JSON of the expected shape.
    #[error("{} is corrupt", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    #[cfg(feature = "pkcs11")]
    /// The unit's PKCS#11 token could not be reached, logged in to, or used: the module,
    /// the token, its PIN file, a mechanism it lacks, or a call that failed (the shared
    /// PKCS#11 layer's error, which names the module and the token, is the source).
    #[error("cannot use {token}")]
    Pkcs11 {
        /// The unit's token.
        token: TokenRef,
        /// What failed (boxed: it names the module and the token, and backend errors
        /// travel on every command's path).
        #[source]
        source: Box<tke_pkcs11::Error>,
    },
    #[cfg(feature = "pkcs11")]
    /// A token mechanism computes something else than the protocol's software reference.
    #[error("{token}: {problem}")]
    MechanismMismatch {
        /// The token.
        token: TokenRef,
        /// What differs.
        problem: &'static str,
    },
    #[cfg(feature = "pkcs11")]
    /// The token's objects do not fit this unit.
    #[error("{token} {what}")]
    TokenContent {
        /// The token.
        token: TokenRef,
        /// What is wrong.
        what: &'static str,
    },
    #[cfg(feature = "pkcs11")]
    /// The token holds another unit's device key.
    #[error("{token} holds the device key of crypto unit {}, not of {}", found.uuid(), expected.uuid())]
    ForeignToken {
        /// The token.
        token: TokenRef,
        /// The unit expected.
        expected: UnitId,
        /// The unit its device key names.
        found: UnitId,
    },
}

/// Where a unit's secrets live, and every operation that touches them.
///
/// Implementations: [`crate::SoftBackend`] (a file in the unit directory) and
/// [`crate::Pkcs11Backend`], which keeps the same objects as token objects and computes
/// the same values with token mechanisms. Each method that changes the backend persists the change atomically
/// before it returns (see the module docs for the crash-safety rule the unit follows).
///
/// `Debug` is required and must never show secret material.
pub trait Backend: Send + fmt::Debug {
    /// A short name recorded in the unit's state file (`"soft"`, `"pkcs11"`), used by
    /// [`crate::Unit::open`] to choose the backend.
    fn kind(&self) -> &'static str;

    /// The device public key (its certificate is issued when the unit is created).
    fn device_public_key(&self) -> PublicKey;

    /// Signs `message` with the device key in `context`: ECDSA P-256 over SHA-256 of
    /// `context.label() ‖ message` ([`DeviceContext::signed_bytes`]), DER signature. The
    /// device key signs nothing without a context, so a signature made for one kind of
    /// message never verifies as another.
    ///
    /// # Errors
    /// The backend's error when the key cannot be used.
    fn sign(&self, context: DeviceContext, message: &[u8]) -> Result<DerSignature, BackendError>;

    /// Generates a random AES-256 master key in a new object and returns its handle and
    /// verification pattern ([`tke_proto::vp`]).
    ///
    /// # Errors
    /// The backend's error; nothing is stored then.
    fn generate_master_key(&mut self) -> Result<(KeyHandle, Vp), BackendError>;

    /// Recomputes the verification pattern of a stored master key.
    ///
    /// # Errors
    /// [`BackendError::UnknownMasterKey`] if no object has this handle.
    fn master_key_vp(&self, handle: &KeyHandle) -> Result<Vp, BackendError>;

    /// Generates a P-256 importer key and returns its public key (its key id is
    /// SHA-256 of the 65-byte point). Other importer keys stay until [`Self::retain`].
    ///
    /// # Errors
    /// The backend's error; nothing is stored then.
    fn generate_importer(&mut self) -> Result<PublicKey, BackendError>;

    /// Whether an importer key with this key id is stored.
    ///
    /// # Errors
    /// The backend's error when it cannot look.
    fn has_importer(&self, key_id: &Digest32) -> Result<bool, BackendError>;

    /// The export side of master key transport: ECDH between a fresh ephemeral key and
    /// `importer`, the KDF of [`tke_proto::transport`], AES key wrap of the master key
    /// `handle`. Returns the unsigned envelope from `source`.
    ///
    /// # Errors
    /// [`BackendError::UnknownMasterKey`], or [`BackendError::Crypto`].
    fn seal(
        &self,
        handle: &KeyHandle,
        source: UnitId,
        importer: &ImporterKey,
    ) -> Result<MkEnvelope, BackendError>;

    /// The import side: ECDH with the importer key `importer`, KDF, unwrap, VP check;
    /// stores the value in a new master key object and returns its handle and VP. Does
    /// not destroy the importer key (the unit does, through [`Self::retain`], once its
    /// state no longer refers to it).
    ///
    /// # Errors
    /// [`BackendError::UnknownImporter`]; [`BackendError::Rejected`] when the envelope
    /// does not open with this importer key.
    fn import(
        &mut self,
        importer: &Digest32,
        envelope: &MkEnvelope,
    ) -> Result<(KeyHandle, Vp), BackendError>;

    /// The import side of master key parts (`docs/protocol.md` §11.2): for each part, in
    /// order, ECDH with the importer key `importer`, the part's KDF for `target` and its
    /// position (1, 2, 3), unwrap and VP check; then the parts' independence and their XOR
    /// ([`tke_proto::parts::combine`]), stored in a new master key object whose handle and
    /// VP it returns. Does not destroy the importer key (as [`Self::import`]). No part
    /// value outlives the call.
    ///
    /// # Errors
    /// [`BackendError::UnknownImporter`]; [`BackendError::Rejected`] when a part does not
    /// open (its source says how), or with
    /// [`tke_proto::TransportError::PartsNotIndependent`] when the parts are not
    /// independent. Nothing is stored then.
    fn import_parts(
        &mut self,
        importer: &Digest32,
        target: UnitId,
        parts: &[SealedPart],
    ) -> Result<(KeyHandle, Vp), BackendError>;

    /// Generates `count` fresh AES-256 root keys and returns each wrapped with AES-KWP
    /// (RFC 5649, 40 bytes) under the master key `handle`. No root key outlives the call.
    ///
    /// # Errors
    /// [`BackendError::UnknownMasterKey`], or the backend's error.
    fn generate_root_keys(
        &self,
        handle: &KeyHandle,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, BackendError>;

    /// Unwraps the root key `root` under the master key `handle` and wraps `data` under it
    /// (AES-KWP).
    ///
    /// # Errors
    /// [`BackendError::WrappedKey`] when `root` does not unwrap to a root key;
    /// [`BackendError::UnknownMasterKey`], or the backend's error.
    fn wrap_data(
        &self,
        handle: &KeyHandle,
        root: &[u8],
        data: &[u8],
    ) -> Result<Vec<u8>, BackendError>;

    /// Unwraps the root key `root` under the master key `handle`, and `wrapped` under the
    /// root key; returns the data key.
    ///
    /// # Errors
    /// [`BackendError::WrappedKey`] for the root key, [`BackendError::WrappedData`] when
    /// `wrapped` does not unwrap under it; [`BackendError::UnknownMasterKey`], or the
    /// backend's error.
    fn unwrap_data(
        &self,
        handle: &KeyHandle,
        root: &[u8],
        wrapped: &[u8],
    ) -> Result<tke_proto::SecretOctets, BackendError>;

    /// Rewraps root keys: unwraps each under the master key `from` and wraps it under
    /// `to`, in order; all or nothing.
    ///
    /// # Errors
    /// [`BackendError::WrappedKey`] naming the first key that does not unwrap;
    /// [`BackendError::UnknownMasterKey`], or the backend's error. Nothing is returned then.
    fn rewrap_root_keys(
        &self,
        from: &KeyHandle,
        to: &KeyHandle,
        keys: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, BackendError>;

    /// Destroys every master key object and importer key not listed in `live` (the
    /// device key stays). Clearing, promotion and importer consumption end here.
    ///
    /// # Errors
    /// The backend's error; the destroyed set is then unspecified but `live` is kept.
    fn retain(&mut self, live: &LiveSecrets) -> Result<(), BackendError>;

    /// Destroys every master key object and importer key (the device key stays).
    ///
    /// # Errors
    /// As [`Self::retain`].
    fn zeroize(&mut self) -> Result<(), BackendError> {
        self.retain(&LiveSecrets::default())
    }

    /// Destroys everything the backend made, the device key included, when the unit it
    /// was made for could not be created. Secrets kept in the unit's directory go with
    /// the directory's files (the default does nothing); a token's objects must be
    /// destroyed here, so that the token can be used again.
    ///
    /// # Errors
    /// The backend's error; the caller reports the creation's own error anyway.
    fn discard(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// What every backend does with master key parts once it can open one: opens each with
/// `open` (given its position, 1 to 3, and the sealed part), in order, and combines them
/// ([`parts::combine`], which refuses dependent parts). The opened parts are wiped when
/// this returns.
///
/// # Errors
/// The first error of `open`; [`BackendError::Rejected`] for dependent parts.
pub(crate) fn open_and_combine(
    sealed: &[SealedPart],
    mut open: impl FnMut(usize, &SealedPart) -> Result<MasterKeyPart, BackendError>,
) -> Result<MasterKey, BackendError> {
    let opened = sealed
        .iter()
        .enumerate()
        .map(|(i, part)| open(i + 1, part))
        .collect::<Result<Vec<_>, _>>()?;
    parts::combine(&opened).map_err(BackendError::Rejected)
}
