//! What [`crate::Unit::answer`] returns: the signed response, and for the host the cause
//! of every internal error behind it.

use std::{io, path::PathBuf};

use tke_proto::{ProtoError, UnitId};

use crate::backend::BackendError;

/// A unit's answer to one request.
#[derive(Debug)]
#[must_use]
pub struct Answer {
    /// The DER of the [`tke_proto::SignedResponse`] (what [`crate::Unit::handle`] returns).
    pub response: Vec<u8>,
    /// Why the unit answered an internal error ([`tke_proto::ModuleError::INTERNAL`]) or
    /// could not sign its answer: every failure inside the unit while it handled the
    /// request, in the order they happened. Empty for every other answer. The response
    /// tells the client only "internal error"; this is for the host's log.
    pub internal_errors: Vec<InternalError>,
}

/// A failure inside a unit while it handled a request. The client only sees an internal
/// error; these name the unit and what failed, for the host's log. None carries secret
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InternalError {
    /// The state store could not save the command's new state: the unit kept its previous
    /// state (the counter is not consumed) and destroyed any secret the command made.
    #[error("crypto unit {} cannot save its state to {}", unit.uuid(), location.display())]
    SaveState {
        /// The unit.
        unit: UnitId,
        /// Where the store keeps the state ([`crate::StateStore::location`]).
        location: PathBuf,
        /// The store's error.
        #[source]
        source: io::Error,
    },
    /// The command's audit record could not be appended to the unit's audit log, which
    /// comes before the state is saved: the unit kept its previous state (the counter is
    /// not consumed) and destroyed any secret the command made.
    #[error("crypto unit {} cannot append the command's record to its audit log {}", unit.uuid(), path.display())]
    SaveAudit {
        /// The unit.
        unit: UnitId,
        /// The audit log ([`crate::AUDIT_FILE`] in the unit directory).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The unit's audit log could not be read to answer an audit query (nothing changed).
    #[error("crypto unit {} cannot read its audit log {}", unit.uuid(), path.display())]
    ReadAudit {
        /// The unit.
        unit: UnitId,
        /// The audit log ([`crate::AUDIT_FILE`] in the unit directory).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The backend failed (other than refusing an envelope, which is invalid data).
    #[error("the backend of crypto unit {} cannot {action}", unit.uuid())]
    Backend {
        /// The unit.
        unit: UnitId,
        /// What it was asked to do ("sign the response", "generate a master key").
        action: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A value the unit builds could not be encoded or signed.
    #[error("crypto unit {} cannot {action}", unit.uuid())]
    Encode {
        /// The unit.
        unit: UnitId,
        /// What it was building ("encode the status", "sign the envelope").
        action: &'static str,
        /// The encoder's error.
        #[source]
        source: ProtoError,
    },
}
