//! Failover-enable: add failover crypto units to a service instance.
//!
//! As the vendor's `failover-enable`: every unit of one instance is selected, and the
//! instance may have a total of 2 or 3 failover units, never more than its operational
//! units ([`FailoverLimits`]). [`FailoverEnable::plan`] checks the selection, the limits
//! and that the fleet carrying the instance can add units ([`Provisioning`]: the embedded
//! fleet can, a `tke-unitd` server cannot — its units are made on the server). Every
//! problem is reported at once, before anything changes.
//!
//! Between plan and act the caller shows the current count and the maximum, asks for the
//! total ([`FailoverPlan::check_total`]) and for confirmation. [`FailoverPlan::execute`]
//! then adds the units and checks the result: the instance lists exactly its units as
//! before plus the new ones, each a failover unit in imprint mode with no administrators
//! and both registers empty.
//!
//! The new units hold nothing: until they are initialized like the other units of the
//! instance (the same administrators, thresholds and master key) they cannot take over.

use tke_client::{Client, FailoverLimits, FailoverTotalError, InstanceId, KnownUnit, Provisioning};
use tke_proto::{UnitId, UnitType};

use crate::{postcondition::Expected, CeremonyError, Problem};

use crate::error::STEP_ADD_UNITS as STEP_ADD;

/// What the operator asked for: the selected units, which must be every unit of one
/// instance.
pub struct FailoverEnable<'c> {
    /// The selected units.
    pub units: Vec<&'c KnownUnit>,
}

/// A checked plan, ready to run once.
pub struct FailoverPlan<'c> {
    client: &'c Client,
    instance: InstanceId,
    provisioning: &'c dyn Provisioning,
    units: Vec<&'c KnownUnit>,
    limits: FailoverLimits,
}

/// What failover-enable did.
pub struct FailoverReport {
    /// The instance.
    pub instance: InstanceId,
    /// The new units.
    pub added: Vec<UnitId>,
    /// A client that lists the fleet as it is now, new units included (numbered as the
    /// vendor does).
    pub client: Client,
}

impl<'c> FailoverEnable<'c> {
    /// Checks the selection and the instance. Nothing is changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found: no unit given
    /// ([`Problem::NoUnits`]), units of several instances ([`Problem::SeveralInstances`]),
    /// units of the instance left out ([`Problem::InstanceNotAllSelected`]), a fleet that
    /// cannot add units ([`Problem::CannotAddUnits`]) or not to this instance
    /// ([`Problem::AddingUnitsRefused`]), an instance that may have no more failover units
    /// ([`Problem::FailoverTotal`]).
    pub fn plan(self, client: &'c Client) -> Result<FailoverPlan<'c>, CeremonyError> {
        let (instance, mut problems) = whole_instance(client, &self.units)?;
        let units = client.instance_units(&instance);
        let count = |t: UnitType| units.iter().filter(|u| u.unit_type() == t).count();
        let limits = FailoverLimits {
            operational: count(UnitType::Operational),
            failover: count(UnitType::Failover),
        };
        if let Err(source) = limits.any() {
            problems.push(Problem::FailoverTotal {
                instance: instance.clone(),
                source,
            });
        }
        let provisioning = client.provisioning(&instance);
        match provisioning.map(|p| p.can_add_failover_units(&instance)) {
            None => problems.push(Problem::CannotAddUnits {
                instance: instance.clone(),
                endpoints: client.describe(),
            }),
            Some(Err(source)) => problems.push(Problem::AddingUnitsRefused {
                instance: instance.clone(),
                source,
            }),
            Some(Ok(())) => {}
        }
        match provisioning {
            Some(provisioning) if problems.is_empty() => Ok(FailoverPlan {
                client,
                instance,
                provisioning,
                units,
                limits,
            }),
            _ => Err(CeremonyError::Problems(problems)),
        }
    }
}

impl FailoverPlan<'_> {
    /// The instance that gets the failover units.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Its operational and failover units now; [`FailoverLimits::max`] is the most
    /// failover units it may have.
    pub fn limits(&self) -> FailoverLimits {
        self.limits
    }

    /// Checks a total of failover units asked for (to ask again on a terminal).
    ///
    /// # Errors
    /// [`FailoverTotalError`] when the instance may not have `total`.
    pub fn check_total(&self, total: usize) -> Result<(), FailoverTotalError> {
        self.limits.check(total)
    }

    /// Adds failover units until the instance has `total`, then checks the fleet: the
    /// instance lists its units as before plus exactly the new ones, each a failover unit
    /// in imprint mode with no administrators and both registers empty. The plan is
    /// consumed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] with [`Problem::FailoverTotal`] when `total` is not
    /// allowed (nothing is changed); [`CeremonyError::AddUnits`] when the fleet could not
    /// add them (nothing is added); [`CeremonyError::Listing`] when the fleet cannot be
    /// listed afterwards; [`CeremonyError::Roster`] when the instance lists other units
    /// than expected; [`CeremonyError::Verification`] for a new unit that is not a
    /// failover unit; [`CeremonyError::PostCondition`] for a new unit not in imprint mode
    /// with nothing installed.
    pub fn execute(self, total: usize) -> Result<FailoverReport, CeremonyError> {
        self.limits.check(total).map_err(|source| {
            CeremonyError::Problems(vec![Problem::FailoverTotal {
                instance: self.instance.clone(),
                source,
            }])
        })?;
        let added: Vec<UnitId> = self
            .provisioning
            .add_failover_units(&self.instance, total)
            .map_err(|source| CeremonyError::AddUnits {
                instance: self.instance.clone(),
                source,
            })?
            .into_iter()
            .map(|d| d.unit_id)
            .collect();
        let client = self
            .client
            .reconnect()
            .map_err(|source| CeremonyError::Listing {
                after: STEP_ADD,
                source,
            })?;
        // The roster, by id: the units the instance had, and the new ones; nothing else.
        let expected: Vec<UnitId> = self
            .units
            .iter()
            .map(|u| u.id())
            .chain(added.iter().copied())
            .collect();
        let listed: Vec<UnitId> = client
            .instance_units(&self.instance)
            .iter()
            .map(|u| u.id())
            .collect();
        let missing: Vec<UnitId> = expected
            .iter()
            .filter(|id| !listed.contains(id))
            .copied()
            .collect();
        let unexpected: Vec<UnitId> = listed
            .iter()
            .filter(|id| !expected.contains(id))
            .copied()
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            return Err(CeremonyError::Roster {
                instance: self.instance,
                missing,
                unexpected,
            });
        }
        let new_units: Vec<&KnownUnit> = added.iter().filter_map(|id| client.unit(id)).collect();
        if let Some(u) = new_units
            .iter()
            .find(|u| u.unit_type() != UnitType::Failover)
        {
            return Err(CeremonyError::Verification {
                num: u.num,
                what: "a unit just added is not certified as a failover unit",
            });
        }
        Expected::imprint(Vec::new()).check(&client, &new_units, None, STEP_ADD)?;
        Ok(FailoverReport {
            instance: self.instance,
            added,
            client,
        })
    }
}

/// The one service instance `selected` belongs to, and [`Problem::InstanceNotAllSelected`]
/// when units of it are left out: for a command that acts on a whole instance.
///
/// # Errors
/// [`Problem::NoUnits`] when nothing is selected, [`Problem::SeveralInstances`] when the
/// units belong to several instances.
pub(crate) fn whole_instance(
    client: &Client,
    selected: &[&KnownUnit],
) -> Result<(InstanceId, Vec<Problem>), CeremonyError> {
    let mut instances: Vec<&InstanceId> = Vec::new();
    for u in selected {
        if !instances.contains(&u.instance()) {
            instances.push(u.instance());
        }
    }
    let instance = match instances[..] {
        [] => return Err(CeremonyError::Problems(vec![Problem::NoUnits])),
        [one] => one.clone(),
        _ => {
            return Err(CeremonyError::Problems(vec![Problem::SeveralInstances {
                instances: instances.into_iter().cloned().collect(),
            }]))
        }
    };
    let mut problems = Vec::new();
    let unselected: Vec<usize> = client
        .instance_units(&instance)
        .iter()
        .filter(|u| !selected.iter().any(|s| s.id() == u.id()))
        .map(|u| u.num)
        .collect();
    if !unselected.is_empty() {
        problems.push(Problem::InstanceNotAllSelected {
            instance: instance.clone(),
            unselected,
        });
    }
    Ok((instance, problems))
}
