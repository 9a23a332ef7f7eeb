//! Domain separation of device-key signatures (protocol version 3's labels, still those of
//! version 4; version 2 introduced them).
//!
//! One device key signs three kinds of message: response bodies, importer keys and master
//! key envelopes. Each kind is signed over its own fixed label followed by the message:
//!
//! ```text
//! signed bytes = label ‖ message        -- message: the DER inside the OCTET STRING
//! label        = "TKE-Protocol-v3 " ‖ <type name> ‖ 0x00
//! ```
//!
//! The labels are ASCII without NUL and end in one NUL byte, so none is a prefix of
//! another: the first NUL ends the label, and two different labels never give the same
//! signed bytes whatever the messages. A signature made for one kind of message therefore
//! never verifies as another kind, even over the very same bytes.
//!
//! A prefix rather than a DER wrapper, because a token computes it without any encoding:
//! `CKM_ECDSA_SHA256` over `label ‖ message` (`C_SignUpdate(label)`,
//! `C_SignUpdate(message)`), or `CKM_ECDSA` over `SHA-256(label ‖ message)` as
//! [`DeviceContext::digest`] gives it; the message bytes stay exactly those carried in the
//! OCTET STRING, so nothing is re-encoded between signing and verifying.
//!
//! Protocol version 2 signed under the same labels with `v2` in them, and version 1 signed
//! the bare message. A verifier recognises such a signature
//! ([`DeviceSigError::OlderVersion`]) only to refuse it with an error naming both
//! versions: the messages of the versions differ (version 3 added the control points to
//! `UnitStatus`), so a signature of another version is never accepted.
//!
//! Protocol version 4 added service requests ([`crate::service`]), a new alternative of
//! `Request`, and kept version 3's labels: no message that a device key signs changed its
//! bytes or their meaning, so a version 3 signature means the same under version 4. A
//! version 3 unit refuses a service request as malformed.

use p256::ecdsa::{DerSignature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{Digest32, ProtoError, UnitId};

/// The protocol version this crate speaks (4: version 3's messages and signature labels,
/// and service requests).
pub const PROTOCOL_VERSION: u32 = 4;

/// The kind of message a device key signs; each has its own label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceContext {
    /// A [`crate::ResponseBody`] (every answer of a unit).
    Response,
    /// A [`crate::transport::ImporterKey`] certified by its target unit.
    Importer,
    /// A [`crate::transport::MkEnvelope`] signed by its source unit.
    Envelope,
}

impl DeviceContext {
    /// Every context, for tests and vector generation.
    pub const ALL: [Self; 3] = [Self::Response, Self::Importer, Self::Envelope];

    /// The label that precedes the message in the signed bytes (ASCII, NUL-terminated).
    pub const fn label(self) -> &'static [u8] {
        match self {
            Self::Response => b"TKE-Protocol-v3 ResponseBody\0",
            Self::Importer => b"TKE-Protocol-v3 ImporterKey\0",
            Self::Envelope => b"TKE-Protocol-v3 MkEnvelope\0",
        }
    }

    /// The label protocol version 2 used, recognised only to refuse its signatures.
    const fn v2_label(self) -> &'static [u8] {
        match self {
            Self::Response => b"TKE-Protocol-v2 ResponseBody\0",
            Self::Importer => b"TKE-Protocol-v2 ImporterKey\0",
            Self::Envelope => b"TKE-Protocol-v2 MkEnvelope\0",
        }
    }

    /// The bytes a device key of protocol `version` signs for `message`: the message
    /// alone for version 1, the label of that version and the message for version 2, the
    /// current label (version 3's) and the message for any other value. For tests that
    /// play an older unit.
    pub fn signed_bytes_of_version(self, version: u32, message: &[u8]) -> Vec<u8> {
        match version {
            1 => message.to_vec(),
            2 => [self.v2_label(), message].concat(),
            _ => self.signed_bytes(message),
        }
    }

    /// What the signed message is, for error messages.
    pub const fn what(self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Importer => "importer key",
            Self::Envelope => "envelope",
        }
    }

    /// The bytes a device key signs for `message`: `label ‖ message`.
    pub fn signed_bytes(self, message: &[u8]) -> Vec<u8> {
        [self.label(), message].concat()
    }

    /// `SHA-256(label ‖ message)`: the digest for `CKM_ECDSA`.
    pub fn digest(self, message: &[u8]) -> Digest32 {
        Digest32(
            Sha256::new()
                .chain_update(self.label())
                .chain_update(message)
                .finalize()
                .into(),
        )
    }

    /// Checks a device-key signature over `message` in this context.
    ///
    /// # Errors
    /// [`DeviceSigError`]: malformed, not valid in this context, or a signature of an
    /// older protocol version.
    pub fn verify(
        self,
        key: &VerifyingKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), DeviceSigError> {
        let sig = DerSignature::from_bytes(signature).map_err(|_| DeviceSigError::Malformed)?;
        if crate::ecdsa_p256::verify(key, &self.signed_bytes(message), &sig).is_ok() {
            return Ok(());
        }
        // Only to say why it is refused: an older signer used another label, or none.
        for version in [2, 1] {
            let bytes = self.signed_bytes_of_version(version, message);
            if crate::ecdsa_p256::verify(key, &bytes, &sig).is_ok() {
                return Err(DeviceSigError::OlderVersion(version));
            }
        }
        Err(DeviceSigError::Invalid)
    }

    /// The error for a signature of `unit` in this context made under protocol `version`.
    pub(crate) fn older_version(self, unit: UnitId, version: u32) -> ProtoError {
        ProtoError::ProtocolVersion {
            unit,
            what: self.what(),
            found: version,
            expected: PROTOCOL_VERSION,
        }
    }
}

/// Why a device-key signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceSigError {
    /// Not a DER ECDSA signature.
    #[error("the signature is not a DER ECDSA signature")]
    Malformed,
    /// It does not verify over this context's label and the message.
    #[error("the signature does not verify")]
    Invalid,
    /// It verifies under an older protocol version's rules (version 2's label, or version
    /// 1's bare message): made by a unit of that version.
    #[error("the signature follows protocol version {0}")]
    OlderVersion(u32),
}
