//! `auto-recover` (`auto-mk-recover`): copy a recovery unit's current master key into the
//! units of its instance whose current register is empty — zeroized and re-imprinted,
//! replaced, or cleared by accident.
//!
//! Plan, then act. [`AutoRecover::plan`] queries every unit of the instance and checks,
//! before anything changes and reporting every problem at once:
//!
//! - the source: a recovery unit whose current register is `Valid` (the first such, or
//!   the one asked for, which must belong to the instance: a unit accepts a master key
//!   only from a recovery unit of its own instance, `docs/protocol.md`);
//! - every other unit: a current register `Valid` with the source's VP is left alone; one
//!   with another VP is refused (copying over it would destroy the key that unit's key
//!   storage may be under); an empty one is a target;
//! - each target out of imprint mode, with the source's signature and revocation
//!   thresholds, and its new register empty or holding the source's value (what an
//!   interrupted run left);
//! - enough of the keys that may sign installed on the source *and* on every target to
//!   meet the signature threshold (the vendor's "common administrator set").
//!
//! **Other instances.** The units of each instance named in [`AutoRecover::to_instances`]
//! are planned as the source's own (the same checks, every unit of the instance), and
//! besides: each is certified by the source's fleet CA ([`Rule::OtherFleetCa`]), and the
//! instance's key storage holds no key wrapped under another master key
//! ([`Problem::KeysUnderAnotherMasterKey`]) unless [`AutoRecover::force_with_keys`] names
//! it. Their export requests name their instance and their imports name the source's,
//! signed by the quorum (`docs/protocol.md` §11.3): each side's administrators consent.
//!
//! [`AutoRecoverPlan::execute`] then, per target and in parallel where the units differ:
//! importer key (one signature), one quorum-signed `exportMkBatch` of the source's
//! *current* register to every target waiting for the key (16 targets per command),
//! import into the target's new register (one), commit (quorum), set immediate (one).
//! Last, the full post-condition on every unit it touched: the source unchanged, each
//! target with the source's key current, its new register empty, no importer pending, its
//! administrators and thresholds as before.
//!
//! **Resumable from unit state.** Each target's step is read from its registers, so a run
//! stopped anywhere (the process killed, a unit down) is finished by running it again: a
//! target whose new register already holds the source's value resumes at commit or set
//! immediate ([`Stage`]), one that already holds the key current is left alone, and a
//! pending importer key from the stopped run is simply replaced. Crash points
//! ([`crate::crash`]): `auto-recover:after-importers`, `auto-recover:after-export`,
//! `auto-recover:after-import`, `auto-recover:after-commit`, `auto-recover:after-setimm`.
//!
//! [`AutoRecoverPlan::execute_logged`] also records each step done in the caller's
//! journal ([`StepLog`], the [`steps`]), so that the workstation can say where an
//! interrupted recovery stopped.

use std::sync::atomic::{AtomicUsize, Ordering};

use tke_client::{fanout::parallel, Client, InstanceId, KnownUnit};
use tke_proto::{
    transport::SignedEnvelope, AdminInfo, Command, DeviceCertificate, Register, RegisterState,
    RegisterStatus, UnitStatus, UnitType, Vp,
};
use tke_sigkey::Signer;

use crate::{
    crash, on_all, on_each,
    postcondition::{check_each, interference, Counters, Expected},
    signers::choose,
    transfer::{export_batches, export_request},
    CeremonyError, Event, NoLog, Problem, Progress, Rule, StepLog,
};

/// The steps a recovery records in its journal ([`StepLog`]), in order, each once done on
/// every target that needed it.
pub mod steps {
    /// An importer key on every target waiting for the key.
    pub const IMPORTERS: &str = "importers-generated";
    /// The source's key exported, sealed to each importer key.
    pub const EXPORTED: &str = "key-exported";
    /// The key current in every target: the recovery is done.
    pub const RECOVERED: &str = "key-current";
}

const STEP_IMPORTERS: &str = "Generating importer keys";
const STEP_EXPORT: &str = "Exporting the master key value";
const STEP_TRANSFER: &str = "Transferring the master key value";
const STEP_CHECK: &str = "Checking the crypto units";

/// What the operator asked for.
pub struct AutoRecover {
    /// The instance whose units receive the key.
    pub instance: InstanceId,
    /// `CRYPTO UNIT NUM` of the recovery unit to copy from; `None`: the first recovery
    /// unit of the instance whose current register is `Valid`.
    pub source: Option<usize>,
    /// The signature keys that may sign, by administrator name and SKI, in order of
    /// preference: the first signature-threshold ones installed on the source and on
    /// every target sign.
    pub keys: Vec<AdminInfo>,
    /// Other service instances of the fleet whose units receive the key too (every unit
    /// of each); empty: only the source's own instance.
    pub to_instances: Vec<InstanceId>,
    /// Those of `to_instances` whose key storage may keep keys wrapped under another
    /// master key (the operator accepted that they cannot be used until it is loaded
    /// back).
    pub force_with_keys: Vec<InstanceId>,
}

/// Where a target stands: the steps it still needs, read from its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Both registers empty: importer key, export, import, commit, set immediate.
    Transfer,
    /// Its new register holds the source's value, uncommitted (a stopped run imported
    /// it): commit, set immediate.
    Commit,
    /// Its new register holds the source's value, committed: set immediate.
    SetImmediate,
}

impl Stage {
    /// Whether a run stopped part-way on this target.
    pub fn resumed(self) -> bool {
        self != Self::Transfer
    }
}

/// One unit the key is copied into.
#[derive(Clone, Debug)]
pub struct RecoverTarget<'c> {
    /// The unit.
    pub unit: &'c KnownUnit,
    /// Its state when the plan was made.
    pub status: UnitStatus,
    /// The steps it still needs.
    pub stage: Stage,
}

/// A checked plan, ready to run once.
pub struct AutoRecoverPlan<'c> {
    client: &'c Client,
    instance: InstanceId,
    source: &'c KnownUnit,
    source_status: UnitStatus,
    vp: Vp,
    targets: Vec<RecoverTarget<'c>>,
    holding: Vec<(&'c KnownUnit, UnitStatus)>,
    quorum: Vec<AdminInfo>,
    counters: Counters,
}

/// What a recovery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoRecoverReport {
    /// The instance.
    pub instance: InstanceId,
    /// `CRYPTO UNIT NUM` of the recovery unit copied from.
    pub source: usize,
    /// The master key's verification pattern, now current in every target.
    pub vp: Vp,
    /// `CRYPTO UNIT NUM` of every unit that received the key.
    pub recovered: Vec<usize>,
    /// `CRYPTO UNIT NUM` of every other unit, which held the key already.
    pub unchanged: Vec<usize>,
}

impl AutoRecover {
    /// Queries every unit of the instance and checks every precondition. Nothing is
    /// changed.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found: an unknown instance, no
    /// recovery unit, units that cannot be queried, no recovery unit holding a master key
    /// ([`Problem::NoRecoverySource`]) or a source that is not one of the instance's
    /// recovery units ([`Problem::NotARecoverySource`]), units holding another master key
    /// ([`Rule::OtherMasterKey`]), targets in imprint mode ([`Rule::ImprintMode`]),
    /// with other thresholds ([`Rule::ThresholdsDiffer`]) or another value in their new
    /// register ([`Rule::OtherNewValue`]), and too few keys that may sign installed on all
    /// of them ([`Problem::NoCommonQuorum`]).
    pub fn plan(self, client: &Client) -> Result<AutoRecoverPlan<'_>, CeremonyError> {
        let mut problems = Vec::new();
        let mut units = client.instance_units(&self.instance);
        if units.is_empty() {
            problems.push(Problem::UnknownInstance {
                instance: self.instance.clone(),
            });
        } else if !units.iter().any(|u| u.unit_type() == UnitType::Recovery) {
            problems.push(Problem::NoRecoveryUnit);
        }
        let others = self.other_units(client, &mut problems);
        units.extend(others.iter().flat_map(|(_, u)| u.iter().copied()));
        let mut reachable: Vec<(&KnownUnit, UnitStatus)> = Vec::with_capacity(units.len());
        for (u, s) in units.iter().zip(parallel(&units, |u| client.query(u))) {
            match s {
                Ok(s) => reachable.push((*u, s)),
                Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
            }
        }

        let valid = |s: &UnitStatus| s.current_register.state == RegisterState::Valid;
        let source = match self.source {
            Some(num) => match client.units().iter().find(|u| u.num == num) {
                None => {
                    problems.push(Problem::NotARecoverySource {
                        num,
                        why: "no crypto unit has this number (see `tke cryptounits`)",
                    });
                    None
                }
                Some(u) if u.instance() != &self.instance => {
                    problems.push(Problem::NotARecoverySource {
                        num,
                        why: "it belongs to another service instance: the master key is copied from a recovery unit of the instance being recovered",
                    });
                    None
                }
                Some(u) if u.unit_type() != UnitType::Recovery => {
                    problems.push(Problem::NotARecoverySource {
                        num,
                        why: "it is not a recovery unit: only recovery units export a master key",
                    });
                    None
                }
                Some(u) => match reachable.iter().find(|(r, _)| r.id() == u.id()) {
                    Some((r, s)) if valid(s) => Some((*r, s.clone())),
                    Some(_) => {
                        problems.push(Problem::NotARecoverySource {
                            num,
                            why: "its current master key register is empty: there is no key to copy from it",
                        });
                        None
                    }
                    // Unreachable: reported above.
                    None => None,
                },
            },
            None => {
                let found = reachable
                    .iter()
                    .find(|(u, s)| u.unit_type() == UnitType::Recovery && valid(s))
                    .map(|(u, s)| (*u, s.clone()));
                if found.is_none() && !units.is_empty() {
                    problems.push(Problem::NoRecoverySource {
                        instance: self.instance.clone(),
                    });
                }
                found
            }
        };
        let Some((source, source_status)) = source else {
            return Err(CeremonyError::Problems(problems));
        };
        let Some(vp) = source_status.current_register.vp else {
            // The client checks every status: a Valid register always has a VP.
            return Err(CeremonyError::Verification {
                num: source.num,
                what: "its current master key register is Valid without a verification pattern",
            });
        };

        let mut targets = Vec::new();
        let mut holding = Vec::new();
        for (unit, status) in reachable {
            if unit.id() == source.id() {
                continue;
            }
            let problem = |rule| Problem::Precondition {
                num: unit.num,
                unit: unit.id(),
                rule,
            };
            // The unit checks it too; here it is reported before anything is sent.
            if unit.instance() != &self.instance
                && DeviceCertificate::verify(unit.certificate.der(), client.ca_of(source)).is_err()
            {
                problems.push(problem(Rule::OtherFleetCa { from: source.num }));
                continue;
            }
            if valid(&status) {
                match status.current_register.vp {
                    Some(v) if v == vp => holding.push((unit, status)),
                    found => problems.push(problem(Rule::OtherMasterKey {
                        found,
                        from: source.num,
                        vp,
                    })),
                }
                continue;
            }
            let mut fits = true;
            if status.imprint_mode() {
                problems.push(problem(Rule::ImprintMode));
                fits = false;
            } else if (status.sig_threshold, status.rev_threshold)
                != (source_status.sig_threshold, source_status.rev_threshold)
            {
                problems.push(problem(Rule::ThresholdsDiffer {
                    found: (status.sig_threshold, status.rev_threshold),
                    from: source.num,
                    expected: (source_status.sig_threshold, source_status.rev_threshold),
                }));
                fits = false;
            }
            let stage = match status.new_register {
                RegisterStatus {
                    state: RegisterState::Empty,
                    ..
                } => Some(Stage::Transfer),
                RegisterStatus { state, vp: Some(v) } if v == vp => {
                    Some(if state == RegisterState::FullCommitted {
                        Stage::SetImmediate
                    } else {
                        Stage::Commit
                    })
                }
                other => {
                    problems.push(problem(Rule::OtherNewValue {
                        found: other,
                        from: source.num,
                    }));
                    None
                }
            };
            if let (true, Some(stage)) = (fits, stage) {
                targets.push(RecoverTarget {
                    unit,
                    status,
                    stage,
                });
            }
        }

        // The quorum: keys installed on the source and on every target.
        let needed = usize::from(source_status.sig_threshold);
        let common: Vec<AdminInfo> = source_status
            .admins
            .iter()
            .filter(|a| targets.iter().all(|t| t.status.admins.contains(a)))
            .cloned()
            .collect();
        let quorum = choose(&self.keys, &common, needed);
        if !targets.is_empty() && quorum.len() < needed {
            problems.push(Problem::NoCommonQuorum {
                from: source.num,
                needed,
                usable: quorum.iter().map(|a| a.name.clone()).collect(),
                common: common.iter().map(|a| a.name.clone()).collect(),
            });
        }
        // Another instance's keys under its own master key would outlive every copy of it.
        for (instance, _) in &others {
            if targets.iter().any(|t| t.unit.instance() == instance)
                && !self.force_with_keys.contains(instance)
            {
                problems.extend(keys_under_another(client, instance, source.num, vp));
            }
        }

        if !problems.is_empty() {
            return Err(CeremonyError::Problems(problems));
        }
        // Every counter value from here is the ceremony's: a command from anyone else
        // in between is interference.
        let counters = Counters::default();
        counters.start(source, &source_status);
        for t in &targets {
            counters.start(t.unit, &t.status);
        }
        Ok(AutoRecoverPlan {
            client,
            instance: self.instance,
            source,
            source_status,
            vp,
            targets,
            holding,
            quorum,
            counters,
        })
    }
}

impl AutoRecover {
    /// The units of each instance of [`Self::to_instances`], by instance; a name that is
    /// the source's instance or no instance of the fleet is a problem.
    fn other_units<'c>(
        &self,
        client: &'c Client,
        problems: &mut Vec<Problem>,
    ) -> Vec<(InstanceId, Vec<&'c KnownUnit>)> {
        let mut others: Vec<(InstanceId, Vec<&KnownUnit>)> = Vec::new();
        for other in &self.to_instances {
            let why = if other == &self.instance {
                "it is the instance the master key is copied from"
            } else if others.iter().any(|(i, _)| i == other) {
                continue;
            } else {
                let units = client.instance_units(other);
                if !units.is_empty() {
                    others.push((other.clone(), units));
                    continue;
                }
                "no crypto unit of the fleet belongs to it (see `tke cryptounits`)"
            };
            problems.push(Problem::NotAnotherInstance {
                instance: other.clone(),
                from: self.instance.clone(),
                why,
            });
        }
        others
    }
}

/// What the key storage of `instance` holds under another master key than `vp`: a
/// problem, or none when it holds nothing else (or the instance has no key storage here).
fn keys_under_another(
    client: &Client,
    instance: &InstanceId,
    from: usize,
    vp: Vp,
) -> Option<Problem> {
    let unreadable = |reason: tke_proto::BoxError| Problem::KeyStorageUnreadable {
        instance: instance.clone(),
        from,
        reason,
    };
    let summary = match client.key_service(instance) {
        Ok(None) => return None,
        Ok(Some(ks)) => ks.summary().map_err(|e| unreadable(Box::new(e))),
        Err(e) => Err(unreadable(Box::new(e))),
    };
    match summary {
        Ok(summary) => {
            let vps: Vec<(Vp, u64)> = summary
                .by_vp
                .into_iter()
                .filter(|(v, n)| *n > 0 && *v != vp)
                .collect();
            (!vps.is_empty()).then(|| Problem::KeysUnderAnotherMasterKey {
                instance: instance.clone(),
                from,
                location: summary.location,
                vps,
            })
        }
        Err(problem) => Some(problem),
    }
}

impl<'c> AutoRecoverPlan<'c> {
    /// The recovery unit copied from.
    pub fn source(&self) -> &'c KnownUnit {
        self.source
    }

    /// The verification pattern of the key copied.
    pub fn vp(&self) -> Vp {
        self.vp
    }

    /// The units that receive the key, in `CRYPTO UNIT NUM` order, with where each stands.
    pub fn targets(&self) -> &[RecoverTarget<'c>] {
        &self.targets
    }

    /// The source's state when the plan was made.
    pub fn source_status(&self) -> &UnitStatus {
        &self.source_status
    }

    /// The other units, which hold the key already and are left alone, with their state.
    pub fn holding(&self) -> &[(&'c KnownUnit, UnitStatus)] {
        &self.holding
    }

    /// The keys [`Self::execute`] signs with (none when there is no target).
    pub fn keys_needed(&self) -> Vec<&AdminInfo> {
        if self.targets.is_empty() {
            Vec::new()
        } else {
            self.quorum.iter().collect()
        }
    }

    /// Copies the key into every target, then checks every unit touched. The plan is
    /// consumed: a recovery runs once (and a stopped one is finished by planning again).
    ///
    /// # Errors
    /// [`CeremonyError::SignerMissing`] when a key of [`Self::keys_needed`] is not in
    /// `signers` (nothing was sent); [`CeremonyError::Interference`] when someone else
    /// sent commands to a unit in between; [`CeremonyError::Step`] naming the step and
    /// every unit that failed; [`CeremonyError::PostCondition`] when a unit does not hold
    /// what was asked afterwards. A rerun finishes what was left.
    pub fn execute(
        self,
        signers: &[&dyn Signer],
        progress: &dyn Progress,
    ) -> Result<AutoRecoverReport, CeremonyError> {
        self.execute_logged(signers, progress, &NoLog)
    }

    /// [`Self::execute`], recording each step done in `log` ([`steps`]) before going on.
    ///
    /// # Errors
    /// As [`Self::execute`]; [`CeremonyError::Journal`] when a step cannot be recorded
    /// (nothing further is sent).
    pub fn execute_logged(
        self,
        signers: &[&dyn Signer],
        progress: &dyn Progress,
        log: &dyn StepLog,
    ) -> Result<AutoRecoverReport, CeremonyError> {
        let record = |step: &'static str| {
            log.record(step, None)
                .map_err(|source| CeremonyError::Journal { step, source })
        };
        let mut quorum: Vec<&dyn Signer> = Vec::with_capacity(self.quorum.len());
        for k in self.keys_needed() {
            match signers.iter().find(|s| s.ski() == k.ski) {
                Some(s) => quorum.push(*s),
                None => {
                    return Err(CeremonyError::SignerMissing {
                        name: k.name.clone(),
                        ski: k.ski,
                    })
                }
            }
        }
        let one: Vec<&dyn Signer> = quorum.iter().take(1).copied().collect();
        let (client, counters, vp, source) = (self.client, &self.counters, self.vp, self.source);

        // 1. An importer key on every target waiting for the key.
        let fresh: Vec<&KnownUnit> = self
            .targets
            .iter()
            .filter(|t| t.stage == Stage::Transfer)
            .map(|t| t.unit)
            .collect();
        let out = if fresh.is_empty() {
            Vec::new()
        } else {
            on_all(STEP_IMPORTERS, &fresh, |u| {
                counters.run(client, u, &Command::GenerateImporter, &one)
            })
            .map_err(|e| interference(client, e, |_| None))?
        };
        if !fresh.is_empty() {
            record(steps::IMPORTERS)?;
        }
        crash::point("auto-recover:after-importers");
        // A target of another instance is named in the export, as the source is in its
        // import: the consent of each side's quorum (docs/protocol.md §11.3).
        let instance = &self.instance;
        let foreign = |u: &KnownUnit| u.instance() != instance;
        let importers = fresh
            .iter()
            .zip(&out)
            .map(|(u, der)| {
                let mut request = export_request(STEP_IMPORTERS, u, der, Register::Current)?;
                request.target_instance = foreign(u).then(|| u.certificate.instance_id());
                Ok(request)
            })
            .collect::<Result<Vec<_>, CeremonyError>>()?;

        // 2. The source's current key, sealed to each importer key: one quorum-signed
        // command per 16 targets.
        let envelopes = export_batches(STEP_EXPORT, client, counters, source, &importers, &quorum)?;
        if !fresh.is_empty() {
            record(steps::EXPORTED)?;
            crash::point("auto-recover:after-export");
        }

        // 3. Per target: import, commit, set immediate — from where it stands.
        let mut envelopes = envelopes.into_iter();
        let jobs: Vec<(&RecoverTarget<'_>, Option<SignedEnvelope>)> = self
            .targets
            .iter()
            .map(|t| {
                let e = (t.stage == Stage::Transfer)
                    .then(|| envelopes.next())
                    .flatten();
                (t, e)
            })
            .collect();
        let done = AtomicUsize::new(0);
        let total = jobs.len();
        on_each(
            STEP_TRANSFER,
            &jobs,
            |(t, _)| t.unit,
            |(t, envelope)| {
                let u = t.unit;
                if let Some(envelope) = envelope {
                    let (envelope, signers) = if foreign(u) {
                        let named = SignedEnvelope {
                            source_instance: Some(source.certificate.instance_id()),
                            ..envelope.clone()
                        };
                        (named, &quorum)
                    } else {
                        (envelope.clone(), &one)
                    };
                    counters.run(client, u, &Command::ImportMk(Box::new(envelope)), signers)?;
                    crash::point("auto-recover:after-import");
                }
                if t.stage != Stage::SetImmediate {
                    counters.run(client, u, &Command::CommitMk(vp), &quorum)?;
                    crash::point("auto-recover:after-commit");
                }
                counters.run(client, u, &Command::SetImmediate(vp), &one)?;
                crash::point("auto-recover:after-setimm");
                let index = done.fetch_add(1, Ordering::SeqCst) + 1;
                progress.event(&Event::TransferringMasterKey { index, total });
                Ok(())
            },
        )
        .map_err(|e| interference(client, e, |_| None))?;
        if !self.targets.is_empty() {
            record(steps::RECOVERED)?;
        }

        // 4. The full post-condition: the source unchanged, each target with the key
        // current and nothing else changed.
        let source_expected = Expected::of(&self.source_status);
        let target_expected: Vec<Expected> = self
            .targets
            .iter()
            .map(|t| Expected {
                current_register: RegisterStatus {
                    state: RegisterState::Valid,
                    vp: Some(vp),
                },
                new_register: RegisterStatus::EMPTY,
                importer_pending: false,
                ..Expected::of(&t.status)
            })
            .collect();
        let mut each: Vec<(&KnownUnit, &Expected)> = vec![(source, &source_expected)];
        each.extend(self.targets.iter().map(|t| t.unit).zip(&target_expected));
        check_each(client, &each, Some(counters), STEP_CHECK)?;
        if !self.targets.is_empty() {
            progress.event(&Event::Verified {
                checkpoint: crate::Checkpoint::Finished,
                units: each.len(),
            });
        }
        Ok(AutoRecoverReport {
            instance: self.instance,
            source: source.num,
            vp,
            recovered: self.targets.iter().map(|t| t.unit.num).collect(),
            unchanged: self.holding.iter().map(|(u, _)| u.num).collect(),
        })
    }
}
