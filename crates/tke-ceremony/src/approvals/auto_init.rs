//! `tke plan auto-init`: the initialization of a service instance as a multi-round
//! ceremony file, planned by someone who holds no administrator key.
//!
//! Three rounds, as the direct `auto-init` runs them (`crate::auto_init`):
//!
//! 1. on every unit (in imprint mode): a zeroize where someone left administrators,
//!    every administrator installed, both thresholds set (leaving imprint mode); then
//!    the recovery unit generates a random master key in its current register and every
//!    other unit an importer key;
//! 2. the recovery unit exports its key to every other unit (`exportMkBatch`, one per 16
//!    targets), to the certified importer keys the units answered in round 1;
//! 3. on every other unit: import its envelope, commit, set immediate.
//!
//! A service instance of one unit has round 1 only.

use serde::{Deserialize, Serialize};
use tke_client::{Client, InstanceId};
use tke_proto::{
    command::MAX_EXPORT_TARGETS,
    der::{asn1::OctetString, Decode},
    transport::{CertifiedImporter, ExportRequest, SignedEnvelope},
    AdminCertificate, CaCertificate, Command, CommandId, DeviceCertificate, Register,
    RegisterState, RegisterStatus, Threshold, UnitId, UnitType, Vp,
};

use super::{
    counter_after, parse_params, CeremonyFile, FileError, Kind, MultiRound, PlanError, Round,
    UnitCommand,
};
use crate::{
    admin_set::{admin_info, admin_list_problems},
    auto_init::survey,
    postcondition::Expected,
    CeremonyError, Problem,
};

/// The `kind` of an auto-init file.
pub const KIND: &str = "auto-init";

/// The parameters of an auto-init file: everything its rounds are built from. Public.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoInitParams {
    /// The service instance.
    pub instance: String,
    /// Signatures required on commands.
    pub sig_threshold: u32,
    /// Signatures required to remove an administrator.
    pub rev_threshold: u32,
    /// The administrators' certificates (hex of the DER), in the order installed.
    pub admins: Vec<String>,
    /// The fleet CA certificate (hex of the DER) the units' certificates chain to.
    pub fleet_ca: String,
    /// The unit id (UUID) of the recovery unit that generates the master key.
    pub recovery: String,
    /// Every unit of the instance, in `CRYPTO UNIT NUM` order.
    pub units: Vec<PlannedUnit>,
}

/// One unit of an auto-init file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedUnit {
    /// Its `CRYPTO UNIT NUM` when planned.
    pub num: usize,
    /// Its device certificate (hex of the DER).
    pub certificate: String,
    /// Its transaction counter when planned: its first command uses the next value.
    pub counter: u64,
    /// Whether it is cleared first (imprint mode, administrators left by someone).
    pub clear: bool,
}

/// The parameters, decoded and checked.
struct Parsed {
    sig: Threshold,
    rev: Threshold,
    admins: Vec<AdminCertificate>,
    ca: CaCertificate,
    units: Vec<Unit>,
    /// Index of the recovery unit in `units`.
    recovery: usize,
}

struct Unit {
    num: usize,
    cert: DeviceCertificate,
    counter: u64,
    clear: bool,
}

impl Unit {
    fn id(&self) -> UnitId {
        self.cert.unit_id()
    }
}

fn bad(what: impl Into<String>) -> FileError {
    FileError::Params {
        kind: KIND,
        what: what.into(),
    }
}

fn unhex(field: &str, text: &str) -> Result<Vec<u8>, FileError> {
    hex::decode(text).map_err(|_| bad(format!("{field} is not hexadecimal")))
}

fn parse(params: &serde_json::Value) -> Result<Parsed, FileError> {
    let p: AutoInitParams = parse_params(KIND, params)?;
    let threshold =
        |n: u32, which: &str| Threshold::new(n).map_err(|e| bad(format!("{which}: {e}")));
    let sig = threshold(p.sig_threshold, "sig_threshold")?;
    let rev = threshold(p.rev_threshold, "rev_threshold")?;
    let admins = p
        .admins
        .iter()
        .enumerate()
        .map(|(i, a)| {
            AdminCertificate::from_der(&unhex("an administrator certificate", a)?)
                .map_err(|e| bad(format!("administrator certificate {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let infos: Vec<_> = admins.iter().map(admin_info).collect();
    if let Some(p) = admin_list_problems(&infos, sig.get().max(rev.get())).first() {
        return Err(bad(p.to_string()));
    }
    let ca = CaCertificate::from_der(&unhex("fleet_ca", &p.fleet_ca)?)
        .map_err(|e| bad(format!("fleet_ca: {e}")))?;
    let mut units: Vec<Unit> = Vec::with_capacity(p.units.len());
    for u in &p.units {
        let cert = DeviceCertificate::verify(&unhex("a unit certificate", &u.certificate)?, &ca)
            .map_err(|e| {
                bad(format!(
                    "the certificate of crypto unit {} does not chain to fleet_ca: {e}",
                    u.num
                ))
            })?;
        if cert.instance_id().uuid() != p.instance {
            return Err(bad(format!(
                "crypto unit {} belongs to service instance {}, not {}",
                u.num,
                cert.instance_id().uuid(),
                p.instance
            )));
        }
        if units.iter().any(|v| v.id() == cert.unit_id()) {
            return Err(bad(format!("crypto unit {} is listed twice", u.num)));
        }
        units.push(Unit {
            num: u.num,
            cert,
            counter: u.counter,
            clear: u.clear,
        });
    }
    let recovery = units
        .iter()
        .position(|u| u.id().uuid() == p.recovery && u.cert.unit_type() == UnitType::Recovery)
        .ok_or_else(|| bad("recovery is not a recovery unit of the file"))?;
    Ok(Parsed {
        sig,
        rev,
        admins,
        ca,
        units,
        recovery,
    })
}

/// A unit's commands of a round, each at the next counter.
fn push_all(
    out: &mut Vec<UnitCommand>,
    u: &Unit,
    before: &[Round],
    commands: Vec<Command>,
) -> Result<(), FileError> {
    let mut counter = counter_after(u.counter, u.id(), before);
    for command in commands {
        out.push(
            UnitCommand::build(u.num, u.id(), counter, command).map_err(|e| {
                bad(format!(
                    "crypto unit {}: a command cannot be encoded: {e}",
                    u.num
                ))
            })?,
        );
        counter = counter.wrapping_add(1);
    }
    Ok(())
}

fn answer_error(round: usize, num: usize, what: impl Into<String>) -> FileError {
    FileError::Answer {
        round,
        num,
        what: what.into(),
    }
}

impl Parsed {
    fn recovery(&self) -> &Unit {
        &self.units[self.recovery]
    }

    /// The units that receive the key, in order.
    fn targets(&self) -> impl Iterator<Item = &Unit> {
        let r = self.recovery().id();
        self.units.iter().filter(move |u| u.id() != r)
    }

    /// The generated key's verification pattern: the recovery unit's answer in round 1.
    fn vp(&self, first: &Round) -> Result<Vp, FileError> {
        let r = self.recovery();
        let answer = first
            .answer(r.id(), CommandId::GenerateRandomMk, 0)
            .ok_or_else(|| answer_error(1, r.num, "the verification pattern is missing"))?;
        Vp::from_slice(answer)
            .map_err(|e| answer_error(1, r.num, format!("not a verification pattern: {e}")))
    }

    /// Each target's certified importer key (round 1's answers).
    fn importers(&self, first: &Round) -> Result<Vec<CertifiedImporter>, FileError> {
        self.targets()
            .map(|u| {
                let answer = first
                    .answer(u.id(), CommandId::GenerateImporter, 0)
                    .ok_or_else(|| answer_error(1, u.num, "the importer key is missing"))?;
                let importer = CertifiedImporter::from_der(answer)
                    .map_err(|e| answer_error(1, u.num, format!("not an importer key: {e}")))?;
                importer.verify(&u.cert).map_err(|e| {
                    answer_error(
                        1,
                        u.num,
                        format!("the importer key is not certified by the unit's device key: {e}"),
                    )
                })?;
                Ok(importer)
            })
            .collect()
    }

    /// Each target's envelope (round 2's answers, in order), checked: signed by the
    /// recovery unit under the fleet CA, for that target, holding the generated key.
    fn envelopes(&self, first: &Round, second: &Round) -> Result<Vec<SignedEnvelope>, FileError> {
        let r = self.recovery();
        let vp = self.vp(first)?;
        let mut all = Vec::new();
        for (i, c) in second.commands.iter().enumerate() {
            let answer = c
                .answer
                .as_deref()
                .ok_or_else(|| answer_error(2, r.num, "the envelopes are missing"))?;
            let batch = Vec::<SignedEnvelope>::from_der(answer)
                .map_err(|e| answer_error(2, r.num, format!("not envelopes: {e}")))?;
            let expected = self
                .targets()
                .skip(i * MAX_EXPORT_TARGETS)
                .take(MAX_EXPORT_TARGETS)
                .count();
            if batch.len() != expected {
                return Err(answer_error(
                    2,
                    r.num,
                    format!("{} envelopes for {expected} crypto units", batch.len()),
                ));
            }
            all.extend(batch);
        }
        for (e, u) in all.iter().zip(self.targets()) {
            let (env, source) = e
                .verify(&self.ca)
                .map_err(|e| answer_error(2, r.num, format!("an envelope does not verify: {e}")))?;
            if source.unit_id() != r.id() || env.target_unit_id != u.id() || env.vp != vp {
                return Err(answer_error(
                    2,
                    r.num,
                    format!(
                        "the envelope for crypto unit {} is not from the recovery unit to it with the generated key",
                        u.num
                    ),
                ));
            }
        }
        Ok(all)
    }
}

/// Auto-init as a [`MultiRound`] ceremony.
pub struct AutoInitRounds;

impl MultiRound for AutoInitRounds {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn title(&self) -> &'static str {
        "Initializing a service instance"
    }

    fn rounds(&self, params: &serde_json::Value) -> Result<usize, FileError> {
        Ok(if parse(params)?.units.len() > 1 { 3 } else { 1 })
    }

    fn round(&self, params: &serde_json::Value, before: &[Round]) -> Result<Round, FileError> {
        let p = parse(params)?;
        let r = p.recovery();
        let mut commands = Vec::new();
        match before {
            [] => {
                for u in &p.units {
                    let mut list = Vec::new();
                    if u.clear {
                        list.push(Command::Zeroize);
                    }
                    list.extend(p.admins.iter().cloned().map(Command::AddAdmin));
                    list.push(Command::SetThresholds {
                        signature: p.sig,
                        revocation: p.rev,
                    });
                    list.push(if u.id() == r.id() {
                        Command::GenerateRandomMk
                    } else {
                        Command::GenerateImporter
                    });
                    push_all(&mut commands, u, before, list)?;
                }
            }
            [first] => {
                let importers = p.importers(first)?;
                let requests = p
                    .targets()
                    .zip(importers)
                    .map(|(u, importer)| {
                        Ok(ExportRequest {
                            register: Register::Current,
                            target_certificate: OctetString::new(u.cert.der().to_vec())
                                .map_err(|e| bad(e.to_string()))?,
                            importer,
                        })
                    })
                    .collect::<Result<Vec<_>, FileError>>()?;
                let list = requests
                    .chunks(MAX_EXPORT_TARGETS)
                    .map(|b| Command::ExportMkBatch(b.to_vec()))
                    .collect();
                push_all(&mut commands, r, before, list)?;
            }
            [first, second] => {
                let vp = p.vp(first)?;
                for (u, e) in p.targets().zip(p.envelopes(first, second)?) {
                    let list = vec![
                        Command::ImportMk(Box::new(e)),
                        Command::CommitMk(vp),
                        Command::SetImmediate(vp),
                    ];
                    push_all(&mut commands, u, before, list)?;
                }
            }
            _ => return Err(bad("the ceremony has three rounds")),
        }
        Ok(Round::planned(commands))
    }

    fn check_answers(
        &self,
        params: &serde_json::Value,
        before: &[Round],
        round: &Round,
    ) -> Result<(), FileError> {
        let p = parse(params)?;
        match before {
            [] => {
                p.vp(round)?;
                p.importers(round)?;
            }
            [first] => {
                p.envelopes(first, round)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn postcondition(
        &self,
        params: &serde_json::Value,
        rounds: &[Round],
    ) -> Result<Vec<(UnitId, Expected)>, FileError> {
        let p = parse(params)?;
        let first = rounds
            .first()
            .ok_or_else(|| bad("the ceremony has no round"))?;
        let vp = p.vp(first)?;
        let expected = Expected {
            sig_threshold: p.sig.get(),
            rev_threshold: p.rev.get(),
            current_register: RegisterStatus {
                state: RegisterState::Valid,
                vp: Some(vp),
            },
            ..Expected::imprint(p.admins.iter().map(admin_info).collect())
        };
        Ok(p.units.iter().map(|u| (u.id(), expected.clone())).collect())
    }
}

/// Plans the initialization of `instance` as a ceremony file: every unit queried and
/// every problem found as the direct `auto-init` finds them (the instance exists, has a
/// recovery unit, every unit is in imprint mode; the administrators and thresholds fit),
/// nothing signed or sent. The first recovery unit generates the key. Returns the file
/// with its first round.
///
/// # Errors
/// [`PlanError::Ceremony`] with [`CeremonyError::Problems`] listing every problem found.
pub fn plan_auto_init(
    client: &Client,
    instance: &InstanceId,
    sig_threshold: Threshold,
    rev_threshold: Threshold,
    admins: &[AdminCertificate],
) -> Result<CeremonyFile, PlanError> {
    let infos: Vec<_> = admins.iter().map(admin_info).collect();
    let mut problems = admin_list_problems(&infos, sig_threshold.get().max(rev_threshold.get()));
    let survey = survey(client, instance);
    problems.extend(survey.problems);
    let (Some(recovery), true) = (survey.recovery, problems.is_empty()) else {
        return Err(CeremonyError::Problems(problems).into());
    };
    let mut units = Vec::with_capacity(survey.units.len());
    let mut ca = None;
    for (u, s) in survey.units.iter().zip(&survey.statuses) {
        ca = ca.or(client.ca_of(u));
        units.push(PlannedUnit {
            num: u.num,
            certificate: hex::encode(u.certificate.der()),
            counter: s.counter,
            clear: !s.admins.is_empty(),
        });
    }
    let ca = ca.ok_or(CeremonyError::Problems(vec![Problem::UnknownInstance {
        instance: instance.clone(),
    }]))?;
    let params = AutoInitParams {
        instance: instance.0.clone(),
        sig_threshold: u32::from(sig_threshold.get()),
        rev_threshold: u32::from(rev_threshold.get()),
        admins: admins.iter().map(|a| hex::encode(a.der())).collect(),
        fleet_ca: hex::encode(ca.der()),
        recovery: recovery.id().uuid(),
        units,
    };
    let params = serde_json::to_value(&params).map_err(|e| bad(e.to_string()))?;
    let first = AutoInitRounds.round(&params, &[])?;
    Ok(CeremonyFile {
        ceremony: Some(Kind {
            kind: KIND.to_owned(),
            params,
        }),
        rounds: vec![first],
        force_with_keys: Vec::new(),
    })
}
