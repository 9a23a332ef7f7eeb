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

    /// A ceremony journal cannot be read: not JSON, an unknown or missing field, or
    /// parameters of another shape (a journal is strict to decode: a journal misread
    /// would resume a ceremony with parameters nobody asked for).
    #[error("the ceremony journal {} is corrupt or was written by another version of TKE; it is left as it was: check the crypto units' state, then move the file away to start the ceremony over", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// The JSON error, with its line and column.
        source: serde_json::Error,
    },

    /// A ceremony journal has a format version this library does not know.
    #[error("the ceremony journal {} has format version {version}; this version of TKE reads version 1: finish the ceremony with the version of TKE that started it", path.display())]
    JournalVersion {
        /// The journal file.
        path: PathBuf,
        /// The version found.
        version: u64,
    },

    /// A ceremony journal names another command or service instance than its file name
    /// says (a file renamed or copied by hand).
    #[error("the ceremony journal {} is the journal of {what} {found:?}, not {expected:?}: it was renamed or copied by hand; it is left as it was: move it away", path.display())]
    JournalMismatch {
        /// The journal file.
        path: PathBuf,
        /// What differs: `command` or `service instance`.
        what: &'static str,
        /// What the file says.
        found: String,
        /// What its name says.
        expected: String,
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

    /// A master key part value is not 64 hex digits.
    #[error(
        "a master key part is 32 bytes, written as 64 hex digits; this value has {digits} \
         hex digits"
    )]
    KeyPartDigits {
        /// How many hex digits it has (white space not counted).
        digits: usize,
    },

    /// A master key part value holds a character that is not a hex digit. The value is
    /// secret, so the character is not shown.
    #[error(
        "the master key part is not hexadecimal: character {position} (white space not \
         counted) is not a hex digit 0-9, a-f or A-F"
    )]
    KeyPartNotHex {
        /// Its position, from 1, among the characters that are not white space.
        position: usize,
    },

    /// A master key part value of another length than 32 bytes.
    #[error("a master key part is 32 bytes, not {bytes}")]
    KeyPartLength {
        /// Its length.
        bytes: usize,
    },

    /// A master key part of all zeros: it would add nothing to the master key.
    #[error("a master key part of all zeros is refused: it would add nothing to the master key")]
    KeyPartZero,

    /// A master key part description breaks the rules.
    #[error(
        "the description {description:?} ({chars} characters) is not valid: {problem}; use 1 \
         to 64 printable characters"
    )]
    PartDescription {
        /// The description (at most 70 characters of it).
        description: String,
        /// Its length in characters.
        chars: usize,
        /// What is wrong.
        problem: &'static str,
    },

    /// The description of a new master key part is taken by, or looks the same as, that
    /// of a part on the workstation: a description names one part.
    #[error(
        "the description {description:?} is taken: the master key part in {} is described as \
         {existing:?}, which is or looks the same; each part needs a description that looks \
         different",
        path.display()
    )]
    PartDescriptionTaken {
        /// The description asked for.
        description: String,
        /// The description of the part that has it.
        existing: String,
        /// That part's file.
        path: PathBuf,
    },

    /// A master key part would be protected by an empty password.
    #[error("refusing an empty password for the master key part {description:?}")]
    PartEmptyPassword {
        /// The part's description.
        description: String,
    },

    /// A master key part could not be encrypted or encoded.
    #[error("cannot encrypt the master key part {description:?}")]
    PartEncrypt {
        /// The part's description.
        description: String,
        /// The encoder's error (never holds key bytes).
        source: pkcs8::Error,
    },

    /// No master key part has this description.
    #[error("{}", unknown_part(description, known))]
    UnknownPart {
        /// The description asked for.
        description: String,
        /// The descriptions of the parts on the workstation.
        known: Vec<String>,
    },

    /// Several master key part files have this description (files copied in from several
    /// workstations): which one is meant is unclear.
    #[error(
        "{} master key part files are described as {description:?}: {}; move all but one \
         out of the directory",
        paths.len(),
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    AmbiguousPart {
        /// The description.
        description: String,
        /// The files that have it.
        paths: Vec<PathBuf>,
    },

    /// A master key part file is not valid TOML, or has unknown or missing fields.
    #[error(
        "the master key part file {} is malformed: it must hold `version`, `description`, `vp` \
         and `encrypted`, only",
        path.display()
    )]
    PartToml {
        /// The part file.
        path: PathBuf,
        /// The TOML error, with its position (the fields it reads hold no secret).
        source: Box<toml::de::Error>,
    },

    /// A master key part file has a format version this library does not know.
    #[error(
        "the master key part file {} has format version {version}; this version of TKE reads \
         version 1",
        path.display()
    )]
    PartFileVersion {
        /// The part file.
        path: PathBuf,
        /// The version found.
        version: i64,
    },

    /// A master key part file breaks its format in a way we detect ourselves.
    #[error("the master key part file {} is malformed: {problem}", path.display())]
    MalformedPartFile {
        /// The part file.
        path: PathBuf,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// A master key part file's description is not a valid description.
    #[error(
        "the master key part file {} is malformed: its description is not valid: {problem}",
        path.display()
    )]
    PartFileDescription {
        /// The part file.
        path: PathBuf,
        /// What is wrong with the description.
        problem: &'static str,
    },

    /// The encrypted part of a master key part file could not be decoded (PEM or DER).
    #[error("the master key part file {} is malformed: {what}", path.display())]
    PartFileEncoding {
        /// The part file.
        path: PathBuf,
        /// Which layer failed.
        what: &'static str,
        /// The decoder's error, with its position.
        source: pkcs8::der::Error,
    },

    /// Decryption failed: the password is wrong, or the encrypted data was altered.
    #[error(
        "wrong password for master key part {description:?} ({}), or its encrypted data was \
         altered (with AES-CBC encryption the two look alike)",
        path.display()
    )]
    PartWrongPassword {
        /// The part's description.
        description: String,
        /// The part file.
        path: PathBuf,
    },

    /// A master key part file decrypts with its password, but what it shows does not match
    /// what is encrypted: the file was altered, or its encrypted data comes from another
    /// part file.
    #[error(
        "the master key part file {} (described as {description:?}) was altered or swapped: \
         {problem}",
        path.display()
    )]
    PartAltered {
        /// The part file.
        path: PathBuf,
        /// The description the file shows.
        description: String,
        /// What does not match.
        problem: &'static str,
    },
}

/// The message of [`KeyFileError::UnknownPart`]: the descriptions there are, so that a
/// typo shows.
fn unknown_part(description: &str, known: &[String]) -> String {
    let there = if known.is_empty() {
        "there are no master key parts on this workstation".to_owned()
    } else {
        let quoted: Vec<String> = known.iter().map(|d| format!("{d:?}")).collect();
        format!("the parts are described as {}", quoted.join(", "))
    };
    format!("no master key part is described as {description:?}: {there}")
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
