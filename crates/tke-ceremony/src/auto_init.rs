//! `auto-init`: initialize a service instance with recovery crypto units.
//!
//! Plan, then act. [`AutoInit::plan`] queries every unit of the instance and checks every
//! precondition, reporting all problems at once before anything changes. [`AutoInitPlan::execute`]
//! then, with per-unit steps running on all units in parallel:
//!
//! 1. clears units left half-initialized in imprint mode (unsigned zeroize, as the vendor
//!    SDK does; a unit in imprint mode holds no master key);
//! 2. installs every administrator (unsigned in imprint mode);
//! 3. sets both thresholds, leaving imprint mode, signed by as many administrators as the
//!    new signature threshold, then checks that every unit holds exactly the
//!    administrators (by SKI) and thresholds asked, before any master key exists;
//! 4. generates a random master key in the first recovery unit's current register and,
//!    at the same time, an importer key on every other unit;
//! 5. exports the key from the recovery unit to all other units with one command
//!    (`exportMkBatch`, threshold signatures; one per 16 targets), then on every target:
//!    import, commit (threshold), set immediate;
//! 6. checks the full post-condition on every unit: exactly the administrators and
//!    thresholds asked, the generated key current everywhere, the new register empty.
//!
//! Each step done is recorded in the caller's journal ([`StepLog`], the [`steps`]), and a
//! crash point ([`CRASH_POINTS`]) follows each step. An interrupted run is finished by
//! [`AutoInitResume`]: its plan queries every unit again and works out what is left on
//! each (administrators still to install, thresholds to set, the key to generate — only
//! if the recovery unit holds none — to transfer, commit or set immediate), refusing,
//! with every problem at once, units whose state the ceremony cannot have left. The
//! parameters come from the journal, or from the units ([`interrupted`]). No unit needs
//! a zeroize to recover from an interrupted run.
//!
//! The ceremony accounts for every transaction counter value it uses, from the plan's
//! queries on, and never retries a command: while units are in imprint mode anyone who
//! can reach them may change their administrators unsigned, so a counter moved by someone
//! else stops the ceremony as interference ([`CeremonyError::Interference`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use tke_client::{fanout::parallel, Client, InstanceId, KnownUnit};
use tke_proto::{
    transport::SignedEnvelope, AdminCertificate, AdminInfo, Command, Register, RegisterState,
    RegisterStatus, Threshold, UnitId, UnitStatus, UnitType, Vp,
};
use tke_sigkey::Signer;

use crate::{
    admin_set::{admin_info, admin_list_problems},
    crash, on_all, on_each,
    postcondition::{check_each, interference, Counters, Deviation, Expected},
    transfer::{export_batches, export_request},
    CeremonyError, Checkpoint, Event, Problem, Progress, StepLog,
};

/// The name of auto-init's journal (its command).
pub const COMMAND: &str = "auto-init";

/// The steps auto-init records in its journal ([`StepLog`]), in order. Each is recorded
/// once done on every unit; the crash point of the same name (`auto-init:<step>`) fires
/// right after it is recorded.
pub mod steps {
    /// The units left half-initialized in imprint mode by someone else were cleared (also
    /// recorded when there was none). From then on, an administrator in imprint mode that
    /// is not one of the ceremony's is interference.
    pub const CLEARED: &str = "cleared";
    /// Every administrator is installed on every unit.
    pub const ADMINS_INSTALLED: &str = "admins-installed";
    /// Every unit left imprint mode with the thresholds asked, and holds exactly the
    /// administrators asked.
    pub const THRESHOLDS_SET: &str = "thresholds-set";
    /// The recovery unit holds the generated master key; the detail is its verification
    /// pattern (hex).
    pub const KEY_GENERATED: &str = "key-generated";
    /// Every unit holds the generated key in its current register.
    pub const KEY_TRANSFERRED: &str = "key-transferred";
}

/// Every crash point of auto-init ([`crash::point`]), in the order a run reaches them.
/// Points named `…-on-a-unit` fire in the parallel step when the first unit has done
/// that command: the other units may or may not have done it.
pub const CRASH_POINTS: &[&str] = &[
    "auto-init:started",
    "auto-init:cleared",
    "auto-init:admin-on-a-unit",
    "auto-init:admins-installed",
    "auto-init:thresholds-on-a-unit",
    "auto-init:thresholds-set",
    "auto-init:key-generated",
    "auto-init:key-exported",
    "auto-init:imported-on-a-unit",
    "auto-init:committed-on-a-unit",
    "auto-init:set-immediate-on-a-unit",
    "auto-init:key-transferred",
    "auto-init:checked",
];

/// What the operator asked for.
pub struct AutoInit<'a> {
    /// The instance to initialize.
    pub instance: InstanceId,
    /// Signatures required on commands.
    pub sig_threshold: Threshold,
    /// Signatures required to remove an administrator.
    pub rev_threshold: Threshold,
    /// The administrators to install, in order. The first ones sign.
    pub admins: Vec<&'a dyn Signer>,
}

/// An interrupted auto-init to finish: what was asked (from the ceremony's journal, or
/// from the units with [`interrupted`]) and the keys that sign.
pub struct AutoInitResume<'a> {
    /// The instance.
    pub instance: InstanceId,
    /// Signatures required on commands.
    pub sig_threshold: Threshold,
    /// Signatures required to remove an administrator.
    pub rev_threshold: Threshold,
    /// Every administrator asked for, in order (installing one needs only its
    /// certificate).
    pub admins: Vec<AdminCertificate>,
    /// The keys that sign: at least as many of the administrators as the signature
    /// threshold; the first ones sign.
    pub signers: Vec<&'a dyn Signer>,
    /// The units the ceremony started on: the instance must list exactly these.
    pub units: Vec<UnitId>,
    /// The recovery unit that generates (or generated) the master key.
    pub recovery: UnitId,
    /// The [`steps`] recorded as done.
    pub done: Vec<String>,
    /// The verification pattern recorded when the key was generated, if it was.
    pub vp: Option<Vp>,
}

/// What the units of an instance say of an interrupted auto-init ([`interrupted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupted {
    /// The signature threshold of the units out of imprint mode.
    pub sig_threshold: Threshold,
    /// Their revocation threshold.
    pub rev_threshold: Threshold,
    /// Their administrators, in the order the first of them lists them.
    pub admins: Vec<AdminInfo>,
    /// Every unit of the instance.
    pub units: Vec<UnitId>,
    /// The recovery unit holding a current master key, else the first recovery unit.
    pub recovery: UnitId,
    /// The master key in that recovery unit's current register, if any.
    pub vp: Option<Vp>,
}

/// How far the master key has come on one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyStage {
    /// The recovery unit: generate the key in its current register.
    Generate,
    /// A new importer key, the export, the import, commit, set immediate.
    Transfer,
    /// Imported: commit, set immediate.
    Commit,
    /// Committed: set immediate.
    SetImmediate,
    /// The key is current.
    Done,
}

/// What is left to do on one unit.
pub(crate) struct UnitWork<'c> {
    pub(crate) unit: &'c KnownUnit,
    /// Its state when the plan was made.
    pub(crate) status: UnitStatus,
    /// Zeroize first (imprint mode, administrators that are not the ceremony's).
    pub(crate) clear: bool,
    /// The administrators to install (indices into the ceremony's list).
    pub(crate) install: Vec<usize>,
    /// Set the thresholds (leaving imprint mode).
    pub(crate) thresholds: bool,
    pub(crate) key: KeyStage,
}

/// A checked plan, ready to run.
pub struct AutoInitPlan<'a, 'c> {
    client: &'c Client,
    instance: InstanceId,
    sig_threshold: Threshold,
    rev_threshold: Threshold,
    /// Every administrator, in order.
    admins: Vec<AdminCertificate>,
    /// The keys that sign, the first ones first.
    signers: Vec<&'a dyn Signer>,
    work: Vec<UnitWork<'c>>,
    recovery: &'c KnownUnit,
    /// The key already in the recovery unit (a resumed ceremony).
    vp: Option<Vp>,
    /// The steps recorded as done before (a resumed ceremony).
    done: Vec<String>,
    /// Every counter value the ceremony uses, accounted for from the plan's queries on.
    counters: Counters,
}

/// What an initialization produced.
#[derive(Clone, Debug)]
pub struct AutoInitReport {
    /// The instance.
    pub instance: InstanceId,
    /// `CRYPTO UNIT NUM` of every unit initialized.
    pub units: Vec<usize>,
    /// `CRYPTO UNIT NUM` of the recovery unit that generated the key.
    pub generated_in: usize,
    /// The master key's verification pattern, now in every current register.
    pub vp: Vp,
}

const STEP_CLEAR: &str = "Clearing half-initialized crypto units";
const STEP_ADMINS: &str = "Installing administrators";
const STEP_THRESHOLDS: &str = "Setting signature thresholds";
const STEP_GENERATE: &str = "Generating a random master key value";
const STEP_TRANSFER: &str = "Transferring the master key value";
const STEP_CHECK: &str = "Checking the crypto units";

/// Problems with the keys given to sign.
fn signer_problems(signers: &[&dyn Signer]) -> Vec<Problem> {
    parallel(signers, |a| {
        tke_sigkey::check_usable(*a).map_err(|source| Problem::UnusableKey {
            name: a.name().clone(),
            source,
        })
    })
    .into_iter()
    .filter_map(Result::err)
    .collect()
}

impl<'a> AutoInit<'a> {
    /// Checks every precondition against the units' current state and returns a plan.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found; nothing is changed.
    pub fn plan<'c>(self, client: &'c Client) -> Result<AutoInitPlan<'a, 'c>, CeremonyError> {
        let infos: Vec<AdminInfo> = self
            .admins
            .iter()
            .map(|a| admin_info(a.certificate()))
            .collect();
        let needed = self.sig_threshold.get().max(self.rev_threshold.get());
        let mut problems = admin_list_problems(&infos, needed);
        problems.extend(signer_problems(&self.admins));

        let survey = survey(client, &self.instance);
        problems.extend(survey.problems);
        match survey.recovery {
            Some(recovery) if problems.is_empty() => {
                // The ceremony accounts for every counter value from here: a command from
                // anyone else before or between its own is interference.
                let counters = Counters::default();
                let mut work = Vec::with_capacity(survey.units.len());
                for (u, s) in survey.units.iter().zip(survey.statuses) {
                    counters.start(u, &s);
                    work.push(UnitWork {
                        unit: u,
                        clear: !s.admins.is_empty(),
                        status: s,
                        install: (0..infos.len()).collect(),
                        thresholds: true,
                        key: if u.id() == recovery.id() {
                            KeyStage::Generate
                        } else {
                            KeyStage::Transfer
                        },
                    });
                }
                Ok(AutoInitPlan {
                    client,
                    instance: self.instance,
                    sig_threshold: self.sig_threshold,
                    rev_threshold: self.rev_threshold,
                    admins: self
                        .admins
                        .iter()
                        .map(|a| a.certificate().clone())
                        .collect(),
                    signers: self.admins,
                    work,
                    recovery,
                    vp: None,
                    done: Vec::new(),
                    counters,
                })
            }
            _ => Err(CeremonyError::Problems(problems)),
        }
    }
}

impl<'a> AutoInitResume<'a> {
    /// Queries every unit and works out, for each, what the interrupted ceremony left to
    /// do: administrators still to install, thresholds to set, the key to generate (only
    /// when the recovery unit holds none), to transfer, commit or set immediate. Every
    /// unit must hold a state the ceremony can have left; all problems are reported at
    /// once.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found — among them
    /// [`Problem::Unexplained`] for each unit changed in a way the ceremony cannot
    /// explain and [`Problem::UnitsChanged`] when the instance lists other units;
    /// nothing is changed.
    pub fn plan<'c>(self, client: &'c Client) -> Result<AutoInitPlan<'a, 'c>, CeremonyError> {
        let infos: Vec<AdminInfo> = self.admins.iter().map(admin_info).collect();
        let needed = self.sig_threshold.get().max(self.rev_threshold.get());
        let mut problems = admin_list_problems(&infos, needed);
        let foreign_signer = self
            .signers
            .iter()
            .any(|s| !infos.iter().any(|a| a.ski == s.ski()));
        if foreign_signer || self.signers.len() < usize::from(self.sig_threshold.get()) {
            problems.push(Problem::ResumeSigners {
                given: self.signers.iter().map(|s| s.name().clone()).collect(),
                needed: self.sig_threshold.get(),
            });
        }
        problems.extend(signer_problems(&self.signers));
        let left = self.left(client);
        problems.extend(left.problems);
        match left.recovery {
            Some(recovery) if problems.is_empty() => {
                let counters = Counters::default();
                for w in &left.work {
                    counters.start(w.unit, &w.status);
                }
                Ok(AutoInitPlan {
                    client,
                    instance: self.instance,
                    sig_threshold: self.sig_threshold,
                    rev_threshold: self.rev_threshold,
                    admins: self.admins,
                    signers: self.signers,
                    work: left.work,
                    recovery,
                    vp: left.vp,
                    done: self.done,
                    counters,
                })
            }
            None if problems.is_empty() => {
                Err(CeremonyError::Problems(vec![Problem::NoRecoveryUnit]))
            }
            _ => Err(CeremonyError::Problems(problems)),
        }
    }

    /// Queries every unit and works out what is left on each (the stage logic of
    /// [`AutoInitResume::plan`], without the signers): also what a ceremony file that
    /// continues an interrupted auto-init plans.
    pub(crate) fn left<'c>(&self, client: &'c Client) -> Left<'c> {
        let infos: Vec<AdminInfo> = self.admins.iter().map(admin_info).collect();
        let mut problems = Vec::new();
        let units = client.instance_units(&self.instance);
        if units.is_empty() {
            problems.push(Problem::UnknownInstance {
                instance: self.instance.clone(),
            });
        }
        let missing: Vec<UnitId> = self
            .units
            .iter()
            .filter(|id| !units.iter().any(|u| u.id() == **id))
            .copied()
            .collect();
        let unexpected: Vec<UnitId> = units
            .iter()
            .map(|u| u.id())
            .filter(|id| !self.units.contains(id))
            .collect();
        if !units.is_empty() && (!missing.is_empty() || !unexpected.is_empty()) {
            problems.push(Problem::UnitsChanged {
                instance: self.instance.clone(),
                missing,
                unexpected,
            });
        }
        let recovery = units
            .iter()
            .find(|u| u.id() == self.recovery && u.unit_type() == UnitType::Recovery)
            .copied();

        let statuses = parallel(&units, |u| client.query(u));
        let mut ok = Vec::with_capacity(units.len());
        for (u, status) in units.iter().zip(statuses) {
            match status {
                Ok(s) => ok.push((*u, s)),
                Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
            }
        }
        // The key the ceremony generated: what the journal recorded, else what the
        // recovery unit holds (it can hold no other: out of imprint mode only the
        // ceremony's administrators can have it generate one).
        let r_status = ok
            .iter()
            .find(|(u, _)| u.id() == self.recovery)
            .map(|(_, s)| s);
        let vp = self.vp.or(r_status
            .filter(|s| s.current_register.state == RegisterState::Valid)
            .and_then(|s| s.current_register.vp));
        let was = |step: &str| self.done.iter().any(|d| d == step);
        let rules = Rules {
            admins: &infos,
            sig: self.sig_threshold.get(),
            rev: self.rev_threshold.get(),
            vp,
            cleared: was(steps::CLEARED),
            left_imprint: was(steps::THRESHOLDS_SET),
            generated: was(steps::KEY_GENERATED),
        };
        let mut work = Vec::with_capacity(ok.len());
        for (u, s) in ok {
            match rules.classify(&s, u.id() == self.recovery) {
                Ok((clear, install, thresholds, key)) => work.push(UnitWork {
                    unit: u,
                    status: s,
                    clear,
                    install,
                    thresholds,
                    key,
                }),
                Err(deviations) => problems.push(Problem::Unexplained {
                    num: u.num,
                    unit: u.id(),
                    deviations,
                }),
            }
        }
        Left {
            work,
            recovery,
            vp,
            problems,
        }
    }
}

/// What is left of an interrupted auto-init ([`AutoInitResume::left`]).
pub(crate) struct Left<'c> {
    /// What is left on each unit reached and explained.
    pub(crate) work: Vec<UnitWork<'c>>,
    /// The recovery unit that generates (or generated) the key.
    pub(crate) recovery: Option<&'c KnownUnit>,
    /// The key generated, if it was.
    pub(crate) vp: Option<Vp>,
    /// Every problem found.
    pub(crate) problems: Vec<Problem>,
}

/// What a resumed auto-init accepts on a unit.
struct Rules<'r> {
    admins: &'r [AdminInfo],
    sig: u8,
    rev: u8,
    /// The generated key, if there is one.
    vp: Option<Vp>,
    /// Whether the journal says that half-initialized units were cleared.
    cleared: bool,
    /// Whether the journal says that every unit left imprint mode.
    left_imprint: bool,
    /// Whether the journal says that the key was generated.
    generated: bool,
}

/// What is left on one unit: clear, administrators to install, thresholds, key stage.
type UnitLeft = (bool, Vec<usize>, bool, KeyStage);

impl Rules<'_> {
    /// What is left to do on a unit in state `s`, or how it differs from every state the
    /// ceremony can have left.
    fn classify(&self, s: &UnitStatus, is_recovery: bool) -> Result<UnitLeft, Vec<Deviation>> {
        let mut wrong = Vec::new();
        if s.imprint_mode() {
            let foreign: Vec<AdminInfo> = s
                .admins
                .iter()
                .filter(|a| !self.admins.contains(a))
                .cloned()
                .collect();
            if self.left_imprint {
                wrong.push(Deviation::SignatureThreshold {
                    expected: self.sig,
                    found: 0,
                });
            }
            // A half-initialized unit is cleared as a first run clears it, unless the
            // ceremony cleared such units already: then someone else installed these.
            let clear = !foreign.is_empty();
            if clear && self.cleared {
                wrong.push(Deviation::Administrators {
                    foreign,
                    missing: Vec::new(),
                });
            }
            // A unit in imprint mode holds no key (it runs no register command).
            if s.current_register != RegisterStatus::EMPTY {
                wrong.push(Deviation::CurrentRegister {
                    expected: RegisterStatus::EMPTY,
                    found: s.current_register,
                });
            }
            if is_recovery && self.generated {
                wrong.push(Deviation::CurrentRegister {
                    expected: valid(self.vp),
                    found: s.current_register,
                });
            }
            if !wrong.is_empty() {
                return Err(wrong);
            }
            let held: &[AdminInfo] = if clear { &[] } else { &s.admins };
            let install = (0..self.admins.len())
                .filter(|i| !held.contains(&self.admins[*i]))
                .collect();
            let key = if is_recovery {
                KeyStage::Generate
            } else {
                KeyStage::Transfer
            };
            return Ok((clear, install, true, key));
        }

        wrong.extend(
            Expected {
                sig_threshold: self.sig,
                rev_threshold: self.rev,
                ..Expected::imprint(self.admins.to_vec())
            }
            .setup_deviations(s),
        );
        let key = self.key_stage(s, is_recovery, &mut wrong);
        if wrong.is_empty() {
            Ok((false, Vec::new(), false, key))
        } else {
            Err(wrong)
        }
    }

    /// How far the key has come on a unit out of imprint mode; adds to `wrong` what no
    /// run of the ceremony leaves.
    fn key_stage(&self, s: &UnitStatus, is_recovery: bool, wrong: &mut Vec<Deviation>) -> KeyStage {
        let (new, current) = (s.new_register, s.current_register);
        let new_is = |state| new.state == state && new.vp.is_some() && new.vp == self.vp;
        let stage = if is_recovery {
            match (current.state, self.vp) {
                (RegisterState::Empty, _) if self.generated => {
                    wrong.push(Deviation::CurrentRegister {
                        expected: valid(self.vp),
                        found: current,
                    });
                    KeyStage::Done
                }
                (RegisterState::Empty, _) => KeyStage::Generate,
                (_, Some(vp)) if current.vp == Some(vp) => KeyStage::Done,
                _ => {
                    wrong.push(Deviation::CurrentRegister {
                        expected: valid(self.vp),
                        found: current,
                    });
                    KeyStage::Done
                }
            }
        } else if current.state == RegisterState::Valid {
            if self.vp.is_none() || current.vp != self.vp {
                wrong.push(Deviation::CurrentRegister {
                    expected: valid(self.vp),
                    found: current,
                });
            }
            KeyStage::Done
        } else if new.state == RegisterState::Empty {
            KeyStage::Transfer
        } else if new_is(RegisterState::FullUncommitted) {
            KeyStage::Commit
        } else if new_is(RegisterState::FullCommitted) {
            KeyStage::SetImmediate
        } else {
            wrong.push(Deviation::NewRegister {
                expected: RegisterStatus::EMPTY,
                found: new,
            });
            KeyStage::Done
        };
        // Only a unit waiting for the key may hold an importer key (a new one replaces
        // it), and a unit whose key is current holds nothing in its new register.
        if s.importer_pending && stage != KeyStage::Transfer {
            wrong.push(Deviation::ImporterPending { found: true });
        }
        if matches!(stage, KeyStage::Done | KeyStage::Generate) && new != RegisterStatus::EMPTY {
            wrong.push(Deviation::NewRegister {
                expected: RegisterStatus::EMPTY,
                found: new,
            });
        }
        stage
    }
}

/// A current register holding `vp` (or, when the key is not known, any key).
fn valid(vp: Option<Vp>) -> RegisterStatus {
    RegisterStatus {
        state: RegisterState::Valid,
        vp,
    }
}

/// Reads from the units of `instance` what an interrupted auto-init (whose journal is
/// not at hand) set: the thresholds and administrators of the units out of imprint mode,
/// which must all agree, and the recovery unit holding the key.
///
/// # Errors
/// [`CeremonyError::Problems`]: the instance is unknown or has no recovery unit, a unit
/// cannot be queried, every unit is in imprint mode ([`Problem::NothingToResume`]: a
/// plain run initializes it), or units out of imprint mode disagree
/// ([`Problem::Unexplained`], compared with the first of them).
pub fn interrupted(client: &Client, instance: &InstanceId) -> Result<Interrupted, CeremonyError> {
    let mut problems = Vec::new();
    let units = client.instance_units(instance);
    if units.is_empty() {
        return Err(CeremonyError::Problems(vec![Problem::UnknownInstance {
            instance: instance.clone(),
        }]));
    }
    let mut ok = Vec::new();
    for (u, s) in units.iter().zip(parallel(&units, |u| client.query(u))) {
        match s {
            Ok(s) => ok.push((*u, s)),
            Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
        }
    }
    let recovery = ok
        .iter()
        .filter(|(u, _)| u.unit_type() == UnitType::Recovery)
        .find(|(_, s)| s.current_register.state == RegisterState::Valid)
        .or_else(|| ok.iter().find(|(u, _)| u.unit_type() == UnitType::Recovery));
    if recovery.is_none() {
        problems.push(Problem::NoRecoveryUnit);
    }
    let first = ok.iter().find(|(_, s)| !s.imprint_mode());
    if let Some((_, f)) = first {
        let model = Expected {
            sig_threshold: f.sig_threshold,
            rev_threshold: f.rev_threshold,
            ..Expected::imprint(f.admins.clone())
        };
        for (u, s) in ok.iter().filter(|(_, s)| !s.imprint_mode()) {
            let deviations = model.setup_deviations(s);
            if !deviations.is_empty() {
                problems.push(Problem::Unexplained {
                    num: u.num,
                    unit: u.id(),
                    deviations,
                });
            }
        }
    } else if problems.is_empty() {
        problems.push(Problem::NothingToResume {
            instance: instance.clone(),
        });
    }
    let threshold = |n: u8| Threshold::new(u32::from(n));
    match (first, recovery) {
        (Some((_, f)), Some((r, rs))) if problems.is_empty() => {
            match (threshold(f.sig_threshold), threshold(f.rev_threshold)) {
                (Ok(sig_threshold), Ok(rev_threshold)) => Ok(Interrupted {
                    sig_threshold,
                    rev_threshold,
                    admins: f.admins.clone(),
                    units: units.iter().map(|u| u.id()).collect(),
                    recovery: r.id(),
                    vp: rs.current_register.vp,
                }),
                // A unit out of imprint mode with a threshold out of 1..=8 was refused by
                // the client's status check already.
                _ => Err(CeremonyError::Problems(vec![Problem::NothingToResume {
                    instance: instance.clone(),
                }])),
            }
        }
        _ => Err(CeremonyError::Problems(problems)),
    }
}

/// What [`survey`] found.
pub(crate) struct Survey<'c> {
    /// The instance's units.
    pub(crate) units: Vec<&'c KnownUnit>,
    /// The first recovery unit.
    pub(crate) recovery: Option<&'c KnownUnit>,
    /// The state of each unit, in the order of `units` (complete only without problems).
    pub(crate) statuses: Vec<UnitStatus>,
    /// Every problem found.
    pub(crate) problems: Vec<Problem>,
}

/// Queries every unit of `instance`: the instance must exist and have a recovery unit,
/// and every unit must be in imprint mode.
pub(crate) fn survey<'c>(client: &'c Client, instance: &InstanceId) -> Survey<'c> {
    survey_with(client, instance, |u, s| {
        (!s.imprint_mode()).then(|| Problem::NotInImprintMode {
            num: u.num,
            unit: u.id(),
            current_mk_set: s.current_register.state != RegisterState::Empty,
        })
    })
}

/// Queries every unit of `instance`: the instance must exist and have a recovery unit,
/// and each unit must pass `check` (a problem with its state, or `None`).
pub(crate) fn survey_with<'c>(
    client: &'c Client,
    instance: &InstanceId,
    check: impl Fn(&KnownUnit, &UnitStatus) -> Option<Problem>,
) -> Survey<'c> {
    let mut problems = Vec::new();
    let units = client.instance_units(instance);
    if units.is_empty() {
        problems.push(Problem::UnknownInstance {
            instance: instance.clone(),
        });
    }
    let recovery = units
        .iter()
        .find(|u| u.unit_type() == UnitType::Recovery)
        .copied();
    if recovery.is_none() && !units.is_empty() {
        problems.push(Problem::NoRecoveryUnit);
    }
    let mut statuses = Vec::with_capacity(units.len());
    for (u, status) in units.iter().zip(parallel(&units, |u| client.query(u))) {
        match status {
            Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
            Ok(s) => match check(u, &s) {
                Some(problem) => problems.push(problem),
                None => statuses.push(s),
            },
        }
    }
    Survey {
        units,
        recovery,
        statuses,
        problems,
    }
}

/// Checks, before anything is asked of the operator, that `instance` can be initialized:
/// it exists, has a recovery unit, and every unit is in imprint mode.
///
/// # Errors
/// [`CeremonyError::Problems`] listing every problem.
pub fn precheck(client: &Client, instance: &InstanceId) -> Result<(), CeremonyError> {
    let problems = survey(client, instance).problems;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CeremonyError::Problems(problems))
    }
}

impl AutoInitPlan<'_, '_> {
    /// The units that will be initialized, in `CRYPTO UNIT NUM` order.
    pub fn units(&self) -> Vec<usize> {
        self.work.iter().map(|w| w.unit.num).collect()
    }

    /// `CRYPTO UNIT NUM` of the recovery unit that generates the key.
    pub fn recovery(&self) -> usize {
        self.recovery.num
    }

    /// The master key the recovery unit holds already (a resumed ceremony): it is
    /// transferred, and no other is generated.
    pub fn existing_key(&self) -> Option<Vp> {
        self.vp
    }

    /// `CRYPTO UNIT NUM` of the units that hold the generated key as their current key
    /// already (a resumed ceremony): they get no command.
    pub fn finished_units(&self) -> Vec<usize> {
        self.work
            .iter()
            .filter(|w| w.key == KeyStage::Done)
            .map(|w| w.unit.num)
            .collect()
    }

    /// Runs the initialization. The plan is consumed: an initialization runs once.
    /// As [`AutoInitPlan::execute_logged`] without a journal.
    ///
    /// # Errors
    /// As [`AutoInitPlan::execute_logged`].
    pub fn execute(self, progress: &dyn Progress) -> Result<AutoInitReport, CeremonyError> {
        self.execute_logged(progress, &crate::NoLog)
    }

    /// Runs the initialization, or what is left of it for a resumed plan, recording each
    /// of the [`steps`] in `log` once done (the caller's journal).
    ///
    /// Every command is sent at the counter the ceremony's previous command on that unit
    /// left (starting from the plan's queries) and never retried: a command from anyone
    /// else in between stops the ceremony. As soon as the units leave imprint mode, and
    /// again at the end, every unit is checked to hold exactly what was asked
    /// ([`Expected::check`]).
    ///
    /// # Errors
    /// [`CeremonyError::Interference`] when a unit's counter moved between two of the
    /// ceremony's commands (naming each such unit and, while it was in imprint mode, the
    /// foreign and missing administrators it holds); [`CeremonyError::PostCondition`]
    /// when the units do not hold what was asked after leaving imprint mode (then no
    /// master key was generated) or at the end; [`CeremonyError::Step`] naming the step
    /// and every unit that failed; [`CeremonyError::Journal`] when a step cannot be
    /// recorded. The units then hold what the steps before reached; `cryptounit-compare`
    /// shows it, and a resumed plan finishes from there.
    pub fn execute_logged(
        self,
        progress: &dyn Progress,
        log: &dyn StepLog,
    ) -> Result<AutoInitReport, CeremonyError> {
        crash::point("auto-init:started");
        let client = self.client;
        let counters = &self.counters;
        let quorum: Vec<&dyn Signer> =
            self.signers[..usize::from(self.sig_threshold.get())].to_vec();
        let one: Vec<&dyn Signer> = self.signers[..1].to_vec();
        let infos: Vec<AdminInfo> = self.admins.iter().map(admin_info).collect();
        let mark = |step: &'static str, detail: Option<String>| {
            if !self.done.iter().any(|d| d == step) {
                log.record(step, detail)
                    .map_err(|source| CeremonyError::Journal { step, source })?;
            }
            crash::point(&format!("{COMMAND}:{step}"));
            Ok::<(), CeremonyError>(())
        };
        let units_where = |f: &dyn Fn(&UnitWork<'_>) -> bool| -> Vec<&KnownUnit> {
            self.work.iter().filter(|w| f(w)).map(|w| w.unit).collect()
        };

        let to_clear = units_where(&|w| w.clear);
        if !to_clear.is_empty() {
            progress.event(&Event::ClearingImprintUnits {
                units: to_clear.len(),
            });
            on_all(STEP_CLEAR, &to_clear, |u| {
                counters.run(client, u, &Command::Zeroize, &[])
            })
            .map_err(|e| {
                interference(client, e, |u| {
                    self.work_of(u).map(|w| Expected::of(&w.status))
                })
            })?;
        }
        mark(steps::CLEARED, None)?;

        for (i, cert) in self.admins.iter().enumerate() {
            let units = units_where(&|w| w.install.contains(&i));
            if units.is_empty() {
                continue;
            }
            progress.event(&Event::InstallingAdmin {
                index: i + 1,
                total: self.admins.len(),
            });
            let cmd = Command::AddAdmin(cert.clone());
            on_all(STEP_ADMINS, &units, |u| {
                let out = counters.run(client, u, &cmd, &[])?;
                crash::point("auto-init:admin-on-a-unit");
                Ok(out)
            })
            .map_err(|e| {
                interference(client, e, |u| {
                    // What it held before: the ceremony's administrators it had, and
                    // those installed before this one.
                    self.work_of(u).map(|w| {
                        let held = infos
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j < i || !w.install.contains(j))
                            .map(|(_, a)| a.clone())
                            .collect();
                        Expected::imprint(held)
                    })
                })
            })?;
        }
        mark(steps::ADMINS_INSTALLED, None)?;

        let units = units_where(&|w| w.thresholds);
        if !units.is_empty() {
            progress.event(&Event::SettingThresholds);
            let cmd = Command::SetThresholds {
                signature: self.sig_threshold,
                revocation: self.rev_threshold,
            };
            on_all(STEP_THRESHOLDS, &units, |u| {
                let out = counters.run(client, u, &cmd, &quorum)?;
                crash::point("auto-init:thresholds-on-a-unit");
                Ok(out)
            })
            .map_err(|e| interference(client, e, |_| Some(Expected::imprint(infos.clone()))))?;
        }

        // Out of imprint mode nobody can change a unit without our administrators'
        // signatures: check now, before any master key is made or moved, that it is
        // exactly ours (with the registers as the plan found them).
        let initialized: Vec<Expected> = self
            .work
            .iter()
            .map(|w| Expected {
                sig_threshold: self.sig_threshold.get(),
                rev_threshold: self.rev_threshold.get(),
                new_register: w.status.new_register,
                current_register: w.status.current_register,
                importer_pending: w.status.importer_pending,
                ..Expected::imprint(infos.clone())
            })
            .collect();
        let each: Vec<(&KnownUnit, &Expected)> =
            self.work.iter().map(|w| w.unit).zip(&initialized).collect();
        check_each(client, &each, Some(counters), STEP_THRESHOLDS)?;
        progress.event(&Event::Verified {
            checkpoint: Checkpoint::ImprintModeLeft,
            units: self.work.len(),
        });
        mark(steps::THRESHOLDS_SET, None)?;
        let initialized_of = |u: &KnownUnit| {
            each.iter()
                .find(|(w, _)| w.id() == u.id())
                .map(|(_, e)| (*e).clone())
        };

        // The recovery unit generates the key while every unit waiting for it makes its
        // importer key: different units, so one parallel step. A key the recovery unit
        // holds already is never replaced.
        let r = self.recovery;
        let generate = self.vp.is_none();
        if generate {
            progress.event(&Event::GeneratingMasterKey);
        } else {
            progress.event(&Event::MasterKeyFound { num: r.num });
        }
        let gen_units = units_where(&|w| {
            matches!(w.key, KeyStage::Transfer) || (generate && w.unit.id() == r.id())
        });
        let out = on_all(STEP_GENERATE, &gen_units, |u| {
            let command = if u.id() == r.id() {
                Command::GenerateRandomMk
            } else {
                Command::GenerateImporter
            };
            counters.run(client, u, &command, &one)
        })
        .map_err(|e| interference(client, e, initialized_of))?;
        let mut vp = self.vp;
        let mut targets: Vec<&KnownUnit> = Vec::new();
        let mut importers = Vec::new();
        for (u, der) in gen_units.iter().zip(&out) {
            let unusable = |source: tke_proto::ProtoError| CeremonyError::Output {
                step: STEP_GENERATE,
                num: u.num,
                source,
            };
            if u.id() == r.id() {
                vp = Some(Vp::from_slice(der).map_err(unusable)?);
            } else {
                importers.push(export_request(STEP_GENERATE, u, der, Register::Current)?);
                targets.push(u);
            }
        }
        let vp = vp.ok_or(CeremonyError::Verification {
            num: r.num,
            what: "no verification pattern was returned",
        })?;
        mark(steps::KEY_GENERATED, Some(vp.to_hex()))?;

        // One quorum-signed export per batch of targets (one batch up to 16 units), so
        // the recovery unit answers once however many units wait for the key.
        let envelopes = export_batches(STEP_TRANSFER, client, counters, r, &importers, &quorum)?;
        crash::point("auto-init:key-exported");

        // Each unit from where it stands: import (with its envelope), commit, set
        // immediate.
        let mut jobs: Vec<(&KnownUnit, KeyStage, Option<SignedEnvelope>)> = targets
            .iter()
            .copied()
            .zip(envelopes)
            .map(|(u, e)| (u, KeyStage::Transfer, Some(e)))
            .collect();
        jobs.extend(
            self.work
                .iter()
                .filter(|w| matches!(w.key, KeyStage::Commit | KeyStage::SetImmediate))
                .map(|w| (w.unit, w.key, None)),
        );
        let done = AtomicUsize::new(0);
        let total = jobs.len();
        on_each(
            STEP_TRANSFER,
            &jobs,
            |(u, _, _)| *u,
            |(u, stage, envelope)| {
                if let Some(envelope) = envelope {
                    counters.run(
                        client,
                        u,
                        &Command::ImportMk(Box::new(envelope.clone())),
                        &one,
                    )?;
                    crash::point("auto-init:imported-on-a-unit");
                }
                if *stage != KeyStage::SetImmediate {
                    counters.run(client, u, &Command::CommitMk(vp), &quorum)?;
                    crash::point("auto-init:committed-on-a-unit");
                }
                counters.run(client, u, &Command::SetImmediate(vp), &one)?;
                crash::point("auto-init:set-immediate-on-a-unit");
                let index = done.fetch_add(1, Ordering::SeqCst) + 1;
                progress.event(&Event::TransferringMasterKey { index, total });
                Ok(())
            },
        )
        .map_err(|e| interference(client, e, |_| None))?;
        mark(steps::KEY_TRANSFERRED, None)?;

        // The full post-condition: exactly our administrators and thresholds, the one
        // generated key current everywhere, nothing else held or pending.
        let units = units_where(&|_| true);
        Expected {
            sig_threshold: self.sig_threshold.get(),
            rev_threshold: self.rev_threshold.get(),
            current_register: valid(Some(vp)),
            ..Expected::imprint(infos)
        }
        .check(client, &units, Some(counters), STEP_CHECK)?;
        progress.event(&Event::Verified {
            checkpoint: Checkpoint::Finished,
            units: units.len(),
        });
        // Done on every unit; the caller removes its journal next.
        crash::point("auto-init:checked");
        Ok(AutoInitReport {
            instance: self.instance.clone(),
            units: self.units(),
            generated_in: r.num,
            vp,
        })
    }

    /// The work planned for `unit`.
    fn work_of(&self, unit: &KnownUnit) -> Option<&UnitWork<'_>> {
        self.work.iter().find(|w| w.unit.id() == unit.id())
    }
}

#[cfg(test)]
mod tests {
    //! The states a resumed auto-init accepts on a unit, and those it refuses. The
    //! crash test of the CLI (every crash point, then `--resume`) covers the states a real
    //! interruption leaves; these cover the ones only someone else can make.
    #![allow(clippy::unwrap_used)]
    use tke_proto::{AdminName, ControlPoints, Ski};

    use super::*;

    fn admin(name: &str, b: u8) -> AdminInfo {
        AdminInfo {
            ski: Ski::from_slice(&[b; 32]).unwrap(),
            name: AdminName::new(name).unwrap(),
        }
    }

    fn vp(b: u8) -> Vp {
        Vp::from_slice(&[b; 32]).unwrap()
    }

    fn reg(state: RegisterState, v: Option<Vp>) -> RegisterStatus {
        RegisterStatus { state, vp: v }
    }

    /// A unit with `admins`, thresholds `t`/`t`, and these registers.
    fn unit(
        admins: &[AdminInfo],
        t: u8,
        new: RegisterStatus,
        current: RegisterStatus,
    ) -> UnitStatus {
        UnitStatus {
            unit_id: UnitId::random(),
            unit_type: UnitType::Operational,
            counter: 7,
            sig_threshold: t,
            rev_threshold: t,
            admins: admins.to_vec(),
            new_register: new,
            current_register: current,
            importer_pending: false,
            control_points: ControlPoints::DEFAULT,
        }
    }

    fn rules<'r>(admins: &'r [AdminInfo], key: Option<Vp>, done: &[&str]) -> Rules<'r> {
        Rules {
            admins,
            sig: 2,
            rev: 2,
            vp: key,
            cleared: done.contains(&steps::CLEARED),
            left_imprint: done.contains(&steps::THRESHOLDS_SET),
            generated: done.contains(&steps::KEY_GENERATED),
        }
    }

    const E: RegisterStatus = RegisterStatus::EMPTY;

    #[test]
    fn what_is_left_follows_the_units_state() {
        let ours = [admin("alice", 1), admin("bob", 2)];
        let r = rules(&ours, None, &[steps::CLEARED]);
        // Imprint mode with the first administrator: install the second, then the rest.
        let (clear, install, thresholds, key) =
            r.classify(&unit(&ours[..1], 0, E, E), false).unwrap();
        assert_eq!(
            (clear, install, thresholds, key),
            (false, vec![1], true, KeyStage::Transfer)
        );
        // The recovery unit out of imprint mode with no key: generate.
        let (_, install, thresholds, key) = r.classify(&unit(&ours, 2, E, E), true).unwrap();
        assert_eq!(
            (install, thresholds, key),
            (vec![], false, KeyStage::Generate)
        );

        let k = vp(9);
        let r = rules(&ours, Some(k), &[steps::CLEARED, steps::KEY_GENERATED]);
        let at = |new, current| r.classify(&unit(&ours, 2, new, current), false).unwrap().3;
        assert_eq!(at(E, E), KeyStage::Transfer);
        assert_eq!(
            at(reg(RegisterState::FullUncommitted, Some(k)), E),
            KeyStage::Commit
        );
        assert_eq!(
            at(reg(RegisterState::FullCommitted, Some(k)), E),
            KeyStage::SetImmediate
        );
        assert_eq!(at(E, reg(RegisterState::Valid, Some(k))), KeyStage::Done);
        let recovery = r
            .classify(&unit(&ours, 2, E, reg(RegisterState::Valid, Some(k))), true)
            .unwrap();
        assert_eq!(
            recovery.3,
            KeyStage::Done,
            "the key is never generated again"
        );
    }

    #[test]
    fn a_first_run_clears_foreign_administrators_in_imprint_mode_a_resumed_one_refuses_them() {
        let ours = [admin("alice", 1), admin("bob", 2)];
        let mallory = admin("mallory", 3);
        let s = unit(std::slice::from_ref(&mallory), 0, E, E);
        let (clear, install, _, _) = rules(&ours, None, &[]).classify(&s, false).unwrap();
        assert!(clear);
        assert_eq!(install, vec![0, 1]);
        let refused = rules(&ours, None, &[steps::CLEARED])
            .classify(&s, false)
            .unwrap_err();
        assert_eq!(
            refused,
            vec![Deviation::Administrators {
                foreign: vec![mallory],
                missing: vec![]
            }]
        );
    }

    #[test]
    fn states_the_ceremony_cannot_have_left_are_refused() {
        let ours = [admin("alice", 1), admin("bob", 2)];
        let (k, other) = (vp(9), vp(8));
        let done = [steps::CLEARED, steps::THRESHOLDS_SET, steps::KEY_GENERATED];
        let r = rules(&ours, Some(k), &done);
        let refused = |s: UnitStatus, recovery: bool| r.classify(&s, recovery).unwrap_err();

        // Back in imprint mode after the thresholds were set (someone zeroized it).
        let d = refused(unit(&[], 0, E, E), false);
        assert!(
            d.contains(&Deviation::SignatureThreshold {
                expected: 2,
                found: 0
            }),
            "{d:?}"
        );
        // Other thresholds, another administrator set.
        let d = refused(unit(&ours[..1], 1, E, E), false);
        assert!(matches!(d[0], Deviation::Administrators { .. }), "{d:?}");
        assert!(
            d.contains(&Deviation::SignatureThreshold {
                expected: 2,
                found: 1
            }),
            "{d:?}"
        );
        // Another key, current or new; the recovery unit without the generated key.
        let d = refused(
            unit(&ours, 2, E, reg(RegisterState::Valid, Some(other))),
            false,
        );
        assert!(matches!(d[0], Deviation::CurrentRegister { .. }), "{d:?}");
        let d = refused(
            unit(&ours, 2, reg(RegisterState::FullCommitted, Some(other)), E),
            false,
        );
        assert!(matches!(d[0], Deviation::NewRegister { .. }), "{d:?}");
        let d = refused(unit(&ours, 2, E, E), true);
        assert_eq!(
            d,
            vec![Deviation::CurrentRegister {
                expected: valid(Some(k)),
                found: E
            }]
        );
        // An importer key where no import waits.
        let mut s = unit(&ours, 2, E, reg(RegisterState::Valid, Some(k)));
        s.importer_pending = true;
        assert_eq!(
            refused(s, false),
            vec![Deviation::ImporterPending { found: true }]
        );
    }
}
