//! Errors of creating and opening units. (Errors while executing a request are not Rust
//! errors: they are module return codes in the signed response.)

use std::path::PathBuf;

use tke_proto::{ProtoError, UnitId, UnitType};

use crate::backend::BackendError;

/// Why a unit could not be created or opened. Each names the unit, directory or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// A new unit needs an empty or absent directory.
    #[error("cannot create a crypto unit in {}: the directory is not empty (or not a directory)", dir.display())]
    DirectoryNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory holds no unit (or does not exist).
    #[error("{} is not a crypto unit directory: {} is missing", dir.display(), file.display())]
    NotAUnit {
        /// The directory.
        dir: PathBuf,
        /// The file that is missing.
        file: PathBuf,
    },
    /// Reading, writing or creating a file failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("the crypto unit state file {} is corrupt", path.display())]
    StateSyntax {
        /// The state file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// The state file parses but holds an invalid value.
    #[error("the crypto unit state file {} is corrupt: {what}", path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A certificate file is invalid or does not chain to the unit's fleet CA.
    #[error("the certificate in {} is not valid", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What failed.
        source: ProtoError,
    },
    /// The device certificate names another unit than the state file.
    #[error("{} is the device certificate of crypto unit {}, not of {}", path.display(), found.uuid(), expected.uuid())]
    ForeignCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The unit of the state file.
        expected: UnitId,
        /// The unit the certificate names.
        found: UnitId,
    },
    /// The device certificate's key is not the backend's device key.
    #[error("the device certificate {} of crypto unit {} does not certify the device key held by its {backend} backend", path.display(), unit.uuid())]
    DeviceKeyMismatch {
        /// The unit.
        unit: UnitId,
        /// The certificate file.
        path: PathBuf,
        /// The backend kind.
        backend: &'static str,
    },
    /// The device certificate states another unit type than the state file records.
    #[error("the device certificate {} of crypto unit {} states the type {}, but the unit's state records {}", path.display(), unit.uuid(), certified.label(), recorded.label())]
    CertifiedTypeMismatch {
        /// The unit.
        unit: UnitId,
        /// The certificate file (or the state store's location).
        path: PathBuf,
        /// The type the state records.
        recorded: UnitType,
        /// The type the certificate states.
        certified: UnitType,
    },
    /// The caller's `issue` function failed or returned an unusable certificate.
    #[error("issuing the device certificate of crypto unit {} failed", unit.uuid())]
    Issue {
        /// The unit being created.
        unit: UnitId,
        /// The error.
        source: ProtoError,
    },
    /// The issued certificate does not fit the unit being created.
    #[error("the device certificate issued for crypto unit {} {what}", unit.uuid())]
    IssuedCertificate {
        /// The unit being created.
        unit: UnitId,
        /// What is wrong ("names another unit", "certifies another key").
        what: &'static str,
    },
    /// The state file records a backend this build does not know, or not the one given.
    #[error("the crypto unit state file {} records the backend {recorded:?}, which {problem}", path.display())]
    BackendKind {
        /// The state file.
        path: PathBuf,
        /// The backend kind recorded.
        recorded: String,
        /// Why it cannot be used ("is unknown", "needs parameters: use Unit::open_with_backend", "differs from the backend given").
        problem: &'static str,
    },
    /// The backend failed.
    #[error("the secrets backend of crypto unit {} in {} failed", unit.uuid(), dir.display())]
    Backend {
        /// The unit.
        unit: UnitId,
        /// Its directory.
        dir: PathBuf,
        /// The backend's error.
        source: BackendError,
    },
    /// The state refers to a secret the backend lacks, or with another VP.
    #[error("crypto unit {} in {} is inconsistent: {what} (state file {})", unit.uuid(), dir.display(), path.display())]
    Inconsistent {
        /// The unit.
        unit: UnitId,
        /// Its directory.
        dir: PathBuf,
        /// The state file.
        path: PathBuf,
        /// What does not match.
        what: &'static str,
    },
    /// A new unit needs a state store that holds no unit.
    #[error("cannot create a crypto unit in the state store {}: it already holds one", location.display())]
    StoreNotEmpty {
        /// The store's location.
        location: PathBuf,
    },
    /// The unit's directory is one of a journal's ([`crate::Journal`]) that holds records
    /// not yet compacted into the unit files (its host stopped without a graceful stop): the
    /// unit's own state file may be older than what the unit answered.
    #[error(
        "the latest state of the crypto unit in {} may be in the journal {}, not yet in its \
         state file: open the units through their journal (their host replays it when it starts)",
        dir.display(),
        journal.display()
    )]
    StateInJournal {
        /// The unit directory.
        dir: PathBuf,
        /// The journal.
        journal: PathBuf,
    },
    /// The state store holds no unit.
    #[error("the state store {} holds no crypto unit", location.display())]
    EmptyStore {
        /// The store's location.
        location: PathBuf,
    },
}
