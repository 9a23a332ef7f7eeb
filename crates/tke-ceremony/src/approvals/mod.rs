//! Detached approvals: a ceremony written to a file, approved offline by each
//! administrator on their own machine, then applied by anyone who can reach the units.
//!
//! A [`CeremonyFile`] holds, per round, per unit, the exact DER bytes of the
//! [`AdminCommand`] administrators sign (unit id, counter, command, input), a human
//! summary [`describe`]d from those bytes, and the approvals (administrator certificate
//! and signature) collected so far. It carries no secret. The JSON form
//! ([`CeremonyFile::to_json`], [`CeremonyFile::from_json`]) is versioned and strict:
//! unknown fields, a command that does not decode as DER or re-encodes differently, a
//! unit or counter that differs from the bytes, a summary that is not the one the bytes
//! give, and a signature that does not verify over the bytes are all refused. So a file
//! edited after approval is refused by whoever reads it.
//!
//! [`plan_admin_change`] writes the file instead of signing; [`CeremonyFile::approve`]
//! adds one administrator's signatures without contacting any unit; [`merge`] unites the
//! approvals of copies; [`apply`] checks, before sending anything, that every unit's
//! command carries enough signatures of administrators installed on that unit, sends it,
//! and checks each unit's full post-condition.

use std::fmt;

use serde::{Deserialize, Serialize};
use tke_client::{Client, ClientError, KnownUnit};
use tke_proto::{
    der::{asn1::OctetString, Decode, Encode},
    p256::ecdsa::DerSignature,
    AdminCertificate, AdminCommand, AdminInfo, AdminName, Command, CommandId, RegisterState,
    RegisterStatus, SignedCommand, SignerInfo, Ski, UnitId, UnitStatus, UnitType, Vp,
};
use tke_sigkey::{SignError, Signer};

use crate::{
    admin_set::{plan as plan_change, Change},
    plan::Planner,
    postcondition::{check_each, Expected},
    CeremonyError,
};

pub mod auto_init;
pub mod mk_load;
mod registers;
pub mod rotate;
mod rounds;
mod transfer;

pub use auto_init::{plan_auto_init, plan_desired_key};
pub use mk_load::{plan_mk_load, seal_round};
pub use registers::{apply_guard, plan_register, plan_zeroize, ForcedKeys};
pub use rotate::{plan_recover, plan_rotate, plan_rotate_loaded};
pub use rounds::{
    counter_after, device_certificate, fleet_ca, kind, parse_params, same_commands, Kind,
    MultiRound, KINDS,
};

/// The `format` field of every ceremony file.
pub const FORMAT: &str = "tke-ceremony";
/// The format version this code writes. It reads this one and every version in
/// [`READS`].
pub const VERSION: u32 = 2;
/// The format versions this code reads: 1 (single-round files, no `kind`, `params`,
/// `state` or `answer`) and 2.
pub const READS: [u32; 2] = [1, 2];

/// A ceremony as a file: rounds of per-unit commands and their approvals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CeremonyFile {
    /// A multi-round ceremony's kind and parameters, from which every round is rebuilt
    /// ([`MultiRound`]); `None` for a ceremony whose commands were all known when planned
    /// (one round).
    pub ceremony: Option<Kind>,
    /// The rounds, in the order they run: applied ones first, then at most one planned.
    pub rounds: Vec<Round>,
    /// The instances whose stored keys the planner agreed to lose (`--force-with-keys`),
    /// shown to approvers; empty for a file that destroys no master key.
    pub force_with_keys: Vec<ForcedKeys>,
}

/// The commands of one round, sent together (a unit's commands in order, units in
/// parallel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// The commands, a unit's at consecutive counters.
    pub commands: Vec<UnitCommand>,
    /// Whether the round ran: then each command holds the unit's answer.
    pub applied: bool,
}

impl Round {
    /// A round not applied yet.
    pub fn planned(commands: Vec<UnitCommand>) -> Self {
        Self {
            commands,
            applied: false,
        }
    }

    /// The answer `unit` gave to its `index`-th command (0-based) of this round with
    /// id `id`, if the round was applied.
    pub fn answer(&self, unit: UnitId, id: CommandId, index: usize) -> Option<&[u8]> {
        self.commands
            .iter()
            .filter(|c| c.unit() == unit && c.admin_command.command == id)
            .nth(index)
            .and_then(|c| c.answer.as_deref())
    }
}

/// One unit's command and who approved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitCommand {
    /// The unit's `CRYPTO UNIT NUM` when planned (for people; the unit id is binding).
    pub num: usize,
    /// The command, decoded from `bytes`.
    pub admin_command: AdminCommand,
    /// The typed command, decoded from the `AdminCommand`'s id and input.
    pub command: Command,
    /// The DER of `admin_command`: what administrators sign.
    pub bytes: Vec<u8>,
    /// The approvals so far, each verified over `bytes`, one per administrator key.
    pub approvals: Vec<Approval>,
    /// The unit's answer (the output of its signed response: public data such as a
    /// certified importer key, envelopes or a verification pattern), once applied.
    pub answer: Option<Vec<u8>>,
}

/// One administrator's signature over a unit's command.
#[derive(Clone, PartialEq, Eq)]
pub struct Approval {
    /// The administrator's self-signed certificate (its name, SKI and public key).
    pub certificate: AdminCertificate,
    /// DER `ECDSA-Sig-Value` over SHA-256 of the command bytes.
    pub signature: Vec<u8>,
}

impl fmt::Debug for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Approval({} {})",
            self.certificate.name(),
            self.certificate.ski().short()
        )
    }
}

impl Approval {
    /// The administrator who approved.
    pub fn admin(&self) -> AdminInfo {
        AdminInfo {
            ski: self.certificate.ski(),
            name: self.certificate.name().clone(),
        }
    }
}

/// Why a ceremony file is refused, or cannot be approved or merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Not JSON of the ceremony file's shape (unknown or missing fields included).
    #[error("not a ceremony file: {source}")]
    Json {
        /// What the JSON decoder found.
        #[source]
        source: serde_json::Error,
    },
    /// Another format, or a version this code does not read.
    #[error("format {format:?} version {version} is not a ceremony file this version of tke reads (format {FORMAT:?} version 1 or {VERSION})")]
    Version {
        /// The `format` field found.
        format: String,
        /// The `version` field found.
        version: u32,
    },
    /// A title that is not the one the commands give.
    #[error("the ceremony title says {found:?} but its commands are {expected:?}")]
    Title {
        /// What the commands give.
        expected: String,
        /// What the field says.
        found: String,
    },
    /// A file with no command.
    #[error("the ceremony file has no command")]
    Empty,
    /// A hex field that is not hex.
    #[error("round {round}, crypto unit {num}: the {field} is not hexadecimal")]
    Hex {
        /// 1-based round.
        round: usize,
        /// The unit's number in the file.
        num: usize,
        /// Which field.
        field: &'static str,
    },
    /// Command bytes that are not the strict DER of an `AdminCommand`, or whose input is
    /// not that of its command id.
    #[error("round {round}, crypto unit {num}: the command bytes do not decode")]
    Command {
        /// 1-based round.
        round: usize,
        /// The unit's number in the file.
        num: usize,
        /// What the decoder found.
        #[source]
        source: tke_proto::ProtoError,
    },
    /// A readable field that says something other than the command bytes.
    #[error("round {round}, crypto unit {num}: the {field} says {found:?} but the command bytes say {expected:?}")]
    Mismatch {
        /// 1-based round.
        round: usize,
        /// The unit's number in the file.
        num: usize,
        /// `unit`, `counter`, `summary`, `admin` or `ski`.
        field: &'static str,
        /// What the bytes say.
        expected: String,
        /// What the field says.
        found: String,
    },
    /// An approval's certificate that does not decode.
    #[error(
        "round {round}, crypto unit {num}: the certificate of approval {index} does not decode"
    )]
    Certificate {
        /// 1-based round.
        round: usize,
        /// The unit's number in the file.
        num: usize,
        /// 1-based approval.
        index: usize,
        /// What the decoder found.
        #[source]
        source: tke_proto::ProtoError,
    },
    /// A signature that does not verify over the command bytes with its administrator's
    /// key: the command or the signature was changed after approval.
    #[error("round {round}, crypto unit {num}: the signature of {admin} ({}) does not verify over the command bytes", ski.short())]
    BadSignature {
        /// 1-based round.
        round: usize,
        /// The unit's number in the file.
        num: usize,
        /// Who it claims to be from.
        admin: AdminName,
        /// Its key.
        ski: Ski,
    },
    /// Two approvals of one command by the same key.
    #[error("round {round}, crypto unit {num}: {admin} ({}) approved twice", ski.short())]
    DuplicateApproval {
        /// 1-based round.
        round: usize,
        /// The unit's number in the file.
        num: usize,
        /// Who.
        admin: AdminName,
        /// Its key.
        ski: Ski,
    },
    /// A signer that failed.
    #[error("crypto unit {num}: the signature key of {admin} could not sign")]
    Sign {
        /// The unit's number in the file.
        num: usize,
        /// Whose key.
        admin: AdminName,
        /// What the signer found.
        #[source]
        source: SignError,
    },
    /// A `force_with_keys` record that cannot be right.
    #[error("the record --force-with-keys {instance:?} is refused: {reason}")]
    Forced {
        /// The instance it names.
        instance: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Copies of a file that do not hold the same commands.
    #[error("copy {index} holds other commands than the first (a different plan, or another round of it): only approvals of the same round of the same plan merge")]
    MergeMismatch {
        /// 1-based copy.
        index: usize,
    },
    /// A field that version 1 files do not have, or a version 2 round without its state.
    #[error("{what}")]
    Layout {
        /// What is wrong, naming the round and field.
        what: String,
    },
    /// A ceremony kind this version of `tke` does not know.
    #[error("the ceremony kind {kind:?} is not one this version of tke knows ({})", KINDS.iter().map(|k| k.kind()).collect::<Vec<_>>().join(", "))]
    UnknownKind {
        /// The `kind` field.
        kind: String,
    },
    /// Parameters that are not those of the ceremony kind.
    #[error("the parameters of the {kind} ceremony are refused: {what}")]
    Params {
        /// The ceremony kind.
        kind: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A round other than the one the parameters and the earlier rounds' answers give:
    /// the file was edited (or made by another planner).
    #[error("round {round}: crypto unit {num}'s commands are not those the ceremony's parameters and the answers of the earlier rounds give; the file was edited after it was planned")]
    RoundDiffers {
        /// 1-based round.
        round: usize,
        /// The first unit (number in the file) whose commands differ.
        num: usize,
    },
    /// A recorded answer that is not what the unit's command answers (it does not
    /// decode, is not signed by the unit's device key, or names something else).
    #[error("round {round}, crypto unit {num}: the recorded answer is refused: {what}")]
    Answer {
        /// 1-based round.
        round: usize,
        /// The unit's number in the file.
        num: usize,
        /// What is wrong.
        what: String,
    },
}

/// The JSON form: what is written and read. Strict: unknown fields are refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    format: String,
    version: u32,
    ceremony: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<serde_json::Value>,
    rounds: Vec<RoundJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    force_with_keys: Vec<registers::ForcedJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoundJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<RoundState>,
    commands: Vec<CommandJson>,
}

/// A round's `state` field (version 2).
#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RoundState {
    Planned,
    Applied,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandJson {
    num: usize,
    unit: String,
    counter: u64,
    summary: String,
    command: String,
    approvals: Vec<ApprovalJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalJson {
    admin: String,
    ski: String,
    certificate: String,
    signature: String,
}

/// What a command does, in words, from its decoded bytes only (never from a planner's
/// intent): the text an administrator reads before approving.
pub fn describe(command: &Command) -> String {
    match command {
        Command::AddAdmin(cert) => format!(
            "install administrator {} (SKI {})",
            cert.name(),
            cert.ski().to_hex()
        ),
        Command::RemoveAdmin(ski) => {
            format!("remove the administrator whose SKI is {}", ski.to_hex())
        }
        Command::SetThresholds {
            signature,
            revocation,
        } => format!(
            "set the signature threshold to {signature} and the revocation signature threshold to {revocation}"
        ),
        Command::GenerateImporter => "generate a single-use importer key".to_owned(),
        Command::GenerateRandomMk => "generate a random master key".to_owned(),
        // Whoever approves a key crossing instances reads which instance (protocol.md
        // §11.3).
        Command::ExportMk(req) => match req.target_instance {
            None => format!(
                "export the {:?} master key register to another crypto unit",
                req.register
            ),
            Some(i) => format!(
                "export the {:?} master key register to a crypto unit of ANOTHER service instance, {}",
                req.register,
                i.uuid()
            ),
        },
        Command::ExportMkBatch(reqs) => {
            let named: Vec<_> = reqs.iter().filter_map(|r| r.target_instance).collect();
            format!(
                "export a master key register to {} other crypto units{}",
                reqs.len(),
                to_instance(&named)
            )
        }
        Command::ImportMk(env) => match env.source_instance {
            None => "import a master key into the new register".to_owned(),
            Some(i) => format!(
                "import a master key from a recovery unit of ANOTHER service instance, {}, into the new register",
                i.uuid()
            ),
        },
        Command::ImportMkParts(req) => format!(
            "load the new master key register from {} master key parts",
            req.parts.len()
        ),
        Command::CommitMk(vp) => format!(
            "commit the new master key register (verification pattern {})",
            vp.to_hex()
        ),
        Command::SetImmediate(vp) => format!(
            "make the new master key current (verification pattern {})",
            vp.to_hex()
        ),
        Command::Zeroize => {
            "zeroize: remove every administrator, both thresholds and both master key registers"
                .to_owned()
        }
        Command::ClearCurrent => "clear the current master key register".to_owned(),
        Command::ClearNew => "clear the new master key register".to_owned(),
        Command::AddControlPoints(mask) => {
            format!("set the control points of mask {}", hex::encode(mask.as_bytes()))
        }
        Command::RemoveControlPoints(mask) => format!(
            "reset the control points of mask {}",
            hex::encode(mask.as_bytes())
        ),
    }
}

impl UnitCommand {
    /// The command for `unit` (numbered `num`) at `counter`, not approved yet.
    ///
    /// # Errors
    /// The command cannot be encoded.
    pub fn build(
        num: usize,
        unit: UnitId,
        counter: u64,
        command: Command,
    ) -> Result<Self, tke_proto::ProtoError> {
        let admin_command = command.to_wire(unit, counter)?;
        let bytes = admin_command.to_der()?;
        Ok(Self {
            num,
            admin_command,
            command,
            bytes,
            approvals: Vec::new(),
            answer: None,
        })
    }

    /// [`UnitCommand::build`], failing as `step` on unit `num`.
    fn new(
        step: &'static str,
        num: usize,
        unit: UnitId,
        counter: u64,
        command: Command,
    ) -> Result<Self, CeremonyError> {
        Self::build(num, unit, counter, command)
            .map_err(|source| encoding_failed(step, num, unit, source))
    }

    /// The unit that runs it.
    pub fn unit(&self) -> UnitId {
        self.admin_command.unit_id
    }

    /// The summary administrators read ([`describe`]).
    pub fn summary(&self) -> String {
        describe(&self.command)
    }

    /// Whether `ski` approved it already.
    pub fn approved_by(&self, ski: Ski) -> bool {
        self.approvals.iter().any(|a| a.certificate.ski() == ski)
    }
}

impl CeremonyFile {
    /// Every command of every round, with its 1-based round.
    pub fn commands(&self) -> impl Iterator<Item = (usize, &UnitCommand)> {
        self.rounds
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.commands.iter().map(move |c| (i + 1, c)))
    }

    /// What the ceremony does: a multi-round ceremony's title, else from its commands'
    /// ids (e.g. "Setting signature thresholds").
    pub fn title(&self) -> String {
        if let Some((k, c)) = self
            .ceremony
            .as_ref()
            .and_then(|c| Some((kind(&c.kind)?, c)))
        {
            return match k.continues(&c.params) {
                Some(what) => format!("{} ({what})", k.title()),
                None => k.title().to_owned(),
            };
        }
        let ids: Vec<CommandId> = self
            .commands()
            .map(|(_, c)| c.admin_command.command)
            .collect();
        let Some(&first) = ids.first() else {
            return "Nothing".to_owned();
        };
        if ids.iter().any(|id| *id != first) {
            let admin = |id: &CommandId| {
                matches!(
                    id,
                    CommandId::AddAdmin | CommandId::RemoveAdmin | CommandId::SetThresholds
                )
            };
            return if ids.iter().all(admin) {
                "Changing administrators and thresholds".to_owned()
            } else {
                "Several kinds of commands".to_owned()
            };
        }
        match first {
            CommandId::SetThresholds => "Setting signature thresholds".to_owned(),
            CommandId::AddAdmin => "Adding an administrator".to_owned(),
            CommandId::RemoveAdmin => "Removing an administrator".to_owned(),
            other => {
                registers::title(other).map_or_else(|| format!("{other:?} commands"), str::to_owned)
            }
        }
    }

    /// The JSON form, pretty-printed.
    pub fn to_json(&self) -> String {
        let file = FileJson {
            format: FORMAT.to_owned(),
            version: VERSION,
            ceremony: self.title(),
            kind: self.ceremony.as_ref().map(|c| c.kind.clone()),
            params: self.ceremony.as_ref().map(|c| c.params.clone()),
            rounds: self
                .rounds
                .iter()
                .map(|r| RoundJson {
                    state: Some(if r.applied {
                        RoundState::Applied
                    } else {
                        RoundState::Planned
                    }),
                    commands: r
                        .commands
                        .iter()
                        .map(|c| CommandJson {
                            num: c.num,
                            unit: c.unit().uuid(),
                            counter: c.admin_command.counter,
                            summary: c.summary(),
                            command: hex::encode(&c.bytes),
                            approvals: c
                                .approvals
                                .iter()
                                .map(|a| ApprovalJson {
                                    admin: a.certificate.name().to_string(),
                                    ski: a.certificate.ski().to_hex(),
                                    certificate: hex::encode(a.certificate.der()),
                                    signature: hex::encode(&a.signature),
                                })
                                .collect(),
                            answer: c.answer.as_ref().map(hex::encode),
                        })
                        .collect(),
                })
                .collect(),
            force_with_keys: self.force_with_keys.iter().map(|f| f.to_json()).collect(),
        };
        // Plain strings and numbers: serializing cannot fail.
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads the JSON form, strictly: see the module documentation. A multi-round file
    /// is checked round by round against its kind: each round must be the one its
    /// parameters and the answers of the earlier rounds give ([`MultiRound::round`]),
    /// and each applied round's answers must pass [`MultiRound::check_answers`].
    ///
    /// # Errors
    /// [`FileError`] naming the round, the unit and the field that is wrong.
    pub fn from_json(text: &str) -> Result<Self, FileError> {
        let file: FileJson =
            serde_json::from_str(text).map_err(|source| FileError::Json { source })?;
        if file.format != FORMAT || !READS.contains(&file.version) {
            return Err(FileError::Version {
                format: file.format,
                version: file.version,
            });
        }
        let layout = |what: String| FileError::Layout { what };
        let v1 = file.version == 1;
        if v1 && (file.kind.is_some() || file.params.is_some()) {
            return Err(layout(
                "a version 1 ceremony file has no kind or params".to_owned(),
            ));
        }
        let ceremony = match (file.kind, file.params) {
            (Some(kind), Some(params)) => Some(Kind { kind, params }),
            (None, None) => None,
            _ => {
                return Err(layout(
                    "a multi-round ceremony file needs both kind and params".to_owned(),
                ))
            }
        };
        let mut rounds = Vec::with_capacity(file.rounds.len());
        for (i, r) in file.rounds.into_iter().enumerate() {
            let round = i + 1;
            let applied = match (v1, r.state) {
                (true, None) => false,
                (false, Some(state)) => state == RoundState::Applied,
                (true, Some(_)) => {
                    return Err(layout(format!(
                        "round {round}: a version 1 ceremony file has no state"
                    )))
                }
                (false, None) => {
                    return Err(layout(format!(
                        "round {round}: the state (planned or applied) is missing"
                    )))
                }
            };
            let commands = r
                .commands
                .into_iter()
                .map(|c| decode_command(round, applied, c))
                .collect::<Result<Vec<_>, _>>()?;
            if applied && rounds.iter().any(|r: &Round| !r.applied) {
                return Err(layout(format!(
                    "round {round} is applied but an earlier round is not"
                )));
            }
            rounds.push(Round { commands, applied });
        }
        let mut parsed = Self {
            ceremony,
            rounds,
            force_with_keys: Vec::new(),
        };
        match &parsed.ceremony {
            Some(c) => parsed.check_rounds(c)?,
            None if parsed.commands().next().is_none() => return Err(FileError::Empty),
            None => {}
        }
        parsed.force_with_keys = registers::forced_from_json(&parsed, file.force_with_keys)?;
        // The title is shown to approvers: it too must say what the bytes say.
        let title = parsed.title();
        if file.ceremony != title {
            return Err(FileError::Title {
                expected: title,
                found: file.ceremony,
            });
        }
        Ok(parsed)
    }

    /// Checks a multi-round file's rounds against its kind: each rebuilt from the
    /// parameters and the rounds before it, each applied one's answers checked.
    fn check_rounds(&self, c: &Kind) -> Result<(), FileError> {
        let k = kind(&c.kind).ok_or_else(|| FileError::UnknownKind {
            kind: c.kind.clone(),
        })?;
        let total = k.rounds(&c.params)?;
        if self.rounds.is_empty() || self.rounds.len() > total {
            return Err(FileError::Layout {
                what: format!(
                    "the {} ceremony has {total} round(s), the file holds {}",
                    k.kind(),
                    self.rounds.len()
                ),
            });
        }
        for (i, round) in self.rounds.iter().enumerate() {
            k.check_round(&c.params, &self.rounds[..i], round)?;
            if round.applied {
                k.check_answers(&c.params, &self.rounds[..i], round)?;
            }
        }
        Ok(())
    }

    /// A new multi-round file of `kind` with these parameters, its first round built by
    /// the kind ([`MultiRound::round`]): what every planner of a multi-round ceremony
    /// returns.
    ///
    /// # Errors
    /// [`FileError::Params`] when the parameters do not make a first round.
    pub fn multi_round(
        kind: &'static dyn MultiRound,
        params: &impl Serialize,
    ) -> Result<Self, FileError> {
        let params = serde_json::to_value(params).map_err(|e| FileError::Params {
            kind: kind.kind(),
            what: e.to_string(),
        })?;
        let first = kind.round(&params, &[])?;
        Ok(Self {
            ceremony: Some(Kind {
                kind: kind.kind().to_owned(),
                params,
            }),
            rounds: vec![first],
            force_with_keys: Vec::new(),
        })
    }

    /// The verification pattern of the key a key-part load file's last round loaded
    /// (every unit answered it), once that round is applied.
    pub fn loaded_vp(&self) -> Option<Vp> {
        let c = self.ceremony.as_ref()?;
        let last = self.rounds.last().filter(|r| r.applied)?;
        if c.kind != mk_load::KIND || self.rounds.len() < 2 {
            return None;
        }
        last.commands
            .first()
            .and_then(|c| c.answer.as_deref())
            .and_then(|a| Vp::from_slice(a).ok())
    }

    /// The 0-based index of the round to approve and apply next: the first not applied.
    pub fn current_round(&self) -> Option<usize> {
        self.rounds.iter().position(|r| !r.applied)
    }

    /// How many rounds the ceremony has: its kind's count, else the file's.
    pub fn total_rounds(&self) -> usize {
        self.ceremony
            .as_ref()
            .and_then(|c| kind(&c.kind).and_then(|k| k.rounds(&c.params).ok()))
            .unwrap_or(self.rounds.len())
    }

    /// The next round of a multi-round ceremony whose rounds so far are all applied,
    /// built from its parameters and their answers; `None` when it has no more, or when
    /// its planner makes it ([`CeremonyFile::awaits_planner`]).
    ///
    /// # Errors
    /// [`FileError::UnknownKind`], [`FileError::Params`] or [`FileError::Answer`].
    pub fn next_round(&self) -> Result<Option<Round>, FileError> {
        let Some(c) = &self.ceremony else {
            return Ok(None);
        };
        let k = kind(&c.kind).ok_or_else(|| FileError::UnknownKind {
            kind: c.kind.clone(),
        })?;
        if self.current_round().is_some()
            || self.rounds.len() >= k.rounds(&c.params)?
            || !k.built_by_apply(&c.params, &self.rounds)
        {
            return Ok(None);
        }
        k.round(&c.params, &self.rounds).map(Some)
    }

    /// When every round so far is applied and the next one is made by the planner (it
    /// needs a secret the planner holds, [`MultiRound::built_by_apply`]): the 1-based
    /// number of that round and the command that makes it ([`MultiRound::next_by`]).
    pub fn awaits_planner(&self) -> Option<(usize, &'static str)> {
        let c = self.ceremony.as_ref()?;
        let k = kind(&c.kind)?;
        let more = self.rounds.len() < k.rounds(&c.params).ok()?;
        (self.current_round().is_none() && more && !k.built_by_apply(&c.params, &self.rounds))
            .then(|| (self.rounds.len() + 1, k.next_by()))
    }

    /// Signs every command of the round to approve next ([`CeremonyFile::current_round`])
    /// that `signer` has not approved yet, and adds the approvals: a later round is made
    /// only once the units answered this one, and an applied round's approvals are
    /// history. Contacts no unit. Returns how many commands it signed (0: approved
    /// already, or nothing left to approve).
    ///
    /// # Errors
    /// [`FileError::Sign`] when the key cannot sign (nothing is added then).
    pub fn approve(&mut self, signer: &dyn Signer) -> Result<usize, FileError> {
        let ski = signer.ski();
        let Some(r) = self.current_round() else {
            return Ok(0);
        };
        let mut added = Vec::new();
        for (c, command) in self.rounds[r].commands.iter().enumerate() {
            if command.approved_by(ski) {
                continue;
            }
            let signature = signer
                .sign(&command.bytes)
                .map_err(|source| FileError::Sign {
                    num: command.num,
                    admin: signer.name().clone(),
                    source,
                })?;
            added.push((c, signature.as_bytes().to_vec()));
        }
        let count = added.len();
        for (c, signature) in added {
            self.rounds[r].commands[c].approvals.push(Approval {
                certificate: signer.certificate().clone(),
                signature,
            });
        }
        Ok(count)
    }
}

/// Decodes and checks one command of round `round` (applied or not: only an applied
/// round's commands carry the units' answers).
fn decode_command(round: usize, applied: bool, c: CommandJson) -> Result<UnitCommand, FileError> {
    let num = c.num;
    let hex_field = |field: &'static str, text: &str| {
        hex::decode(text).map_err(|_| FileError::Hex { round, num, field })
    };
    let mismatch = |field: &'static str, expected: String, found: String| FileError::Mismatch {
        round,
        num,
        field,
        expected,
        found,
    };
    let bytes = hex_field("command", &c.command)?;
    let answer = match (applied, &c.answer) {
        (true, Some(a)) => Some(hex_field("answer", a)?),
        (false, None) => None,
        (true, None) => {
            return Err(FileError::Layout {
                what: format!("round {round}, crypto unit {num}: the round is applied but the answer is missing"),
            })
        }
        (false, Some(_)) => {
            return Err(FileError::Layout {
                what: format!("round {round}, crypto unit {num}: the round is not applied, yet the command has an answer"),
            })
        }
    };
    let command_error = |source| FileError::Command { round, num, source };
    let admin_command = AdminCommand::from_der(&bytes)
        .map_err(|e| command_error(tke_proto::ProtoError::from(e)))?;
    // DER has one encoding of each value; anything else was not written by a planner.
    let canonical = admin_command
        .to_der()
        .map_err(|e| command_error(tke_proto::ProtoError::from(e)))?;
    if canonical != bytes {
        return Err(mismatch("command", hex::encode(canonical), c.command));
    }
    let command = Command::from_wire(admin_command.command, admin_command.input.as_bytes())
        .map_err(command_error)?;
    if c.unit != admin_command.unit_id.uuid() {
        return Err(mismatch("unit", admin_command.unit_id.uuid(), c.unit));
    }
    if c.counter != admin_command.counter {
        return Err(mismatch(
            "counter",
            admin_command.counter.to_string(),
            c.counter.to_string(),
        ));
    }
    let summary = describe(&command);
    if c.summary != summary {
        return Err(mismatch("summary", summary, c.summary));
    }
    let mut approvals: Vec<Approval> = Vec::with_capacity(c.approvals.len());
    for (i, a) in c.approvals.into_iter().enumerate() {
        let der = hex_field("certificate", &a.certificate)?;
        let certificate =
            AdminCertificate::from_der(&der).map_err(|source| FileError::Certificate {
                round,
                num,
                index: i + 1,
                source,
            })?;
        let (ski, name) = (certificate.ski(), certificate.name().clone());
        if a.admin != name.as_str() {
            return Err(mismatch("admin", name.to_string(), a.admin));
        }
        if a.ski != ski.to_hex() {
            return Err(mismatch("ski", ski.to_hex(), a.ski));
        }
        let signature = hex_field("signature", &a.signature)?;
        let verifies = DerSignature::from_bytes(&signature)
            .ok()
            .is_some_and(|sig| {
                tke_proto::ecdsa_p256::verify(&certificate.verifying_key(), &bytes, &sig).is_ok()
            });
        if !verifies {
            return Err(FileError::BadSignature {
                round,
                num,
                admin: name,
                ski,
            });
        }
        if approvals.iter().any(|b| b.certificate.ski() == ski) {
            return Err(FileError::DuplicateApproval {
                round,
                num,
                admin: name,
                ski,
            });
        }
        approvals.push(Approval {
            certificate,
            signature,
        });
    }
    Ok(UnitCommand {
        num,
        admin_command,
        command,
        bytes,
        approvals,
        answer,
    })
}

/// The approvals of every copy of one plan, united (each administrator once per command).
///
/// # Errors
/// [`FileError::MergeMismatch`] when a copy holds other commands than the first;
/// [`FileError::Empty`] when no copy is given.
pub fn merge(copies: Vec<CeremonyFile>) -> Result<CeremonyFile, FileError> {
    let mut copies = copies.into_iter();
    let mut merged = copies.next().ok_or(FileError::Empty)?;
    for (i, copy) in copies.enumerate() {
        // The same plan at the same round: same parameters, same commands, the same
        // rounds applied with the same answers.
        let same_plan = copy.ceremony == merged.ceremony
            && copy.force_with_keys == merged.force_with_keys
            && copy.rounds.len() == merged.rounds.len()
            && copy.rounds.iter().zip(&merged.rounds).all(|(a, b)| {
                a.applied == b.applied
                    && a.commands.len() == b.commands.len()
                    && a.commands
                        .iter()
                        .zip(&b.commands)
                        .all(|(x, y)| x.bytes == y.bytes && x.answer == y.answer)
            });
        if !same_plan {
            return Err(FileError::MergeMismatch { index: i + 2 });
        }
        for (into, from) in merged.rounds.iter_mut().zip(copy.rounds) {
            for (target, source) in into.commands.iter_mut().zip(from.commands) {
                for a in source.approvals {
                    if !target.approved_by(a.certificate.ski()) {
                        target.approvals.push(a);
                    }
                }
            }
        }
    }
    Ok(merged)
}

/// Plans an administrator or threshold change on `units` as a ceremony file: every unit
/// queried, every problem found (as [`crate::AdminChange::plan`]), nothing signed or sent.
/// A unit's commands (several for a whole-set change, [`Change::Set`], in the safe order
/// of [`crate::admin_set`]) are bound to its consecutive counters and all known now: one
/// round. Units that hold the change already get no command. Returns `None` when no unit
/// needs a command.
///
/// # Errors
/// [`CeremonyError::Problems`] listing every problem found, as the direct command would.
pub fn plan_admin_change(
    client: &Client,
    step: &'static str,
    units: Vec<&KnownUnit>,
    change: &Change,
) -> Result<Option<CeremonyFile>, CeremonyError> {
    // The planner holds no key: any installed administrator may approve, so every
    // installed administrator counts as a possible signer.
    let mut planner = Planner::start(client, step, units, Vec::new());
    let reachable = planner.reachable();
    let anyone = registers::installed_anywhere(reachable.iter().map(|(_, s)| s));
    let nums: Vec<(usize, &UnitStatus)> = reachable.iter().map(|(u, s)| (u.num, s)).collect();
    let changes = match plan_change(&nums, change, &anyone) {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                planner.problem(p);
            }
            Vec::new()
        }
    };
    planner.check()?;
    let mut commands = Vec::new();
    for (c, (unit, status)) in changes.iter().zip(&reachable) {
        // A unit's commands run one after the other, each at the next counter.
        for (i, s) in (1u64..).zip(&c.steps) {
            commands.push(UnitCommand::new(
                step,
                unit.num,
                unit.id(),
                status.counter.wrapping_add(i),
                s.action.command(),
            )?);
        }
    }
    if commands.is_empty() {
        return Ok(None);
    }
    Ok(Some(CeremonyFile {
        ceremony: None,
        rounds: vec![Round::planned(commands)],
        force_with_keys: Vec::new(),
    }))
}

/// Why a multi-round ceremony could not be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The units are not fit for it: every problem found, as the direct command finds
    /// them.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// The first round cannot be made from what the units and the planner give.
    #[error(transparent)]
    File(#[from] FileError),
}

/// A unit whose command lacks approvals ([`ApplyError::ShortOfApprovals`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// Its id.
    pub unit: UnitId,
    /// How many distinct installed administrators must approve.
    pub needed: usize,
    /// The installed administrators who approved.
    pub approved: Vec<AdminInfo>,
    /// The installed administrators who may still approve.
    pub may_approve: Vec<AdminInfo>,
    /// Approvals by keys not installed on the unit (they do not count).
    pub not_installed: Vec<AdminInfo>,
}

impl Shortfall {
    /// How many more approvals the unit needs.
    pub fn missing(&self) -> usize {
        self.needed.saturating_sub(self.approved.len())
    }
}

/// Why a ceremony file was not applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Units whose command lacks approvals: nothing of this round was sent to any unit.
    #[error("round {round} of {rounds}: {} crypto unit(s) lack approvals; nothing was sent", units.len())]
    ShortOfApprovals {
        /// The 1-based round that lacks approvals.
        round: usize,
        /// How many rounds the ceremony has.
        rounds: usize,
        /// How many rounds this run applied before (their answers are in the file).
        applied: usize,
        /// Each unit short of approvals.
        units: Vec<Shortfall>,
    },
    /// The next round is made by the planner, who holds a secret (the master key parts
    /// to seal): nothing was sent for it.
    #[error("round {round} of {rounds} is made by the planner: {next_by}")]
    AwaitsPlanner {
        /// The 1-based round to make.
        round: usize,
        /// How many rounds the ceremony has.
        rounds: usize,
        /// How many rounds this run applied before.
        applied: usize,
        /// The command the planner runs.
        next_by: &'static str,
    },
    /// Units whose counters moved since the plan: their commands can never run.
    #[error("the ceremony file is stale; nothing was sent:\n{}", units.iter().map(|u| format!("  - {u}")).collect::<Vec<_>>().join("\n"))]
    Stale {
        /// Every unit whose counter moved.
        units: Vec<StaleUnit>,
    },
    /// A unit of the file that the client does not know.
    #[error("crypto unit {num} of the file ({}) is not among the crypto units reached", unit.uuid())]
    UnknownUnit {
        /// Its number in the file.
        num: usize,
        /// Its id.
        unit: UnitId,
    },
    /// `--force-with-keys` given to apply for an instance the file does not record: its
    /// approvers did not see that the keys would be lost.
    #[error("--force-with-keys {instance}: the ceremony file was not planned with --force-with-keys for this service instance, so its approvers did not agree to lose its keys; nothing was sent")]
    ForceNotPlanned {
        /// The instance given.
        instance: String,
    },
    /// A command that `apply` does not run from a file yet.
    #[error("crypto unit {num}: {command:?} commands are not applied from ceremony files yet")]
    Unsupported {
        /// Its number in the file.
        num: usize,
        /// The command.
        command: tke_proto::CommandId,
    },
    /// The next round could not be built from the answers (a unit answered something
    /// the ceremony cannot use).
    #[error(transparent)]
    File(#[from] FileError),
    /// The file could not be rewritten with a round's answers or the next round.
    #[error("the ceremony file could not be rewritten after round {round} was applied")]
    Save {
        /// The 1-based round just applied.
        round: usize,
        /// What the write found.
        #[source]
        source: std::io::Error,
    },
    /// The ceremony failed (a unit could not be queried, refused the command, or does not
    /// hold what was planned).
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
}

/// A unit whose counter moved since the plan ([`ApplyError::Stale`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleUnit {
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// Its id.
    pub unit: UnitId,
    /// The counter the unit was at when planned.
    pub planned: u64,
    /// The unit's counter now.
    pub found: u64,
}

impl fmt::Display for StaleUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crypto unit {} ({}) is at transaction counter {}, but was at {} when the file was planned",
            self.num,
            self.unit.uuid(),
            self.found,
            self.planned
        )
    }
}

/// What [`apply`] did on one unit in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The 1-based round.
    pub round: usize,
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// The administrators whose signatures were sent (empty when `already`).
    pub signed_by: Vec<AdminInfo>,
    /// The unit had run this command already: nothing was sent.
    pub already: bool,
}

/// The signatures `command` needs on a unit of type `unit_type` in state `status`: the
/// units' own rule ([`Command::signatures_required`]); a command the unit refuses in
/// imprint mode is not supported in a file.
fn needed(
    num: usize,
    unit_type: UnitType,
    command: &Command,
    status: &UnitStatus,
) -> Result<usize, ApplyError> {
    command
        .signatures_required(unit_type, status.sig_threshold, status.rev_threshold)
        .ok_or(ApplyError::Unsupported {
            num,
            command: command.id(),
        })
}

/// A command that cannot be encoded, as the failure of `step` on unit `num`.
fn encoding_failed(
    step: &'static str,
    num: usize,
    unit: UnitId,
    source: tke_proto::ProtoError,
) -> CeremonyError {
    CeremonyError::Step {
        step,
        failures: vec![(num, ClientError::Encoding { unit, source })],
    }
}

/// A register holding a key (`vp`, or any value when the answer did not give it).
fn full(state: RegisterState, vp: Option<Vp>) -> RegisterStatus {
    RegisterStatus { state, vp }
}

/// The state a unit in state `status` holds after `command` ran on it and gave
/// `answer` (the unit's rules, `tke-unit`): what each round's check expects.
fn after(command: &Command, answer: Option<&[u8]>, mut s: UnitStatus) -> UnitStatus {
    match command {
        Command::AddAdmin(cert) => s.admins.push(crate::admin_set::admin_info(cert)),
        Command::RemoveAdmin(ski) => s.admins.retain(|a| a.ski != *ski),
        Command::SetThresholds {
            signature,
            revocation,
        } => {
            s.sig_threshold = signature.get();
            s.rev_threshold = revocation.get();
        }
        Command::GenerateImporter => s.importer_pending = true,
        Command::GenerateRandomMk => {
            let vp = answer.and_then(|a| Vp::from_slice(a).ok());
            if s.current_register.state == RegisterState::Empty {
                s.current_register = full(RegisterState::Valid, vp);
            } else {
                s.new_register = full(RegisterState::FullUncommitted, vp);
            }
        }
        Command::ImportMk(envelope) => {
            let vp = tke_proto::transport::MkEnvelope::from_der(envelope.envelope.as_bytes())
                .ok()
                .map(|e| e.vp);
            s.importer_pending = false;
            s.new_register = full(RegisterState::FullUncommitted, vp);
        }
        Command::ImportMkParts(_) => {
            let vp = answer.and_then(|a| Vp::from_slice(a).ok());
            s.importer_pending = false;
            s.new_register = full(RegisterState::FullUncommitted, vp);
        }
        Command::CommitMk(vp) => s.new_register = full(RegisterState::FullCommitted, Some(*vp)),
        Command::SetImmediate(vp) => {
            s.current_register = full(RegisterState::Valid, Some(*vp));
            s.new_register = RegisterStatus::EMPTY;
        }
        Command::ClearNew => s.new_register = RegisterStatus::EMPTY,
        Command::ClearCurrent => s.current_register = RegisterStatus::EMPTY,
        Command::Zeroize => {
            s.admins.clear();
            s.sig_threshold = 0;
            s.rev_threshold = 0;
            s.new_register = RegisterStatus::EMPTY;
            s.current_register = RegisterStatus::EMPTY;
            s.importer_pending = false;
        }
        Command::AddControlPoints(mask) => s.control_points = s.control_points.union(*mask),
        Command::RemoveControlPoints(mask) => {
            s.control_points = s.control_points.difference(*mask);
        }
        Command::ExportMk(_) | Command::ExportMkBatch(_) => {}
    }
    s.counter = s.counter.wrapping_add(1);
    s
}

/// Whether `status` shows `command` ran already (it holds what the command sets).
fn holds(command: &Command, status: &UnitStatus) -> bool {
    match command {
        Command::AddAdmin(cert) => status.admins.iter().any(|a| a.ski == cert.ski()),
        Command::RemoveAdmin(ski) => !status.admins.iter().any(|a| a.ski == *ski),
        Command::SetThresholds {
            signature,
            revocation,
        } => status.sig_threshold == signature.get() && status.rev_threshold == revocation.get(),
        other => registers::holds(other, status),
    }
}

/// One unit's commands of a round, ready to send, and its state before them.
struct Sending<'a> {
    unit: &'a KnownUnit,
    signed: Vec<SignedCommand>,
    signed_by: Vec<AdminInfo>,
    commands: Vec<Command>,
    before: UnitStatus,
}

/// Each unit of a round and its commands, in the file's order.
fn by_unit<'a, 'c>(
    client: &'c Client,
    round: &'a Round,
) -> Result<Vec<(&'c KnownUnit, Vec<&'a UnitCommand>)>, ApplyError> {
    let mut units: Vec<(&KnownUnit, Vec<&UnitCommand>)> = Vec::new();
    for c in &round.commands {
        let unit = client.unit(&c.unit()).ok_or(ApplyError::UnknownUnit {
            num: c.num,
            unit: c.unit(),
        })?;
        match units.iter_mut().find(|(u, _)| u.id() == unit.id()) {
            Some((_, v)) => v.push(c),
            None => units.push((unit, vec![c])),
        }
    }
    Ok(units)
}

/// What one unit needs: nothing (it ran its commands already), or its commands signed by
/// enough of its installed approvers, step by step on the state each step leaves.
enum Check<'a> {
    Already,
    Send(Sending<'a>),
    Short(Shortfall),
    Stale(StaleUnit),
}

/// `single`: the file is one round known when planned (the units' state alone tells
/// whether it ran); a multi-round file records that instead.
fn check_unit<'a>(
    step: &'static str,
    unit: &'a KnownUnit,
    commands: &[&UnitCommand],
    status: &UnitStatus,
    single: bool,
) -> Result<Check<'a>, ApplyError> {
    let (Some(first), Some(last)) = (commands.first(), commands.last()) else {
        return Ok(Check::Already);
    };
    let planned = first.admin_command.counter.wrapping_sub(1);
    if single && status.counter == last.admin_command.counter && holds(&last.command, status) {
        return Ok(Check::Already);
    }
    if status.counter != planned {
        return Ok(Check::Stale(StaleUnit {
            num: unit.num,
            unit: unit.id(),
            planned,
            found: status.counter,
        }));
    }
    let encoding = |e: tke_proto::der::Error| encoding_failed(step, unit.num, unit.id(), e.into());
    let mut sim = status.clone();
    let mut signed = Vec::with_capacity(commands.len());
    let mut signed_by: Vec<AdminInfo> = Vec::new();
    for c in commands {
        let needed = needed(unit.num, unit.unit_type(), &c.command, &sim)?;
        let (counted, not_installed): (Vec<&Approval>, Vec<&Approval>) = c
            .approvals
            .iter()
            .partition(|a| sim.admins.iter().any(|i| i.ski == a.certificate.ski()));
        if counted.len() < needed {
            return Ok(Check::Short(Shortfall {
                num: unit.num,
                unit: unit.id(),
                needed,
                approved: counted.iter().map(|a| a.admin()).collect(),
                may_approve: sim
                    .admins
                    .iter()
                    .filter(|a| !c.approved_by(a.ski))
                    .cloned()
                    .collect(),
                not_installed: not_installed.iter().map(|a| a.admin()).collect(),
            }));
        }
        let mut signer_infos = Vec::with_capacity(needed);
        for a in counted.iter().take(needed) {
            signer_infos.push(SignerInfo {
                ski: a.certificate.ski(),
                signature: OctetString::new(a.signature.clone()).map_err(encoding)?,
            });
            if !signed_by.iter().any(|b| b.ski == a.certificate.ski()) {
                signed_by.push(a.admin());
            }
        }
        signed.push(SignedCommand {
            command: OctetString::new(c.bytes.clone()).map_err(encoding)?,
            signer_infos,
        });
        // What the unit needs is counted on the state the earlier commands leave; their
        // answers do not change who may sign.
        sim = after(&c.command, None, sim);
    }
    Ok(Check::Send(Sending {
        unit,
        signed,
        signed_by,
        commands: commands.iter().map(|c| c.command.clone()).collect(),
        before: status.clone(),
    }))
}

/// Applies a ceremony file, round by round from the first not applied, and writes the
/// file (`save`) after each round with the units' answers and the next round.
///
/// For each round: queries every unit of it; a unit at the planned counter needs, for
/// each of its commands, enough approvals of administrators installed on it at that step
/// (its thresholds, as the unit counts them); in a single-round file, a unit at the
/// counter of its last command that holds what that command sets ran them already (a
/// second apply sends nothing); any other counter makes the file stale. Only when every
/// unit passes is anything sent: each unit its commands in order with the installed
/// approvers' signatures, units in parallel. Then every unit's full state is checked
/// against what its commands and answers leave; the answers are recorded, the round is
/// marked applied, the next round (of a multi-round ceremony) is built from the
/// parameters and the answers, and `save` writes the file. After the last round, the
/// ceremony's own post-condition ([`MultiRound::postcondition`]) is checked on every
/// unit.
///
/// # Errors
/// [`ApplyError::ShortOfApprovals`] when the next round lacks approvals (earlier rounds
/// of this run are applied and saved); [`ApplyError::Stale`],
/// [`ApplyError::UnknownUnit`], [`ApplyError::Unsupported`] before anything of the round
/// is sent; [`ApplyError::Ceremony`] for a unit that cannot be queried, refuses a command
/// or does not hold what was planned; [`ApplyError::File`] when answers cannot make the
/// next round; [`ApplyError::Save`] when `save` fails.
pub fn apply(
    client: &Client,
    file: &mut CeremonyFile,
    save: &mut dyn FnMut(&CeremonyFile) -> std::io::Result<()>,
) -> Result<Vec<Applied>, ApplyError> {
    apply_guarded(client, file, save, &[])
}

/// As [`apply`], and before anything of a round is sent each command that destroys a
/// master key (zeroize, clear current) is put to the key-storage guard of its kind in
/// `guards` ([`apply_guard`]).
///
/// # Errors
/// As [`apply`]; [`ApplyError::Ceremony`] with a [`crate::Problem::Guarded`] per unit a
/// guard refuses (nothing of the round is sent).
pub fn apply_guarded(
    client: &Client,
    file: &mut CeremonyFile,
    save: &mut dyn FnMut(&CeremonyFile) -> std::io::Result<()>,
    guards: &[(crate::guard::Destruction, crate::guard::KeyStorageGuard)],
) -> Result<Vec<Applied>, ApplyError> {
    let step: &'static str = "Applying the ceremony file";
    let mut report = Vec::new();
    let single = file.ceremony.is_none();
    let total = file.total_rounds();
    let mut applied_now = 0;
    loop {
        let Some(index) = file.current_round() else {
            if let Some((round, next_by)) = file.awaits_planner() {
                return Err(ApplyError::AwaitsPlanner {
                    round,
                    rounds: total,
                    applied: applied_now,
                    next_by,
                });
            }
            match file.next_round()? {
                Some(next) => {
                    file.rounds.push(next);
                    save(file).map_err(|source| ApplyError::Save {
                        round: index_of_last(file),
                        source,
                    })?;
                    continue;
                }
                None => break,
            }
        };
        let round_no = index + 1;
        let units = by_unit(client, &file.rounds[index])?;
        let only: Vec<&KnownUnit> = units.iter().map(|(u, _)| *u).collect();
        let statuses = crate::on_all(step, &only, |u| client.query(u))?;
        let (mut sending, mut short, mut stale) = (Vec::new(), Vec::new(), Vec::new());
        for ((unit, commands), status) in units.iter().zip(&statuses) {
            match check_unit(step, unit, commands, status, single)? {
                Check::Already => report.push(Applied {
                    round: round_no,
                    num: unit.num,
                    signed_by: Vec::new(),
                    already: true,
                }),
                Check::Send(s) => sending.push(s),
                Check::Short(s) => short.push(s),
                Check::Stale(s) => stale.push(s),
            }
        }
        if !stale.is_empty() {
            return Err(ApplyError::Stale { units: stale });
        }
        let refused: Vec<crate::Problem> = units
            .iter()
            .zip(&statuses)
            .filter(|((u, _), _)| sending.iter().any(|s| s.unit.id() == u.id()))
            .flat_map(|((u, commands), status)| registers::guarded(guards, u, status, commands))
            .collect();
        if !refused.is_empty() {
            return Err(CeremonyError::Problems(refused).into());
        }
        if !short.is_empty() {
            return Err(ApplyError::ShortOfApprovals {
                round: round_no,
                rounds: total,
                applied: applied_now,
                units: short,
            });
        }
        if let Some(c) = file.ceremony.as_ref().filter(|_| !sending.is_empty()) {
            if let Some(k) = kind(&c.kind) {
                k.before_sending(client, &c.params, &file.rounds[..index])?;
            }
        }
        let targets: Vec<&KnownUnit> = sending.iter().map(|s| s.unit).collect();
        let answers = crate::on_all(step, &targets, |u| {
            let mut out = Vec::new();
            for s in sending.iter().filter(|s| s.unit.id() == u.id()) {
                for command in &s.signed {
                    out.push(client.submit(u, command)?);
                }
            }
            crate::crash::point(&format!("apply:round-{round_no}-unit-{}-sent", u.num));
            Ok(out)
        })?;
        // The units ran the round; their answers are not in the file yet.
        crate::crash::point(&format!("apply:round-{round_no}-sent"));
        let expected: Vec<Expected> = sending
            .iter()
            .zip(&answers)
            .map(|(s, out)| {
                let end = s
                    .commands
                    .iter()
                    .zip(out)
                    .fold(s.before.clone(), |st, (c, a)| after(c, Some(a), st));
                Expected::of(&end)
            })
            .collect();
        let each: Vec<(&KnownUnit, &Expected)> =
            sending.iter().map(|s| s.unit).zip(&expected).collect();
        // Record the answers before anything else can fail: they are what the next
        // round is built from.
        let round = &mut file.rounds[index];
        for (s, out) in sending.iter().zip(answers) {
            let mine = round
                .commands
                .iter_mut()
                .filter(|c| c.unit() == s.unit.id());
            for (c, a) in mine.zip(out) {
                c.answer = Some(a);
            }
        }
        for c in round.commands.iter_mut().filter(|c| c.answer.is_none()) {
            // A unit that had run its commands already (single-round files only).
            c.answer = Some(Vec::new());
        }
        round.applied = true;
        applied_now += 1;
        if let Some(c) = &file.ceremony {
            // What the next round is built from must be sound before it is written.
            let k = kind(&c.kind).ok_or_else(|| FileError::UnknownKind {
                kind: c.kind.clone(),
            })?;
            k.check_answers(&c.params, &file.rounds[..index], &file.rounds[index])?;
        }
        save(file).map_err(|source| ApplyError::Save {
            round: round_no,
            source,
        })?;
        if !each.is_empty() {
            check_each(client, &each, None, step)?;
        }
        report.extend(sending.into_iter().map(|s| Applied {
            round: round_no,
            num: s.unit.num,
            signed_by: s.signed_by,
            already: false,
        }));
    }
    if let (Some(c), true) = (&file.ceremony, applied_now > 0) {
        let k = kind(&c.kind).ok_or_else(|| FileError::UnknownKind {
            kind: c.kind.clone(),
        })?;
        let expected = k.postcondition(&c.params, &file.rounds)?;
        let mut each = Vec::with_capacity(expected.len());
        for (id, e) in &expected {
            let unit = client.unit(id).ok_or_else(|| ApplyError::UnknownUnit {
                num: file
                    .commands()
                    .find(|(_, c)| c.unit() == *id)
                    .map_or(0, |(_, c)| c.num),
                unit: *id,
            })?;
            each.push((unit, e));
        }
        if !each.is_empty() {
            check_each(client, &each, None, "Checking the crypto units")?;
        }
    }
    if report.is_empty() {
        // Every round was applied before: nothing was sent; say so per unit of the
        // last round.
        let last = file.rounds.len();
        for c in file.rounds.iter().flat_map(|r| &r.commands) {
            if !report.iter().any(|a: &Applied| a.num == c.num) {
                report.push(Applied {
                    round: last,
                    num: c.num,
                    signed_by: Vec::new(),
                    already: true,
                });
            }
        }
    }
    Ok(report)
}

/// ` (N of them of ANOTHER service instance: X)` for the targets of a batch that name
/// another instance, or nothing.
fn to_instance(named: &[tke_proto::InstanceId]) -> String {
    let mut ids: Vec<String> = named.iter().map(tke_proto::InstanceId::uuid).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        String::new()
    } else {
        format!(
            " ({} of them of ANOTHER service instance: {})",
            named.len(),
            ids.join(", ")
        )
    }
}

/// The 1-based number of the file's last round.
fn index_of_last(file: &CeremonyFile) -> usize {
    file.rounds.len()
}
