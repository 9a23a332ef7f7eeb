//! The unit's non-secret state and its file, `unit.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tke_proto::{
    AdminCertificate, AdminInfo, ControlPoints, Digest32, RegisterState, RegisterStatus, Ski,
    UnitId, UnitStatus, UnitType, Vp,
};

use crate::{
    backend::{KeyHandle, LiveSecrets},
    error::UnitError,
};

/// The name of the unit's state file (non-secret state, JSON) in its directory.
pub const STATE_FILE: &str = "unit.json";
/// The name of the fleet CA certificate file (PEM) in a unit directory.
pub const CA_FILE: &str = "ca.pem";
/// The name of the unit's device certificate file (PEM) in its directory.
pub const DEVICE_FILE: &str = "device.pem";
/// The name of the PKCS#11 backend's configuration file in a unit directory (named here,
/// not in the backend, so that discarding a unit removes it in every build).
pub const PKCS11_FILE: &str = "pkcs11.json";

/// The state file's format. Version 2 added the control points; a version 1 file is read
/// with the default mask ([`ControlPoints::DEFAULT`]) and written as version 2 by the
/// next command.
const FORMAT: &str = "tke-unit-state/2";
const FORMAT_1: &str = "tke-unit-state/1";

/// The most administrators a unit holds.
pub(crate) const MAX_ADMINS: usize = 8;

/// A register's value: its VP and the backend object holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub vp: Vp,
    pub key: KeyHandle,
}

/// The new master key register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NewRegister {
    Empty,
    Uncommitted(Slot),
    Committed(Slot),
}

/// The current master key register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CurrentRegister {
    Empty,
    Valid(Slot),
}

impl NewRegister {
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Self::Empty => None,
            Self::Uncommitted(s) | Self::Committed(s) => Some(*s),
        }
    }
    fn status(&self) -> RegisterStatus {
        match self {
            Self::Empty => RegisterStatus::EMPTY,
            Self::Uncommitted(s) => RegisterStatus {
                state: RegisterState::FullUncommitted,
                vp: Some(s.vp),
            },
            Self::Committed(s) => RegisterStatus {
                state: RegisterState::FullCommitted,
                vp: Some(s.vp),
            },
        }
    }
}

impl CurrentRegister {
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Self::Empty => None,
            Self::Valid(s) => Some(*s),
        }
    }
    fn status(&self) -> RegisterStatus {
        match self {
            Self::Empty => RegisterStatus::EMPTY,
            Self::Valid(s) => RegisterStatus {
                state: RegisterState::Valid,
                vp: Some(s.vp),
            },
        }
    }
}

/// Everything a unit knows that is not secret.
#[derive(Clone, Debug)]
pub(crate) struct State {
    pub unit_id: UnitId,
    pub unit_type: UnitType,
    /// The backend kind, to reopen the unit with the right one.
    pub backend: String,
    /// The last transaction counter used.
    pub counter: u64,
    /// 0 in imprint mode.
    pub sig_threshold: u8,
    pub rev_threshold: u8,
    pub admins: Vec<AdminCertificate>,
    pub new: NewRegister,
    pub current: CurrentRegister,
    /// Key id of the pending importer key.
    pub importer: Option<Digest32>,
    /// The control points (zeroize keeps them, as EP11 does).
    pub control_points: ControlPoints,
    /// The counter of the audit log's first record: 1, or for a unit made before units
    /// kept a log, the first counter after it got one.
    pub audit_first: u64,
    /// SHA-256 of the audit log's last record (zeros when none): saved with the counter,
    /// so that the record and the state commit together (zeroize keeps both).
    pub audit_head: Digest32,
}

impl State {
    /// A fresh unit in imprint mode.
    pub fn new(unit_id: UnitId, unit_type: UnitType, backend: &str) -> Self {
        Self {
            unit_id,
            unit_type,
            backend: backend.to_owned(),
            counter: 0,
            sig_threshold: 0,
            rev_threshold: 0,
            admins: Vec::new(),
            new: NewRegister::Empty,
            current: CurrentRegister::Empty,
            importer: None,
            control_points: ControlPoints::DEFAULT,
            audit_first: 1,
            audit_head: Digest32([0; 32]),
        }
    }

    pub fn imprint_mode(&self) -> bool {
        self.sig_threshold == 0
    }

    pub fn admin(&self, ski: &Ski) -> Option<&AdminCertificate> {
        self.admins.iter().find(|a| a.ski() == *ski)
    }

    pub fn status(&self) -> UnitStatus {
        UnitStatus {
            unit_id: self.unit_id,
            unit_type: self.unit_type,
            counter: self.counter,
            sig_threshold: self.sig_threshold,
            rev_threshold: self.rev_threshold,
            admins: self
                .admins
                .iter()
                .map(|a| AdminInfo {
                    ski: a.ski(),
                    name: a.name().clone(),
                })
                .collect(),
            new_register: self.new.status(),
            current_register: self.current.status(),
            importer_pending: self.importer.is_some(),
            control_points: self.control_points,
        }
    }

    /// The secrets this state refers to.
    pub fn live(&self) -> LiveSecrets {
        LiveSecrets {
            master_keys: [self.new.slot(), self.current.slot()]
                .into_iter()
                .flatten()
                .map(|s| s.key)
                .collect(),
            importer: self.importer,
        }
    }

    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let reg = |state, slot: Option<Slot>| RegisterJson {
            state,
            vp: slot.map(|s| s.vp.to_hex()),
            key: slot.map(|s| s.key.to_hex()),
        };
        let file = StateFile {
            format: FORMAT.to_owned(),
            backend: self.backend.clone(),
            unit_id: self.unit_id.uuid(),
            unit_type: self.unit_type.into(),
            counter: self.counter,
            signature_threshold: self.sig_threshold,
            revocation_threshold: self.rev_threshold,
            administrators: self
                .admins
                .iter()
                .map(|a| AdminJson {
                    name: a.name().to_string(),
                    ski: a.ski().to_hex(),
                    certificate: hex::encode(a.der()),
                })
                .collect(),
            new_register: reg(
                match self.new {
                    NewRegister::Empty => RegisterStateJson::Empty,
                    NewRegister::Uncommitted(_) => RegisterStateJson::FullUncommitted,
                    NewRegister::Committed(_) => RegisterStateJson::FullCommitted,
                },
                self.new.slot(),
            ),
            current_register: reg(
                match self.current {
                    CurrentRegister::Empty => RegisterStateJson::Empty,
                    CurrentRegister::Valid(_) => RegisterStateJson::Valid,
                },
                self.current.slot(),
            ),
            importer_key_id: self.importer.map(|k| k.to_hex()),
            control_points: Some(self.control_points.to_hex()),
            audit: Some(AuditJson {
                first: self.audit_first,
                head: self.audit_head.to_hex(),
            }),
        };
        let mut out = serde_json::to_vec_pretty(&file)?;
        out.push(b'\n');
        Ok(out)
    }

    /// Parses and validates a state file.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self, UnitError> {
        let file: StateFile =
            serde_json::from_slice(bytes).map_err(|source| UnitError::StateSyntax {
                path: path.to_owned(),
                source,
            })?;
        let corrupt = |what| UnitError::CorruptState {
            path: path.to_owned(),
            what,
        };
        let control_points = match (file.format.as_str(), &file.control_points) {
            (FORMAT, Some(hex)) => ControlPoints::from_hex(hex)
                .map_err(|_| corrupt("control_points is not 16 bytes of hex"))?,
            (FORMAT, None) => return Err(corrupt("control_points is missing")),
            // Written before units had control points: they get a new unit's.
            (FORMAT_1, None) => ControlPoints::DEFAULT,
            (FORMAT_1, Some(_)) => {
                return Err(corrupt("a tke-unit-state/1 file has no control_points"))
            }
            _ => {
                return Err(corrupt(
                    "unknown format (expected tke-unit-state/2 or tke-unit-state/1)",
                ))
            }
        };
        let unit_id =
            UnitId::from_uuid(&file.unit_id).map_err(|_| corrupt("unit_id is not a UUID"))?;
        let (sig, rev) = (file.signature_threshold, file.revocation_threshold);
        if (sig == 0) != (rev == 0) {
            return Err(corrupt("only one threshold is 0"));
        }
        if file.administrators.len() > MAX_ADMINS {
            return Err(corrupt("more than 8 administrators"));
        }
        let mut admins: Vec<AdminCertificate> = Vec::with_capacity(file.administrators.len());
        for a in &file.administrators {
            let der = hex::decode(&a.certificate)
                .map_err(|_| corrupt("an administrator certificate is not hex"))?;
            let cert = AdminCertificate::from_der(&der)
                .map_err(|_| corrupt("an administrator certificate is not valid"))?;
            if cert.name().as_str() != a.name || cert.ski().to_hex() != a.ski.to_ascii_lowercase() {
                return Err(corrupt(
                    "an administrator's name or SKI differs from its certificate",
                ));
            }
            if admins.iter().any(|b| b.ski() == cert.ski()) {
                return Err(corrupt("an administrator is listed twice"));
            }
            admins.push(cert);
        }
        if usize::from(sig) > admins.len() || usize::from(rev) > admins.len() {
            return Err(corrupt("a threshold exceeds the number of administrators"));
        }
        let slot = |r: &RegisterJson| -> Result<Option<Slot>, UnitError> {
            match (&r.vp, &r.key) {
                (None, None) => Ok(None),
                (Some(vp), Some(key)) => Ok(Some(Slot {
                    vp: Vp::from_hex(vp)
                        .map_err(|_| corrupt("a register's VP is not 32 bytes of hex"))?,
                    key: KeyHandle::from_hex(key)
                        .map_err(|_| corrupt("a register's key handle is not 16 bytes of hex"))?,
                })),
                _ => Err(corrupt(
                    "a register has a VP without a key handle, or the reverse",
                )),
            }
        };
        let new = match (file.new_register.state, slot(&file.new_register)?) {
            (RegisterStateJson::Empty, None) => NewRegister::Empty,
            (RegisterStateJson::FullUncommitted, Some(s)) => NewRegister::Uncommitted(s),
            (RegisterStateJson::FullCommitted, Some(s)) => NewRegister::Committed(s),
            _ => return Err(corrupt("the new register's state and value disagree")),
        };
        let current = match (file.current_register.state, slot(&file.current_register)?) {
            (RegisterStateJson::Empty, None) => CurrentRegister::Empty,
            (RegisterStateJson::Valid, Some(s)) => CurrentRegister::Valid(s),
            _ => return Err(corrupt("the current register's state and value disagree")),
        };
        if let (Some(a), Some(b)) = (new.slot(), current.slot()) {
            if a.key == b.key {
                return Err(corrupt("both registers refer to the same key object"));
            }
        }
        let importer = file
            .importer_key_id
            .as_deref()
            .map(Digest32::from_hex)
            .transpose()
            .map_err(|_| corrupt("importer_key_id is not 32 bytes of hex"))?;
        let (audit_first, audit_head) = match &file.audit {
            Some(a) => (
                a.first,
                Digest32::from_hex(&a.head)
                    .map_err(|_| corrupt("audit.head is not 32 bytes of hex"))?,
            ),
            // Written before units kept an audit log: it starts with the next command.
            None => (file.counter.saturating_add(1), Digest32([0; 32])),
        };
        if audit_first == 0 || audit_first > file.counter.saturating_add(1) {
            return Err(corrupt("audit.first is 0 or past the next counter"));
        }
        Ok(Self {
            audit_first,
            audit_head,
            unit_id,
            unit_type: file.unit_type.into(),
            backend: file.backend,
            counter: file.counter,
            sig_threshold: sig,
            rev_threshold: rev,
            admins,
            new,
            current,
            importer,
            control_points,
        })
    }
}

/// `unit.json`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    backend: String,
    unit_id: String,
    unit_type: UnitTypeJson,
    counter: u64,
    signature_threshold: u8,
    revocation_threshold: u8,
    administrators: Vec<AdminJson>,
    new_register: RegisterJson,
    current_register: RegisterJson,
    importer_key_id: Option<String>,
    /// The control point mask, 32 hex digits; absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    control_points: Option<String>,
    /// Where the audit log starts and its head; absent in files written before units kept
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit: Option<AuditJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditJson {
    first: u64,
    /// SHA-256 of the last record, hex.
    head: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminJson {
    name: String,
    ski: String,
    /// DER, hex.
    certificate: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterJson {
    state: RegisterStateJson,
    vp: Option<String>,
    key: Option<String>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RegisterStateJson {
    Empty,
    FullUncommitted,
    FullCommitted,
    Valid,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum UnitTypeJson {
    Operational,
    Recovery,
    Failover,
}

impl From<UnitType> for UnitTypeJson {
    fn from(t: UnitType) -> Self {
        match t {
            UnitType::Operational => Self::Operational,
            UnitType::Recovery => Self::Recovery,
            UnitType::Failover => Self::Failover,
        }
    }
}

impl From<UnitTypeJson> for UnitType {
    fn from(t: UnitTypeJson) -> Self {
        match t {
            UnitTypeJson::Operational => Self::Operational,
            UnitTypeJson::Recovery => Self::Recovery,
            UnitTypeJson::Failover => Self::Failover,
        }
    }
}
