//! Loading the new master key register from master key parts (`cryptounit-mk-load`).
//!
//! The master key is the XOR of 2 or 3 parts, each held by a different person in a
//! password-protected file. Each selected unit makes a single-use importer key
//! (`generateImporter`, one signature); the workstation verifies the importer key's
//! certification against the unit's device certificate, seals each part to it
//! ([`tke_proto::parts::seal_parts`]) and sends the sealed parts (`importMkParts`, one
//! signature, the same administrator may give both); the unit combines them into its new
//! register, Full Uncommitted, and answers the verification pattern of the result.
//!
//! The load is checked in two stages, as the operator works:
//!
//! 1. [`MkLoad::plan`], with the parts' verification patterns, which part files show
//!    without a password: 2 or 3 parts, no two alike; every unit reachable, not a recovery
//!    unit, out of imprint mode, its new register Empty; a key that may sign installed on
//!    it. Every problem is reported at once, before any password is asked.
//! 2. [`LoadPlan::with_parts`], with the parts their owners opened: they are the parts
//!    planned, and they are independent (a zero part, or three parts whose XOR is zero,
//!    would make a key known to fewer people than the parts' owners). The workstation
//!    never combines the parts: the key exists only inside the units, so whether it equals
//!    a unit's current master key is the unit's check (it refuses with 102/1, changing
//!    nothing but its counter and its used-up importer key: a rotation needs at least one
//!    new part).
//!
//! Nothing is sent to any unit before both stages passed. [`ReadyLoad::execute`] then
//! runs both commands on every unit, units in parallel, at the counters the plan read
//! (the shared [`Plan`]), checks that every unit answered one and the same verification
//! pattern, and checks every unit's full post-condition: its new register Full
//! Uncommitted with that value, no importer key pending, everything else as it was. The
//! parts are zeroized when the plan is dropped, at the end of the execution.
//!
//! ```
//! use std::sync::Arc;
//! use tke_ceremony::{AutoInit, MkLoad, Silent};
//! use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
//! use tke_proto::{parts::MasterKeyPart, AdminInfo, Threshold, UnitType};
//! use tke_sigkey::Signer;
//! use tke_test_support::MemSigner;
//!
//! let dir = tempfile::tempdir()?;
//! let fleet = EmbeddedFleet::create(dir.path(), FleetSpec::default())?;
//! let ca = fleet.ca().clone();
//! let client = Client::connect(vec![(Arc::new(fleet) as Arc<dyn Transport>, ca)])?;
//! let alice = MemSigner::new("alice");
//! let one = Threshold::new(1)?;
//! AutoInit {
//!     instance: client.instances()[0].clone(),
//!     sig_threshold: one,
//!     rev_threshold: one,
//!     admins: vec![&alice as &dyn Signer],
//! }
//! .plan(&client)?
//! .execute(&Silent)?;
//!
//! // Two parts, loaded into the operational units (recovery units load no parts).
//! let parts = vec![MasterKeyPart::random(), MasterKeyPart::random()];
//! let operational: Vec<_> = client
//!     .units()
//!     .iter()
//!     .filter(|u| u.unit_type() == UnitType::Operational)
//!     .collect();
//! let plan = MkLoad {
//!     units: operational,
//!     parts: parts.iter().map(MasterKeyPart::vp).collect(),
//!     keys: vec![AdminInfo { ski: alice.ski(), name: alice.name().clone() }],
//! }
//! .plan(&client)?;
//! // ... the operator is shown the plan and opens the parts ...
//! let ready = plan.with_parts(parts)?;
//! let report = ready.execute(&[&alice as &dyn Signer])?;
//! assert_eq!(report.units, [1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Arc;

use tke_client::{Client, ClientError, KnownUnit};
use tke_proto::{
    der::Decode,
    parts::{self, MasterKeyPart},
    transport::CertifiedImporter,
    AdminInfo, Command, CommandId, ProtoError, RegisterState, RegisterStatus, UnitStatus, UnitType,
    Vp,
};
use tke_sigkey::Signer;

use crate::{
    plan::{FromPrevious, Plan, PlannedCommand, Planner, ToSend, UnitPlan},
    postcondition::Expected,
    signers::Quorum,
    CeremonyError, Problem, Rule,
};

/// The load's name in messages and errors.
pub const STEP: &str = "Loading the new master key register";

/// What needs the signatures, in [`Problem::TooFewSigners`].
const ACTION: &str = "loading master key parts (an importer key, then the parts)";

/// The state of the new register a load needs.
const EMPTY: &[RegisterState] = &[RegisterState::Empty];

/// What the operator asked for: the parts to load into the new register of the selected
/// units.
pub struct MkLoad<'c> {
    /// The selected units.
    pub units: Vec<&'c KnownUnit>,
    /// The verification pattern of each part, in load order, as the part files show them.
    pub parts: Vec<Vp>,
    /// The signature keys that may sign, by administrator name and SKI, in order of
    /// preference: each unit takes the first one installed on it.
    pub keys: Vec<AdminInfo>,
}

/// One unit of a load: its state, and who signs its two commands.
#[derive(Clone, Debug)]
pub struct LoadUnit<'c> {
    /// The unit.
    pub unit: &'c KnownUnit,
    /// Its state when the load was planned.
    pub status: UnitStatus,
    /// The administrator who signs both its importer key and its parts (one signature
    /// each).
    pub signers: Vec<AdminInfo>,
}

/// A load whose units and parts passed the first stage of checks; the parts' values are
/// checked by [`LoadPlan::with_parts`].
pub struct LoadPlan<'c> {
    planner: Planner<'c>,
    parts: Vec<Vp>,
    units: Vec<LoadUnit<'c>>,
}

/// A load checked in full, ready to run once.
pub struct ReadyLoad<'c> {
    plan: Plan<'c>,
}

/// What a load did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// The `CRYPTO UNIT NUM` of every unit loaded, in the order given.
    pub units: Vec<usize>,
    /// The verification pattern of the new master key, which every unit answered and now
    /// holds in its new register.
    pub vp: Vp,
}

impl<'c> MkLoad<'c> {
    /// Queries every unit and checks the parts' count and verification patterns, each
    /// unit's state, and who signs on each unit. Nothing is changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found: not 2 or 3 parts
    /// ([`Problem::PartCount`]), two parts alike ([`Problem::SameParts`]), no unit
    /// ([`Problem::NoUnits`]), units that cannot be queried ([`Problem::Unreachable`]),
    /// recovery units ([`Rule::RecoveryUnitLoad`]), units in imprint mode
    /// ([`Rule::ImprintMode`]), new registers not Empty ([`Rule::NewRegister`]), and units
    /// on which none of the keys that may sign is installed ([`Problem::TooFewSigners`]).
    pub fn plan(self, client: &'c Client) -> Result<LoadPlan<'c>, CeremonyError> {
        let mut planner = Planner::start(client, STEP, self.units, self.keys);
        for p in part_problems(&self.parts) {
            planner.problem(p);
        }
        let mut units = Vec::new();
        for (unit, status) in planner.reachable() {
            if let Some(rule) = unit_rule(unit, &status) {
                planner.problem(Problem::Precondition {
                    num: unit.num,
                    unit: unit.id(),
                    rule,
                });
                continue;
            }
            let signers = planner.signers(unit, &status, &status.admins, Quorum::One, ACTION);
            units.push(LoadUnit {
                unit,
                status,
                signers,
            });
        }
        Ok(LoadPlan {
            planner: planner.check()?,
            parts: self.parts,
            units,
        })
    }
}

/// What is wrong with loading parts of these verification patterns: not 2 or 3, or two
/// alike.
pub(crate) fn part_problems(parts: &[Vp]) -> Vec<Problem> {
    let mut problems = Vec::new();
    if parts::check_count(parts.len()).is_err() {
        problems.push(Problem::PartCount { count: parts.len() });
    }
    for (i, a) in parts.iter().enumerate() {
        for (j, b) in parts.iter().enumerate().skip(i + 1) {
            if a == b {
                problems.push(Problem::SameParts {
                    first: i + 1,
                    second: j + 1,
                    vp: *a,
                });
            }
        }
    }
    problems
}

/// The rule a unit in state `status` breaks for a load: a recovery unit, imprint mode, a
/// new register not Empty.
pub(crate) fn unit_rule(unit: &KnownUnit, status: &UnitStatus) -> Option<Rule> {
    if unit.unit_type() == UnitType::Recovery {
        Some(Rule::RecoveryUnitLoad)
    } else if status.imprint_mode() {
        Some(Rule::ImprintMode)
    } else if status.new_register.state != RegisterState::Empty {
        Some(Rule::NewRegister {
            found: status.new_register.state,
            needed: EMPTY,
        })
    } else {
        None
    }
}

impl<'c> LoadPlan<'c> {
    /// The units, in the order given, with their state and who signs.
    pub fn units(&self) -> &[LoadUnit<'c>] {
        &self.units
    }

    /// The verification patterns of the parts planned, in load order.
    pub fn parts(&self) -> &[Vp] {
        &self.parts
    }

    /// The keys the load needs, each once, in the order of preference given.
    pub fn keys_needed(&self) -> Vec<&AdminInfo> {
        let mut needed: Vec<&AdminInfo> = Vec::new();
        for k in self.planner.keys() {
            let used = self
                .units
                .iter()
                .any(|u| u.signers.iter().any(|s| s.ski == k.ski));
            if used && !needed.iter().any(|n| n.ski == k.ski) {
                needed.push(k);
            }
        }
        needed
    }

    /// Checks the parts' values and makes the plan that loads them: the parts are the
    /// ones planned, in the same order, and independent. Their combination is never
    /// computed here; the parts are kept, to be sealed to each unit's importer key, until
    /// the plan is dropped.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`]: [`Problem::PartsNotPlanned`],
    /// [`Problem::PartsNotIndependent`].
    pub fn with_parts(self, parts: Vec<MasterKeyPart>) -> Result<ReadyLoad<'c>, CeremonyError> {
        let mut planner = self.planner;
        let given: Vec<Vp> = parts.iter().map(MasterKeyPart::vp).collect();
        if given != self.parts {
            planner.problem(Problem::PartsNotPlanned {
                planned: self.parts,
                given,
            });
            return Err(planner.refuse());
        }
        if let Err(e) = parts::check_independent(&parts) {
            // It refuses only a count out of range and dependent parts.
            planner.problem(match e {
                ProtoError::PartCount { count } => Problem::PartCount { count },
                _ => Problem::PartsNotIndependent,
            });
            return Err(planner.refuse());
        }
        // Sealed anew for each unit's importer key, at the moment it answers.
        let parts = Arc::new(parts);
        for u in self.units {
            let sealed = Arc::clone(&parts);
            let import = FromPrevious::new(CommandId::ImportMkParts, move |unit, answer| {
                let unusable = |source| ClientError::Response {
                    unit: unit.id(),
                    source,
                };
                let importer =
                    CertifiedImporter::from_der(answer).map_err(|e| unusable(e.into()))?;
                // Verifies the importer key's certification by the unit's device key first.
                let request =
                    parts::seal_parts(&sealed, &importer, &unit.certificate).map_err(unusable)?;
                Ok(Command::ImportMkParts(Box::new(request)))
            });
            let mut expected = Expected::of(&u.status);
            // Full Uncommitted with the value only the units know; `execute` checks that
            // every unit answered one value, and that each holds it.
            expected.new_register = RegisterStatus {
                state: RegisterState::FullUncommitted,
                vp: None,
            };
            expected.importer_pending = false;
            planner.unit(UnitPlan {
                unit: u.unit,
                status: u.status,
                commands: vec![
                    PlannedCommand {
                        command: Command::GenerateImporter.into(),
                        signers: u.signers.clone(),
                    },
                    PlannedCommand {
                        command: ToSend::FromPrevious(import),
                        signers: u.signers,
                    },
                ],
                expected,
            });
        }
        Ok(ReadyLoad {
            plan: planner.finish()?,
        })
    }
}

impl<'c> ReadyLoad<'c> {
    /// The plan: per unit, `generateImporter` then `importMkParts`, and who signs them.
    pub fn plan(&self) -> &Plan<'c> {
        &self.plan
    }

    /// Loads the parts into every unit, units in parallel, each command signed by its
    /// planned signer (matched by SKI in `signers`); checks that every unit answered one
    /// and the same verification pattern, and that every unit holds it in its new
    /// register with everything else as planned. The load is consumed, and the parts it
    /// holds are zeroized.
    ///
    /// # Errors
    /// As [`Plan::execute`] (a unit whose importer key is not certified by its device
    /// key is a failed unit: [`ClientError::Response`], and nothing is sealed to it; a
    /// unit whose current master key is the parts' combination refuses, 102/1);
    /// [`CeremonyError::Verification`] for a unit that answered no verification pattern
    /// or another one than the first unit; [`CeremonyError::PostCondition`].
    pub fn execute(self, signers: &[&dyn Signer]) -> Result<LoadReport, CeremonyError> {
        let client = self.plan.client();
        let mut expected: Vec<(&KnownUnit, Expected)> = self
            .plan
            .units()
            .iter()
            .map(|u| (u.unit, u.expected.clone()))
            .collect();
        let report = self.plan.execute(signers)?;
        let mut vp = None;
        for (num, outputs) in &report.outputs {
            let answered = outputs.get(1).and_then(|o| Vp::from_slice(o).ok());
            match (answered, vp) {
                (Some(a), None) => vp = Some(a),
                (Some(a), Some(first)) if a == first => {}
                _ => return Err(CeremonyError::Verification {
                    num: *num,
                    what:
                        "it answered no verification pattern, or another one than the other units",
                }),
            }
        }
        let Some(vp) = vp else {
            return Err(CeremonyError::Problems(vec![Problem::NoUnits]));
        };
        // The value each unit holds is the one they all answered.
        for (_, e) in &mut expected {
            e.new_register.vp = Some(vp);
        }
        let each: Vec<(&KnownUnit, &Expected)> = expected.iter().map(|(u, e)| (*u, e)).collect();
        // The plan's own check ran (counters included) with the value left open.
        crate::postcondition::check_each(client, &each, None, STEP)?;
        Ok(LoadReport {
            units: report.outputs.iter().map(|(num, _)| *num).collect(),
            vp,
        })
    }
}
