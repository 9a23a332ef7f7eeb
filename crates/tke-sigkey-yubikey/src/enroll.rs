//! Enrolment: a new key generated in a slot, or the key already there registered, with
//! its administrator certificate written to the slot.

use std::sync::Arc;

use p256::{pkcs8::DecodePublicKey, PublicKey};
use sha2::{Digest, Sha256};
use tke_proto::{der::Encode, AdminCertificate, AdminName, BoxError};
use yubikey::YubiKey;

use crate::{
    admin::AdminSession,
    device,
    error::from_yubikey,
    signer::{slot_metadata, Session},
    tlv, CardInfo, ManagementKeySource, MgmAlgorithm, Pin, PinPolicy, Slot, TouchPolicy,
    TouchPrompt, YubiKeyError, YubiKeySigner,
};

/// The certificate in a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotCertificate {
    /// None.
    None,
    /// A TKE administrator certificate.
    Admin(Box<AdminCertificate>),
    /// Another certificate.
    Other {
        /// Its subject.
        subject: String,
    },
}

/// What a slot holds.
#[derive(Clone, Debug)]
pub enum SlotContent {
    /// No key.
    Empty,
    /// Unknown: firmware before 5.3 cannot say whether a slot without a certificate holds
    /// a key.
    Unknown,
    /// A key.
    Key {
        /// Its public key, when the card (metadata) or the slot's certificate tells it.
        public: Option<PublicKey>,
        /// Its PIN and touch policies (firmware 5.3 and later).
        policy: Option<(PinPolicy, TouchPolicy)>,
        /// The slot's certificate.
        certificate: SlotCertificate,
    },
}

/// What the card says about its management key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManagementKeyInfo {
    /// Its algorithm (3DES when the firmware cannot tell: before 5.3).
    pub algorithm: MgmAlgorithm,
    /// Whether it is the factory default value (firmware 5.3 and later).
    pub is_default: Option<bool>,
    /// Whether a PIN-protected copy is stored on the card (the admin data says so).
    pub pin_protected: bool,
}

impl ManagementKeyInfo {
    /// The source to use when the operator says nothing: the PIN-protected key if there
    /// is one, the default key if the card says it is set, else `None` (ask for it).
    pub fn automatic_source(&self) -> Option<ManagementKeySource> {
        if self.pin_protected {
            Some(ManagementKeySource::PinProtected)
        } else if self.is_default != Some(false) {
            Some(ManagementKeySource::Default)
        } else {
            None
        }
    }
}

/// An opened YubiKey and one of its slots, inspected before anything changes.
pub struct Enrollment {
    yk: YubiKey,
    card: CardInfo,
    slot: Slot,
    content: SlotContent,
    management: ManagementKeyInfo,
    pin_is_default: Option<bool>,
}

/// What registering an existing key did to the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateWrite {
    /// The slot already held this administrator's certificate: nothing written.
    Kept,
    /// The new administrator certificate was written to the slot.
    Written,
}

fn read_slot_certificate(yk: &mut YubiKey, slot: Slot) -> (SlotCertificate, Option<PublicKey>) {
    match yubikey::certificate::Certificate::read(yk, slot.slot_id()) {
        Ok(c) => {
            let public = c
                .cert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .ok()
                .and_then(|der| PublicKey::from_public_key_der(&der).ok());
            let admin = c
                .cert
                .to_der()
                .ok()
                .and_then(|der| AdminCertificate::from_der(&der).ok());
            match admin {
                Some(a) => (SlotCertificate::Admin(Box::new(a)), public),
                None => (
                    SlotCertificate::Other {
                        subject: c.cert.tbs_certificate.subject.to_string(),
                    },
                    public,
                ),
            }
        }
        Err(_) => (SlotCertificate::None, None),
    }
}

impl Enrollment {
    /// Opens the YubiKey (by serial number, or the only one attached) and reads what
    /// `slot` holds and what the management key is. Changes nothing.
    ///
    /// # Errors
    /// As [`YubiKeySigner::open`] for finding the card; card failures.
    pub fn open(serial: Option<u32>, slot: Slot) -> Result<Self, YubiKeyError> {
        let (mut yk, card) = device::open(serial)?;
        let (certificate, cert_public) = read_slot_certificate(&mut yk, slot);
        let content = if card.has_metadata() {
            match slot_metadata(&mut yk, &card, slot) {
                Ok(Some(k)) => SlotContent::Key {
                    public: k.public.or(cert_public),
                    policy: k.policy,
                    certificate,
                },
                Ok(None) => SlotContent::Empty,
                // A key of another algorithm: it is there all the same.
                Err(YubiKeyError::NotP256 { .. }) => SlotContent::Key {
                    public: None,
                    policy: None,
                    certificate,
                },
                Err(e) => return Err(e),
            }
        } else if certificate == SlotCertificate::None {
            // Before 5.3 the card cannot say whether a key is there.
            SlotContent::Unknown
        } else {
            SlotContent::Key {
                public: cert_public,
                policy: None,
                certificate,
            }
        };
        let (management, pin_is_default) = {
            let mut admin = AdminSession::connect(&card)?;
            let phase = admin.phase()?;
            let default_of = |slot| -> Result<Option<bool>, YubiKeyError> {
                if !card.has_metadata() {
                    return Ok(None);
                }
                Ok(phase
                    .metadata(slot)?
                    .and_then(|m| tlv::find(&m, 0x05).map(|v| v == [1])))
            };
            let algorithm = phase.management_algorithm()?;
            let is_default = default_of(0x9b)?;
            let pin_protected = phase.admin_flags()? & 0x02 != 0;
            let pin_is_default = default_of(0x80)?;
            (
                ManagementKeyInfo {
                    algorithm,
                    is_default,
                    pin_protected,
                },
                pin_is_default,
            )
        };
        Ok(Self {
            yk,
            card,
            slot,
            content,
            management,
            pin_is_default,
        })
    }

    /// The YubiKey.
    pub fn card(&self) -> &CardInfo {
        &self.card
    }

    /// The slot.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// What the slot holds.
    pub fn content(&self) -> &SlotContent {
        &self.content
    }

    /// What the card says about its management key.
    pub fn management_key(&self) -> ManagementKeyInfo {
        self.management
    }

    /// Verifies `pin` (so that a wrong PIN can be asked again before anything changes).
    ///
    /// # Errors
    /// [`YubiKeyError::WrongPin`] with the tries left, [`YubiKeyError::PinBlocked`], card
    /// failures.
    pub fn verify_pin(&mut self, pin: &Pin) -> Result<(), YubiKeyError> {
        let serial = self.card.serial;
        let result = match self.yk.verify_pin(pin.expose_secret()) {
            // Another program (or another handle of ours) reset the card: open it again.
            Err(yubikey::Error::PcscError {
                inner: Some(pcsc::Error::ResetCard),
            }) => {
                let (yk, _) = device::open(Some(serial))?;
                let stale = std::mem::replace(&mut self.yk, yk);
                let _ = stale.disconnect(pcsc::Disposition::LeaveCard);
                self.yk.verify_pin(pin.expose_secret())
            }
            other => other,
        };
        result.map_err(from_yubikey(serial, &self.card.reader, "verifying the PIN"))
    }

    /// Whether the PIN is still the factory default `123456` (firmware 5.3 and later).
    pub fn pin_is_default(&self) -> Option<bool> {
        self.pin_is_default
    }

    /// Generates a new P-256 key in the slot with these policies, makes the administrator
    /// certificate (signed on the card: PIN, and a touch if the policy asks), writes it
    /// to the slot, and returns the signer.
    ///
    /// A slot that holds a key (or may hold one: firmware before 5.3) is refused unless
    /// `replace_key` (the old key is destroyed).
    ///
    /// # Errors
    /// [`YubiKeyError::SlotOccupied`] and [`YubiKeyError::SlotMayBeOccupied`] (nothing
    /// changed); a refused management key
    /// (nothing changed); PIN errors; [`YubiKeyError::AfterGeneration`] when the key was
    /// generated but its certificate could not be made or written.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        mut self,
        name: &AdminName,
        pin: Pin,
        management_key: &ManagementKeySource,
        pin_policy: PinPolicy,
        touch_policy: TouchPolicy,
        replace_key: bool,
        prompt: Arc<dyn TouchPrompt>,
    ) -> Result<YubiKeySigner, YubiKeyError> {
        let (serial, slot) = (self.card.serial, self.slot);
        match self.content {
            SlotContent::Key { .. } if !replace_key => {
                return Err(YubiKeyError::SlotOccupied { serial, slot })
            }
            SlotContent::Unknown if !replace_key => {
                return Err(YubiKeyError::SlotMayBeOccupied { serial, slot })
            }
            _ => {}
        }
        // The PIN first: a wrong one must not cost the key that is in the slot.
        self.verify_pin(&pin)?;
        let mut admin = AdminSession::connect(&self.card)?;
        let public = {
            let phase = admin.phase()?;
            phase.authenticate(management_key, &pin)?;
            log::debug!("YubiKey {serial}: generating a P-256 key in slot {slot}");
            phase.generate(slot, pin_policy, touch_policy)?
        };
        let after = |cause: YubiKeyError| YubiKeyError::AfterGeneration {
            serial,
            slot,
            cause: Box::new(cause),
        };
        let mut session = Session::new(
            self.yk,
            self.card,
            slot,
            pin.clone(),
            Some((pin_policy, touch_policy)),
            prompt,
        );
        let certificate = certify(&mut session, name, &public).map_err(after)?;
        {
            let phase = admin.phase().map_err(after)?;
            phase.authenticate(management_key, &pin).map_err(after)?;
            phase
                .put_certificate(slot, certificate.der())
                .map_err(after)?;
        }
        Ok(YubiKeySigner::from_session(session, certificate))
    }

    /// Registers the key already in the slot for administrator `name`. If the slot holds
    /// this administrator's certificate for that key, it is used as is and the card is not
    /// changed; otherwise a new administrator certificate is made (signed on the card) and
    /// written to the slot — over another certificate only if `replace_certificate`. The
    /// key itself is never changed.
    ///
    /// # Errors
    /// [`YubiKeyError::SlotEmpty`], [`YubiKeyError::NotP256`],
    /// [`YubiKeyError::PublicKeyUnknown`], [`YubiKeyError::OtherAdministrator`],
    /// [`YubiKeyError::SlotCertificateOccupied`], PIN and management-key errors.
    pub fn register_existing(
        mut self,
        name: &AdminName,
        pin: Pin,
        management_key: &ManagementKeySource,
        replace_certificate: bool,
        prompt: Arc<dyn TouchPrompt>,
    ) -> Result<(YubiKeySigner, CertificateWrite), YubiKeyError> {
        let (serial, slot) = (self.card.serial, self.slot);
        let (public, policy, certificate) = match &self.content {
            SlotContent::Empty => return Err(YubiKeyError::SlotEmpty { serial, slot }),
            SlotContent::Unknown => return Err(YubiKeyError::PublicKeyUnknown { serial, slot }),
            SlotContent::Key {
                public,
                policy,
                certificate,
            } => (*public, *policy, certificate.clone()),
        };
        self.verify_pin(&pin)?;
        if self.card.has_metadata() && public.is_none() {
            // The metadata named another algorithm.
            let mut yk = self.yk;
            return Err(match slot_metadata(&mut yk, &self.card, slot) {
                Err(e) => e,
                Ok(_) => YubiKeyError::PublicKeyUnknown { serial, slot },
            });
        }
        let Some(public) = public else {
            return Err(YubiKeyError::PublicKeyUnknown { serial, slot });
        };
        let mut session = Session::new(
            self.yk,
            self.card.clone(),
            slot,
            pin.clone(),
            policy,
            prompt,
        );
        if let SlotCertificate::Admin(c) = &certificate {
            if *c.public_key() == public {
                if c.name() != name {
                    return Err(YubiKeyError::OtherAdministrator {
                        serial,
                        slot,
                        found: c.name().clone(),
                        wanted: name.clone(),
                    });
                }
                session.verify_pin()?;
                return Ok((
                    YubiKeySigner::from_session(session, (**c).clone()),
                    CertificateWrite::Kept,
                ));
            }
        }
        if let SlotCertificate::Other { subject } = &certificate {
            if !replace_certificate {
                return Err(YubiKeyError::SlotCertificateOccupied {
                    serial,
                    slot,
                    subject: subject.clone(),
                });
            }
        }
        let new = certify(&mut session, name, &public)?;
        let mut admin = AdminSession::connect(&self.card)?;
        {
            let phase = admin.phase()?;
            phase.authenticate(management_key, &pin)?;
            phase.put_certificate(slot, new.der())?;
        }
        Ok((
            YubiKeySigner::from_session(session, new),
            CertificateWrite::Written,
        ))
    }
}

/// The administrator certificate of `public`, signed by the slot's key.
fn certify(
    session: &mut Session,
    name: &AdminName,
    public: &PublicKey,
) -> Result<AdminCertificate, YubiKeyError> {
    let mut failure = None;
    let built = AdminCertificate::build(
        name,
        public,
        Box::new(|tbs| {
            let digest: [u8; 32] = Sha256::digest(tbs).into();
            session.sign_digest(&digest).map_err(|e| {
                let msg: BoxError = tke_proto::ErrorChain(&e).to_string().into();
                failure = Some(e);
                msg
            })
        }),
    );
    match (built, failure) {
        (Ok(c), _) => Ok(c),
        (Err(_), Some(e)) => Err(e),
        (Err(reason), None) => Err(YubiKeyError::Certificate {
            name: name.clone(),
            reason,
        }),
    }
}
