//! Value types that carry the protocol's rules: fixed-length identifiers, administrator
//! names, thresholds, unit types and register states. Parse at the edge, trust inside.

use core::fmt;
use der::{
    asn1::{OctetStringRef, Utf8StringRef},
    DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Tag, Writer,
};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

use crate::ProtoError;

/// Defines a newtype over a fixed-length byte array that encodes as a DER OCTET STRING
/// of exactly that length; any other length is refused when decoding.
macro_rules! fixed_octets {
    ($(#[$meta:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Builds the value from a slice of exactly [`Self::LEN`] bytes.
            ///
            /// # Errors
            /// [`ProtoError::Length`] when the slice has another length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| ProtoError::Length {
                    what: $what,
                    expected: $len,
                    actual: bytes.len(),
                })?;
                Ok(Self(arr))
            }

            /// Parses lower- or upper-case hex of exactly [`Self::LEN`] bytes.
            ///
            /// # Errors
            /// [`ProtoError::Hex`] for non-hex input, [`ProtoError::Length`] for a wrong length.
            pub fn from_hex(s: &str) -> Result<Self, ProtoError> {
                let bytes = hex::decode(s.trim()).map_err(|_| ProtoError::Hex { what: $what })?;
                Self::from_slice(&bytes)
            }

            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl FixedTag for $name {
            const TAG: Tag = Tag::OctetString;
        }

        impl<'a> DecodeValue<'a> for $name {
            fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
                let os = OctetStringRef::decode_value(reader, header)?;
                let arr: [u8; $len] = os
                    .as_bytes()
                    .try_into()
                    .map_err(|_| Tag::OctetString.length_error())?;
                Ok(Self(arr))
            }
        }

        impl EncodeValue for $name {
            fn value_len(&self) -> der::Result<Length> {
                Length::try_from($len as usize)
            }
            fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
                writer.write(&self.0)
            }
        }
    };
}

fixed_octets!(
    /// A crypto unit's identifier: 16 random bytes, shown as a UUID.
    UnitId, 16, "unit id"
);
fixed_octets!(
    /// A service instance's identifier: 16 bytes, shown as a UUID. Every unit of an
    /// instance carries it in its device certificate.
    InstanceId, 16, "instance id"
);
fixed_octets!(
    /// Subject key identifier of an administrator key: SHA-256 of the 65-byte SEC1
    /// uncompressed P-256 point. Shown shortened as the first 30 hex digits and `...`.
    Ski, 32, "subject key identifier"
);
fixed_octets!(
    /// Verification pattern: a one-way fingerprint of a master key register's value
    /// (see [`crate::vp`]).
    Vp, 32, "verification pattern"
);
fixed_octets!(
    /// A client nonce that makes each query's signed answer fresh.
    Nonce, 16, "nonce"
);
fixed_octets!(
    /// A SHA-256 digest.
    Digest32, 32, "SHA-256 digest"
);

impl UnitId {
    /// A fresh random unit id.
    pub fn random() -> Self {
        Self(random_uuid())
    }

    /// The id formatted as a UUID (`8-4-4-4-12` lower-case hex).
    pub fn uuid(&self) -> String {
        uuid_string(&self.0)
    }

    /// Parses a UUID (with or without dashes).
    ///
    /// # Errors
    /// [`ProtoError::Hex`] or [`ProtoError::Length`] when it is not a 16-byte UUID.
    pub fn from_uuid(s: &str) -> Result<Self, ProtoError> {
        Self::from_hex(&s.replace('-', ""))
    }
}

impl InstanceId {
    /// A fresh random instance id.
    pub fn random() -> Self {
        Self(random_uuid())
    }

    /// The id formatted as a UUID (`8-4-4-4-12` lower-case hex), as configuration
    /// files and the HTTP API write it.
    pub fn uuid(&self) -> String {
        uuid_string(&self.0)
    }

    /// Parses a UUID (with or without dashes).
    ///
    /// # Errors
    /// [`ProtoError::Hex`] or [`ProtoError::Length`] when it is not a 16-byte UUID.
    pub fn from_uuid(s: &str) -> Result<Self, ProtoError> {
        Self::from_hex(&s.replace('-', ""))
    }
}

/// 16 random bytes shaped as a version-4 UUID, so that ids read like the vendor's.
fn random_uuid() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    b
}

/// 16 bytes as a UUID (`8-4-4-4-12` lower-case hex).
fn uuid_string(bytes: &[u8; 16]) -> String {
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Nonce {
    /// A fresh random nonce.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        Self(b)
    }
}

impl Digest32 {
    /// SHA-256 of `data`.
    pub fn sha256(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }
}

impl Ski {
    /// The SKI of a P-256 public key: SHA-256 over its 65-byte uncompressed point.
    pub fn of_public_key(key: &p256::PublicKey) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = key.to_encoded_point(false);
        Self(Sha256::digest(point.as_bytes()).into())
    }

    /// The vendor's shortened form: the first 30 hex digits followed by `...`.
    pub fn short(&self) -> String {
        format!("{}...", &self.to_hex()[..30])
    }
}

/// An administrator's name: 1 to 30 characters, printable, no leading or trailing
/// space (the vendor pads names with spaces and trims them when reading back), no control
/// characters, no invisible format characters (Unicode category Cf: zero-width
/// characters, bidirectional overrides) and no white space but the ASCII space, so that
/// what an operator reads is the whole name.
///
/// A unit installs no two administrators whose names look the same
/// ([`AdminName::looks_like`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdminName(String);

impl AdminName {
    /// The longest name a unit accepts.
    pub const MAX_CHARS: usize = 30;

    /// Validates a name.
    ///
    /// # Errors
    /// [`ProtoError::AdminName`] saying what is wrong with it.
    pub fn new(name: &str) -> Result<Self, ProtoError> {
        let chars = name.chars().count();
        let problem = if name.is_empty() {
            Some("it is empty")
        } else if chars > Self::MAX_CHARS {
            Some("it is longer than 30 characters")
        } else {
            label_problem(name)
        };
        match problem {
            Some(problem) => Err(ProtoError::AdminName {
                name: name.chars().take(40).collect(),
                chars,
                problem,
            }),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` and `other` look the same: their NFKC forms have the same UTS #39
    /// confusable skeleton, either as written or both lower-cased. Confusables map, e.g.,
    /// Cyrillic `а` to Latin `a`, `I` and `1` to `l`, `0` to `O`; NFKC folds full-width
    /// forms and ligatures and composes accents. So `alice`, `Alice`, `ALICE`, `aIice`,
    /// `аlice` (Cyrillic `а`) and `ａｌｉｃｅ` (full-width) all look the same. Both
    /// comparisons are needed: lower-casing first would turn `I` into `i` and miss `aIice`.
    pub fn looks_like(&self, other: &AdminName) -> bool {
        labels_look_alike(&self.0, &other.0)
    }
}

/// What is wrong with a non-empty label that operators read and type (an administrator's
/// name, a master key part's description), if anything: white space at either end,
/// control characters, white space other than the ASCII space, or invisible format
/// characters (Unicode category Cf: zero-width characters, bidirectional overrides), so
/// that what an operator reads is the whole label. Emptiness and length are the caller's
/// rules.
pub fn label_problem(label: &str) -> Option<&'static str> {
    if label.trim() != label {
        Some("it starts or ends with white space")
    } else if label.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if label.chars().any(|c| c.is_whitespace() && c != ' ') {
        Some("it contains white space other than the ASCII space")
    } else if label
        .chars()
        .any(|c| c.general_category() == GeneralCategory::Format)
    {
        Some("it contains invisible format characters (zero-width or bidirectional controls)")
    } else {
        None
    }
}

/// Whether two labels look the same, as [`AdminName::looks_like`] defines it.
pub fn labels_look_alike(a: &str, b: &str) -> bool {
    let (a, b) = (compare_keys(a), compare_keys(b));
    a[0] == b[0] || a[1] == b[1]
}

/// The confusable skeletons of the NFKC form, as written and lower-cased.
fn compare_keys(label: &str) -> [String; 2] {
    let nfkc: String = label.nfkc().collect();
    let lower: String = nfkc.chars().flat_map(char::to_lowercase).collect();
    [
        unicode_security::skeleton(&nfkc).collect(),
        unicode_security::skeleton(&lower).collect(),
    ]
}

impl fmt::Debug for AdminName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminName({:?})", self.0)
    }
}

impl fmt::Display for AdminName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::str::FromStr for AdminName {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl FixedTag for AdminName {
    const TAG: Tag = Tag::Utf8String;
}

impl<'a> DecodeValue<'a> for AdminName {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let s = Utf8StringRef::decode_value(reader, header)?;
        Self::new(s.as_str()).map_err(|_| Tag::Utf8String.value_error())
    }
}

impl EncodeValue for AdminName {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }
    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(self.0.as_bytes())
    }
}

/// A signature threshold once a unit has left imprint mode: 1 to 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u8);

impl Threshold {
    /// The largest threshold (and the most administrators a unit holds).
    pub const MAX: u8 = 8;

    /// Validates a threshold.
    ///
    /// # Errors
    /// [`ProtoError::Threshold`] when `n` is not in 1..=8.
    pub fn new(n: u32) -> Result<Self, ProtoError> {
        match u8::try_from(n) {
            Ok(v @ 1..=8) => Ok(Self(v)),
            _ => Err(ProtoError::Threshold { value: n }),
        }
    }

    /// The number of signatures.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The three kinds of crypto unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, der::Enumerated)]
#[repr(u32)]
pub enum UnitType {
    /// Serves the instance's workloads. Can never export its master key.
    Operational = 0,
    /// Generates random master keys and keeps the backup copy; may export.
    Recovery = 1,
    /// Warm standby of the operational units in another region.
    Failover = 2,
}

impl UnitType {
    /// The vendor's `TYPE` column value (`OPERATIONAL`, `RECOVERY`, `FAILOVER`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Operational => "OPERATIONAL",
            Self::Recovery => "RECOVERY",
            Self::Failover => "FAILOVER",
        }
    }

    /// Lower-case name used in JSON output and configuration.
    pub fn json_name(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::Recovery => "recovery",
            Self::Failover => "failover",
        }
    }

    /// Whether this unit type may generate a random master key and export one.
    pub fn may_export(self) -> bool {
        self == Self::Recovery
    }
}

/// State of a master key register as reported on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, der::Enumerated)]
#[repr(u32)]
pub enum RegisterState {
    /// No value.
    Empty = 0,
    /// New register: loaded, not yet committed.
    FullUncommitted = 1,
    /// New register: committed, ready to be made current.
    FullCommitted = 2,
    /// Current register: holds the master key in use.
    Valid = 3,
}

impl RegisterState {
    /// The vendor's spelling (`Empty`, `Full Uncommitted`, `Full Committed`, `Valid`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::FullUncommitted => "Full Uncommitted",
            Self::FullCommitted => "Full Committed",
            Self::Valid => "Valid",
        }
    }

    /// Snake-case name used in JSON output.
    pub fn json_name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::FullUncommitted => "full_uncommitted",
            Self::FullCommitted => "full_committed",
            Self::Valid => "valid",
        }
    }
}

/// Which of a unit's two master key registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, der::Enumerated)]
#[repr(u32)]
pub enum Register {
    /// The current master key register (the key in use).
    Current = 0,
    /// The new master key register (staging area).
    New = 1,
}
