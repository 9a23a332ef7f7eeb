//! Post-conditions: the full state a ceremony must leave on every unit, checked exactly.
//!
//! Counting is not checking: "two administrators" holds just as well when one of them was
//! replaced by a stranger's certificate under the same name, which anyone who can reach a
//! unit may install while it is in imprint mode. So a ceremony states what every unit must
//! hold — the administrators by SKI (and name), both thresholds, both master key
//! registers, no pending importer, the control points — and [`Expected::check`] queries every unit and reports
//! each difference, typed, per unit. Every ceremony ends with such a check, and auto-init
//! runs one as soon as it leaves imprint mode, before any master key exists.
//!
//! A ceremony also accounts for every transaction counter value it uses ([`Counters`]):
//! each of its commands is sent at the counter its previous command left, never retried,
//! so a command from anyone else in between is reported as interference
//! ([`CeremonyError::Interference`]) instead of being built upon.

use std::{collections::HashMap, fmt, sync::Mutex};

use tke_client::{fanout::parallel, Client, ClientError, KnownUnit};
use tke_proto::{
    AdminInfo, Command, ControlPoints, RegisterState, RegisterStatus, UnitId, UnitStatus,
};
use tke_sigkey::Signer;

use crate::CeremonyError;

/// The state a unit must hold after a ceremony (or one of its steps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Exactly these administrators, compared by SKI and name; order does not matter.
    pub admins: Vec<AdminInfo>,
    /// The signature threshold (0 in imprint mode).
    pub sig_threshold: u8,
    /// The revocation signature threshold (0 in imprint mode).
    pub rev_threshold: u8,
    /// The new master key register. A full state without a VP stands for that state with
    /// whatever value (the value of a key loaded from parts is known only to the units:
    /// the workstation never computes it; its ceremony checks the value the units answer).
    pub new_register: RegisterStatus,
    /// The current master key register (a full state without a VP as for `new_register`).
    pub current_register: RegisterStatus,
    /// Whether an importer key waits for an import.
    pub importer_pending: bool,
    /// Exactly this control point mask; `None` leaves the mask out of the check (a check
    /// of several units against one state, where each unit keeps its own mask).
    pub control_points: Option<ControlPoints>,
}

/// One way a unit differs from what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Deviation {
    /// The administrators differ: some are installed that were not asked for, or some
    /// asked for are absent.
    #[error("administrators differ: {}", admin_lists(foreign, missing))]
    Administrators {
        /// Installed, but not asked for (a certificate under a known name with another
        /// SKI is one of these).
        foreign: Vec<AdminInfo>,
        /// Asked for, but not installed.
        missing: Vec<AdminInfo>,
    },
    /// The signature threshold differs.
    #[error("signature threshold {found}, expected {expected}")]
    SignatureThreshold {
        /// Asked for.
        expected: u8,
        /// Found.
        found: u8,
    },
    /// The revocation signature threshold differs.
    #[error("revocation signature threshold {found}, expected {expected}")]
    RevocationThreshold {
        /// Asked for.
        expected: u8,
        /// Found.
        found: u8,
    },
    /// The new master key register differs.
    #[error(
        "new master key register {}, expected {}",
        Register(found),
        Register(expected)
    )]
    NewRegister {
        /// Expected.
        expected: RegisterStatus,
        /// Found.
        found: RegisterStatus,
    },
    /// The current master key register differs.
    #[error(
        "current master key register {}, expected {}",
        Register(found),
        Register(expected)
    )]
    CurrentRegister {
        /// Expected.
        expected: RegisterStatus,
        /// Found.
        found: RegisterStatus,
    },
    /// An importer key is pending where none should be, or the reverse.
    #[error("importer key pending: {found}, expected {}", !found)]
    ImporterPending {
        /// Found.
        found: bool,
    },
    /// The control point mask differs.
    #[error("control points set: {}, expected {}", Points(found), Points(expected))]
    ControlPoints {
        /// Expected.
        expected: ControlPoints,
        /// Found.
        found: ControlPoints,
    },
    /// The transaction counter is not the one the ceremony's own commands account for:
    /// someone else sent the unit commands.
    #[error("transaction counter {found}, expected {expected}: someone else sent it commands")]
    Counter {
        /// The counter the ceremony's commands left.
        expected: u64,
        /// The counter the unit reported.
        found: u64,
    },
}

/// How one unit differs from what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitDeviations {
    /// Its `CRYPTO UNIT NUM`.
    pub num: usize,
    /// The unit.
    pub unit: UnitId,
    /// Every difference found, counter first.
    pub deviations: Vec<Deviation>,
}

impl fmt::Display for UnitDeviations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crypto unit {} ({}): ", self.num, self.unit.uuid())?;
        let all: Vec<String> = self.deviations.iter().map(ToString::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

/// Lists of administrators as `name (SKI hex)`.
fn admin_lists(foreign: &[AdminInfo], missing: &[AdminInfo]) -> String {
    let list = |v: &[AdminInfo]| {
        v.iter()
            .map(|a| format!("{} (SKI {})", a.name.as_str(), a.ski.to_hex()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (foreign.is_empty(), missing.is_empty()) {
        (false, false) => format!("foreign {}; missing {}", list(foreign), list(missing)),
        (false, true) => format!("foreign {}", list(foreign)),
        (true, _) => format!("missing {}", list(missing)),
    }
}

/// The points set in a mask, named where they have a name (`55, XCP_CPB_BTC`), or `none`.
struct Points<'a>(&'a ControlPoints);

impl fmt::Display for Points<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let all: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        f.write_str(&all.join(", "))
    }
}

/// Whether a register holds what was expected: the same state and VP, or, for a full
/// state expected without a VP, that state with any value.
fn register_matches(expected: &RegisterStatus, found: &RegisterStatus) -> bool {
    match expected.vp {
        None if expected.state != RegisterState::Empty => {
            found.state == expected.state && found.vp.is_some()
        }
        _ => expected == found,
    }
}

/// A register as `state` or `state (VP hex)`.
struct Register<'a>(&'a RegisterStatus);

impl fmt::Display for Register<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.state.label())?;
        match self.0.vp {
            Some(vp) => write!(f, " (VP {})", vp.to_hex()),
            None => Ok(()),
        }
    }
}

impl Expected {
    /// A unit in imprint mode holding exactly `admins` and nothing else: what a zeroize
    /// leaves (with no administrators), and what auto-init builds up before it sets the
    /// thresholds. The control points are not checked: these ceremonies leave each unit's
    /// own.
    pub fn imprint(admins: Vec<AdminInfo>) -> Self {
        Self {
            admins,
            sig_threshold: 0,
            rev_threshold: 0,
            new_register: RegisterStatus::EMPTY,
            current_register: RegisterStatus::EMPTY,
            importer_pending: false,
            control_points: None,
        }
    }

    /// Exactly the state `status` reports (to tell later what changed on a unit).
    pub fn of(status: &UnitStatus) -> Self {
        Self {
            admins: status.admins.clone(),
            sig_threshold: status.sig_threshold,
            rev_threshold: status.rev_threshold,
            new_register: status.new_register,
            current_register: status.current_register,
            importer_pending: status.importer_pending,
            control_points: Some(status.control_points),
        }
    }

    /// How `status` differs from this state in its administrators and thresholds only.
    pub fn setup_deviations(&self, status: &UnitStatus) -> Vec<Deviation> {
        let mut found = Vec::new();
        let foreign: Vec<AdminInfo> = status
            .admins
            .iter()
            .filter(|a| !self.admins.contains(a))
            .cloned()
            .collect();
        let missing: Vec<AdminInfo> = self
            .admins
            .iter()
            .filter(|a| !status.admins.contains(a))
            .cloned()
            .collect();
        if !foreign.is_empty() || !missing.is_empty() {
            found.push(Deviation::Administrators { foreign, missing });
        }
        if status.sig_threshold != self.sig_threshold {
            found.push(Deviation::SignatureThreshold {
                expected: self.sig_threshold,
                found: status.sig_threshold,
            });
        }
        if status.rev_threshold != self.rev_threshold {
            found.push(Deviation::RevocationThreshold {
                expected: self.rev_threshold,
                found: status.rev_threshold,
            });
        }
        found
    }

    /// Every way `status` differs from this state.
    pub fn deviations(&self, status: &UnitStatus) -> Vec<Deviation> {
        let mut found = self.setup_deviations(status);
        if !register_matches(&self.new_register, &status.new_register) {
            found.push(Deviation::NewRegister {
                expected: self.new_register,
                found: status.new_register,
            });
        }
        if !register_matches(&self.current_register, &status.current_register) {
            found.push(Deviation::CurrentRegister {
                expected: self.current_register,
                found: status.current_register,
            });
        }
        if status.importer_pending != self.importer_pending {
            found.push(Deviation::ImporterPending {
                found: status.importer_pending,
            });
        }
        if let Some(expected) = self.control_points {
            if status.control_points != expected {
                found.push(Deviation::ControlPoints {
                    expected,
                    found: status.control_points,
                });
            }
        }
        found
    }

    /// Queries every unit, in parallel, and checks that each holds exactly this state
    /// and, when `counters` is given, the counter the ceremony's own commands left.
    /// `after` names what was just done (for the error).
    ///
    /// # Errors
    /// [`CeremonyError::Step`] when units cannot be queried (a unit nobody could ask is
    /// not known to be right); [`CeremonyError::PostCondition`] naming every unit that
    /// differs and how.
    pub fn check(
        &self,
        client: &Client,
        units: &[&KnownUnit],
        counters: Option<&Counters>,
        after: &'static str,
    ) -> Result<(), CeremonyError> {
        let each: Vec<(&KnownUnit, &Expected)> = units.iter().map(|u| (*u, self)).collect();
        check_each(client, &each, counters, after)
    }
}

/// [`Expected::check`] with a state of its own for each unit.
///
/// # Errors
/// As [`Expected::check`].
pub fn check_each(
    client: &Client,
    units: &[(&KnownUnit, &Expected)],
    counters: Option<&Counters>,
    after: &'static str,
) -> Result<(), CeremonyError> {
    let only: Vec<&KnownUnit> = units.iter().map(|(u, _)| *u).collect();
    let statuses = crate::on_all(after, &only, |u| client.query(u))?;
    let mut differing = Vec::new();
    for ((u, expected), s) in units.iter().zip(&statuses) {
        let mut deviations = Vec::new();
        if let Some(counter) = counters.and_then(|c| c.get(u)) {
            if counter != s.counter {
                deviations.push(Deviation::Counter {
                    expected: counter,
                    found: s.counter,
                });
            }
        }
        deviations.extend(expected.deviations(s));
        if !deviations.is_empty() {
            differing.push(UnitDeviations {
                num: u.num,
                unit: u.id(),
                deviations,
            });
        }
    }
    if differing.is_empty() {
        Ok(())
    } else {
        Err(CeremonyError::PostCondition {
            after,
            units: differing,
        })
    }
}

/// The transaction counter of each unit as a ceremony's own commands left it.
///
/// Started from one authenticated query per unit; every command is then sent at exactly
/// the next value ([`Client::run_counted`]) and never retried.
#[derive(Debug, Default)]
pub struct Counters(Mutex<HashMap<UnitId, u64>>);

impl Counters {
    /// Starts accounting for `unit` at the counter of `status`, its state just queried.
    pub fn start(&self, unit: &KnownUnit, status: &UnitStatus) {
        self.map().insert(unit.id(), status.counter);
    }

    /// The counter the ceremony's commands left on `unit`; `None` if not accounted for.
    pub fn get(&self, unit: &KnownUnit) -> Option<u64> {
        self.map().get(&unit.id()).copied()
    }

    /// Runs `command` on `unit` at the accounted counter and accounts for the value it
    /// used. A unit not yet accounted for is queried first.
    ///
    /// # Errors
    /// [`ClientError::Interference`] when the unit's counter moved; as
    /// [`Client::run_counted`] otherwise.
    pub fn run(
        &self,
        client: &Client,
        unit: &KnownUnit,
        command: &Command,
        signers: &[&dyn Signer],
    ) -> Result<Vec<u8>, ClientError> {
        let counter = match self.get(unit) {
            Some(c) => c,
            None => {
                let s = client.query(unit)?;
                self.start(unit, &s);
                s.counter
            }
        };
        let out = client.run_counted(unit, command, signers, counter)?;
        self.map().insert(unit.id(), counter.wrapping_add(1));
        Ok(out)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<UnitId, u64>> {
        // A poisoned map only means a worker panicked; the counters stay valid.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Turns a step's failures into [`CeremonyError::Interference`] when any of them is a
/// moved counter, querying each interfered unit to say what it holds now compared with
/// `before` (the state the ceremony had left on it, when known). Other failures stay
/// [`CeremonyError::Step`].
pub(crate) fn interference(
    client: &Client,
    error: CeremonyError,
    before: impl Fn(&KnownUnit) -> Option<Expected> + Sync,
) -> CeremonyError {
    let CeremonyError::Step { step, failures } = error else {
        return error;
    };
    let mut moved = Vec::new();
    let mut others = Vec::new();
    for (num, e) in failures {
        match e {
            ClientError::Interference {
                unit,
                expected,
                found,
                ..
            } => moved.push((num, unit, expected, found)),
            e => others.push((num, e)),
        }
    }
    if moved.is_empty() {
        return CeremonyError::Step {
            step,
            failures: others,
        };
    }
    let units = parallel(&moved, |&(num, unit, expected, found)| {
        let mut deviations = vec![Deviation::Counter { expected, found }];
        let state = client.unit(&unit).and_then(|u| before(u).map(|e| (u, e)));
        if let Some((u, expected)) = state {
            // Best effort: the interference is reported whether or not this answers.
            if let Ok(s) = client.query(u) {
                deviations.extend(expected.deviations(&s));
            }
        }
        UnitDeviations {
            num,
            unit,
            deviations,
        }
    });
    CeremonyError::Interference {
        step,
        units,
        failures: others,
    }
}
