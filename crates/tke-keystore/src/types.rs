//! The values a record is made of. Each type checks its rules when it is built, so the
//! store and its callers never see a malformed id, name or VP.

use core::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::KeyDataError;

/// The identifier of a stored key: 16 random bytes shaped as a version-4 UUID, shown as
/// a UUID (`8-4-4-4-12` lower-case hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 16]);

impl KeyId {
    /// Length in bytes.
    pub const LEN: usize = 16;

    /// A fresh random id.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        // Version 4, RFC 4122 variant: the id reads like any other UUID of the service.
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }

    /// The id from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id from a slice of exactly 16 bytes.
    ///
    /// # Errors
    /// [`KeyDataError::IdLength`] for any other length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyDataError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| KeyDataError::IdLength {
                actual: bytes.len(),
            })
    }

    /// Parses a UUID, or 32 hex digits without dashes.
    ///
    /// # Errors
    /// [`KeyDataError::IdSyntax`] when the text is neither.
    pub fn parse(text: &str) -> Result<Self, KeyDataError> {
        let bad = || KeyDataError::IdSyntax {
            text: text.chars().take(64).collect(),
        };
        let t = text.trim();
        let dashed = t.len() == 36
            && [8, 13, 18, 23]
                .iter()
                .all(|&i| t.as_bytes().get(i) == Some(&b'-'));
        let digits: String = if dashed {
            t.replace('-', "")
        } else {
            t.to_owned()
        };
        let bytes = hex::decode(&digits).map_err(|_| bad())?;
        Self::from_slice(&bytes).map_err(|_| bad())
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The name a client gave a key: 1 to [`KeyName::MAX_LEN`] characters among ASCII
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit. Names need not be
/// unique; the [`KeyId`] is what identifies a key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    /// The longest name, in characters.
    pub const MAX_LEN: usize = 90;

    /// Checks and takes a name.
    ///
    /// # Errors
    /// [`KeyDataError::NameEmpty`], [`KeyDataError::NameTooLong`] or
    /// [`KeyDataError::NameCharacter`] (with the first character refused and its place).
    pub fn new(name: &str) -> Result<Self, KeyDataError> {
        let len = name.chars().count();
        if len == 0 {
            return Err(KeyDataError::NameEmpty);
        }
        if len > Self::MAX_LEN {
            return Err(KeyDataError::NameTooLong {
                length: len,
                max: Self::MAX_LEN,
            });
        }
        for (position, ch) in name.chars().enumerate() {
            let allowed =
                ch.is_ascii_alphanumeric() || (position > 0 && matches!(ch, '.' | '_' | '-'));
            if !allowed {
                return Err(KeyDataError::NameCharacter {
                    character: ch,
                    position: position + 1,
                });
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({:?})", self.0)
    }
}

/// Key material wrapped under a master key, as the unit returned it. Only a unit holding
/// that master key can use it; still, it is key material: it is wiped when dropped and
/// `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct WrappedKey(Vec<u8>);

impl WrappedKey {
    /// The longest wrapped value accepted, in bytes (a wrapped RSA-4096 private key with
    /// its attributes fits).
    pub const MAX_LEN: usize = 8192;

    /// Takes wrapped bytes.
    ///
    /// # Errors
    /// [`KeyDataError::WrappedLength`] when empty or longer than [`WrappedKey::MAX_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, KeyDataError> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            let actual = bytes.len();
            drop(Self(bytes));
            return Err(KeyDataError::WrappedLength {
                actual,
                max: Self::MAX_LEN,
            });
        }
        Ok(Self(bytes))
    }

    /// The wrapped bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a wrapped key is never empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.0.len())
    }
}

/// When a key was created: milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Created(i64);

impl Created {
    /// Now, to the millisecond. A clock before 1970 reads as the epoch.
    pub fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self(millis)
    }

    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }
}

/// In UTC, to the millisecond: `2026-11-29T07:20:38.123Z`.
impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(86_400_000);
        let days = self.0.div_euclid(86_400_000);
        // Days since 1970-01-01 to a civil date (H. Hinnant's `civil_from_days`).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

/// One stored key: its id and name, when it was created, its material wrapped under a
/// master key, and the verification pattern (VP) of that master key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key's identifier.
    pub id: KeyId,
    /// The key's name.
    pub name: KeyName,
    /// When the key was created.
    pub created: Created,
    /// The key material, wrapped under the master key whose VP is [`Record::vp`].
    pub wrapped: WrappedKey,
    /// The VP of the master key that wraps [`Record::wrapped`].
    pub vp: tke_proto::Vp,
}

impl Record {
    /// A new record with a fresh random id, created now.
    pub fn new(name: KeyName, wrapped: WrappedKey, vp: tke_proto::Vp) -> Self {
        Self {
            id: KeyId::random(),
            name,
            created: Created::now(),
            wrapped,
            vp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Created;

    #[test]
    fn created_shows_as_utc() {
        let show = |ms| Created::from_unix_millis(ms).to_string();
        assert_eq!(show(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(show(1_795_850_438_123), "2026-11-28T07:20:38.123Z");
        assert_eq!(show(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(show(-1), "1969-12-31T23:59:59.999Z");
    }
}
