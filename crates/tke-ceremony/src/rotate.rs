//! Master key rotation: `auto-mk-rotate` (a random master key generated in a recovery
//! unit) and `cryptounit-mk-rotate` (a master key loaded from parts and committed), both
//! resumable from wherever a previous run stopped.
//!
//! A rotation moves every unit of one service instance, and the instance's key storage,
//! from the master key in the current registers (VP `from`) to a new one (VP `to`):
//!
//! 1. (auto) a random key is generated in a recovery unit's new register while every
//!    other unit makes an importer key; one quorum-signed `exportMkBatch` of the new
//!    register seals it to all of them (one per 16 targets); each imports it;
//! 2. (auto) the new register is committed everywhere (the signature threshold); the
//!    key-part flow starts here, with every new register Full Committed already;
//! 3. key storage is re-encrypted from `from` to `to` through the instance's
//!    [`KeyService`] (`begin_rotation`, `reencrypt` batches, `finish_rotation`): inside a
//!    unit that holds both keys, each record re-tagged with the new VP, so that every
//!    record stays readable by a register some unit holds;
//! 4. set immediate on every unit (one signature): the new key becomes current, the new
//!    register empties. Never before step 3 finished: until then the old key is the only
//!    one some records are wrapped under.
//!
//! [`Rotate::plan`] queries every unit and the key storage and works out where the
//! instance stands ([`RotationStage`]): a run that finds a rotation under way refuses unless
//! asked to resume ([`RotationProblem::Interrupted`]), and a resume goes on from that
//! stage without ever generating a second new key. Every pre-check of the vendor's
//! rotation (one instance, all its units, none in imprint mode, one signature threshold,
//! enough administrators installed in every unit among the keys that may sign, one
//! current value, the new registers as the flow needs them) and of key storage (every
//! record under a value the units hold) is reported at once, before any change.
//!
//! [`RotatePlan::execute`] accounts for every transaction counter value it uses
//! ([`Counters`]), checks that every unit holds the new key committed before key storage
//! is touched, and ends with every unit's full post-condition.
//!
//! # Crash points
//!
//! For the resume tests ([`crate::crash`]); `CMD` is `auto-mk-rotate` or
//! `cryptounit-mk-rotate`:
//!
//! | point | the units hold | key storage |
//! | --- | --- | --- |
//! | `auto-mk-rotate:after-generate` | the new key in the recovery unit's new register (Full Uncommitted); an importer key pending elsewhere | untouched |
//! | `auto-mk-rotate:during-transfer` | the new key imported into one more unit, not all | untouched |
//! | `auto-mk-rotate:after-transfer` | the new key Full Uncommitted everywhere | untouched |
//! | `auto-mk-rotate:after-commit` | the new key Full Committed everywhere | untouched |
//! | `CMD:after-begin` | as above | rotation marker written, nothing re-encrypted |
//! | `CMD:during-reencrypt` | as above | one batch re-encrypted |
//! | `CMD:after-reencrypt` | as above | every record under the new key, marker removed |
//! | `CMD:during-setimm` | the new key current in one unit, committed in the others | as above |
//! | `CMD:after-setimm` | the new key current everywhere, new registers empty | as above |

use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use tke_client::{fanout::parallel, Client, ClientError, InstanceId, KnownUnit};
use tke_kms::{KeyService, KmsError, Rotation, Summary};

/// Where a key storage re-encryption stands (records done / total).
pub use tke_kms::Progress as Reencryption;
use tke_proto::{
    transport::SignedEnvelope, AdminInfo, AdminName, Command, Register, RegisterState,
    RegisterStatus, UnitStatus, UnitType, Vp,
};
use tke_sigkey::Signer;

use crate::{
    crash,
    failover::whole_instance,
    on_all, on_each,
    postcondition::{check_each, interference, Counters, Expected},
    signers::choose,
    transfer::{export_batches, export_request},
    CeremonyError, Checkpoint, Event, Problem, Progress, Rule,
};

/// Records re-encrypted per [`KeyService::reencrypt`] call: each call is one store
/// transaction and one progress report.
pub const REENCRYPT_BATCH: u64 = 10_000;

/// Which rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// `auto-mk-rotate`: the new key is generated in a recovery unit and copied to every
    /// other unit by the ceremony.
    Auto,
    /// `cryptounit-mk-rotate`: the new key was loaded from parts and committed in every
    /// unit beforehand (`cryptounit-mk-load`, `cryptounit-mk-commit`).
    KeyParts,
}

impl Flow {
    /// The command's name, which also prefixes its crash points.
    pub fn command(self) -> &'static str {
        match self {
            Self::Auto => "auto-mk-rotate",
            Self::KeyParts => "cryptounit-mk-rotate",
        }
    }
}

/// Where a rotation of the instance stands, as the units' registers and the key
/// storage's rotation marker say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationStage {
    /// No rotation under way: one current value everywhere, every new register empty,
    /// no rotation marker.
    NotStarted,
    /// A new key is in some new registers and not committed in every unit yet:
    /// generated in a recovery unit (`source`) by an interrupted `auto-mk-rotate`, or
    /// loaded from parts and not committed everywhere.
    Generated {
        /// `CRYPTO UNIT NUM` of a recovery unit holding the new key in its new register.
        source: Option<usize>,
        /// `CRYPTO UNIT NUM` of every unit holding it, in number order.
        holding: Vec<usize>,
        /// How many units the instance has.
        total: usize,
    },
    /// The new key is Full Committed in every unit; key storage is not re-encrypted
    /// yet, or partly (`reencrypted`, when its rotation began).
    Committed {
        /// Where the re-encryption stands, when it began.
        reencrypted: Option<Reencryption>,
    },
    /// Key storage is re-encrypted; `promoted` units already hold the new key as current.
    Promoting {
        /// `CRYPTO UNIT NUM` of each unit whose current register holds the new key.
        promoted: Vec<usize>,
    },
}

impl fmt::Display for RotationStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotStarted => f.write_str("no rotation is under way"),
            Self::Generated {
                source,
                holding,
                total,
            } => {
                match source {
                    Some(r) => write!(f, "the new master key was generated in recovery crypto unit {r} and ")?,
                    None => f.write_str("the new master key ")?,
                }
                write!(
                    f,
                    "is in the new master key register of {} of {total} crypto units ({}), not yet committed in all of them",
                    holding.len(),
                    nums(holding)
                )
            }
            Self::Committed { reencrypted: None } => f.write_str(
                "the new master key is committed in every crypto unit; key storage is not re-encrypted yet",
            ),
            Self::Committed {
                reencrypted: Some(p),
            } if p.remaining() == 0 => write!(
                f,
                "the new master key is committed in every crypto unit; key storage is re-encrypted ({} keys), no crypto unit uses the new master key yet",
                p.total
            ),
            Self::Committed {
                reencrypted: Some(p),
            } => write!(
                f,
                "the new master key is committed in every crypto unit; key storage re-encryption began ({} of {} keys re-encrypted)",
                p.done, p.total
            ),
            Self::Promoting { promoted } => write!(
                f,
                "key storage is re-encrypted and crypto unit(s) {} already use the new master key",
                nums(promoted)
            ),
        }
    }
}

/// `1, 2, 3`.
fn nums(v: &[usize]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// VP values with the units holding each: `599ed092b9e47faf... (crypto units 1, 2)`.
fn values(v: &[(Vp, Vec<usize>)]) -> String {
    v.iter()
        .map(|(vp, units)| format!("{}... (crypto units {})", &vp.to_hex()[..16], nums(units)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a rotation cannot start or resume ([`Problem::Rotation`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationProblem {
    /// The instance has no recovery unit to generate the new key in.
    #[error(
        "service instance {instance} has no recovery crypto unit to generate a new master key in"
    )]
    NoRecoveryUnit {
        /// The instance.
        instance: InstanceId,
    },
    /// The units' signature thresholds differ.
    #[error("the crypto units of the service instance have different signature thresholds ({}): a rotation needs the same signature threshold in every unit", units.iter().map(|(n, t)| format!("crypto unit {n}: {t}")).collect::<Vec<_>>().join(", "))]
    ThresholdsDiffer {
        /// `CRYPTO UNIT NUM` and signature threshold of each unit.
        units: Vec<(usize, u8)>,
    },
    /// Too few of the keys that may sign are installed in every unit.
    #[error("the rotation needs the signatures of {needed} administrator(s) installed in every crypto unit of the instance, and {} of the signature keys that may sign {} installed in every unit{} (administrators installed in every unit: {})", usable.len(), if usable.len() == 1 { "is" } else { "are" }, if usable.is_empty() { String::new() } else { format!(": {}", admin_names(usable)) }, if common.is_empty() { "none".to_owned() } else { admin_names(common) })]
    NoCommonSigners {
        /// Signatures needed: the signature threshold (one when only set-immediate is left).
        needed: usize,
        /// The keys that may sign and are installed in every unit.
        usable: Vec<AdminName>,
        /// The administrators installed in every unit.
        common: Vec<AdminName>,
    },
    /// The current registers hold several values.
    #[error("the current master key registers hold {} different values ({}): a rotation starts from one current value in every crypto unit", values.len(), self::values(values))]
    CurrentValues {
        /// Each value and the units holding it.
        values: Vec<(Vp, Vec<usize>)>,
    },
    /// The new registers hold several values.
    #[error("the new master key registers hold {} different values ({}): a rotation moves every crypto unit to one new value", values.len(), self::values(values))]
    NewValues {
        /// Each value and the units holding it.
        values: Vec<(Vp, Vec<usize>)>,
    },
    /// A rotation is under way and the run was not asked to resume it.
    #[error("a master key rotation of service instance {instance} is under way: {stage}; it must be finished, not started again")]
    Interrupted {
        /// The instance.
        instance: InstanceId,
        /// Where it stands.
        stage: RotationStage,
    },
    /// The key-part flow found a rotation whose new key is not committed everywhere: only
    /// the ceremony that copies the key (auto) can finish it.
    #[error("service instance {instance} is not ready for the key-part rotation: {stage}; it starts from the new master key committed in every crypto unit")]
    NotCommitted {
        /// The instance.
        instance: InstanceId,
        /// Where it stands.
        stage: RotationStage,
    },
    /// Asked to resume, but nothing is under way.
    #[error("no interrupted master key rotation of service instance {instance} was found: {why}")]
    NothingToResume {
        /// The instance.
        instance: InstanceId,
        /// What the units hold.
        why: &'static str,
    },
    /// The new key is not in any recovery unit's new register, so it cannot be copied to
    /// the units that lack it.
    #[error("no recovery crypto unit holds the new master key (verification pattern {}...) in its new master key register, so it cannot be copied to crypto unit(s) {}", &vp.to_hex()[..16], nums(missing))]
    NoSource {
        /// The new key's VP.
        vp: Vp,
        /// Units that lack it.
        missing: Vec<usize>,
    },
    /// The instance's key-management service cannot be opened.
    #[error("the key-management service of service instance {instance} cannot be opened")]
    KeyService {
        /// The instance.
        instance: InstanceId,
        /// Why.
        source: ClientError,
    },
    /// The key storage cannot be read.
    #[error("the key storage of service instance {instance} cannot be read")]
    KeyStorage {
        /// The instance.
        instance: InstanceId,
        /// Why.
        source: KmsError,
    },
    /// Records wrapped under a value the rotation does not involve: they would stay
    /// unreadable, or become so.
    #[error("key storage {location} holds {count} key(s) wrapped under the master key with verification pattern {}..., which is neither the current nor the new value of the crypto units: they cannot be re-encrypted", &vp.to_hex()[..16])]
    ForeignRecords {
        /// The store.
        location: String,
        /// The VP they are wrapped under.
        vp: Vp,
        /// How many.
        count: u64,
    },
    /// The key storage's rotation marker names other values than the units hold.
    #[error("key storage {location} records a rotation from verification pattern {}... to {}..., which does not match the crypto units' master key registers", &rotation.from.to_hex()[..16], &rotation.to.to_hex()[..16])]
    ForeignRotation {
        /// The store.
        location: String,
        /// The rotation it records.
        rotation: Rotation,
    },
    /// Records still wrapped under the old key, and no unit holds it any more beside the
    /// new one.
    #[error("key storage {location} still holds {count} key(s) under the old master key (verification pattern {}...), and no crypto unit holds both the old value (current) and the new one (committed) to re-encrypt them", &from.to_hex()[..16])]
    OldKeyGone {
        /// The store.
        location: String,
        /// The old VP.
        from: Vp,
        /// Records left under it.
        count: u64,
    },
}

/// Administrator names, comma-separated.
fn admin_names(v: &[AdminName]) -> String {
    v.iter()
        .map(AdminName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A milestone of a rotation ([`Event::Rotation`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationEvent {
    /// Committing the new register everywhere it is not committed yet.
    Committing,
    /// The new key is committed in every unit (the vendor's first milestone).
    Committed,
    /// The instance has no key storage reachable here: only the registers are rotated.
    NoKeyStorage,
    /// Key storage re-encryption: where it stands, with this run's rate (first before any
    /// batch).
    Reencrypting(tke_kms::ProgressReport),
    /// Key storage is under the new key (the vendor's second milestone).
    Rewrapped,
    /// Setting the new key immediately on every unit not promoted yet.
    SettingImmediate {
        /// How many units.
        units: usize,
    },
}

/// What the operator asked for.
pub struct Rotate<'c> {
    /// Which rotation.
    pub flow: Flow,
    /// The units: every unit of one instance (the selection, for the key-part flow).
    pub units: Vec<&'c KnownUnit>,
    /// The signature keys that may sign, in order of preference.
    pub keys: Vec<AdminInfo>,
    /// Finish a rotation under way instead of refusing it.
    pub resume: bool,
}

/// A checked rotation, ready to run once.
pub struct RotatePlan<'c> {
    client: &'c Client,
    flow: Flow,
    instance: InstanceId,
    units: Vec<(&'c KnownUnit, UnitStatus)>,
    stage: RotationStage,
    from: Vp,
    /// The new key's VP; `None` before it is generated.
    to: Option<Vp>,
    /// The recovery unit that generates the key or holds it (auto, before commit).
    source: Option<&'c KnownUnit>,
    /// Who signs: the quorum, first the one who signs single-signature commands.
    signers: Vec<AdminInfo>,
    keys: Option<Arc<dyn KeyService>>,
    /// Whether key storage still needs re-encryption.
    reencrypt: bool,
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateReport {
    /// The instance.
    pub instance: InstanceId,
    /// `CRYPTO UNIT NUM` of every unit, in number order.
    pub units: Vec<usize>,
    /// Where the run started from.
    pub resumed_from: RotationStage,
    /// VP of the old master key.
    pub from: Vp,
    /// VP of the new master key, now current everywhere.
    pub to: Vp,
    /// The re-encryption's final count, when the instance has key storage here and it
    /// was re-encrypted by this run.
    pub reencrypted: Option<Reencryption>,
    /// Whether the instance has key storage here.
    pub key_storage: bool,
}

const STEP_GENERATE: &str = "Generating a random master key value";
const STEP_TRANSFER: &str = "Transferring the master key value";
const STEP_COMMIT: &str = "Committing the new master key value";
const STEP_SETIMM: &str = "Setting the new master key value immediately";
const STEP_CHECK: &str = "Checking the crypto units";
const FULL_COMMITTED: &[RegisterState] = &[RegisterState::FullCommitted];
const VALID: &[RegisterState] = &[RegisterState::Valid];

/// Each distinct value of `vps`, with the units holding it, in order of first appearance.
fn group(vps: impl IntoIterator<Item = (Vp, usize)>) -> Vec<(Vp, Vec<usize>)> {
    let mut out: Vec<(Vp, Vec<usize>)> = Vec::new();
    for (vp, num) in vps {
        match out.iter_mut().find(|(v, _)| *v == vp) {
            Some((_, units)) => units.push(num),
            None => out.push((vp, vec![num])),
        }
    }
    out
}

impl<'c> Rotate<'c> {
    /// Queries every unit and the key storage, works out the [`RotationStage`] and checks every
    /// precondition. Nothing is changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found: the instance
    /// ([`Problem::NoUnits`], [`Problem::SeveralInstances`],
    /// [`Problem::InstanceNotAllSelected`]), units that cannot be queried
    /// ([`Problem::Unreachable`]) or in imprint mode ([`Rule::ImprintMode`]), registers
    /// in a state the rotation cannot start or resume from ([`Rule::CurrentRegister`],
    /// [`Rule::NewRegister`]), and the [`RotationProblem`]s.
    pub fn plan(self, client: &'c Client) -> Result<RotatePlan<'c>, CeremonyError> {
        let (instance, mut problems) = whole_instance(client, &self.units)?;
        let units = client.instance_units(&instance);
        let rot = |p: RotationProblem| Problem::Rotation(Box::new(p));
        if self.flow == Flow::Auto && !units.iter().any(|u| u.unit_type() == UnitType::Recovery) {
            problems.push(rot(RotationProblem::NoRecoveryUnit {
                instance: instance.clone(),
            }));
        }
        let mut reachable: Vec<(&KnownUnit, UnitStatus)> = Vec::new();
        for (u, s) in units.iter().zip(parallel(&units, |u| client.query(u))) {
            match s {
                Ok(s) => reachable.push((*u, s)),
                Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
            }
        }
        let rule = |u: &KnownUnit, rule| Problem::Precondition {
            num: u.num,
            unit: u.id(),
            rule,
        };
        for (u, s) in &reachable {
            if s.imprint_mode() {
                problems.push(rule(u, Rule::ImprintMode));
            }
        }
        let thresholds: Vec<(usize, u8)> = reachable
            .iter()
            .map(|(u, s)| (u.num, s.sig_threshold))
            .collect();
        if thresholds.windows(2).any(|w| w[0].1 != w[1].1) {
            problems.push(rot(RotationProblem::ThresholdsDiffer { units: thresholds }));
        }
        let keys = match client.key_service(&instance) {
            Ok(k) => k,
            Err(source) => {
                problems.push(rot(RotationProblem::KeyService {
                    instance: instance.clone(),
                    source,
                }));
                None
            }
        };
        let summary = match keys.as_ref().map(|k| k.summary()).transpose() {
            Ok(s) => s,
            Err(source) => {
                problems.push(rot(RotationProblem::KeyStorage {
                    instance: instance.clone(),
                    source,
                }));
                None
            }
        };
        if !problems.is_empty() {
            return Err(CeremonyError::Problems(problems));
        }

        // Where the rotation stands.
        let found = match classify(&instance, &reachable, summary.as_ref()) {
            Ok(found) => found,
            Err(p) => return Err(CeremonyError::Problems(p)),
        };
        let stage = found.stage.clone();
        match (self.flow, self.resume, &stage) {
            (Flow::Auto, false, RotationStage::NotStarted) => {}
            (Flow::KeyParts, false, RotationStage::Committed { reencrypted: None }) => {}
            (_, true, RotationStage::NotStarted) => {
                problems.push(rot(RotationProblem::NothingToResume {
                    instance: instance.clone(),
                    why: "every current master key register holds the same value and every new master key register is empty",
                }));
            }
            (Flow::KeyParts, _, RotationStage::NotStarted) => {
                for (u, s) in &reachable {
                    problems.push(rule(
                        u,
                        Rule::NewRegister {
                            found: s.new_register.state,
                            needed: FULL_COMMITTED,
                        },
                    ));
                }
            }
            (Flow::KeyParts, _, RotationStage::Generated { .. }) => {
                // Loaded from parts but not committed everywhere, or an auto rotation
                // stopped before its commit: the units say which by where the key is.
                let uncommitted = reachable
                    .iter()
                    .filter(|(_, s)| s.new_register.state != RegisterState::FullCommitted);
                if self.resume {
                    problems.push(rot(RotationProblem::NotCommitted {
                        instance: instance.clone(),
                        stage: stage.clone(),
                    }));
                } else {
                    for (u, s) in uncommitted {
                        problems.push(rule(
                            u,
                            Rule::NewRegister {
                                found: s.new_register.state,
                                needed: FULL_COMMITTED,
                            },
                        ));
                    }
                }
            }
            (_, false, _) => problems.push(rot(RotationProblem::Interrupted {
                instance: instance.clone(),
                stage: stage.clone(),
            })),
            (_, true, _) => {}
        }

        // The source of the key, for the auto flow before every unit holds it.
        let source = match (&stage, found.to) {
            (RotationStage::NotStarted, _) => units
                .iter()
                .find(|u| u.unit_type() == UnitType::Recovery)
                .copied(),
            (RotationStage::Generated { source, .. }, _) => {
                units.iter().find(|u| Some(u.num) == *source).copied()
            }
            _ => None,
        };
        if let (RotationStage::Generated { holding, .. }, Some(vp), Flow::Auto) =
            (&stage, found.to, self.flow)
        {
            if source.is_none() {
                let missing = units
                    .iter()
                    .map(|u| u.num)
                    .filter(|n| !holding.contains(n))
                    .collect();
                problems.push(rot(RotationProblem::NoSource { vp, missing }));
            }
        }

        // Who signs: the generation, the transfer and the commit need the signature
        // threshold; set-immediate needs one administrator.
        let quorum = matches!(
            stage,
            RotationStage::NotStarted | RotationStage::Generated { .. }
        );
        let threshold = reachable
            .first()
            .map_or(1, |(_, s)| usize::from(s.sig_threshold));
        let needed = if quorum { threshold } else { 1 };
        let mut common: Vec<AdminInfo> = reachable
            .first()
            .map(|(_, s)| s.admins.clone())
            .unwrap_or_default();
        for (_, s) in &reachable {
            common.retain(|a| s.admins.iter().any(|b| b.ski == a.ski));
        }
        let signers = choose(&self.keys, &common, needed);
        if signers.len() < needed {
            problems.push(rot(RotationProblem::NoCommonSigners {
                needed,
                usable: signers.iter().map(|a| a.name.clone()).collect(),
                common: common.iter().map(|a| a.name.clone()).collect(),
            }));
        }
        if !problems.is_empty() {
            return Err(CeremonyError::Problems(problems));
        }
        reachable.sort_by_key(|(u, _)| u.num);
        Ok(RotatePlan {
            client,
            flow: self.flow,
            instance,
            units: reachable,
            stage,
            from: found.from,
            to: found.to,
            source,
            signers,
            keys,
            reencrypt: found.reencrypt,
        })
    }
}

/// What [`classify`] found.
struct Found {
    stage: RotationStage,
    from: Vp,
    to: Option<Vp>,
    /// Whether key storage still needs re-encryption.
    reencrypt: bool,
}

/// Works out the stage from the units' registers and the key storage, or every problem
/// that makes the state neither a start nor a rotation this ceremony can finish.
fn classify(
    instance: &InstanceId,
    units: &[(&KnownUnit, UnitStatus)],
    summary: Option<&Summary>,
) -> Result<Found, Vec<Problem>> {
    let rot = |p: RotationProblem| Problem::Rotation(Box::new(p));
    let rule = |u: &KnownUnit, rule| Problem::Precondition {
        num: u.num,
        unit: u.id(),
        rule,
    };
    let mut problems = Vec::new();
    for (u, s) in units {
        if s.current_register.state != RegisterState::Valid {
            problems.push(rule(
                u,
                Rule::CurrentRegister {
                    found: s.current_register.state,
                    needed: VALID,
                },
            ));
        }
    }
    let news = group(
        units
            .iter()
            .filter_map(|(u, s)| s.new_register.vp.map(|vp| (vp, u.num))),
    );
    if news.len() > 1 {
        problems.push(rot(RotationProblem::NewValues {
            values: news.clone(),
        }));
    }
    let to = news.first().map(|(vp, _)| *vp);
    // A unit whose current register holds the new key was promoted already.
    let promoted: Vec<usize> = units
        .iter()
        .filter(|(_, s)| to.is_some() && s.current_register.vp == to)
        .map(|(u, _)| u.num)
        .collect();
    let currents = group(units.iter().filter_map(|(u, s)| {
        s.current_register
            .vp
            .filter(|vp| Some(*vp) != to)
            .map(|vp| (vp, u.num))
    }));
    if currents.len() > 1 {
        problems.push(rot(RotationProblem::CurrentValues {
            values: currents.clone(),
        }));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some((from, _)) = currents.first().cloned() else {
        // Every unit holds the new key as current: nothing left but what the key storage
        // says; with nothing to rotate from, there is no rotation.
        return match (to, summary.and_then(|s| s.rotation)) {
            (_, Some(rotation)) => Err(vec![rot(RotationProblem::ForeignRotation {
                location: location(summary),
                rotation,
            })]),
            _ => Err(vec![rot(RotationProblem::NothingToResume {
                instance: instance.clone(),
                why: "every crypto unit holds the new master key as its current value already",
            })]),
        };
    };

    let committed_everywhere_else = units.iter().all(|(_, s)| {
        s.current_register.vp == to
            || (s.new_register.state == RegisterState::FullCommitted && s.new_register.vp == to)
    });
    let stage = match to {
        None => RotationStage::NotStarted,
        Some(_) if !promoted.is_empty() => {
            // Promotion started: every other unit must still hold the new key committed.
            for (u, s) in units {
                if !promoted.contains(&u.num)
                    && s.new_register.state != RegisterState::FullCommitted
                {
                    problems.push(rule(
                        u,
                        Rule::NewRegister {
                            found: s.new_register.state,
                            needed: FULL_COMMITTED,
                        },
                    ));
                }
            }
            RotationStage::Promoting { promoted }
        }
        Some(_) if committed_everywhere_else => RotationStage::Committed {
            // Records under the new key while no unit uses it yet: a re-encryption began,
            // recorded or already finished (stopped before set-immediate).
            reencrypted: summary
                .filter(|s| s.rotation.is_some() || count_under(s, to) > 0)
                .map(|s| Reencryption {
                    done: count_under(s, to),
                    total: s.total,
                }),
        },
        Some(vp) => {
            let holding: Vec<usize> = news.first().map(|(_, u)| u.clone()).unwrap_or_default();
            let source = units
                .iter()
                .find(|(u, s)| u.unit_type() == UnitType::Recovery && s.new_register.vp == Some(vp))
                .map(|(u, _)| u.num);
            RotationStage::Generated {
                source,
                holding,
                total: units.len(),
            }
        }
    };

    // Key storage: every record under the old or the new key, and a marker (if any)
    // for exactly this rotation. Before the new key is committed everywhere, no record
    // may be under it yet.
    let mut reencrypt = false;
    if let Some(s) = summary {
        for (vp, count) in &s.by_vp {
            let known = *vp == from
                || (Some(*vp) == to
                    && matches!(
                        stage,
                        RotationStage::Committed { .. } | RotationStage::Promoting { .. }
                    ));
            if !known {
                problems.push(rot(RotationProblem::ForeignRecords {
                    location: s.location.clone(),
                    vp: *vp,
                    count: *count,
                }));
            }
        }
        if let Some(r) = s.rotation {
            if Some(r.to) != to
                || r.from != from
                || matches!(
                    stage,
                    RotationStage::NotStarted | RotationStage::Generated { .. }
                )
            {
                problems.push(rot(RotationProblem::ForeignRotation {
                    location: s.location.clone(),
                    rotation: r,
                }));
            }
        }
        let left = count_under(s, Some(from));
        reencrypt = to.is_some() && (s.rotation.is_some() || left > 0);
        // The re-encryption needs a unit holding both keys.
        let both = units.iter().any(|(_, s)| {
            s.current_register.vp == Some(from)
                && s.new_register.state == RegisterState::FullCommitted
        });
        if reencrypt && left > 0 && !both && matches!(stage, RotationStage::Promoting { .. }) {
            problems.push(rot(RotationProblem::OldKeyGone {
                location: s.location.clone(),
                from,
                count: left,
            }));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Found {
        stage,
        from,
        to,
        reencrypt,
    })
}

/// Records wrapped under `vp`.
fn count_under(s: &Summary, vp: Option<Vp>) -> u64 {
    s.by_vp
        .iter()
        .filter(|(v, _)| Some(*v) == vp)
        .map(|(_, n)| n)
        .sum()
}

/// Where the key storage lives, for messages.
fn location(summary: Option<&Summary>) -> String {
    summary.map(|s| s.location.clone()).unwrap_or_default()
}

impl<'c> RotatePlan<'c> {
    /// The instance.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Where the rotation stands; [`RotationStage::NotStarted`] for a fresh start.
    pub fn stage(&self) -> &RotationStage {
        &self.stage
    }

    /// Whether the run finishes an interrupted rotation rather than starting one (the
    /// key-part flow starts from new registers committed everywhere).
    pub fn resumes(&self) -> bool {
        !matches!(
            (self.flow, &self.stage),
            (_, RotationStage::NotStarted)
                | (
                    Flow::KeyParts,
                    RotationStage::Committed { reencrypted: None }
                )
        )
    }

    /// Every unit of the instance with its state, in number order.
    pub fn units(&self) -> &[(&'c KnownUnit, UnitStatus)] {
        &self.units
    }

    /// VP of the current (old) master key.
    pub fn from(&self) -> Vp {
        self.from
    }

    /// VP of the new master key, once it exists.
    pub fn to(&self) -> Option<Vp> {
        self.to
    }

    /// Whether the instance has key storage reachable here.
    pub fn has_key_storage(&self) -> bool {
        self.keys.is_some()
    }

    /// The administrators who sign, in order: the first signs the single-signature
    /// commands. Open exactly these keys.
    pub fn keys_needed(&self) -> &[AdminInfo] {
        &self.signers
    }

    /// The recovery unit that generates the new key or holds it (auto flow, before the
    /// commit).
    pub fn source(&self) -> Option<&'c KnownUnit> {
        self.source
    }

    /// Which rotation.
    pub fn flow(&self) -> Flow {
        self.flow
    }

    /// Runs the rotation from its stage to the end. The plan is consumed.
    ///
    /// # Errors
    /// [`CeremonyError::SignerMissing`] when a key of [`Self::keys_needed`] is not in
    /// `signers` (nothing is changed); [`CeremonyError::Step`] naming every unit that
    /// failed a step, or [`CeremonyError::Interference`] when someone else sent a unit
    /// commands meanwhile; [`CeremonyError::KeyStorage`] when key storage refused;
    /// [`CeremonyError::PostCondition`] when units do not hold what was asked (checked
    /// after the commit, before key storage is touched, and at the end). The units and
    /// key storage then hold what the steps before reached, and a run with `resume`
    /// finishes from there.
    pub fn execute(
        self,
        signers: &[&dyn Signer],
        progress: &dyn Progress,
    ) -> Result<RotateReport, CeremonyError> {
        let mut quorum: Vec<&dyn Signer> = Vec::with_capacity(self.signers.len());
        for k in &self.signers {
            let s = signers.iter().find(|s| s.ski() == k.ski).copied().ok_or(
                CeremonyError::SignerMissing {
                    name: k.name.clone(),
                    ski: k.ski,
                },
            )?;
            quorum.push(s);
        }
        let one = &quorum[..1.min(quorum.len())];
        let client = self.client;
        let counters = Counters::default();
        for (u, s) in &self.units {
            counters.start(u, s);
        }
        let all: Vec<&KnownUnit> = self.units.iter().map(|(u, _)| *u).collect();
        let cmd = self.flow.command();
        let point = |step: &str| crash::point(&format!("{cmd}:{step}"));
        let event = |e: RotationEvent| progress.event(&Event::Rotation(e));

        // 1. The new key in every unit's new register (auto, until every unit holds it).
        let to = match (&self.stage, self.source) {
            (RotationStage::NotStarted | RotationStage::Generated { .. }, Some(source)) => {
                self.transfer(source, &counters, &quorum, one, progress)?
            }
            _ => self.to.ok_or(CeremonyError::Verification {
                num: self.units.first().map_or(0, |(u, _)| u.num),
                what: "no new master key to rotate to",
            })?,
        };

        // 2. Commit wherever the new key is not committed yet.
        if matches!(
            self.stage,
            RotationStage::NotStarted | RotationStage::Generated { .. }
        ) {
            event(RotationEvent::Committing);
            // Every unit whose new register was not committed when planned holds the key
            // uncommitted now (generated or imported); the check below proves it.
            let uncommitted: Vec<&KnownUnit> = self
                .units
                .iter()
                .filter(|(_, s)| s.new_register.state != RegisterState::FullCommitted)
                .map(|(u, _)| *u)
                .collect();
            on_all(STEP_COMMIT, &uncommitted, |u| {
                counters.run(client, u, &Command::CommitMk(to), &quorum)
            })
            .map_err(|e| interference(client, e, |_| None))?;
        }
        // Before key storage is touched: every unit holds the new key committed (or, when
        // promoted, current), everything else as planned.
        let committed: Vec<(&KnownUnit, Expected)> = self
            .units
            .iter()
            .map(|(u, s)| {
                let mut e = Expected::of(s);
                e.importer_pending = false;
                if s.current_register.vp == Some(to) {
                    e.new_register = RegisterStatus::EMPTY;
                } else {
                    e.new_register = RegisterStatus {
                        state: RegisterState::FullCommitted,
                        vp: Some(to),
                    };
                }
                (*u, e)
            })
            .collect();
        let each: Vec<(&KnownUnit, &Expected)> = committed.iter().map(|(u, e)| (*u, e)).collect();
        check_each(client, &each, Some(&counters), STEP_COMMIT)?;
        event(RotationEvent::Committed);
        if matches!(
            self.stage,
            RotationStage::NotStarted | RotationStage::Generated { .. }
        ) {
            point("after-commit");
        }

        // 3. Key storage, under the new key before any unit drops the old one.
        let mut reencrypted = None;
        match &self.keys {
            None => event(RotationEvent::NoKeyStorage),
            Some(keys)
                if self.reencrypt
                    || matches!(
                        self.stage,
                        RotationStage::NotStarted
                            | RotationStage::Generated { .. }
                            | RotationStage::Committed { .. }
                    ) =>
            {
                let fail = |source| CeremonyError::KeyStorage {
                    instance: self.instance.clone(),
                    source: Box::new(source),
                };
                keys.begin_rotation(Rotation {
                    from: self.from,
                    to,
                })
                .map_err(fail)?;
                point("after-begin");
                // Reports: where an interrupted run stopped, then after each batch.
                let mut reports = 0;
                let at = tke_kms::reencrypt_all(keys.as_ref(), REENCRYPT_BATCH, &mut |r| {
                    event(RotationEvent::Reencrypting(*r));
                    reports += 1;
                    if reports == 2 && r.progress.remaining() > 0 {
                        point("during-reencrypt");
                    }
                })
                .map_err(fail)?;
                keys.finish_rotation().map_err(fail)?;
                reencrypted = Some(at);
                point("after-reencrypt");
            }
            Some(_) => {}
        }
        event(RotationEvent::Rewrapped);

        // 4. Set immediate everywhere not promoted yet: one unit first, so that a crash
        // point can stop between the first and the others.
        let pending: Vec<&KnownUnit> = committed
            .iter()
            .filter(|(_, e)| e.new_register.state == RegisterState::FullCommitted)
            .map(|(u, _)| *u)
            .collect();
        event(RotationEvent::SettingImmediate {
            units: pending.len(),
        });
        let setimm = |u: &KnownUnit| counters.run(client, u, &Command::SetImmediate(to), one);
        if let Some((first, rest)) = pending.split_first() {
            on_all(STEP_SETIMM, &[*first], setimm)
                .map_err(|e| interference(client, e, |_| None))?;
            point("during-setimm");
            on_all(STEP_SETIMM, rest, setimm).map_err(|e| interference(client, e, |_| None))?;
        }
        point("after-setimm");

        // The full post-condition: the new key current everywhere, nothing pending.
        let done: Vec<(&KnownUnit, Expected)> = committed
            .into_iter()
            .map(|(u, mut e)| {
                e.current_register = RegisterStatus {
                    state: RegisterState::Valid,
                    vp: Some(to),
                };
                e.new_register = RegisterStatus::EMPTY;
                (u, e)
            })
            .collect();
        let each: Vec<(&KnownUnit, &Expected)> = done.iter().map(|(u, e)| (*u, e)).collect();
        check_each(client, &each, Some(&counters), STEP_CHECK)?;
        progress.event(&Event::Verified {
            checkpoint: Checkpoint::Finished,
            units: all.len(),
        });
        Ok(RotateReport {
            instance: self.instance.clone(),
            units: all.iter().map(|u| u.num).collect(),
            resumed_from: self.stage.clone(),
            from: self.from,
            to,
            reencrypted,
            key_storage: self.keys.is_some(),
        })
    }

    /// Auto flow: generates the new key in `source`'s new register (unless it holds it
    /// already) and copies it into every unit whose new register is empty. Returns its VP.
    fn transfer(
        &self,
        source: &KnownUnit,
        counters: &Counters,
        quorum: &[&dyn Signer],
        one: &[&dyn Signer],
        progress: &dyn Progress,
    ) -> Result<Vp, CeremonyError> {
        let client = self.client;
        let cmd = self.flow.command();
        let generate = self.to.is_none();
        let targets: Vec<&KnownUnit> = self
            .units
            .iter()
            .filter(|(u, s)| u.id() != source.id() && s.new_register.state == RegisterState::Empty)
            .map(|(u, _)| *u)
            .collect();
        let mut stepping: Vec<&KnownUnit> = targets.clone();
        if generate {
            progress.event(&Event::GeneratingMasterKey);
            stepping.push(source);
        }
        // The recovery unit generates the key while the targets make their importer keys.
        let out = on_all(STEP_GENERATE, &stepping, |u| {
            let command = if u.id() == source.id() {
                Command::GenerateRandomMk
            } else {
                Command::GenerateImporter
            };
            counters.run(client, u, &command, one)
        })
        .map_err(|e| interference(client, e, |_| None))?;
        let mut vp = self.to;
        let mut requests = Vec::with_capacity(targets.len());
        for (u, der) in stepping.iter().zip(&out) {
            if u.id() == source.id() {
                let vp_of = Vp::from_slice(der).map_err(|source_error| CeremonyError::Output {
                    step: STEP_GENERATE,
                    num: u.num,
                    source: source_error,
                })?;
                vp = Some(vp_of);
            } else {
                requests.push(export_request(STEP_GENERATE, u, der, Register::New)?);
            }
        }
        let vp = vp.ok_or(CeremonyError::Verification {
            num: source.num,
            what: "no verification pattern was returned",
        })?;
        crash::point(&format!("{cmd}:after-generate"));

        // One quorum-signed export of the new register per batch of 16 targets, then
        // every target imports its envelope, in parallel.
        let envelopes = export_batches(STEP_TRANSFER, client, counters, source, &requests, quorum)?;
        let done = AtomicUsize::new(0);
        let total = targets.len();
        let jobs: Vec<(&KnownUnit, SignedEnvelope)> = targets.into_iter().zip(envelopes).collect();
        on_each(
            STEP_TRANSFER,
            &jobs,
            |(u, _)| *u,
            |(u, envelope)| {
                counters.run(
                    client,
                    u,
                    &Command::ImportMk(Box::new(envelope.clone())),
                    one,
                )?;
                let index = done.fetch_add(1, Ordering::SeqCst) + 1;
                progress.event(&Event::TransferringMasterKey { index, total });
                if index == 1 && total > 1 {
                    crash::point(&format!("{cmd}:during-transfer"));
                }
                Ok(())
            },
        )
        .map_err(|e| interference(client, e, |_| None))?;
        crash::point(&format!("{cmd}:after-transfer"));
        Ok(vp)
    }
}
