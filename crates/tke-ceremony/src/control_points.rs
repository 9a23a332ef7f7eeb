//! Control points: set or reset points of the control point mask on the selected units
//! (the vendor's `cryptounit-cp`, `cryptounit-cp-btc`, `-eddsa`, `-sig-other`).
//!
//! A [`ControlPointChange`] names the points to set and the points to reset; its plan, on
//! the shared [`Plan`], queries every unit and reports at once every unit in imprint mode
//! (a unit refuses control point commands there, 179) and every unit on which fewer of the
//! keys that may sign are installed than its signature threshold. A unit whose mask holds
//! the wanted value already gets no command, and needs no signature. Each other unit gets
//! `addControlPoints` with the points it lacks and `removeControlPoints` with the points it
//! has, both signed by its signature threshold; afterwards its mask must be exactly the
//! one planned, and everything else as it was.
//!
//! ```
//! use std::sync::Arc;
//! use tke_ceremony::ControlPointChange;
//! use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
//! use tke_proto::{ControlPoint, ControlPoints};
//!
//! let dir = tempfile::tempdir()?;
//! let fleet = EmbeddedFleet::create(dir.path(), FleetSpec::default())?;
//! let ca = fleet.ca().clone();
//! let client = Client::connect(vec![(Arc::new(fleet) as Arc<dyn Transport>, ca)])?;
//!
//! // New units are in imprint mode: no control point changes there.
//! let change = ControlPointChange {
//!     units: client.units().iter().collect(),
//!     set: ControlPoints::NONE,
//!     reset: ControlPoints::of(&[ControlPoint::BTC]),
//!     keys: vec![],
//! };
//! assert!(change.plan(&client).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use tke_client::{Client, KnownUnit};
use tke_proto::{AdminInfo, Command, ControlPoints};

use crate::{
    plan::{Plan, PlannedCommand, Planner, UnitPlan},
    postcondition::Expected,
    signers::Quorum,
    CeremonyError, Problem, Rule,
};

/// The ceremony's name in messages and errors.
pub const STEP_CONTROL_POINTS: &str = "Changing control points";

/// What the operator asked for: control points to set and to reset on the selected units.
pub struct ControlPointChange<'c> {
    /// The selected units.
    pub units: Vec<&'c KnownUnit>,
    /// The points to set.
    pub set: ControlPoints,
    /// The points to reset. A point may not be in both masks.
    pub reset: ControlPoints,
    /// The signature keys that may sign, by administrator name and SKI, in order of
    /// preference: each unit takes the first ones installed on it, as many as its
    /// signature threshold.
    pub keys: Vec<AdminInfo>,
}

impl<'c> ControlPointChange<'c> {
    /// Queries every unit and checks it, plans the commands of each unit whose mask
    /// differs from the wanted one (none for the others) with their signers, and states
    /// what each unit must hold afterwards. Nothing is changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found: points both to set and to
    /// reset ([`Problem::ControlPointsSetAndReset`]), no unit ([`Problem::NoUnits`]),
    /// units that cannot be queried ([`Problem::Unreachable`]), units in imprint mode
    /// ([`Rule::ImprintMode`]), and units that need a command on which fewer of the keys
    /// are installed than their signature threshold ([`Problem::TooFewSigners`]).
    pub fn plan(self, client: &'c Client) -> Result<Plan<'c>, CeremonyError> {
        let (set, reset) = (self.set, self.reset);
        let both: ControlPoints = set.iter().filter(|p| reset.contains(*p)).collect();
        let mut planner = Planner::start(client, STEP_CONTROL_POINTS, self.units, self.keys);
        if !both.is_empty() {
            planner.problem(Problem::ControlPointsSetAndReset {
                points: both.iter().collect(),
            });
        }
        for (unit, status) in planner.reachable() {
            if status.imprint_mode() {
                planner.problem(Problem::Precondition {
                    num: unit.num,
                    unit: unit.id(),
                    rule: Rule::ImprintMode,
                });
                continue;
            }
            let before = status.control_points;
            // Only the points that change: a point already as wanted is not sent.
            let add = set.difference(before);
            let remove: ControlPoints = reset.iter().filter(|p| before.contains(*p)).collect();
            let mut commands = Vec::new();
            if !add.is_empty() || !remove.is_empty() {
                let signers = planner.signers(
                    unit,
                    &status,
                    &status.admins,
                    Quorum::SignatureThreshold,
                    "changing control points",
                );
                for (mask, command) in [
                    (add, Command::AddControlPoints(add)),
                    (remove, Command::RemoveControlPoints(remove)),
                ] {
                    if !mask.is_empty() {
                        commands.push(PlannedCommand {
                            command: command.into(),
                            signers: signers.clone(),
                        });
                    }
                }
            }
            let expected = Expected {
                control_points: Some(before.union(set).difference(reset)),
                ..Expected::of(&status)
            };
            planner.unit(UnitPlan {
                unit,
                status,
                commands,
                expected,
            });
        }
        planner.finish()
    }
}
