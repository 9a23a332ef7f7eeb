//! The two secrets of a YubiKey that TKE handles: its PIN and its management key. Each is
//! its own type: no derived `Debug`, `Display` or serialization, zeroized on drop, the
//! value out only through an explicit call.

use core::fmt;

use zeroize::Zeroizing;

/// A YubiKey PIN: 6 to 8 characters (PIV's limit).
///
/// `Debug` shows `Pin(..)`; the value is zeroized on drop and comes out only through
/// [`Pin::expose_secret`].
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

/// A PIN that breaks PIV's rules. Carries no part of the PIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a YubiKey PIN has 6 to 8 characters (ASCII); the one given has {len} bytes")]
pub struct PinFormatError {
    /// The length given, in bytes.
    pub len: usize,
}

impl Pin {
    /// A PIN, checked: 6 to 8 ASCII characters.
    ///
    /// # Errors
    /// [`PinFormatError`] otherwise (the PIN is zeroized).
    pub fn new(pin: impl Into<String>) -> Result<Self, PinFormatError> {
        let pin = Zeroizing::new(pin.into());
        if !(6..=8).contains(&pin.len()) || !pin.is_ascii() {
            return Err(PinFormatError { len: pin.len() });
        }
        Ok(Self(pin))
    }

    /// The PIN's bytes, for the card.
    pub fn expose_secret(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// A management key value: 16, 24 or 32 bytes (the card's algorithm decides which
/// length it needs). Written as hex by people.
///
/// `Debug` shows the length only; zeroized on drop; out only through
/// [`ManagementKey::expose_secret`].
#[derive(Clone)]
pub struct ManagementKey(Zeroizing<Vec<u8>>);

/// A management key that is not 32, 48 or 64 hex digits. Carries no part of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a management key is 32, 48 or 64 hexadecimal digits (AES-128, 3DES or AES-192, \
     AES-256); the one given has {len} characters{}",
    if *not_hex { " and not only hex digits" } else { "" }
)]
pub struct ManagementKeyFormatError {
    /// The length given, in characters.
    pub len: usize,
    /// Whether characters other than hex digits were given.
    pub not_hex: bool,
}

impl ManagementKey {
    /// The factory default value of every YubiKey (3DES before firmware 5.7, AES-192
    /// from 5.7): `010203040506070801020304050607080102030405060708`.
    pub fn factory_default() -> Self {
        Self(Zeroizing::new([1, 2, 3, 4, 5, 6, 7, 8].repeat(3)))
    }

    /// A key from hex digits (spaces and colons allowed between them).
    ///
    /// # Errors
    /// [`ManagementKeyFormatError`] when it is not 16, 24 or 32 bytes of hex.
    pub fn from_hex(hex_digits: &str) -> Result<Self, ManagementKeyFormatError> {
        let digits: Zeroizing<String> = Zeroizing::new(
            hex_digits
                .chars()
                .filter(|c| !c.is_whitespace() && *c != ':')
                .collect(),
        );
        let len = digits.chars().count();
        let not_hex = !digits.chars().all(|c| c.is_ascii_hexdigit());
        if not_hex || !matches!(len, 32 | 48 | 64) {
            return Err(ManagementKeyFormatError { len, not_hex });
        }
        let mut bytes = Zeroizing::new(vec![0u8; len / 2]);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| ManagementKeyFormatError { len, not_hex: true })?;
        }
        Ok(Self(bytes))
    }

    /// The key bytes, for the cipher.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Whether this is the factory default value.
    pub fn is_factory_default(&self) -> bool {
        self.0.as_slice() == Self::factory_default().expose_secret()
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }
}

impl fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagementKey({} bytes, ..)", self.0.len())
    }
}

/// Where the management key comes from, for the operations that change the card
/// (generate a key, write a certificate).
#[derive(Clone, Debug)]
pub enum ManagementKeySource {
    /// The factory default value.
    Default,
    /// The PIN-protected management key that `ykman` can store on the card (read with the
    /// PIN from the PIV "printed information" object).
    PinProtected,
    /// A key the operator gives.
    Given(ManagementKey),
}

impl fmt::Display for ManagementKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "the factory default",
            Self::PinProtected => "the PIN-protected key stored on the YubiKey",
            Self::Given(_) => "the key given",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pins_are_6_to_8_ascii_characters() {
        assert!(Pin::new("123456").is_ok());
        assert!(Pin::new("12345678").is_ok());
        assert_eq!(Pin::new("12345").unwrap_err().len, 5);
        assert_eq!(Pin::new("123456789").unwrap_err().len, 9);
        assert!(Pin::new("12345é").is_err());
        let e = Pin::new("9876543210").unwrap_err().to_string();
        assert!(!e.contains("9876543210"), "{e}");
    }

    #[test]
    fn management_keys_parse_from_hex() {
        let k =
            ManagementKey::from_hex("010203040506070801020304050607080102030405060708").unwrap();
        assert!(k.is_factory_default());
        let k = ManagementKey::from_hex("00:11:22:33 44556677 8899aabbccddeeff").unwrap();
        assert_eq!(k.expose_secret().len(), 16);
        assert!(!k.is_factory_default());
        let e = ManagementKey::from_hex("0011").unwrap_err();
        assert_eq!((e.len, e.not_hex), (4, false));
        let e = ManagementKey::from_hex(&"zz".repeat(16)).unwrap_err();
        assert!(e.not_hex);
        assert!(!e.to_string().contains("zz"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let pin = Pin::new("73914682").unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(..)");
        let k = ManagementKey::from_hex(&"ab".repeat(24)).unwrap();
        let d = format!("{k:?} {:?}", ManagementKeySource::Given(k.clone()));
        assert!(!d.contains("ab") && !d.contains("171"), "{d}");
    }
}
