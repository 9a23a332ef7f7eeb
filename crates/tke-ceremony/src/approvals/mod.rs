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
    AdminCertificate, AdminCommand, AdminInfo, AdminName, Command, CommandId, SignedCommand,
    SignerInfo, Ski, UnitId, UnitStatus,
};
use tke_sigkey::{SignError, Signer};

use crate::{
    admin_set::{plan as plan_change, Change},
    plan::Planner,
    postcondition::{check_each, Expected},
    CeremonyError,
};

mod registers;
pub use registers::{apply_guard, plan_register, plan_zeroize, ForcedKeys};

/// The `format` field of every ceremony file.
pub const FORMAT: &str = "tke-ceremony";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// A ceremony as a file: rounds of per-unit commands and their approvals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CeremonyFile {
    /// The rounds, in the order they run.
    pub rounds: Vec<Round>,
    /// The instances whose stored keys the planner agreed to lose (`--force-with-keys`),
    /// shown to approvers; empty for a file that destroys no master key.
    pub force_with_keys: Vec<ForcedKeys>,
}

/// The commands of one round: at most one per unit, sent together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// One command per unit.
    pub commands: Vec<UnitCommand>,
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
    #[error("format {format:?} version {version} is not a ceremony file this version of tke reads (format {FORMAT:?} version {VERSION})")]
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
    #[error("copy {index} holds other commands than the first (a different plan): only approvals of the same plan merge")]
    MergeMismatch {
        /// 1-based copy.
        index: usize,
    },
}

/// The JSON form: what is written and read. Strict: unknown fields are refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    format: String,
    version: u32,
    ceremony: String,
    rounds: Vec<RoundJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    force_with_keys: Vec<registers::ForcedJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoundJson {
    commands: Vec<CommandJson>,
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
        Command::ExportMk(req) => format!(
            "export the {:?} master key register to another crypto unit",
            req.register
        ),
        Command::ExportMkBatch(reqs) => format!(
            "export a master key register to {} other crypto units",
            reqs.len()
        ),
        Command::ImportMk(_) => "import a master key into the new register".to_owned(),
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
    /// The command for `unit` (numbered `num`) at `counter`.
    fn new(
        step: &'static str,
        num: usize,
        unit: UnitId,
        counter: u64,
        command: Command,
    ) -> Result<Self, CeremonyError> {
        let encoding = |source| encoding_failed(step, num, unit, source);
        let admin_command = command.to_wire(unit, counter).map_err(encoding)?;
        let bytes = admin_command
            .to_der()
            .map_err(|e| encoding(tke_proto::ProtoError::from(e)))?;
        Ok(Self {
            num,
            admin_command,
            command,
            bytes,
            approvals: Vec::new(),
        })
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

    /// What the ceremony does, from its commands' ids (e.g. "Setting signature
    /// thresholds").
    pub fn title(&self) -> String {
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
            rounds: self
                .rounds
                .iter()
                .map(|r| RoundJson {
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

    /// Reads the JSON form, strictly: see the module documentation.
    ///
    /// # Errors
    /// [`FileError`] naming the round, the unit and the field that is wrong.
    pub fn from_json(text: &str) -> Result<Self, FileError> {
        let file: FileJson =
            serde_json::from_str(text).map_err(|source| FileError::Json { source })?;
        if file.format != FORMAT || file.version != VERSION {
            return Err(FileError::Version {
                format: file.format,
                version: file.version,
            });
        }
        let mut rounds = Vec::with_capacity(file.rounds.len());
        for (i, r) in file.rounds.into_iter().enumerate() {
            let round = i + 1;
            let commands = r
                .commands
                .into_iter()
                .map(|c| decode_command(round, c))
                .collect::<Result<Vec<_>, _>>()?;
            rounds.push(Round { commands });
        }
        let mut parsed = Self {
            rounds,
            force_with_keys: Vec::new(),
        };
        if parsed.commands().next().is_none() {
            return Err(FileError::Empty);
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

    /// Signs every command `signer` has not approved yet and adds the approvals. Contacts
    /// no unit. Returns how many commands it signed (0: approved already).
    ///
    /// # Errors
    /// [`FileError::Sign`] when the key cannot sign (nothing is added then).
    pub fn approve(&mut self, signer: &dyn Signer) -> Result<usize, FileError> {
        let ski = signer.ski();
        let mut added = Vec::new();
        for (r, round) in self.rounds.iter().enumerate() {
            for (c, command) in round.commands.iter().enumerate() {
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
                added.push((r, c, signature.as_bytes().to_vec()));
            }
        }
        let count = added.len();
        for (r, c, signature) in added {
            self.rounds[r].commands[c].approvals.push(Approval {
                certificate: signer.certificate().clone(),
                signature,
            });
        }
        Ok(count)
    }
}

/// Decodes and checks one command of round `round`.
fn decode_command(round: usize, c: CommandJson) -> Result<UnitCommand, FileError> {
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
        let same_plan = copy.force_with_keys == merged.force_with_keys
            && copy.rounds.len() == merged.rounds.len()
            && copy.rounds.iter().zip(&merged.rounds).all(|(a, b)| {
                a.commands.len() == b.commands.len()
                    && a.commands
                        .iter()
                        .zip(&b.commands)
                        .all(|(x, y)| x.bytes == y.bytes)
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
        rounds: vec![Round { commands }],
        force_with_keys: Vec::new(),
    }))
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
    /// Units whose command lacks approvals: nothing was sent to any unit.
    #[error("{} crypto unit(s) lack approvals; nothing was sent", units.len())]
    ShortOfApprovals {
        /// Each unit short of approvals.
        units: Vec<Shortfall>,
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

/// What [`apply`] did on one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// The administrators whose signatures were sent (empty when `already`).
    pub signed_by: Vec<AdminInfo>,
    /// The unit had run this command already: nothing was sent.
    pub already: bool,
}

/// The signatures `command` needs on a unit in state `status`: the rule of the unit
/// (`tke-unit`), as [`crate::admin_set`] replays it.
fn needed(num: usize, command: &Command, status: &UnitStatus) -> Result<usize, ApplyError> {
    let imprint = status.imprint_mode();
    Ok(match command {
        Command::SetThresholds { signature, .. } if imprint => usize::from(signature.get()),
        Command::AddAdmin(_) | Command::RemoveAdmin(_) if imprint => 0,
        Command::RemoveAdmin(_) => usize::from(status.rev_threshold),
        Command::AddAdmin(_) | Command::SetThresholds { .. } => usize::from(status.sig_threshold),
        other => registers::needed(other, status).ok_or(ApplyError::Unsupported {
            num,
            command: other.id(),
        })?,
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

/// The state a unit in state `status` holds after `command` ran on it.
fn after(command: &Command, mut s: UnitStatus) -> UnitStatus {
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
        other => registers::after(other, &mut s),
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

/// One unit's commands of a round, ready to send, and the state it holds afterwards.
struct Sending<'a> {
    unit: &'a KnownUnit,
    signed: Vec<SignedCommand>,
    signed_by: Vec<AdminInfo>,
    expected: Expected,
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

fn check_unit<'a>(
    step: &'static str,
    unit: &'a KnownUnit,
    commands: &[&UnitCommand],
    status: &UnitStatus,
) -> Result<Check<'a>, ApplyError> {
    let (Some(first), Some(last)) = (commands.first(), commands.last()) else {
        return Ok(Check::Already);
    };
    let planned = first.admin_command.counter.wrapping_sub(1);
    if status.counter == last.admin_command.counter && holds(&last.command, status) {
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
        let needed = needed(unit.num, &c.command, &sim)?;
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
        sim = after(&c.command, sim);
    }
    Ok(Check::Send(Sending {
        unit,
        signed,
        signed_by,
        expected: Expected::of(&sim),
    }))
}

/// Applies a ceremony file: queries every unit of it; a unit at the planned counter
/// needs, for each of its commands, enough approvals of administrators installed on it
/// at that step (its thresholds, as the unit counts them); a unit at the counter of its
/// last command that holds what that command sets ran them already (a second apply
/// sends nothing); any other counter makes the file stale. Only when every unit passes
/// is anything sent: each unit its commands in order with the installed approvers'
/// signatures, units in parallel; then every unit's full post-condition is checked.
///
/// # Errors
/// [`ApplyError::Stale`], [`ApplyError::ShortOfApprovals`], [`ApplyError::UnknownUnit`],
/// [`ApplyError::Unsupported`] before anything is sent; [`ApplyError::Ceremony`] for a
/// unit that cannot be queried, refuses a command or does not hold what was planned.
pub fn apply(client: &Client, file: &CeremonyFile) -> Result<Vec<Applied>, ApplyError> {
    apply_guarded(client, file, &[])
}

/// As [`apply`], and before anything is sent each command that destroys a master key
/// (zeroize, clear current) is put to the key-storage guard of its kind in `guards`
/// ([`apply_guard`]).
///
/// # Errors
/// As [`apply`]; [`ApplyError::Ceremony`] with a [`crate::Problem::Guarded`] per unit a
/// guard refuses (nothing is sent).
pub fn apply_guarded(
    client: &Client,
    file: &CeremonyFile,
    guards: &[(crate::guard::Destruction, crate::guard::KeyStorageGuard)],
) -> Result<Vec<Applied>, ApplyError> {
    let step: &'static str = "Applying the ceremony file";
    let mut report = Vec::new();
    for round in &file.rounds {
        let units = by_unit(client, round)?;
        let only: Vec<&KnownUnit> = units.iter().map(|(u, _)| *u).collect();
        let statuses = crate::on_all(step, &only, |u| client.query(u))?;
        let (mut sending, mut short, mut stale) = (Vec::new(), Vec::new(), Vec::new());
        for ((unit, commands), status) in units.iter().zip(&statuses) {
            match check_unit(step, unit, commands, status)? {
                Check::Already => report.push(Applied {
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
            return Err(ApplyError::ShortOfApprovals { units: short });
        }
        let targets: Vec<&KnownUnit> = sending.iter().map(|s| s.unit).collect();
        crate::on_all(step, &targets, |u| {
            for s in sending.iter().filter(|s| s.unit.id() == u.id()) {
                for command in &s.signed {
                    client.submit(u, command)?;
                }
            }
            Ok(())
        })?;
        let expected: Vec<(&KnownUnit, &Expected)> =
            sending.iter().map(|s| (s.unit, &s.expected)).collect();
        if !expected.is_empty() {
            check_each(client, &expected, None, step)?;
        }
        report.extend(sending.into_iter().map(|s| Applied {
            num: s.unit.num,
            signed_by: s.signed_by,
            already: false,
        }));
    }
    Ok(report)
}
