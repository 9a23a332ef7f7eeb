//! `tke plan cryptounit-mk-load`: loading the new master key register from master key
//! parts as a ceremony file of two rounds.
//!
//! 1. Every selected unit makes a single-use importer key (`generateImporter`); the
//!    planner needs only the parts' verification patterns, which the part files show
//!    without a password.
//! 2. Every unit loads the parts sealed to its importer key (`importMkParts`). Sealing
//!    needs the parts themselves, so the planner makes this round
//!    ([`seal_round`]: the part files and their owners' passwords, as the direct command
//!    needs them), not `tke apply`. The sealed parts are public: only the unit's importer
//!    key opens them. Readers of the file check offline what they can: each unit gets its
//!    parts sealed to the importer key it answered in round 1 (certified by its device
//!    key), in the planned order, with the planned verification patterns; the unit checks
//!    each part's verification pattern again when it opens it.
//!
//! After round 2 every unit holds the new key, Full Uncommitted; all must have answered
//! one verification pattern. Commit and set immediate are single-round plans.

use serde::{Deserialize, Serialize};
use tke_client::{Client, KnownUnit};
use tke_proto::{
    parts::{self, MasterKeyPart},
    transport::{CertifiedImporter, ImporterKey},
    Command, CommandId, DeviceCertificate, ProtoError, UnitId, Vp,
};

use super::{
    counter_after, device_certificate, fleet_ca, parse_params,
    transfer::{self, answer_error},
    CeremonyFile, FileError, MultiRound, PlanError, Round, UnitCommand,
};
use crate::{
    mk_load::{part_problems, unit_rule, STEP},
    plan::Planner,
    postcondition::Expected,
    CeremonyError, Problem,
};

/// The `kind` of a key-part load file.
pub const KIND: &str = "mk-load";

/// What the planner runs to make round 2.
const SEAL: &str = "the planner seals the master key parts to the units' importer keys with `tke plan cryptounit-mk-load --seal FILE` (it needs the part files and their passwords), then the administrators approve round 2";

/// The parameters of a key-part load file. Public.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkLoadParams {
    /// The parts' verification patterns (hex), in load order.
    pub parts: Vec<String>,
    /// The fleet CA certificate (hex of the DER) the units' certificates chain to.
    pub fleet_ca: String,
    /// The units to load, in the order selected.
    pub units: Vec<LoadUnit>,
}

/// One unit of a key-part load file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadUnit {
    /// Its `CRYPTO UNIT NUM` when planned.
    pub num: usize,
    /// Its device certificate (hex of the DER).
    pub certificate: String,
    /// Its transaction counter when planned.
    pub counter: u64,
}

struct Parsed {
    parts: Vec<Vp>,
    units: Vec<(usize, DeviceCertificate, u64)>,
}

fn bad(what: impl Into<String>) -> FileError {
    transfer::bad(KIND, what)
}

fn parse(params: &serde_json::Value) -> Result<Parsed, FileError> {
    let p: MkLoadParams = parse_params(KIND, params)?;
    let parts = p
        .parts
        .iter()
        .map(|v| {
            hex::decode(v)
                .ok()
                .and_then(|b| Vp::from_slice(&b).ok())
                .ok_or_else(|| bad(format!("{v:?} is not a verification pattern")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(problem) = part_problems(&parts).first() {
        return Err(bad(problem.to_string()));
    }
    let ca = fleet_ca(KIND, &p.fleet_ca)?;
    let mut units: Vec<(usize, DeviceCertificate, u64)> = Vec::with_capacity(p.units.len());
    for u in &p.units {
        let cert = device_certificate(KIND, u.num, &u.certificate, &ca)?;
        if units.iter().any(|(_, c, _)| c.unit_id() == cert.unit_id()) {
            return Err(bad(format!("crypto unit {} is listed twice", u.num)));
        }
        units.push((u.num, cert, u.counter));
    }
    if units.is_empty() {
        return Err(bad("no crypto unit"));
    }
    Ok(Parsed { parts, units })
}

impl Parsed {
    /// Each unit's importer key, answered in round 1 and certified by its device key.
    fn importers(&self, first: &Round) -> Result<Vec<(CertifiedImporter, ImporterKey)>, FileError> {
        self.units
            .iter()
            .map(|(num, cert, _)| transfer::importer(first, *num, cert))
            .collect()
    }
}

/// A key-part load as a [`MultiRound`] ceremony.
pub struct MkLoadRounds;

impl MultiRound for MkLoadRounds {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn title(&self) -> &'static str {
        "Loading the new master key register from master key parts"
    }

    fn rounds(&self, params: &serde_json::Value) -> Result<usize, FileError> {
        parse(params).map(|_| 2)
    }

    fn round(&self, params: &serde_json::Value, before: &[Round]) -> Result<Round, FileError> {
        let p = parse(params)?;
        if !before.is_empty() {
            return Err(bad(
                "round 2 holds the sealed parts: only the planner, who opens them, makes it",
            ));
        }
        p.units
            .iter()
            .map(|(num, cert, counter)| {
                let id = cert.unit_id();
                UnitCommand::build(
                    *num,
                    id,
                    counter_after(*counter, id, before),
                    Command::GenerateImporter,
                )
                .map_err(|e| bad(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Round::planned)
    }

    fn built_by_apply(&self, _params: &serde_json::Value, before: &[Round]) -> bool {
        before.is_empty()
    }

    fn next_by(&self) -> &'static str {
        SEAL
    }

    fn check_round(
        &self,
        params: &serde_json::Value,
        before: &[Round],
        round: &Round,
    ) -> Result<(), FileError> {
        let [first] = before else {
            return super::same_commands(1, round, &self.round(params, before)?);
        };
        // Round 2: one importMkParts per unit, at its next counter, with the planned
        // parts sealed to the importer key it answered.
        let p = parse(params)?;
        let importers = p.importers(first)?;
        let differs = |num: usize| FileError::RoundDiffers { round: 2, num };
        if round.commands.len() != p.units.len() {
            return Err(differs(p.units.first().map_or(0, |u| u.0)));
        }
        for ((c, (num, cert, counter)), (_, importer)) in
            round.commands.iter().zip(&p.units).zip(&importers)
        {
            let id = cert.unit_id();
            let Command::ImportMkParts(req) = &c.command else {
                return Err(differs(*num));
            };
            let sealed_right = c.num == *num
                && c.unit() == id
                && c.admin_command.counter == counter_after(*counter, id, before)
                && req.importer_key_id == importer.key_id
                && req.parts.len() == p.parts.len()
                && req
                    .parts
                    .iter()
                    .zip(&p.parts)
                    .all(|(s, vp)| s.vp == *vp && s.shape_ok());
            if !sealed_right {
                return Err(differs(*num));
            }
        }
        Ok(())
    }

    fn check_answers(
        &self,
        params: &serde_json::Value,
        before: &[Round],
        round: &Round,
    ) -> Result<(), FileError> {
        let p = parse(params)?;
        if before.is_empty() {
            return p.importers(round).map(|_| ());
        }
        // Every unit answered the verification pattern of the one key the parts make.
        let mut first: Option<Vp> = None;
        for (num, cert, _) in &p.units {
            let vp = round
                .answer(cert.unit_id(), CommandId::ImportMkParts, 0)
                .and_then(|a| Vp::from_slice(a).ok())
                .ok_or_else(|| answer_error(2, *num, "not a verification pattern"))?;
            if first.is_some_and(|f| f != vp) {
                return Err(answer_error(
                    2,
                    *num,
                    "another verification pattern than the first crypto unit's",
                ));
            }
            first = Some(vp);
        }
        Ok(())
    }

    fn postcondition(
        &self,
        _params: &serde_json::Value,
        _rounds: &[Round],
    ) -> Result<Vec<(UnitId, Expected)>, FileError> {
        // Each round's check covers each unit's whole state (its new register Full
        // Uncommitted with the value it answered, nothing else changed), and
        // `check_answers` that every unit answered one value.
        Ok(Vec::new())
    }
}

/// Plans loading the parts whose verification patterns are `parts` (in load order) into
/// `units`, as a ceremony file whose first round is each unit's importer key: every unit
/// queried and every problem found as the direct `cryptounit-mk-load` finds them (2 or 3
/// different parts; each unit reachable, not a recovery unit, out of imprint mode, its
/// new register Empty). Nothing is signed or sent.
///
/// # Errors
/// [`PlanError::Ceremony`] with [`CeremonyError::Problems`] listing every problem found.
pub fn plan_mk_load(
    client: &Client,
    units: Vec<&KnownUnit>,
    parts: &[Vp],
) -> Result<CeremonyFile, PlanError> {
    let mut planner = Planner::start(client, STEP, units, Vec::new());
    for p in part_problems(parts) {
        planner.problem(p);
    }
    let mut entries = Vec::new();
    let mut ca = None;
    for (unit, status) in planner.reachable() {
        if let Some(rule) = unit_rule(unit, &status) {
            planner.problem(Problem::Precondition {
                num: unit.num,
                unit: unit.id(),
                rule,
            });
            continue;
        }
        ca = ca.or(Some(client.ca_of(unit)));
        entries.push(LoadUnit {
            num: unit.num,
            certificate: hex::encode(unit.certificate.der()),
            counter: status.counter,
        });
    }
    planner.check()?;
    let ca = ca.ok_or(CeremonyError::Problems(vec![Problem::NoUnits]))?;
    let params = MkLoadParams {
        parts: parts.iter().map(Vp::to_hex).collect(),
        fleet_ca: hex::encode(ca.der()),
        units: entries,
    };
    Ok(CeremonyFile::multi_round(&MkLoadRounds, &params)?)
}

/// The verification patterns of the parts a key-part load file was planned with, in
/// load order (to find the part files), when round 2 is to be sealed.
///
/// # Errors
/// [`FileError::Params`] when the file is not a key-part load waiting for round 2.
pub fn parts_to_seal(file: &CeremonyFile) -> Result<Vec<Vp>, FileError> {
    match (&file.ceremony, file.awaits_planner()) {
        (Some(c), Some((2, _))) if c.kind == KIND => Ok(parse(&c.params)?.parts),
        _ => Err(bad(
            "the file is not a key-part load whose round 1 is applied and round 2 not made yet",
        )),
    }
}

/// Makes round 2 of a key-part load file: `parts` (the planned ones, in load order, and
/// independent) sealed to each unit's importer key from round 1, after checking its
/// certification by the unit's device key. The parts never leave this function unsealed.
///
/// # Errors
/// [`FileError::Params`] when the file does not wait for round 2 or the parts are not
/// the planned ones; [`FileError::Answer`] for an importer key that is not certified;
/// [`PlanError::Ceremony`] with [`Problem::PartsNotIndependent`].
pub fn seal_round(file: &mut CeremonyFile, parts: &[MasterKeyPart]) -> Result<(), PlanError> {
    let planned = parts_to_seal(file)?;
    let given: Vec<Vp> = parts.iter().map(MasterKeyPart::vp).collect();
    if given != planned {
        return Err(
            CeremonyError::Problems(vec![Problem::PartsNotPlanned { planned, given }]).into(),
        );
    }
    if let Err(e) = parts::check_independent(parts) {
        return Err(CeremonyError::Problems(vec![match e {
            ProtoError::PartCount { count } => Problem::PartCount { count },
            _ => Problem::PartsNotIndependent,
        }])
        .into());
    }
    let Some(c) = &file.ceremony else {
        return Err(bad("not a multi-round file").into());
    };
    let p = parse(&c.params)?;
    let first = file
        .rounds
        .first()
        .ok_or_else(|| bad("the file has no round"))?;
    let importers = p.importers(first)?;
    let mut commands = Vec::with_capacity(p.units.len());
    for ((num, cert, counter), (certified, _)) in p.units.iter().zip(&importers) {
        let request = parts::seal_parts(parts, certified, cert)
            .map_err(|e| answer_error(1, *num, e.to_string()))?;
        let id = cert.unit_id();
        commands.push(
            UnitCommand::build(
                *num,
                id,
                counter_after(*counter, id, &file.rounds),
                Command::ImportMkParts(Box::new(request)),
            )
            .map_err(|e| bad(e.to_string()))?,
        );
    }
    file.rounds.push(Round::planned(commands));
    Ok(())
}
