//! The errors of workstation files. Each names the file, directory or administrator
//! concerned; none ever holds a password or key bytes.

use std::{io, path::PathBuf};

use tke_proto::{AdminName, ProtoError, Ski};

use crate::DirOrigin;

/// Errors of workstation files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// No directory was given, `CLOUDTKEFILES` is unset, and there is no per-user default
    /// (neither `XDG_DATA_HOME` nor `HOME` is set).
    #[error(
        "no directory for TKE files: none was given, CLOUDTKEFILES is unset, and there is \
         no per-user default (HOME is unset)"
    )]
    NoDirectory,

    /// `CLOUDTKEFILES` is set but empty. Refused rather than read as unset: an empty
    /// value is usually a mistyped or failed assignment, and falling back to the default
    /// directory would silently work on another fleet.
    #[error("CLOUDTKEFILES is set but empty; it must name the directory for TKE files")]
    EmptyEnv,

    /// The directory path exists but is not a directory.
    #[error("the directory for TKE files {} ({origin}) exists but is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// Where the path came from.
        origin: DirOrigin,
    },

    /// The directory could not be created.
    #[error("cannot create the directory for TKE files {} ({origin})", path.display())]
    CreateDir {
        /// The path.
        path: PathBuf,
        /// Where the path came from.
        origin: DirOrigin,
        /// The I/O error.
        source: io::Error,
    },

    /// A file cannot be created in the directory.
    #[error("the directory for TKE files {} ({origin}) is not writable", path.display())]
    NotWritable {
        /// The path.
        path: PathBuf,
        /// Where the path came from.
        origin: DirOrigin,
        /// The I/O error of the write probe.
        source: io::Error,
    },

    /// Reading, writing, listing or removing a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `list`, `remove`, `sync`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },

    /// A file to be written exists already. Workstation files are never overwritten.
    #[error("{} already exists; an existing file is never overwritten", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// A signature key file would be protected by an empty password.
    #[error("refusing an empty password for the signature key of administrator {name}")]
    EmptyPassword {
        /// The administrator.
        name: AdminName,
    },

    /// The certificate given to save with a key does not belong to it.
    #[error("the certificate given for administrator {name} {problem}")]
    WrongCertificate {
        /// The administrator the key is saved for.
        name: AdminName,
        /// What is wrong (`is for another key`, `names another administrator`).
        problem: &'static str,
    },

    /// A certificate file does not hold a valid administrator certificate.
    #[error("the certificate file {} is not a valid administrator certificate", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What the certificate parser found.
        source: ProtoError,
    },

    /// A signature key file breaks its format in a way we detect ourselves.
    #[error("the signature key file {} is malformed: {problem}", path.display())]
    MalformedKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// A signature key file could not be decoded (PEM or DER).
    #[error("the signature key file {} is malformed: {what}", path.display())]
    KeyFileEncoding {
        /// The key file.
        path: PathBuf,
        /// Which layer failed (`PEM`, `EncryptedPrivateKeyInfo DER`).
        what: &'static str,
        /// The decoder's error, with its position.
        source: pkcs8::der::Error,
    },

    /// Decryption failed: the password is wrong, or the encrypted data was altered.
    #[error(
        "wrong password for signature key {name} ({}), or its encrypted data was altered \
         (with AES-CBC encryption the two look alike)",
        path.display()
    )]
    WrongPassword {
        /// The administrator whose key it is.
        name: AdminName,
        /// The key file.
        path: PathBuf,
    },

    /// The key file decrypts to a key that is not the certificate's key.
    #[error(
        "the signature key in {} does not match the certificate of administrator {name} ({}) in {}",
        key_path.display(), ski.short(), cert_path.display()
    )]
    KeyMismatch {
        /// The administrator the certificate names.
        name: AdminName,
        /// The certificate's SKI.
        ski: Ski,
        /// The key file.
        key_path: PathBuf,
        /// The certificate file.
        cert_path: PathBuf,
    },

    /// A signature key file (or token reference file) has no certificate file beside it.
    #[error("the signature key file {} has no certificate file {}", key_path.display(), cert_path.display())]
    MissingCertificate {
        /// The key file (or reference file).
        key_path: PathBuf,
        /// The certificate file expected.
        cert_path: PathBuf,
    },

    /// A stem has both a key file and a reference file: which one holds the key is
    /// unclear, so neither is listed.
    #[error(
        "{} and {} both claim the same signature key (as a key file and as a key on a \
         token); remove the one that is wrong",
        key_path.display(), ref_path.display()
    )]
    KeyAndReference {
        /// The key file.
        key_path: PathBuf,
        /// The reference file.
        ref_path: PathBuf,
    },

    /// A reference file is not valid TOML, or has unknown or missing fields.
    #[error(
        "the signature key reference file {} is malformed: it must hold `kind = \"pkcs11\"` \
         and `uri = \"pkcs11:...\"`, or `kind = \"yubikey\"`, `serial` and `slot`, only",
        path.display()
    )]
    ReferenceToml {
        /// The reference file.
        path: PathBuf,
        /// The TOML error, with its position (reference files hold no secret).
        source: toml::de::Error,
    },

    /// A reference file breaks its format in a way we detect ourselves.
    #[error("the signature key reference file {} is malformed: {problem}", path.display())]
    MalformedReference {
        /// The reference file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// A reference file names a kind of token this version does not know.
    #[error(
        "the signature key reference file {} is for a {kind:?} key, which this version of \
         TKE does not know (it knows \"pkcs11\" and \"yubikey\")",
        path.display()
    )]
    UnknownReferenceKind {
        /// The reference file.
        path: PathBuf,
        /// The `kind` it names.
        kind: String,
    },

    /// A PIV slot that does not hold keys.
    #[error("PIV slot {slot:02x} does not hold keys; use 9a, 9c, 9d, 9e, or 82 to 95")]
    BadSlot {
        /// The slot.
        slot: u8,
    },

    /// A PKCS#11 signature key is on a token: there is no key file to decrypt.
    #[error("the signature key of {name} is a {kind} key ({}): it is opened through its token, not decrypted", path.display())]
    NotAKeyFile {
        /// The administrator.
        name: AdminName,
        /// Where the key lives (`pkcs11`).
        kind: &'static str,
        /// Its reference file.
        path: PathBuf,
    },

    /// The URI given to record a key on a PKCS#11 token is refused.
    #[error("cannot record the token key of administrator {name}: {problem}")]
    InvalidTokenUri {
        /// The administrator.
        name: AdminName,
        /// What is wrong.
        problem: &'static str,
    },

    /// A YubiKey signature key is held on the YubiKey, not in a file: its provider opens it.
    #[error(
        "the signature key of administrator {name} is on a {kind} (see {}), not in a \
         password-protected file",
        path.display()
    )]
    KeyOnToken {
        /// The administrator.
        name: AdminName,
        /// The token kind's label.
        kind: &'static str,
        /// Its reference file.
        path: PathBuf,
    },

    /// A certificate file has no signature key file (nor reference file) beside it.
    #[error(
        "the certificate file {} has no signature key file {} (nor a reference file to a key on a token)",
        cert_path.display(), key_path.display()
    )]
    MissingKey {
        /// The certificate file.
        cert_path: PathBuf,
        /// The key file expected.
        key_path: PathBuf,
    },

    /// Two certificate files hold the same key; only the first is listed.
    #[error(
        "{} holds the same signature key ({}) as {}; only the latter is listed",
        path.display(), ski.short(), first.display()
    )]
    DuplicateKey {
        /// The SKI both hold.
        ski: Ski,
        /// The certificate file left out.
        path: PathBuf,
        /// The certificate file listed.
        first: PathBuf,
    },

    /// A key could not be encrypted or encoded.
    #[error("cannot encrypt the signature key of administrator {name}")]
    Encrypt {
        /// The administrator.
        name: AdminName,
        /// The encoder's error (never holds key bytes).
        source: pkcs8::Error,
    },

    /// The selection file is not valid JSON of the expected shape.
    #[error("the selection file {} is corrupt", path.display())]
    SelectionJson {
        /// The selection file.
        path: PathBuf,
        /// The JSON error, with its line and column.
        source: serde_json::Error,
    },

    /// The selection file has a format version this library does not know.
    #[error("the selection file {} has format version {version}; this version of TKE reads version 1", path.display())]
    SelectionVersion {
        /// The selection file.
        path: PathBuf,
        /// The version found.
        version: u64,
    },

    /// A selected signature key in the selection file is not a 64-hex-digit SKI.
    #[error("the selection file {} is corrupt: sigkeys[{index}] is not a 64-hex-digit SKI", path.display())]
    SelectionSki {
        /// The selection file.
        path: PathBuf,
        /// The index of the bad entry.
        index: usize,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = KeyFileError> = core::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> KeyFileError {
    let path = path.into();
    move |source| KeyFileError::Io {
        action,
        path,
        source,
    }
}
