//! API keys: bearer tokens bound to one service instance, as the vendor's cloud token is.
//!
//! A key is `tkek_` followed by 64 lower-case hex digits (256 random bits). The server
//! stores only SHA-256 of the key (a fast hash is enough for a random 256-bit secret: there
//! is nothing to guess), and logs only the first 12 hex digits of that hash, the *key id*.
//! The key itself lives in a file of mode 0600 on the workstations that use it.

use std::{fs, io::ErrorKind, os::unix::fs::PermissionsExt, path::Path};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{error::io_err, ServerError};

/// The prefix of every key.
pub const KEY_PREFIX: &str = "tkek_";

/// An API key. `Debug` never shows it; it is wiped from memory when dropped.
pub struct ApiKey(Zeroizing<String>);

impl core::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ApiKey(id {}, <redacted>)", self.hash().id())
    }
}

impl ApiKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, bytes.as_mut());
        Self(Zeroizing::new(format!(
            "{KEY_PREFIX}{}",
            hex::encode(bytes.as_ref())
        )))
    }

    /// Checks the format of a key (`tkek_` and 64 lower-case hex digits).
    fn well_formed(s: &str) -> Result<(), &'static str> {
        let Some(rest) = s.strip_prefix(KEY_PREFIX) else {
            return Err("it does not start with tkek_");
        };
        if rest.len() != 64 || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("tkek_ must be followed by 64 lower-case hex digits");
        }
        Ok(())
    }

    /// Reads a key file (one line). Refuses a file that other users can read.
    ///
    /// # Errors
    /// [`ServerError::Io`], [`ServerError::ApiKeyPermissions`], [`ServerError::ApiKeyFormat`].
    pub fn read_file(path: &Path) -> Result<Self, ServerError> {
        let meta = fs::metadata(path).map_err(io_err("read", path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(ServerError::ApiKeyPermissions {
                path: path.to_path_buf(),
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err("read", path))?);
        let key = text.trim();
        Self::well_formed(key).map_err(|what| ServerError::ApiKeyFormat {
            path: path.to_path_buf(),
            what,
        })?;
        Ok(Self(Zeroizing::new(key.to_owned())))
    }

    /// Writes the key to a new file of mode 0600. Never replaces an existing file.
    ///
    /// # Errors
    /// [`ServerError::Io`] (an existing file is `AlreadyExists`).
    pub fn write_new_file(&self, path: &Path) -> Result<(), ServerError> {
        let line = Zeroizing::new(format!("{}\n", self.0.as_str()));
        tke_fs::atomic::create_private(path, line.as_bytes()).map_err(io_err("create", path))
    }

    /// Whether `path` exists (so `init` reuses it rather than making a new key).
    ///
    /// # Errors
    /// [`ServerError::Io`] when the file's status cannot be read.
    pub fn file_exists(path: &Path) -> Result<bool, ServerError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("inspect", path)(e)),
        }
    }

    /// The key, for the `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        self.0.as_str()
    }

    /// What the server stores.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.0.as_bytes())
    }
}

/// SHA-256 of an API key: what the server's configuration holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl core::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyHash({})", self.id())
    }
}

impl KeyHash {
    /// The hash of the bytes a client presented.
    pub fn of(presented: &[u8]) -> Self {
        Self(Sha256::digest(presented).into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Self(b))
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key id shown in logs: the first 12 hex digits of the hash. It names a key
    /// without revealing anything that would let one use it.
    pub fn id(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_and_hash_never_show_the_key() {
        let k = ApiKey::generate();
        let secret = k.expose_secret().to_owned();
        assert!(ApiKey::well_formed(&secret).is_ok());
        for shown in [
            format!("{k:?}"),
            format!("{:?}", k.hash()),
            k.hash().to_hex(),
        ] {
            assert!(!shown.contains(&secret[KEY_PREFIX.len()..]), "{shown}");
            assert!(!shown.contains(&secret[KEY_PREFIX.len()..KEY_PREFIX.len() + 16]));
        }
    }

    #[test]
    fn key_files_are_private_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("api-key");
        let k = ApiKey::generate();
        k.write_new_file(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(k.write_new_file(&p).is_err(), "never overwritten");
        let back = ApiKey::read_file(&p).unwrap();
        assert!(back.hash().matches(&k.hash()));

        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ApiKey::read_file(&p),
            Err(ServerError::ApiKeyPermissions { .. })
        ));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, "tkek_123\n").unwrap();
        let err = ApiKey::read_file(&p).unwrap_err();
        assert!(matches!(err, ServerError::ApiKeyFormat { .. }), "{err}");
        assert!(!err.to_string().contains("tkek_123"));
    }
}
