//! Adding crypto units to a service instance: the vendor's rule for failover units
//! ([`FailoverLimits`]) and the [`Provisioning`] a transport may offer.
//!
//! The embedded fleet adds units itself. A `tke-unitd` server does not: its units are
//! made on the server (`tke-unitd init` or `join`), so its transport offers no
//! provisioning and callers say how to add them there.

use crate::{ClientError, InstanceId, UnitDescriptor};

/// The failover units one service instance may have, as the vendor allows them: a total
/// of 2 or 3, never more than the instance's operational units. With 2 operational units
/// the total is 2; with 3 or more it is 2 or 3. Adding never lowers the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverLimits {
    /// The instance's operational units.
    pub operational: usize,
    /// Its failover units now.
    pub failover: usize,
}

/// The fewest failover units an instance has once it has any (two, for availability).
pub const MIN_FAILOVER: usize = 2;
/// The most failover units an instance may have.
pub const MAX_FAILOVER: usize = 3;

/// Why a total of failover units is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverTotalError {
    /// The instance has fewer than two operational units: it may have no failover units.
    #[error("failover crypto units need at least {MIN_FAILOVER} operational crypto units, and it has {operational}")]
    TooFewOperational {
        /// Its operational units.
        operational: usize,
    },
    /// The instance already has as many failover units as it may.
    #[error("it has {failover} already, the most it may have (as many as its operational crypto units, at most {MAX_FAILOVER})")]
    Full {
        /// Its failover units.
        failover: usize,
    },
    /// The total asked for is out of range.
    #[error("a total of {total} failover crypto units is not possible: choose {}", range(*min, *max))]
    OutOfRange {
        /// The total asked for.
        total: usize,
        /// The smallest total allowed.
        min: usize,
        /// The largest total allowed.
        max: usize,
    },
}

/// `2`, or `2 to 3`.
fn range(min: usize, max: usize) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min} to {max}")
    }
}

impl FailoverLimits {
    /// The largest total allowed: the operational units, at most 3.
    pub fn max(&self) -> usize {
        self.operational.min(MAX_FAILOVER)
    }

    /// The smallest total that adds units: one more than now, at least 2.
    pub fn min(&self) -> usize {
        (self.failover + 1).max(MIN_FAILOVER)
    }

    /// Whether any total is allowed.
    ///
    /// # Errors
    /// [`FailoverTotalError::TooFewOperational`] or [`FailoverTotalError::Full`].
    pub fn any(&self) -> Result<(), FailoverTotalError> {
        if self.operational < MIN_FAILOVER {
            Err(FailoverTotalError::TooFewOperational {
                operational: self.operational,
            })
        } else if self.failover >= self.max() {
            Err(FailoverTotalError::Full {
                failover: self.failover,
            })
        } else {
            Ok(())
        }
    }

    /// Checks a total of failover units asked for.
    ///
    /// # Errors
    /// As [`FailoverLimits::any`]; [`FailoverTotalError::OutOfRange`] when `total` is not
    /// between [`FailoverLimits::min`] and [`FailoverLimits::max`].
    pub fn check(&self, total: usize) -> Result<(), FailoverTotalError> {
        self.any()?;
        if (self.min()..=self.max()).contains(&total) {
            Ok(())
        } else {
            Err(FailoverTotalError::OutOfRange {
                total,
                min: self.min(),
                max: self.max(),
            })
        }
    }
}

/// Adds crypto units to the service instances of a transport. A transport offers it
/// through [`crate::Transport::provisioning`]; by default it does not.
pub trait Provisioning: Send + Sync {
    /// Whether failover units can be added to `instance` at all, whatever their number
    /// (asked before the operator chooses it).
    ///
    /// # Errors
    /// [`ClientError::UnknownInstance`]; the transport's reason to refuse this instance.
    fn can_add_failover_units(&self, instance: &InstanceId) -> Result<(), ClientError>;

    /// Adds failover units, each new and in imprint mode, to `instance` until it has
    /// `total`, checking [`FailoverLimits`] first; returns the new units as listed.
    ///
    /// # Errors
    /// As [`Provisioning::can_add_failover_units`]; [`ClientError::FailoverTotal`] when
    /// `total` is not allowed; the transport's errors making the units. On error no unit
    /// is added.
    fn add_failover_units(
        &self,
        instance: &InstanceId,
        total: usize,
    ) -> Result<Vec<UnitDescriptor>, ClientError>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(operational: usize, failover: usize) -> FailoverLimits {
        FailoverLimits {
            operational,
            failover,
        }
    }

    #[test]
    fn two_operational_units_allow_two_and_three_allow_two_or_three() {
        let l = limits(2, 0);
        assert_eq!(l.check(2), Ok(()));
        for bad in [0, 1, 3] {
            assert_eq!(
                l.check(bad),
                Err(FailoverTotalError::OutOfRange {
                    total: bad,
                    min: 2,
                    max: 2
                })
            );
        }
        let l = limits(3, 0);
        assert_eq!((l.check(2), l.check(3)), (Ok(()), Ok(())));
        assert!(matches!(
            l.check(4),
            Err(FailoverTotalError::OutOfRange { max: 3, .. })
        ));
        // Six operational units still allow three at most.
        assert_eq!(limits(6, 0).max(), 3);
        // Two failover units of three operational: only the third may be added.
        assert_eq!(limits(3, 2).check(3), Ok(()));
        assert!(limits(3, 2).check(2).is_err());
    }

    #[test]
    fn full_or_too_small_instances_allow_nothing() {
        assert_eq!(
            limits(1, 0).check(2),
            Err(FailoverTotalError::TooFewOperational { operational: 1 })
        );
        assert_eq!(
            limits(2, 2).any(),
            Err(FailoverTotalError::Full { failover: 2 })
        );
        assert_eq!(
            limits(3, 3).check(3),
            Err(FailoverTotalError::Full { failover: 3 })
        );
        // One failover unit (an embedded fleet may be made so) gets a second.
        assert_eq!(limits(2, 1).check(2), Ok(()));
    }

    #[test]
    fn messages_say_what_to_choose() {
        let e = limits(3, 0).check(5).unwrap_err().to_string();
        assert!(e.contains("choose 2 to 3"), "{e}");
        let e = limits(2, 0).check(3).unwrap_err().to_string();
        assert!(e.ends_with("choose 2"), "{e}");
    }
}
