//! Master key parts: loading a unit's new register from 2 or 3 parts that people hold
//! (`importMkParts`), without the whole key ever existing outside the unit.
//!
//! The master key is the XOR of its parts. The workstation never sends them combined: it
//! seals each 32-byte part on its own to the target unit's single-use importer key, with
//! the ECDH + KDF + RFC 5649 construction of master key transport but a KDF context of its
//! own, and the unit unwraps, checks and combines them:
//!
//! ```text
//! E_k, e_k = a fresh ephemeral P-256 key pair per part k (k = 1, 2, 3: its position)
//! I        = the importer's 65-byte point
//! Z_k      = x(e_k · I)
//! ctx_k    = SHA-256("TKE master key part transport v1" ‖ targetUnitId(16) ‖ k(1) ‖ E_k(65) ‖ I(65))
//! KEK_k    = AES-256-ECB_Z_k(ctx_k[0..16]) ‖ AES-256-ECB_Z_k(ctx_k[16..32])
//! wrapped_k = AES-KWP_KEK_k(part_k),   vp_k = VP(part_k)
//! ```
//!
//! The label differs from the master key transport's ([`crate::transport::KDF_LABEL`]), so
//! a sealed part never opens as a master key envelope nor the other way round. The part's
//! own VP lets the unit check each unwrap. [`seal_parts`] verifies the importer key's
//! certification against the target's device certificate before it seals anything.
//!
//! ```
//! # use tke_proto::{*, p256::ecdsa::{signature::Signer as _, Signature, SigningKey}, transport::*};
//! # let ca_key = SigningKey::random(&mut rand_core::OsRng);
//! # let sign = |k: SigningKey| -> Box<cert::SignFn<'static>> { Box::new(move |m| Ok(Signature::to_der(&k.sign(m)))) };
//! # let ca = CaCertificate::build("fleet", &ca_key.verifying_key().into(), sign(ca_key.clone()))?;
//! # let device_key = SigningKey::random(&mut rand_core::OsRng);
//! # let unit = UnitId::random();
//! # let description = UnitDescription { unit_type: UnitType::Operational, instance_id: InstanceId::random() };
//! # let device = DeviceCertificate::issue(&ca, &unit, &description, &device_key.verifying_key().into(), sign(ca_key))?;
//! # let (importer_secret, importer_public) = ecdh_p256::generate()?;
//! # let certified = CertifiedImporter::sign(&ImporterKey::new(unit, &importer_public)?, |c, m| {
//! #     Ok(Signature::to_der(&device_key.sign(&c.signed_bytes(m))))
//! # })?;
//! use tke_proto::parts::{combine, seal_parts, soft_open_part, MasterKeyPart};
//!
//! // The workstation: two parts, sealed to the target's certified importer key.
//! let parts = [MasterKeyPart::random(), MasterKeyPart::random()];
//! let request = seal_parts(&parts, &certified, &device)?;
//!
//! // The unit: opens each part with its importer secret and combines them.
//! let opened = request
//!     .parts
//!     .iter()
//!     .enumerate()
//!     .map(|(i, sealed)| soft_open_part(sealed, unit, i + 1, &importer_secret))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let key = combine(&opened)?;
//! let xor: Vec<u8> = (0..32)
//!     .map(|i| parts[0].expose_secret()[i] ^ parts[1].expose_secret()[i])
//!     .collect();
//! assert_eq!(key.expose_secret().as_slice(), xor.as_slice());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use der::{asn1::OctetString, Sequence};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    cert::DeviceCertificate,
    transport::{self, CertifiedImporter, ImporterKey},
    Digest32, MasterKey, ProtoError, TransportError, UnitId, Vp,
};

/// Label that starts the KDF context of a part.
pub const PART_KDF_LABEL: &[u8] = b"TKE master key part transport v1";

/// The fewest parts a master key is loaded from.
pub const MIN_PARTS: usize = 2;
/// The most parts a master key is loaded from.
pub const MAX_PARTS: usize = 3;

crate::secret_value!(
    /// One 32-byte master key part. Zeroized on drop; its `Debug` shows only its VP; the
    /// value comes out only through [`MasterKeyPart::expose_secret`], to seal it or to
    /// store it encrypted.
    MasterKeyPart,
    "master key part"
);

/// One part sealed to an importer key.
///
/// ```asn1
/// SealedPart ::= SEQUENCE {
///   ephemeralPublicKey  OCTET STRING (SIZE(65)),  -- E_k, SEC1 uncompressed P-256 point
///   wrappedPart         OCTET STRING (SIZE(40)),  -- AES-KWP(KEK_k, part)
///   vp                  OCTET STRING (SIZE(32)) } -- VP of the part
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SealedPart {
    /// The workstation's ephemeral ECDH point for this part.
    pub ephemeral_public_key: OctetString,
    /// The wrapped part.
    pub wrapped_part: OctetString,
    /// The part's VP.
    pub vp: Vp,
}

impl SealedPart {
    /// Whether the point and the wrapped part have the sizes the ASN.1 gives (the decoder
    /// does not enforce them; a unit checks before any unwrap).
    pub fn shape_ok(&self) -> bool {
        self.ephemeral_public_key.as_bytes().len() == 65 && self.wrapped_part.as_bytes().len() == 40
    }
}

/// Input of `importMkParts`: the parts of a master key, each sealed to the importer key
/// named. A part's position (1, 2, 3) is bound into its KDF context.
///
/// ```asn1
/// MkPartsRequest ::= SEQUENCE {
///   importerKeyId  OCTET STRING (SIZE(32)),     -- the target's pending importer key
///   parts          SEQUENCE SIZE (2..3) OF SealedPart }
/// ```
///
/// The decoder accepts any number of parts; [`crate::Command::from_wire`] refuses fewer
/// than [`MIN_PARTS`] or more than [`MAX_PARTS`].
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct MkPartsRequest {
    /// The importer key every part is sealed to.
    pub importer_key_id: Digest32,
    /// The sealed parts, in order.
    pub parts: Vec<SealedPart>,
}

/// Checks a number of parts.
///
/// # Errors
/// [`ProtoError::PartCount`] outside [`MIN_PARTS`]..=[`MAX_PARTS`].
pub fn check_count(count: usize) -> Result<(), ProtoError> {
    if (MIN_PARTS..=MAX_PARTS).contains(&count) {
        Ok(())
    } else {
        Err(ProtoError::PartCount { count })
    }
}

/// The KDF context of part `index` (its position, 1 to 3) for `target`, binding the
/// ephemeral point and the importer point.
pub fn part_kdf_context(
    target: &UnitId,
    index: u8,
    ephemeral: &[u8; 65],
    importer: &[u8; 65],
) -> [u8; 32] {
    Sha256::new()
        .chain_update(PART_KDF_LABEL)
        .chain_update(target.0)
        .chain_update([index])
        .chain_update(ephemeral)
        .chain_update(importer)
        .finalize()
        .into()
}

/// A part's position as the KDF binds it: 1-based, one byte.
fn position(index: usize) -> Result<u8, ProtoError> {
    u8::try_from(index)
        .ok()
        .filter(|i| (1..=MAX_PARTS as u8).contains(i))
        .ok_or(ProtoError::PartIndex { index })
}

/// Seals `part` as part number `index` (1 to 3) for the unit that holds `importer`, which
/// the caller has verified ([`CertifiedImporter::verify`]; [`seal_parts`] does it).
///
/// # Errors
/// [`ProtoError::PublicKey`] or [`ProtoError::Transport`] for a bad importer key;
/// [`ProtoError::PartIndex`] for an index outside 1..=3.
pub fn seal_part(
    part: &MasterKeyPart,
    index: usize,
    importer: &ImporterKey,
) -> Result<SealedPart, ProtoError> {
    let k = position(index)?;
    let target = importer.unit_id;
    let (eph_point, wrapped) = transport::seal_value(
        part.expose_secret(),
        &importer.key()?,
        Box::new(|e, i| Ok(part_kdf_context(&target, k, e, i))),
    )?;
    Ok(SealedPart {
        ephemeral_public_key: OctetString::new(eph_point.to_vec())?,
        wrapped_part: OctetString::new(wrapped)?,
        vp: part.vp(),
    })
}

/// The workstation's side of `importMkParts`: checks that the parts are independent
/// ([`check_independent`], so the unit would not refuse them for that) and that
/// `importer` is certified by the device key of `target` (whose certificate the caller
/// verified against the fleet CA) and names that unit, then seals each part in order,
/// each with a fresh ephemeral key.
///
/// # Errors
/// [`ProtoError::PartCount`] for fewer than 2 or more than 3 parts;
/// [`TransportError::PartsNotIndependent`];
/// [`ProtoError::Transport`] / [`ProtoError::ProtocolVersion`] when the importer is not
/// certified by `target`; [`ProtoError::PublicKey`] for a bad point.
pub fn seal_parts(
    parts: &[MasterKeyPart],
    importer: &CertifiedImporter,
    target: &DeviceCertificate,
) -> Result<MkPartsRequest, ProtoError> {
    check_independent(parts)?;
    let importer = importer.verify(target)?;
    let sealed = parts
        .iter()
        .enumerate()
        .map(|(i, part)| seal_part(part, i + 1, &importer))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MkPartsRequest {
        importer_key_id: importer.key_id,
        parts: sealed,
    })
}

/// The software reference of the unit's side for one part: recomputes the KEK of part
/// `index` for `target` with the importer's secret, unwraps, and checks the part's VP.
///
/// # Errors
/// [`ProtoError::PublicKey`] for a bad ephemeral point; [`ProtoError::Transport`] when the
/// part does not unwrap or its VP differs; [`ProtoError::PartIndex`] for an index outside
/// 1..=3.
pub fn soft_open_part(
    sealed: &SealedPart,
    target: UnitId,
    index: usize,
    importer_secret: &p256::SecretKey,
) -> Result<MasterKeyPart, ProtoError> {
    let k = position(index)?;
    let value = transport::open_value(
        importer_secret,
        sealed.ephemeral_public_key.as_bytes(),
        sealed.wrapped_part.as_bytes(),
        &sealed.vp,
        Box::new(|e, i| Ok(part_kdf_context(&target, k, e, i))),
    )?;
    Ok(MasterKeyPart(value))
}

/// Checks that `parts` are **independent**: no part is zero, no two are equal, and three
/// do not XOR to zero. Otherwise their key would equal a part or the XOR of fewer parts
/// than given — known to fewer people than the parts' owners — or be zero. The check never
/// computes the XOR of all the parts (the key): the last part is compared with the XOR of
/// each subset of the others.
///
/// # Errors
/// [`ProtoError::PartCount`] for fewer than 2 or more than 3 parts;
/// [`TransportError::PartsNotIndependent`].
pub fn check_independent(parts: &[MasterKeyPart]) -> Result<(), ProtoError> {
    use subtle::ConstantTimeEq as _;
    check_count(parts.len())?;
    let Some((last, others)) = parts.split_last() else {
        return Err(ProtoError::PartCount { count: 0 });
    };
    let zero = [0u8; 32];
    let mut dependent = last.0.ct_eq(&zero);
    for subset in 1..(1u32 << others.len()) {
        let x = xor_of(others, subset);
        dependent |= x.ct_eq(&zero) | x.ct_eq(&*last.0);
    }
    if bool::from(dependent) {
        return Err(TransportError::PartsNotIndependent.into());
    }
    Ok(())
}

/// The master key of `parts`: their XOR, computed in a zeroizing buffer, once
/// [`check_independent`] passed. Only a unit calls it: the workstation never combines the
/// parts.
///
/// # Errors
/// As [`check_independent`].
pub fn combine(parts: &[MasterKeyPart]) -> Result<MasterKey, ProtoError> {
    check_independent(parts)?;
    let all = (1u32 << parts.len()) - 1;
    MasterKey::from_slice(xor_of(parts, all).as_slice())
}

/// The XOR of the parts whose bit is set in `subset`, in a zeroizing buffer.
fn xor_of(parts: &[MasterKeyPart], subset: u32) -> Zeroizing<[u8; 32]> {
    let mut acc = Zeroizing::new([0u8; 32]);
    for (i, part) in parts.iter().enumerate() {
        if subset & (1 << i) != 0 {
            for (a, v) in acc.iter_mut().zip(part.expose_secret()) {
                *a ^= v;
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(byte: u8) -> MasterKeyPart {
        MasterKeyPart::from_slice(&[byte; 32]).unwrap()
    }

    #[test]
    fn combine_is_the_xor() {
        let k = combine(&[part(0x0f), part(0xf0)]).unwrap();
        assert_eq!(k.expose_secret(), &[0xff; 32]);
        let k = combine(&[part(0x01), part(0x02), part(0x08)]).unwrap();
        assert_eq!(k.expose_secret(), &[0x0b; 32]);
    }

    #[test]
    fn dependent_parts_are_refused() {
        let refused = |parts: &[MasterKeyPart]| {
            matches!(
                combine(parts),
                Err(ProtoError::Transport(TransportError::PartsNotIndependent))
            )
        };
        assert!(refused(&[part(7), part(7)]));
        assert!(refused(&[part(0), part(7)]));
        assert!(refused(&[part(7), part(1), part(7)]));
        assert!(refused(&[part(3), part(0), part(5)]));
        // 1 ^ 2 ^ 3 = 0: the key would be zero.
        assert!(refused(&[part(1), part(2), part(3)]));
        assert!(matches!(
            combine(&[part(1)]),
            Err(ProtoError::PartCount { count: 1 })
        ));
        assert!(matches!(
            combine(&[part(1), part(2), part(4), part(8)]),
            Err(ProtoError::PartCount { count: 4 })
        ));
        // Independent parts pass, in any order.
        for parts in [
            vec![part(1), part(2)],
            vec![part(1), part(2), part(4)],
            vec![part(4), part(1), part(2)],
            vec![part(3), part(5), part(9)],
        ] {
            check_independent(&parts).unwrap();
        }
        // Every way of being dependent, wherever the culprit sits.
        for parts in [
            [part(7), part(1), part(7)],
            [part(1), part(7), part(7)],
            [part(0), part(1), part(2)],
            [part(1), part(2), part(0)],
            [part(3), part(1), part(2)],
            [part(1), part(3), part(2)],
        ] {
            assert!(refused(&parts), "{parts:?}");
        }
    }

    #[test]
    fn master_key_part_debug_hides_the_value() {
        let p = part(0xab);
        let s = format!("{p:?}");
        assert!(!s.contains("abab") && !s.contains("171"), "{s}");
        assert!(s.contains(&p.vp().to_hex()), "{s}");
    }

    #[test]
    fn positions_are_1_to_3() {
        assert_eq!(position(1).unwrap(), 1);
        assert_eq!(position(3).unwrap(), 3);
        assert!(position(0).is_err());
        assert!(position(4).is_err());
    }
}
