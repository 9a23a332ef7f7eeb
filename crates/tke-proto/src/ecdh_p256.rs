//! ECDH over P-256 and P-256 key generation, computed by aws-lc.
//!
//! Master-key transport makes an importer key on the target, an ephemeral key and one
//! ECDH on the source, and one ECDH on the target, so every copy of a key costs several
//! scalar multiplications; aws-lc does each in a tenth of the time of the pure-Rust
//! `p256` arithmetic (see [`crate::ecdsa_p256`]). Keys stay `p256` types in every API.
//!
//! ```
//! use tke_proto::ecdh_p256::{agree, generate};
//!
//! let (a, a_pub) = generate().unwrap();
//! let (b, b_pub) = generate().unwrap();
//! let (a_pub2, z1) = agree(&a, &b_pub).unwrap();
//! let (_, z2) = agree(&b, &a_pub).unwrap();
//! assert_eq!(a_pub2, a_pub);
//! assert_eq!(*z1, *z2);
//! ```

use aws_lc_rs::{
    agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256},
    encoding::AsBigEndian,
};
use p256::{elliptic_curve::sec1::ToEncodedPoint, PublicKey, SecretKey};
use zeroize::Zeroizing;

/// aws-lc refused a key or failed (not expected for valid P-256 keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("P-256 key agreement failed: {0}")]
pub struct EcdhFailed(&'static str);

fn private_key(secret: &SecretKey) -> Result<PrivateKey, EcdhFailed> {
    let scalar = crate::scalar_bytes(secret.to_bytes());
    PrivateKey::from_private_key(&ECDH_P256, scalar.as_slice())
        .map_err(|_| EcdhFailed("aws-lc refused the private key"))
}

fn public_of(key: &PrivateKey) -> Result<PublicKey, EcdhFailed> {
    let public = key
        .compute_public_key()
        .map_err(|_| EcdhFailed("aws-lc cannot compute the public key"))?;
    PublicKey::from_sec1_bytes(public.as_ref())
        .map_err(|_| EcdhFailed("aws-lc returned an invalid public key"))
}

/// A fresh random key pair.
///
/// # Errors
/// [`EcdhFailed`] if aws-lc fails (not expected).
pub fn generate() -> Result<(SecretKey, PublicKey), EcdhFailed> {
    let key =
        PrivateKey::generate(&ECDH_P256).map_err(|_| EcdhFailed("aws-lc cannot generate a key"))?;
    let bytes = AsBigEndian::<aws_lc_rs::encoding::EcPrivateKeyBin>::as_be_bytes(&key)
        .map_err(|_| EcdhFailed("aws-lc cannot export the private key"))?;
    let secret = SecretKey::from_slice(bytes.as_ref())
        .map_err(|_| EcdhFailed("aws-lc returned an invalid private key"))?;
    Ok((secret, public_of(&key)?))
}

/// ECDH (SEC 1 §3.3.1): returns `secret`'s own public key and the x-coordinate of
/// `secret · peer`, zeroized on drop.
///
/// # Errors
/// [`EcdhFailed`] if aws-lc refuses a key (not expected for valid keys).
pub fn agree(
    secret: &SecretKey,
    peer: &PublicKey,
) -> Result<(PublicKey, Zeroizing<[u8; 32]>), EcdhFailed> {
    agree_with(&private_key(secret)?, peer)
}

/// ECDH with a fresh ephemeral key that never leaves aws-lc: returns the ephemeral public
/// key and the x-coordinate of `e · peer`, zeroized on drop.
///
/// # Errors
/// [`EcdhFailed`] if aws-lc refuses the peer's key or fails (not expected).
pub fn agree_ephemeral(peer: &PublicKey) -> Result<(PublicKey, Zeroizing<[u8; 32]>), EcdhFailed> {
    let key =
        PrivateKey::generate(&ECDH_P256).map_err(|_| EcdhFailed("aws-lc cannot generate a key"))?;
    agree_with(&key, peer)
}

fn agree_with(
    key: &PrivateKey,
    peer: &PublicKey,
) -> Result<(PublicKey, Zeroizing<[u8; 32]>), EcdhFailed> {
    let own = public_of(key)?;
    let point = peer.to_encoded_point(false);
    let z = agreement::agree(
        key,
        UnparsedPublicKey::new(&ECDH_P256, point.as_bytes()),
        EcdhFailed("aws-lc refused the peer's public key"),
        |z| {
            let mut out = Zeroizing::new([0u8; 32]);
            if z.len() != 32 {
                return Err(EcdhFailed("the shared secret is not 32 bytes"));
            }
            out.copy_from_slice(z);
            Ok(out)
        },
    )?;
    Ok((own, z))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn agrees_with_p256() {
        let (a, a_pub) = generate().unwrap();
        assert_eq!(a.public_key(), a_pub);
        let b = SecretKey::random(&mut rand_core::OsRng);
        let (b_pub, z) = agree(&b, &a_pub).unwrap();
        assert_eq!(b_pub, b.public_key());
        let reference = p256::ecdh::diffie_hellman(b.to_nonzero_scalar(), a_pub.as_affine());
        assert_eq!(&z[..], reference.raw_secret_bytes().as_slice());
    }

    #[test]
    fn ephemeral_agreement_matches_the_peer_side() {
        let (b, b_pub) = generate().unwrap();
        let (e_pub, z1) = agree_ephemeral(&b_pub).unwrap();
        let (_, z2) = agree(&b, &e_pub).unwrap();
        assert_eq!(*z1, *z2);
    }
}
