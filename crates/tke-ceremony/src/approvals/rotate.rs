//! `tke plan auto-mk-rotate` and `tke plan auto-recover`: the two ceremonies that copy a
//! recovery unit's master key to other units, as multi-round ceremony files.
//!
//! **Rotation** (every unit of the instance, as [`crate::rotate`] with [`Flow::Auto`]):
//!
//! 1. the recovery unit generates a random key in its new register; every other unit
//!    makes an importer key;
//! 2. the recovery unit exports its new register to the importer keys
//!    (`exportMkBatch`, one per 16 targets);
//! 3. every other unit imports its envelope and commits; the recovery unit commits;
//! 4. every unit sets the new key immediately. Before this round is sent, `tke apply`
//!    itself re-encrypts the instance's key storage from the old key to the new one
//!    ([`MultiRound::before_sending`]): the service operations are unsigned, and no unit
//!    drops the old key before every record is under the new one.
//!
//! A rotation under way (an interrupted `tke apply` or direct run) is planned from the
//! stage `auto-mk-rotate --resume` finds: the rounds left, for the new key the units hold
//! (`to`), each unit starting where it stands.
//!
//! **Recovery** (as [`crate::recover`]): the units of the instance whose current register
//! is empty make importer keys (1); the recovery unit exports its *current* register to
//! them (2); each imports, commits and sets immediate (3). A target a stopped direct run
//! left holding the key in its new register only commits and sets immediate (or only
//! sets immediate); when no target needs the transfer, the file has round 3 only.
//!
//! The plans are the direct ceremonies' (every problem they find is reported before a
//! file is written), with every installed administrator as a possible approver.

use serde::{Deserialize, Serialize};
use tke_client::{Client, InstanceId, KnownUnit};
use tke_kms::Rotation;
use tke_proto::{
    transport::{CertifiedImporter, SignedEnvelope},
    AdminInfo, AdminName, CaCertificate, Command, CommandId, DeviceCertificate, Register,
    RegisterState, RegisterStatus, Ski, UnitId, UnitStatus, UnitType, Vp,
};

use super::{
    parse_params,
    registers::anyone,
    transfer::{
        answer_error, bad, envelopes, exports, importer, push_all, unhex, unit_certificate,
    },
    ApplyError, CeremonyFile, FileError, Kind, MultiRound, PlanError, Round, UnitCommand,
};
use crate::{
    postcondition::Expected,
    recover::{AutoRecover, Stage},
    rotate::{Flow, Rotate, RotationProblem, RotationStage, REENCRYPT_BATCH},
    CeremonyError, Problem,
};

/// The `kind` of a rotation file.
pub const ROTATE: &str = "auto-mk-rotate";
/// The `kind` of a recovery file.
pub const RECOVER: &str = "auto-recover";
/// The `kind` of a rotation to a key loaded from parts and committed beforehand.
pub const KEY_PARTS: &str = "cryptounit-mk-rotate";

/// The parameters of a rotation or recovery file: everything its rounds are built from.
/// Public.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    /// The service instance.
    pub instance: String,
    /// The fleet CA certificate (hex of the DER) the units' certificates chain to.
    pub fleet_ca: String,
    /// Rotation: the verification pattern of the current (old) master key. Recovery: of
    /// the key copied.
    pub vp: String,
    /// Rotation to a key loaded from parts: its verification pattern (committed in every
    /// new register when planned). A rotation that continues an interrupted one: the new
    /// key the units hold already. Absent for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// A rotation that continues an interrupted one: where the units and the key storage
    /// stood when planned, shown to the approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
    /// The units, in `CRYPTO UNIT NUM` order: the recovery unit the key comes from
    /// (`step` "source") and the units it goes to.
    pub units: Vec<TransferUnit>,
}

/// One unit of a rotation or recovery file, with its state when planned.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferUnit {
    /// Its `CRYPTO UNIT NUM` when planned.
    pub num: usize,
    /// Its device certificate (hex of the DER).
    pub certificate: String,
    /// Its transaction counter when planned: its first command uses the next value.
    pub counter: u64,
    /// "source", or where a receiving unit starts: "transfer" (importer key, import,
    /// commit, set immediate), "commit" (the key in its new register uncommitted),
    /// "set-immediate" (committed). A continued rotation also has "source-committed"
    /// (the source holds the new key committed) and "done" (the new key is current).
    pub step: String,
    /// Its signature threshold (unchanged by the ceremony).
    pub sig_threshold: u8,
    /// Its revocation signature threshold (unchanged).
    pub rev_threshold: u8,
    /// Its administrators (unchanged).
    pub admins: Vec<AdminJson>,
}

/// An installed administrator in the parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminJson {
    /// The name.
    pub name: String,
    /// The SKI, 64 hex digits.
    pub ski: String,
}

/// Where a unit of the file starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Source,
    /// A continued rotation's source whose new register is committed already.
    SourceCommitted,
    Transfer,
    Commit,
    SetImmediate,
    /// A continued rotation's unit that uses the new key already.
    Done,
}

impl Step {
    const ALL: [Step; 6] = [
        Step::Source,
        Step::SourceCommitted,
        Step::Transfer,
        Step::Commit,
        Step::SetImmediate,
        Step::Done,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::SourceCommitted => "source-committed",
            Self::Transfer => "transfer",
            Self::Commit => "commit",
            Self::SetImmediate => "set-immediate",
            Self::Done => "done",
        }
    }

    fn is_source(self) -> bool {
        matches!(self, Self::Source | Self::SourceCommitted)
    }
}

struct Unit {
    num: usize,
    cert: DeviceCertificate,
    counter: u64,
    step: Step,
    sig: u8,
    rev: u8,
    admins: Vec<AdminInfo>,
}

impl Unit {
    fn id(&self) -> UnitId {
        self.cert.unit_id()
    }
}

/// The parameters, decoded and checked.
struct Parsed {
    kind: &'static str,
    instance: InstanceId,
    ca: CaCertificate,
    vp: Vp,
    /// [`KEY_PARTS`], or a continued [`ROTATE`]: the key rotated to.
    to: Option<Vp>,
    /// A continued rotation: where it stood when planned.
    continues: Option<String>,
    units: Vec<Unit>,
    /// The index of the source in `units` ([`ROTATE`], [`RECOVER`]).
    source: Option<usize>,
}

/// What one round of the ceremony does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Rotation: the source generates; the receiving units make importer keys.
    Start,
    /// The source exports.
    Export,
    /// The receiving units import and commit (recovery: and set immediate); rotation:
    /// the source commits too.
    Import,
    /// Rotation: every unit sets immediate.
    SetImmediate,
}

fn parse(kind: &'static str, params: &serde_json::Value) -> Result<Parsed, FileError> {
    let p: TransferParams = parse_params(kind, params)?;
    let bad = |what: String| bad(kind, what);
    let ca = CaCertificate::from_der(&unhex(kind, "fleet_ca", &p.fleet_ca)?)
        .map_err(|e| bad(format!("fleet_ca: {e}")))?;
    let vp = Vp::from_hex(&p.vp).map_err(|e| bad(format!("vp: {e}")))?;
    let mut units: Vec<Unit> = Vec::with_capacity(p.units.len());
    for u in &p.units {
        let listed: Vec<UnitId> = units.iter().map(Unit::id).collect();
        let cert = unit_certificate(kind, &ca, &p.instance, u.num, &u.certificate, &listed)?;
        let step = Step::ALL
            .into_iter()
            .find(|s| s.name() == u.step)
            .filter(|s| match (kind, &p.to) {
                (RECOVER, _) => !matches!(s, Step::SourceCommitted | Step::Done),
                (KEY_PARTS, _) => *s == Step::SetImmediate,
                // A continued rotation starts each unit where it stands.
                (_, Some(_)) => true,
                _ => matches!(s, Step::Source | Step::Transfer),
            })
            .ok_or_else(|| bad(format!("crypto unit {}: step {:?}", u.num, u.step)))?;
        let admins = u
            .admins
            .iter()
            .map(|a| {
                Ok(AdminInfo {
                    name: AdminName::new(&a.name).map_err(|e| bad(e.to_string()))?,
                    ski: Ski::from_hex(&a.ski).map_err(|e| bad(e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, FileError>>()?;
        units.push(Unit {
            num: u.num,
            cert,
            counter: u.counter,
            step,
            sig: u.sig_threshold,
            rev: u.rev_threshold,
            admins,
        });
    }
    let sources: Vec<usize> = (0..units.len())
        .filter(|i| units[*i].step.is_source())
        .collect();
    let transfers = units.iter().any(|u| u.step == Step::Transfer);
    let source = match (kind, sources.as_slice()) {
        (KEY_PARTS, []) => None,
        (KEY_PARTS, _) => return Err(bad("the rotation to a loaded key has no source".to_owned())),
        // A continued rotation whose every unit holds the new key needs no source.
        (ROTATE, []) if p.to.is_some() && !transfers => None,
        (_, [s]) if units[*s].cert.unit_type() == UnitType::Recovery => Some(*s),
        _ => return Err(bad("one unit, a recovery unit, is the source".to_owned())),
    };
    let to = match (kind, &p.to) {
        (KEY_PARTS, Some(to)) => Some(Vp::from_hex(to).map_err(|e| bad(format!("to: {e}")))?),
        (KEY_PARTS, None) => return Err(bad("to (the key rotated to) is missing".to_owned())),
        (ROTATE, Some(to)) => {
            let to = Vp::from_hex(to).map_err(|e| bad(format!("to: {e}")))?;
            if to == vp {
                return Err(bad("to is the current master key".to_owned()));
            }
            Some(to)
        }
        (_, Some(_)) => return Err(bad("a recovery has no to".to_owned())),
        (_, None) => None,
    };
    if p.continues.is_some() && (kind != ROTATE || to.is_none()) {
        return Err(bad(
            "only a rotation that continues an interrupted one has continues".to_owned(),
        ));
    }
    Ok(Parsed {
        kind,
        instance: InstanceId(p.instance),
        ca,
        vp,
        to,
        continues: p.continues,
        units,
        source,
    })
}

impl Parsed {
    /// The recovery unit the key comes from (not in a rotation to a loaded key).
    fn source(&self) -> Result<&Unit, FileError> {
        self.source
            .and_then(|i| self.units.get(i))
            .ok_or_else(|| bad(self.kind, "the ceremony has no source unit"))
    }

    /// The units that receive it by a transfer (importer key, export, import).
    fn transfer(&self) -> impl Iterator<Item = &Unit> {
        self.units.iter().filter(|u| u.step == Step::Transfer)
    }

    /// The rounds, in order.
    fn phases(&self) -> Vec<Phase> {
        let transfer = self.transfer().next().is_some();
        let commit = self
            .units
            .iter()
            .any(|u| matches!(u.step, Step::Source | Step::Transfer | Step::Commit));
        match (self.kind, transfer) {
            (KEY_PARTS, _) => vec![Phase::SetImmediate],
            // A continued rotation: the key exists; the rounds left from where the units
            // stand.
            (ROTATE, false) if self.to.is_some() && commit => {
                vec![Phase::Import, Phase::SetImmediate]
            }
            (ROTATE, false) if self.to.is_some() => vec![Phase::SetImmediate],
            (ROTATE, true) => vec![
                Phase::Start,
                Phase::Export,
                Phase::Import,
                Phase::SetImmediate,
            ],
            (ROTATE, false) => vec![Phase::Start, Phase::Import, Phase::SetImmediate],
            (_, true) => vec![Phase::Start, Phase::Export, Phase::Import],
            (_, false) => vec![Phase::Import],
        }
    }

    /// The key copied: rotation, the source's answer in round 1; recovery, the one given;
    /// rotation to a loaded key, `to`.
    fn key(&self, before: &[Round]) -> Result<Vp, FileError> {
        if let Some(to) = self.to {
            return Ok(to);
        }
        if self.kind != ROTATE {
            return Ok(self.vp);
        }
        let s = self.source()?;
        let first = before
            .first()
            .ok_or_else(|| bad(self.kind, "the key is generated in round 1"))?;
        let answer = first
            .answer(s.id(), CommandId::GenerateRandomMk, 0)
            .ok_or_else(|| answer_error(1, s.num, "the verification pattern is missing"))?;
        let vp = Vp::from_slice(answer)
            .map_err(|e| answer_error(1, s.num, format!("not a verification pattern: {e}")))?;
        if vp == self.vp {
            return Err(answer_error(1, s.num, "the new key is the old one"));
        }
        Ok(vp)
    }

    /// Each transfer unit's certified importer key (round 1's answers).
    fn importers(&self, first: &Round) -> Result<Vec<CertifiedImporter>, FileError> {
        self.transfer()
            .map(|u| importer(first, u.num, &u.cert).map(|(certified, _)| certified))
            .collect()
    }

    /// Each transfer unit's envelope (round 2's answers, in order), checked: signed by
    /// the source under the fleet CA, for that unit, holding the key.
    fn envelopes(&self, before: &[Round]) -> Result<Vec<SignedEnvelope>, FileError> {
        let s = self.source()?;
        let second = before
            .get(1)
            .ok_or_else(|| bad(self.kind, "the envelopes are the answers of round 2"))?;
        let targets: Vec<(usize, UnitId)> = self.transfer().map(|u| (u.num, u.id())).collect();
        envelopes(
            second,
            &self.ca,
            (s.num, s.id()),
            &targets,
            self.key(before)?,
        )
    }

    /// A unit's commands of a round, each at the next counter.
    fn push_all(
        &self,
        out: &mut Vec<UnitCommand>,
        u: &Unit,
        before: &[Round],
        commands: Vec<Command>,
    ) -> Result<(), FileError> {
        push_all(self.kind, out, (u.num, u.id(), u.counter), before, commands)
    }

    fn round(&self, before: &[Round]) -> Result<Round, FileError> {
        let phases = self.phases();
        let phase = *phases.get(before.len()).ok_or_else(|| {
            bad(
                self.kind,
                format!("the ceremony has {} rounds", phases.len()),
            )
        })?;
        let mut out = Vec::new();
        match phase {
            Phase::Start => {
                for u in &self.units {
                    if u.step == Step::Source && self.kind == ROTATE && self.to.is_none() {
                        self.push_all(&mut out, u, before, vec![Command::GenerateRandomMk])?;
                    } else if u.step == Step::Transfer {
                        self.push_all(&mut out, u, before, vec![Command::GenerateImporter])?;
                    }
                }
            }
            Phase::Export => {
                let register = if self.kind == ROTATE {
                    Register::New
                } else {
                    Register::Current
                };
                let first = before
                    .first()
                    .ok_or_else(|| bad(self.kind, "the importer keys are made in round 1"))?;
                let targets = self.transfer().map(|u| &u.cert).zip(self.importers(first)?);
                let list = exports(self.kind, register, targets)?;
                self.push_all(&mut out, self.source()?, before, list)?;
            }
            Phase::Import => {
                let vp = self.key(before)?;
                let mut envelopes = if self.transfer().next().is_some() {
                    self.envelopes(before)?.into_iter()
                } else {
                    Vec::new().into_iter()
                };
                for u in &self.units {
                    let mut list = Vec::new();
                    if u.step == Step::Transfer {
                        let e = envelopes.next().ok_or_else(|| {
                            answer_error(2, u.num, "no envelope was exported to it")
                        })?;
                        list.push(Command::ImportMk(Box::new(e)));
                    }
                    let commit = match u.step {
                        Step::Source => self.kind == ROTATE,
                        Step::Transfer | Step::Commit => true,
                        Step::SourceCommitted | Step::SetImmediate | Step::Done => false,
                    };
                    if commit {
                        list.push(Command::CommitMk(vp));
                    }
                    if self.kind == RECOVER && u.step != Step::Source {
                        list.push(Command::SetImmediate(vp));
                    }
                    if !list.is_empty() {
                        self.push_all(&mut out, u, before, list)?;
                    }
                }
            }
            Phase::SetImmediate => {
                let vp = self.key(before)?;
                for u in self.units.iter().filter(|u| u.step != Step::Done) {
                    self.push_all(&mut out, u, before, vec![Command::SetImmediate(vp)])?;
                }
            }
        }
        Ok(Round::planned(out))
    }

    fn check_answers(&self, before: &[Round], round: &Round) -> Result<(), FileError> {
        let mut all = before.to_vec();
        all.push(round.clone());
        match self.phases().get(before.len()) {
            Some(Phase::Start) => {
                self.key(&all)?;
                self.importers(round)?;
            }
            Some(Phase::Export) => {
                self.envelopes(&all)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn postcondition(&self, rounds: &[Round]) -> Result<Vec<(UnitId, Expected)>, FileError> {
        let vp = self.key(rounds)?;
        // A recovery's source only exported: the rounds' own checks covered it.
        let changed = |u: &&Unit| self.kind != RECOVER || !u.step.is_source();
        Ok(self
            .units
            .iter()
            .filter(changed)
            .map(|u| {
                let mut e = Expected::imprint(u.admins.clone());
                e.sig_threshold = u.sig;
                e.rev_threshold = u.rev;
                e.current_register = RegisterStatus {
                    state: RegisterState::Valid,
                    vp: Some(vp),
                };
                (u.id(), e)
            })
            .collect())
    }
}

/// Rotation ([`ROTATE`]) or recovery ([`RECOVER`]) as a [`MultiRound`] ceremony.
pub struct TransferRounds(&'static str);

/// Rotation as a [`MultiRound`] ceremony.
pub static ROTATE_ROUNDS: TransferRounds = TransferRounds(ROTATE);
/// Recovery as a [`MultiRound`] ceremony.
pub static RECOVER_ROUNDS: TransferRounds = TransferRounds(RECOVER);
/// Rotation to a key loaded from parts as a [`MultiRound`] ceremony.
pub static KEY_PART_ROUNDS: TransferRounds = TransferRounds(KEY_PARTS);

impl MultiRound for TransferRounds {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn title(&self) -> &'static str {
        match self.0 {
            ROTATE => "Rotating the master key",
            KEY_PARTS => "Rotating to the master key loaded from parts",
            _ => "Recovering the master key",
        }
    }

    fn rounds(&self, params: &serde_json::Value) -> Result<usize, FileError> {
        Ok(parse(self.0, params)?.phases().len())
    }

    fn round(&self, params: &serde_json::Value, before: &[Round]) -> Result<Round, FileError> {
        parse(self.0, params)?.round(before)
    }

    fn check_answers(
        &self,
        params: &serde_json::Value,
        before: &[Round],
        round: &Round,
    ) -> Result<(), FileError> {
        parse(self.0, params)?.check_answers(before, round)
    }

    fn postcondition(
        &self,
        params: &serde_json::Value,
        rounds: &[Round],
    ) -> Result<Vec<(UnitId, Expected)>, FileError> {
        parse(self.0, params)?.postcondition(rounds)
    }

    fn continues(&self, params: &serde_json::Value) -> Option<String> {
        parse(self.0, params).ok()?.continues
    }

    fn before_sending(
        &self,
        client: &Client,
        params: &serde_json::Value,
        before: &[Round],
    ) -> Result<(), ApplyError> {
        let p = parse(self.0, params)?;
        if p.phases().get(before.len()) != Some(&Phase::SetImmediate) {
            return Ok(());
        }
        let to = p.key(before)?;
        Ok(reencrypt(client, &p.instance, p.vp, to)?)
    }
}

/// Re-encrypts the key storage of `instance` from `from` to `to`, unless nothing is left
/// under `from` and no rotation is in progress (an earlier apply did it).
fn reencrypt(
    client: &Client,
    instance: &InstanceId,
    from: Vp,
    to: Vp,
) -> Result<(), CeremonyError> {
    let fail = |source: tke_kms::KmsError| CeremonyError::KeyStorage {
        instance: instance.clone(),
        source: Box::new(source),
    };
    let unreachable = |source| {
        let p = RotationProblem::KeyService {
            instance: instance.clone(),
            source,
        };
        CeremonyError::Problems(vec![Problem::Rotation(Box::new(p))])
    };
    let Some(keys) = client.key_service(instance).map_err(unreachable)? else {
        return Ok(());
    };
    let summary = keys.summary().map_err(fail)?;
    let left = summary.by_vp.iter().any(|(vp, n)| *vp == from && *n > 0);
    if summary.rotation.is_none() && !left {
        return Ok(());
    }
    keys.begin_rotation(Rotation { from, to }).map_err(fail)?;
    tke_kms::reencrypt_all(keys.as_ref(), REENCRYPT_BATCH, &mut |_| {}).map_err(fail)?;
    keys.finish_rotation().map_err(fail)?;
    // Every record is under the new key; no unit uses it yet.
    crate::crash::point("apply:after-reencrypt");
    Ok(())
}

/// The parameters' form of a unit in state `s`.
fn unit_json(u: &KnownUnit, s: &UnitStatus, step: Step) -> TransferUnit {
    TransferUnit {
        num: u.num,
        certificate: hex::encode(u.certificate.der()),
        counter: s.counter,
        step: step.name().to_owned(),
        sig_threshold: s.sig_threshold,
        rev_threshold: s.rev_threshold,
        admins: s
            .admins
            .iter()
            .map(|a| AdminJson {
                name: a.name.to_string(),
                ski: a.ski.to_hex(),
            })
            .collect(),
    }
}

/// The file of `kind` with these parameters and its first round.
fn file_of(
    client: &Client,
    kind: &'static TransferRounds,
    instance: &InstanceId,
    (vp, to): (Vp, Option<Vp>),
    continues: Option<String>,
    units: Vec<TransferUnit>,
    any: &KnownUnit,
) -> Result<CeremonyFile, PlanError> {
    let ca = client.ca_of(any);
    let params = TransferParams {
        instance: instance.0.clone(),
        fleet_ca: hex::encode(ca.der()),
        vp: vp.to_hex(),
        to: to.map(|v| v.to_hex()),
        continues,
        units,
    };
    let params = serde_json::to_value(&params).map_err(|e| bad(kind.0, e.to_string()))?;
    let first = kind.round(&params, &[])?;
    Ok(CeremonyFile {
        ceremony: Some(Kind {
            kind: kind.0.to_owned(),
            params,
        }),
        rounds: vec![first],
        force_with_keys: Vec::new(),
    })
}

/// Plans a rotation of the master key of `instance` (every unit) as a ceremony file:
/// every check of the direct `auto-mk-rotate` ([`Rotate::plan`]) with every installed
/// administrator as a possible approver. The first recovery unit generates the key.
///
/// A rotation under way (an interrupted `tke apply` or direct run) is continued from
/// where the units and the key storage stand, as `auto-mk-rotate --resume` finds it
/// ([`crate::rotate::RotationStage`]): the file holds the rounds left, for the new key
/// the units hold, and says where the rotation stopped.
///
/// # Errors
/// [`PlanError::Ceremony`] with [`CeremonyError::Problems`] listing every problem found.
pub fn plan_rotate(client: &Client, instance: &InstanceId) -> Result<CeremonyFile, PlanError> {
    let units = client.instance_units(instance);
    let rotate = |resume| Rotate {
        flow: Flow::Auto,
        units: units.clone(),
        keys: anyone(client, &units),
        resume,
    };
    let plan = match rotate(false).plan(client) {
        Err(CeremonyError::Problems(p)) if p.iter().any(interrupted) => {
            rotate(true).plan(client)?
        }
        other => other?,
    };
    let none = || {
        CeremonyError::Problems(vec![Problem::UnknownInstance {
            instance: instance.clone(),
        }])
    };
    let any = plan.units().first().map(|(u, _)| *u).ok_or_else(none)?;
    let (to, continues) = match plan.stage() {
        RotationStage::NotStarted => (None, None),
        stage => (
            plan.to(),
            Some(format!(
                "continues the auto-mk-rotate that stopped: {stage}"
            )),
        ),
    };
    let Some(to) = to else {
        // A fresh rotation: the first recovery unit generates the key.
        let source = plan.source().ok_or_else(none)?;
        let listed = plan
            .units()
            .iter()
            .map(|(u, s)| {
                let step = if u.id() == source.id() {
                    Step::Source
                } else {
                    Step::Transfer
                };
                unit_json(u, s, step)
            })
            .collect();
        return file_of(
            client,
            &ROTATE_ROUNDS,
            instance,
            (plan.from(), None),
            None,
            listed,
            source,
        );
    };
    let holds = |s: &UnitStatus| s.current_register.vp == Some(to) || s.new_register.vp == Some(to);
    let transfer = plan.units().iter().any(|(_, s)| !holds(s));
    let source = plan.source().filter(|_| transfer).map(KnownUnit::id);
    let listed = plan
        .units()
        .iter()
        .map(|(u, s)| {
            let committed = s.new_register.state == RegisterState::FullCommitted;
            let step = match (Some(u.id()) == source, committed) {
                _ if s.current_register.vp == Some(to) => Step::Done,
                (true, false) => Step::Source,
                (true, true) => Step::SourceCommitted,
                _ if s.new_register.vp != Some(to) => Step::Transfer,
                (false, false) => Step::Commit,
                (false, true) => Step::SetImmediate,
            };
            unit_json(u, s, step)
        })
        .collect();
    file_of(
        client,
        &ROTATE_ROUNDS,
        instance,
        (plan.from(), Some(to)),
        continues,
        listed,
        any,
    )
}

/// Whether `p` says a rotation is under way (what a continued plan picks up).
fn interrupted(p: &Problem) -> bool {
    matches!(p, Problem::Rotation(r) if matches!(**r, RotationProblem::Interrupted { .. }))
}

/// Plans copying a recovery unit's current master key into the units of `instance`
/// whose current register is empty, as a ceremony file: every check of the direct
/// `auto-recover` ([`AutoRecover::plan`]; `source` is the recovery unit's `CRYPTO UNIT
/// NUM`, or the first that holds a key) with every installed administrator as a
/// possible approver.
///
/// # Errors
/// [`PlanError::Ceremony`] with [`CeremonyError::Problems`] listing every problem found.
pub fn plan_recover(
    client: &Client,
    instance: &InstanceId,
    source: Option<usize>,
) -> Result<CeremonyFile, PlanError> {
    let units = client.instance_units(instance);
    let plan = AutoRecover {
        instance: instance.clone(),
        source,
        keys: anyone(client, &units),
        to_instances: Vec::new(),
        force_with_keys: Vec::new(),
    }
    .plan(client)?;
    let mut listed = vec![unit_json(plan.source(), plan.source_status(), Step::Source)];
    for t in plan.targets() {
        let step = match t.stage {
            Stage::Transfer => Step::Transfer,
            Stage::Commit => Step::Commit,
            Stage::SetImmediate => Step::SetImmediate,
        };
        listed.push(unit_json(t.unit, &t.status, step));
    }
    listed.sort_by_key(|u| u.num);
    file_of(
        client,
        &RECOVER_ROUNDS,
        instance,
        (plan.vp(), None),
        None,
        listed,
        plan.source(),
    )
}

/// Plans `cryptounit-mk-rotate` on `units` (every unit of one instance) as a ceremony
/// file of one round: every check of the direct command ([`Rotate::plan`] with
/// [`Flow::KeyParts`]: the key loaded from parts is committed in every new register, no
/// rotation under way), with every installed administrator as a possible approver. The
/// round sets the loaded key immediately on every unit; `tke apply` re-encrypts the
/// instance's key storage before sending it.
///
/// # Errors
/// [`PlanError::Ceremony`] with [`CeremonyError::Problems`] listing every problem found.
pub fn plan_rotate_loaded(
    client: &Client,
    units: Vec<&KnownUnit>,
) -> Result<CeremonyFile, PlanError> {
    let plan = Rotate {
        flow: Flow::KeyParts,
        keys: anyone(client, &units),
        units,
        resume: false,
    }
    .plan(client)?;
    let instance = plan.instance().clone();
    let first = plan.units().first().map(|(u, _)| *u);
    let (Some(to), Some(any)) = (plan.to(), first) else {
        return Err(CeremonyError::Problems(vec![Problem::NoUnits]).into());
    };
    let listed = plan
        .units()
        .iter()
        .map(|(u, s)| unit_json(u, s, Step::SetImmediate))
        .collect();
    file_of(
        client,
        &KEY_PART_ROUNDS,
        &instance,
        (plan.from(), Some(to)),
        None,
        listed,
        any,
    )
}
