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

use std::{fmt, sync::Arc};

use tke_client::{fanout::parallel, Client, InstanceId, KnownUnit};
use tke_proto::{BoxError, RegisterState, UnitStatus, UnitType, Vp};

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

/// Where the master key that wraps an instance's keys can be loaded again from, should a
/// unit's copy be destroyed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoverySource {
    /// A recovery unit that keeps the key in its current register and is not being
    /// destroyed: `auto-recover` copies the key from it.
    RecoveryUnit {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The key's verification pattern.
        vp: Vp,
    },
    /// Master key part files on this workstation. Whether they make this key only their
    /// owners know: the workstation never combines parts.
    KeyPartFiles {
        /// Their descriptions.
        files: Vec<String>,
    },
}

impl fmt::Display for RecoverySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RecoveryUnit { num, vp } => write!(
                f,
                "recovery crypto unit {num} holds it ({}...) in its current master key register",
                &vp.to_hex()[..16]
            ),
            Self::KeyPartFiles { files } => write!(
                f,
                "master key part files on this workstation ({}) may make it, if they are the parts it was loaded from",
                files.join(", ")
            ),
        }
    }
}

/// An instance whose key storage a destructive ceremony would put at risk.
#[derive(Clone, Debug)]
pub struct AtRisk {
    /// The instance.
    pub instance: InstanceId,
    /// `CRYPTO UNIT NUM` of each unit the ceremony would destroy a key on that the key
    /// storage needs (or, when it cannot be read, any key).
    pub units: Vec<usize>,
    /// What the key storage holds.
    pub storage: Storage,
}

/// What an instance's key storage holds, as far as the guard could tell.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Storage {
    /// Keys wrapped under master keys the units hold.
    Keys {
        /// Where the key storage lives.
        location: String,
        /// Records in it.
        keys: u64,
        /// Each master key (VP) the ceremony would destroy a copy of, with the number of
        /// records it wraps.
        vps: Vec<(Vp, u64)>,
        /// Where those master keys can be loaded again from; empty: nowhere known.
        sources: Vec<RecoverySource>,
    },
    /// The key storage could not be read: it may hold keys.
    Unreadable {
        /// Why.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// `1, 2`: unit numbers, for messages.
pub(crate) fn unit_list(units: &[usize]) -> String {
    units
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `3 under 0b5e21c9a4f7d3e8..., 1 under …`: the keys wrapped under each master key.
pub(crate) fn keys_under(vps: &[(Vp, u64)]) -> String {
    vps.iter()
        .map(|(vp, n)| format!("{n} under {}...", &vp.to_hex()[..16]))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for AtRisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = unit_list(&self.units);
        match &self.storage {
            Storage::Keys {
                location,
                keys,
                vps,
                sources,
            } => {
                write!(
                    f,
                    "the key storage of service instance {} ({location}) holds {keys} key(s) wrapped under the master key of crypto unit(s) {units} ({}); ",
                    self.instance,
                    keys_under(vps)
                )?;
                if sources.is_empty() {
                    f.write_str("no recovery crypto unit keeps that master key and no master key part file is on this workstation: the keys would be lost")
                } else {
                    let all: Vec<String> = sources.iter().map(ToString::to_string).collect();
                    write!(f, "it can be recovered from: {}", all.join("; "))
                }
            }
            Storage::Unreadable { source } => write!(
                f,
                "the key storage of service instance {} cannot be read ({}), so it may hold keys wrapped under the master key of crypto unit(s) {units}",
                self.instance,
                tke_proto::ErrorChain(source.as_ref())
            ),
        }
    }
}

/// The refusal of [`KeyStorageGuard`]: what the key storage holds and where its master
/// key can be recovered from.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeysAtRisk(pub AtRisk);

/// The zeroize guard: refuses to destroy a master key that an instance's key storage
/// still needs — zeroize (either register) and clearing the current register — unless
/// the operator confirmed that instance by typing its id ([`KeyStorageGuard::confirm`]).
///
/// Built by [`KeyStorageGuard::survey`] from each instance's key service
/// ([`Client::key_service`]): an instance without one here has no key storage to
/// protect; one whose key storage cannot be read is treated as holding keys.
pub struct KeyStorageGuard {
    at_risk: Vec<AtRisk>,
    confirmed: Vec<InstanceId>,
}

impl KeyStorageGuard {
    /// Asks the key service of every instance of `units` what it holds, and the units of
    /// those instances what they hold, for a ceremony that would do `what` to `units`.
    /// `key_parts` are the descriptions of the master key part files on this workstation.
    /// Nothing is changed; a unit that cannot be queried is left out (the ceremony's own
    /// plan reports it).
    pub fn survey(
        client: &Client,
        units: &[&KnownUnit],
        what: Destruction,
        key_parts: &[String],
    ) -> Self {
        let mut instances: Vec<&InstanceId> = Vec::new();
        for u in units {
            if !instances.contains(&u.instance()) {
                instances.push(u.instance());
            }
        }
        let mut at_risk = Vec::new();
        for instance in instances {
            let all = client.instance_units(instance);
            let statuses: Vec<(&KnownUnit, UnitStatus)> = all
                .iter()
                .zip(parallel(&all, |u| client.query(u)))
                .filter_map(|(u, s)| s.ok().map(|s| (*u, s)))
                .collect();
            let destroyed = |u: &KnownUnit| units.iter().any(|d| d.id() == u.id());
            // The keys the ceremony would destroy on each of its units of this instance.
            let held: Vec<(usize, Vec<Vp>)> = statuses
                .iter()
                .filter(|(u, _)| destroyed(u))
                .map(|(u, s)| (u.num, destroyed_vps(s, what)))
                .filter(|(_, vps)| !vps.is_empty())
                .collect();
            if held.is_empty() {
                continue;
            }
            let summary = client
                .key_service(instance)
                .map_err(|e| Arc::new(e) as Arc<dyn std::error::Error + Send + Sync>)
                .and_then(|ks| {
                    ks.map(|ks| ks.summary())
                        .transpose()
                        .map_err(|e| Arc::new(e) as Arc<dyn std::error::Error + Send + Sync>)
                });
            let storage = match summary {
                Ok(None) => continue,
                Ok(Some(summary)) => {
                    let vps: Vec<(Vp, u64)> = summary
                        .by_vp
                        .iter()
                        .filter(|(vp, n)| *n > 0 && held.iter().any(|(_, h)| h.contains(vp)))
                        .copied()
                        .collect();
                    if vps.is_empty() {
                        continue;
                    }
                    let mut sources: Vec<RecoverySource> = statuses
                        .iter()
                        .filter(|(u, s)| {
                            u.unit_type() == UnitType::Recovery
                                && !destroyed(u)
                                && s.current_register.state == RegisterState::Valid
                        })
                        .filter_map(|(u, s)| {
                            s.current_register
                                .vp
                                .filter(|v| vps.iter().any(|(w, _)| w == v))
                                .map(|vp| RecoverySource::RecoveryUnit { num: u.num, vp })
                        })
                        .collect();
                    if !key_parts.is_empty() {
                        sources.push(RecoverySource::KeyPartFiles {
                            files: key_parts.to_vec(),
                        });
                    }
                    let units = held
                        .iter()
                        .filter(|(_, h)| h.iter().any(|v| vps.iter().any(|(w, _)| w == v)))
                        .map(|(n, _)| *n)
                        .collect();
                    at_risk.push(AtRisk {
                        instance: instance.clone(),
                        units,
                        storage: Storage::Keys {
                            location: summary.location,
                            keys: summary.total,
                            vps,
                            sources,
                        },
                    });
                    continue;
                }
                Err(source) => Storage::Unreadable { source },
            };
            at_risk.push(AtRisk {
                instance: instance.clone(),
                units: held.iter().map(|(n, _)| *n).collect(),
                storage,
            });
        }
        Self {
            at_risk,
            confirmed: Vec::new(),
        }
    }

    /// The instances whose keys the ceremony would put at risk and that are not
    /// confirmed yet.
    pub fn at_risk(&self) -> Vec<&AtRisk> {
        self.at_risk
            .iter()
            .filter(|r| !self.confirmed.contains(&r.instance))
            .collect()
    }

    /// The instances whose keys the ceremony would put at risk that were confirmed (a
    /// ceremony file records them for its approvers).
    pub fn confirmed(&self) -> Vec<&AtRisk> {
        self.at_risk
            .iter()
            .filter(|r| self.confirmed.contains(&r.instance))
            .collect()
    }

    /// The operator confirmed, by typing the instance's id, that the keys of `instance`
    /// may be lost: its units are no longer refused.
    pub fn confirm(&mut self, instance: &InstanceId) {
        if !self.confirmed.contains(instance) {
            self.confirmed.push(instance.clone());
        }
    }
}

/// The master keys `what` destroys on a unit in state `status`.
fn destroyed_vps(status: &UnitStatus, what: Destruction) -> Vec<Vp> {
    let current = (status.current_register.state == RegisterState::Valid)
        .then_some(status.current_register.vp)
        .flatten();
    let new = match what {
        Destruction::Zeroize => (status.new_register.state != RegisterState::Empty)
            .then_some(status.new_register.vp)
            .flatten(),
        Destruction::ClearCurrent => None,
    };
    current.into_iter().chain(new).collect()
}

impl Guard for KeyStorageGuard {
    fn name(&self) -> &'static str {
        "key storage"
    }

    fn check(
        &self,
        unit: &KnownUnit,
        status: &UnitStatus,
        what: Destruction,
    ) -> Result<(), BoxError> {
        let at_stake = destroyed_vps(status, what);
        let refused = self.at_risk().into_iter().find(|r| {
            &r.instance == unit.instance()
                && match &r.storage {
                    Storage::Keys { vps, .. } => vps.iter().any(|(v, _)| at_stake.contains(v)),
                    Storage::Unreadable { .. } => !at_stake.is_empty(),
                }
        });
        match refused {
            Some(r) => Err(Box::new(KeysAtRisk(r.clone()))),
            None => Ok(()),
        }
    }
}
