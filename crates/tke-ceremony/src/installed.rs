//! Which units have given signature keys installed as administrators: asked before a key
//! is deleted, since without it commands that need its signature (zeroize included) may
//! become impossible.
//!
//! A unit that cannot be queried is listed, never dropped: "not installed anywhere" must
//! not be claimed for a unit nobody could ask.

use tke_client::{fanout::parallel, Client, ClientError};
use tke_proto::{AdminInfo, UnitId};

/// A key installed on a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    /// The key (administrator name and SKI, as given).
    pub key: AdminInfo,
    /// The unit's `CRYPTO UNIT NUM`.
    pub num: usize,
    /// The unit.
    pub unit: UnitId,
}

/// A unit that could not be asked.
#[derive(Debug)]
pub struct Unreachable {
    /// The unit's `CRYPTO UNIT NUM`.
    pub num: usize,
    /// The unit.
    pub unit: UnitId,
    /// Why.
    pub source: ClientError,
}

/// Where keys are installed, over every unit of a client.
#[derive(Debug)]
pub struct InstalledKeys {
    /// Every installation found: by key in the order given, then by unit number.
    pub installed: Vec<Installation>,
    /// The units that could not be queried, in number order: the keys may be installed
    /// there too.
    pub unreachable: Vec<Unreachable>,
}

impl InstalledKeys {
    /// Queries every unit of `client`, in parallel, for the administrators of `keys`
    /// (matched by SKI).
    pub fn find(client: &Client, keys: &[AdminInfo]) -> Self {
        let statuses = parallel(client.units(), |u| client.query(u));
        let mut reachable = Vec::new();
        let mut unreachable = Vec::new();
        for (u, s) in client.units().iter().zip(statuses) {
            match s {
                Ok(s) => reachable.push((u, s)),
                Err(source) => unreachable.push(Unreachable {
                    num: u.num,
                    unit: u.id(),
                    source,
                }),
            }
        }
        let mut installed = Vec::new();
        for key in keys {
            for (u, s) in &reachable {
                if s.admins.iter().any(|a| a.ski == key.ski) {
                    installed.push(Installation {
                        key: key.clone(),
                        num: u.num,
                        unit: u.id(),
                    });
                }
            }
        }
        Self {
            installed,
            unreachable,
        }
    }
}
