#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;

use tke_proto::{
    der::{asn1::OctetString, Encode},
    p256::ecdsa::DerSignature,
    AdminCertificate, AdminCommand, AdminName, BoxError, SignedCommand, SignerInfo, Ski,
};

/// Where a signature key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignerKind {
    /// A password-protected key file on the workstation.
    File,
    /// A key on a PKCS#11 token.
    Pkcs11,
    /// A key in a YubiKey PIV slot.
    YubiKey,
}

impl SignerKind {
    /// Lower-case label for tables and JSON (`file`, `pkcs11`, `yubikey`).
    pub fn label(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Pkcs11 => "pkcs11",
            Self::YubiKey => "yubikey",
        }
    }
}

/// Errors while signing. Each names the administrator concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key's provider failed (token, card, file...).
    #[error("the signature key of administrator {name} ({}) could not sign", ski.short())]
    Provider {
        /// The administrator.
        name: AdminName,
        /// Its SKI.
        ski: Ski,
        /// The provider's error.
        source: BoxError,
    },
    /// The signature does not verify with the administrator certificate: the key and the
    /// certificate do not belong together.
    #[error("the signature key of administrator {name} ({}) does not match its certificate", ski.short())]
    KeyMismatch {
        /// The administrator.
        name: AdminName,
        /// Its SKI.
        ski: Ski,
    },
    /// The same administrator was given twice.
    #[error("administrator {name} ({}) was given more than once", ski.short())]
    Duplicate {
        /// The administrator.
        name: AdminName,
        /// Its SKI.
        ski: Ski,
    },
    /// The command could not be encoded.
    #[error("cannot encode the command")]
    Encoding(#[from] tke_proto::der::Error),
}

/// An administrator identity that signs: a P-256 key and its administrator certificate.
///
/// Implemented once per provider crate (`tke-sigkey-file`, `tke-sigkey-pkcs11`,
/// `tke-sigkey-yubikey`). Implementations never prompt: secrets (passwords, PINs) are
/// given when the signer is opened.
pub trait Signer: Send + Sync {
    /// The administrator certificate (name, SKI and public key come from it).
    fn certificate(&self) -> &AdminCertificate;

    /// Where the key lives.
    fn kind(&self) -> SignerKind;

    /// Signs `message` with ECDSA P-256 over SHA-256 and returns the DER signature.
    ///
    /// # Errors
    /// [`SignError::Provider`] when the key's provider fails.
    fn sign(&self, message: &[u8]) -> Result<DerSignature, SignError>;

    /// The administrator's name.
    fn name(&self) -> &AdminName {
        self.certificate().name()
    }

    /// The administrator's SKI.
    fn ski(&self) -> Ski {
        self.certificate().ski()
    }
}

/// Proves a signer usable: signs a test message and verifies the signature with the
/// certificate's key (the vendor SDK's "each key usable" check).
///
/// # Errors
/// [`SignError::Provider`] if it cannot sign, [`SignError::KeyMismatch`] if the signature
/// does not verify.
pub fn check_usable(signer: &dyn Signer) -> Result<(), SignError> {
    const PROBE: &[u8] = b"TKE signature key check";
    let sig = signer.sign(PROBE)?;
    tke_proto::ecdsa_p256::verify(&signer.certificate().verifying_key(), PROBE, &sig).map_err(
        |_| SignError::KeyMismatch {
            name: signer.name().clone(),
            ski: signer.ski(),
        },
    )
}

/// Signs a command with every signer given, in order, and returns the signed command.
///
/// # Errors
/// [`SignError::Duplicate`] when a signer appears twice; any signer's error.
pub fn sign_command(
    command: &AdminCommand,
    signers: &[&dyn Signer],
) -> Result<SignedCommand, SignError> {
    let bytes = command.to_der()?;
    let mut signer_infos = Vec::with_capacity(signers.len());
    for (i, s) in signers.iter().enumerate() {
        if signers[..i].iter().any(|o| o.ski() == s.ski()) {
            return Err(SignError::Duplicate {
                name: s.name().clone(),
                ski: s.ski(),
            });
        }
        let sig = s.sign(&bytes)?;
        signer_infos.push(SignerInfo {
            ski: s.ski(),
            signature: OctetString::new(sig.as_bytes())?,
        });
    }
    Ok(SignedCommand {
        command: OctetString::new(bytes)?,
        signer_infos,
    })
}
