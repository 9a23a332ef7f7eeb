//! Administrators whose keys live in memory: tests and benches sign commands without key
//! files, tokens or passwords.

use tke_proto::{
    ecdsa_p256::EcdsaKey,
    p256::{ecdsa::DerSignature, PublicKey},
    AdminCertificate, AdminInfo, AdminName,
};
use tke_sigkey::{SignError, Signer, SignerKind};

/// An administrator with a random key in memory; signs through aws-lc, as the file signer
/// does. Reports itself as [`SignerKind::File`].
pub struct MemSigner {
    key: EcdsaKey,
    cert: AdminCertificate,
}

impl MemSigner {
    /// A new administrator named `name` with a fresh key.
    ///
    /// # Panics
    /// When `name` is not a valid administrator name.
    pub fn new(name: &str) -> Self {
        let name = AdminName::new(name).unwrap_or_else(|e| panic!("{e}"));
        let key = EcdsaKey::random();
        let public = PublicKey::from(key.verifying_key());
        let cert = AdminCertificate::build(&name, &public, Box::new(|m: &[u8]| Ok(key.sign(m)?)))
            .unwrap_or_else(|e| panic!("administrator certificate of {name}: {e}"));
        Self { key, cert }
    }

    /// The administrator as a ceremony names the keys that may sign: its key's SKI and
    /// its name.
    pub fn admin_info(&self) -> AdminInfo {
        AdminInfo {
            ski: self.cert.ski(),
            name: self.cert.name().clone(),
        }
    }
}

impl Signer for MemSigner {
    fn certificate(&self) -> &AdminCertificate {
        &self.cert
    }
    fn kind(&self) -> SignerKind {
        SignerKind::File
    }
    fn sign(&self, message: &[u8]) -> Result<DerSignature, SignError> {
        self.key.sign(message).map_err(|e| SignError::Provider {
            name: self.cert.name().clone(),
            ski: self.cert.ski(),
            source: Box::new(e),
        })
    }
}

impl core::fmt::Debug for MemSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MemSigner({})", self.cert.name())
    }
}
