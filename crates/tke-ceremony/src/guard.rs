//! Guards: checks a caller plugs into a ceremony that destroys a master key, each of which
//! may refuse a unit with a reason.
//!
//! Zeroize and clearing the current register destroy a unit's current master key. While
//! the instance's key storage holds keys encrypted under it, that loses them unless the
//! same value can be loaded again (`docs/safety.md`, rule 4). Knowing what key storage
//! holds is not the ceremony's business: the key-storage code plugs in a [`Guard`]
//! ([`crate::Zeroize::plan_guarded`], [`crate::MkRegister::plan_guarded`]), which the plan
//! asks about every unit it would destroy something on, before anything is sent. A
//! refusal is a [`crate::Problem::Guarded`] naming the unit, the guard and its reason, and
//! the ceremony changes nothing.
//!
//! ```
//! use tke_ceremony::guard::{Destruction, Guard};
//! use tke_client::KnownUnit;
//! use tke_proto::{BoxError, RegisterState, UnitStatus};
//!
//! /// Refuses to destroy any current master key (a stand-in for a key-storage check).
//! struct KeepCurrentKeys;
//!
//! impl Guard for KeepCurrentKeys {
//!     fn name(&self) -> &'static str {
//!         "keep current keys"
//!     }
//!     fn check(&self, _: &KnownUnit, status: &UnitStatus, _: Destruction) -> Result<(), BoxError> {
//!         if status.current_register.state == RegisterState::Valid {
//!             return Err("the unit holds a current master key".into());
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::fmt;

use tke_client::KnownUnit;
use tke_proto::{BoxError, UnitStatus};

/// What a ceremony would destroy on a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destruction {
    /// Zeroize: both registers, the administrators and the thresholds.
    Zeroize,
    /// Clearing the current master key register.
    ClearCurrent,
}

impl Destruction {
    /// The action, for messages ("zeroizing it").
    pub fn action(self) -> &'static str {
        match self {
            Self::Zeroize => "zeroizing it is",
            Self::ClearCurrent => "clearing its current master key register is",
        }
    }
}

impl fmt::Display for Destruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Zeroize => "zeroize",
            Self::ClearCurrent => "clear the current master key register",
        })
    }
}

/// A check that may refuse a destructive ceremony on a unit. Called while the plan is
/// made, once per unit the ceremony would change, with the unit's state just queried.
pub trait Guard: Sync {
    /// The check's name in messages ("key storage").
    fn name(&self) -> &'static str;

    /// Whether `what` may be done to `unit`, whose state is `status`.
    ///
    /// # Errors
    /// The reason to refuse, shown to the operator as the cause of
    /// [`crate::Problem::Guarded`].
    fn check(
        &self,
        unit: &KnownUnit,
        status: &UnitStatus,
        what: Destruction,
    ) -> Result<(), BoxError>;
}

/// The guard of a ceremony planned without one: refuses nothing.
pub struct Unguarded;

impl Guard for Unguarded {
    fn name(&self) -> &'static str {
        "no"
    }

    fn check(&self, _: &KnownUnit, _: &UnitStatus, _: Destruction) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Asks `guard` about `unit`; a refusal as the problem that names it.
pub(crate) fn ask(
    guard: &dyn Guard,
    unit: &KnownUnit,
    status: &UnitStatus,
    what: Destruction,
) -> Option<crate::Problem> {
    guard
        .check(unit, status, what)
        .err()
        .map(|source| crate::Problem::Guarded {
            num: unit.num,
            unit: unit.id(),
            what,
            guard: guard.name(),
            source,
        })
}
