//! The PKCS#11 signer.

use core::fmt;
use std::{
    path::Path,
    sync::{Mutex, PoisonError},
};

use p256::ecdsa::DerSignature;
use tke_pkcs11::cryptoki::object::ObjectHandle;
use tke_proto::{AdminCertificate, AdminName};
use tke_sigkey::{SignError, Signer, SignerKind};

use crate::{Pin, Pkcs11Error, Pkcs11Uri, TokenName, TokenSession};

/// An administrator signature key on a PKCS#11 token, opened: its certificate, and one
/// logged-in read/write session on the token, kept open and reused for every signature
/// (sessions are not shared between threads: signing takes a lock).
///
/// The private key never leaves the token: it signs SHA-256 digests computed here with
/// `CKM_ECDSA`. `Debug` shows the administrator, the token and the key URI, which never
/// holds a PIN.
pub struct Pkcs11Signer {
    certificate: AdminCertificate,
    uri: Pkcs11Uri,
    key: ObjectHandle,
    session: Mutex<TokenSession>,
}

impl Pkcs11Signer {
    pub(crate) fn new(
        certificate: AdminCertificate,
        uri: Pkcs11Uri,
        key: ObjectHandle,
        session: TokenSession,
    ) -> Self {
        Self {
            certificate,
            uri,
            key,
            session: Mutex::new(session),
        }
    }

    /// Generates a new administrator key for `name` on the token the URI names, under the
    /// label `object=` (see [`TokenSession::generate`]).
    ///
    /// # Errors
    /// The errors of [`TokenSession::open`] and [`TokenSession::generate`].
    pub fn generate(uri: &Pkcs11Uri, name: &AdminName, pin: &Pin) -> Result<Self, Pkcs11Error> {
        TokenSession::open(uri, pin)?.generate(name)
    }

    /// Registers the key pair that the URI names, already on the token, as the
    /// administrator key of `name` (see [`TokenSession::register`]).
    ///
    /// # Errors
    /// The errors of [`TokenSession::open`] and [`TokenSession::register`].
    pub fn register(uri: &Pkcs11Uri, name: &AdminName, pin: &Pin) -> Result<Self, Pkcs11Error> {
        TokenSession::open(uri, pin)?.register(name)
    }

    /// Opens a registered key: the key pair the URI names, whose public key must be the
    /// certificate's (see [`TokenSession::open_signer`]).
    ///
    /// # Errors
    /// The errors of [`TokenSession::open`] and [`TokenSession::open_signer`].
    pub fn open(
        uri: &Pkcs11Uri,
        certificate: &AdminCertificate,
        pin: &Pin,
    ) -> Result<Self, Pkcs11Error> {
        TokenSession::open(uri, pin)?.open_signer(certificate)
    }

    /// The URI that names exactly this key: the URI it was opened with, plus the key's
    /// label and `CKA_ID` as found on the token. It never holds a PIN; it keeps any
    /// `pin-source`.
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// The module file.
    pub fn module_path(&self) -> &Path {
        self.uri.module_path()
    }

    /// The token the key is on.
    pub fn token(&self) -> TokenName {
        self.lock().token().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenSession> {
        // A panic while signing leaves the session as usable as any failed call does.
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Signer for Pkcs11Signer {
    fn certificate(&self) -> &AdminCertificate {
        &self.certificate
    }

    fn kind(&self) -> SignerKind {
        SignerKind::Pkcs11
    }

    fn sign(&self, message: &[u8]) -> Result<DerSignature, SignError> {
        let sig = self
            .lock()
            .sign_with(self.key, message)
            .map_err(|e| SignError::Provider {
                name: self.name().clone(),
                ski: self.ski(),
                source: Box::new(e),
            })?;
        Ok(sig.to_der())
    }
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("name", self.certificate.name())
            .field("ski", &self.certificate.ski())
            .field("uri", &self.uri.to_string())
            .finish_non_exhaustive()
    }
}
