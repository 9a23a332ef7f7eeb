#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod auto_init;
mod error;

pub use auto_init::{AutoInit, AutoInitPlan, AutoInitReport};
pub use error::{CeremonyError, Problem};

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
    /// The master key has reached unit `index` of `total`.
    TransferringMasterKey {
        /// 1-based, in completion order.
        index: usize,
        /// Number of units the key is copied to.
        total: usize,
    },
}

/// Receives a ceremony's milestones. Called from worker threads.
pub trait Progress: Sync {
    /// One milestone.
    fn event(&self, event: &Event);
}

/// A [`Progress`] that ignores everything.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: &Event) {}
}
