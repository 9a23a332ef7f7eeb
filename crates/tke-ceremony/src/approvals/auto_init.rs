//! `tke plan auto-init`: the initialization of a service instance as a multi-round
//! ceremony file, planned by someone who holds no administrator key.
//!
//! Three rounds, as the direct `auto-init` runs them (`crate::auto_init`):
//!
//! 1. on every unit (in imprint mode): a zeroize where someone left administrators,
//!    every administrator installed, both thresholds set (leaving imprint mode); then
//!    the recovery unit generates a random master key in its current register and every
//!    other unit an importer key;
//! 2. the recovery unit exports its key to every other unit (`exportMkBatch`, one per 16
//!    targets), to the certified importer keys the units answered in round 1;
//! 3. on every other unit: import its envelope, commit, set immediate.
//!
//! A service instance of one unit has round 1 only.
//!
//! An instance an interrupted auto-init left part-way (units out of imprint mode) is
//! planned from what is left on each unit, as `auto-init --resume` finds it
//! ([`crate::auto_init::AutoInitResume`]): the file has the rounds left only (each unit's
//! `left` in the parameters), and the key the recovery unit holds already is not
//! generated again.

use serde::{Deserialize, Serialize};
use tke_client::{Client, InstanceId, KnownUnit};
use tke_proto::{
    der::Decode,
    transport::{CertifiedImporter, SignedEnvelope},
    AdminCertificate, CaCertificate, Command, CommandId, DeviceCertificate, Register,
    RegisterState, RegisterStatus, Threshold, UnitId, UnitStatus, UnitType, Vp,
};

use super::{
    device_certificate, fleet_ca, parse_params,
    transfer::{self, answer_error},
    CeremonyFile, FileError, MultiRound, PlanError, Round, UnitCommand,
};
use crate::{
    admin_set::{admin_info, admin_list_problems},
    auto_init::{interrupted, survey, survey_with, AutoInitResume, KeyStage},
    postcondition::Expected,
    CeremonyError, Problem,
};

/// The `kind` of an auto-init file.
pub const KIND: &str = "auto-init";

/// The parameters of an auto-init file: everything its rounds are built from. Public.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoInitParams {
    /// The service instance.
    pub instance: String,
    /// Signatures required on commands.
    pub sig_threshold: u32,
    /// Signatures required to remove an administrator.
    pub rev_threshold: u32,
    /// The administrators' certificates (hex of the DER), in the order installed.
    pub admins: Vec<String>,
    /// The fleet CA certificate (hex of the DER) the units' certificates chain to.
    pub fleet_ca: String,
    /// The unit id (UUID) of the recovery unit that generates the master key.
    pub recovery: String,
    /// Every unit of the instance, in `CRYPTO UNIT NUM` order.
    pub units: Vec<PlannedUnit>,
    /// A plan that continues an interrupted auto-init: the master key the recovery unit
    /// holds already (absent when it is generated in round 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vp: Option<String>,
    /// A plan that continues an interrupted auto-init: where it stopped, shown to the
    /// approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
}

/// What is left on a unit of a plan that continues an interrupted auto-init.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitLeft {
    /// The administrators still to install (0-based indices into `admins`), in order.
    pub install: Vec<usize>,
    /// Whether the thresholds are still to set (the unit is in imprint mode).
    pub thresholds: bool,
    /// How far the master key has come: "generate" (the recovery unit), "transfer"
    /// (importer key, import, commit, set immediate), "commit", "set-immediate" or "done".
    pub key: String,
}

/// One unit of an auto-init file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedUnit {
    /// Its `CRYPTO UNIT NUM` when planned.
    pub num: usize,
    /// Its device certificate (hex of the DER).
    pub certificate: String,
    /// Its transaction counter when planned: its first command uses the next value.
    pub counter: u64,
    /// Whether it is cleared first (imprint mode, administrators left by someone).
    pub clear: bool,
    /// Kind `desired-key` only: the administrator and threshold commands the unit runs
    /// before the key (hex of each `AdminCommand` DER, at its consecutive counters), as
    /// the declarative plan found them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Vec<String>>,
    /// Kind `auto-init` continuing an interrupted one: what is left on the unit (its
    /// `clear` still says whether it is zeroized first). Absent: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<UnitLeft>,
}

/// How far the master key has come on a unit of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Generate,
    Transfer,
    Commit,
    SetImmediate,
    Done,
}

impl Key {
    const ALL: [Key; 5] = [
        Key::Generate,
        Key::Transfer,
        Key::Commit,
        Key::SetImmediate,
        Key::Done,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::Transfer => "transfer",
            Self::Commit => "commit",
            Self::SetImmediate => "set-immediate",
            Self::Done => "done",
        }
    }

    fn of(stage: KeyStage) -> Self {
        match stage {
            KeyStage::Generate => Self::Generate,
            KeyStage::Transfer => Self::Transfer,
            KeyStage::Commit => Self::Commit,
            KeyStage::SetImmediate => Self::SetImmediate,
            KeyStage::Done => Self::Done,
        }
    }
}

/// What one round does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Administrators and thresholds, then the key generated and the importer keys made.
    Start,
    /// The recovery unit exports the key to the importer keys.
    Export,
    /// Import, commit, set immediate.
    Last,
}

/// The parameters, decoded and checked.
struct Parsed {
    sig: Threshold,
    rev: Threshold,
    admins: Vec<AdminCertificate>,
    ca: CaCertificate,
    units: Vec<Unit>,
    /// Index of the recovery unit in `units`.
    recovery: usize,
    /// The key the recovery unit holds already (a continued auto-init).
    vp: Option<Vp>,
    /// A continued auto-init: where it stopped.
    continues: Option<String>,
}

struct Unit {
    num: usize,
    cert: DeviceCertificate,
    counter: u64,
    /// Its commands of round 1 before the key's.
    setup: Vec<Command>,
    /// How far the key has come on it.
    key: Key,
}

impl Unit {
    fn id(&self) -> UnitId {
        self.cert.unit_id()
    }
}

fn bad(what: impl Into<String>) -> FileError {
    transfer::bad(KIND, what)
}

/// The kind of an initialized instance's declarative plan that makes its master key
/// (`tke plan --desired` with `master_key_present`): the units' administrator and
/// threshold changes, then the key as auto-init makes it.
pub const DESIRED_KEY: &str = "desired-key";

/// Decodes a unit's recorded setup commands (kind [`DESIRED_KEY`]): each an
/// administrator or threshold command for that unit, at consecutive counters from its
/// planned one.
fn setup_commands(u: &PlannedUnit, id: UnitId) -> Result<Vec<Command>, FileError> {
    let bad = |what: String| FileError::Params {
        kind: DESIRED_KEY,
        what: format!("crypto unit {}: {what}", u.num),
    };
    let mut out = Vec::new();
    for (i, h) in u.setup.iter().flatten().enumerate() {
        let der = hex::decode(h).map_err(|_| bad("a setup command is not hexadecimal".into()))?;
        let ac = tke_proto::AdminCommand::from_der(&der)
            .map_err(|e| bad(format!("a setup command does not decode: {e}")))?;
        let command = Command::from_wire(ac.command, ac.input.as_bytes())
            .map_err(|e| bad(format!("a setup command does not decode: {e}")))?;
        let expected_counter = u.counter.wrapping_add(i as u64).wrapping_add(1);
        if ac.unit_id != id || ac.counter != expected_counter {
            return Err(bad("a setup command is for another unit or counter".into()));
        }
        if !matches!(
            command,
            Command::AddAdmin(_) | Command::RemoveAdmin(_) | Command::SetThresholds { .. }
        ) {
            return Err(bad(format!(
                "{:?} is not an administrator or threshold command",
                command.id()
            )));
        }
        out.push(command);
    }
    Ok(out)
}

/// The parameters of `kind` ([`KIND`] or [`DESIRED_KEY`]).
fn parse_kind(kind: &'static str, params: &serde_json::Value) -> Result<Parsed, FileError> {
    let bad = |what: String| FileError::Params { kind, what };
    let unhex = |field: &str, text: &str| {
        hex::decode(text).map_err(|_| bad(format!("{field} is not hexadecimal")))
    };
    let p: AutoInitParams = parse_params(kind, params)?;
    let threshold =
        |n: u32, which: &str| Threshold::new(n).map_err(|e| bad(format!("{which}: {e}")));
    let sig = threshold(p.sig_threshold, "sig_threshold")?;
    let rev = threshold(p.rev_threshold, "rev_threshold")?;
    let admins = p
        .admins
        .iter()
        .enumerate()
        .map(|(i, a)| {
            AdminCertificate::from_der(&unhex("an administrator certificate", a)?)
                .map_err(|e| bad(format!("administrator certificate {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let infos: Vec<_> = admins.iter().map(admin_info).collect();
    if let Some(p) = admin_list_problems(&infos, sig.get().max(rev.get())).first() {
        return Err(bad(p.to_string()));
    }
    let ca = fleet_ca(KIND, &p.fleet_ca)?;
    let mut units: Vec<Unit> = Vec::with_capacity(p.units.len());
    for u in &p.units {
        let cert = device_certificate(KIND, u.num, &u.certificate, &ca)?;
        if cert.instance_id().uuid() != p.instance {
            return Err(bad(format!(
                "crypto unit {} belongs to service instance {}, not {}",
                u.num,
                cert.instance_id().uuid(),
                p.instance
            )));
        }
        if units.iter().any(|v| v.id() == cert.unit_id()) {
            return Err(bad(format!("crypto unit {} is listed twice", u.num)));
        }
        let mut key = None;
        let setup = if let Some(left) = &u.left {
            if kind == DESIRED_KEY {
                return Err(bad(format!(
                    "crypto unit {}: only auto-init continues an interrupted one",
                    u.num
                )));
            }
            key = Some(
                Key::ALL
                    .into_iter()
                    .find(|k| k.name() == left.key)
                    .ok_or_else(|| bad(format!("crypto unit {}: key {:?}", u.num, left.key)))?,
            );
            let mut list = Vec::new();
            if u.clear {
                list.push(Command::Zeroize);
            }
            for i in &left.install {
                let a = admins.get(*i).ok_or_else(|| {
                    bad(format!(
                        "crypto unit {}: there is no administrator {i} to install",
                        u.num
                    ))
                })?;
                list.push(Command::AddAdmin(a.clone()));
            }
            if left.thresholds {
                list.push(Command::SetThresholds {
                    signature: sig,
                    revocation: rev,
                });
            }
            list
        } else if kind == DESIRED_KEY {
            if u.clear {
                return Err(bad(format!(
                    "crypto unit {}: an initialized unit is never cleared",
                    u.num
                )));
            }
            setup_commands(u, cert.unit_id())?
        } else {
            if u.setup.is_some() {
                return Err(bad(format!(
                    "crypto unit {}: auto-init records no setup commands",
                    u.num
                )));
            }
            let mut list = Vec::new();
            if u.clear {
                list.push(Command::Zeroize);
            }
            list.extend(admins.iter().cloned().map(Command::AddAdmin));
            list.push(Command::SetThresholds {
                signature: sig,
                revocation: rev,
            });
            list
        };
        let is_recovery = cert.unit_id().uuid() == p.recovery;
        units.push(Unit {
            num: u.num,
            cert,
            counter: u.counter,
            setup,
            // A first run: the recovery unit generates, every other unit receives.
            key: key.unwrap_or(if is_recovery {
                Key::Generate
            } else {
                Key::Transfer
            }),
        });
    }
    let recovery = units
        .iter()
        .position(|u| u.id().uuid() == p.recovery && u.cert.unit_type() == UnitType::Recovery)
        .ok_or_else(|| bad("recovery is not a recovery unit of the file".to_owned()))?;
    let continued = p.units.iter().filter(|u| u.left.is_some()).count();
    if continued != 0 && continued != p.units.len() {
        return Err(bad(
            "either every unit or none says what is left on it".to_owned()
        ));
    }
    if (continued == 0) != p.continues.is_none() {
        return Err(bad(
            "continues goes with what is left on each unit".to_owned()
        ));
    }
    let vp =
        p.vp.as_deref()
            .map(|v| Vp::from_hex(v).map_err(|e| bad(format!("vp: {e}"))))
            .transpose()?;
    // Only the recovery unit generates; a key it holds already is the params' vp.
    let generates = units[recovery].key == Key::Generate;
    let other_generates = units
        .iter()
        .enumerate()
        .any(|(i, u)| i != recovery && u.key == Key::Generate);
    if other_generates || !matches!(units[recovery].key, Key::Generate | Key::Done) {
        return Err(bad("only the recovery unit generates the key".to_owned()));
    }
    if generates == vp.is_some() {
        return Err(bad(
            "vp is given exactly when the recovery unit holds the key already".to_owned(),
        ));
    }
    Ok(Parsed {
        sig,
        rev,
        admins,
        ca,
        units,
        recovery,
        vp,
        continues: p.continues,
    })
}

/// A unit's commands of a round, each at the next counter.
fn push_all(
    out: &mut Vec<UnitCommand>,
    u: &Unit,
    before: &[Round],
    commands: Vec<Command>,
) -> Result<(), FileError> {
    transfer::push_all(KIND, out, (u.num, u.id(), u.counter), before, commands)
}

impl Parsed {
    fn recovery(&self) -> &Unit {
        &self.units[self.recovery]
    }

    /// The units that receive the key by a transfer, in order.
    fn targets(&self) -> impl Iterator<Item = &Unit> {
        self.units.iter().filter(|u| u.key == Key::Transfer)
    }

    /// The key's verification pattern: the one the recovery unit held already, else its
    /// answer in round 1.
    fn vp(&self, first: &Round) -> Result<Vp, FileError> {
        if let Some(vp) = self.vp {
            return Ok(vp);
        }
        let r = self.recovery();
        let answer = first
            .answer(r.id(), CommandId::GenerateRandomMk, 0)
            .ok_or_else(|| answer_error(1, r.num, "the verification pattern is missing"))?;
        Vp::from_slice(answer)
            .map_err(|e| answer_error(1, r.num, format!("not a verification pattern: {e}")))
    }

    /// Each target's certified importer key (round 1's answers).
    fn importers(&self, first: &Round) -> Result<Vec<CertifiedImporter>, FileError> {
        self.targets()
            .map(|u| transfer::importer(first, u.num, &u.cert).map(|(certified, _)| certified))
            .collect()
    }

    /// Each target's envelope (round 2's answers, in order), checked: signed by the
    /// recovery unit under the fleet CA, for that target, holding the generated key.
    fn envelopes(&self, first: &Round, second: &Round) -> Result<Vec<SignedEnvelope>, FileError> {
        let r = self.recovery();
        let targets: Vec<(usize, UnitId)> = self.targets().map(|u| (u.num, u.id())).collect();
        transfer::envelopes(second, &self.ca, (r.num, r.id()), &targets, self.vp(first)?)
    }
}

impl Parsed {
    /// The rounds, in order: a first run has all three (one unit: the first only); a
    /// continued one those left.
    fn phases(&self) -> Vec<Phase> {
        let any = |f: &dyn Fn(&Unit) -> bool| self.units.iter().any(f);
        let mut out = Vec::new();
        if any(&|u| !u.setup.is_empty() || matches!(u.key, Key::Generate | Key::Transfer)) {
            out.push(Phase::Start);
        }
        if any(&|u| u.key == Key::Transfer) {
            out.push(Phase::Export);
        }
        if any(&|u| matches!(u.key, Key::Transfer | Key::Commit | Key::SetImmediate)) {
            out.push(Phase::Last);
        }
        out
    }

    fn rounds(&self) -> usize {
        self.phases().len()
    }

    /// The round after `before` (see the module documentation). The importer keys are
    /// answers of the first round and the envelopes of the second whenever there is a
    /// transfer (it has all three rounds).
    fn round(&self, before: &[Round]) -> Result<Round, FileError> {
        let p = self;
        let r = p.recovery();
        let mut commands = Vec::new();
        let phases = p.phases();
        let phase = phases
            .get(before.len())
            .ok_or_else(|| bad(format!("the ceremony has {} rounds", phases.len())))?;
        match (phase, before) {
            (Phase::Start, _) => {
                for u in &p.units {
                    let mut list = u.setup.clone();
                    match u.key {
                        Key::Generate => list.push(Command::GenerateRandomMk),
                        Key::Transfer => list.push(Command::GenerateImporter),
                        _ => {}
                    }
                    if !list.is_empty() {
                        push_all(&mut commands, u, before, list)?;
                    }
                }
            }
            (Phase::Export, [first]) => {
                let importers = p.importers(first)?;
                let list = transfer::exports(
                    KIND,
                    Register::Current,
                    p.targets().map(|u| &u.cert).zip(importers),
                )?;
                push_all(&mut commands, r, before, list)?;
            }
            (Phase::Last, _) => {
                let vp = p.key(before)?;
                let mut envelopes = match before {
                    [first, second] if p.targets().next().is_some() => {
                        p.envelopes(first, second)?.into_iter()
                    }
                    _ => Vec::new().into_iter(),
                };
                for u in &p.units {
                    let mut list = Vec::new();
                    if u.key == Key::Transfer {
                        let e = envelopes.next().ok_or_else(|| {
                            answer_error(2, u.num, "no envelope was exported to it")
                        })?;
                        list.push(Command::ImportMk(Box::new(e)));
                    }
                    if matches!(u.key, Key::Transfer | Key::Commit) {
                        list.push(Command::CommitMk(vp));
                    }
                    if matches!(u.key, Key::Transfer | Key::Commit | Key::SetImmediate) {
                        list.push(Command::SetImmediate(vp));
                        push_all(&mut commands, u, before, list)?;
                    }
                }
            }
            _ => return Err(bad("the export follows the importer keys of round 1")),
        }
        Ok(Round::planned(commands))
    }

    /// The key: held already, else generated in the first round of `rounds`.
    fn key(&self, rounds: &[Round]) -> Result<Vp, FileError> {
        match (self.vp, rounds.first()) {
            (Some(vp), _) => Ok(vp),
            (None, Some(first)) => self.vp(first),
            (None, None) => Err(bad("the key is generated in round 1")),
        }
    }

    fn check_answers(&self, before: &[Round], round: &Round) -> Result<(), FileError> {
        match (self.phases().get(before.len()), before) {
            (Some(Phase::Start), _) => {
                self.vp(round)?;
                self.importers(round)?;
            }
            (Some(Phase::Export), [first]) => {
                self.envelopes(first, round)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Every unit: exactly the administrators and thresholds asked, the generated key
    /// current, nothing in the new register, no importer key waiting.
    fn postcondition(&self, rounds: &[Round]) -> Result<Vec<(UnitId, Expected)>, FileError> {
        let vp = self.key(rounds)?;
        let expected = Expected {
            sig_threshold: self.sig.get(),
            rev_threshold: self.rev.get(),
            current_register: RegisterStatus {
                state: RegisterState::Valid,
                vp: Some(vp),
            },
            ..Expected::imprint(self.admins.iter().map(admin_info).collect())
        };
        Ok(self
            .units
            .iter()
            .map(|u| (u.id(), expected.clone()))
            .collect())
    }
}

/// A kind whose rounds are auto-init's: auto-init itself ([`AUTO_INIT_ROUNDS`]) and the
/// declarative plan that makes an initialized instance's master key
/// ([`DESIRED_KEY_ROUNDS`]). They differ in the parameters' setup commands only.
pub struct KeyRounds {
    kind: &'static str,
    title: &'static str,
}

/// Auto-init as a [`MultiRound`] ceremony (kind [`KIND`]).
pub static AUTO_INIT_ROUNDS: KeyRounds = KeyRounds {
    kind: KIND,
    title: "Initializing a service instance",
};

/// The declarative plan of an initialized instance whose units hold no master key
/// (kind [`DESIRED_KEY`]): round 1 holds each unit's administrator and threshold changes,
/// then auto-init's key commands; rounds 2 and 3 are auto-init's.
pub static DESIRED_KEY_ROUNDS: KeyRounds = KeyRounds {
    kind: DESIRED_KEY,
    title: "Reaching the desired state (administrators, thresholds, master key)",
};

impl MultiRound for KeyRounds {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn title(&self) -> &'static str {
        self.title
    }

    fn rounds(&self, params: &serde_json::Value) -> Result<usize, FileError> {
        Ok(parse_kind(self.kind, params)?.rounds())
    }

    fn round(&self, params: &serde_json::Value, before: &[Round]) -> Result<Round, FileError> {
        parse_kind(self.kind, params)?.round(before)
    }

    fn check_answers(
        &self,
        params: &serde_json::Value,
        before: &[Round],
        round: &Round,
    ) -> Result<(), FileError> {
        parse_kind(self.kind, params)?.check_answers(before, round)
    }

    fn postcondition(
        &self,
        params: &serde_json::Value,
        rounds: &[Round],
    ) -> Result<Vec<(UnitId, Expected)>, FileError> {
        parse_kind(self.kind, params)?.postcondition(rounds)
    }

    fn continues(&self, params: &serde_json::Value) -> Option<String> {
        parse_kind(self.kind, params).ok()?.continues
    }
}

/// Plans the initialization of `instance` as a ceremony file: every unit queried and
/// every problem found as the direct `auto-init` finds them (the instance exists, has a
/// recovery unit, every unit is in imprint mode; the administrators and thresholds fit),
/// nothing signed or sent. The first recovery unit generates the key. Returns the file
/// with its first round.
///
/// An instance an interrupted auto-init left part-way (an interrupted `tke apply` or
/// direct run: units out of imprint mode with exactly these administrators and
/// thresholds) is continued: the file holds the rounds left, from what each unit holds
/// as `auto-init --resume` finds it, and says where the ceremony stopped. Units with
/// other administrators or thresholds are refused.
///
/// # Errors
/// [`PlanError::Ceremony`] with [`CeremonyError::Problems`] listing every problem found.
pub fn plan_auto_init(
    client: &Client,
    instance: &InstanceId,
    sig_threshold: Threshold,
    rev_threshold: Threshold,
    admins: &[AdminCertificate],
) -> Result<CeremonyFile, PlanError> {
    let wanted = Wanted {
        instance,
        sig_threshold,
        rev_threshold,
        admins,
    };
    let survey = survey(client, instance);
    let part_way = survey
        .problems
        .iter()
        .any(|p| matches!(p, Problem::NotInImprintMode { .. }));
    if part_way {
        match wanted.continued(client) {
            Ok(Some(file)) => return Ok(file),
            Ok(None) => {}
            // Why it cannot be continued, after the units not in imprint mode (what a
            // first run finds).
            Err(PlanError::Ceremony(CeremonyError::Problems(why))) => {
                let mut problems = survey.problems;
                problems.extend(why);
                return Err(CeremonyError::Problems(problems).into());
            }
            Err(e) => return Err(e),
        }
    }
    wanted.plan(&AUTO_INIT_ROUNDS, survey, client, |_, s| {
        (!s.admins.is_empty(), None)
    })
}

/// What a key-rounds plan sets up.
struct Wanted<'a> {
    instance: &'a InstanceId,
    sig_threshold: Threshold,
    rev_threshold: Threshold,
    admins: &'a [AdminCertificate],
}

impl Wanted<'_> {
    /// The file that continues an interrupted auto-init of the instance (some units out
    /// of imprint mode), from what is left on each unit; `None` when nothing is (the
    /// instance is initialized: the plan refuses it as any first run).
    fn continued(&self, client: &Client) -> Result<Option<CeremonyFile>, PlanError> {
        let found = interrupted(client, self.instance)?;
        let resume = AutoInitResume {
            instance: self.instance.clone(),
            sig_threshold: self.sig_threshold,
            rev_threshold: self.rev_threshold,
            admins: self.admins.to_vec(),
            signers: Vec::new(),
            units: found.units,
            recovery: found.recovery,
            done: Vec::new(),
            vp: found.vp,
        };
        let infos: Vec<_> = self.admins.iter().map(admin_info).collect();
        let needed = self.sig_threshold.get().max(self.rev_threshold.get());
        let mut problems = admin_list_problems(&infos, needed);
        let mut left = resume.left(client);
        problems.extend(left.problems);
        let (Some(recovery), true) = (left.recovery, problems.is_empty()) else {
            return Err(CeremonyError::Problems(problems).into());
        };
        let nothing = |w: &crate::auto_init::UnitWork<'_>| {
            !w.clear && w.install.is_empty() && !w.thresholds && w.key == KeyStage::Done
        };
        if left.work.iter().all(nothing) {
            return Ok(None);
        }
        left.work.sort_by_key(|w| w.unit.num);
        let generated = left
            .work
            .iter()
            .any(|w| w.unit.id() == recovery.id() && w.key == KeyStage::Done);
        let vp = left.vp.filter(|_| generated);
        let units = left
            .work
            .iter()
            .map(|w| PlannedUnit {
                num: w.unit.num,
                certificate: hex::encode(w.unit.certificate.der()),
                counter: w.status.counter,
                clear: w.clear,
                setup: None,
                left: Some(UnitLeft {
                    install: w.install.clone(),
                    thresholds: w.thresholds,
                    key: Key::of(w.key).name().to_owned(),
                }),
            })
            .collect();
        let params = AutoInitParams {
            instance: self.instance.0.clone(),
            sig_threshold: u32::from(self.sig_threshold.get()),
            rev_threshold: u32::from(self.rev_threshold.get()),
            admins: self.admins.iter().map(|a| hex::encode(a.der())).collect(),
            fleet_ca: hex::encode(client.ca_of(recovery).der()),
            recovery: recovery.id().uuid(),
            units,
            vp: vp.map(|v| v.to_hex()),
            continues: Some(stopped(&left.work, recovery, vp)),
        };
        Ok(Some(CeremonyFile::multi_round(&AUTO_INIT_ROUNDS, &params)?))
    }

    /// The file of `rounds` for the surveyed units, each unit's `clear` and setup
    /// commands from `unit`; every problem of the survey and of the administrators
    /// reported first.
    fn plan(
        &self,
        rounds: &'static KeyRounds,
        survey: crate::auto_init::Survey<'_>,
        client: &Client,
        unit: impl Fn(&KnownUnit, &UnitStatus) -> (bool, Option<Vec<String>>),
    ) -> Result<CeremonyFile, PlanError> {
        let infos: Vec<_> = self.admins.iter().map(admin_info).collect();
        let needed = self.sig_threshold.get().max(self.rev_threshold.get());
        let mut problems = admin_list_problems(&infos, needed);
        problems.extend(survey.problems);
        let (Some(recovery), true) = (survey.recovery, problems.is_empty()) else {
            return Err(CeremonyError::Problems(problems).into());
        };
        // One fleet CA certified the instance's units, the recovery unit among them.
        let ca = client.ca_of(recovery);
        let mut units = Vec::with_capacity(survey.units.len());
        for (u, s) in survey.units.iter().zip(&survey.statuses) {
            let (clear, setup) = unit(u, s);
            units.push(PlannedUnit {
                num: u.num,
                certificate: hex::encode(u.certificate.der()),
                counter: s.counter,
                clear,
                setup,
                left: None,
            });
        }
        let params = AutoInitParams {
            instance: self.instance.0.clone(),
            sig_threshold: u32::from(self.sig_threshold.get()),
            rev_threshold: u32::from(self.rev_threshold.get()),
            admins: self.admins.iter().map(|a| hex::encode(a.der())).collect(),
            fleet_ca: hex::encode(ca.der()),
            recovery: recovery.id().uuid(),
            units,
            vp: None,
            continues: None,
        };
        Ok(CeremonyFile::multi_round(rounds, &params)?)
    }
}

/// Where an interrupted auto-init stopped, for the approvers: `continues the auto-init
/// that stopped part-way: the master key 0123456789abcdef... is in recovery crypto unit 3;
/// to transfer: crypto units 1, 2; done: crypto unit 4`.
fn stopped(
    work: &[crate::auto_init::UnitWork<'_>],
    recovery: &KnownUnit,
    vp: Option<Vp>,
) -> String {
    let key = match vp {
        Some(vp) => format!(
            "the master key {}... is in recovery crypto unit {}",
            &vp.to_hex()[..16],
            recovery.num
        ),
        None => format!(
            "recovery crypto unit {} has not generated the master key yet",
            recovery.num
        ),
    };
    let mut parts = vec![key];
    let setup: Vec<String> = work
        .iter()
        .filter(|w| w.clear || !w.install.is_empty() || w.thresholds)
        .map(|w| w.unit.num.to_string())
        .collect();
    if !setup.is_empty() {
        parts.push(format!(
            "administrators or thresholds to set: crypto unit(s) {}",
            setup.join(", ")
        ));
    }
    for (stage, what) in [
        (KeyStage::Transfer, "to transfer the key to"),
        (KeyStage::Commit, "to commit"),
        (KeyStage::SetImmediate, "to set immediate"),
        (KeyStage::Done, "holding the key"),
    ] {
        let nums: Vec<String> = work
            .iter()
            .filter(|w| w.key == stage && w.unit.id() != recovery.id())
            .map(|w| w.unit.num.to_string())
            .collect();
        if !nums.is_empty() {
            parts.push(format!("{what}: crypto unit(s) {}", nums.join(", ")));
        }
    }
    format!(
        "continues the auto-init that stopped part-way: {}",
        parts.join("; ")
    )
}

/// Plans the declarative change of an initialized `instance` whose units hold no master
/// key to `admins` and both thresholds with a master key present: round 1 holds each
/// unit's administrator and threshold commands of `setup` (the single-round plan of that
/// change, `None` when the units hold it already), then the key's commands as auto-init
/// makes them; rounds 2 and 3 are auto-init's. Every unit is queried first: it must be
/// reachable and out of imprint mode, its registers Empty and no importer key waiting;
/// the instance must have a recovery unit (the first generates the key).
///
/// # Errors
/// [`PlanError::Ceremony`] with [`CeremonyError::Problems`] listing every problem found.
pub fn plan_desired_key(
    client: &Client,
    instance: &InstanceId,
    sig_threshold: Threshold,
    rev_threshold: Threshold,
    admins: &[AdminCertificate],
    setup: Option<&CeremonyFile>,
) -> Result<CeremonyFile, PlanError> {
    let survey = survey_with(client, instance, |u, s| {
        let rule = if s.imprint_mode() {
            Some(crate::Rule::ImprintMode)
        } else if s.current_register.state != RegisterState::Empty {
            Some(crate::Rule::CurrentRegister {
                found: s.current_register.state,
                needed: &[RegisterState::Empty],
            })
        } else if s.new_register.state != RegisterState::Empty {
            Some(crate::Rule::NewRegister {
                found: s.new_register.state,
                needed: &[RegisterState::Empty],
            })
        } else {
            None
        };
        rule.map(|rule| Problem::Precondition {
            num: u.num,
            unit: u.id(),
            rule,
        })
    });
    let wanted = Wanted {
        instance,
        sig_threshold,
        rev_threshold,
        admins,
    };
    wanted.plan(&DESIRED_KEY_ROUNDS, survey, client, |u, _| {
        let commands = setup
            .iter()
            .flat_map(|f| f.commands())
            .filter(|(_, c)| c.unit() == u.id())
            .map(|(_, c)| hex::encode(&c.bytes))
            .collect();
        (false, Some(commands))
    })
}
