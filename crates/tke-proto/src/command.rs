//! Administrative commands, the signatures over them, and queries.
//!
//! A command is the DER of [`AdminCommand`]; administrators sign those exact bytes. The
//! bytes travel inside [`SignedCommand`] as an OCTET STRING, so the unit verifies the
//! signatures over exactly what was signed and only then decodes it.

use der::{asn1::OctetString, Choice, Decode, Encode, Enumerated, Sequence};

use crate::{
    audit::AuditQuery,
    cert::AdminCertificate,
    parts::{self, MkPartsRequest},
    service::ServiceRequest,
    transport::{ExportRequest, SignedEnvelope},
    ControlPoints, Nonce, ProtoError, Register, Ski, Threshold, UnitId, UnitType, Vp,
};

/// Administrative command identifiers. The numbering follows the vendor's EP11
/// `m_admin` command ids where one exists.
///
/// ```asn1
/// CommandId ::= ENUMERATED {
///   addAdmin(2), removeAdmin(4), setThresholds(8), generateImporter(9),
///   generateRandomMk(10), exportMk(11), importMk(12), commitMk(13),
///   setImmediate(14), zeroize(16), addControlPoints(18),
///   removeControlPoints(19), clearCurrent(27), clearNew(28),
///   exportMkBatch(64), importMkParts(65) }
/// ```
///
/// `exportMkBatch` has no vendor counterpart: one quorum approval exports to up to
/// [`MAX_EXPORT_TARGETS`] units at once, so that a source unit is not the queue every
/// target of a large instance waits in, and administrators sign once instead of once per
/// target. `importMkParts` has none either: the vendor loads parts with one `importWK`
/// envelope of signed sub-requests; here one command carries the sealed parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Enumerated)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum CommandId {
    AddAdmin = 0x02,
    RemoveAdmin = 0x04,
    SetThresholds = 0x08,
    GenerateImporter = 0x09,
    GenerateRandomMk = 0x0A,
    ExportMk = 0x0B,
    ImportMk = 0x0C,
    CommitMk = 0x0D,
    SetImmediate = 0x0E,
    Zeroize = 0x10,
    AddControlPoints = 0x12,
    RemoveControlPoints = 0x13,
    ClearCurrent = 0x1B,
    ClearNew = 0x1C,
    ExportMkBatch = 0x40,
    ImportMkParts = 0x41,
}

impl CommandId {
    /// The identifier's ASN.1 name (`addAdmin`, `setThresholds`, …), as audit records and
    /// logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::AddAdmin => "addAdmin",
            Self::RemoveAdmin => "removeAdmin",
            Self::SetThresholds => "setThresholds",
            Self::GenerateImporter => "generateImporter",
            Self::GenerateRandomMk => "generateRandomMk",
            Self::ExportMk => "exportMk",
            Self::ImportMk => "importMk",
            Self::CommitMk => "commitMk",
            Self::SetImmediate => "setImmediate",
            Self::Zeroize => "zeroize",
            Self::AddControlPoints => "addControlPoints",
            Self::RemoveControlPoints => "removeControlPoints",
            Self::ClearCurrent => "clearCurrent",
            Self::ClearNew => "clearNew",
            Self::ExportMkBatch => "exportMkBatch",
            Self::ImportMkParts => "importMkParts",
        }
    }
}

/// The most targets one `exportMkBatch` command names.
pub const MAX_EXPORT_TARGETS: usize = 16;

/// The part of a command that administrators sign.
///
/// ```asn1
/// AdminCommand ::= SEQUENCE {
///   unitId    OCTET STRING (SIZE(16)),  -- the one unit that may run it
///   counter   INTEGER (0..MAX),         -- that unit's next transaction counter
///   command   CommandId,
///   input     OCTET STRING }            -- command-specific, see Command
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct AdminCommand {
    /// The unit that may run the command.
    pub unit_id: UnitId,
    /// The unit's next transaction counter (its current counter plus one).
    pub counter: u64,
    /// What to do.
    pub command: CommandId,
    /// Command-specific input.
    pub input: OctetString,
}

/// Thresholds input of `setThresholds`.
///
/// ```asn1
/// ThresholdsInput ::= SEQUENCE { signature INTEGER (1..8), revocation INTEGER (1..8) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Sequence)]
pub struct ThresholdsInput {
    /// Signature threshold.
    pub signature: u8,
    /// Revocation signature threshold.
    pub revocation: u8,
}

/// A command with its typed input. [`Command::to_wire`] and [`Command::from_wire`] map it
/// to and from the (id, input octets) pair of [`AdminCommand`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Install an administrator. Input: the administrator certificate (DER).
    AddAdmin(AdminCertificate),
    /// Remove an administrator. Input: its 32-byte SKI.
    RemoveAdmin(Ski),
    /// Set both thresholds; the first one leaves imprint mode. Input: [`ThresholdsInput`].
    SetThresholds {
        /// Signature threshold.
        signature: Threshold,
        /// Revocation signature threshold.
        revocation: Threshold,
    },
    /// Make a single-use importer key. No input; output: [`crate::transport::CertifiedImporter`].
    GenerateImporter,
    /// Generate a random master key (current register if empty, else new). No input;
    /// output: the VP.
    GenerateRandomMk,
    /// Export a register's value wrapped to another unit's importer key. Input:
    /// [`ExportRequest`]; output: [`SignedEnvelope`].
    ExportMk(Box<ExportRequest>),
    /// Export to several units at once (1 to [`MAX_EXPORT_TARGETS`]), all or nothing.
    /// Input: `SEQUENCE SIZE (1..16) OF ExportRequest`; output:
    /// `SEQUENCE OF SignedEnvelope`, one per request, in the same order.
    ExportMkBatch(Vec<ExportRequest>),
    /// Import a master key into the new register. Input: [`SignedEnvelope`]; output: the VP.
    ImportMk(Box<SignedEnvelope>),
    /// Load the new register from 2 or 3 master key parts, each sealed to the pending
    /// importer key; the key is their XOR. Input: [`MkPartsRequest`]; output: the VP of
    /// the combined key.
    ImportMkParts(Box<MkPartsRequest>),
    /// Commit the new register. Input: its expected VP.
    CommitMk(Vp),
    /// Promote new → current and clear new. Input: the new register's expected VP.
    SetImmediate(Vp),
    /// Return to imprint mode: registers cleared, administrators removed, thresholds 0.
    Zeroize,
    /// Clear the current register.
    ClearCurrent,
    /// Clear the new register.
    ClearNew,
    /// Set the control points of a mask (the others stay). Input: the 16-byte mask;
    /// output: the unit's mask afterwards.
    AddControlPoints(ControlPoints),
    /// Clear the control points of a mask (the others stay). Input: the 16-byte mask;
    /// output: the unit's mask afterwards.
    RemoveControlPoints(ControlPoints),
}

impl Command {
    /// The distinct administrator signatures a unit of type `unit_type` with thresholds
    /// `sig_threshold` and `rev_threshold` (both 0 in imprint mode) asks for this command
    /// (`docs/protocol.md`, the command table), or `None` when it refuses the command in
    /// imprint mode. The one rule the units enforce and the clients count approvals by.
    ///
    /// ```
    /// use tke_proto::{Command, Threshold, UnitType};
    /// let t = |n| Threshold::new(n).unwrap();
    /// let set = Command::SetThresholds { signature: t(2), revocation: t(1) };
    /// // Leaving imprint mode takes the new signature threshold.
    /// assert_eq!(set.signatures_required(UnitType::Operational, 0, 0), Some(2));
    /// assert_eq!(Command::ClearNew.signatures_required(UnitType::Operational, 0, 0), None);
    /// // A recovery unit's last copy of the key takes the quorum to destroy.
    /// assert_eq!(Command::Zeroize.signatures_required(UnitType::Recovery, 3, 2), Some(3));
    /// assert_eq!(Command::Zeroize.signatures_required(UnitType::Operational, 3, 2), Some(1));
    /// ```
    pub fn signatures_required(
        &self,
        unit_type: UnitType,
        sig_threshold: u8,
        rev_threshold: u8,
    ) -> Option<usize> {
        let sig = usize::from(sig_threshold);
        Some(match (self, sig_threshold == 0) {
            (Self::AddAdmin(_) | Self::RemoveAdmin(_) | Self::Zeroize, true) => 0,
            (Self::SetThresholds { signature, .. }, true) => usize::from(signature.get()),
            (_, true) => return None,
            (
                Self::AddAdmin(_)
                | Self::SetThresholds { .. }
                | Self::CommitMk(_)
                | Self::ExportMk(_)
                | Self::ExportMkBatch(_)
                | Self::AddControlPoints(_)
                | Self::RemoveControlPoints(_),
                false,
            ) => sig,
            (Self::RemoveAdmin(_), false) => usize::from(rev_threshold),
            // Taking a master key from another service instance is the target quorum's
            // consent, as sending it there is the source quorum's.
            (Self::ImportMk(env), false) if env.source_instance.is_some() => sig,
            // A recovery unit holds the instance's last copy of the master key: destroying
            // it takes the quorum, not one administrator (a difference from the vendor).
            (Self::ClearCurrent | Self::Zeroize, false) if unit_type == UnitType::Recovery => sig,
            (
                Self::GenerateImporter
                | Self::GenerateRandomMk
                | Self::ImportMk(_)
                | Self::ImportMkParts(_)
                | Self::SetImmediate(_)
                | Self::ClearNew
                | Self::ClearCurrent
                | Self::Zeroize,
                false,
            ) => 1,
        })
    }

    /// The command id.
    pub fn id(&self) -> CommandId {
        match self {
            Self::AddAdmin(_) => CommandId::AddAdmin,
            Self::RemoveAdmin(_) => CommandId::RemoveAdmin,
            Self::SetThresholds { .. } => CommandId::SetThresholds,
            Self::GenerateImporter => CommandId::GenerateImporter,
            Self::GenerateRandomMk => CommandId::GenerateRandomMk,
            Self::ExportMk(_) => CommandId::ExportMk,
            Self::ExportMkBatch(_) => CommandId::ExportMkBatch,
            Self::ImportMk(_) => CommandId::ImportMk,
            Self::ImportMkParts(_) => CommandId::ImportMkParts,
            Self::CommitMk(_) => CommandId::CommitMk,
            Self::SetImmediate(_) => CommandId::SetImmediate,
            Self::Zeroize => CommandId::Zeroize,
            Self::ClearCurrent => CommandId::ClearCurrent,
            Self::ClearNew => CommandId::ClearNew,
            Self::AddControlPoints(_) => CommandId::AddControlPoints,
            Self::RemoveControlPoints(_) => CommandId::RemoveControlPoints,
        }
    }

    /// Encodes the input octets.
    ///
    /// # Errors
    /// [`ProtoError::Der`] if an input cannot be encoded.
    pub fn input_bytes(&self) -> Result<Vec<u8>, ProtoError> {
        Ok(match self {
            Self::AddAdmin(cert) => cert.der().to_vec(),
            Self::RemoveAdmin(ski) => ski.0.to_vec(),
            Self::SetThresholds {
                signature,
                revocation,
            } => ThresholdsInput {
                signature: signature.get(),
                revocation: revocation.get(),
            }
            .to_der()?,
            Self::ExportMk(req) => req.to_der()?,
            Self::ExportMkBatch(reqs) => reqs.to_der()?,
            Self::ImportMk(env) => env.to_der()?,
            Self::ImportMkParts(req) => req.to_der()?,
            Self::CommitMk(vp) | Self::SetImmediate(vp) => vp.0.to_vec(),
            Self::AddControlPoints(mask) | Self::RemoveControlPoints(mask) => {
                mask.as_bytes().to_vec()
            }
            Self::GenerateImporter
            | Self::GenerateRandomMk
            | Self::Zeroize
            | Self::ClearCurrent
            | Self::ClearNew => Vec::new(),
        })
    }

    /// Builds the [`AdminCommand`] for `unit_id` at `counter`.
    ///
    /// # Errors
    /// [`ProtoError::Der`] if the input cannot be encoded.
    pub fn to_wire(&self, unit_id: UnitId, counter: u64) -> Result<AdminCommand, ProtoError> {
        Ok(AdminCommand {
            unit_id,
            counter,
            command: self.id(),
            input: OctetString::new(self.input_bytes()?)?,
        })
    }

    /// Decodes the typed command from an id and its input, strictly: an input that
    /// should be empty must be empty, and DER inputs may have no trailing bytes.
    ///
    /// # Errors
    /// [`ProtoError`] describing the malformed input.
    pub fn from_wire(id: CommandId, input: &[u8]) -> Result<Self, ProtoError> {
        let empty = |c: Command| {
            if input.is_empty() {
                Ok(c)
            } else {
                Err(ProtoError::UnexpectedInput { command: id })
            }
        };
        match id {
            CommandId::AddAdmin => Ok(Self::AddAdmin(AdminCertificate::from_der(input)?)),
            CommandId::RemoveAdmin => Ok(Self::RemoveAdmin(Ski::from_slice(input)?)),
            CommandId::SetThresholds => {
                let t = ThresholdsInput::from_der(input)?;
                Ok(Self::SetThresholds {
                    signature: Threshold::new(t.signature.into())?,
                    revocation: Threshold::new(t.revocation.into())?,
                })
            }
            CommandId::GenerateImporter => empty(Self::GenerateImporter),
            CommandId::GenerateRandomMk => empty(Self::GenerateRandomMk),
            CommandId::ExportMk => Ok(Self::ExportMk(Box::new(ExportRequest::from_der(input)?))),
            CommandId::ExportMkBatch => {
                let reqs = Vec::<ExportRequest>::from_der(input)?;
                if reqs.is_empty() || reqs.len() > MAX_EXPORT_TARGETS {
                    return Err(ProtoError::ExportTargets { count: reqs.len() });
                }
                Ok(Self::ExportMkBatch(reqs))
            }
            CommandId::ImportMk => Ok(Self::ImportMk(Box::new(SignedEnvelope::from_der(input)?))),
            CommandId::ImportMkParts => {
                let req = MkPartsRequest::from_der(input)?;
                parts::check_count(req.parts.len())?;
                Ok(Self::ImportMkParts(Box::new(req)))
            }
            CommandId::CommitMk => Ok(Self::CommitMk(Vp::from_slice(input)?)),
            CommandId::SetImmediate => Ok(Self::SetImmediate(Vp::from_slice(input)?)),
            CommandId::Zeroize => empty(Self::Zeroize),
            CommandId::ClearCurrent => empty(Self::ClearCurrent),
            CommandId::ClearNew => empty(Self::ClearNew),
            CommandId::AddControlPoints => {
                Ok(Self::AddControlPoints(ControlPoints::from_slice(input)?))
            }
            CommandId::RemoveControlPoints => {
                Ok(Self::RemoveControlPoints(ControlPoints::from_slice(input)?))
            }
        }
    }

    /// Which register a command on master keys concerns, if any (used in messages).
    pub fn register(&self) -> Option<Register> {
        match self {
            Self::ExportMk(req) => Some(req.register),
            Self::ExportMkBatch(reqs) => match reqs.first() {
                Some(first) if reqs.iter().all(|r| r.register == first.register) => {
                    Some(first.register)
                }
                _ => None,
            },
            Self::ImportMk(_) | Self::ImportMkParts(_) | Self::CommitMk(_) | Self::ClearNew => {
                Some(Register::New)
            }
            Self::SetImmediate(_) | Self::ClearCurrent => Some(Register::Current),
            _ => None,
        }
    }
}

/// One administrator's signature over the command bytes.
///
/// ```asn1
/// SignerInfo ::= SEQUENCE {
///   ski        OCTET STRING (SIZE(32)),  -- which administrator signed
///   signature  OCTET STRING }            -- ECDSA-Sig-Value (DER), P-256 / SHA-256
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SignerInfo {
    /// The signing administrator's SKI.
    pub ski: Ski,
    /// DER `ECDSA-Sig-Value` over SHA-256 of the command bytes.
    pub signature: OctetString,
}

/// A command and the signatures over it.
///
/// ```asn1
/// SignedCommand ::= SEQUENCE {
///   command      OCTET STRING,           -- DER of AdminCommand, exactly as signed
///   signerInfos  SEQUENCE OF SignerInfo } -- empty for unsigned (imprint-mode) commands
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct SignedCommand {
    /// The DER of the [`AdminCommand`], exactly as signed.
    pub command: OctetString,
    /// Zero or more signatures.
    pub signer_infos: Vec<SignerInfo>,
}

impl SignedCommand {
    /// An unsigned command (accepted only where no signature is needed).
    ///
    /// # Errors
    /// [`ProtoError::Der`] if the command cannot be encoded.
    pub fn unsigned(command: &AdminCommand) -> Result<Self, ProtoError> {
        Ok(Self {
            command: OctetString::new(command.to_der()?)?,
            signer_infos: Vec::new(),
        })
    }

    /// Decodes the inner [`AdminCommand`].
    ///
    /// # Errors
    /// [`ProtoError::Der`] if the bytes are not a valid `AdminCommand`.
    pub fn admin_command(&self) -> Result<AdminCommand, ProtoError> {
        Ok(AdminCommand::from_der(self.command.as_bytes())?)
    }
}

/// An unsigned request for a unit's status. The unit answers with a signed
/// [`crate::UnitStatus`] bound to this request, so the answer cannot be replayed.
///
/// ```asn1
/// Query ::= SEQUENCE {
///   unitId  OCTET STRING (SIZE(16)),
///   nonce   OCTET STRING (SIZE(16)) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct Query {
    /// The unit asked.
    pub unit_id: UnitId,
    /// A fresh client nonce.
    pub nonce: Nonce,
}

/// What a client sends to a unit.
///
/// ```asn1
/// Request ::= CHOICE {
///   query    [0] IMPLICIT Query,
///   command  [1] IMPLICIT SignedCommand,
///   service  [2] IMPLICIT ServiceRequest,  -- protocol version 4
///   audit    [3] IMPLICIT AuditQuery }     -- the audit log, docs/protocol.md §18
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Choice)]
pub enum Request {
    /// Status query.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", constructed = "true")]
    Query(Query),
    /// Signed (or, in imprint mode, unsigned) administrative command.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Command(SignedCommand),
    /// Unsigned key-service operation (no counter, no state change; see [`crate::service`]).
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT", constructed = "true")]
    Service(ServiceRequest),
    /// Unsigned request for audit records (see [`crate::audit`]).
    #[asn1(context_specific = "3", tag_mode = "IMPLICIT", constructed = "true")]
    Audit(AuditQuery),
}
