//! `auto-init`: initialize a service instance with recovery crypto units.
//!
//! Plan, then act. [`AutoInit::plan`] queries every unit of the instance and checks every
//! precondition, reporting all problems at once before anything changes. [`AutoInitPlan::execute`]
//! then, with per-unit steps running on all units in parallel:
//!
//! 1. clears units left half-initialized in imprint mode (unsigned zeroize, as the vendor
//!    SDK does; a unit in imprint mode holds no master key);
//! 2. installs every administrator (unsigned in imprint mode);
//! 3. sets both thresholds, leaving imprint mode, signed by as many administrators as the
//!    new signature threshold, then checks that every unit holds exactly the
//!    administrators (by SKI) and thresholds asked, before any master key exists;
//! 4. generates a random master key in the first recovery unit's current register and,
//!    at the same time, an importer key on every other unit;
//! 5. exports the key from the recovery unit to all other units with one command
//!    (`exportMkBatch`, threshold signatures; one per 16 targets), then on every target:
//!    import, commit (threshold), set immediate;
//! 6. checks the full post-condition on every unit: exactly the administrators and
//!    thresholds asked, the generated key current everywhere, the new register empty.
//!
//! The ceremony accounts for every transaction counter value it uses, from the plan's
//! queries on, and never retries a command: while units are in imprint mode anyone who
//! can reach them may change their administrators unsigned, so a counter moved by someone
//! else stops the ceremony as interference ([`CeremonyError::Interference`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use tke_client::{fanout::parallel, Client, ClientError, InstanceId, KnownUnit};
use tke_proto::{
    transport::SignedEnvelope, AdminInfo, Command, Register, RegisterState, RegisterStatus,
    Threshold, UnitStatus, UnitType, Vp,
};
use tke_sigkey::Signer;

use crate::{
    admin_set::{admin_info, admin_list_problems},
    on_all,
    postcondition::{interference, Counters, Expected},
    transfer::{export_batches, export_request},
    CeremonyError, Checkpoint, Event, Problem, Progress,
};

/// What the operator asked for.
pub struct AutoInit<'a> {
    /// The instance to initialize.
    pub instance: InstanceId,
    /// Signatures required on commands.
    pub sig_threshold: Threshold,
    /// Signatures required to remove an administrator.
    pub rev_threshold: Threshold,
    /// The administrators to install, in order. The first ones sign.
    pub admins: Vec<&'a dyn Signer>,
}

/// A checked plan, ready to run.
pub struct AutoInitPlan<'a, 'c> {
    client: &'c Client,
    request: AutoInit<'a>,
    units: Vec<&'c KnownUnit>,
    recovery: &'c KnownUnit,
    /// Units in imprint mode that already hold administrators (cleared first).
    to_clear: Vec<&'c KnownUnit>,
    /// Each unit's state when the plan was made, in the order of `units`.
    statuses: Vec<UnitStatus>,
    /// Every counter value the ceremony uses, accounted for from the plan's queries on.
    counters: Counters,
}

/// What an initialization produced.
#[derive(Clone, Debug)]
pub struct AutoInitReport {
    /// The instance.
    pub instance: InstanceId,
    /// `CRYPTO UNIT NUM` of every unit initialized.
    pub units: Vec<usize>,
    /// `CRYPTO UNIT NUM` of the recovery unit that generated the key.
    pub generated_in: usize,
    /// The master key's verification pattern, now in every current register.
    pub vp: Vp,
}

const STEP_CLEAR: &str = "Clearing half-initialized crypto units";
const STEP_ADMINS: &str = "Installing administrators";
const STEP_THRESHOLDS: &str = "Setting signature thresholds";
const STEP_GENERATE: &str = "Generating a random master key value";
const STEP_TRANSFER: &str = "Transferring the master key value";
const STEP_CHECK: &str = "Checking the crypto units";

impl<'a> AutoInit<'a> {
    /// Checks every precondition against the units' current state and returns a plan.
    ///
    /// # Errors
    /// [`CeremonyError::Problems`] listing every problem found; nothing is changed.
    pub fn plan<'c>(self, client: &'c Client) -> Result<AutoInitPlan<'a, 'c>, CeremonyError> {
        let infos: Vec<AdminInfo> = self
            .admins
            .iter()
            .map(|a| admin_info(a.certificate()))
            .collect();
        let needed = self.sig_threshold.get().max(self.rev_threshold.get());
        let mut problems = admin_list_problems(&infos, needed);
        for r in parallel(&self.admins, |a| {
            tke_sigkey::check_usable(*a).map_err(|source| Problem::UnusableKey {
                name: a.name().clone(),
                source,
            })
        }) {
            if let Err(p) = r {
                problems.push(p);
            }
        }

        let survey = survey(client, &self.instance);
        problems.extend(survey.problems);
        match survey.recovery {
            Some(recovery) if problems.is_empty() => {
                // The ceremony accounts for every counter value from here: a command from
                // anyone else before or between its own is interference.
                let counters = Counters::default();
                for (u, s) in survey.units.iter().zip(&survey.statuses) {
                    counters.start(u, s);
                }
                Ok(AutoInitPlan {
                    client,
                    request: self,
                    units: survey.units,
                    recovery,
                    to_clear: survey.to_clear,
                    statuses: survey.statuses,
                    counters,
                })
            }
            _ => Err(CeremonyError::Problems(problems)),
        }
    }
}

/// What [`survey`] found.
struct Survey<'c> {
    /// The instance's units.
    units: Vec<&'c KnownUnit>,
    /// The first recovery unit.
    recovery: Option<&'c KnownUnit>,
    /// The imprint-mode units that already hold administrators.
    to_clear: Vec<&'c KnownUnit>,
    /// The state of each unit, in the order of `units` (complete only without problems).
    statuses: Vec<UnitStatus>,
    /// Every problem found.
    problems: Vec<Problem>,
}

/// Queries every unit of `instance`: the instance must exist and have a recovery unit,
/// and every unit must be in imprint mode.
fn survey<'c>(client: &'c Client, instance: &InstanceId) -> Survey<'c> {
    let mut problems = Vec::new();
    let units = client.instance_units(instance);
    if units.is_empty() {
        problems.push(Problem::UnknownInstance {
            instance: instance.clone(),
        });
    }
    let recovery = units
        .iter()
        .find(|u| u.unit_type() == UnitType::Recovery)
        .copied();
    if recovery.is_none() && !units.is_empty() {
        problems.push(Problem::NoRecoveryUnit);
    }
    let mut to_clear = Vec::new();
    let mut statuses = Vec::with_capacity(units.len());
    for (u, status) in units.iter().zip(parallel(&units, |u| client.query(u))) {
        match status {
            Err(source) => problems.push(Problem::Unreachable { num: u.num, source }),
            Ok(s) if !s.imprint_mode() => problems.push(Problem::NotInImprintMode {
                num: u.num,
                unit: u.id(),
                current_mk_set: s.current_register.state != tke_proto::RegisterState::Empty,
            }),
            Ok(s) => {
                if !s.admins.is_empty() {
                    to_clear.push(*u);
                }
                statuses.push(s);
            }
        }
    }
    Survey {
        units,
        recovery,
        to_clear,
        statuses,
        problems,
    }
}

/// Checks, before anything is asked of the operator, that `instance` can be initialized:
/// it exists, has a recovery unit, and every unit is in imprint mode.
///
/// # Errors
/// [`CeremonyError::Problems`] listing every problem.
pub fn precheck(client: &Client, instance: &InstanceId) -> Result<(), CeremonyError> {
    let problems = survey(client, instance).problems;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CeremonyError::Problems(problems))
    }
}

impl AutoInitPlan<'_, '_> {
    /// The units that will be initialized, in `CRYPTO UNIT NUM` order.
    pub fn units(&self) -> Vec<usize> {
        self.units.iter().map(|u| u.num).collect()
    }

    /// Runs the initialization. The plan is consumed: an initialization runs once.
    ///
    /// Every command is sent at the counter the ceremony's previous command on that unit
    /// left (starting from the plan's queries) and never retried: a command from anyone
    /// else in between stops the ceremony. As soon as the units leave imprint mode, and
    /// again at the end, every unit is checked to hold exactly what was asked
    /// ([`Expected::check`]).
    ///
    /// # Errors
    /// [`CeremonyError::Interference`] when a unit's counter moved between two of the
    /// ceremony's commands (naming each such unit and, while it was in imprint mode, the
    /// foreign and missing administrators it holds); [`CeremonyError::PostCondition`]
    /// when the units do not hold what was asked after leaving imprint mode (then no
    /// master key was generated) or at the end; [`CeremonyError::Step`] naming the step
    /// and every unit that failed. The units then hold what the steps before reached;
    /// `cryptounit-compare` shows it.
    pub fn execute(self, progress: &dyn Progress) -> Result<AutoInitReport, CeremonyError> {
        let client = self.client;
        let counters = &self.counters;
        let admins = &self.request.admins;
        let quorum: Vec<&dyn Signer> =
            admins[..usize::from(self.request.sig_threshold.get())].to_vec();
        let one: Vec<&dyn Signer> = admins[..1].to_vec();
        let infos: Vec<AdminInfo> = admins.iter().map(|a| admin_info(a.certificate())).collect();
        // What every unit holds after leaving imprint mode, before any master key.
        let initialized = Expected {
            sig_threshold: self.request.sig_threshold.get(),
            rev_threshold: self.request.rev_threshold.get(),
            ..Expected::imprint(infos.clone())
        };

        if !self.to_clear.is_empty() {
            progress.event(&Event::ClearingImprintUnits {
                units: self.to_clear.len(),
            });
            on_all(STEP_CLEAR, &self.to_clear, |u| {
                counters.run(client, u, &Command::Zeroize, &[])
            })
            .map_err(|e| interference(client, e, |u| self.planned(u).map(Expected::of)))?;
        }

        for (i, admin) in admins.iter().enumerate() {
            progress.event(&Event::InstallingAdmin {
                index: i + 1,
                total: admins.len(),
            });
            let cmd = Command::AddAdmin(admin.certificate().clone());
            on_all(STEP_ADMINS, &self.units, |u| {
                counters.run(client, u, &cmd, &[])
            })
            .map_err(|e| {
                interference(client, e, |_| Some(Expected::imprint(infos[..i].to_vec())))
            })?;
        }

        progress.event(&Event::SettingThresholds);
        let cmd = Command::SetThresholds {
            signature: self.request.sig_threshold,
            revocation: self.request.rev_threshold,
        };
        on_all(STEP_THRESHOLDS, &self.units, |u| {
            counters.run(client, u, &cmd, &quorum)
        })
        .map_err(|e| interference(client, e, |_| Some(Expected::imprint(infos.clone()))))?;

        // Out of imprint mode nobody can change a unit without our administrators'
        // signatures: check now, before any master key exists, that it is exactly ours.
        initialized.check(client, &self.units, Some(counters), STEP_THRESHOLDS)?;
        progress.event(&Event::Verified {
            checkpoint: Checkpoint::ImprintModeLeft,
            units: self.units.len(),
        });

        // The recovery unit generates the key while every other unit makes its importer
        // key: different units, so one parallel step.
        progress.event(&Event::GeneratingMasterKey);
        let r = self.recovery;
        let out = on_all(STEP_GENERATE, &self.units, |u| {
            let command = if u.id() == r.id() {
                Command::GenerateRandomMk
            } else {
                Command::GenerateImporter
            };
            counters.run(client, u, &command, &one)
        })
        .map_err(|e| interference(client, e, |_| Some(initialized.clone())))?;
        let mut vp = None;
        let mut targets: Vec<&KnownUnit> = Vec::new();
        let mut importers = Vec::new();
        for (u, der) in self.units.iter().zip(&out) {
            let unusable = |source: tke_proto::ProtoError| CeremonyError::Output {
                step: STEP_GENERATE,
                num: u.num,
                source,
            };
            if u.id() == r.id() {
                vp = Some(Vp::from_slice(der).map_err(unusable)?);
            } else {
                importers.push(export_request(STEP_GENERATE, u, der, Register::Current)?);
                targets.push(u);
            }
        }
        let vp = vp.ok_or(CeremonyError::Verification {
            num: r.num,
            what: "no verification pattern was returned",
        })?;

        // One quorum-signed export per batch of targets (one batch up to 16 units), so
        // the recovery unit answers once however many units wait for the key.
        let envelopes = export_batches(STEP_TRANSFER, client, counters, r, &importers, &quorum)?;

        let done = AtomicUsize::new(0);
        let total = targets.len();
        let jobs: Vec<(&KnownUnit, SignedEnvelope)> =
            targets.iter().copied().zip(envelopes).collect();
        let mut failures = Vec::new();
        for ((u, _), res) in jobs.iter().zip(parallel(&jobs, |(u, envelope)| {
            counters.run(
                client,
                u,
                &Command::ImportMk(Box::new(envelope.clone())),
                &one,
            )?;
            counters.run(client, u, &Command::CommitMk(vp), &quorum)?;
            counters.run(client, u, &Command::SetImmediate(vp), &one)?;
            let index = done.fetch_add(1, Ordering::SeqCst) + 1;
            progress.event(&Event::TransferringMasterKey { index, total });
            Ok::<(), ClientError>(())
        })) {
            if let Err(e) = res {
                failures.push((u.num, e));
            }
        }
        if !failures.is_empty() {
            let failed = CeremonyError::Step {
                step: STEP_TRANSFER,
                failures,
            };
            return Err(interference(client, failed, |_| None));
        }

        // The full post-condition: exactly our administrators and thresholds, the one
        // generated key current everywhere, nothing else held or pending.
        Expected {
            current_register: RegisterStatus {
                state: RegisterState::Valid,
                vp: Some(vp),
            },
            ..initialized
        }
        .check(client, &self.units, Some(counters), STEP_CHECK)?;
        progress.event(&Event::Verified {
            checkpoint: Checkpoint::Finished,
            units: self.units.len(),
        });
        Ok(AutoInitReport {
            instance: self.request.instance.clone(),
            units: self.units(),
            generated_in: r.num,
            vp,
        })
    }

    /// The state `unit` held when the plan was made.
    fn planned(&self, unit: &KnownUnit) -> Option<&UnitStatus> {
        self.units
            .iter()
            .zip(&self.statuses)
            .find(|(u, _)| u.id() == unit.id())
            .map(|(_, s)| s)
    }
}
