//! Zeroize: return crypto units to imprint mode.
//!
//! Plan, then act. [`Zeroize::plan`] queries every unit and picks, for each unit out of
//! imprint mode, the first of the given signature keys that are installed on it: an
//! operational unit zeroizes with the signature of one installed administrator, a recovery
//! unit with as many as its signature threshold (it may hold the instance's last copy of
//! the master key, which one administrator alone must not destroy), while a unit in
//! imprint mode needs none. Every problem is reported at once, before anything changes.
//!
//! Between plan and act the caller shows the plan, asks for confirmation and opens the
//! keys the plan needs ([`ZeroizePlan::keys_needed`]): passwords and PINs are the caller's
//! business, never the library's. [`ZeroizePlan::execute`] then consumes the plan and
//! zeroizes every unit in parallel.
//!
//! Zeroizing destroys both master key registers: callers show which units hold a current
//! master key ([`ZeroizeTarget::status`]) before they confirm, and may plug in a check
//! that refuses a unit ([`Zeroize::plan_guarded`], [`crate::guard`]): the extension point
//! of the key-storage guard.

use tke_client::{fanout::parallel, Client, KnownUnit};
use tke_proto::{AdminInfo, Command, UnitStatus};
use tke_sigkey::Signer;

use crate::{
    guard::{self, Destruction, Guard, Unguarded},
    on_all,
    postcondition::{interference, Expected},
    CeremonyError, Problem,
};

const STEP_ZEROIZE: &str = "Zeroizing crypto units";

/// What the operator asked for.
pub struct Zeroize<'c> {
    /// The units to zeroize.
    pub units: Vec<&'c KnownUnit>,
    /// The signature keys that may sign, by administrator name and SKI, in order of
    /// preference: each unit out of imprint mode is signed for by the first one (the first
    /// signature-threshold ones on a recovery unit) installed on it.
    pub keys: Vec<AdminInfo>,
}

/// One unit of a [`ZeroizePlan`].
#[derive(Clone, Debug)]
pub struct ZeroizeTarget<'c> {
    /// The unit.
    pub unit: &'c KnownUnit,
    /// Its state when the plan was made.
    pub status: UnitStatus,
    /// The keys that sign its zeroize, in order of preference: none for a unit in imprint
    /// mode, one for an operational unit, the signature threshold for a recovery unit.
    pub signers: Vec<AdminInfo>,
}

/// A checked plan, ready to run once.
pub struct ZeroizePlan<'c> {
    client: &'c Client,
    keys: Vec<AdminInfo>,
    targets: Vec<ZeroizeTarget<'c>>,
}

/// What a zeroize did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZeroizeReport {
    /// `CRYPTO UNIT NUM` of every unit zeroized, in the order given.
    pub units: Vec<usize>,
}

impl<'c> Zeroize<'c> {
    /// Queries every unit and picks the key that signs for each. Nothing is changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found: no unit given
    /// ([`Problem::NoUnits`]), units that cannot be queried ([`Problem::Unreachable`]),
    /// then units out of imprint mode that need one signature (operational units, recovery
    /// units of signature threshold 1) on which none of the keys is installed
    /// ([`Problem::NoInstalledKey`]) and recovery units on which fewer of the keys than
    /// their signature threshold (2 or more) are installed
    /// ([`Problem::TooFewInstalledKeys`]).
    pub fn plan(self, client: &'c Client) -> Result<ZeroizePlan<'c>, CeremonyError> {
        self.plan_guarded(client, &Unguarded)
    }

    /// As [`Zeroize::plan`], asking `guard` about every unit first: the extension point
    /// of the key-storage check, which refuses to zeroize a unit whose current master key
    /// still protects keys ([`crate::guard`]).
    ///
    /// # Errors
    /// As [`Zeroize::plan`], and [`Problem::Guarded`] for each unit `guard` refuses.
    pub fn plan_guarded(
        self,
        client: &'c Client,
        guard: &dyn Guard,
    ) -> Result<ZeroizePlan<'c>, CeremonyError> {
        let mut problems = Vec::new();
        if self.units.is_empty() {
            problems.push(Problem::NoUnits);
        }
        let mut reachable = Vec::new();
        for (u, s) in self
            .units
            .iter()
            .zip(parallel(&self.units, |u| client.query(u)))
        {
            match s {
                Ok(status) => reachable.push((*u, status)),
                Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
            }
        }
        let mut targets = Vec::with_capacity(reachable.len());
        for (unit, status) in reachable {
            problems.extend(guard::ask(guard, unit, &status, Destruction::Zeroize));
            let needed = signatures_needed(&status);
            let signers: Vec<AdminInfo> = self
                .keys
                .iter()
                .filter(|k| status.admins.iter().any(|a| a.ski == k.ski))
                .take(needed)
                .cloned()
                .collect();
            let installed = || status.admins.iter().map(|a| a.name.clone()).collect();
            if signers.len() < needed {
                problems.push(if needed > 1 {
                    Problem::TooFewInstalledKeys {
                        num: unit.num,
                        unit: unit.id(),
                        needed,
                        usable: signers.iter().map(|k| k.name.clone()).collect(),
                        installed: installed(),
                    }
                } else {
                    Problem::NoInstalledKey {
                        num: unit.num,
                        unit: unit.id(),
                        installed: installed(),
                    }
                });
            }
            targets.push(ZeroizeTarget {
                unit,
                status,
                signers,
            });
        }
        if problems.is_empty() {
            Ok(ZeroizePlan {
                client,
                keys: self.keys,
                targets,
            })
        } else {
            Err(CeremonyError::Problems(problems))
        }
    }
}

/// How many administrator signatures the unit needs to zeroize: none in imprint mode, the
/// signature threshold on a recovery unit, one on any other.
fn signatures_needed(status: &UnitStatus) -> usize {
    // A unit takes a zeroize in any state: the rule always gives a count.
    Command::Zeroize
        .signatures_required(status.unit_type, status.sig_threshold, status.rev_threshold)
        .unwrap_or(0)
}

impl<'c> ZeroizePlan<'c> {
    /// The units, in the order given, with their state and the keys that sign for each.
    pub fn targets(&self) -> &[ZeroizeTarget<'c>] {
        &self.targets
    }

    /// The keys [`Self::execute`] needs, each once, in the order of preference given.
    pub fn keys_needed(&self) -> Vec<&AdminInfo> {
        let mut needed: Vec<&AdminInfo> = Vec::new();
        for k in &self.keys {
            let used = self
                .targets
                .iter()
                .any(|t| t.signers.iter().any(|s| s.ski == k.ski));
            if used && !needed.iter().any(|n| n.ski == k.ski) {
                needed.push(k);
            }
        }
        needed
    }

    /// Zeroizes every unit, in parallel, each signed by its keys from `signers` (matched
    /// by SKI), then checks that every unit is in imprint mode with no administrators and
    /// both registers empty. The plan is consumed: a zeroize runs once.
    ///
    /// A unit out of imprint mode whose counter moved since the plan (another
    /// administrator used it) is signed for again at its new counter; a unit in imprint
    /// mode is not, since anyone may have changed it ([`tke_client::Client::run`]).
    ///
    /// # Errors
    /// [`CeremonyError::SignerMissing`] when a key the plan needs is not in `signers`
    /// (nothing is changed); [`CeremonyError::Interference`] when a unit in imprint mode
    /// was used by someone else meanwhile; [`CeremonyError::Step`] naming every unit that
    /// failed (the others were zeroized); [`CeremonyError::PostCondition`] naming each
    /// unit that does not hold the zeroized state afterwards.
    pub fn execute(self, signers: &[&dyn Signer]) -> Result<ZeroizeReport, CeremonyError> {
        for k in self.keys_needed() {
            if !signers.iter().any(|s| s.ski() == k.ski) {
                return Err(CeremonyError::SignerMissing {
                    name: k.name.clone(),
                    ski: k.ski,
                });
            }
        }
        let signer_of = |t: &ZeroizeTarget<'_>| -> Vec<&dyn Signer> {
            t.signers
                .iter()
                .filter_map(|k| signers.iter().find(|s| s.ski() == k.ski).copied())
                .collect()
        };
        let client = self.client;
        let units: Vec<&KnownUnit> = self.targets.iter().map(|t| t.unit).collect();
        on_all(STEP_ZEROIZE, &units, |u| {
            let signers = self
                .targets
                .iter()
                .find(|t| t.unit.id() == u.id())
                .map(signer_of)
                .unwrap_or_default();
            client.run(u, &Command::Zeroize, &signers)
        })
        .map_err(|e| interference(client, e, |_| None))?;
        // The full post-condition, not a count: every unit in imprint mode, without
        // administrators, both registers empty.
        Expected::imprint(Vec::new()).check(client, &units, None, STEP_ZEROIZE)?;
        Ok(ZeroizeReport {
            units: units.iter().map(|u| u.num).collect(),
        })
    }
}
