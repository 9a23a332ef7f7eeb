//! AES-KWP (RFC 5649) of root keys and data keys in software: the soft backend's service
//! operations. Every key schedule and every unwrapped value is zeroized on drop.

use aes_kw::KekAes256;
use tke_proto::{service::WRAPPED_ROOT_LEN, ProtoError};
use zeroize::Zeroizing;

use crate::backend::{BackendError, KeyHandle};

/// The length of a root key (AES-256).
const ROOT_KEY_LEN: usize = 32;

/// A key-encryption key from 32 key bytes (its schedule is zeroized on drop).
pub(crate) fn kek(key: &[u8; 32]) -> KekAes256 {
    KekAes256::new(key.into())
}

/// Wraps a root key: 40 bytes.
pub(crate) fn wrap_root(
    kek: &KekAes256,
    root: &[u8; ROOT_KEY_LEN],
) -> Result<Vec<u8>, BackendError> {
    let mut out = vec![0u8; WRAPPED_ROOT_LEN];
    kek.wrap_with_padding(root, &mut out).map_err(|_| {
        BackendError::Crypto(ProtoError::Length {
            what: "wrapped root key",
            expected: WRAPPED_ROOT_LEN,
            actual: out.len(),
        })
    })?;
    Ok(out)
}

/// A fresh random root key, wrapped.
pub(crate) fn generate_root(kek: &KekAes256) -> Result<Vec<u8>, BackendError> {
    let mut root = Zeroizing::new([0u8; ROOT_KEY_LEN]);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, root.as_mut());
    wrap_root(kek, &root)
}

/// Unwraps root key number `index` of a request under the master key `handle`: refused
/// unless it is exactly a 32-byte key that passes RFC 5649's integrity check.
pub(crate) fn unwrap_root(
    kek: &KekAes256,
    handle: &KeyHandle,
    index: usize,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; ROOT_KEY_LEN]>, BackendError> {
    let refused = || BackendError::WrappedKey {
        handle: *handle,
        index,
    };
    if wrapped.len() != WRAPPED_ROOT_LEN {
        return Err(refused());
    }
    let mut out = Zeroizing::new([0u8; ROOT_KEY_LEN]);
    let len = kek
        .unwrap_with_padding(wrapped, out.as_mut())
        .map_err(|_| refused())?
        .len();
    if len != ROOT_KEY_LEN {
        return Err(refused());
    }
    Ok(out)
}

/// Wraps a data key under a root key.
pub(crate) fn wrap_data(root: &[u8; ROOT_KEY_LEN], data: &[u8]) -> Result<Vec<u8>, BackendError> {
    kek(root)
        .wrap_with_padding_vec(data)
        .map_err(|_| BackendError::Crypto(ProtoError::ServiceData { len: data.len() }))
}

/// Unwraps a data key under a root key.
pub(crate) fn unwrap_data(
    root: &[u8; ROOT_KEY_LEN],
    wrapped: &[u8],
) -> Result<tke_proto::SecretOctets, BackendError> {
    let len = wrapped
        .len()
        .checked_sub(8)
        .filter(|l| *l > 0 && wrapped.len().is_multiple_of(8))
        .ok_or(BackendError::WrappedData)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    let data_len = kek(root)
        .unwrap_with_padding(wrapped, &mut out)
        .map_err(|_| BackendError::WrappedData)?
        .len();
    out.truncate(data_len);
    Ok(tke_proto::SecretOctets::new(core::mem::take(&mut *out)))
}
