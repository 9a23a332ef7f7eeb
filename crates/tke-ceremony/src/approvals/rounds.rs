//! Multi-round ceremonies: the kinds of ceremony whose later commands depend on the
//! units' answers to earlier ones, and what each must say to plug into ceremony files.
//!
//! A multi-round file names its kind ([`MultiRound::kind`]) and carries the ceremony's
//! parameters (public: certificates, thresholds, units and their counters when planned).
//! Every round is a function of the parameters and the rounds before it, with their
//! recorded answers ([`MultiRound::round`]): `tke apply` builds the next round with it
//! after applying one, and every reader of the file rebuilds each round with it and
//! refuses a file whose round differs. So a round cannot be edited between rounds, and
//! approvers check offline what they sign.

use serde::de::DeserializeOwned;
use tke_proto::UnitId;

use super::{FileError, Round};
use crate::postcondition::Expected;

/// A multi-round ceremony's kind and parameters, as the file states them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kind {
    /// The kind's name ([`MultiRound::kind`]).
    pub kind: String,
    /// Its parameters, as the kind reads them ([`parse_params`]).
    pub params: serde_json::Value,
}

/// A ceremony of several rounds. Implementations are stateless: everything comes from
/// the parameters and the rounds before, so that any reader rebuilds the same bytes.
///
/// To add one: implement it next to the planner that writes its first round, and list
/// it in [`KINDS`].
pub trait MultiRound: Sync {
    /// The `kind` field of its files (e.g. `auto-init`).
    fn kind(&self) -> &'static str;

    /// The title shown to people (the `ceremony` field).
    fn title(&self) -> &'static str;

    /// How many rounds the ceremony with these parameters has.
    ///
    /// # Errors
    /// [`FileError::Params`] when the parameters are not the kind's.
    fn rounds(&self, params: &serde_json::Value) -> Result<usize, FileError>;

    /// The round that follows `before` (all applied, with their answers; empty for the
    /// first round). Deterministic: the same inputs give the same bytes.
    ///
    /// # Errors
    /// [`FileError::Params`] or [`FileError::Answer`] when the inputs do not make a
    /// round (e.g. an answer that does not decode).
    fn round(&self, params: &serde_json::Value, before: &[Round]) -> Result<Round, FileError>;

    /// Checks offline what can be checked of an applied round's answers (e.g. that an
    /// importer key is certified by the device key of the unit's certificate in the
    /// parameters). `before` are the rounds before it.
    ///
    /// # Errors
    /// [`FileError::Answer`] naming the round and unit.
    fn check_answers(
        &self,
        params: &serde_json::Value,
        before: &[Round],
        round: &Round,
    ) -> Result<(), FileError>;

    /// The state every unit must hold once every round ran: the ceremony's full
    /// post-condition, as its direct command checks it.
    ///
    /// # Errors
    /// As [`MultiRound::round`].
    fn postcondition(
        &self,
        params: &serde_json::Value,
        rounds: &[Round],
    ) -> Result<Vec<(UnitId, Expected)>, FileError>;

    /// Work `tke apply` does itself, without signatures, once the round that follows
    /// `before` has passed every check and just before its commands are sent (a
    /// rotation re-encrypts the key storage before set immediate). None by default.
    ///
    /// # Errors
    /// Whatever stops the round: nothing of it is sent then.
    fn before_sending(
        &self,
        _client: &tke_client::Client,
        _params: &serde_json::Value,
        _before: &[Round],
    ) -> Result<(), super::ApplyError> {
        Ok(())
    }
}

/// Every multi-round ceremony this version of `tke` plans and applies.
pub static KINDS: &[&dyn MultiRound] = &[
    &super::auto_init::AutoInitRounds,
    &super::rotate::ROTATE_ROUNDS,
    &super::rotate::RECOVER_ROUNDS,
    &super::rotate::KEY_PART_ROUNDS,
];

/// The kind of that name.
pub fn kind(name: &str) -> Option<&'static dyn MultiRound> {
    KINDS.iter().copied().find(|k| k.kind() == name)
}

/// The parameters of the ceremony `kind`, strictly (a kind's parameter type denies
/// unknown fields).
///
/// # Errors
/// [`FileError::Params`] saying what the decoder found.
pub fn parse_params<T: DeserializeOwned>(
    kind: &'static str,
    params: &serde_json::Value,
) -> Result<T, FileError> {
    T::deserialize(params).map_err(|e| FileError::Params {
        kind,
        what: e.to_string(),
    })
}

/// The counter `unit`'s next command uses after the rounds `before`, for a unit at
/// `start` when planned: each command uses the next value.
pub fn counter_after(start: u64, unit: UnitId, before: &[Round]) -> u64 {
    let used = before
        .iter()
        .flat_map(|r| &r.commands)
        .filter(|c| c.unit() == unit)
        .count() as u64;
    start.wrapping_add(used).wrapping_add(1)
}
