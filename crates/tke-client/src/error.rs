use std::path::PathBuf;

use tke_proto::{CommandId, ModuleError, ProtoError, UnitId};

/// Errors talking to units. Each names the unit (and, for commands, the command).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A unit reported a module error.
    #[error("crypto unit {} refused {command:?}: {error}", unit.uuid())]
    Module {
        /// The unit.
        unit: UnitId,
        /// The command refused.
        command: CommandId,
        /// Its codes.
        error: ModuleError,
    },
    /// The key store of a service instance cannot be created or opened.
    #[error("the key storage of this service instance cannot be opened")]
    KeyStore(#[source] Box<tke_keystore::StoreError>),
    /// A service instance id that cannot name a key store file (not a UUID).
    #[error("service instance {instance} has no key storage: its id is not a UUID")]
    KeyStoreInstance {
        /// The instance.
        instance: crate::InstanceId,
    },
    /// A unit refused a status query.
    #[error("crypto unit {} refused the status query: {error}", unit.uuid())]
    QueryRefused {
        /// The unit.
        unit: UnitId,
        /// Its codes.
        error: ModuleError,
    },
    /// A unit refused a key-service operation (the codes say why: no register with that
    /// verification pattern, a key that does not unwrap, a batch too big, ...).
    #[error("crypto unit {} refused the key-service operation {op}: {error}", unit.uuid())]
    ServiceRefused {
        /// The unit.
        unit: UnitId,
        /// The operation's ASN.1 name (`generateKeys`, `wrapData`, `unwrapData`, `rewrap`).
        op: &'static str,
        /// Its codes.
        error: ModuleError,
    },
    /// A key-service operation was not sent: its sizes break the protocol's limits (the
    /// source says which).
    #[error("the key-service operation {op} for crypto unit {} was not sent", unit.uuid())]
    ServiceRequest {
        /// The unit.
        unit: UnitId,
        /// The operation's ASN.1 name.
        op: &'static str,
        /// What is wrong.
        source: ProtoError,
    },
    /// A unit's answer could not be authenticated or decoded.
    #[error("crypto unit {}", unit.uuid())]
    Response {
        /// The unit.
        unit: UnitId,
        /// What failed.
        source: ProtoError,
    },
    /// A unit's device certificate does not chain to the fleet CA or names another unit.
    #[error("crypto unit {} is not trusted", unit.uuid())]
    Untrusted {
        /// The unit.
        unit: UnitId,
        /// Why.
        source: ProtoError,
    },
    /// What a server lists, or a unit's signed status says, about a unit's type or service
    /// instance is not what its device certificate states.
    #[error("{what} {stated} for crypto unit {}, but its device certificate says {certified}", unit.uuid())]
    DisagreesWithCertificate {
        /// The unit.
        unit: UnitId,
        /// Which statement ("the listing gives the type", "the listing gives the
        /// instance", "the signed status gives the type").
        what: &'static str,
        /// What was stated (untrusted text, escaped).
        stated: String,
        /// What the certificate states.
        certified: String,
    },
    /// The unit is not known to any transport.
    #[error("crypto unit {} is not known to this workstation's fleet", unit.uuid())]
    UnknownUnit {
        /// The unit.
        unit: UnitId,
    },
    /// The unit's transaction counter is not the one this client's own commands account
    /// for: someone else sent it a command in between. Reported instead of retried where
    /// a retry would build on a state someone else chose (a unit in imprint mode accepts
    /// unsigned administrator changes from anyone who can reach it).
    #[error("crypto unit {} was used by someone else: its transaction counter is {found}, not {expected}; {command:?} was not retried", unit.uuid())]
    Interference {
        /// The unit.
        unit: UnitId,
        /// The command that found the counter moved (the unit did not run it).
        command: CommandId,
        /// The counter the caller accounted for.
        expected: u64,
        /// The counter the unit reported.
        found: u64,
    },
    /// A command could not be built or signed.
    #[error("cannot sign the {command:?} command for crypto unit {}", unit.uuid())]
    Signing {
        /// The unit.
        unit: UnitId,
        /// The command.
        command: CommandId,
        /// Why.
        source: tke_sigkey::SignError,
    },
    /// A command could not be encoded.
    #[error("cannot encode a request for crypto unit {}", unit.uuid())]
    Encoding {
        /// The unit.
        unit: UnitId,
        /// Why.
        source: ProtoError,
    },
    /// `tke local init` on a directory that already holds a fleet.
    #[error("an embedded fleet already exists at {}; use it as it is, or remove that directory to start again (this destroys every unit in it)", path.display())]
    FleetExists {
        /// The fleet directory.
        path: PathBuf,
    },
    /// No fleet where one was expected.
    #[error("no embedded fleet at {}", path.display())]
    FleetMissing {
        /// The fleet directory.
        path: PathBuf,
    },
    /// A fleet specification out of range.
    #[error("invalid fleet layout: {what}")]
    FleetSpec {
        /// What is out of range.
        what: &'static str,
    },
    /// Reading or writing a fleet file failed.
    #[error("embedded fleet file {}", path.display())]
    FleetIo {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A fleet file is damaged.
    #[error("embedded fleet file {} is damaged: {what}", path.display())]
    FleetCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The fleet CA could not be made.
    #[error("cannot make the fleet CA in {}", path.display())]
    FleetCa {
        /// The fleet directory.
        path: PathBuf,
        /// Why.
        source: ProtoError,
    },
    /// Another process holds the fleet.
    #[error("the embedded fleet at {} is in use by another tke process; wait for it to finish and retry", path.display())]
    FleetBusy {
        /// The fleet directory.
        path: PathBuf,
    },
    #[cfg(feature = "embedded")]
    /// An embedded unit could not be opened or created.
    #[error("embedded crypto unit in {}", path.display())]
    Unit {
        /// The unit directory.
        path: PathBuf,
        /// Why.
        source: Box<tke_unit::UnitError>,
    },
    /// A transport failure (network, server).
    #[error("cannot reach crypto unit {} through {endpoint}", unit.uuid())]
    Transport {
        /// The unit.
        unit: UnitId,
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: tke_proto::BoxError,
    },
    #[cfg(feature = "https")]
    /// An HTTPS target failed: listing its units, or carrying a request to one of them.
    #[error("target {target} ({url}){}", unit.map(|u| format!(", crypto unit {}", u.uuid())).unwrap_or_default())]
    Network {
        /// The target's name.
        target: String,
        /// Its URL.
        url: String,
        /// The unit addressed, if any.
        unit: Option<UnitId>,
        /// What failed.
        source: Box<crate::https::HttpsError>,
    },
    /// A service instance that the transport does not hold.
    #[error("service instance {instance} is not in this fleet")]
    UnknownInstance {
        /// The instance.
        instance: crate::InstanceId,
    },
    /// A total of failover units that the instance may not have.
    #[error("cannot give service instance {instance} that many failover crypto units")]
    FailoverTotal {
        /// The instance.
        instance: crate::InstanceId,
        /// Why.
        source: crate::FailoverTotalError,
    },
    /// Two transports list the same unit: commands to it could reach it by either way,
    /// so the client refuses to number it twice.
    #[error("crypto unit {} is listed by two transports: {first} and {second}", unit.uuid())]
    DuplicateUnit {
        /// The unit.
        unit: UnitId,
        /// The transport that listed it first ([`crate::Transport::describe`]).
        first: String,
        /// The transport that listed it again.
        second: String,
    },
}

impl From<tke_keystore::StoreError> for ClientError {
    fn from(e: tke_keystore::StoreError) -> Self {
        Self::KeyStore(Box::new(e))
    }
}
