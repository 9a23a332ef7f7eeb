//! The signer: a registered administrator key in a YubiKey slot, opened with its PIN.

use core::fmt;
use std::sync::{Arc, Mutex};

use p256::{ecdsa::DerSignature, pkcs8::DecodePublicKey, PublicKey};
use sha2::{Digest, Sha256};
use tke_proto::{der::Encode, AdminCertificate};
use tke_sigkey::{SignError, Signer, SignerKind};
use tke_workstation::YubiKeyRef;
use yubikey::{
    piv::{self, AlgorithmId, ManagementAlgorithmId},
    YubiKey,
};

use crate::{
    device, error::from_yubikey, CardInfo, Pin, PinPolicy, Slot, TouchPolicy, YubiKeyError,
};

/// Told when the YubiKey waits for a touch (libraries never prompt: the application
/// shows the message). Called before every signature whose key's touch policy is not
/// "never"; with a cached touch policy the YubiKey may not actually wait.
pub trait TouchPrompt: Send + Sync {
    /// The YubiKey `card` is about to sign with `slot`, whose key has touch policy
    /// `policy` (always or cached), and may blink for a touch.
    fn touch(&self, card: &CardInfo, slot: Slot, policy: TouchPolicy);
}

/// A [`TouchPrompt`] that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTouchPrompt;

impl TouchPrompt for NoTouchPrompt {
    fn touch(&self, _card: &CardInfo, _slot: Slot, _policy: TouchPolicy) {}
}

/// What a slot's key is, as far as the card says.
#[derive(Clone, Debug)]
pub(crate) struct SlotKey {
    /// The public key (from GET METADATA, or from the slot's certificate).
    pub(crate) public: Option<PublicKey>,
    /// PIN and touch policies (GET METADATA, firmware 5.3 and later).
    pub(crate) policy: Option<(PinPolicy, TouchPolicy)>,
}

/// Reads what `slot` holds through GET METADATA (firmware 5.3 and later). `None`: empty.
pub(crate) fn slot_metadata(
    yk: &mut YubiKey,
    card: &CardInfo,
    slot: Slot,
) -> Result<Option<SlotKey>, YubiKeyError> {
    match piv::metadata(yk, slot.slot_id()) {
        Ok(m) => {
            match m.algorithm {
                ManagementAlgorithmId::Asymmetric(AlgorithmId::EccP256) => {}
                other => {
                    return Err(YubiKeyError::NotP256 {
                        serial: card.serial,
                        slot,
                        algorithm: u8::from(other),
                    })
                }
            }
            let public = m
                .public
                .as_ref()
                .and_then(|spki| spki.to_der().ok())
                .and_then(|der| PublicKey::from_public_key_der(&der).ok());
            let policy = m.policy.and_then(|(p, t)| {
                Some((PinPolicy::from_yubikey(p)?, TouchPolicy::from_yubikey(t)?))
            });
            Ok(Some(SlotKey { public, policy }))
        }
        // `yubikey` reports "not found" (6A82) as a generic error: the slot is empty.
        Err(yubikey::Error::GenericError) => Ok(None),
        Err(e) => Err(from_yubikey(
            card.serial,
            &card.reader,
            "reading slot metadata",
        )(e)),
    }
}

/// An open YubiKey, the slot and PIN used with it.
pub(crate) struct Session {
    yk: YubiKey,
    card: CardInfo,
    slot: Slot,
    pin: Pin,
    policy: Option<(PinPolicy, TouchPolicy)>,
    prompt: Arc<dyn TouchPrompt>,
}

impl Session {
    pub(crate) fn new(
        yk: YubiKey,
        card: CardInfo,
        slot: Slot,
        pin: Pin,
        policy: Option<(PinPolicy, TouchPolicy)>,
        prompt: Arc<dyn TouchPrompt>,
    ) -> Self {
        Self {
            yk,
            card,
            slot,
            pin,
            policy,
            prompt,
        }
    }

    /// VERIFY the PIN (no try is used when it is right).
    pub(crate) fn verify_pin(&mut self) -> Result<(), YubiKeyError> {
        log::debug!("YubiKey {}: verifying the PIN", self.card.serial);
        self.yk
            .verify_pin(self.pin.expose_secret())
            .map_err(from_yubikey(
                self.card.serial,
                &self.card.reader,
                "verifying the PIN",
            ))
    }

    /// Signs a SHA-256 digest with the slot's key: the PIN first, then a touch if the
    /// key's policy asks for one. After a reset of the card by another program, opens
    /// it again once.
    pub(crate) fn sign_digest(&mut self, digest: &[u8; 32]) -> Result<DerSignature, YubiKeyError> {
        match self.try_sign(digest) {
            Err(Reconnect) => {
                log::debug!(
                    "YubiKey {} was reset by another program: opening it again",
                    self.card.serial
                );
                let (yk, _) = device::open(Some(self.card.serial))?;
                // Release the stale handle without resetting the card again (dropping it
                // would reset it under the new handle).
                let stale = std::mem::replace(&mut self.yk, yk);
                let _ = stale.disconnect(pcsc::Disposition::LeaveCard);
                self.try_sign(digest).map_err(|_| YubiKeyError::Removed {
                    serial: self.card.serial,
                })?
            }
            Ok(r) => r,
        }
    }

    fn try_sign(
        &mut self,
        digest: &[u8; 32],
    ) -> Result<Result<DerSignature, YubiKeyError>, Reconnect> {
        let reset = |e: &yubikey::Error| {
            matches!(
                e,
                yubikey::Error::PcscError {
                    inner: Some(pcsc::Error::ResetCard)
                }
            )
        };
        let (serial, slot) = (self.card.serial, self.slot);
        if self.policy.map(|p| p.0) != Some(PinPolicy::Never) {
            log::debug!("YubiKey {serial}: verifying the PIN");
            if let Err(e) = self.yk.verify_pin(self.pin.expose_secret()) {
                if reset(&e) {
                    return Err(Reconnect);
                }
                return Ok(Err(from_yubikey(
                    serial,
                    &self.card.reader,
                    "verifying the PIN",
                )(e)));
            }
        }
        let touch = self.policy.map(|p| p.1);
        if let Some(policy @ (TouchPolicy::Always | TouchPolicy::Cached)) = touch {
            self.prompt.touch(&self.card, slot, policy);
        }
        log::debug!("YubiKey {serial}: signing a digest with slot {slot}");
        let sig = match piv::sign_data(&mut self.yk, digest, AlgorithmId::EccP256, slot.slot_id()) {
            Ok(s) => s,
            Err(e) if reset(&e) => return Err(Reconnect),
            // 6982 after a PIN that was just accepted: the touch did not come.
            Err(yubikey::Error::AuthenticationError) => {
                return Ok(Err(if touch == Some(TouchPolicy::Never) {
                    YubiKeyError::SignRefused { serial, slot }
                } else {
                    YubiKeyError::TouchTimeout { serial, slot }
                }))
            }
            Err(yubikey::Error::GenericError) => {
                return Ok(Err(YubiKeyError::SlotEmpty { serial, slot }))
            }
            Err(e) => return Ok(Err(from_yubikey(serial, &self.card.reader, "signing")(e))),
        };
        Ok(
            DerSignature::from_bytes(&sig).map_err(|_| YubiKeyError::Malformed {
                serial,
                operation: "signing",
                problem: "the signature is not a DER ECDSA signature",
            }),
        )
    }
}

/// The card was reset under us: open it again.
struct Reconnect;

/// An administrator signature key in a YubiKey PIV slot, opened with its PIN.
///
/// The PIN is kept (zeroized on drop) so that every signature can verify it first, as
/// PIN policy "always" requires; the key never leaves the YubiKey. `Debug` shows the
/// administrator, the YubiKey's serial number and the slot, never the PIN.
pub struct YubiKeySigner {
    session: Mutex<Session>,
    card: CardInfo,
    slot: Slot,
    policy: Option<(PinPolicy, TouchPolicy)>,
    certificate: AdminCertificate,
}

impl YubiKeySigner {
    /// Opens a registered key: finds the YubiKey by serial number, checks that the slot
    /// holds the certificate's key, and verifies the PIN (so that a wrong or blocked PIN
    /// shows now, with the tries left). `prompt` is told when a signature may wait for a
    /// touch.
    ///
    /// # Errors
    /// [`YubiKeyError::NotFound`] (with the serials attached), [`YubiKeyError::ReaderBusy`],
    /// [`YubiKeyError::SlotEmpty`], [`YubiKeyError::KeyMismatch`],
    /// [`YubiKeyError::WrongPin`] (with the tries left), [`YubiKeyError::PinBlocked`],
    /// [`YubiKeyError::PcscUnavailable`], and card failures.
    pub fn open(
        reference: &YubiKeyRef,
        certificate: AdminCertificate,
        pin: Pin,
        prompt: Arc<dyn TouchPrompt>,
    ) -> Result<Self, YubiKeyError> {
        let Some(slot) = Slot::new(reference.slot) else {
            return Err(YubiKeyError::SlotEmpty {
                serial: reference.serial,
                slot: Slot::SIGNATURE,
            });
        };
        let (mut yk, card) = device::open(Some(reference.serial))?;
        log::debug!("opening slot {slot} of {card}");
        let key = if card.has_metadata() {
            match slot_metadata(&mut yk, &card, slot)? {
                Some(k) => k,
                None => {
                    return Err(YubiKeyError::SlotEmpty {
                        serial: card.serial,
                        slot,
                    })
                }
            }
        } else {
            // Older firmware: the slot's certificate says which key it holds, if any.
            let public = yubikey::certificate::Certificate::read(&mut yk, slot.slot_id())
                .ok()
                .and_then(|c| c.cert.tbs_certificate.subject_public_key_info.to_der().ok())
                .and_then(|der| PublicKey::from_public_key_der(&der).ok());
            SlotKey {
                public,
                policy: None,
            }
        };
        if key.public.is_some_and(|p| p != *certificate.public_key()) {
            return Err(YubiKeyError::KeyMismatch {
                serial: card.serial,
                slot,
                name: certificate.name().clone(),
            });
        }
        let mut session = Session::new(yk, card.clone(), slot, pin, key.policy, prompt);
        session.verify_pin()?;
        Ok(Self::from_session(session, certificate))
    }

    pub(crate) fn from_session(session: Session, certificate: AdminCertificate) -> Self {
        Self {
            card: session.card.clone(),
            slot: session.slot,
            policy: session.policy,
            session: Mutex::new(session),
            certificate,
        }
    }

    /// The YubiKey.
    pub fn card(&self) -> &CardInfo {
        &self.card
    }

    /// The slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The key's PIN and touch policies, when the firmware tells them (5.3 and later).
    pub fn policy(&self) -> Option<(PinPolicy, TouchPolicy)> {
        self.policy
    }

    /// The reference to record on the workstation.
    pub fn reference(&self) -> YubiKeyRef {
        YubiKeyRef {
            serial: self.card.serial,
            slot: self.slot.id(),
        }
    }

    /// Signs a SHA-256 digest.
    ///
    /// # Errors
    /// As [`Signer::sign`], with the YubiKey's error.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<DerSignature, YubiKeyError> {
        // A poisoned lock only means another thread panicked mid-signature; the card is
        // the authority on its own state.
        let mut s = self.session.lock().unwrap_or_else(|p| p.into_inner());
        s.sign_digest(digest)
    }
}

impl Signer for YubiKeySigner {
    fn certificate(&self) -> &AdminCertificate {
        &self.certificate
    }

    fn kind(&self) -> SignerKind {
        SignerKind::YubiKey
    }

    fn sign(&self, message: &[u8]) -> Result<DerSignature, SignError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        self.sign_digest(&digest).map_err(|e| SignError::Provider {
            name: self.name().clone(),
            ski: self.ski(),
            source: Box::new(e),
        })
    }
}

impl fmt::Debug for YubiKeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YubiKeySigner")
            .field("name", self.certificate.name())
            .field("ski", &self.certificate.ski())
            .field("serial", &self.card.serial)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}
