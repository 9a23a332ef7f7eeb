//! Plain values: slots, policies, management key algorithms, what a YubiKey is.

use core::{fmt, str::FromStr};

use tke_workstation::YubiKeyRef;

/// A PIV slot that holds an asymmetric key: `9a`, `9c`, `9d`, `9e`, or a retired slot
/// `82` to `95`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u8);

impl Slot {
    /// Slot 9C, "digital signature": the default for TKE administrator keys (its PIN
    /// policy is "always" by default).
    pub const SIGNATURE: Slot = Slot(0x9c);

    /// The slot `id`, if it holds asymmetric keys.
    pub fn new(id: u8) -> Option<Self> {
        YubiKeyRef::is_key_slot(id).then_some(Self(id))
    }

    /// The slot's identifier.
    pub fn id(self) -> u8 {
        self.0
    }

    /// The slot's PIV name.
    pub fn purpose(self) -> &'static str {
        match self.0 {
            0x9a => "PIV authentication",
            0x9c => "digital signature",
            0x9d => "key management",
            0x9e => "card authentication",
            _ => "retired key management",
        }
    }

    /// The data object that holds the slot's certificate.
    pub(crate) fn cert_object(self) -> [u8; 3] {
        match self.0 {
            0x9a => [0x5f, 0xc1, 0x05],
            0x9c => [0x5f, 0xc1, 0x0a],
            0x9d => [0x5f, 0xc1, 0x0b],
            0x9e => [0x5f, 0xc1, 0x01],
            r => [0x5f, 0xc1, 0x0d + (r - 0x82)],
        }
    }

    pub(crate) fn slot_id(self) -> yubikey::piv::SlotId {
        // Every slot `new` accepts is one `yubikey` knows.
        yubikey::piv::SlotId::try_from(self.0).unwrap_or(yubikey::piv::SlotId::Signature)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.0)
    }
}

/// The error of parsing a slot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a PIV key slot: use 9a, 9c, 9d, 9e, or a retired slot 82 to 95")]
pub struct SlotParseError(String);

impl FromStr for Slot {
    type Err = SlotParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_start_matches("0x");
        u8::from_str_radix(t, 16)
            .ok()
            .filter(|_| t.len() == 2)
            .and_then(Slot::new)
            .ok_or_else(|| SlotParseError(s.to_owned()))
    }
}

/// When a key needs the PIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinPolicy {
    /// Never (TKE does not generate such administrator keys).
    Never,
    /// Once per session.
    Once,
    /// Before every signature.
    Always,
}

impl PinPolicy {
    /// A sentence for the operator.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Never => "no PIN is needed to sign",
            Self::Once => "the PIN is checked once per session",
            Self::Always => "the PIN is checked before every signature",
        }
    }

    pub(crate) fn to_yubikey(self) -> yubikey::PinPolicy {
        match self {
            Self::Never => yubikey::PinPolicy::Never,
            Self::Once => yubikey::PinPolicy::Once,
            Self::Always => yubikey::PinPolicy::Always,
        }
    }

    pub(crate) fn from_yubikey(p: yubikey::PinPolicy) -> Option<Self> {
        match p {
            yubikey::PinPolicy::Never => Some(Self::Never),
            yubikey::PinPolicy::Once => Some(Self::Once),
            yubikey::PinPolicy::Always => Some(Self::Always),
            yubikey::PinPolicy::Default => None,
        }
    }
}

impl fmt::Display for PinPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Never => "never",
            Self::Once => "once",
            Self::Always => "always",
        })
    }
}

/// When a key needs a touch of the YubiKey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TouchPolicy {
    /// Never.
    Never,
    /// For every signature.
    Always,
    /// Once, then not again for 15 seconds.
    Cached,
}

impl TouchPolicy {
    /// A sentence for the operator.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Never => "no touch is needed to sign",
            Self::Always => "the YubiKey must be touched for every signature",
            Self::Cached => "the YubiKey must be touched, then not again for 15 seconds",
        }
    }

    pub(crate) fn to_yubikey(self) -> yubikey::TouchPolicy {
        match self {
            Self::Never => yubikey::TouchPolicy::Never,
            Self::Always => yubikey::TouchPolicy::Always,
            Self::Cached => yubikey::TouchPolicy::Cached,
        }
    }

    pub(crate) fn from_yubikey(p: yubikey::TouchPolicy) -> Option<Self> {
        match p {
            yubikey::TouchPolicy::Never => Some(Self::Never),
            yubikey::TouchPolicy::Always => Some(Self::Always),
            yubikey::TouchPolicy::Cached => Some(Self::Cached),
            yubikey::TouchPolicy::Default => None,
        }
    }
}

impl fmt::Display for TouchPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Never => "never",
            Self::Always => "always",
            Self::Cached => "cached",
        })
    }
}

/// A management key algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MgmAlgorithm {
    /// Triple DES: the PIV default before YubiKey firmware 5.7.
    TripleDes,
    /// AES-128.
    Aes128,
    /// AES-192: the default from firmware 5.7.
    Aes192,
    /// AES-256.
    Aes256,
}

impl MgmAlgorithm {
    /// The PIV algorithm identifier.
    pub fn id(self) -> u8 {
        match self {
            Self::TripleDes => 0x03,
            Self::Aes128 => 0x08,
            Self::Aes192 => 0x0a,
            Self::Aes256 => 0x0c,
        }
    }

    /// The algorithm of a PIV identifier.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x03 => Some(Self::TripleDes),
            0x08 => Some(Self::Aes128),
            0x0a => Some(Self::Aes192),
            0x0c => Some(Self::Aes256),
            _ => None,
        }
    }

    /// The key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Self::TripleDes | Self::Aes192 => 24,
            Self::Aes128 => 16,
            Self::Aes256 => 32,
        }
    }

    /// The cipher's block length.
    pub(crate) fn block_len(self) -> usize {
        match self {
            Self::TripleDes => 8,
            _ => 16,
        }
    }
}

impl fmt::Display for MgmAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TripleDes => "3DES",
            Self::Aes128 => "AES-128",
            Self::Aes192 => "AES-192",
            Self::Aes256 => "AES-256",
        })
    }
}

/// One attached YubiKey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardInfo {
    /// The serial number.
    pub serial: u32,
    /// The PIV application's (firmware) version.
    pub version: [u8; 3],
    /// The PC/SC reader it is in.
    pub reader: String,
}

impl CardInfo {
    /// Whether the firmware answers GET METADATA (5.3 and later).
    pub fn has_metadata(&self) -> bool {
        self.version >= [5, 3, 0]
    }
}

impl fmt::Display for CardInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "YubiKey {} (firmware {}.{}.{}, reader {:?})",
            self.serial, self.version[0], self.version[1], self.version[2], self.reader
        )
    }
}

/// A list of serial numbers, shown comma-separated.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Serials(pub Vec<u32>);

impl fmt::Display for Serials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn slots_parse_and_show_in_hex() {
        assert_eq!("9c".parse::<Slot>().unwrap(), Slot::SIGNATURE);
        assert_eq!("9A".parse::<Slot>().unwrap().to_string(), "9a");
        assert_eq!(
            "82".parse::<Slot>().unwrap().cert_object(),
            [0x5f, 0xc1, 0x0d]
        );
        assert_eq!(
            "95".parse::<Slot>().unwrap().cert_object(),
            [0x5f, 0xc1, 0x20]
        );
        for bad in ["9b", "80", "f9", "9", "9c0", "zz", ""] {
            let e = bad.parse::<Slot>().unwrap_err().to_string();
            assert!(e.contains("not a PIV key slot"), "{e}");
        }
    }

    #[test]
    fn serials_display() {
        assert_eq!(Serials(vec![]).to_string(), "none");
        assert_eq!(Serials(vec![1, 22]).to_string(), "1, 22");
    }
}
