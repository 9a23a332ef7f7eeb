//! What tokens return for EC keys and ECDSA signatures, in their several forms.

use p256::{ecdsa::Signature, PublicKey};
use tke_proto::der::{asn1::OctetString, Decode as _};

/// `CKA_EC_PARAMS` of P-256: the DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7).
pub(crate) const P256_PARAMS: [u8; 10] =
    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Reads `CKA_EC_POINT`. PKCS#11 says it is the DER of an OCTET STRING holding the SEC1
/// point; some tokens return the bare point. Both are accepted, compressed or not.
pub(crate) fn parse_ec_point(bytes: &[u8]) -> Result<PublicKey, &'static str> {
    if let Ok(os) = OctetString::from_der(bytes) {
        if let Ok(key) = PublicKey::from_sec1_bytes(os.as_bytes()) {
            return Ok(key);
        }
    }
    PublicKey::from_sec1_bytes(bytes).map_err(|_| "its CKA_EC_POINT is not a P-256 point")
}

/// `CKA_EC_POINT` as written by PKCS#11 v2.40: DER OCTET STRING of the uncompressed point.
#[cfg(test)]
fn ec_point_der(key: &PublicKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use tke_proto::der::Encode as _;
    let point = key.to_encoded_point(false);
    OctetString::new(point.as_bytes())
        .and_then(|os| os.to_der())
        .unwrap_or_default()
}

/// Reads a `CKM_ECDSA` signature: PKCS#11 returns r ‖ s (64 bytes for P-256); a few
/// tokens return DER. Both are accepted.
pub(crate) fn parse_signature(bytes: &[u8]) -> Option<Signature> {
    if bytes.len() == 64 {
        return Signature::from_slice(bytes).ok();
    }
    Signature::from_der(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::{
        ecdsa::{signature::hazmat::PrehashSigner, SigningKey},
        SecretKey,
    };
    use tke_proto::der::Encode as _;

    fn key() -> PublicKey {
        SecretKey::random(&mut rand_core::OsRng).public_key()
    }

    #[test]
    fn ec_point_wrapped_or_raw_compressed_or_not() {
        let k = key();
        let raw = k.to_encoded_point(false);
        let compressed = k.to_encoded_point(true);
        assert_eq!(parse_ec_point(&ec_point_der(&k)).unwrap(), k);
        assert_eq!(ec_point_der(&k).len(), 67);
        assert_eq!(parse_ec_point(raw.as_bytes()).unwrap(), k);
        assert_eq!(parse_ec_point(compressed.as_bytes()).unwrap(), k);
        let wrapped = OctetString::new(compressed.as_bytes())
            .unwrap()
            .to_der()
            .unwrap();
        assert_eq!(parse_ec_point(&wrapped).unwrap(), k);
    }

    #[test]
    fn a_raw_point_that_looks_like_der_is_still_read() {
        // A raw point 0x04 0x3f ... also reads as a DER OCTET STRING of 63 bytes, which is
        // no point: the raw reading must win. About one key in 256 has such an X.
        let k = core::iter::repeat_with(key)
            .find(|k| k.to_encoded_point(false).as_bytes()[1] == 0x3f)
            .unwrap();
        assert_eq!(
            parse_ec_point(k.to_encoded_point(false).as_bytes()).unwrap(),
            k
        );
    }

    #[test]
    fn ec_point_garbage_is_refused() {
        assert!(parse_ec_point(&[]).is_err());
        assert!(parse_ec_point(&[0x04, 0x41, 0x04]).is_err());
        assert!(parse_ec_point(&[0u8; 65]).is_err());
    }

    #[test]
    fn signatures_raw_or_der() {
        let sk = SigningKey::random(&mut rand_core::OsRng);
        let sig: Signature = sk.sign_prehash(&[7u8; 32]).unwrap();
        assert_eq!(parse_signature(&sig.to_bytes()).unwrap(), sig);
        assert_eq!(parse_signature(sig.to_der().as_bytes()).unwrap(), sig);
        assert!(parse_signature(&[0u8; 64]).is_none());
        assert!(parse_signature(&[1u8; 63]).is_none());
        assert!(parse_signature(&[]).is_none());
    }

    #[test]
    fn p256_params_are_the_named_curve_oid() {
        use tke_proto::der::asn1::ObjectIdentifier;
        let oid = ObjectIdentifier::from_der(&P256_PARAMS).unwrap();
        assert_eq!(oid.to_string(), "1.2.840.10045.3.1.7");
    }
}
