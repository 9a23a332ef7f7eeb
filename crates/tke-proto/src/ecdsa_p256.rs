//! ECDSA over P-256 with SHA-256, computed by aws-lc.
//!
//! Every command carries administrator signatures that the unit verifies, and every
//! answer carries a device signature that the client verifies, so ECDSA is per-command
//! work on both ends of the wire. On our 2-core machines the pure-Rust `p256` arithmetic
//! takes about 250 µs to sign and 400 µs to verify; aws-lc (the library rustls uses here
//! too) about 25 µs and 70 µs. Keys and signatures keep their `p256` / `ecdsa` types in
//! every API; this module is the one place that hands them to aws-lc.
//!
//! ```
//! use tke_proto::ecdsa_p256::{verify, EcdsaKey};
//!
//! let key = EcdsaKey::random();
//! let sig = key.sign(b"command bytes").unwrap();
//! assert!(verify(key.verifying_key(), b"command bytes", &sig).is_ok());
//! assert!(verify(key.verifying_key(), b"other bytes", &sig).is_err());
//! ```

use std::fmt;

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{
        EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING,
    },
};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};

/// A signature that does not verify under the key it was checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ECDSA P-256 signature does not verify")]
pub struct BadSignature;

/// A P-256 key that could not be used for signing (not expected for a valid `p256` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the P-256 key cannot sign: {0}")]
pub struct SigningFailed(&'static str);

/// Verifies an ECDSA P-256 / SHA-256 signature (DER `ECDSA-Sig-Value`) over `message`.
/// Accepts exactly what `p256`'s verifier accepts (high and low S alike).
///
/// # Errors
/// [`BadSignature`] when it does not verify.
pub fn verify(
    key: &VerifyingKey,
    message: &[u8],
    signature: &DerSignature,
) -> Result<(), BadSignature> {
    let point = key.to_encoded_point(false);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point.as_bytes())
        .verify(message, signature.as_bytes())
        .map_err(|_| BadSignature)
}

/// A P-256 private key that signs through aws-lc. The scalar is also kept as a `p256`
/// [`SigningKey`] (zeroized on drop), for code that stores it or does ECDH with it;
/// aws-lc wipes its own copy when it frees it.
pub struct EcdsaKey {
    key: SigningKey,
    public: VerifyingKey,
    pair: EcdsaKeyPair,
}

impl EcdsaKey {
    /// A fresh random key.
    pub fn random() -> Self {
        // A key p256 generated is a valid P-256 key, which aws-lc always accepts; should
        // it not, draw another rather than fail.
        loop {
            if let Ok(k) = Self::new(SigningKey::random(&mut rand_core::OsRng)) {
                return k;
            }
        }
    }

    /// Wraps an existing key.
    ///
    /// # Errors
    /// [`SigningFailed`] if aws-lc refuses the key (not expected for a valid key).
    pub fn new(key: SigningKey) -> Result<Self, SigningFailed> {
        let public = *key.verifying_key();
        let scalar = crate::scalar_bytes(key.to_bytes());
        let point = public.to_encoded_point(false);
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            scalar.as_slice(),
            point.as_bytes(),
        )
        .map_err(|_| SigningFailed("aws-lc refused the key"))?;
        Ok(Self { key, public, pair })
    }

    /// Signs `message` (hashed with SHA-256), returning a DER `ECDSA-Sig-Value`.
    ///
    /// # Errors
    /// [`SigningFailed`] if aws-lc fails (not expected).
    pub fn sign(&self, message: &[u8]) -> Result<DerSignature, SigningFailed> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| SigningFailed("aws-lc failed to sign"))?;
        DerSignature::from_bytes(sig.as_ref())
            .map_err(|_| SigningFailed("aws-lc returned a malformed signature"))
    }

    /// The public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The key as a `p256` signing key (to store it, or for ECDH).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

// The `p256` copy zeroizes itself; aws-lc cleanses its copy when it frees it
// (`OPENSSL_free` wipes every allocation).
impl zeroize::ZeroizeOnDrop for EcdsaKey {}

impl fmt::Debug for EcdsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EcdsaKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use p256::ecdsa::{
        signature::{Signer as _, Verifier as _},
        Signature,
    };

    #[test]
    fn aws_lc_and_p256_accept_each_others_signatures() {
        let key = EcdsaKey::random();
        let msg = b"tke";
        // aws-lc signs, p256 verifies.
        let sig = key.sign(msg).unwrap();
        key.verifying_key().verify(msg, &sig).unwrap();
        // p256 signs, aws-lc verifies.
        let s: Signature = key.signing_key().sign(msg);
        verify(key.verifying_key(), msg, &s.to_der()).unwrap();
    }

    #[test]
    fn wrong_message_key_or_high_s_behave_as_in_p256() {
        let key = EcdsaKey::random();
        let other = EcdsaKey::random();
        let sig = key.sign(b"a").unwrap();
        assert_eq!(verify(key.verifying_key(), b"b", &sig), Err(BadSignature));
        assert_eq!(verify(other.verifying_key(), b"a", &sig), Err(BadSignature));
        // (r, n - s) verifies in p256; it must here too.
        let s = Signature::from_der(sig.as_bytes()).unwrap();
        let (r, s_) = s.split_scalars();
        let flipped = Signature::from_scalars(r, -*s_).unwrap();
        assert!(key.verifying_key().verify(b"a", &flipped).is_ok());
        verify(key.verifying_key(), b"a", &flipped.to_der()).unwrap();
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = EcdsaKey::random();
        let scalar = hex::encode(key.signing_key().to_bytes());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&scalar));
        assert_eq!(shown, "EcdsaKey(<redacted>)");
    }
}
