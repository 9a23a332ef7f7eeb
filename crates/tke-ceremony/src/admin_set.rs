//! Changing administrators and thresholds: one administrator added or removed, both
//! thresholds set, or a whole administrator set changed at once.
//!
//! This module plans; it sends nothing. [`plan`] takes each unit's queried state, the
//! [`Change`] asked for and the signature keys that may sign (in order of preference),
//! and returns for every unit the commands to send, in order, each with the
//! administrators who sign it, and the administrators and thresholds the unit holds
//! afterwards. It replays the unit's own rules (those of `tke-unit`) on a copy of each
//! unit's state, step by step, so a planned change never fails on a check it could have
//! made up front: every problem is reported before the first command.
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
//! anything is sent ([`Violation::TooFewSigners`] at a removal, after the additions).
//! Lowering the revocation threshold first, as a change of its own, makes it case C with
//! enough signers.

use std::fmt;

use tke_proto::{AdminCertificate, AdminInfo, AdminName, Command, Threshold, UnitId, UnitStatus};

use crate::{postcondition::Expected, Problem};

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

/// How many signatures a step needs, and by which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// None: the unit is in imprint mode.
    Unsigned,
    /// The unit's current signature threshold.
    SignatureThreshold(u8),
    /// The unit's current revocation signature threshold.
    RevocationThreshold(u8),
    /// Leaving imprint mode: the new signature threshold.
    NewSignatureThreshold(u8),
}

impl Quorum {
    /// The number of signatures.
    pub fn count(self) -> usize {
        match self {
            Self::Unsigned => 0,
            Self::SignatureThreshold(n)
            | Self::RevocationThreshold(n)
            | Self::NewSignatureThreshold(n) => usize::from(n),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsigned => f.write_str("no signature (imprint mode)"),
            Self::SignatureThreshold(n) => {
                write!(f, "{n} signature(s) (the current signature threshold)")
            }
            Self::RevocationThreshold(n) => {
                write!(f, "{n} signature(s) (the current revocation threshold)")
            }
            Self::NewSignatureThreshold(n) => write!(
                f,
                "{n} signature(s) (leaving imprint mode takes the new signature threshold)"
            ),
        }
    }
}

/// One command of a unit's plan and who signs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// How many signatures it needs, and why.
    pub quorum: Quorum,
    /// The administrators who sign it: the first keys that may sign and are installed
    /// when it runs, as many as [`Step::quorum`] needs.
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
}

/// The plan of one unit.
#[derive(Clone, Debug)]
pub struct UnitPlan {
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// The unit.
    pub unit: UnitId,
    /// Its state when planned.
    pub status: UnitStatus,
    /// The order of its commands.
    pub order: Order,
    /// The commands, in order; empty when the unit already holds what was asked.
    pub steps: Vec<Step>,
    /// The full state it holds after the last step (registers unchanged).
    pub expected: Expected,
}

/// Why a unit would refuse a step.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The administrator's key is already installed (module 256/38).
    #[error("{} is already installed (as {})", admin.name, installed.name)]
    AlreadyInstalled {
        /// The administrator to add.
        admin: AdminInfo,
        /// The installed administrator with the same key.
        installed: AdminInfo,
    },
    /// The administrator is not installed (module 32/32).
    #[error("{} (SKI {}) is not installed", admin.name, admin.ski.short())]
    NotInstalled {
        /// The administrator to remove.
        admin: AdminInfo,
    },
    /// The unit already holds 8 administrators (module 261/39).
    #[error("{admin} cannot be added: the unit already holds 8 administrators, the most it can")]
    Full {
        /// The administrator to add.
        admin: AdminName,
    },
    /// An installed administrator's name looks the same as the new one's (module 256/40).
    #[error("{admin} cannot be added: its name looks the same as that of the installed administrator {installed}")]
    LookalikeInstalled {
        /// The administrator to add.
        admin: AdminName,
        /// The installed administrator.
        installed: AdminName,
    },
    /// A kept administrator would be renamed, which a unit does not do.
    #[error("the key of {name} is installed under the name {}; an administrator cannot be renamed (a new name needs a new key)", installed.name)]
    Renamed {
        /// The administrator as installed.
        installed: AdminInfo,
        /// The name asked for.
        name: AdminName,
    },
    /// The removal would leave fewer administrators than a threshold (module 209/66).
    #[error("removing {admin} would leave {remaining} administrator(s), fewer than the signature threshold {sig_threshold} or the revocation threshold {rev_threshold}")]
    BelowThreshold {
        /// The administrator to remove.
        admin: AdminName,
        /// Administrators left after it.
        remaining: usize,
        /// The unit's signature threshold.
        sig_threshold: u8,
        /// The unit's revocation threshold.
        rev_threshold: u8,
    },
    /// A threshold above the number of installed administrators (module 209/57, 209/58).
    #[error("thresholds {signature}/{revocation} need at least {} installed administrators, and {admins} {} installed", signature.max(revocation), if *admins == 1 { "is" } else { "are" })]
    ThresholdAboveAdmins {
        /// The signature threshold asked.
        signature: u8,
        /// The revocation threshold asked.
        revocation: u8,
        /// The administrators installed at that step.
        admins: usize,
    },
    /// Fewer of the keys that may sign are installed than the step needs (module 208).
    #[error("it needs {quorum}, and {} of the signature keys that may sign {} installed{} (installed administrators: {})", usable.len(), if usable.len() == 1 { "is" } else { "are" }, if usable.is_empty() { String::new() } else { format!(": {}", names(usable)) }, names(installed))]
    TooFewSigners {
        /// How many signatures, by which rule.
        quorum: Quorum,
        /// The keys that may sign and are installed at that step.
        usable: Vec<AdminName>,
        /// Every administrator installed at that step.
        installed: Vec<AdminName>,
    },
}

/// Names, comma-separated; `none` for none.
fn names(v: &[AdminName]) -> String {
    if v.is_empty() {
        return "none".to_owned();
    }
    v.iter()
        .map(AdminName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where in a unit's plan a problem is: its step, when the plan has several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepAt {
    /// 1-based.
    pub index: usize,
    /// Steps in the unit's plan.
    pub total: usize,
    /// The step.
    pub action: Action,
    /// The order of the unit's plan.
    pub order: Order,
}

/// A step that a unit would refuse, and why. The first such step of each unit is
/// reported, with every reason it would fail; what follows it depends on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitProblem {
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// The unit.
    pub unit: UnitId,
    /// The step, for a plan of several steps.
    pub step: Option<StepAt>,
    /// Why.
    pub violation: Violation,
}

impl fmt::Display for UnitProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crypto unit {}", self.num)?;
        if let Some(s) = &self.step {
            write!(f, ", step {} of {} ({}", s.index, s.total, s.action)?;
            if let Some(case) = s.order.case() {
                write!(f, "; order {case}")?;
            }
            f.write_str(")")?;
        }
        write!(f, ": {}", self.violation)
    }
}

/// The administrators and thresholds of a unit as its commands change them: the unit's
/// rules (`tke-unit`), replayed.
struct Sim {
    admins: Vec<AdminInfo>,
    sig: u8,
    rev: u8,
}

impl Sim {
    fn of(status: &UnitStatus) -> Self {
        Self {
            admins: status.admins.clone(),
            sig: status.sig_threshold,
            rev: status.rev_threshold,
        }
    }

    fn imprint_mode(&self) -> bool {
        self.sig == 0
    }

    fn installed(&self, admin: &AdminInfo) -> Option<&AdminInfo> {
        self.admins.iter().find(|a| a.ski == admin.ski)
    }

    /// The signatures `action` needs now.
    fn quorum(&self, action: &Action) -> Quorum {
        match (action, self.imprint_mode()) {
            (Action::SetThresholds { signature, .. }, true) => {
                Quorum::NewSignatureThreshold(signature.get())
            }
            (_, true) => Quorum::Unsigned,
            (Action::Remove(_), false) => Quorum::RevocationThreshold(self.rev),
            (_, false) => Quorum::SignatureThreshold(self.sig),
        }
    }

    /// The unit's checks of `action`, in its order; applies it when they pass.
    fn apply(&mut self, action: &Action) -> Result<(), Violation> {
        match action {
            Action::Add(cert) => {
                let admin = AdminInfo {
                    ski: cert.ski(),
                    name: cert.name().clone(),
                };
                if let Some(installed) = self.installed(&admin) {
                    return Err(Violation::AlreadyInstalled {
                        installed: installed.clone(),
                        admin,
                    });
                }
                if let Some(a) = self.admins.iter().find(|a| a.name.looks_like(&admin.name)) {
                    return Err(Violation::LookalikeInstalled {
                        admin: admin.name,
                        installed: a.name.clone(),
                    });
                }
                if self.admins.len() >= MAX_ADMINS {
                    return Err(Violation::Full { admin: admin.name });
                }
                self.admins.push(admin);
            }
            Action::Remove(admin) => {
                let Some(pos) = self.admins.iter().position(|a| a.ski == admin.ski) else {
                    return Err(Violation::NotInstalled {
                        admin: admin.clone(),
                    });
                };
                let remaining = self.admins.len() - 1;
                if !self.imprint_mode()
                    && (remaining < usize::from(self.sig) || remaining < usize::from(self.rev))
                {
                    return Err(Violation::BelowThreshold {
                        admin: admin.name.clone(),
                        remaining,
                        sig_threshold: self.sig,
                        rev_threshold: self.rev,
                    });
                }
                self.admins.remove(pos);
            }
            Action::SetThresholds {
                signature,
                revocation,
            } => {
                let admins = self.admins.len();
                if usize::from(signature.get().max(revocation.get())) > admins {
                    return Err(Violation::ThresholdAboveAdmins {
                        signature: signature.get(),
                        revocation: revocation.get(),
                        admins,
                    });
                }
                self.sig = signature.get();
                self.rev = revocation.get();
            }
        }
        Ok(())
    }

    /// Whether `action` would change nothing (thresholds already set).
    fn no_op(&self, action: &Action) -> bool {
        matches!(action, Action::SetThresholds { signature, revocation }
            if signature.get() == self.sig && revocation.get() == self.rev)
    }
}

/// Picks, from `keys` (the keys that may sign, in order of preference), up to `needed`
/// distinct ones installed among `installed`.
pub(crate) fn choose(keys: &[AdminInfo], installed: &[AdminInfo], needed: usize) -> Vec<AdminInfo> {
    let mut chosen: Vec<AdminInfo> = Vec::new();
    for k in keys {
        if chosen.len() == needed {
            break;
        }
        if installed.iter().any(|a| a.ski == k.ski) && !chosen.iter().any(|c| c.ski == k.ski) {
            chosen.push(k.clone());
        }
    }
    chosen
}

/// The actions of `change` on a unit in state `status`, in the order to send them.
fn actions(status: &UnitStatus, change: &Change) -> (Order, Vec<Action>) {
    let set = match change {
        Change::Add(cert) => return (Order::Single, vec![Action::Add(cert.clone())]),
        Change::Remove(admin) => return (Order::Single, vec![Action::Remove(admin.clone())]),
        Change::Thresholds {
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

/// Plans `change` on one unit, replaying its rules step by step.
///
/// # Errors
/// The problems of the first step the unit would refuse (every reason it would), or the
/// renames a whole-set change asks for.
pub fn plan_unit(
    num: usize,
    status: &UnitStatus,
    change: &Change,
    keys: &[AdminInfo],
) -> Result<UnitPlan, Vec<UnitProblem>> {
    let problem = |step: Option<StepAt>, violation| UnitProblem {
        num,
        unit: status.unit_id,
        step,
        violation,
    };
    if let Change::Set(set) = change {
        let renames: Vec<UnitProblem> = set
            .admins
            .iter()
            .filter_map(|c| {
                let a = status.admins.iter().find(|a| a.ski == c.ski())?;
                (a.name != *c.name()).then(|| {
                    problem(
                        None,
                        Violation::Renamed {
                            installed: a.clone(),
                            name: c.name().clone(),
                        },
                    )
                })
            })
            .collect();
        if !renames.is_empty() {
            return Err(renames);
        }
    }
    let (order, actions) = actions(status, change);
    let mut sim = Sim::of(status);
    // Thresholds already as asked are not set again; the rest are numbered as sent.
    let mut steps = Vec::with_capacity(actions.len());
    let total = {
        let mut s = Sim::of(status);
        actions
            .iter()
            .filter(|a| {
                let skip = s.no_op(a);
                // Counting only: a refused step is reported by the real run below.
                let _ = s.apply(a);
                !skip
            })
            .count()
    };
    for action in actions {
        if sim.no_op(&action) {
            continue;
        }
        let quorum = sim.quorum(&action);
        let signers = choose(keys, &sim.admins, quorum.count());
        let at = || {
            (total > 1).then(|| StepAt {
                index: steps.len() + 1,
                total,
                action: action.clone(),
                order,
            })
        };
        let mut found = Vec::new();
        if signers.len() < quorum.count() {
            found.push(problem(
                at(),
                Violation::TooFewSigners {
                    quorum,
                    usable: choose(keys, &sim.admins, MAX_ADMINS)
                        .into_iter()
                        .map(|a| a.name)
                        .collect(),
                    installed: sim.admins.iter().map(|a| a.name.clone()).collect(),
                },
            ));
        }
        if let Err(v) = sim.apply(&action) {
            found.insert(0, problem(at(), v));
        }
        if !found.is_empty() {
            return Err(found);
        }
        steps.push(Step {
            action,
            quorum,
            signers,
        });
    }
    Ok(UnitPlan {
        num,
        unit: status.unit_id,
        status: status.clone(),
        order,
        steps,
        expected: Expected {
            admins: sim.admins,
            sig_threshold: sim.sig,
            rev_threshold: sim.rev,
            ..Expected::of(status)
        },
    })
}

/// Plans `change` on every unit (`CRYPTO UNIT NUM` and state), with `keys` the keys that
/// may sign in order of preference. Pure: queries nothing, sends nothing.
///
/// # Errors
/// Every problem found: for a whole-set change, those of the set itself
/// ([`Problem::TooManyAdmins`], [`Problem::TooFewAdmins`], [`Problem::DuplicateAdmin`],
/// [`Problem::LookalikeAdmins`]); then, for each unit, the first step it would refuse
/// ([`Problem::AdminChange`]).
pub fn plan(
    units: &[(usize, &UnitStatus)],
    change: &Change,
    keys: &[AdminInfo],
) -> Result<Vec<UnitPlan>, Vec<Problem>> {
    let mut problems = Vec::new();
    if units.is_empty() {
        problems.push(Problem::NoUnits);
    }
    if let Change::Set(set) = change {
        let admins: Vec<AdminInfo> = set
            .admins
            .iter()
            .map(|c| AdminInfo {
                ski: c.ski(),
                name: c.name().clone(),
            })
            .collect();
        problems.extend(admin_list_problems(
            &admins,
            set.sig_threshold.get().max(set.rev_threshold.get()),
        ));
        if !problems.is_empty() {
            // Each unit would only repeat what is wrong with the set.
            return Err(problems);
        }
    }
    let mut plans = Vec::with_capacity(units.len());
    for (num, status) in units {
        match plan_unit(*num, status, change, keys) {
            Ok(p) => plans.push(p),
            Err(v) => problems.extend(v.into_iter().map(|u| Problem::AdminChange(Box::new(u)))),
        }
    }
    if problems.is_empty() {
        Ok(plans)
    } else {
        Err(problems)
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
