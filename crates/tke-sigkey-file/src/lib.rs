#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use core::fmt;

use tke_proto::{
    ecdsa_p256::EcdsaKey,
    p256::{
        ecdsa::{signature::Signer as _, DerSignature, Signature, SigningKey},
        SecretKey,
    },
    AdminCertificate, AdminName, ProtoError,
};
use tke_sigkey::{SignError, Signer, SignerKind};
use tke_workstation::{FilesDir, KeyFileError, Password, SigKeyEntry};

/// Errors of file signers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileSignerError {
    /// Reading or writing the key files failed (wrong password, damaged file, ...).
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The administrator certificate for a new key could not be made.
    #[error("cannot make the administrator certificate for {name}")]
    Certificate {
        /// The administrator.
        name: AdminName,
        /// The protocol layer's error.
        source: ProtoError,
    },
    /// The key was read but cannot be used for signing.
    #[error("the signature key of {name} cannot sign")]
    Key {
        /// The administrator.
        name: AdminName,
        /// Why.
        source: tke_proto::ecdsa_p256::SigningFailed,
    },
}

/// An administrator signature key held in a password-protected key file, opened.
///
/// The private key is in memory only while the `FileSigner` lives and is zeroized when it
/// is dropped. `Debug` shows the administrator's name and SKI, never the key.
pub struct FileSigner {
    /// Signs through aws-lc (see `tke_proto::ecdsa_p256`).
    key: EcdsaKey,
    entry: SigKeyEntry,
}

impl FileSigner {
    /// Makes a new administrator key: a random P-256 key, its self-signed administrator
    /// certificate, and the two files in `dir` (see `tke_workstation`). Returns the signer.
    ///
    /// # Errors
    /// [`KeyFileError::EmptyPassword`] for an empty password; any error of
    /// [`FilesDir::write_signature_key`]; [`FileSignerError::Certificate`] when the
    /// certificate cannot be built.
    pub fn generate(
        dir: &FilesDir,
        name: &AdminName,
        password: &Password,
    ) -> Result<Self, FileSignerError> {
        if password.is_empty() {
            return Err(KeyFileError::EmptyPassword { name: name.clone() }.into());
        }
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let key = SigningKey::from(&secret);
        let cert_key = key.clone();
        let certificate = AdminCertificate::build(
            name,
            &secret.public_key(),
            Box::new(move |tbs| {
                let sig: Signature = cert_key.try_sign(tbs)?;
                Ok(sig.to_der())
            }),
        )
        .map_err(|source| FileSignerError::Certificate {
            name: name.clone(),
            source,
        })?;
        let entry = dir.write_signature_key(name, &secret, &certificate, password)?;
        Ok(Self {
            key: fast_key(key, name)?,
            entry,
        })
    }

    /// Opens a listed signature key with its password.
    ///
    /// # Errors
    /// The errors of [`SigKeyEntry::decrypt`]: wrong password, damaged file, key not
    /// matching the certificate, unreadable file.
    pub fn open(entry: &SigKeyEntry, password: &Password) -> Result<Self, FileSignerError> {
        let secret = entry.decrypt(password)?;
        Ok(Self {
            key: fast_key(SigningKey::from(&secret), &entry.name)?,
            entry: entry.clone(),
        })
    }

    /// The key's listing entry (name, SKI, certificate, files).
    pub fn entry(&self) -> &SigKeyEntry {
        &self.entry
    }
}

impl Signer for FileSigner {
    fn certificate(&self) -> &AdminCertificate {
        &self.entry.certificate
    }

    fn kind(&self) -> SignerKind {
        SignerKind::File
    }

    fn sign(&self, message: &[u8]) -> Result<DerSignature, SignError> {
        self.key.sign(message).map_err(|e| SignError::Provider {
            name: self.name().clone(),
            ski: self.ski(),
            source: Box::new(e),
        })
    }
}

/// `key` wrapped to sign through aws-lc (which accepts every valid P-256 key).
fn fast_key(key: SigningKey, name: &AdminName) -> Result<EcdsaKey, FileSignerError> {
    EcdsaKey::new(key).map_err(|source| FileSignerError::Key {
        name: name.clone(),
        source,
    })
}

// The key is wiped when the signer is dropped: `EcdsaKey` zeroizes itself.
const _: fn() = {
    fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    zeroized_on_drop::<EcdsaKey>
};

impl fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSigner")
            .field("name", &self.entry.name)
            .field("ski", &self.entry.ski)
            .finish_non_exhaustive()
    }
}
