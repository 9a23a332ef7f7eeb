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

use std::{
    io::{IsTerminal as _, Write as _},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tke_ceremony::{
    CeremonyError, Event, Flow, Problem, Progress, Rotate, RotationEvent, RotationProblem,
    RotationStage, Rule,
};
use tke_client::InstanceId;
use tke_kms::ProgressReport;
use tke_proto::RegisterState;
use tke_sigkey::Signer;

use crate::{
    auto_init::{choose_instance, Printer as AutoPrinter},
    context::Ctx,
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
            return Err(hint(e, flow));
        }
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
    let report = plan.execute(&signers, &printer).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "the master key rotation stopped before it finished; the crypto units and key storage hold what its steps reached: `tke {} --resume` finishes it from there (`tke cryptounit-mk` shows the registers)",
            flow.command()
        ))
    })?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "instance": report.instance.0,
                "units": report.units,
                "from": report.from.to_hex(),
                "to": report.to.to_hex(),
                "resumed_from": resumed.then(|| report.resumed_from.to_string()),
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
