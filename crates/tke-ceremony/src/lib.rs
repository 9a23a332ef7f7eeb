#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use tke_client::{fanout::parallel, ClientError, KnownUnit};

pub mod admin_set;
pub mod approvals;
pub mod auto_init;
pub mod compare;
pub mod control_points;
pub mod crash;
mod error;
pub mod failover;
pub mod guard;
pub mod installed;
pub mod mk_load;
pub mod plan;
pub mod postcondition;
pub mod recover;
pub mod registers;
pub mod rotate;
pub mod signers;
mod transfer;
pub mod zeroize;

pub use admin_set::{AdminChange, AdminChangePlan, AdminSet, Change, Order};
pub use auto_init::{AutoInit, AutoInitPlan, AutoInitReport, AutoInitResume, Interrupted};
pub use compare::{Aspect, CompareReport};
pub use control_points::ControlPointChange;
pub use error::{CeremonyError, Problem, Rule};
pub use failover::{FailoverEnable, FailoverPlan, FailoverReport};
pub use installed::{Installation, InstalledKeys, Unreachable};
pub use mk_load::{LoadPlan, LoadReport, LoadUnit, MkLoad, ReadyLoad};
pub use plan::{FromPrevious, Plan, PlanReport, PlannedCommand, Planner, ToSend, UnitPlan};
pub use postcondition::{check_each, Counters, Deviation, Expected, UnitDeviations};
pub use recover::{AutoRecover, AutoRecoverPlan, AutoRecoverReport, RecoverTarget, Stage};
pub use registers::{MkRegister, RegisterAction};
pub use rotate::{
    Flow, Rotate, RotatePlan, RotateReport, RotationEvent, RotationProblem, RotationStage,
};
pub use signers::Quorum;
pub use zeroize::{Zeroize, ZeroizePlan, ZeroizeReport, ZeroizeTarget};

/// A milestone of a ceremony, reported as it happens. The CLI prints the vendor's lines.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Units left half-initialized in imprint mode are being cleared first.
    ClearingImprintUnits {
        /// How many units.
        units: usize,
    },
    /// Installing administrator `index` of `total` on every unit.
    InstallingAdmin {
        /// 1-based.
        index: usize,
        /// Number of administrators.
        total: usize,
    },
    /// Setting both thresholds on every unit (leaving imprint mode).
    SettingThresholds,
    /// Generating a random master key in a recovery unit.
    GeneratingMasterKey,
    /// A resumed ceremony found the master key generated already in recovery unit `num`:
    /// that key is transferred, and no other is generated.
    MasterKeyFound {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
    },
    /// Every unit was checked to hold exactly what the ceremony set so far.
    Verified {
        /// What was checked.
        checkpoint: Checkpoint,
        /// How many units.
        units: usize,
    },
    /// The master key has reached unit `index` of `total`.
    TransferringMasterKey {
        /// 1-based, in completion order.
        index: usize,
        /// Number of units the key is copied to.
        total: usize,
    },
    /// A milestone of a master key rotation ([`rotate`]).
    Rotation(RotationEvent),
}

/// Where a ceremony checks its units' state ([`Event::Verified`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checkpoint {
    /// Auto-init left imprint mode: exactly the administrators and thresholds asked, no
    /// master key yet.
    ImprintModeLeft,
    /// The ceremony's full post-condition, at its end.
    Finished,
}

/// Receives a ceremony's milestones. Called from worker threads.
pub trait Progress: Sync {
    /// One milestone.
    fn event(&self, event: &Event);
}

/// Where a ceremony records each step it completed: the workstation's journal, in the
/// CLI, so that an interrupted ceremony can be finished with what was asked. Called once
/// per step, in order, from the ceremony's own thread, before it goes on; never with a
/// secret.
pub trait StepLog: Sync {
    /// `step` is done on every unit; `detail` is what a resumed ceremony needs to know of
    /// it (e.g. a verification pattern in hex).
    ///
    /// # Errors
    /// When the step cannot be recorded durably: the ceremony then stops
    /// ([`CeremonyError::Journal`]).
    fn record(&self, step: &'static str, detail: Option<String>)
        -> Result<(), tke_proto::BoxError>;
}

/// A [`StepLog`] that records nothing.
pub struct NoLog;

impl StepLog for NoLog {
    fn record(&self, _: &'static str, _: Option<String>) -> Result<(), tke_proto::BoxError> {
        Ok(())
    }
}

/// A [`Progress`] that ignores everything.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: &Event) {}
}

/// Runs `f` on every unit in parallel; collects every failure.
fn on_all<T: Send>(
    step: &'static str,
    units: &[&KnownUnit],
    f: impl Fn(&KnownUnit) -> Result<T, ClientError> + Sync,
) -> Result<Vec<T>, CeremonyError> {
    on_each(step, units, |u| u, |u| f(u))
}

/// Runs `f` on every job in parallel, `unit` naming the unit a job is about; collects
/// every failure.
fn on_each<'u, J: Sync, T: Send>(
    step: &'static str,
    jobs: &[J],
    unit: impl Fn(&J) -> &'u KnownUnit,
    f: impl Fn(&J) -> Result<T, ClientError> + Sync,
) -> Result<Vec<T>, CeremonyError> {
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    for (j, r) in jobs.iter().zip(parallel(jobs, f)) {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => failures.push((unit(j).num, e)),
        }
    }
    if failures.is_empty() {
        Ok(ok)
    } else {
        Err(CeremonyError::Step { step, failures })
    }
}
