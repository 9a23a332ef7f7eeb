#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use tke_fs::atomic;
mod created;
mod dir;
mod error;
mod journal;
mod keypart;
mod selection;
mod sigkey;

pub use created::Listing;
pub use dir::{DirOrigin, FilesDir};
pub use error::{KeyFileError, Result};
pub use journal::{Journal, JournalStep, JOURNAL_PREFIX};
pub use keypart::{
    KeyPart, KeyPartEntry, KeyPartListing, PartDescription, PART_CREATED_SUFFIX, PART_PEM_LABEL,
    PART_SUFFIX,
};
pub use selection::{Selection, SELECTION_FILE};
pub use sigkey::{
    file_stem, SigKeyEntry, SigKeyKind, SigKeyListing, YubiKeyRef, CERT_SUFFIX, KEY_PEM_LABEL,
    KEY_SUFFIX, REF_SUFFIX,
};
/// The password of a signature key file (the type of `tke-pkcs8`, the key files' format).
pub use tke_pkcs8::Password;
/// The scrypt cost written into new key files (that of the key files' format).
pub use tke_pkcs8::{ScryptCost, SCRYPT_LOG_N, SCRYPT_P, SCRYPT_R};
