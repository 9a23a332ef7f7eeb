//! The kinds of [`ProtoError`](crate::ProtoError) that are checks of our own, and
//! [`ErrorChain`], which prints an error with its causes.
//!
//! The workspace's convention: an error's message describes its own layer only, and the
//! error beneath it is its [`source()`](std::error::Error::source), never also part of the
//! message. Printers walk the chain ([`ErrorChain`]) so that every cause shows once.

use core::fmt;

/// Why a certificate was refused. Callers match on the kind, never on its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The PEM block is labelled something else than `CERTIFICATE`.
    #[error("the PEM block is not a CERTIFICATE")]
    NotPemCertificate,
    /// The certificate is not X.509 version 3.
    #[error("not an X.509 v3 certificate")]
    NotV3,
    /// The signature algorithm is not ecdsa-with-SHA256.
    #[error("not signed with ecdsa-with-SHA256")]
    NotEcdsaSha256,
    /// The subject public key is not a P-256 key.
    #[error("the public key is not a P-256 key")]
    NotP256Key,
    /// The public key could not be encoded into a certificate.
    #[error("cannot encode the public key")]
    PublicKeyEncoding,
    /// The signature BIT STRING has unused bits.
    #[error("the signature has unused bits")]
    SignatureUnusedBits,
    /// The signature is not a DER `ECDSA-Sig-Value`.
    #[error("the signature is not a DER ECDSA signature")]
    SignatureEncoding,
    /// The signature does not verify under the issuer's key.
    #[error("the signature does not verify")]
    BadSignature,
    /// A name attribute is neither a UTF8String nor a PrintableString.
    #[error("a name attribute is not a string")]
    NameNotString,
    /// The subject name lacks a CN or an OU.
    #[error("the name lacks a CN or an OU")]
    MissingCnOrOu,
    /// The subjectKeyIdentifier extension is missing.
    #[error("no subjectKeyIdentifier extension")]
    MissingSubjectKeyIdentifier,
    /// The subjectKeyIdentifier is not SHA-256 of the public key.
    #[error("the subjectKeyIdentifier is not SHA-256 of the public key")]
    SubjectKeyIdentifierMismatch,
    /// An administrator certificate whose issuer is not its subject.
    #[error("issuer and subject differ")]
    IssuerNotSubject,
    /// An administrator certificate whose OU is not `TKE Administration`.
    #[error("the OU is not TKE Administration")]
    NotAdministrator,
    /// Not a self-signed certificate with the OU `TKE fleet CA`.
    #[error("not a TKE fleet CA certificate")]
    NotFleetCa,
    /// A device certificate whose signature does not verify under the fleet CA.
    #[error("the device certificate was not issued by this fleet's CA")]
    NotIssuedByFleetCa,
    /// A device certificate without the crypto unit OU or this CA as issuer.
    #[error("not a TKE crypto unit certificate of this fleet")]
    NotDeviceOfFleet,
    /// A device certificate that names another unit than the one it was given for.
    #[error("the device certificate names another unit")]
    NamesAnotherUnit,
    /// A device certificate without the TKE unit description extension (unit type and
    /// service instance).
    #[error("the device certificate has no unit description (unit type and instance)")]
    MissingUnitDescription,
    /// A device certificate whose unit description extension is not marked critical.
    #[error("the device certificate's unit description is not critical")]
    UnitDescriptionNotCritical,
    /// A device certificate with the unit description extension twice.
    #[error("the device certificate has more than one unit description")]
    DuplicateUnitDescription,
}

/// Why a master key transport step was refused or failed. Callers match on the kind,
/// never on its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The importer key's id is not SHA-256 of its point.
    #[error("the importer key id does not match its key")]
    ImporterKeyIdMismatch,
    /// The importer key's certification does not verify under the target's device key.
    #[error("the importer key is not certified by the target unit")]
    ImporterNotCertified,
    /// The certified importer key names another unit than the target.
    #[error("the importer key belongs to another unit")]
    ImporterOfAnotherUnit,
    /// An importer key could not be generated.
    #[error("the importer key could not be generated")]
    ImporterGeneration,
    /// The envelope's signature does not verify under the source's device key.
    #[error("the envelope is not signed by the source unit")]
    EnvelopeNotSigned,
    /// The envelope names another source unit than its certificate.
    #[error("the envelope names another source unit")]
    EnvelopeOfAnotherSource,
    /// The envelope's ephemeral key or wrapped key has the wrong size.
    #[error("the envelope's ephemeral key or wrapped key has the wrong size")]
    EnvelopeShape,
    /// The envelope is wrapped to another importer key than this one.
    #[error("the envelope is wrapped to another importer key")]
    OtherImporter,
    /// The P-256 key agreement failed.
    #[error("the P-256 key agreement failed")]
    KeyAgreement,
    /// Wrapping the master key failed.
    #[error("key wrap failed")]
    WrapFailed,
    /// The wrapped key is not the 40 bytes a wrapped 32-byte key takes.
    #[error("the wrapped key is not 40 bytes")]
    WrappedKeyLength,
    /// The wrapped key fails its RFC 5649 integrity check.
    #[error("the wrapped key fails its integrity check")]
    WrappedKeyIntegrity,
    /// The wrapped key unwraps to a key that is not 32 bytes.
    #[error("the wrapped key is not 32 bytes")]
    UnwrappedKeyLength,
    /// The unwrapped key's verification pattern differs from the envelope's.
    #[error("the unwrapped key does not match the envelope's VP")]
    VpMismatch,
    /// Master key parts that do not hide the key from fewer than all their owners: a part
    /// is zero, two are equal, or three XOR to zero.
    #[error("the master key parts are not independent: a part is zero, two are equal, or they XOR to zero")]
    PartsNotIndependent,
}

/// Displays an error and its causes (`error: cause: cause`), each once: a cause whose
/// text is already printed (because a layer put it in its own message) is skipped.
///
/// ```
/// use tke_proto::{CertificateError, ErrorChain, ProtoError};
///
/// let e = ProtoError::from(CertificateError::BadSignature);
/// assert_eq!(e.to_string(), "invalid certificate");
/// assert_eq!(
///     ErrorChain(&e).to_string(),
///     "invalid certificate: the signature does not verify"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&shown)
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn chain(texts: &[&'static str]) -> Layer {
        let mut err: Option<Box<Layer>> = None;
        for text in texts.iter().rev() {
            err = Some(Box::new(Layer { text, source: err }));
        }
        *err.expect("at least one layer")
    }

    #[test]
    fn each_cause_once() {
        let e = chain(&["cannot open x", "permission denied"]);
        assert_eq!(
            ErrorChain(&e).to_string(),
            "cannot open x: permission denied"
        );
        // A layer that repeats its source's text: the source is not printed again.
        let e = chain(&["cannot load m: no such file", "no such file"]);
        assert_eq!(ErrorChain(&e).to_string(), "cannot load m: no such file");
        // The check is against everything shown, not only the layer just above.
        let e = chain(&["a: inner", "b", "inner"]);
        assert_eq!(ErrorChain(&e).to_string(), "a: inner: b");
    }

    #[test]
    fn kinds_are_sources_of_proto_errors() {
        let e = crate::ProtoError::from(TransportError::VpMismatch);
        assert!(matches!(
            e,
            crate::ProtoError::Transport(TransportError::VpMismatch)
        ));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "master key transport failed: the unwrapped key does not match the envelope's VP"
        );
    }
}
