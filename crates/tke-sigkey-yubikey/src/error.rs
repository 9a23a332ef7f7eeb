//! Errors of YubiKey signers. Each says which YubiKey and what to do; none holds a PIN or
//! a management key. As everywhere in the workspace, a message describes its own layer:
//! the underlying error (field `reason`) is its `source()`, not part of the message.

use tke_proto::{AdminName, ProtoError};

use crate::{MgmAlgorithm, Serials, Slot};

/// What went wrong with a YubiKey.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum YubiKeyError {
    /// The PC/SC service does not answer.
    #[error(
        "the smart-card service (pcscd) is not available: start it (`systemctl start \
         pcscd`, or run `pcscd` as root) and retry"
    )]
    PcscUnavailable {
        /// The PC/SC error.
        #[source]
        reason: pcsc::Error,
    },

    /// No YubiKey is attached (or none answers as a PIV card).
    #[error(
        "no YubiKey was found ({readers} smart-card reader(s) present, none with a YubiKey \
         in it): insert the YubiKey and retry; `yubico-piv-tool -a status` shows what \
         pcscd sees"
    )]
    NoCard {
        /// How many readers pcscd lists.
        readers: usize,
    },

    /// The YubiKey with this serial number is not attached.
    #[error(
        "YubiKey {serial} is not attached (YubiKeys attached: {present}): insert it and retry"
    )]
    NotFound {
        /// The serial number wanted.
        serial: u32,
        /// The serial numbers of the YubiKeys attached.
        present: Serials,
    },

    /// Several YubiKeys are attached and none was chosen.
    #[error(
        "several YubiKeys are attached (serial numbers {present}): choose one by its serial \
         number"
    )]
    Several {
        /// Their serial numbers.
        present: Serials,
    },

    /// A reader is held exclusively by another program.
    #[error(
        "the smart-card reader(s) {readers:?} are in use by another program that holds them \
         exclusively (gpg's scdaemon, a browser, another tke or ykman?): close it and retry"
    )]
    ReaderBusy {
        /// The readers concerned.
        readers: Vec<String>,
    },

    /// The YubiKey was removed (or reset) while in use.
    #[error("YubiKey {serial} was removed while in use: insert it and retry")]
    Removed {
        /// The serial number.
        serial: u32,
    },

    /// The PIN was wrong.
    #[error(
        "wrong PIN for YubiKey {serial}: {tries_left} {} left before the PIN is blocked",
        if *tries_left == 1 { "try" } else { "tries" }
    )]
    WrongPin {
        /// The serial number.
        serial: u32,
        /// Tries left.
        tries_left: u8,
    },

    /// The PIN is blocked.
    #[error(
        "the PIN of YubiKey {serial} is blocked after too many wrong PINs: unblock it with the \
         PUK (`yubico-piv-tool -a unblock-pin`, or `ykman piv access unblock-pin`) and retry; \
         if the PUK is blocked too, only a reset of the YubiKey's PIV application, which \
         destroys its keys, makes it usable again"
    )]
    PinBlocked {
        /// The serial number.
        serial: u32,
    },

    /// The slot holds no key.
    #[error(
        "slot {slot} of YubiKey {serial} holds no key: the key was deleted or replaced, or \
         this is not the YubiKey the key was made on"
    )]
    SlotEmpty {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
    },

    /// The slot holds a key and replacing it was not confirmed.
    #[error(
        "slot {slot} of YubiKey {serial} already holds a key; nothing was changed. Generating \
         a new key destroys it for good: confirm that explicitly, or register the key that is \
         there instead"
    )]
    SlotOccupied {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
    },

    /// The key in the slot is not the key of the certificate.
    #[error(
        "the key in slot {slot} of YubiKey {serial} is not the key of administrator {name}'s \
         certificate: the slot was overwritten, or this is another YubiKey"
    )]
    KeyMismatch {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
        /// The administrator.
        name: AdminName,
    },

    /// The key in the slot is not a P-256 key.
    #[error(
        "the key in slot {slot} of YubiKey {serial} is not an ECC P-256 key (PIV algorithm \
         {algorithm:#04x}); TKE administrator keys are P-256"
    )]
    NotP256 {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
        /// The PIV algorithm found.
        algorithm: u8,
    },

    /// The slot holds another administrator's certificate.
    #[error(
        "slot {slot} of YubiKey {serial} holds the administrator certificate of {found}, \
         not of {wanted}: register it under its own name"
    )]
    OtherAdministrator {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
        /// The name in the certificate.
        found: AdminName,
        /// The name asked for.
        wanted: AdminName,
    },

    /// A key in the slot cannot be registered: the firmware cannot tell its public key
    /// (no GET METADATA before 5.3) and the slot has no certificate to read it from.
    #[error(
        "slot {slot} of YubiKey {serial} has no certificate, and its firmware (before 5.3) \
         cannot say which key it holds: put the key's certificate in the slot first"
    )]
    PublicKeyUnknown {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
    },

    /// The slot holds a certificate that is not this administrator's, and replacing it
    /// was not confirmed.
    #[error(
        "slot {slot} of YubiKey {serial} holds another certificate (subject {subject}); \
         nothing was changed. Confirm replacing it with the administrator certificate (the \
         key in the slot stays)"
    )]
    SlotCertificateOccupied {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
        /// The subject of the certificate there.
        subject: String,
    },

    /// Before firmware 5.3 the card cannot say whether a slot without a certificate holds
    /// a key, and generating was not confirmed.
    #[error(
        "YubiKey {serial} (firmware before 5.3) cannot tell whether slot {slot} holds a key; \
         nothing was changed. Confirm that a key there may be destroyed"
    )]
    SlotMayBeOccupied {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
    },

    /// A new key was generated, then something failed: the slot holds the new key (the
    /// old one is gone) without its administrator certificate.
    #[error(
        "slot {slot} of YubiKey {serial} now holds a new key, but its administrator \
         certificate could not be made or written: {cause}. Once that is solved, register \
         the key that is in the slot (it is not recorded on this workstation yet)"
    )]
    AfterGeneration {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
        /// What failed (part of the message).
        cause: Box<YubiKeyError>,
    },

    /// The card timed out waiting for a touch.
    #[error(
        "YubiKey {serial} did not sign with slot {slot}: it was not touched in time. Touch it \
         when it blinks (within 15 seconds) and retry"
    )]
    TouchTimeout {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
    },

    /// The card refused to sign although the PIN was accepted.
    #[error(
        "YubiKey {serial} refused to sign with slot {slot} (security status not satisfied) \
         although its PIN was accepted"
    )]
    SignRefused {
        /// The serial number.
        serial: u32,
        /// The slot.
        slot: Slot,
    },

    /// The management key was refused.
    #[error(
        "YubiKey {serial} refused the management key ({source_kind}, {algorithm}); nothing \
         was changed. Give the right management key"
    )]
    ManagementKeyRefused {
        /// The serial number.
        serial: u32,
        /// The card's management key algorithm.
        algorithm: MgmAlgorithm,
        /// Where the key came from.
        source_kind: &'static str,
    },

    /// The management key given has the wrong length for the card's algorithm.
    #[error(
        "the management key of YubiKey {serial} is {algorithm} ({} hex digits); the key given \
         has {given} bytes",
        algorithm.key_len() * 2
    )]
    ManagementKeyLength {
        /// The serial number.
        serial: u32,
        /// The card's algorithm.
        algorithm: MgmAlgorithm,
        /// Bytes given.
        given: usize,
    },

    /// The card's management key algorithm is not one TKE knows.
    #[error("YubiKey {serial} has a management key of unknown algorithm {id:#04x}")]
    ManagementKeyAlgorithm {
        /// The serial number.
        serial: u32,
        /// The PIV algorithm identifier.
        id: u8,
    },

    /// A PIN-protected management key was asked for and the card has none.
    #[error(
        "YubiKey {serial} holds no PIN-protected management key: give the management key \
         itself, or the default one"
    )]
    NoProtectedManagementKey {
        /// The serial number.
        serial: u32,
    },

    /// The administrator certificate could not be made.
    #[error("cannot make the administrator certificate for {name}")]
    Certificate {
        /// The administrator.
        name: AdminName,
        /// The protocol layer's error.
        #[source]
        reason: ProtoError,
    },

    /// A `yubikey` crate operation failed.
    #[error("YubiKey {serial}: {operation} failed")]
    Card {
        /// The serial number.
        serial: u32,
        /// What was being done.
        operation: &'static str,
        /// The `yubikey` error.
        #[source]
        reason: yubikey::Error,
    },

    /// A PC/SC operation failed.
    #[error("YubiKey {serial}: {operation} failed")]
    Pcsc {
        /// The serial number.
        serial: u32,
        /// What was being done.
        operation: &'static str,
        /// The PC/SC error.
        #[source]
        reason: pcsc::Error,
    },

    /// The card answered a command with an unexpected status or data.
    #[error("YubiKey {serial}: {operation} failed: the card answered {sw:04X}")]
    CardStatus {
        /// The serial number.
        serial: u32,
        /// What was being done.
        operation: &'static str,
        /// The status word.
        sw: u16,
    },

    /// The card's answer was malformed.
    #[error("YubiKey {serial}: {operation}: the card's answer is malformed ({problem})")]
    Malformed {
        /// The serial number.
        serial: u32,
        /// What was being done.
        operation: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// Maps a `yubikey` error, telling apart removal, a busy reader and a wrong or blocked
/// PIN from other failures.
pub(crate) fn from_yubikey<'a>(
    serial: u32,
    reader: &'a str,
    operation: &'static str,
) -> impl FnOnce(yubikey::Error) -> YubiKeyError + 'a {
    move |e| match e {
        yubikey::Error::WrongPin { tries: 0 } | yubikey::Error::PinLocked => {
            YubiKeyError::PinBlocked { serial }
        }
        yubikey::Error::WrongPin { tries } => YubiKeyError::WrongPin {
            serial,
            tries_left: tries,
        },
        yubikey::Error::PcscError {
            inner:
                Some(
                    pcsc::Error::RemovedCard
                    | pcsc::Error::NoSmartcard
                    | pcsc::Error::ResetCard
                    | pcsc::Error::ReaderUnavailable,
                ),
        } => YubiKeyError::Removed { serial },
        yubikey::Error::PcscError {
            inner: Some(pcsc::Error::SharingViolation),
        } => YubiKeyError::ReaderBusy {
            readers: vec![reader.to_owned()],
        },
        reason => YubiKeyError::Card {
            serial,
            operation,
            reason,
        },
    }
}
