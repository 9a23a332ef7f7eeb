//! `auto-mk-rotate` and `cryptounit-mk-rotate`: rotate the master key of a service
//! instance and re-encrypt its key storage, or finish a rotation that was interrupted
//! (`--resume`).
//!
//! The ceremony is [`tke_ceremony::Rotate`]: it works out from the units' registers and
//! the key storage where the instance stands and checks everything before anything is
//! asked or sent. This module picks the instance (auto) or takes the selection (key
//! parts), prints the plan and where an interrupted rotation stopped, asks, opens the
//! keys the plan needs, prints the vendor's milestone lines and the re-encryption's
//! progress (a bar on a terminal, lines otherwise), and the result.
//!
//! Each run keeps a journal in the workstation directory ([`RotateParams`], the steps of
//! [`tke_ceremony::rotate::steps`]): `--resume` says from it where the rotation stopped and
//! checks it against the units and key storage, which stay the truth.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tke_ceremony::{
    rotate::steps, CeremonyError, Event, Flow, Problem, Progress, Rotate, RotatePlan,
    RotationEvent, RotationProblem, RotationStage, Rule,
};
use tke_client::InstanceId;
use tke_kms::ProgressReport;
use tke_proto::{RegisterState, Vp};
use tke_sigkey::Signer;
use tke_workstation::Journal;

use crate::{
    auto_init::{choose_instance, Printer as AutoPrinter},
    context::Ctx,
    journal::{not_found, not_this, stopped_json, where_stopped, JournalLog},
    registers::plan_table,
    signing::{self, SignerArgs},
    table::vp_lines,
    units::header,
};

/// The vendor's first milestone: the new master key is committed in every unit.
pub const COMMITTED_LINE: &str =
    "Delaying 30 seconds to allow server to discover new master key values";
/// The vendor's second milestone: key storage is under the new master key.
pub const REWRAPPED_LINE: &str = "KMS CRK rewrap successful, waiting on cryptounit-mk-setimm";

/// The flags both rotation commands take.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub signers: SignerArgs,
    /// The same as --signer.
    #[arg(long = "admin", value_name = "NAME")]
    pub admin: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Finish a rotation that was interrupted, from where the crypto units and the key
    /// storage say it stopped (never with a second new master key).
    #[arg(long)]
    pub resume: bool,
}

/// The flags of `auto-mk-rotate`.
#[derive(clap::Args, Debug)]
pub struct AutoArgs {
    /// The INSTANCE NUM of the service instance (as listed when there are several).
    #[arg(long, value_name = "NUM", allow_negative_numbers = true,
          value_parser = |s: &str| crate::prompt::whole_number(s, "INSTANCE NUM"))]
    pub instance: Option<usize>,
    #[command(flatten)]
    pub args: Args,
}

/// Prints the milestones; the re-encryption as a bar on a terminal, as lines otherwise.
struct Printer {
    flow: Flow,
    instance: InstanceId,
    quiet: bool,
    terminal: bool,
    reencryption: Mutex<Display>,
}

/// The re-encryption's display state.
#[derive(Default)]
struct Display {
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

impl Printer {
    fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// The key service's report, as a bar on a terminal, as lines otherwise.
    fn reencrypting(&self, r: &ProgressReport) {
        let mut d = self
            .reencryption
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let p = r.progress;
        if self.terminal {
            let bar = d.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(p.total);
                if let Ok(style) = ProgressStyle::with_template(
                    "Re-encrypting key storage [{bar:40}] {pos}/{len} keys ({per_sec}, {eta} left)",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar
            });
            bar.set_length(p.total);
            bar.set_position(p.done);
            return;
        }
        // Lines: the first, then at most one a second, and the last.
        let now = Instant::now();
        let due = d
            .last_line
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due || p.remaining() == 0 {
            d.last_line = Some(now);
            self.line(&r.to_string());
        }
    }
}

impl Progress for Printer {
    fn event(&self, e: &Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::Rotation(RotationEvent::Committing) => {
                self.line("Committing the new master key value....");
            }
            // The key-part flow starts committed: the vendor prints this line only in
            // the automated flow.
            Event::Rotation(RotationEvent::Committed) if self.flow == Flow::Auto => {
                self.line(COMMITTED_LINE);
            }
            Event::Rotation(RotationEvent::NoKeyStorage) => self.line(&format!(
                "Service instance {} has no key storage reachable from this workstation: only the master key registers are rotated.",
                self.instance
            )),
            Event::Rotation(RotationEvent::Reencrypting(r)) => self.reencrypting(r),
            Event::Rotation(RotationEvent::Rewrapped) => {
                let r = self
                    .reencryption
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(bar) = &r.bar {
                    bar.finish();
                }
                drop(r);
                self.line(REWRAPPED_LINE);
            }
            Event::Rotation(RotationEvent::SettingImmediate { units }) => self.line(&format!(
                "Setting the new master key value immediately in {units} crypto unit(s)...."
            )),
            // Generating and transferring the key: the lines auto-init prints.
            other => AutoPrinter { quiet: false }.event(other),
        }
    }
}

/// Runs `auto-mk-rotate`.
pub fn auto(ctx: &Ctx, a: &AutoArgs) -> Result<()> {
    run(ctx, Flow::Auto, a.instance, &a.args)
}

/// Runs `cryptounit-mk-rotate`.
pub fn key_parts(ctx: &Ctx, a: &Args) -> Result<()> {
    run(ctx, Flow::KeyParts, None, a)
}

fn run(ctx: &Ctx, flow: Flow, instance: Option<usize>, args: &Args) -> Result<()> {
    let fleet = ctx.connect()?;
    if !ctx.json {
        header(&fleet);
    }
    let client = &fleet.client;
    let units = match flow {
        Flow::Auto => {
            let instance = choose_instance(ctx, client, instance, "rotate the master key of")?;
            client.instance_units(&instance)
        }
        Flow::KeyParts => {
            let units = ctx.selected(&fleet)?;
            if units.is_empty() {
                bail!("no crypto units are selected: select every crypto unit of the service instance with `tke cryptounit-add` (see `tke cryptounits`)");
            }
            units
        }
    };
    let (named, flag) = signing::named(&args.signers.signer, &args.admin);
    let keys = signing::preference(ctx, &named, flag)?;
    let plan = match (Rotate {
        flow,
        units: units.clone(),
        keys: signing::admin_infos(&keys),
        resume: args.resume,
    })
    .plan(client)
    {
        Ok(plan) => plan,
        Err(e) => {
            if let Some(RotationProblem::NothingToResume { instance, why }) = only_rotation(&e) {
                if let Some(j) = open_journal(ctx, flow, instance)? {
                    // Every unit holds one current value (the plan found no rotation).
                    let current = client
                        .instance_units(instance)
                        .first()
                        .and_then(|u| client.query(u).ok())
                        .and_then(|s| s.current_register.vp);
                    let note = settle(j, current)?;
                    if !ctx.json {
                        println!("{note}");
                    }
                }
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &json!({ "instance": instance.0, "resumed_from": null })
                        )?
                    );
                } else {
                    println!("No master key rotation of service instance {instance} is under way: {why}.\nOK\nThere is nothing to resume.");
                }
                return Ok(());
            }
            let left = match interrupted_instance(&e) {
                Some(instance) => open_journal(ctx, flow, instance)?,
                None => None,
            };
            let e = hint(e, flow);
            return Err(match left {
                Some(j) => anyhow::anyhow!("{e}\nThe {}.", where_stopped(&j)),
                None => e,
            });
        }
    };
    // The journal an interrupted run left: checked against the units before anything is
    // asked; a stale one (the units show no rotation under way, or the one it records
    // finished: its new key is their current one) is settled after the confirmation.
    let left = open_journal(ctx, flow, plan.instance())?;
    let stale = match &left {
        Some(j) => {
            plan.stage() == &RotationStage::NotStarted || journal_to(j)? == Some(plan.from())
        }
        None => false,
    };
    let resuming = left.as_ref().filter(|_| !stale);
    let interrupted = resuming.map(stopped_json);
    let notes = match resuming {
        Some(j) => check_journal(j, &plan)?,
        None => Vec::new(),
    };

    let stage = plan.stage().clone();
    if !ctx.json {
        let signers: Vec<&tke_proto::AdminInfo> = plan.keys_needed().iter().collect();
        let rows = plan.units().iter().map(|(u, s)| (*u, s, signers.clone()));
        println!("{}", plan_table(rows));
        println!(
            "CURRENT MASTER KEY VERIFICATION PATTERN\n{}\n",
            vp_lines(Some(&plan.from()))
        );
        if let Some(to) = plan.to() {
            println!(
                "NEW MASTER KEY VERIFICATION PATTERN\n{}\n",
                vp_lines(Some(&to))
            );
        }
        match resuming {
            Some(j) => println!("The {}.", where_stopped(j)),
            None if plan.resumes() => println!(
                "{}",
                not_found(
                    &ctx.files,
                    flow.command(),
                    &plan.instance().0,
                    " and key storage"
                )
            ),
            None => {}
        }
        for note in &notes {
            println!("{note}");
        }
        if plan.resumes() {
            println!(
                "A master key rotation of service instance {} was interrupted: {stage}.\nIt is finished from there{}.\n",
                plan.instance(),
                match stage {
                    RotationStage::Generated { .. } => ", with the same new master key",
                    _ => "",
                }
            );
        }
    }
    let question = if plan.resumes() {
        "Finish the master key rotation of"
    } else {
        "Rotate the master key of"
    };
    if !ctx.prompt.confirm(
        &format!(
            "{question} service instance {} ({} crypto units) at {}? Key storage is re-encrypted under the new master key, then the new master key becomes current in every crypto unit.",
            plan.instance(),
            plan.units().len(),
            client.describe().join(", ")
        ),
        args.yes,
    )? {
        println!("Cancelled. No crypto unit was changed.");
        return Err(crate::Cancelled.into());
    }
    // The vendor's auto-* commands select the whole instance.
    if flow == Flow::Auto {
        ctx.save_selected(&units)?;
    }
    let needed: Vec<&tke_proto::AdminInfo> = plan.keys_needed().iter().collect();
    let opened = signing::open(ctx, &keys, &needed)?;
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s.as_ref()).collect();
    let signed_by = signing::names(needed.iter().copied());
    let names: Vec<String> = needed.iter().map(|k| k.name.to_string()).collect();
    let quiet = ctx.json;
    if flow == Flow::KeyParts && !quiet {
        println!("Master key rotation started.");
    }
    let printer = Printer {
        flow,
        instance: plan.instance().clone(),
        quiet,
        terminal: std::io::stderr().is_terminal(),
        reencryption: Mutex::default(),
    };
    let resumed = plan.resumes();
    let log = match left {
        Some(j) if !stale => JournalLog::resume(j),
        left => {
            if let Some(j) = left {
                let note = settle(j, Some(plan.from()))?;
                if !quiet {
                    println!("{note}");
                }
            }
            JournalLog::start(
                ctx,
                flow.command(),
                &plan.instance().0,
                RotateParams::of(&plan),
            )?
        }
    };
    let nums: Vec<usize> = plan.units().iter().map(|(u, _)| u.num).collect();
    let report = plan.execute_logged(&signers, &printer, &log).map_err(|e| {
        let advice = unreachable_storage(&e, &nums);
        log.stopped_with(
            anyhow::Error::new(e).context(
                "the master key rotation stopped before it finished; the crypto units and key storage hold what its steps reached (`tke cryptounit-mk` shows the registers)",
            ),
            advice.as_deref(),
        )
    })?;
    log.finish()?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "instance": report.instance.0,
                "units": report.units,
                "from": report.from.to_hex(),
                "to": report.to.to_hex(),
                "resumed_from": resumed.then(|| report.resumed_from.to_string()),
                "interrupted": interrupted,
                "key_storage": report.key_storage,
                "reencrypted": report.reencrypted.map(|p| json!({"done": p.done, "total": p.total})),
                "signed_by": names,
            }))?
        );
    } else {
        println!(
            "Signed by: {signed_by}\nOK\nMaster key rotation successful.\nEvery crypto unit of service instance {} holds the new master key as its current value and an empty new master key register; `tke cryptounit-compare` shows them.",
            report.instance
        );
    }
    Ok(())
}

/// What a rotation's journal records: the units, the recovery unit generating the key and
/// both verification patterns (the new one once known: at the start when the key was
/// loaded from parts, else with step `key-generated`). Never a secret.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateParams {
    /// Every unit of the instance, as UUIDs, in number order.
    units: Vec<String>,
    /// The recovery unit the new key is generated in or copied from (auto), as a UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The current master key's verification pattern, in hex.
    from: String,
    /// The new master key's verification pattern, in hex, when known at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
}

impl RotateParams {
    fn of(plan: &RotatePlan<'_>) -> Self {
        Self {
            units: plan.units().iter().map(|(u, _)| u.id().uuid()).collect(),
            source: plan.source().map(|u| u.id().uuid()),
            from: plan.from().to_hex(),
            to: plan.to().map(|vp| vp.to_hex()),
        }
    }
}

/// The journal of an interrupted rotation of `instance`: this flow's, else the other
/// flow's (an `auto-mk-rotate` can be finished by `cryptounit-mk-rotate --resume` once
/// the new key is committed everywhere, and the reverse).
fn open_journal(
    ctx: &Ctx,
    flow: Flow,
    instance: &InstanceId,
) -> Result<Option<Journal<RotateParams>>> {
    let other = match flow {
        Flow::Auto => Flow::KeyParts,
        Flow::KeyParts => Flow::Auto,
    };
    for f in [flow, other] {
        let left = Journal::open(&ctx.files, f.command(), &instance.0).map_err(|e| {
            anyhow::anyhow!(
                "{:#}\nA rotation needs no journal to be finished: with the file moved away, \
                 `tke {} --resume` finishes it from what the crypto units and key storage \
                 hold.",
                anyhow::Error::new(e),
                f.command()
            )
        })?;
        if let Some(j) = left {
            return Ok(Some(j));
        }
    }
    Ok(None)
}

/// The new master key's VP the journal records, if known; a bad value is an error naming
/// the journal.
fn journal_vp(j: &Journal<RotateParams>, field: &str, hex: Option<&str>) -> Result<Option<Vp>> {
    hex.map(|h| {
        Vp::from_hex(h).map_err(|_| {
            anyhow::anyhow!(
                "the journal {} is corrupt: {field} is not a 64-hex-digit verification pattern; \
                 it is left as it was: move it away (it holds no secret) and rerun with --resume",
                j.path().display()
            )
        })
    })
    .transpose()
}

/// The new VP the journal records.
fn journal_to(j: &Journal<RotateParams>) -> Result<Option<Vp>> {
    let to = journal_vp(j, "to", j.params().to.as_deref())?;
    let generated = journal_vp(j, steps::KEY_GENERATED, j.detail(steps::KEY_GENERATED))?;
    Ok(to.or(generated))
}

/// `0123456789abcdef...`.
fn short(vp: &Vp) -> String {
    format!("{}...", &vp.to_hex()[..16])
}

/// Checks the journal of an interrupted rotation against what the plan found: another
/// instance's units, another current or new key is refused; a journal that records more
/// than the units show is explained (the units are followed). Returns the explanations.
fn check_journal(j: &Journal<RotateParams>, plan: &RotatePlan<'_>) -> Result<Vec<String>> {
    let asked = &j.params().units;
    let units: Vec<String> = plan.units().iter().map(|(u, _)| u.id().uuid()).collect();
    let gone: Vec<&String> = asked.iter().filter(|u| !units.contains(u)).collect();
    let added: Vec<String> = plan
        .units()
        .iter()
        .filter(|(u, _)| !asked.contains(&u.id().uuid()))
        .map(|(u, _)| format!("{} ({})", u.num, u.id().uuid()))
        .collect();
    if !gone.is_empty() || !added.is_empty() {
        let mut why = Vec::new();
        if !gone.is_empty() {
            why.push(format!(
                "it records crypto unit(s) {} that are not in service instance {}",
                gone.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                plan.instance()
            ));
        }
        if !added.is_empty() {
            why.push(format!(
                "crypto unit(s) {} of the instance are not in it",
                added.join(", ")
            ));
        }
        return Err(not_this(j, &why.join(", and ")));
    }
    let from = journal_vp(j, "from", Some(&j.params().from))?;
    if from != Some(plan.from()) {
        return Err(not_this(
            j,
            &format!(
                "it records a rotation from the master key with verification pattern {}, and \
                 the crypto units' current master key is {}",
                from.as_ref().map_or_else(String::new, short),
                short(&plan.from())
            ),
        ));
    }
    if let (Some(recorded), Some(held)) = (journal_to(j)?, plan.to()) {
        if recorded != held {
            return Err(not_this(
                j,
                &format!(
                    "it records a rotation to the master key with verification pattern {}, and \
                     the crypto units' new master key registers hold {}",
                    short(&recorded),
                    short(&held)
                ),
            ));
        }
    }
    // How far each says the rotation went; the units may be ahead (a step done, the run
    // killed before recording it), never behind without someone else's change.
    let order = [
        steps::KEY_GENERATED,
        steps::KEY_TRANSFERRED,
        steps::KEY_COMMITTED,
        steps::REENCRYPTION_BEGUN,
        steps::REENCRYPTED,
        steps::SET_IMMEDIATE,
    ];
    let recorded = j
        .steps()
        .iter()
        .filter_map(|s| order.iter().position(|o| *o == s.step))
        .max();
    let reached = match plan.stage() {
        RotationStage::NotStarted => None,
        RotationStage::Generated { holding, total, .. } => {
            Some(if holding.len() == *total { 1 } else { 0 })
        }
        RotationStage::Committed { reencrypted: None } => Some(2),
        RotationStage::Committed { .. } => Some(3),
        RotationStage::Promoting { .. } => Some(4),
    };
    Ok(match recorded {
        Some(r) if reached.is_none_or(|u| r > u) => vec![format!(
            "The journal records step {} done, but {}: someone changed the crypto units or key \
             storage after the run stopped, or a crypto unit lost its state. The crypto units \
             and key storage are the truth: the rotation is finished from what they hold.",
            order[r],
            plan.stage()
        )],
        _ => Vec::new(),
    })
}

/// Removes the journal of a rotation the units show as over (`current`: their one
/// current value, when known): finished, with only the journal's removal missed, or
/// abandoned. Says which.
fn settle(j: Journal<RotateParams>, current: Option<Vp>) -> Result<String> {
    let to = journal_to(&j)?;
    let what = match (to, current) {
        (Some(to), Some(current)) if to != current => format!(
            "no crypto unit holds its new master key ({}) any more: the rotation was abandoned",
            short(&to)
        ),
        (None, _) => "it stopped before any crypto unit was changed".to_owned(),
        (Some(_), Some(_)) => "the crypto units show the rotation finished".to_owned(),
        (Some(_), None) => "the crypto units show no rotation under way".to_owned(),
    };
    let note = format!("The {}; {what}. The journal is removed.", where_stopped(&j));
    let path = j.path().to_owned();
    j.finish().map_err(|e| {
        anyhow::anyhow!(
            "the journal {} of an interrupted rotation cannot be removed ({e}): remove it by \
             hand; no crypto unit was changed",
            path.display()
        )
    })?;
    Ok(note)
}

/// What to do when the key storage stopped answering mid-rotation (its `tke-unitd`
/// killed, the network down): nothing is lost, and the server must be back first.
fn unreachable_storage(e: &CeremonyError, units: &[usize]) -> Option<String> {
    match e {
        CeremonyError::KeyStorage { instance, source }
            if matches!(source.as_ref(), tke_kms::KmsError::Transport(_)) =>
        {
            Some(format!(
                "The unit server that keeps the key storage of service instance {instance} \
                 stopped answering (named above). Nothing is lost: every record stays under \
                 the old or the new master key, both held by crypto units {} of the \
                 instance, and the rotation stays recorded in key storage (create, wrap and \
                 unwrap wait for it). Start that server again (`tke cryptounits` lists its \
                 crypto units once it answers).",
                units
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        _ => None,
    }
}

/// The instance of a rotation a plain run found under way.
fn interrupted_instance(e: &CeremonyError) -> Option<&InstanceId> {
    match e {
        CeremonyError::Problems(p) => p.iter().find_map(|p| match p {
            Problem::Rotation(r) => match r.as_ref() {
                RotationProblem::Interrupted { instance, .. } => Some(instance),
                _ => None,
            },
            _ => None,
        }),
        _ => None,
    }
}

/// The one rotation problem a plan was refused for, if that is all.
fn only_rotation(e: &CeremonyError) -> Option<&RotationProblem> {
    match e {
        CeremonyError::Problems(p) => match p.as_slice() {
            [Problem::Rotation(r)] => Some(r.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

/// A refused plan, with what the operator can do about it.
fn hint(e: CeremonyError, flow: Flow) -> anyhow::Error {
    let mut advice: Vec<String> = Vec::new();
    if let CeremonyError::Problems(problems) = &e {
        for p in problems {
            let Problem::Rotation(r) = p else { continue };
            match r.as_ref() {
                RotationProblem::Interrupted { stage, .. } => {
                    advice.push(format!(
                        "Finish it with `tke {} --resume`{}.",
                        flow.command(),
                        match (flow, stage) {
                            (Flow::Auto, RotationStage::Committed { .. } | RotationStage::Promoting { .. }) =>
                                " (or `tke cryptounit-mk-rotate --resume` with every crypto unit of the instance selected)",
                            _ => "",
                        }
                    ));
                }
                RotationProblem::NotCommitted { .. } => advice.push(
                    "If `tke auto-mk-rotate` generated the new master key, finish with `tke auto-mk-rotate --resume`; if it was loaded from master key parts, commit it in every crypto unit with `tke cryptounit-mk-commit`, then run `tke cryptounit-mk-rotate`."
                        .to_owned(),
                ),
                RotationProblem::NoCommonSigners { .. } => advice.push(
                    "Select the signature keys of administrators installed in every crypto unit with `tke sigkey-sel`, or name them with --signer NAME (repeatable); `tke cryptounit-admins` lists who is installed on each crypto unit."
                        .to_owned(),
                ),
                RotationProblem::ThresholdsDiffer { .. }
                | RotationProblem::CurrentValues { .. }
                | RotationProblem::NewValues { .. } => advice.push(
                    "Compare the crypto units with `tke cryptounit-compare`: a rotation needs them configured the same."
                        .to_owned(),
                ),
                RotationProblem::NoRecoveryUnit { .. } => advice.push(
                    "Rotate with master key parts instead: `tke cryptounit-mk-load`, `tke cryptounit-mk-commit`, then `tke cryptounit-mk-rotate`."
                        .to_owned(),
                ),
                _ => {}
            }
        }
        let new_register = |f: fn(RegisterState) -> bool| {
            problems.iter().any(|p| {
                matches!(p, Problem::Precondition { rule: Rule::NewRegister { found, .. }, .. } if f(*found))
            })
        };
        if flow == Flow::KeyParts && new_register(|s| s == RegisterState::FullUncommitted) {
            advice.push("Commit the new master key register of every crypto unit with `tke cryptounit-mk-commit`, then run `tke cryptounit-mk-rotate`.".to_owned());
        } else if flow == Flow::KeyParts && new_register(|s| s == RegisterState::Empty) {
            advice.push("Load the new master key from parts into every crypto unit of the instance with `tke cryptounit-mk-load`, commit it with `tke cryptounit-mk-commit`, then run `tke cryptounit-mk-rotate`.".to_owned());
        }
        if problems
            .iter()
            .any(|p| matches!(p, Problem::InstanceNotAllSelected { .. }))
        {
            advice.push("A rotation changes every crypto unit of the instance: select all of them with `tke cryptounit-add` (see `tke cryptounits`).".to_owned());
        }
    }
    advice.dedup();
    let e = crate::registers::hint(e);
    if advice.is_empty() {
        e
    } else {
        anyhow::anyhow!("{e}\n{}", advice.join("\n"))
    }
}
