#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod admin;
mod device;
mod enroll;
mod error;
mod secret;
mod signer;
mod tlv;
mod types;

pub use device::list;
pub use enroll::{CertificateWrite, Enrollment, ManagementKeyInfo, SlotCertificate, SlotContent};
pub use error::YubiKeyError;
pub use secret::{
    ManagementKey, ManagementKeyFormatError, ManagementKeySource, Pin, PinFormatError,
};
pub use signer::{NoTouchPrompt, TouchPrompt, YubiKeySigner};
pub use types::{CardInfo, MgmAlgorithm, PinPolicy, Serials, Slot, SlotParseError, TouchPolicy};

/// Whether a log record may be written out. Applications that install a `log` logger
/// must drop the records this refuses.
///
/// The `yubikey` crate traces every APDU it sends and receives (at `trace` level, from
/// `yubikey::apdu` and `yubikey::transaction`), VERIFY with its PIN included, and logs a
/// refused management key's bytes (from `yubikey::mgm`, at `error` level). So from the
/// `yubikey` crate only `info`, `warn` and `error` records pass, and none from
/// `yubikey::mgm`. This crate's own records never hold a PIN or a key.
pub fn is_safe_to_log(metadata: &log::Metadata<'_>) -> bool {
    let target = metadata.target();
    let from_yubikey = target == "yubikey" || target.starts_with("yubikey::");
    if !from_yubikey {
        return true;
    }
    !(target == "yubikey::mgm" || target.starts_with("yubikey::mgm::"))
        && metadata.level() <= log::Level::Info
}
