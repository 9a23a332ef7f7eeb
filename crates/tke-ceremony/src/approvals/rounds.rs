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
use tke_proto::{CaCertificate, DeviceCertificate, UnitId};

use super::{FileError, Round, UnitCommand};
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

    /// Whether `tke apply` builds the round after `before` itself ([`MultiRound::round`]),
    /// as by default. A kind whose next round needs a secret only its planner holds
    /// (master key parts sealed to the units' importer keys) returns `false`: `apply`
    /// stops after the round before, saying what the planner runs ([`MultiRound::next_by`]).
    fn built_by_apply(&self, params: &serde_json::Value, before: &[Round]) -> bool {
        let _ = (params, before);
        true
    }

    /// The command that adds the next round when `apply` does not build it.
    fn next_by(&self) -> &'static str {
        ""
    }

    /// Checks that `round` is the round after `before`. By default it is rebuilt with
    /// [`MultiRound::round`] and must hold the same commands, byte for byte. A round not
    /// built by `apply` is checked by its kind for what can be checked without the
    /// planner's secret.
    ///
    /// # Errors
    /// [`FileError::RoundDiffers`] naming the first unit whose commands differ, or what
    /// [`MultiRound::round`] returns.
    fn check_round(
        &self,
        params: &serde_json::Value,
        before: &[Round],
        round: &Round,
    ) -> Result<(), FileError> {
        same_commands(before.len() + 1, round, &self.round(params, before)?)
    }

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

    /// A ceremony that continues an interrupted one (re-planned from where the units
    /// stand): what it continues, shown with the title so that approvers know. `None` by
    /// default.
    fn continues(&self, params: &serde_json::Value) -> Option<String> {
        let _ = params;
        None
    }

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
    &super::auto_init::AUTO_INIT_ROUNDS,
    &super::auto_init::DESIRED_KEY_ROUNDS,
    &super::mk_load::MkLoadRounds,
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

/// Whether `found` holds the same commands as `expected` (round `round`, 1-based), byte
/// for byte and with the same unit numbers.
///
/// # Errors
/// [`FileError::RoundDiffers`] naming the first unit whose commands differ.
pub fn same_commands(round: usize, found: &Round, expected: &Round) -> Result<(), FileError> {
    let differs = |a: Option<&UnitCommand>, b: Option<&UnitCommand>| match (a, b) {
        (Some(a), Some(b)) => a.num != b.num || a.bytes != b.bytes,
        (None, None) => false,
        _ => true,
    };
    let n = found.commands.len().max(expected.commands.len());
    match (0..n).find(|j| differs(found.commands.get(*j), expected.commands.get(*j))) {
        Some(j) => Err(FileError::RoundDiffers {
            round,
            num: found
                .commands
                .get(j)
                .or_else(|| expected.commands.get(j))
                .map_or(0, |c| c.num),
        }),
        None => Ok(()),
    }
}

/// The fleet CA certificate of a kind's parameters (hex of the DER).
///
/// # Errors
/// [`FileError::Params`] when it is not hex or not a CA certificate.
pub fn fleet_ca(kind: &'static str, hex_der: &str) -> Result<CaCertificate, FileError> {
    let bad = |what: String| FileError::Params { kind, what };
    let der = hex::decode(hex_der).map_err(|_| bad("fleet_ca is not hexadecimal".to_owned()))?;
    CaCertificate::from_der(&der).map_err(|e| bad(format!("fleet_ca: {e}")))
}

/// The device certificate (hex of the DER) of unit `num` in a kind's parameters, checked
/// against the parameters' fleet CA.
///
/// # Errors
/// [`FileError::Params`] when it is not hex or does not chain to `ca`.
pub fn device_certificate(
    kind: &'static str,
    num: usize,
    hex_der: &str,
    ca: &CaCertificate,
) -> Result<DeviceCertificate, FileError> {
    let bad = |what: String| FileError::Params { kind, what };
    let der = hex::decode(hex_der).map_err(|_| {
        bad(format!(
            "the certificate of crypto unit {num} is not hexadecimal"
        ))
    })?;
    DeviceCertificate::verify(&der, ca).map_err(|e| {
        bad(format!(
            "the certificate of crypto unit {num} does not chain to fleet_ca: {e}"
        ))
    })
}
