//! Who signs: picking, from the keys that may sign, the installed administrators a command
//! needs.
//!
//! The operator says which signature keys *may* sign (the vendor's `sigkey-sel`
//! selection, or keys named for one command), in order of preference. Each command needs a
//! number of distinct administrator signatures that depends on the unit's state (the
//! [`Quorum`]); a ceremony takes, for each unit, the first keys of that order that are
//! installed on it, and asks for exactly those keys — so an operator gives only the
//! passwords that are needed.

use std::fmt;

use tke_proto::{AdminInfo, UnitId, UnitStatus};

use crate::Problem;

/// How many administrator signatures a command needs, by the rule that sets the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quorum {
    /// No signature: the unit is in imprint mode and the command is allowed there.
    None,
    /// One installed administrator.
    One,
    /// The unit's current signature threshold.
    SignatureThreshold,
    /// The unit's current revocation signature threshold.
    RevocationThreshold,
    /// A signature threshold being set by the command itself: leaving imprint mode is
    /// signed by as many installed administrators as the new signature threshold.
    NewSignatureThreshold(u8),
}

impl Quorum {
    /// The number of distinct administrator signatures this rule asks of `status`.
    pub fn count(self, status: &UnitStatus) -> usize {
        match self {
            Self::None => 0,
            Self::One => 1,
            Self::SignatureThreshold => usize::from(status.sig_threshold),
            Self::RevocationThreshold => usize::from(status.rev_threshold),
            Self::NewSignatureThreshold(n) => usize::from(n),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none in imprint mode",
            Self::One => "one administrator",
            Self::SignatureThreshold => "its signature threshold",
            Self::RevocationThreshold => "its revocation signature threshold",
            Self::NewSignatureThreshold(_) => "the new signature threshold",
        })
    }
}

/// The first `needed` keys of `keys` (in that order of preference, each SKI once) that
/// are installed as administrators in `installed`. Fewer when not enough of them are
/// installed: the caller reports it ([`crate::Problem::TooFewSigners`]).
///
/// ```
/// use tke_ceremony::signers::choose;
/// use tke_proto::{AdminInfo, AdminName, Ski};
///
/// let admin = |n: &str, b: u8| AdminInfo { ski: Ski([b; 32]), name: AdminName::new(n).unwrap() };
/// let (alice, bob, carol) = (admin("alice", 1), admin("bob", 2), admin("carol", 3));
/// // Bob and Carol are installed; the operator prefers Carol, then Alice, then Bob.
/// let chosen = choose(&[carol.clone(), alice, bob.clone()], &[bob.clone(), carol.clone()], 2);
/// assert_eq!(chosen, vec![carol, bob]);
/// ```
pub fn choose(keys: &[AdminInfo], installed: &[AdminInfo], needed: usize) -> Vec<AdminInfo> {
    let mut chosen: Vec<AdminInfo> = Vec::with_capacity(needed);
    for k in keys {
        if chosen.len() == needed {
            break;
        }
        if installed.iter().any(|a| a.ski == k.ski) && !chosen.iter().any(|c| c.ski == k.ski) {
            chosen.push(k.clone());
        }
    }
    chosen
}

/// As [`choose`], for a command that needs `quorum` on the unit numbered `num` (`unit`)
/// in state `status`, with `installed` the administrators installed when it runs: the
/// signers, and [`Problem::TooFewSigners`] naming `action` when the keys that may sign
/// are too few.
pub fn pick(
    keys: &[AdminInfo],
    (num, unit): (usize, UnitId),
    status: &UnitStatus,
    installed: &[AdminInfo],
    quorum: Quorum,
    action: &'static str,
) -> (Vec<AdminInfo>, Option<Problem>) {
    let needed = quorum.count(status);
    let chosen = choose(keys, installed, needed);
    let problem = (chosen.len() < needed).then(|| Problem::TooFewSigners {
        num,
        unit,
        action,
        needed,
        quorum,
        usable: chosen.iter().map(|a| a.name.clone()).collect(),
        installed: installed.iter().map(|a| a.name.clone()).collect(),
    });
    (chosen, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tke_proto::{AdminName, Ski};

    fn admin(name: &str, b: u8) -> AdminInfo {
        AdminInfo {
            ski: Ski([b; 32]),
            name: AdminName::new(name).unwrap(),
        }
    }

    #[test]
    fn takes_installed_keys_in_preference_order_each_once() {
        let (a, b, c) = (admin("a", 1), admin("b", 2), admin("c", 3));
        let keys = [c.clone(), c.clone(), a.clone(), b.clone()];
        assert_eq!(choose(&keys, &[a.clone(), c.clone()], 3), vec![c, a]);
        assert!(choose(&keys, std::slice::from_ref(&b), 0).is_empty());
        assert!(choose(&[], &[b], 1).is_empty());
    }
}
