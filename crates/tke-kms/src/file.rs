//! The wrapped data-key file: what `wrap` returns and `unwrap` takes.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "TKEW"
//! 4       1     format version, 1
//! 5       16    the root key's id (a KeyId, as a UUID's 16 bytes)
//! 21      n     the data key wrapped under the root key by a unit (AES-KWP, RFC 5649)
//! ```
//!
//! The wrapped bytes depend only on the root key, never on the master key: a master key
//! rotation rewraps the root keys in the key storage and leaves every data-key file valid.
//! The root key's id in the header lets `unwrap` refuse a file made under another key
//! before any unit is asked.

use tke_keystore::KeyId;

use crate::KmsError;

/// The first bytes of a wrapped data-key file.
pub const MAGIC: &[u8; 4] = b"TKEW";
/// The format version this program writes and reads.
pub const VERSION: u8 = 1;
const HEADER: usize = MAGIC.len() + 1 + KeyId::LEN;
/// The longest data key accepted, in bytes (the protocol's).
pub const MAX_DATA_KEY: usize = tke_proto::MAX_SERVICE_DATA;
/// The longest wrapped value accepted (AES-KWP adds at most 15 bytes).
const MAX_WRAPPED: usize = MAX_DATA_KEY + 16;

/// A data key wrapped under a root key, with the root key's id.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedDataKey {
    /// The root key that wraps it.
    pub root: KeyId,
    /// What the unit returned: the data key wrapped under the root key.
    pub wrapped: Vec<u8>,
}

impl core::fmt::Debug for WrappedDataKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "WrappedDataKey {{ root: {}, {} bytes }}",
            self.root,
            self.wrapped.len()
        )
    }
}

impl WrappedDataKey {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.wrapped.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(self.root.as_bytes());
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// Reads a file's bytes.
    ///
    /// # Errors
    /// [`KmsError::Input`] saying what is wrong: not such a file, another version, or a
    /// wrapped value of an impossible length.
    pub fn parse(bytes: &[u8]) -> Result<Self, KmsError> {
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(KmsError::Input(
                "this is not a wrapped data key (it does not start with \"TKEW\"); give a \
                 file that `tke kms wrap` wrote"
                    .to_owned(),
            ));
        }
        let version = bytes[MAGIC.len()];
        if version != VERSION {
            return Err(KmsError::Input(format!(
                "this wrapped data key has format version {version}; this program reads \
                 version {VERSION}"
            )));
        }
        let root = KeyId::from_slice(&bytes[MAGIC.len() + 1..HEADER])
            .map_err(|e| KmsError::Input(e.to_string()))?;
        let wrapped = &bytes[HEADER..];
        // AES-KWP output is a multiple of 8 bytes, at least 16.
        if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) || wrapped.len() > MAX_WRAPPED {
            return Err(KmsError::Input(format!(
                "this wrapped data key is damaged: its wrapped value has {} bytes, not a \
                 multiple of 8 between 16 and {MAX_WRAPPED}",
                wrapped.len()
            )));
        }
        Ok(Self {
            root,
            wrapped: wrapped.to_vec(),
        })
    }
}

/// Checks a data key's length before any unit is asked.
pub(crate) fn check_data_key(data: &[u8]) -> Result<(), KmsError> {
    let m = tke_proto::service::SERVICE_DATA_MULTIPLE;
    if data.is_empty() || data.len() > MAX_DATA_KEY || !data.len().is_multiple_of(m) {
        return Err(KmsError::Input(format!(
            "a data key is {m} to {MAX_DATA_KEY} bytes, a multiple of {m} (as AES and HMAC \
             keys are), this one has {}",
            data.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_ours() {
        let w = WrappedDataKey {
            root: KeyId::random(),
            wrapped: vec![7; 40],
        };
        let bytes = w.to_bytes();
        assert_eq!(&bytes[..5], b"TKEW\x01");
        assert_eq!(WrappedDataKey::parse(&bytes).unwrap(), w);
        let err = |b: &[u8]| WrappedDataKey::parse(b).unwrap_err().to_string();
        assert!(err(b"hello").contains("not a wrapped data key"));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert!(err(&v2).contains("format version 2"));
        assert!(err(&bytes[..bytes.len() - 3]).contains("damaged"));
        assert!(err(&bytes[..HEADER]).contains("damaged"));
        assert!(!format!("{w:?}").contains("7, 7"), "Debug shows no bytes");
    }

    #[test]
    fn data_key_lengths_are_checked() {
        assert!(check_data_key(&[]).is_err());
        assert!(check_data_key(&[0; 17]).is_err());
        assert!(check_data_key(&[0; MAX_DATA_KEY + 1]).is_err());
        check_data_key(&[0; 32]).unwrap();
    }
}
