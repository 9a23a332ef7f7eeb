//! What tokens hold for P-256 keys and return for ECDSA signatures, in their several
//! forms.
//!
//! # `CKA_EC_POINT`
//!
//! PKCS#11 says `CKA_EC_POINT` is the DER encoding of an X9.62 `ECPoint`: an OCTET STRING
//! holding the SEC1 point. Some tokens return the bare SEC1 point instead. X9.62 and SEC1
//! allow the point compressed (`02`/`03` ‖ X) as well as uncompressed (`04` ‖ X ‖ Y).
//!
//! **Decision: all four forms are accepted** — wrapped or bare, compressed or not — and
//! nothing else. Why: a compressed point is a standard encoding of the same key, and the
//! value comes from the token that holds the key, not from the network; decompressing it
//! is exact (the point is then checked to be on the curve, and not the identity). TKE
//! itself always writes the uncompressed 65-byte form, so a key read compressed is
//! re-encoded, never passed on as read. The four forms are told apart by their length
//! alone (67, 35, 65 and 33 bytes, with their first bytes checked), so no bare point is
//! ever mistaken for a DER one (a bare `04 3f ...` is no 63-byte OCTET STRING).
//!
//! # Signatures
//!
//! `CKM_ECDSA` returns `r ‖ s`, 64 bytes for P-256; a few tokens return the DER
//! `ECDSA-Sig-Value` instead. Both are read into a [`Signature`], which gives either form
//! back (`to_bytes`, `to_der`).

use p256::{ecdsa::Signature, elliptic_curve::sec1::ToEncodedPoint as _, PublicKey};

/// `CKA_EC_PARAMS` of P-256: the DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7).
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// DER tag of an OCTET STRING.
const OCTET_STRING: u8 = 0x04;

/// A value a token returned that is not what PKCS#11 says it is. Names the length only:
/// the values are public, but a length is what tells the forms apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodingError {
    /// `CKA_EC_POINT` is in none of the accepted forms.
    #[error("a CKA_EC_POINT of {len} bytes is not a P-256 point (SEC1, compressed or uncompressed, bare or in a DER OCTET STRING)")]
    EcPointForm {
        /// Its length.
        len: usize,
    },
    /// `CKA_EC_POINT` has an accepted form but is not a point of P-256.
    #[error("the CKA_EC_POINT is not on the P-256 curve")]
    NotOnCurve,
    /// The signature is neither a 64-byte `r ‖ s` nor DER, or `r` or `s` is out of range.
    #[error(
        "an ECDSA signature of {len} bytes is neither a P-256 r ‖ s nor a DER ECDSA-Sig-Value"
    )]
    Signature {
        /// Its length.
        len: usize,
    },
}

/// Reads `CKA_EC_POINT` (see the module docs for the forms accepted).
///
/// # Errors
/// [`EncodingError::EcPointForm`] for any other form; [`EncodingError::NotOnCurve`] when
/// the form is right but the point is not on P-256.
pub fn parse_ec_point(bytes: &[u8]) -> Result<PublicKey, EncodingError> {
    let sec1 = match bytes {
        // DER OCTET STRING (short form length) of an uncompressed or compressed point.
        [OCTET_STRING, 65, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => rest,
        [OCTET_STRING, 33, rest @ ..] if rest.len() == 33 && matches!(rest[0], 0x02 | 0x03) => rest,
        // The bare point.
        [0x04, ..] if bytes.len() == 65 => bytes,
        [0x02 | 0x03, ..] if bytes.len() == 33 => bytes,
        _ => return Err(EncodingError::EcPointForm { len: bytes.len() }),
    };
    PublicKey::from_sec1_bytes(sec1).map_err(|_| EncodingError::NotOnCurve)
}

/// `CKA_EC_POINT` as PKCS#11 v2.40 writes it: the DER OCTET STRING of the uncompressed
/// point (67 bytes).
pub fn ec_point_der(key: &PublicKey) -> [u8; 67] {
    let mut out = [0u8; 67];
    out[0] = OCTET_STRING;
    out[1] = 65;
    out[2..].copy_from_slice(key.to_encoded_point(false).as_bytes());
    out
}

/// The uncompressed SEC1 point of `key` (`04 ‖ X ‖ Y`, 65 bytes): the form TKE writes.
pub fn uncompressed_point(key: &PublicKey) -> [u8; 65] {
    let mut out = [0u8; 65];
    out.copy_from_slice(key.to_encoded_point(false).as_bytes());
    out
}

/// Reads a `CKM_ECDSA` signature: `r ‖ s` (64 bytes), or DER.
///
/// # Errors
/// [`EncodingError::Signature`] when it is neither, or `r` or `s` is zero or not below
/// the group order.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, EncodingError> {
    let sig = if bytes.len() == 64 {
        Signature::from_slice(bytes)
    } else {
        Signature::from_der(bytes)
    };
    sig.map_err(|_| EncodingError::Signature { len: bytes.len() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use p256::ecdsa::{signature::Verifier as _, VerifyingKey};

    // RFC 6979, A.2.5: the P-256 key and its deterministic signature (SHA-256) of "sample".
    const UX: &str = "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6";
    const UY: &str = "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";
    const R: &str = "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716";
    const S: &str = "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8";

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn rfc6979_key() -> PublicKey {
        PublicKey::from_sec1_bytes(&h(&format!("04{UX}{UY}"))).unwrap()
    }

    #[test]
    fn ec_point_known_answers_in_all_four_forms() {
        let key = rfc6979_key();
        // Y ends in 0x99: odd, so the compressed prefix is 03.
        for (form, bytes) in [
            ("DER, uncompressed", h(&format!("0441 04{UX}{UY}"))),
            ("DER, compressed", h(&format!("0421 03{UX}"))),
            ("bare, uncompressed", h(&format!("04{UX}{UY}"))),
            ("bare, compressed", h(&format!("03{UX}"))),
        ] {
            assert_eq!(parse_ec_point(&bytes), Ok(key), "{form}");
        }
        assert_eq!(ec_point_der(&key).to_vec(), h(&format!("0441 04{UX}{UY}")));
        assert_eq!(uncompressed_point(&key).to_vec(), h(&format!("04{UX}{UY}")));
    }

    #[test]
    fn a_bare_point_that_looks_like_der_is_read_as_bare() {
        // A bare point whose X starts 3f reads as the header of a 63-byte OCTET STRING
        // (04 3f ...), which is no point: the length alone says it is bare.
        let key =
            core::iter::repeat_with(|| p256::SecretKey::random(&mut rand_core::OsRng).public_key())
                .find(|k| uncompressed_point(k)[1] == 0x3f)
                .unwrap();
        assert_eq!(parse_ec_point(&uncompressed_point(&key)), Ok(key));
    }

    #[test]
    fn other_forms_and_points_off_the_curve_are_refused() {
        let ux_uy = format!("{UX}{UY}");
        for (what, bytes, want) in [
            ("empty", vec![], EncodingError::EcPointForm { len: 0 }),
            (
                "truncated DER",
                h("044104"),
                EncodingError::EcPointForm { len: 3 },
            ),
            (
                "hybrid form 06",
                h(&format!("06{ux_uy}")),
                EncodingError::EcPointForm { len: 65 },
            ),
            (
                "DER of a bare X",
                h(&format!("0420{UX}")),
                EncodingError::EcPointForm { len: 34 },
            ),
            (
                "DER with a trailing byte",
                h(&format!("0441 04{ux_uy}00")),
                EncodingError::EcPointForm { len: 68 },
            ),
            (
                "DER long-form length",
                h(&format!("048141 04{ux_uy}")),
                EncodingError::EcPointForm { len: 68 },
            ),
            (
                "all zero",
                vec![0u8; 65],
                EncodingError::EcPointForm { len: 65 },
            ),
            (
                "Y changed: off the curve",
                h(&format!("04{UX}{}", UY.replace("99", "98"))),
                EncodingError::NotOnCurve,
            ),
            (
                "X = p: not a field element",
                h(&format!(
                    "02{}",
                    "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff"
                )),
                EncodingError::NotOnCurve,
            ),
        ] {
            assert_eq!(parse_ec_point(&bytes), Err(want), "{what}");
        }
    }

    #[test]
    fn signature_known_answers_raw_and_der() {
        let key = VerifyingKey::from(&rfc6979_key());
        let raw = h(&format!("{R}{S}"));
        // Both integers have their top bit set: each takes a 00 byte in DER.
        let der = h(&format!("3046 022100{R} 022100{S}"));
        for bytes in [&raw, &der] {
            let sig = parse_signature(bytes).unwrap();
            assert_eq!(sig.to_bytes().to_vec(), raw);
            assert_eq!(sig.to_der().as_bytes(), der.as_slice());
            key.verify(b"sample", &sig).unwrap();
        }
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let raw = h(&format!("{R}{S}"));
        for (what, bytes) in [
            ("zero r and s", vec![0u8; 64]),
            ("63 bytes", raw[..63].to_vec()),
            ("empty", vec![]),
            (
                "DER with a trailing byte",
                h(&format!("3046 022100{R} 022100{S} 00")),
            ),
            (
                "DER missing its 00 bytes",
                h(&format!("3044 0220{R} 0220{S}")),
            ),
        ] {
            assert_eq!(
                parse_signature(&bytes),
                Err(EncodingError::Signature { len: bytes.len() }),
                "{what}"
            );
        }
    }

    #[test]
    fn p256_params_are_the_named_curve_oid() {
        use p256::{elliptic_curve::pkcs8::AssociatedOid as _, NistP256};
        let oid = NistP256::OID;
        assert_eq!(oid.to_string(), "1.2.840.10045.3.1.7");
        let mut der = vec![0x06, 0x08];
        der.extend_from_slice(oid.as_bytes());
        assert_eq!(P256_PARAMS.to_vec(), der);
    }
}
