//! Changing administrators and thresholds: one administrator added or removed, both
//! thresholds set, or a whole administrator set changed at once.
//!
//! [`plan`] and [`plan_unit`] are pure: given each unit's queried state, the [`Change`]
//! asked for and the signature keys that may sign (in order of preference), they return
//! for every unit the commands to send, in order, each with the administrators who sign
//! it, and the full state the unit holds afterwards. They replay the unit's own rules
//! (those of `tke-unit`) on a copy of each unit's state, step by step, so a planned change
//! never fails on a check it could have made up front: every problem is reported before
//! the first command. [`AdminChange`] is the ceremony around them: it queries the units,
//! plans, and runs the result on the shared [`Plan`] (accounted counters, full
//! post-condition on every unit).
//!
//! # Who signs
//!
//! A unit in imprint mode takes administrator changes unsigned; leaving imprint mode is
//! signed by as many installed administrators as the **new** signature threshold. Out of
//! imprint mode, adding an administrator and setting thresholds take the current
//! signature threshold, removing one the current revocation threshold. Each step is
//! signed by the first keys that may sign and are installed **at that step** (an
//! administrator added by an earlier step may sign the next ones).
//!
//! # The order of a whole-set change
//!
//! A whole-set change ([`Change::Set`]) splits each unit's administrators into those kept,
//! those to add and those to remove, and orders the commands as the vendor SDK does
//! ([`Order`]), by the unit's current thresholds:
//!
//! * **A** — signature threshold ≥ revocation threshold (imprint mode included): remove,
//!   add, then set the thresholds. Removing first keeps the unit within 8 administrators.
//! * **B** — otherwise, when the new revocation threshold is at most the number of kept
//!   administrators: first lower the revocation threshold to its new value (keeping the
//!   signature threshold), then remove, add, and set the final thresholds. Removals then
//!   need only the new revocation threshold, which the kept administrators meet.
//! * **C** — otherwise: add first, so that the added administrators can sign the
//!   removals, then remove, then set the thresholds.
//!
//! The SDK panics half-way through case C when fewer administrators than the current
//! revocation threshold can sign the removals once the additions are done (for example:
//! 5 administrators, thresholds 1/5, going to 2 administrators with revocation threshold
//! 2, one of them kept). Here that unit's plan reports the step that would fail before
//! anything is sent: [`Problem::TooFewSigners`] for "removing an administrator (order C:
//! after the additions)". Even with more keys that may sign, those removals would take the
//! unit below its current revocation threshold ([`Rule::RemovalBelowThreshold`]): order C
//! works only while the kept and added administrators are at least that many. Lowering the
//! revocation threshold first, as a change of its own, makes the change possible.

use std::fmt;

use tke_client::{Client, KnownUnit};
use tke_proto::{AdminCertificate, AdminInfo, Command, Threshold, UnitStatus};
use tke_sigkey::Signer;

use crate::{
    plan::{Plan, PlanReport, PlannedCommand, Planner, UnitPlan},
    postcondition::Expected,
    signers::{pick, Quorum},
    CeremonyError, Problem, Rule,
};

/// The most administrators a unit holds.
const MAX_ADMINS: usize = Threshold::MAX as usize;

/// What to change on every unit.
#[derive(Clone, Debug)]
pub enum Change {
    /// Install one administrator (its self-signed certificate).
    Add(AdminCertificate),
    /// Remove one installed administrator.
    Remove(AdminInfo),
    /// Set both thresholds; on a unit in imprint mode this leaves it.
    Thresholds {
        /// The new signature threshold.
        signature: Threshold,
        /// The new revocation signature threshold.
        revocation: Threshold,
    },
    /// Make every unit hold exactly these administrators and thresholds.
    Set(AdminSet),
    /// As [`Change::Thresholds`] on units in imprint mode only: a unit that has left
    /// imprint mode already is a problem ([`Rule::LeftImprintMode`]), never a change of
    /// its thresholds. The vendor's deprecated `cryptounit-exit-impr` is this with 1/1.
    LeaveImprintMode {
        /// The new signature threshold.
        signature: Threshold,
        /// The new revocation signature threshold.
        revocation: Threshold,
    },
}

/// The administrators and thresholds every unit must hold after a whole-set change.
#[derive(Clone, Debug)]
pub struct AdminSet {
    /// Exactly these administrators (1 to 8, distinct keys, names that do not look alike).
    pub admins: Vec<AdminCertificate>,
    /// The signature threshold.
    pub sig_threshold: Threshold,
    /// The revocation signature threshold.
    pub rev_threshold: Threshold,
}

/// One command of a unit's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Install this administrator.
    Add(AdminCertificate),
    /// Remove this administrator.
    Remove(AdminInfo),
    /// Set both thresholds.
    SetThresholds {
        /// The signature threshold.
        signature: Threshold,
        /// The revocation signature threshold.
        revocation: Threshold,
    },
}

impl Action {
    /// The command that carries it out.
    pub fn command(&self) -> Command {
        match self {
            Self::Add(cert) => Command::AddAdmin(cert.clone()),
            Self::Remove(admin) => Command::RemoveAdmin(admin.ski),
            Self::SetThresholds {
                signature,
                revocation,
            } => Command::SetThresholds {
                signature: *signature,
                revocation: *revocation,
            },
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Add(cert) => write!(f, "add {}", cert.name()),
            Self::Remove(admin) => write!(f, "remove {}", admin.name),
            Self::SetThresholds {
                signature,
                revocation,
            } => write!(f, "set thresholds {signature}/{revocation}"),
        }
    }
}

/// One command of a unit's plan and who signs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// The rule that sets how many signatures it needs.
    pub quorum: Quorum,
    /// How many: the rule applied to the unit's state when the step runs.
    pub needed: usize,
    /// The administrators who sign it: the first keys that may sign and are installed
    /// when it runs, as many as it needs.
    pub signers: Vec<AdminInfo>,
}

/// The order of a unit's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// A single administrator or threshold change (or nothing to do).
    Single,
    /// Case A: remove, add, set the thresholds.
    RemoveFirst,
    /// Case B: lower the revocation threshold, remove, add, set the thresholds.
    RevocationFirst,
    /// Case C: add, remove, set the thresholds.
    AddFirst,
}

impl Order {
    /// The vendor SDK's name for the order (`A`, `B`, `C`), if it has one.
    pub fn case(self) -> Option<char> {
        match self {
            Self::Single => None,
            Self::RemoveFirst => Some('A'),
            Self::RevocationFirst => Some('B'),
            Self::AddFirst => Some('C'),
        }
    }

    /// What a step of this order is, for [`Problem::TooFewSigners`]: the kind of command
    /// and, in a whole-set change, where it comes in the order (the case-C edge is a
    /// removal "after the additions").
    fn describe(self, action: &Action, leaving_imprint_mode: bool, first: bool) -> &'static str {
        match (self, action) {
            (_, Action::SetThresholds { .. }) if leaving_imprint_mode => match self {
                Self::Single => "leaving imprint mode",
                _ => "leaving imprint mode (the last step of the change)",
            },
            (Self::Single, Action::Add(_)) => "adding an administrator",
            (Self::Single, Action::Remove(_)) => "removing an administrator",
            (Self::Single, Action::SetThresholds { .. }) => "setting the thresholds",
            (Self::RemoveFirst, Action::Remove(_)) => {
                "removing an administrator (order A: removals first)"
            }
            (Self::RemoveFirst, Action::Add(_)) => {
                "adding an administrator (order A: after the removals)"
            }
            (Self::RevocationFirst, Action::SetThresholds { .. }) if first => {
                "lowering the revocation threshold (order B: first)"
            }
            (Self::RevocationFirst, Action::Remove(_)) => {
                "removing an administrator (order B: after lowering the revocation threshold)"
            }
            (Self::RevocationFirst, Action::Add(_)) => {
                "adding an administrator (order B: after the removals)"
            }
            (Self::AddFirst, Action::Add(_)) => {
                "adding an administrator (order C: additions first)"
            }
            (Self::AddFirst, Action::Remove(_)) => {
                "removing an administrator (order C: after the additions)"
            }
            (_, Action::SetThresholds { .. }) => {
                "setting the thresholds (the last step of the change)"
            }
        }
    }
}

/// The plan of one unit: its commands in order, who signs each, and the full state it
/// holds afterwards.
#[derive(Clone, Debug)]
pub struct UnitChange {
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// Its state when planned.
    pub status: UnitStatus,
    /// The order of its commands.
    pub order: Order,
    /// The commands, in order; empty when the unit already holds what was asked.
    pub steps: Vec<Step>,
    /// The full state it holds after the last step (registers unchanged).
    pub expected: Expected,
}

/// A unit's state as its commands change it: the unit's rules (`tke-unit`), replayed.
struct Sim {
    status: UnitStatus,
}

impl Sim {
    /// The signatures `action` needs now.
    fn quorum(&self, action: &Action) -> Quorum {
        match (action, self.status.imprint_mode()) {
            (Action::SetThresholds { signature, .. }, true) => {
                Quorum::NewSignatureThreshold(signature.get())
            }
            (_, true) => Quorum::None,
            (Action::Remove(_), false) => Quorum::RevocationThreshold,
            (_, false) => Quorum::SignatureThreshold,
        }
    }

    /// The unit's checks of `action`, in its order; applies it when they pass.
    fn apply(&mut self, action: &Action) -> Result<(), Rule> {
        let s = &mut self.status;
        match action {
            Action::Add(cert) => {
                let admin = admin_info(cert);
                if let Some(installed) = s.admins.iter().find(|a| a.ski == admin.ski) {
                    return Err(Rule::AdminInstalled {
                        installed: installed.name.clone(),
                        admin,
                    });
                }
                if let Some(a) = s.admins.iter().find(|a| a.name.looks_like(&admin.name)) {
                    return Err(Rule::LookalikeName {
                        admin: admin.name,
                        installed: a.name.clone(),
                    });
                }
                if s.admins.len() >= MAX_ADMINS {
                    return Err(Rule::AdminsFull { admin: admin.name });
                }
                s.admins.push(admin);
            }
            Action::Remove(admin) => {
                let Some(pos) = s.admins.iter().position(|a| a.ski == admin.ski) else {
                    return Err(Rule::AdminNotInstalled {
                        admin: admin.clone(),
                    });
                };
                let remaining = s.admins.len() - 1;
                if !s.imprint_mode()
                    && (remaining < usize::from(s.sig_threshold)
                        || remaining < usize::from(s.rev_threshold))
                {
                    return Err(Rule::RemovalBelowThreshold {
                        admin: admin.name.clone(),
                        remaining,
                        sig_threshold: s.sig_threshold,
                        rev_threshold: s.rev_threshold,
                    });
                }
                s.admins.remove(pos);
            }
            Action::SetThresholds {
                signature,
                revocation,
            } => {
                let admins = s.admins.len();
                if usize::from(signature.get().max(revocation.get())) > admins {
                    return Err(Rule::ThresholdsAboveAdmins {
                        signature: signature.get(),
                        revocation: revocation.get(),
                        admins,
                    });
                }
                s.sig_threshold = signature.get();
                s.rev_threshold = revocation.get();
            }
        }
        Ok(())
    }

    /// Whether `action` would change nothing (thresholds already set).
    fn no_op(&self, action: &Action) -> bool {
        matches!(action, Action::SetThresholds { signature, revocation }
            if signature.get() == self.status.sig_threshold
                && revocation.get() == self.status.rev_threshold)
    }
}

/// The actions of `change` on a unit in state `status`, in the order to send them.
fn actions(status: &UnitStatus, change: &Change) -> (Order, Vec<Action>) {
    let set = match change {
        Change::Add(cert) => return (Order::Single, vec![Action::Add(cert.clone())]),
        Change::Remove(admin) => return (Order::Single, vec![Action::Remove(admin.clone())]),
        Change::Thresholds {
            signature,
            revocation,
        }
        | Change::LeaveImprintMode {
            signature,
            revocation,
        } => {
            let set = Action::SetThresholds {
                signature: *signature,
                revocation: *revocation,
            };
            return (Order::Single, vec![set]);
        }
        Change::Set(set) => set,
    };
    let wanted = |ski| set.admins.iter().any(|c| c.ski() == ski);
    let kept = status.admins.iter().filter(|a| wanted(a.ski)).count();
    let removes = status
        .admins
        .iter()
        .filter(|a| !wanted(a.ski))
        .map(|a| Action::Remove(a.clone()));
    let adds = set
        .admins
        .iter()
        .filter(|c| !status.admins.iter().any(|a| a.ski == c.ski()))
        .map(|c| Action::Add(c.clone()));
    let last = Action::SetThresholds {
        signature: set.sig_threshold,
        revocation: set.rev_threshold,
    };
    let (sig, rev) = (status.sig_threshold, status.rev_threshold);
    // Case B keeps the current signature threshold (at least 1 here: sig < rev).
    let lower_rev_first = Threshold::new(u32::from(sig))
        .ok()
        .filter(|_| usize::from(set.rev_threshold.get()) <= kept);
    if sig >= rev {
        let v = removes.chain(adds).chain([last]).collect();
        (Order::RemoveFirst, v)
    } else if let Some(signature) = lower_rev_first {
        let first = Action::SetThresholds {
            signature,
            revocation: set.rev_threshold,
        };
        let v = [first]
            .into_iter()
            .chain(removes)
            .chain(adds)
            .chain([last])
            .collect();
        (Order::RevocationFirst, v)
    } else {
        let v = adds.chain(removes).chain([last]).collect();
        (Order::AddFirst, v)
    }
}

/// Plans `change` on the unit numbered `num` in state `status`, replaying its rules step
/// by step, with `keys` the keys that may sign in order of preference. Pure: queries
/// nothing, sends nothing.
///
/// # Errors
/// The problems of the first step the unit would refuse, every reason it would
/// ([`Problem::Precondition`], [`Problem::TooFewSigners`]): what follows that step
/// depends on it. For a whole-set change, first the administrators it would rename
/// ([`Rule::Renamed`]).
pub fn plan_unit(
    num: usize,
    status: &UnitStatus,
    change: &Change,
    keys: &[AdminInfo],
) -> Result<UnitChange, Vec<Problem>> {
    let unit = status.unit_id;
    let precondition = |rule| Problem::Precondition { num, unit, rule };
    if let Change::Set(set) = change {
        let renames: Vec<Problem> = set
            .admins
            .iter()
            .filter_map(|c| {
                let a = status.admins.iter().find(|a| a.ski == c.ski())?;
                (a.name != *c.name()).then(|| {
                    precondition(Rule::Renamed {
                        installed: a.clone(),
                        name: c.name().clone(),
                    })
                })
            })
            .collect();
        if !renames.is_empty() {
            return Err(renames);
        }
    }
    if matches!(change, Change::LeaveImprintMode { .. }) && !status.imprint_mode() {
        return Err(vec![precondition(Rule::LeftImprintMode {
            sig_threshold: status.sig_threshold,
            rev_threshold: status.rev_threshold,
        })]);
    }
    let (order, actions) = actions(status, change);
    let mut sim = Sim {
        status: status.clone(),
    };
    let mut steps: Vec<Step> = Vec::with_capacity(actions.len());
    for action in actions {
        // Thresholds already as asked are not set again.
        if sim.no_op(&action) {
            continue;
        }
        let quorum = sim.quorum(&action);
        let what = order.describe(&action, sim.status.imprint_mode(), steps.is_empty());
        let (signers, short) = pick(
            keys,
            (num, unit),
            &sim.status,
            &sim.status.admins,
            quorum,
            what,
        );
        let needed = quorum.count(&sim.status);
        let refused = sim.apply(&action).err().map(precondition);
        let found: Vec<Problem> = refused.into_iter().chain(short).collect();
        if !found.is_empty() {
            return Err(found);
        }
        steps.push(Step {
            action,
            quorum,
            needed,
            signers,
        });
    }
    Ok(UnitChange {
        num,
        order,
        steps,
        expected: Expected::of(&sim.status),
        status: status.clone(),
    })
}

/// Plans `change` on every unit (`CRYPTO UNIT NUM` and state), with `keys` the keys that
/// may sign in order of preference. Pure: queries nothing, sends nothing.
///
/// # Errors
/// Every problem found: for a whole-set change, those of the set itself
/// ([`Problem::TooManyAdmins`], [`Problem::TooFewAdmins`], [`Problem::DuplicateAdmin`],
/// [`Problem::LookalikeAdmins`]), and then, for each unit, those of [`plan_unit`].
pub fn plan(
    units: &[(usize, &UnitStatus)],
    change: &Change,
    keys: &[AdminInfo],
) -> Result<Vec<UnitChange>, Vec<Problem>> {
    if let Change::Set(set) = change {
        let admins: Vec<AdminInfo> = set.admins.iter().map(admin_info).collect();
        let problems = admin_list_problems(
            &admins,
            set.sig_threshold.get().max(set.rev_threshold.get()),
        );
        if !problems.is_empty() {
            // Each unit would only repeat what is wrong with the set.
            return Err(problems);
        }
    }
    let mut problems = Vec::new();
    let mut plans = Vec::with_capacity(units.len());
    for (num, status) in units {
        match plan_unit(*num, status, change, keys) {
            Ok(p) => plans.push(p),
            Err(v) => problems.extend(v),
        }
    }
    if problems.is_empty() {
        Ok(plans)
    } else {
        Err(problems)
    }
}

/// A change of administrators or thresholds on crypto units, as a ceremony: plan (every
/// unit queried, every problem found), then act ([`AdminChangePlan::execute`]).
pub struct AdminChange<'c> {
    /// The units to change.
    pub units: Vec<&'c KnownUnit>,
    /// What to change on each.
    pub change: Change,
    /// The signature keys that may sign, in order of preference.
    pub keys: Vec<AdminInfo>,
}

/// A checked change, ready to run once.
pub struct AdminChangePlan<'c> {
    plan: Plan<'c>,
    changes: Vec<UnitChange>,
}

impl<'c> AdminChange<'c> {
    /// The ceremony's name in errors.
    fn step(&self) -> &'static str {
        match self.change {
            Change::Add(_) => "Adding an administrator",
            Change::Remove(_) => "Removing an administrator",
            Change::Thresholds { .. } => "Setting signature thresholds",
            Change::LeaveImprintMode { .. } => "Leaving imprint mode",
            Change::Set(_) => "Changing administrators and thresholds",
        }
    }

    /// Queries every unit and plans the change on each ([`plan`]). Nothing is changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem: no unit given, units that
    /// cannot be queried, and those of [`plan`].
    pub fn plan(self, client: &'c Client) -> Result<AdminChangePlan<'c>, CeremonyError> {
        let mut planner = Planner::start(client, self.step(), self.units, self.keys);
        let reachable = planner.reachable();
        let units: Vec<(usize, &UnitStatus)> = reachable.iter().map(|(u, s)| (u.num, s)).collect();
        let changes = match plan(&units, &self.change, planner.keys()) {
            Ok(changes) => changes,
            Err(problems) => {
                for p in problems {
                    planner.problem(p);
                }
                Vec::new()
            }
        };
        for (c, (unit, _)) in changes.iter().zip(&reachable) {
            planner.unit(UnitPlan {
                unit,
                status: c.status.clone(),
                commands: c
                    .steps
                    .iter()
                    .map(|s| PlannedCommand {
                        command: s.action.command().into(),
                        signers: s.signers.clone(),
                    })
                    .collect(),
                expected: c.expected.clone(),
            });
        }
        Ok(AdminChangePlan {
            plan: planner.finish()?,
            changes,
        })
    }
}

impl<'c> AdminChangePlan<'c> {
    /// Each unit's steps, in the order given.
    pub fn changes(&self) -> &[UnitChange] {
        &self.changes
    }

    /// The plan every manual ceremony shares (units, commands, expected states).
    pub fn plan(&self) -> &Plan<'c> {
        &self.plan
    }

    /// The keys [`Self::execute`] needs, each once, in the order of preference given.
    pub fn keys_needed(&self) -> Vec<&AdminInfo> {
        self.plan.keys_needed()
    }

    /// Sends every unit its commands, in order (units in parallel), then checks that
    /// every unit holds exactly the planned administrators and thresholds, registers
    /// unchanged. Consumed: a change runs once.
    ///
    /// # Errors
    /// As [`Plan::execute`].
    pub fn execute(self, signers: &[&dyn Signer]) -> Result<PlanReport, CeremonyError> {
        self.plan.execute(signers)
    }
}

/// The administrator a certificate installs: its name and SKI.
pub(crate) fn admin_info(cert: &AdminCertificate) -> AdminInfo {
    AdminInfo {
        ski: cert.ski(),
        name: cert.name().clone(),
    }
}

/// What is wrong with a list of administrators to install with thresholds that need
/// `needed` of them: more than 8, fewer than `needed`, a key given twice, names that
/// look the same.
pub(crate) fn admin_list_problems(admins: &[AdminInfo], needed: u8) -> Vec<Problem> {
    let mut problems = Vec::new();
    let count = admins.len();
    if count > MAX_ADMINS {
        problems.push(Problem::TooManyAdmins { count });
    } else if count < usize::from(needed) {
        problems.push(Problem::TooFewAdmins { count, needed });
    }
    for (i, a) in admins.iter().enumerate() {
        if admins[..i].iter().any(|b| b.ski == a.ski) {
            problems.push(Problem::DuplicateAdmin {
                name: a.name.clone(),
                ski: a.ski,
            });
        } else if let Some(b) = admins[..i].iter().find(|b| b.name.looks_like(&a.name)) {
            // Each unit would refuse the second (256/40) halfway through the change.
            problems.push(Problem::LookalikeAdmins {
                first: b.name.clone(),
                second: a.name.clone(),
            });
        }
    }
    problems
}
