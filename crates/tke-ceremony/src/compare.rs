//! Compare: are the units of each service instance configured identically?
//!
//! Units of one instance must agree on everything that decides whether a command is
//! accepted and which key protects the instance's key storage: both thresholds, the
//! administrators, both master key registers, and the control points (which mechanisms
//! the instance's keys may be used with). Drift between them (an interrupted
//! ceremony, a unit replaced) is what [`CompareReport`] makes visible.

use tke_client::{fanout::parallel, Client, ClientError, InstanceId, KnownUnit};
use tke_proto::UnitStatus;

/// One part of a unit's configuration that units of one instance must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Aspect {
    /// The signature threshold.
    SignatureThreshold,
    /// The revocation signature threshold.
    RevocationThreshold,
    /// The installed administrators (names and SKIs, in order).
    Administrators,
    /// The new master key register (state and verification pattern).
    NewRegister,
    /// The current master key register (state and verification pattern).
    CurrentRegister,
    /// The control point mask (every point, named or not).
    ControlPoints,
}

impl Aspect {
    /// Every aspect, in the order the vendor's compare shows them.
    pub const ALL: [Aspect; 6] = [
        Aspect::SignatureThreshold,
        Aspect::RevocationThreshold,
        Aspect::Administrators,
        Aspect::ControlPoints,
        Aspect::NewRegister,
        Aspect::CurrentRegister,
    ];

    fn same(self, a: &UnitStatus, b: &UnitStatus) -> bool {
        match self {
            Aspect::SignatureThreshold => a.sig_threshold == b.sig_threshold,
            Aspect::RevocationThreshold => a.rev_threshold == b.rev_threshold,
            Aspect::Administrators => a.admins == b.admins,
            Aspect::NewRegister => a.new_register == b.new_register,
            Aspect::CurrentRegister => a.current_register == b.current_register,
            Aspect::ControlPoints => a.control_points == b.control_points,
        }
    }
}

/// The state of a set of units, grouped by instance, with a verdict per instance.
#[derive(Clone, Debug)]
pub struct CompareReport<'c> {
    units: Vec<(&'c KnownUnit, UnitStatus)>,
}

impl<'c> CompareReport<'c> {
    /// Queries every unit, in parallel.
    ///
    /// # Errors
    /// The first failure in the order of `units`: a report that leaves a unit out could
    /// call drifting units identical.
    pub fn query(client: &Client, units: &[&'c KnownUnit]) -> Result<Self, ClientError> {
        let mut rows = Vec::with_capacity(units.len());
        for (u, s) in units.iter().zip(parallel(units, |u| client.query(u))) {
            rows.push((*u, s?));
        }
        Ok(Self { units: rows })
    }

    /// Every unit with its state, in the order given.
    pub fn units(&self) -> &[(&'c KnownUnit, UnitStatus)] {
        &self.units
    }

    /// The instances of the units, in order of first appearance.
    pub fn instances(&self) -> Vec<&'c InstanceId> {
        let mut v: Vec<&InstanceId> = Vec::new();
        for (u, _) in &self.units {
            if !v.contains(&u.instance()) {
                v.push(u.instance());
            }
        }
        v
    }

    /// The units of one instance with their state.
    pub fn instance_units<'r>(
        &'r self,
        instance: &'r InstanceId,
    ) -> impl Iterator<Item = &'r (&'c KnownUnit, UnitStatus)> + 'r {
        self.units
            .iter()
            .filter(move |(u, _)| u.instance() == instance)
    }

    /// The aspects on which the units of `instance` do not all agree; empty when they are
    /// configured identically (or when there is at most one unit).
    pub fn differences(&self, instance: &InstanceId) -> Vec<Aspect> {
        let group: Vec<&UnitStatus> = self.instance_units(instance).map(|(_, s)| s).collect();
        Aspect::ALL
            .into_iter()
            .filter(|a| !group.windows(2).all(|w| a.same(w[0], w[1])))
            .collect()
    }

    /// Whether the units of `instance` are configured identically.
    pub fn identical(&self, instance: &InstanceId) -> bool {
        self.differences(instance).is_empty()
    }
}
