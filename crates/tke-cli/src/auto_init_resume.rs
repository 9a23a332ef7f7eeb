//! `auto-init --resume`: the journal `auto-init` keeps in the workstation directory, and
//! finishing an interrupted initialization from it (or, without it, from what the units
//! hold).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tke_ceremony::{
    auto_init::{interrupted, COMMAND},
    AutoInitPlan, AutoInitResume, CeremonyError, Problem,
};
use tke_client::{Client, InstanceId, KnownUnit};
use tke_proto::{AdminInfo, AdminName, Ski, Threshold, UnitId, Vp};
use tke_sigkey::Signer;
use tke_workstation::Journal;

use crate::{context::Ctx, journal::JournalLog, sigkeys::list};

/// What auto-init's journal records: everything a resumed run needs but the passwords.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    sig_threshold: u8,
    rev_threshold: u8,
    /// The administrators, in order (the first ones sign).
    admins: Vec<JournalAdmin>,
    /// Every unit of the instance, as UUIDs.
    units: Vec<String>,
    /// The recovery unit that generates the key, as a UUID.
    recovery: String,
}

/// One administrator in the journal: name and SKI (hex), never a key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalAdmin {
    name: String,
    ski: String,
}

/// [`Params`] parsed: what a resumed ceremony is asked.
pub struct Asked {
    sig: Threshold,
    rev: Threshold,
    admins: Vec<AdminInfo>,
    units: Vec<UnitId>,
    recovery: UnitId,
}

impl Params {
    /// What the plan of a first run asks.
    pub fn new(
        sig: Threshold,
        rev: Threshold,
        admins: &[&dyn Signer],
        units: &[&KnownUnit],
        recovery: &KnownUnit,
    ) -> Self {
        Self::of(&Asked {
            sig,
            rev,
            admins: admins
                .iter()
                .map(|a| AdminInfo {
                    ski: a.ski(),
                    name: a.name().clone(),
                })
                .collect(),
            units: units.iter().map(|u| u.id()).collect(),
            recovery: recovery.id(),
        })
    }

    fn of(asked: &Asked) -> Self {
        Self {
            sig_threshold: asked.sig.get(),
            rev_threshold: asked.rev.get(),
            admins: asked
                .admins
                .iter()
                .map(|a| JournalAdmin {
                    name: a.name.as_str().to_owned(),
                    ski: a.ski.to_hex(),
                })
                .collect(),
            units: asked.units.iter().map(UnitId::uuid).collect(),
            recovery: asked.recovery.uuid(),
        }
    }

    /// Parses the journal's fields; a bad one is an error naming the journal.
    fn parse(&self, journal: &Journal<Self>) -> Result<Asked> {
        let bad = |what: String| {
            anyhow::anyhow!(
                "the auto-init journal {} is corrupt: {what}; it is left as it was: check the \
                 crypto units with `tke cryptounit-compare`, then move the file away to start \
                 over",
                journal.path().display()
            )
        };
        let threshold = |n: u8, field: &str| {
            Threshold::new(u32::from(n)).map_err(|_| bad(format!("{field} {n} is not 1 to 8")))
        };
        let admins = self
            .admins
            .iter()
            .enumerate()
            .map(|(i, a)| {
                Ok(AdminInfo {
                    name: AdminName::new(&a.name).map_err(|_| {
                        bad(format!("admins[{i}].name is not an administrator name"))
                    })?,
                    ski: Ski::from_hex(&a.ski)
                        .map_err(|_| bad(format!("admins[{i}].ski is not a 64-hex-digit SKI")))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let unit = |s: &str, field: String| {
            UnitId::from_uuid(s).map_err(|_| bad(format!("{field} is not a UUID")))
        };
        Ok(Asked {
            sig: threshold(self.sig_threshold, "sig_threshold")?,
            rev: threshold(self.rev_threshold, "rev_threshold")?,
            admins,
            units: self
                .units
                .iter()
                .enumerate()
                .map(|(i, s)| unit(s, format!("units[{i}]")))
                .collect::<Result<_>>()?,
            recovery: unit(&self.recovery, "recovery".to_owned())?,
        })
    }
}

/// The journal of an interrupted auto-init of `instance`, if one is left.
///
/// # Errors
/// A journal that cannot be read (names the file).
pub fn open(ctx: &Ctx, instance: &InstanceId) -> Result<Option<Journal<Params>>> {
    Ok(Journal::open(&ctx.files, COMMAND, &instance.0)?)
}

/// Starts the journal of a first run.
///
/// # Errors
/// It cannot be written (names the file); nothing was changed.
pub fn create(ctx: &Ctx, instance: &InstanceId, params: Params) -> Result<JournalLog<Params>> {
    JournalLog::start(ctx, COMMAND, &instance.0, params)
}

/// The refusal of a plain run when a journal is left: where it stopped and how to finish.
pub fn refuse_rerun(journal: &Journal<Params>, instance: &InstanceId) -> anyhow::Error {
    anyhow::anyhow!(
        "an auto-init of service instance {instance} was interrupted ({}); no crypto unit was \
         changed\nFinish it with `tke auto-init --resume`: it completes the initialization \
         from where it stopped, with the administrators and thresholds it was started with \
         (journal {}).",
        last_step(journal),
        journal.path().display()
    )
}

fn last_step(journal: &Journal<Params>) -> String {
    match journal.last_step() {
        Some(s) => format!("last step done: {}", s.step),
        None => "before its first step was done".to_owned(),
    }
}

/// What a resumed run was asked, with the keys it signs with.
pub struct Resumed<'c> {
    /// The keys opened (the first `sig_threshold` administrators).
    pub signers: Vec<Box<dyn Signer>>,
    /// The certificates of every administrator, in order.
    pub admins: Vec<tke_proto::AdminCertificate>,
    asked: Asked,
    done: Vec<String>,
    vp: Option<Vp>,
    instance: InstanceId,
    client: &'c Client,
}

/// Reads what the interrupted run asked (journal, else the units), finds the
/// administrators' certificates on the workstation and opens the signing keys. Says
/// where the ceremony stopped.
///
/// # Errors
/// No interrupted run to finish; a key not on this workstation; a key that cannot be
/// opened.
pub fn prepare<'c>(
    ctx: &Ctx,
    client: &'c Client,
    instance: &InstanceId,
    journal: &Option<Journal<Params>>,
    say: &dyn Fn(&str),
) -> Result<Resumed<'c>> {
    let (asked, done, vp) = match journal {
        Some(j) => {
            say(&format!(
                "Resuming the auto-init of service instance {instance} recorded in {} ({}).",
                j.path().display(),
                last_step(j)
            ));
            let vp = j
                .detail(tke_ceremony::auto_init::steps::KEY_GENERATED)
                .map(|h| {
                    Vp::from_hex(h).map_err(|_| {
                        anyhow::anyhow!(
                            "the auto-init journal {} is corrupt: the verification pattern of \
                             step key-generated is not 64 hex digits; it is left as it was",
                            j.path().display()
                        )
                    })
                })
                .transpose()?;
            let done = j.steps().iter().map(|s| s.step.clone()).collect();
            (j.params().parse(j)?, done, vp)
        }
        None => {
            let found = interrupted(client, instance)?;
            say(&format!(
                "No journal of an interrupted auto-init of service instance {instance} is in {}: \
                 resuming from what the crypto units hold (thresholds {}/{}, administrators {}).",
                ctx.files.path().display(),
                found.sig_threshold.get(),
                found.rev_threshold.get(),
                crate::signing::names(&found.admins)
            ));
            let asked = Asked {
                sig: found.sig_threshold,
                rev: found.rev_threshold,
                admins: found.admins,
                units: found.units,
                recovery: found.recovery,
            };
            (asked, Vec::new(), found.vp)
        }
    };
    let entries = list(ctx)?;
    let mut admins = Vec::new();
    let mut absent = Vec::new();
    for a in &asked.admins {
        match entries.iter().find(|e| e.ski == a.ski) {
            Some(e) => admins.push(e.clone()),
            None => absent.push(format!("{} (SKI {})", a.name, a.ski.short())),
        }
    }
    if !absent.is_empty() {
        bail!(
            "the signature key of {} is not in {}: finish the initialization on the \
             workstation that started it, or add the key files there; no crypto unit was \
             changed",
            absent.join(", "),
            ctx.files.path().display()
        );
    }
    let mut signers = Vec::new();
    for e in &admins[..usize::from(asked.sig.get())] {
        signers.push(ctx.open_signer(e)?);
    }
    Ok(Resumed {
        signers,
        admins: admins.iter().map(|e| e.certificate.clone()).collect(),
        asked,
        done,
        vp,
        instance: instance.clone(),
        client,
    })
}

impl<'c> Resumed<'c> {
    /// The plan of what is left: every problem at once, nothing changed.
    ///
    /// # Errors
    /// The units hold a state the interrupted run cannot have left, or cannot be queried.
    pub fn plan<'a>(&'a self) -> Result<AutoInitPlan<'a, 'c>> {
        Ok(AutoInitResume {
            instance: self.instance.clone(),
            sig_threshold: self.asked.sig,
            rev_threshold: self.asked.rev,
            admins: self.admins.clone(),
            signers: self.signers.iter().map(|s| s.as_ref()).collect(),
            units: self.asked.units.clone(),
            recovery: self.asked.recovery,
            done: self.done.clone(),
            vp: self.vp,
        }
        .plan(self.client)?)
    }

    /// The journal to record in: the one left (`journal`), else a new one.
    ///
    /// # Errors
    /// A new journal cannot be written.
    pub fn journal(
        &self,
        ctx: &Ctx,
        journal: Option<Journal<Params>>,
    ) -> Result<JournalLog<Params>> {
        match journal {
            Some(j) => Ok(JournalLog::resume(j)),
            None => create(ctx, &self.instance, Params::of(&self.asked)),
        }
    }
}

/// A resume refused, with what the operator can do.
pub fn hint(e: anyhow::Error) -> anyhow::Error {
    let Some(CeremonyError::Problems(problems)) = e.downcast_ref::<CeremonyError>() else {
        return e;
    };
    let has = |f: fn(&Problem) -> bool| problems.iter().any(f);
    let advice = if has(|p| matches!(p, Problem::NothingToResume { .. })) {
        "Initialize it with `tke auto-init` (without --resume)."
    } else if has(|p| {
        matches!(
            p,
            Problem::Unexplained { .. } | Problem::UnitsChanged { .. }
        )
    }) {
        "Someone else changed the crypto units after the auto-init stopped (`tke \
         cryptounit-compare` shows them). Find out who and why; undo the change (for \
         example `tke cryptounit-admin-rm` for an administrator installed in imprint mode), \
         then rerun `tke auto-init --resume`."
    } else {
        return e;
    };
    anyhow::anyhow!("{e}\n{advice}")
}
