//! Domain control points: the 128-bit mask of EP11 that enables or disables families of
//! mechanisms in a crypto unit.
//!
//! Bits are numbered as EP11 numbers them: bit 0 is the most significant bit of byte 0,
//! bit 127 the least significant bit of byte 15. A unit reports its mask in
//! [`crate::UnitStatus`]; `addControlPoints` and `removeControlPoints` set and clear the
//! bits of a mask ([`crate::Command::AddControlPoints`],
//! [`crate::Command::RemoveControlPoints`]).
//!
//! ```
//! use tke_proto::{ControlPoint, ControlPoints};
//!
//! let mask = ControlPoints::DEFAULT;
//! assert!(mask.contains(ControlPoint::BTC));
//! assert_eq!(mask.to_hex(), "00000000000001003000000000000000");
//! let without = mask.difference(ControlPoints::of(&[ControlPoint::BTC]));
//! assert!(!without.contains(ControlPoint::BTC));
//! assert_eq!(ControlPoint::BTC.name(), Some("XCP_CPB_BTC"));
//! assert_eq!("XCP_CPB_BTC".parse::<ControlPoint>()?, ControlPoint::BTC);
//! assert_eq!("66".parse::<ControlPoint>()?, ControlPoint::BTC);
//! # Ok::<(), tke_proto::ProtoError>(())
//! ```

use core::fmt;

use der::{
    asn1::OctetStringRef, DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Tag, Writer,
};

use crate::ProtoError;

/// One control point: a bit number of the mask, 0 to 127.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ControlPoint(u8);

impl ControlPoint {
    /// The highest bit number.
    pub const MAX: u8 = 127;

    /// `XCP_CPB_ALG_EC_25519` (55): EdDSA over Edwards curves (`cryptounit-cp-eddsa`).
    pub const ALG_EC_25519: Self = Self(55);
    /// `XCP_CPB_BTC` (66): BIP32 and other bitcoin functions (`cryptounit-cp-btc`).
    pub const BTC: Self = Self(66);
    /// `XCP_CPB_ECDSA_OTHER` (67): elliptic curve signature schemes other than ECDSA and
    /// EdDSA, such as Schnorr (`cryptounit-cp-sig-other`).
    pub const ECDSA_OTHER: Self = Self(67);

    /// The named control points, in the order of the vendor's `CONTROL POINTS` columns.
    pub const NAMED: [Self; 3] = [Self::ALG_EC_25519, Self::BTC, Self::ECDSA_OTHER];

    /// A control point by its number.
    ///
    /// # Errors
    /// [`ProtoError::ControlPoint`] for a number above [`Self::MAX`].
    pub fn new(number: u32) -> Result<Self, ProtoError> {
        match u8::try_from(number) {
            Ok(n) if n <= Self::MAX => Ok(Self(n)),
            _ => Err(ProtoError::ControlPoint {
                value: number.to_string(),
            }),
        }
    }

    /// Its bit number.
    pub fn number(self) -> u8 {
        self.0
    }

    /// The EP11 name of a named control point (`XCP_CPB_BTC`), else `None`.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::ALG_EC_25519 => Some("XCP_CPB_ALG_EC_25519"),
            Self::BTC => Some("XCP_CPB_BTC"),
            Self::ECDSA_OTHER => Some("XCP_CPB_ECDSA_OTHER"),
            _ => None,
        }
    }

    /// The byte of the mask holding this bit, and the bit's mask in that byte.
    fn position(self) -> (usize, u8) {
        (usize::from(self.0 / 8), 0x80 >> (self.0 % 8))
    }
}

impl fmt::Debug for ControlPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ControlPoint({self})")
    }
}

/// The EP11 name of a named control point, else its number.
impl fmt::Display for ControlPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Parses a number (`66`) or an EP11 name (`XCP_CPB_BTC`, case-insensitive).
impl core::str::FromStr for ControlPoint {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(p) = Self::NAMED
            .into_iter()
            .find(|p| p.name().is_some_and(|n| n.eq_ignore_ascii_case(t)))
        {
            return Ok(p);
        }
        match t.parse::<u32>() {
            Ok(n) => Self::new(n),
            Err(_) => Err(ProtoError::ControlPoint {
                value: s.chars().take(40).collect(),
            }),
        }
    }
}

/// A control point mask: 16 bytes, bit 0 the most significant bit of byte 0.
///
/// ```asn1
/// ControlPoints ::= OCTET STRING (SIZE(16))
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ControlPoints([u8; 16]);

impl ControlPoints {
    /// Length in bytes.
    pub const LEN: usize = 16;

    /// No control point set.
    pub const NONE: Self = Self([0; 16]);

    /// The mask of a new unit: the named control points set ([`ControlPoint::NAMED`]), as
    /// the vendor's new instances have them. Units whose state predates control points
    /// read this mask too.
    pub const DEFAULT: Self = Self::of(&ControlPoint::NAMED);

    /// The mask with exactly `points` set.
    pub const fn of(points: &[ControlPoint]) -> Self {
        let mut bytes = [0u8; 16];
        let mut i = 0;
        while i < points.len() {
            let n = points[i].0;
            bytes[(n / 8) as usize] |= 0x80 >> (n % 8);
            i += 1;
        }
        Self(bytes)
    }

    /// The mask of these 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The mask of a slice of exactly 16 bytes.
    ///
    /// # Errors
    /// [`ProtoError::Length`] for another length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| ProtoError::Length {
            what: "control point mask",
            expected: Self::LEN,
            actual: bytes.len(),
        })?;
        Ok(Self(arr))
    }

    /// Parses 32 hex digits.
    ///
    /// # Errors
    /// [`ProtoError::Hex`] or [`ProtoError::Length`].
    pub fn from_hex(s: &str) -> Result<Self, ProtoError> {
        let bytes = hex::decode(s.trim()).map_err(|_| ProtoError::Hex {
            what: "control point mask",
        })?;
        Self::from_slice(&bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lower-case hex (32 digits).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `point` is set.
    pub fn contains(&self, point: ControlPoint) -> bool {
        let (byte, bit) = point.position();
        self.0[byte] & bit != 0
    }

    /// Sets `point`.
    pub fn insert(&mut self, point: ControlPoint) {
        let (byte, bit) = point.position();
        self.0[byte] |= bit;
    }

    /// Clears `point`.
    pub fn remove(&mut self, point: ControlPoint) {
        let (byte, bit) = point.position();
        self.0[byte] &= !bit;
    }

    /// The points set in either mask (what `addControlPoints` leaves).
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(core::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    /// The points of `self` not set in `other` (what `removeControlPoints` leaves).
    #[must_use]
    pub fn difference(self, other: Self) -> Self {
        Self(core::array::from_fn(|i| self.0[i] & !other.0[i]))
    }

    /// Whether no point is set.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 16]
    }

    /// The points set, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = ControlPoint> + '_ {
        (0..=ControlPoint::MAX)
            .map(ControlPoint)
            .filter(|p| self.contains(*p))
    }
}

impl FromIterator<ControlPoint> for ControlPoints {
    fn from_iter<I: IntoIterator<Item = ControlPoint>>(iter: I) -> Self {
        let mut mask = Self::NONE;
        for p in iter {
            mask.insert(p);
        }
        mask
    }
}

/// The set points, named where they have a name.
impl fmt::Debug for ControlPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ControlPoints")
            .field(&format_args!("{}", self.to_hex()))
            .field(&self.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Display for ControlPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FixedTag for ControlPoints {
    const TAG: Tag = Tag::OctetString;
}

impl<'a> DecodeValue<'a> for ControlPoints {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let os = OctetStringRef::decode_value(reader, header)?;
        let arr: [u8; 16] = os
            .as_bytes()
            .try_into()
            .map_err(|_| Tag::OctetString.length_error())?;
        Ok(Self(arr))
    }
}

impl EncodeValue for ControlPoints {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(Self::LEN)
    }
    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::{Decode, Encode};

    #[test]
    fn bit_zero_is_the_most_significant_bit_of_byte_zero() {
        let mut m = ControlPoints::NONE;
        m.insert(ControlPoint::new(0).unwrap());
        assert_eq!(m.as_bytes()[0], 0x80);
        m.insert(ControlPoint::new(7).unwrap());
        assert_eq!(m.as_bytes()[0], 0x81);
        m.insert(ControlPoint::new(127).unwrap());
        assert_eq!(m.as_bytes()[15], 0x01);
        assert_eq!(
            m.iter().map(ControlPoint::number).collect::<Vec<_>>(),
            [0, 7, 127]
        );
        m.remove(ControlPoint::new(7).unwrap());
        assert_eq!(m.as_bytes()[0], 0x80);
    }

    #[test]
    fn default_mask_known_answer() {
        // 55: byte 6, least significant bit; 66 and 67: byte 8, 0x20 and 0x10.
        assert_eq!(
            ControlPoints::DEFAULT.to_hex(),
            "00000000000001003000000000000000"
        );
        assert_eq!(
            ControlPoints::DEFAULT.iter().collect::<Vec<_>>(),
            ControlPoint::NAMED
        );
        assert_eq!(ControlPoint::NAMED.map(ControlPoint::number), [55, 66, 67]);
    }

    #[test]
    fn numbers_and_names() {
        assert!(ControlPoint::new(128).is_err());
        assert!(ControlPoint::new(u32::MAX).is_err());
        assert_eq!(ControlPoint::new(127).unwrap().number(), 127);
        for p in ControlPoint::NAMED {
            let name = p.name().unwrap();
            assert_eq!(name.parse::<ControlPoint>().unwrap(), p);
            assert_eq!(name.to_lowercase().parse::<ControlPoint>().unwrap(), p);
            assert_eq!(p.to_string(), name);
        }
        assert_eq!("12".parse::<ControlPoint>().unwrap().to_string(), "12");
        assert_eq!(ControlPoint::new(12).unwrap().name(), None);
        for bad in ["128", "-1", "XCP_CPB_NOPE", ""] {
            let e = bad.parse::<ControlPoint>().unwrap_err();
            assert!(matches!(e, ProtoError::ControlPoint { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn union_and_difference() {
        let a = ControlPoints::of(&[ControlPoint::BTC, ControlPoint::new(3).unwrap()]);
        let b = ControlPoints::of(&[ControlPoint::BTC, ControlPoint::ECDSA_OTHER]);
        assert_eq!(
            a.union(b),
            ControlPoints::of(&[
                ControlPoint::new(3).unwrap(),
                ControlPoint::BTC,
                ControlPoint::ECDSA_OTHER
            ])
        );
        assert_eq!(
            a.difference(b),
            ControlPoints::of(&[ControlPoint::new(3).unwrap()])
        );
        assert!(a.difference(a).is_empty());
        assert_eq!(b.iter().collect::<ControlPoints>(), b);
    }

    #[test]
    fn der_round_trip_and_strict_size() {
        let der = ControlPoints::DEFAULT.to_der().unwrap();
        assert_eq!(hex::encode(&der), "041000000000000001003000000000000000");
        assert_eq!(
            ControlPoints::from_der(&der).unwrap(),
            ControlPoints::DEFAULT
        );
        for len in [0usize, 15, 17] {
            let mut bad = vec![0x04, len as u8];
            bad.resize(2 + len, 0);
            assert!(ControlPoints::from_der(&bad).is_err(), "{len} bytes");
        }
        assert!(ControlPoints::from_slice(&[0; 15]).is_err());
        assert_eq!(
            ControlPoints::from_hex("00000000000001003000000000000000").unwrap(),
            ControlPoints::DEFAULT
        );
    }

    #[test]
    fn debug_names_the_points() {
        let s = format!("{:?}", ControlPoints::DEFAULT);
        assert!(
            s.contains("XCP_CPB_BTC") && s.contains("00000000000001003"),
            "{s}"
        );
    }
}
