//! Ceremony files of the master key register commands (commit, set immediate, clear new,
//! clear current) and of zeroize: one round, one command per unit.
//!
//! The plans are the direct ceremonies' ([`MkRegister`], [`Zeroize`]) with every
//! administrator installed on a unit as a possible signer (the planner holds no key):
//! every problem the direct command finds is reported before a file is written, and a
//! unit that already holds the command's result gets no command (for commit, its
//! committed value must be the one committed on the others).
//!
//! Zeroize and clearing the current register are guarded by the key storage
//! ([`crate::guard`]) twice: when planned, where the planner's `--force-with-keys` is
//! recorded in the file ([`ForcedKeys`]) for the approvers to read, and again when
//! applied ([`apply_guard`]), since keys may have been stored since: then an instance
//! whose keys are at stake passes only if the file records it *and* the one who applies
//! names it too. The record is not signed (administrators sign command bytes only), so
//! adding one to a file after approval achieves nothing without the applier.

use std::fmt;

use tke_client::{fanout::parallel, Client, KnownUnit};
use tke_proto::{AdminInfo, Command, CommandId, RegisterState, UnitStatus, Vp};

use super::{ApplyError, CeremonyFile, FileError, Round, UnitCommand};
use crate::{
    guard::{keys_under, unit_list, Destruction, Guard, KeyStorageGuard, Storage, Unguarded},
    registers::{MkRegister, RegisterAction},
    zeroize::Zeroize,
    CeremonyError, Problem, Rule,
};

/// The step name of zeroize in messages and titles.
const STEP_ZEROIZE: &str = "Zeroizing crypto units";

/// An instance whose stored keys the planner agreed to lose (`tke plan … --force-with-keys
/// INSTANCE-ID`), as the key storage stood when the file was planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedKeys {
    /// The service instance's id.
    pub instance: String,
    /// `CRYPTO UNIT NUM` of each unit of the file whose master key those keys need.
    pub units: Vec<usize>,
    /// Records in the key storage; `None` when it could not be read.
    pub keys: Option<u64>,
    /// Each master key (VP) the file destroys a copy of, with the records it wraps.
    pub under: Vec<(Vp, u64)>,
}

impl fmt::Display for ForcedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = unit_list(&self.units);
        let instance = tke_client::InstanceId(self.instance.clone());
        match self.keys {
            Some(keys) => write!(
                f,
                "planned with --force-with-keys {instance}: the key storage of service instance {instance} held {keys} key(s) wrapped under the master key of crypto unit(s) {units} ({}); they are lost unless that master key is recovered",
                keys_under(&self.under)
            ),
            None => write!(
                f,
                "planned with --force-with-keys {instance}: the key storage of service instance {instance} could not be read, so it may hold keys wrapped under the master key of crypto unit(s) {units}"
            ),
        }
    }
}

/// The JSON form of a [`ForcedKeys`]. Strict: unknown fields are refused.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForcedJson {
    instance: String,
    units: Vec<usize>,
    keys: Option<u64>,
    under: Vec<UnderJson>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnderJson {
    vp: String,
    keys: u64,
}

impl ForcedKeys {
    /// The JSON form.
    pub(super) fn to_json(&self) -> ForcedJson {
        ForcedJson {
            instance: self.instance.clone(),
            units: self.units.clone(),
            keys: self.keys,
            under: self
                .under
                .iter()
                .map(|(vp, keys)| UnderJson {
                    vp: vp.to_hex(),
                    keys: *keys,
                })
                .collect(),
        }
    }
}

/// Reads the `force_with_keys` records of a file whose commands are `file`'s: each
/// instance once, VPs in hexadecimal, and only in a file that destroys a master key.
pub(super) fn forced_from_json(
    file: &CeremonyFile,
    records: Vec<ForcedJson>,
) -> Result<Vec<ForcedKeys>, FileError> {
    if !records.is_empty() && destroys(file).is_empty() {
        return Err(FileError::Forced {
            instance: records[0].instance.clone(),
            reason: "the file destroys no master key (it has no zeroize or clear current command)",
        });
    }
    let mut forced: Vec<ForcedKeys> = Vec::with_capacity(records.len());
    for r in records {
        let bad = |reason| FileError::Forced {
            instance: r.instance.clone(),
            reason,
        };
        if r.instance.is_empty() {
            return Err(bad("the instance id is empty"));
        }
        if forced.iter().any(|f| f.instance == r.instance) {
            return Err(bad("the instance is recorded twice"));
        }
        let under = r
            .under
            .iter()
            .map(|u| Vp::from_hex(&u.vp).map(|vp| (vp, u.keys)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("a verification pattern is not 64 hexadecimal digits"))?;
        forced.push(ForcedKeys {
            instance: r.instance,
            units: r.units,
            keys: r.keys,
            under,
        });
    }
    Ok(forced)
}

/// What a command destroys on its unit, if it destroys a master key.
fn destruction(command: &Command) -> Option<Destruction> {
    match command {
        Command::Zeroize => Some(Destruction::Zeroize),
        Command::ClearCurrent => Some(Destruction::ClearCurrent),
        _ => None,
    }
}

/// The commands of `file` that destroy a master key, with what each destroys.
fn destroys(file: &CeremonyFile) -> Vec<(&UnitCommand, Destruction)> {
    file.commands()
        .filter_map(|(_, c)| destruction(&c.command).map(|d| (c, d)))
        .collect()
}

/// The title of a file whose commands are all `id` (`None`: not one of these).
pub(super) fn title(id: CommandId) -> Option<&'static str> {
    Some(match id {
        CommandId::CommitMk => RegisterAction::Commit.step(),
        CommandId::SetImmediate => RegisterAction::SetImmediate.step(),
        CommandId::ClearNew => RegisterAction::ClearNew.step(),
        CommandId::ClearCurrent => RegisterAction::ClearCurrent.step(),
        CommandId::Zeroize => STEP_ZEROIZE,
        _ => return None,
    })
}

/// Whether `status` holds what `command` leaves (`false` for other commands).
pub(super) fn holds(command: &Command, status: &UnitStatus) -> bool {
    let new = status.new_register;
    let current = status.current_register;
    match command {
        Command::CommitMk(vp) => new.state == RegisterState::FullCommitted && new.vp == Some(*vp),
        Command::SetImmediate(vp) => {
            new.state == RegisterState::Empty
                && current.state == RegisterState::Valid
                && current.vp == Some(*vp)
        }
        Command::ClearNew => new.state == RegisterState::Empty,
        Command::ClearCurrent => current.state == RegisterState::Empty,
        Command::Zeroize => zeroized(status),
        _ => false,
    }
}

/// In imprint mode with no administrator, both registers empty and no importer key.
fn zeroized(s: &UnitStatus) -> bool {
    s.imprint_mode()
        && s.admins.is_empty()
        && s.new_register.state == RegisterState::Empty
        && s.current_register.state == RegisterState::Empty
        && !s.importer_pending
}

/// Every administrator installed on any of `statuses`, each once: the planner holds no
/// key, so any installed administrator may approve.
pub(super) fn installed_anywhere<'s>(
    statuses: impl IntoIterator<Item = &'s UnitStatus>,
) -> Vec<AdminInfo> {
    let mut anyone: Vec<AdminInfo> = Vec::new();
    for s in statuses {
        for a in &s.admins {
            if !anyone.iter().any(|b| b.ski == a.ski) {
                anyone.push(a.clone());
            }
        }
    }
    anyone
}

/// Every administrator installed on any of `units` (the planner holds no key: any may
/// approve).
pub(super) fn anyone(client: &Client, units: &[&KnownUnit]) -> Vec<AdminInfo> {
    let statuses = parallel(units, |u| client.query(u));
    installed_anywhere(statuses.iter().flatten())
}

/// The file of one round of `(unit, command)`, each at the unit's next counter; `None`
/// when there is no command. The instances `guard` was told to let through are recorded.
fn file_of(
    step: &'static str,
    commands: Vec<(&KnownUnit, &UnitStatus, Command)>,
    guard: Option<&KeyStorageGuard>,
) -> Result<Option<CeremonyFile>, CeremonyError> {
    if commands.is_empty() {
        return Ok(None);
    }
    let mut planned = Vec::with_capacity(commands.len());
    for (unit, status, command) in &commands {
        planned.push(UnitCommand::new(
            step,
            unit.num,
            unit.id(),
            status.counter.wrapping_add(1),
            command.clone(),
        )?);
    }
    let destroyed = |num: &usize| commands.iter().any(|(u, _, _)| u.num == *num);
    let force_with_keys = guard
        .map(|g| g.confirmed())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.units.iter().any(destroyed))
        .map(|r| {
            let (keys, under) = match &r.storage {
                Storage::Keys { keys, vps, .. } => (Some(*keys), vps.clone()),
                Storage::Unreadable { .. } => (None, Vec::new()),
            };
            ForcedKeys {
                instance: r.instance.0.clone(),
                units: r.units.clone(),
                keys,
                under,
            }
        })
        .collect();
    Ok(Some(CeremonyFile {
        ceremony: None,
        rounds: vec![Round::planned(planned)],
        force_with_keys,
    }))
}

/// Plans a register command on `units` as a ceremony file: the checks of
/// [`MkRegister::plan_guarded`] (clearing the current register asks `guard`, or no guard
/// when `None`), on the units that do not hold its result yet. Returns `None` when every
/// unit holds it.
///
/// A unit holds the result when its new register is Full Committed (commit; its value
/// must be the one committed elsewhere), Empty (clear new), its current register Empty
/// (clear current), or, for set immediate, its new register Empty and its current one
/// Valid with the value set on the other units.
///
/// # Errors
/// [`CeremonyError::Problems`] listing every problem, as the direct command would.
pub fn plan_register(
    client: &Client,
    action: RegisterAction,
    units: Vec<&KnownUnit>,
    guard: Option<&KeyStorageGuard>,
) -> Result<Option<CeremonyFile>, CeremonyError> {
    let statuses: Vec<Option<UnitStatus>> = parallel(&units, |u| client.query(u))
        .into_iter()
        .map(Result::ok)
        .collect();
    // The values set immediately: those of the committed new registers.
    let committed: Vec<Vp> = statuses
        .iter()
        .flatten()
        .filter(|s| s.new_register.state == RegisterState::FullCommitted)
        .filter_map(|s| s.new_register.vp)
        .collect();
    let done = |s: &UnitStatus| match action {
        RegisterAction::Commit => s.new_register.state == RegisterState::FullCommitted,
        RegisterAction::SetImmediate => {
            s.new_register.state == RegisterState::Empty
                && s.current_register.state == RegisterState::Valid
                && s.current_register
                    .vp
                    .is_some_and(|vp| committed.contains(&vp))
        }
        RegisterAction::ClearNew => s.new_register.state == RegisterState::Empty,
        RegisterAction::ClearCurrent => s.current_register.state == RegisterState::Empty,
    };
    let mut skipped: Vec<(&KnownUnit, &UnitStatus)> = Vec::new();
    let mut left: Vec<&KnownUnit> = Vec::new();
    for (u, s) in units.iter().zip(&statuses) {
        match s {
            Some(s) if done(s) => skipped.push((u, s)),
            _ => left.push(u),
        }
    }
    if left.is_empty() && !units.is_empty() {
        return Ok(None);
    }
    let request = MkRegister {
        action,
        units: left,
        keys: installed_anywhere(statuses.iter().flatten()),
    };
    let unguarded = Unguarded;
    let g: &dyn Guard = match guard {
        Some(g) if action == RegisterAction::ClearCurrent => g,
        _ => &unguarded,
    };
    let planned = request.plan_guarded(client, g);
    // Commit carries one value: a unit committed already must hold the one committed now.
    let mut problems = Vec::new();
    if action == RegisterAction::Commit {
        let value = match &planned {
            Ok(p) => p.units().first().and_then(|u| u.status.new_register.vp),
            Err(_) => None,
        };
        let mut values: Vec<Vp> = committed.clone();
        values.extend(value);
        values.sort_by_key(|v| *v.as_bytes());
        values.dedup();
        for (unit, status) in &skipped {
            if let (Some(vp), Some(value)) = (status.new_register.vp, value) {
                if vp != value {
                    problems.push(Problem::Precondition {
                        num: unit.num,
                        unit: unit.id(),
                        rule: Rule::NewRegisterValues {
                            vp,
                            values: values.len(),
                        },
                    });
                }
            }
        }
    }
    let plan = match planned {
        Ok(plan) if problems.is_empty() => plan,
        Ok(_) => return Err(CeremonyError::Problems(problems)),
        Err(CeremonyError::Problems(mut found)) => {
            found.extend(problems);
            return Err(CeremonyError::Problems(found));
        }
        Err(e) => return Err(e),
    };
    let commands = plan
        .units()
        .iter()
        .filter_map(|u| {
            let command = u.commands.first().and_then(|c| match &c.command {
                crate::ToSend::Ready(c) => Some(c.clone()),
                crate::ToSend::FromPrevious(_) => None,
            })?;
            Some((u.unit, &u.status, command))
        })
        .collect();
    file_of(action.step(), commands, guard)
}

/// Plans zeroizing `units` as a ceremony file: the checks of [`Zeroize::plan_guarded`]
/// (`guard` asked about every unit); units in imprint mode with no administrator, both
/// registers empty and no importer key get no command. Returns `None` when every unit is
/// so.
///
/// # Errors
/// [`CeremonyError::Problems`] listing every problem, as the direct command would.
pub fn plan_zeroize(
    client: &Client,
    units: Vec<&KnownUnit>,
    guard: &KeyStorageGuard,
) -> Result<Option<CeremonyFile>, CeremonyError> {
    let plan = Zeroize {
        keys: anyone(client, &units),
        units,
    }
    .plan_guarded(client, guard)?;
    let commands = plan
        .targets()
        .iter()
        .filter(|t| !zeroized(&t.status))
        .map(|t| (t.unit, &t.status, Command::Zeroize))
        .collect();
    file_of(STEP_ZEROIZE, commands, Some(guard))
}

/// The key-storage guard of applying `file`: what the key storage of each instance holds
/// now under the master keys the file destroys, with an instance let through only when
/// the file records it ([`ForcedKeys`], the planner's `--force-with-keys`) and the one who
/// applies names it too (`forced`). `key_parts` describe the master key part files on
/// this workstation (shown as a way to recover the key). Nothing is changed.
///
/// # Errors
/// [`ApplyError::ForceNotPlanned`] for an instance in `forced` that the file does not
/// record (the approvers did not see it): re-plan with `--force-with-keys`.
pub fn apply_guard(
    client: &Client,
    file: &CeremonyFile,
    forced: &[String],
    key_parts: &[String],
) -> Result<Vec<(Destruction, KeyStorageGuard)>, ApplyError> {
    if let Some(id) = forced
        .iter()
        .find(|id| !file.force_with_keys.iter().any(|f| f.instance == **id))
    {
        return Err(ApplyError::ForceNotPlanned {
            instance: id.clone(),
        });
    }
    let destroys = destroys(file);
    let mut guards = Vec::new();
    for what in [Destruction::Zeroize, Destruction::ClearCurrent] {
        let units: Vec<&KnownUnit> = destroys
            .iter()
            .filter(|(_, d)| *d == what)
            .filter_map(|(c, _)| client.unit(&c.unit()))
            .collect();
        if units.is_empty() {
            continue;
        }
        let mut guard = KeyStorageGuard::survey(client, &units, what, key_parts);
        let through: Vec<_> = guard
            .at_risk()
            .into_iter()
            .filter(|r| forced.contains(&r.instance.0))
            .map(|r| r.instance.clone())
            .collect();
        for instance in &through {
            guard.confirm(instance);
        }
        guards.push((what, guard));
    }
    Ok(guards)
}

/// The refusals of `guards` for the commands of a unit about to receive them.
pub(super) fn guarded(
    guards: &[(Destruction, KeyStorageGuard)],
    unit: &KnownUnit,
    status: &UnitStatus,
    commands: &[&UnitCommand],
) -> Vec<Problem> {
    commands
        .iter()
        .filter_map(|c| destruction(&c.command))
        .filter_map(|what| {
            let (_, g) = guards.iter().find(|(w, _)| *w == what)?;
            crate::guard::ask(g, unit, status, what)
        })
        .collect()
}
