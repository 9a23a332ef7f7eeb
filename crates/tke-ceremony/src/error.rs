use tke_client::{ClientError, InstanceId};
use tke_proto::{
    AdminInfo, AdminName, ControlPoint, ErrorChain, RegisterState, RegisterStatus, Ski, UnitId, Vp,
};
use tke_sigkey::SignError;

use crate::{postcondition::UnitDeviations, signers::Quorum};

/// Administrator names, comma-separated.
fn names(names: &[AdminName]) -> String {
    names
        .iter()
        .map(AdminName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Verification patterns as their first 16 hex digits, comma-separated.
fn short_vps(vps: &[Vp]) -> String {
    vps.iter()
        .map(|v| format!("{}...", &v.to_hex()[..16]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Unit ids, comma-separated.
fn ids(ids: &[UnitId]) -> String {
    ids.iter().map(UnitId::uuid).collect::<Vec<_>>().join(", ")
}

/// What failover-enable's step is called in messages.
pub(crate) const STEP_ADD_UNITS: &str = "Adding failover crypto units";

/// One precondition that does not hold. A ceremony reports every problem at once,
/// before it touches any unit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The instance is not in the fleet.
    #[error("service instance {instance} was not found")]
    UnknownInstance {
        /// The instance asked for.
        instance: InstanceId,
    },
    /// The instance has no recovery unit.
    #[error("The service instance does not contain any recovery crypto units.")]
    NoRecoveryUnit,
    /// A unit is not in imprint mode.
    #[error("crypto unit {num} ({}) is not in imprint mode", unit.uuid())]
    NotInImprintMode {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The unit.
        unit: UnitId,
        /// Whether its current master key register holds a key: then zeroizing it would
        /// lose the key that the instance's key storage is encrypted under.
        current_mk_set: bool,
    },
    /// A unit could not be queried.
    #[error("crypto unit {num} cannot be queried")]
    Unreachable {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// Why.
        source: ClientError,
    },
    /// Fewer administrators than a threshold.
    #[error(
        "{count} administrators cannot meet a threshold of {needed}: install at least {needed}"
    )]
    TooFewAdmins {
        /// Administrators given.
        count: usize,
        /// The larger threshold.
        needed: u8,
    },
    /// More than eight administrators.
    #[error("{count} administrators were given; a crypto unit holds at most 8")]
    TooManyAdmins {
        /// Administrators given.
        count: usize,
    },
    /// The same key given twice.
    #[error("signature key {name} ({}) was given more than once; each administrator needs its own key", ski.short())]
    DuplicateAdmin {
        /// The administrator.
        name: AdminName,
        /// Its SKI.
        ski: Ski,
    },
    /// Two keys whose administrator names look the same (`AdminName::looks_like`): a
    /// crypto unit installs no two such administrators (256/40).
    #[error("the administrator names {:?} and {:?} look the same; a crypto unit installs only one of them", first.as_str(), second.as_str())]
    LookalikeAdmins {
        /// The first of the two.
        first: AdminName,
        /// The one that looks like it.
        second: AdminName,
    },
    /// A key cannot sign.
    #[error("signature key {name} cannot be used")]
    UnusableKey {
        /// The administrator.
        name: AdminName,
        /// Why.
        source: SignError,
    },
    /// No unit was given.
    #[error("no crypto units were given")]
    NoUnits,
    /// A unit out of imprint mode on which none of the given keys is installed: it would
    /// refuse an unsigned or foreign-signed zeroize.
    #[error("crypto unit {num} is out of imprint mode and none of the usable signature keys on this workstation is installed on it (installed administrators: {}); zeroizing it needs the signature of one of them", names(installed))]
    NoInstalledKey {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The unit.
        unit: UnitId,
        /// The administrators installed on it.
        installed: Vec<AdminName>,
    },
    /// A recovery unit out of imprint mode on which fewer of the given keys are installed
    /// than its signature threshold (2 or more; a threshold of 1 is
    /// [`Problem::NoInstalledKey`]): it would refuse the zeroize, which destroys what may
    /// be the instance's last copy of the master key.
    #[error("crypto unit {num} is a recovery unit out of imprint mode: zeroizing it needs the signatures of {needed} of its administrators (its signature threshold), and {} of the usable signature keys on this workstation {} installed on it{} (installed administrators: {})", usable.len(), if usable.len() == 1 { "is" } else { "are" }, if usable.is_empty() { String::new() } else { format!(": {}", names(usable)) }, names(installed))]
    TooFewInstalledKeys {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The unit.
        unit: UnitId,
        /// The signatures it needs: its signature threshold.
        needed: usize,
        /// The given keys installed on it, fewer than `needed`.
        usable: Vec<AdminName>,
        /// The administrators installed on it.
        installed: Vec<AdminName>,
    },
    /// A unit's state breaks a rule the command needs.
    #[error("crypto unit {num} ({}) {rule}", unit.uuid())]
    Precondition {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The unit.
        unit: UnitId,
        /// The rule.
        rule: Rule,
    },
    /// Fewer of the keys that may sign are installed on a unit than a command needs.
    #[error("crypto unit {num} ({}): {action} needs the signatures of {needed} of its administrators ({quorum}), and {} of the signature keys that may sign {} installed on it{} (installed administrators: {})", unit.uuid(), usable.len(), if usable.len() == 1 { "is" } else { "are" }, if usable.is_empty() { String::new() } else { format!(": {}", names(usable)) }, if installed.is_empty() { "none".to_owned() } else { names(installed) })]
    TooFewSigners {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The unit.
        unit: UnitId,
        /// What needs the signatures (e.g. "committing the new master key register").
        action: &'static str,
        /// How many signatures.
        needed: usize,
        /// The rule that sets that number.
        quorum: Quorum,
        /// The keys that may sign and are installed, fewer than `needed`.
        usable: Vec<AdminName>,
        /// The administrators installed on it.
        installed: Vec<AdminName>,
    },
    /// The selected units belong to several service instances; the command acts on one.
    #[error("the selected crypto units belong to {} service instances ({}); select the units of one instance only", instances.len(), instances.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    SeveralInstances {
        /// The instances, in order of first appearance.
        instances: Vec<InstanceId>,
    },
    /// Units of the instance are not selected; the command needs every one of them.
    #[error("not every crypto unit of service instance {instance} is selected (left out: crypto unit {})", unselected.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    InstanceNotAllSelected {
        /// The instance.
        instance: InstanceId,
        /// `CRYPTO UNIT NUM` of each unit of it left out.
        unselected: Vec<usize>,
    },
    /// The fleet carrying the instance cannot add crypto units (a `tke-unitd` server: its
    /// units are made on the server).
    #[error("crypto units cannot be added to service instance {instance} from this workstation: its units are served by {}", endpoints.join(", "))]
    CannotAddUnits {
        /// The instance.
        instance: InstanceId,
        /// The transports of the fleet.
        endpoints: Vec<String>,
    },
    /// The fleet refuses to add units to this instance.
    #[error("the fleet cannot add failover crypto units to service instance {instance}")]
    AddingUnitsRefused {
        /// The instance.
        instance: InstanceId,
        /// Why.
        source: ClientError,
    },
    /// The instance may not have (more) failover units.
    #[error("service instance {instance} can have no more failover crypto units")]
    FailoverTotal {
        /// The instance.
        instance: InstanceId,
        /// Why.
        source: tke_client::FailoverTotalError,
    },
    /// The same control points were asked both to be set and to be reset.
    #[error("control point(s) {} cannot be both set and reset; ask for one of the two", points.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    ControlPointsSetAndReset {
        /// The points asked both ways.
        points: Vec<ControlPoint>,
    },
    /// A master key is loaded from 2 or 3 parts.
    #[error("{count} master key part(s) were given: a master key is loaded from 2 or 3 parts")]
    PartCount {
        /// The parts given.
        count: usize,
    },
    /// Two of the parts given are the same part (their verification patterns are equal):
    /// two equal parts cancel out of their XOR, so the master key would be known to fewer
    /// people than the parts' owners (or be zero).
    #[error("master key parts {first} and {second} are the same part (verification pattern {}...): two equal parts cancel out of the master key; give different parts", &vp.to_hex()[..16])]
    SameParts {
        /// The position of the first (1-based, in load order).
        first: usize,
        /// The position of the second.
        second: usize,
        /// Their verification pattern.
        vp: Vp,
    },
    /// The parts are not independent (`docs/protocol.md` §11.2): a part is zero, or the
    /// XOR of all of them is zero — three parts of which one is the XOR of the other two.
    #[error("the master key parts are not independent: a part is zero, or one is the XOR of the others, so that the master key would be zero; replace one of them with a new part")]
    PartsNotIndependent,
    /// The parts given to a load are not the ones it was planned with.
    #[error("the master key parts given (verification patterns {}) are not the ones the load was planned with ({})", short_vps(given), short_vps(planned))]
    PartsNotPlanned {
        /// The verification patterns planned, in load order.
        planned: Vec<Vp>,
        /// The verification patterns of the parts given.
        given: Vec<Vp>,
    },
    /// No recovery unit of the instance holds a master key to copy (`auto-recover`).
    #[error("no recovery crypto unit of service instance {instance} holds a master key (a Valid current master key register): there is nothing to recover from")]
    NoRecoverySource {
        /// The instance.
        instance: InstanceId,
    },
    /// The unit asked to copy a master key from cannot be the source (`auto-recover`).
    #[error("crypto unit {num} cannot be the source of the master key: {why}")]
    NotARecoverySource {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// Why.
        why: &'static str,
    },
    /// Too few of the keys that may sign are installed on the source and on every
    /// target of `auto-recover` (the vendor's common administrator set).
    #[error("copying the master key from recovery unit {from} needs the signatures of {needed} administrators (the signature threshold) installed on it and on every crypto unit it is copied to, and {} of the signature keys that may sign {} installed on all of them{} (administrators installed on all of them: {})", usable.len(), if usable.len() == 1 { "is" } else { "are" }, if usable.is_empty() { String::new() } else { format!(": {}", names(usable)) }, if common.is_empty() { "none".to_owned() } else { names(common) })]
    NoCommonQuorum {
        /// `CRYPTO UNIT NUM` of the source.
        from: usize,
        /// The signature threshold.
        needed: usize,
        /// The keys that may sign and are installed on all of them, fewer than `needed`.
        usable: Vec<AdminName>,
        /// The administrators installed on the source and every target.
        common: Vec<AdminName>,
    },
    /// A unit holds a state that the interrupted ceremony being resumed cannot have left:
    /// someone else changed it.
    #[error("crypto unit {num} ({}) was changed in a way the interrupted ceremony cannot explain: {}", unit.uuid(), joined(deviations))]
    Unexplained {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The unit.
        unit: UnitId,
        /// How it differs from every state the ceremony can have left.
        deviations: Vec<crate::Deviation>,
    },
    /// The instance lists other units than the interrupted ceremony started on.
    #[error("service instance {instance} does not list the crypto units the interrupted ceremony started on{}{}", if missing.is_empty() { String::new() } else { format!("; missing: {}", ids(missing)) }, if unexpected.is_empty() { String::new() } else { format!("; added since: {}", ids(unexpected)) })]
    UnitsChanged {
        /// The instance.
        instance: InstanceId,
        /// Units the ceremony started on that the instance no longer lists.
        missing: Vec<UnitId>,
        /// Units the instance lists that the ceremony did not start on.
        unexpected: Vec<UnitId>,
    },
    /// Nothing of a ceremony to resume: every unit of the instance is as a first run
    /// finds it (in imprint mode).
    #[error("every crypto unit of service instance {instance} is in imprint mode: there is no interrupted initialization to finish")]
    NothingToResume {
        /// The instance.
        instance: InstanceId,
    },
    /// The keys given to sign a resumed ceremony are too few, or not all among its
    /// administrators.
    #[error("the signatures of {needed} of the ceremony's administrators are needed to finish it; the keys given are: {}", if given.is_empty() { "none".to_owned() } else { names(given) })]
    ResumeSigners {
        /// The keys given.
        given: Vec<AdminName>,
        /// The signature threshold.
        needed: u8,
    },
    /// An instance named to receive the master key of another (`auto-recover
    /// --to-instance`) cannot.
    #[error("service instance {instance} cannot receive the master key of service instance {from}: {why}")]
    NotAnotherInstance {
        /// The instance named.
        instance: InstanceId,
        /// The instance of the recovery unit the key is copied from.
        from: InstanceId,
        /// Why.
        why: &'static str,
    },
    /// The key storage of another instance that would receive a master key holds keys
    /// wrapped under another master key, which none of its units would hold any more.
    #[error("the key storage of service instance {instance} ({location}) holds {} key(s) wrapped under another master key ({}) than the one copied from recovery unit {from}: once its crypto units hold that key instead, those keys can be used again only after their own master key is loaded back", vps.iter().map(|(_, n)| n).sum::<u64>(), vps.iter().map(|(v, n)| format!("{n} under {}...", &v.to_hex()[..16])).collect::<Vec<_>>().join(", "))]
    KeysUnderAnotherMasterKey {
        /// The instance.
        instance: InstanceId,
        /// `CRYPTO UNIT NUM` of the source.
        from: usize,
        /// Where its key storage lives.
        location: String,
        /// Each other master key (VP) with the number of records it wraps.
        vps: Vec<(Vp, u64)>,
    },
    /// The key storage of another instance that would receive a master key cannot be
    /// read: it may hold keys wrapped under another master key.
    #[error("the key storage of service instance {instance} cannot be read ({}), so it may hold keys wrapped under another master key than the one copied from recovery unit {from}", ErrorChain(reason.as_ref()))]
    KeyStorageUnreadable {
        /// The instance.
        instance: InstanceId,
        /// `CRYPTO UNIT NUM` of the source.
        from: usize,
        /// Why it cannot be read.
        reason: tke_proto::BoxError,
    },
    /// A guard plugged into the ceremony refuses to destroy what the unit holds
    /// ([`crate::guard::Guard`]).
    #[error("crypto unit {num} ({}): {} refused by the {} check", unit.uuid(), what.action(), guard)]
    Guarded {
        /// Its `CRYPTO UNIT NUM`.
        num: usize,
        /// The unit.
        unit: UnitId,
        /// What the ceremony would destroy.
        what: crate::guard::Destruction,
        /// The guard ([`crate::guard::Guard::name`]).
        guard: &'static str,
        /// Why it refuses.
        source: tke_proto::BoxError,
    },
    /// A master key rotation cannot start or resume ([`crate::rotate`]).
    #[error(transparent)]
    Rotation(Box<crate::rotate::RotationProblem>),
}

/// Deviations, `; `-separated.
fn joined(d: &[crate::Deviation]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A rule of a unit's state that a command needs and that does not hold
/// ([`Problem::Precondition`]). The message completes "crypto unit N (id) ...".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// The command is refused in imprint mode (the unit would answer 179).
    #[error("is in imprint mode (thresholds 0): this command needs its signature and revocation thresholds set first")]
    ImprintMode,
    /// The new master key register is not in a state the command works on.
    #[error("has its new master key register {}; this command needs it {}", found.label(), states(needed))]
    NewRegister {
        /// Its state.
        found: RegisterState,
        /// The states the command accepts.
        needed: &'static [RegisterState],
    },
    /// The current master key register is not in a state the command works on.
    #[error("has its current master key register {}; this command needs it {}", found.label(), states(needed))]
    CurrentRegister {
        /// Its state.
        found: RegisterState,
        /// The states the command accepts.
        needed: &'static [RegisterState],
    },
    /// The selected units hold different values in their new master key registers, and
    /// the command (commit) needs one value in every unit.
    #[error("holds verification pattern {}... in its new master key register, and the selected crypto units hold {values} different values there: committing needs the same value in every selected crypto unit", &vp.to_hex()[..16])]
    NewRegisterValues {
        /// The unit's verification pattern.
        vp: Vp,
        /// How many different values the selected units hold.
        values: usize,
    },
    /// The unit is a recovery unit, which does not load master key parts (it would answer
    /// 80/80).
    #[error("is a recovery crypto unit: recovery units do not load master key parts (their master key is generated inside them); load the parts into operational and failover units only")]
    RecoveryUnitLoad,
    /// The administrator's key is already installed (the unit would answer 256/38).
    #[error("already has the key of {} installed (as administrator {installed}): an administrator is installed once", admin.name)]
    AdminInstalled {
        /// The administrator to add.
        admin: AdminInfo,
        /// The name of the installed administrator with the same key (SKI).
        installed: AdminName,
    },
    /// The administrator is not installed (the unit would answer 32/32).
    #[error("does not have administrator {} (SKI {}) installed: only an installed administrator can be removed", admin.name, admin.ski.short())]
    AdminNotInstalled {
        /// The administrator to remove.
        admin: AdminInfo,
    },
    /// The unit already holds 8 administrators (it would answer 261/39).
    #[error("already holds 8 administrators, the most a crypto unit holds: remove one before adding {admin}")]
    AdminsFull {
        /// The administrator to add.
        admin: AdminName,
    },
    /// An installed administrator's name looks the same as the new one's (the unit would
    /// answer 256/40).
    #[error("has administrator {installed} installed, whose name looks the same as {admin}: a crypto unit installs no two administrators whose names look the same; use a key whose name looks different")]
    LookalikeName {
        /// The administrator to add.
        admin: AdminName,
        /// The installed administrator.
        installed: AdminName,
    },
    /// A change that keeps an administrator's key but gives it another name.
    #[error("has the key of {name} installed under the name {}: an administrator cannot be renamed; keep the installed name (a new name needs a new key)", installed.name)]
    Renamed {
        /// The administrator as installed.
        installed: AdminInfo,
        /// The name asked for.
        name: AdminName,
    },
    /// Removing the administrator would leave fewer than a threshold (the unit would
    /// answer 209/66).
    #[error("would keep {remaining} administrator(s) after removing {admin}, fewer than its signature threshold ({sig_threshold}) or its revocation threshold ({rev_threshold}): lower the thresholds first, or install another administrator")]
    RemovalBelowThreshold {
        /// The administrator to remove.
        admin: AdminName,
        /// The administrators left after it.
        remaining: usize,
        /// The unit's signature threshold.
        sig_threshold: u8,
        /// The unit's revocation threshold.
        rev_threshold: u8,
    },
    /// The unit has left imprint mode already, for a command that only leaves it.
    #[error("has left imprint mode already (thresholds {sig_threshold}/{rev_threshold}): there is no imprint mode to leave, and its thresholds are not changed")]
    LeftImprintMode {
        /// Its signature threshold.
        sig_threshold: u8,
        /// Its revocation threshold.
        rev_threshold: u8,
    },
    /// A threshold above the number of installed administrators (the unit would answer
    /// 209/57 or 209/58).
    #[error("has {admins} administrator(s) installed, fewer than thresholds {signature}/{revocation} need: install at least {} administrators first, or choose thresholds of at most {admins}", signature.max(revocation))]
    ThresholdsAboveAdmins {
        /// The signature threshold asked.
        signature: u8,
        /// The revocation threshold asked.
        revocation: u8,
        /// The administrators installed then.
        admins: usize,
    },
    /// The unit holds another master key than the source of `auto-recover`: copying over
    /// it would destroy the key its instance's key storage may be encrypted under.
    #[error("holds another master key in its current master key register ({}) than recovery unit {from} ({}...): auto-recover copies only into empty current master key registers and leaves units holding the same key alone", found.map_or_else(|| "without a verification pattern".to_owned(), |v| format!("{}...", &v.to_hex()[..16])), &vp.to_hex()[..16])]
    OtherMasterKey {
        /// The unit's current verification pattern.
        found: Option<Vp>,
        /// `CRYPTO UNIT NUM` of the source.
        from: usize,
        /// The source's verification pattern.
        vp: Vp,
    },
    /// The unit is of another instance and not certified by the fleet CA of the source
    /// (`auto-recover`): a unit takes a master key only from a unit its own CA
    /// certified.
    #[error("is not certified by the fleet CA of recovery unit {from}: a master key moves only between crypto units of one fleet CA")]
    OtherFleetCa {
        /// `CRYPTO UNIT NUM` of the source.
        from: usize,
    },
    /// The unit's thresholds differ from the source's (`auto-recover` needs every unit
    /// configured the same).
    #[error("has thresholds {}/{} (signature/revocation), and recovery unit {from} has {}/{}: every crypto unit of an instance needs the same thresholds", found.0, found.1, expected.0, expected.1)]
    ThresholdsDiffer {
        /// The unit's signature and revocation thresholds.
        found: (u8, u8),
        /// `CRYPTO UNIT NUM` of the source.
        from: usize,
        /// The source's.
        expected: (u8, u8),
    },
    /// The new register of an `auto-recover` target holds a value other than the
    /// source's (the copy goes through the new register).
    #[error("has its new master key register {}{}, not the master key of recovery unit {from}: auto-recover needs it Empty (or holding that key, left by an interrupted run)", found.state.label(), found.vp.map_or_else(String::new, |v| format!(" ({}...)", &v.to_hex()[..16])))]
    OtherNewValue {
        /// The new register.
        found: RegisterStatus,
        /// `CRYPTO UNIT NUM` of the source.
        from: usize,
    },
}

/// Register states as "A", "A or B".
fn states(s: &[RegisterState]) -> String {
    s.iter().map(|s| s.label()).collect::<Vec<_>>().join(" or ")
}

/// A ceremony's failure. [`Problems`](Self::Problems) and [`Step`](Self::Step) gather the
/// errors of several units, which cannot all be its `source()`: their message lists each
/// with its causes ([`ErrorChain`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// Preconditions failed; nothing was changed.
    #[error("{} problem(s) found; no crypto unit was changed:\n{}", .0.len(), .0.iter().map(|p| format!("  - {}", ErrorChain(p))).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<Problem>),
    /// A step failed on one or more units after the ceremony started.
    #[error("{step} failed:\n{}", failures.iter().map(|(n, e)| format!("  - crypto unit {n}: {}", ErrorChain(e))).collect::<Vec<_>>().join("\n"))]
    Step {
        /// The step (the vendor's progress line).
        step: &'static str,
        /// `CRYPTO UNIT NUM` and error of each unit that failed.
        failures: Vec<(usize, ClientError)>,
    },
    /// A unit answered with output the ceremony cannot use.
    #[error("{step}: crypto unit {num} answered with unusable output")]
    Output {
        /// The step.
        step: &'static str,
        /// The unit.
        num: usize,
        /// Why.
        source: tke_proto::ProtoError,
    },
    /// A key the plan needs to sign with was not given; nothing was changed.
    #[error("the signature key of {name} ({}) is needed but was not given; no crypto unit was changed", ski.short())]
    SignerMissing {
        /// The administrator.
        name: AdminName,
        /// The key's SKI.
        ski: Ski,
    },
    /// A unit's answer lacks what the step needs (a verification pattern, one envelope
    /// per target). States are checked by [`CeremonyError::PostCondition`].
    #[error("the final check failed on crypto unit {num}: {what}")]
    Verification {
        /// The unit.
        num: usize,
        /// What differs.
        what: &'static str,
    },
    /// A post-condition does not hold: units differ from what the ceremony set (the
    /// administrators by SKI, the thresholds, the registers) or their counters moved.
    /// Nothing further was sent to any unit.
    #[error("{after}: the crypto units do not hold what was asked; nothing further was sent:\n{}", units.iter().map(|u| format!("  - {u}")).collect::<Vec<_>>().join("\n"))]
    PostCondition {
        /// The step after which the check ran.
        after: &'static str,
        /// Every unit that differs, and how.
        units: Vec<UnitDeviations>,
    },
    /// A completed step could not be recorded in the ceremony's journal; nothing further
    /// was sent.
    #[error("the journal cannot record that step {step:?} is done; nothing further was sent")]
    Journal {
        /// The step.
        step: &'static str,
        /// Why.
        source: tke_proto::BoxError,
    },
    /// The fleet could not add units to the instance; none was added.
    #[error("{STEP_ADD_UNITS} to service instance {instance} failed; no crypto unit was added")]
    AddUnits {
        /// The instance.
        instance: InstanceId,
        /// Why.
        source: ClientError,
    },
    /// The fleet could not be listed again after a step that changed it.
    #[error("{after}: the crypto units cannot be listed again to check the result")]
    Listing {
        /// The step after which the listing failed.
        after: &'static str,
        /// Why.
        source: ClientError,
    },
    /// After units were added, the instance lists other units than its units before and
    /// the new ones.
    #[error("service instance {instance} does not list the crypto units expected after adding units{}{}", if missing.is_empty() { String::new() } else { format!("; missing: {}", ids(missing)) }, if unexpected.is_empty() { String::new() } else { format!("; unexpected: {}", ids(unexpected)) })]
    Roster {
        /// The instance.
        instance: InstanceId,
        /// Units expected but not listed.
        missing: Vec<UnitId>,
        /// Units listed but not expected.
        unexpected: Vec<UnitId>,
    },
    /// Someone else sent commands to units while the ceremony ran: their counters moved
    /// between two of its commands. Nothing further was sent to any unit.
    #[error("{step} stopped: someone else sent commands to crypto units during the ceremony; nothing further was sent:\n{}", units.iter().map(|u| format!("  - {u}")).chain(failures.iter().map(|(n, e)| format!("  - crypto unit {n}: {e}"))).collect::<Vec<_>>().join("\n"))]
    Interference {
        /// The step that found the counters moved.
        step: &'static str,
        /// Each unit whose counter moved: the counter first, then how its state differs
        /// from what the ceremony had left (when known).
        units: Vec<UnitDeviations>,
        /// Other failures of the same step.
        failures: Vec<(usize, ClientError)>,
    },
    /// The instance's key storage refused a step of a master key rotation; the units
    /// hold what the steps before reached.
    #[error(
        "the key storage of service instance {instance} failed during the master key rotation"
    )]
    KeyStorage {
        /// The instance.
        instance: InstanceId,
        /// Why (boxed: a store error is large, and every ceremony returns this enum).
        source: Box<tke_kms::KmsError>,
    },
}
