//! The common shape of a manual ceremony: per unit, commands in order and who signs them,
//! every problem found before the first command, the full post-condition checked after.
//!
//! A ceremony builds its plan with a [`Planner`]: [`Planner::start`] queries every unit
//! (a unit that cannot be queried is a problem, not a skip), the ceremony looks at each
//! unit's state, records each precondition that fails ([`Planner::problem`]), picks the
//! signers of each command ([`Planner::signers`], which records
//! [`Problem::TooFewSigners`] when the keys that may sign are not enough) and states what
//! the unit must hold afterwards ([`Planner::unit`]). [`Planner::finish`] returns the
//! [`Plan`] only if no problem was found: so nothing is sent to any unit unless every
//! check the ceremony can make up front has passed.
//!
//! [`Plan::execute`] then runs each unit's commands in order, units in parallel, at the
//! transaction counters the plan read ([`Counters`]): a command from anyone else since
//! the plan was made stops the unit as interference instead of being built upon. Last, it
//! checks every unit's full post-condition ([`Expected`]): administrators by SKI,
//! thresholds, both registers, no pending importer, and the counter.
//!
//! A command's input may depend on what the unit answered to the command before it (the
//! parts of `importMkParts` are sealed to the importer key `generateImporter` answers):
//! such a command is planned as [`ToSend::FromPrevious`], with its signers, and made when
//! it is sent.
//!
//! ```
//! use std::sync::Arc;
//! use tke_ceremony::{plan::Planner, signers::Quorum, Expected};
//! use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
//! use tke_proto::{Command, Threshold};
//!
//! let dir = tempfile::tempdir()?;
//! let fleet = EmbeddedFleet::create(dir.path(), FleetSpec::default())?;
//! let ca = fleet.ca().clone();
//! let client = Client::connect(vec![(Arc::new(fleet) as Arc<dyn Transport>, ca)])?;
//! let units: Vec<_> = client.units().iter().collect();
//!
//! // A plan that clears the new register of units in imprint mode is refused up front:
//! // master key commands need the thresholds set.
//! let mut planner = Planner::start(&client, "Clearing the new master key register", units, vec![]);
//! for (unit, status) in planner.reachable() {
//!     if status.imprint_mode() {
//!         planner.problem(tke_ceremony::Problem::Precondition {
//!             num: unit.num,
//!             unit: unit.id(),
//!             rule: tke_ceremony::Rule::ImprintMode,
//!         });
//!     }
//! }
//! assert!(planner.finish().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{borrow::Cow, fmt, sync::Arc};

use tke_client::{fanout::parallel, Client, ClientError, KnownUnit};
use tke_proto::{AdminInfo, Command, CommandId, UnitStatus};
use tke_sigkey::Signer;

use crate::{
    on_all,
    postcondition::{check_each, interference, Counters, Expected},
    signers::{pick, Quorum},
    CeremonyError, Problem,
};

/// One command of a plan and the administrators who sign it (none in imprint mode).
#[derive(Clone, Debug)]
pub struct PlannedCommand {
    /// The command (`Command::ClearNew.into()`), or how to make it from the unit's answer
    /// to the command before it.
    pub command: ToSend,
    /// Who signs it, in order of preference.
    pub signers: Vec<AdminInfo>,
}

/// What a planned command sends.
#[derive(Clone)]
pub enum ToSend {
    /// A command known when the plan is made.
    Ready(Command),
    /// A command made when it is sent, from the unit's answer to the command before it.
    FromPrevious(FromPrevious),
}

/// Makes a command from a unit and its answer to the previous command.
type MakeCommand = dyn Fn(&KnownUnit, &[u8]) -> Result<Command, ClientError> + Send + Sync;

/// A command whose input is the unit's answer to the command before it, transformed
/// (sealed master key parts for the importer key a unit answered). What it captures lives
/// as long as the plan: secrets in it are dropped, and zeroized, with the plan.
#[derive(Clone)]
pub struct FromPrevious {
    id: CommandId,
    make: Arc<MakeCommand>,
}

impl FromPrevious {
    /// A command of kind `id` that `make` builds from the unit and its answer to the
    /// previous command (an empty answer for a unit's first command). An error of `make`
    /// stops that unit: nothing more is sent to it.
    pub fn new(
        id: CommandId,
        make: impl Fn(&KnownUnit, &[u8]) -> Result<Command, ClientError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            id,
            make: Arc::new(make),
        }
    }
}

impl ToSend {
    /// The command's kind.
    pub fn id(&self) -> CommandId {
        match self {
            Self::Ready(c) => c.id(),
            Self::FromPrevious(f) => f.id,
        }
    }

    /// The command to send to `unit`, whose answer to the previous command is `previous`.
    fn make(&self, unit: &KnownUnit, previous: &[u8]) -> Result<Cow<'_, Command>, ClientError> {
        match self {
            Self::Ready(c) => Ok(Cow::Borrowed(c)),
            Self::FromPrevious(f) => (f.make)(unit, previous).map(Cow::Owned),
        }
    }
}

impl From<Command> for ToSend {
    fn from(c: Command) -> Self {
        Self::Ready(c)
    }
}

impl PartialEq<Command> for ToSend {
    fn eq(&self, other: &Command) -> bool {
        matches!(self, Self::Ready(c) if c == other)
    }
}

impl fmt::Debug for ToSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(c) => c.fmt(f),
            Self::FromPrevious(p) => write!(f, "FromPrevious({:?})", p.id),
        }
    }
}

/// What one unit receives, and what it must hold afterwards.
#[derive(Clone, Debug)]
pub struct UnitPlan<'c> {
    /// The unit.
    pub unit: &'c KnownUnit,
    /// Its state when the plan was made.
    pub status: UnitStatus,
    /// The commands, in the order they are sent.
    pub commands: Vec<PlannedCommand>,
    /// The unit's full state after the last command.
    pub expected: Expected,
}

impl UnitPlan<'_> {
    /// The administrators who sign any of this unit's commands, each once.
    pub fn signed_by(&self) -> Vec<&AdminInfo> {
        let mut all: Vec<&AdminInfo> = Vec::new();
        for s in self.commands.iter().flat_map(|c| &c.signers) {
            if !all.iter().any(|a| a.ski == s.ski) {
                all.push(s);
            }
        }
        all
    }
}

/// Builds a [`Plan`], gathering every problem.
pub struct Planner<'c> {
    client: &'c Client,
    step: &'static str,
    keys: Vec<AdminInfo>,
    reachable: Vec<(&'c KnownUnit, UnitStatus)>,
    units: Vec<UnitPlan<'c>>,
    problems: Vec<Problem>,
}

impl<'c> Planner<'c> {
    /// Queries every unit, in parallel. `step` names the ceremony in errors (the vendor's
    /// progress line, e.g. "Committing the new master key register"); `keys` are the
    /// signature keys that may sign, in order of preference. No unit given, and each unit
    /// that cannot be queried, are problems.
    pub fn start(
        client: &'c Client,
        step: &'static str,
        units: Vec<&'c KnownUnit>,
        keys: Vec<AdminInfo>,
    ) -> Self {
        let mut problems = Vec::new();
        if units.is_empty() {
            problems.push(Problem::NoUnits);
        }
        let mut reachable = Vec::with_capacity(units.len());
        for (u, s) in units.iter().zip(parallel(&units, |u| client.query(u))) {
            match s {
                Ok(status) => reachable.push((*u, status)),
                Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
            }
        }
        Self {
            client,
            step,
            keys,
            reachable,
            units: Vec::new(),
            problems,
        }
    }

    /// The units that answered, with their state, in the order given.
    pub fn reachable(&self) -> Vec<(&'c KnownUnit, UnitStatus)> {
        self.reachable.clone()
    }

    /// The keys that may sign, in order of preference.
    pub fn keys(&self) -> &[AdminInfo] {
        &self.keys
    }

    /// Records a problem; the plan will be refused.
    pub fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// The problems recorded so far.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Picks the signers of a command that needs `quorum` on `unit`, from the keys that
    /// may sign, installed in `installed` (usually `status.admins`; a step after an
    /// administrator change passes the set as it will be then). Records
    /// [`Problem::TooFewSigners`] naming `action` when they are not enough.
    pub fn signers(
        &mut self,
        unit: &KnownUnit,
        status: &UnitStatus,
        installed: &[AdminInfo],
        quorum: Quorum,
        action: &'static str,
    ) -> Vec<AdminInfo> {
        let (chosen, problem) = pick(
            &self.keys,
            (unit.num, unit.id()),
            status,
            installed,
            quorum,
            action,
        );
        self.problems.extend(problem);
        chosen
    }

    /// Adds a unit's commands and the state it must hold afterwards.
    pub fn unit(&mut self, plan: UnitPlan<'c>) {
        self.units.push(plan);
    }

    /// The planner, if no problem was found so far: for a ceremony that checks in two
    /// stages and reports what the first finds before the second needs anything more of
    /// the operator (a master key load checks the parts' values once their owners opened
    /// them).
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem, in the order found.
    pub fn check(self) -> Result<Self, CeremonyError> {
        if self.problems.is_empty() {
            Ok(self)
        } else {
            Err(self.refuse())
        }
    }

    /// The error that refuses the plan: every problem recorded, in the order found.
    pub fn refuse(self) -> CeremonyError {
        CeremonyError::Problems(self.problems)
    }

    /// The plan, if no problem was found.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem, in the order found.
    pub fn finish(self) -> Result<Plan<'c>, CeremonyError> {
        if self.problems.is_empty() {
            Ok(Plan {
                client: self.client,
                step: self.step,
                keys: self.keys,
                units: self.units,
            })
        } else {
            Err(CeremonyError::Problems(self.problems))
        }
    }
}

/// A checked plan, ready to run once.
pub struct Plan<'c> {
    client: &'c Client,
    step: &'static str,
    keys: Vec<AdminInfo>,
    units: Vec<UnitPlan<'c>>,
}

/// What a plan did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanReport {
    /// Per unit, in plan order: its `CRYPTO UNIT NUM` and the output of each command.
    pub outputs: Vec<(usize, Vec<Vec<u8>>)>,
}

impl<'c> Plan<'c> {
    /// The units, in the order given, with their state, commands and expected state.
    pub fn units(&self) -> &[UnitPlan<'c>] {
        &self.units
    }

    /// The client the plan runs on.
    pub fn client(&self) -> &'c Client {
        self.client
    }

    /// The ceremony's name (as given to [`Planner::start`]).
    pub fn step(&self) -> &'static str {
        self.step
    }

    /// The keys [`Self::execute`] needs, each once, in the order of preference given.
    pub fn keys_needed(&self) -> Vec<&AdminInfo> {
        let used = |k: &AdminInfo| {
            self.units
                .iter()
                .flat_map(|u| &u.commands)
                .any(|c| c.signers.iter().any(|s| s.ski == k.ski))
        };
        let mut needed: Vec<&AdminInfo> = Vec::new();
        for k in &self.keys {
            if used(k) && !needed.iter().any(|n| n.ski == k.ski) {
                needed.push(k);
            }
        }
        needed
    }

    /// Runs every unit's commands in order, units in parallel, each signed by its
    /// planned signers (matched by SKI in `signers`) at the counter the plan read, then
    /// checks every unit's full post-condition. The plan is consumed: it runs once.
    ///
    /// # Errors
    /// [`CeremonyError::SignerMissing`] when a key the plan needs is not in `signers`
    /// (nothing is changed); [`CeremonyError::Interference`] when someone else sent a
    /// unit commands since the plan was made; [`CeremonyError::Step`] naming every unit
    /// that failed (a unit stops at its first failed command; the other units went on);
    /// [`CeremonyError::PostCondition`] naming each unit that does not hold what was
    /// planned.
    pub fn execute(self, signers: &[&dyn Signer]) -> Result<PlanReport, CeremonyError> {
        for k in self.keys_needed() {
            if !signers.iter().any(|s| s.ski() == k.ski) {
                return Err(CeremonyError::SignerMissing {
                    name: k.name.clone(),
                    ski: k.ski,
                });
            }
        }
        let client = self.client;
        let counters = Counters::default();
        for u in &self.units {
            counters.start(u.unit, &u.status);
        }
        let units: Vec<&KnownUnit> = self.units.iter().map(|u| u.unit).collect();
        let outputs = on_all(self.step, &units, |unit| {
            let Some(plan) = self.units.iter().find(|p| p.unit.id() == unit.id()) else {
                return Ok(Vec::new());
            };
            let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(plan.commands.len());
            for c in &plan.commands {
                let keys: Vec<&dyn Signer> = c
                    .signers
                    .iter()
                    .filter_map(|k| signers.iter().find(|s| s.ski() == k.ski).copied())
                    .collect();
                let previous = outputs.last().map(Vec::as_slice).unwrap_or_default();
                let command = c.command.make(unit, previous)?;
                outputs.push(counters.run(client, unit, &command, &keys)?);
            }
            Ok(outputs)
        })
        .map_err(|e| {
            interference(client, e, |u| {
                // With one command, the interference came before it: the unit differs from
                // the state planned on. After several, that state is no reference.
                self.units
                    .iter()
                    .find(|p| p.unit.id() == u.id() && p.commands.len() == 1)
                    .map(|p| Expected::of(&p.status))
            })
        })?;
        let expected: Vec<(&KnownUnit, &Expected)> =
            self.units.iter().map(|u| (u.unit, &u.expected)).collect();
        check_each(client, &expected, Some(&counters), self.step)?;
        Ok(PlanReport {
            outputs: units.iter().map(|u| u.num).zip(outputs).collect(),
        })
    }
}
