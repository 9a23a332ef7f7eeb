//! The master key register commands: commit, set immediate, clear new, clear current.
//!
//! Each acts on the selected units, one command per unit, as a [`Plan`]: every unit is
//! queried, and a unit in imprint mode, a register in the wrong state, values that differ
//! (commit) or too few installed keys that may sign are reported at once, before anything
//! is sent. Then each unit's command runs at the counter the plan read and each unit's
//! full post-condition is checked.
//!
//! | action | needs (new / current) | result (new / current) | signatures |
//! | --- | --- | --- | --- |
//! | [`RegisterAction::Commit`] | Full Uncommitted, one value in every unit / any | Full Committed / unchanged | the signature threshold |
//! | [`RegisterAction::SetImmediate`] | Full Committed / any | Empty / Valid (the new value) | one |
//! | [`RegisterAction::ClearNew`] | Full Uncommitted or Full Committed / any | Empty / unchanged | one |
//! | [`RegisterAction::ClearCurrent`] | any / Valid | unchanged / Empty | one; the signature threshold on a recovery unit |
//!
//! A recovery unit may hold the instance's last copy of the master key, so it clears its
//! current register only with its signature threshold, as it zeroizes (`docs/safety.md`,
//! rule 9). Clearing the current register can be guarded like zeroize
//! ([`MkRegister::plan_guarded`], [`crate::guard`]).

use tke_client::{Client, KnownUnit};
use tke_proto::{AdminInfo, Command, RegisterState, RegisterStatus, UnitStatus, UnitType, Vp};

use crate::{
    guard::{self, Destruction, Guard, Unguarded},
    plan::{Plan, PlannedCommand, Planner, UnitPlan},
    postcondition::Expected,
    signers::Quorum,
    CeremonyError, Problem, Rule,
};

/// One of the register commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterAction {
    /// Commit the new register (`cryptounit-mk-commit`).
    Commit,
    /// Promote the new register to current (`cryptounit-mk-setimm`).
    SetImmediate,
    /// Clear the new register (`cryptounit-mk-clrnew`).
    ClearNew,
    /// Clear the current register (`cryptounit-mk-clrcur`).
    ClearCurrent,
}

const FULL_UNCOMMITTED: &[RegisterState] = &[RegisterState::FullUncommitted];
const FULL_COMMITTED: &[RegisterState] = &[RegisterState::FullCommitted];
const FULL: &[RegisterState] = &[RegisterState::FullUncommitted, RegisterState::FullCommitted];
const VALID: &[RegisterState] = &[RegisterState::Valid];

impl RegisterAction {
    /// The ceremony's name in messages and errors.
    pub fn step(self) -> &'static str {
        match self {
            Self::Commit => "Committing the new master key register",
            Self::SetImmediate => "Setting the new master key register immediately",
            Self::ClearNew => "Clearing the new master key register",
            Self::ClearCurrent => "Clearing the current master key register",
        }
    }

    /// The states of the new register the command works on, if it needs one.
    fn new_states(self) -> Option<&'static [RegisterState]> {
        match self {
            Self::Commit => Some(FULL_UNCOMMITTED),
            Self::SetImmediate => Some(FULL_COMMITTED),
            Self::ClearNew => Some(FULL),
            Self::ClearCurrent => None,
        }
    }

    /// The states of the current register the command works on, if it needs one.
    fn current_states(self) -> Option<&'static [RegisterState]> {
        match self {
            Self::ClearCurrent => Some(VALID),
            _ => None,
        }
    }

    /// The signatures the unit requires (as `tke-unit` counts them), and what needs them.
    fn quorum(self, status: &UnitStatus) -> (Quorum, &'static str) {
        match self {
            Self::Commit => (
                Quorum::SignatureThreshold,
                "committing the new master key register",
            ),
            Self::SetImmediate => (
                Quorum::One,
                "setting the new master key register immediately",
            ),
            Self::ClearNew => (Quorum::One, "clearing the new master key register"),
            // Its last copy of the master key: the quorum, not one administrator.
            Self::ClearCurrent if status.unit_type == UnitType::Recovery => (
                Quorum::SignatureThreshold,
                "clearing the current master key register of a recovery unit",
            ),
            Self::ClearCurrent => (Quorum::One, "clearing the current master key register"),
        }
    }

    /// The command for a unit whose new register holds `vp` (commit: the common value).
    fn command(self, vp: Option<Vp>) -> Option<Command> {
        Some(match self {
            Self::Commit => Command::CommitMk(vp?),
            Self::SetImmediate => Command::SetImmediate(vp?),
            Self::ClearNew => Command::ClearNew,
            Self::ClearCurrent => Command::ClearCurrent,
        })
    }

    /// The unit's full state afterwards: as now, but the registers the command changes.
    fn expected(self, status: &UnitStatus) -> Expected {
        let mut e = Expected::of(status);
        match self {
            Self::Commit => {
                e.new_register = RegisterStatus {
                    state: RegisterState::FullCommitted,
                    vp: status.new_register.vp,
                }
            }
            Self::SetImmediate => {
                e.current_register = RegisterStatus {
                    state: RegisterState::Valid,
                    vp: status.new_register.vp,
                };
                e.new_register = RegisterStatus::EMPTY;
            }
            Self::ClearNew => e.new_register = RegisterStatus::EMPTY,
            Self::ClearCurrent => e.current_register = RegisterStatus::EMPTY,
        }
        e
    }
}

/// What the operator asked for: one register command on the selected units.
pub struct MkRegister<'c> {
    /// The command.
    pub action: RegisterAction,
    /// The selected units.
    pub units: Vec<&'c KnownUnit>,
    /// The signature keys that may sign, by administrator name and SKI, in order of
    /// preference: each unit takes the first ones installed on it, as many as it needs.
    pub keys: Vec<AdminInfo>,
}

impl<'c> MkRegister<'c> {
    /// Queries every unit and checks it, picks the signers of each unit's command and
    /// states what it must hold afterwards. Nothing is changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found: no unit
    /// ([`Problem::NoUnits`]), units that cannot be queried ([`Problem::Unreachable`]),
    /// units in imprint mode ([`Rule::ImprintMode`]), registers in a state the command
    /// does not work on ([`Rule::NewRegister`], [`Rule::CurrentRegister`]), for commit
    /// new registers that hold different values ([`Rule::NewRegisterValues`], one problem
    /// per unit), and units on which fewer of the keys are installed than the command
    /// needs ([`Problem::TooFewSigners`]).
    pub fn plan(self, client: &'c Client) -> Result<Plan<'c>, CeremonyError> {
        self.plan_guarded(client, &Unguarded)
    }

    /// As [`MkRegister::plan`]; clearing the current register also asks `guard` about
    /// every unit ([`crate::guard`]).
    ///
    /// # Errors
    /// As [`MkRegister::plan`], and [`Problem::Guarded`] for each unit `guard` refuses.
    pub fn plan_guarded(
        self,
        client: &'c Client,
        guard: &dyn Guard,
    ) -> Result<Plan<'c>, CeremonyError> {
        let action = self.action;
        let mut planner = Planner::start(client, action.step(), self.units, self.keys);
        let reachable = planner.reachable();
        let problem = |unit: &KnownUnit, rule| Problem::Precondition {
            num: unit.num,
            unit: unit.id(),
            rule,
        };
        let mut fit = Vec::with_capacity(reachable.len());
        for (unit, status) in reachable {
            let rule = if status.imprint_mode() {
                Some(Rule::ImprintMode)
            } else if let Some(needed) = action
                .new_states()
                .filter(|n| !n.contains(&status.new_register.state))
            {
                Some(Rule::NewRegister {
                    found: status.new_register.state,
                    needed,
                })
            } else {
                action
                    .current_states()
                    .filter(|n| !n.contains(&status.current_register.state))
                    .map(|needed| Rule::CurrentRegister {
                        found: status.current_register.state,
                        needed,
                    })
            };
            match rule {
                Some(rule) => planner.problem(problem(unit, rule)),
                None => fit.push((unit, status)),
            }
        }
        // Commit carries one value: every unit's new register must hold it.
        let mut values: Vec<Vp> = Vec::new();
        if action == RegisterAction::Commit {
            for vp in fit.iter().filter_map(|(_, s)| s.new_register.vp) {
                if !values.contains(&vp) {
                    values.push(vp);
                }
            }
            if values.len() > 1 {
                for (unit, status) in &fit {
                    if let Some(vp) = status.new_register.vp {
                        planner.problem(problem(
                            unit,
                            Rule::NewRegisterValues {
                                vp,
                                values: values.len(),
                            },
                        ));
                    }
                }
            }
        }
        for (unit, status) in fit {
            if action == RegisterAction::ClearCurrent {
                if let Some(p) = guard::ask(guard, unit, &status, Destruction::ClearCurrent) {
                    planner.problem(p);
                }
            }
            let (quorum, what) = action.quorum(&status);
            let signers = planner.signers(unit, &status, &status.admins, quorum, what);
            let vp = match action {
                RegisterAction::Commit => values.first().copied(),
                _ => status.new_register.vp,
            };
            // A full register always has a VP (the client checks every status); a
            // unit without one is left out rather than sent a command without it.
            let Some(command) = action.command(vp) else {
                planner.problem(problem(
                    unit,
                    Rule::NewRegister {
                        found: status.new_register.state,
                        needed: action.new_states().unwrap_or(FULL),
                    },
                ));
                continue;
            };
            planner.unit(UnitPlan {
                unit,
                expected: action.expected(&status),
                status,
                commands: vec![PlannedCommand {
                    command: command.into(),
                    signers,
                }],
            });
        }
        planner.finish()
    }
}
