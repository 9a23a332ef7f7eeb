//! `auto-recover` (`auto-mk-recover`): copy a recovery unit's current master key into the
//! units of an instance whose current register is empty — and, with `--to-instance ID`,
//! into the units of other instances of the fleet, which then share the key.
//!
//! The ceremony is [`tke_ceremony::AutoRecover`]: every check (a recovery unit holding a
//! key, targets out of imprint mode with the same thresholds, no unit holding another key,
//! enough common administrators whose keys may sign) runs before anything is asked. This
//! module picks the instance, prints the plan (which units receive the key, which were
//! left part-way by an interrupted run and where they resume), asks, opens the keys the
//! plan needs and prints the result.
//!
//! Each run keeps a journal in the workstation directory ([`RecoverParams`], the steps of
//! [`tke_ceremony::recover::steps`]): a rerun (with or without `--resume`) says from it
//! where the recovery stopped and checks it against the units, which stay the truth.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tke_ceremony::{AutoRecover, AutoRecoverPlan, CeremonyError, Problem, Rule, Stage};
use tke_client::InstanceId;
use tke_sigkey::Signer;
use tke_workstation::Journal;

use crate::{
    auto_init::{choose_instance, Printer},
    context::Ctx,
    journal::{not_found, not_this, stopped_json, where_stopped, JournalLog},
    registers::register,
    signing::{self, SignerArgs},
    table::Table,
    units::header,
};

/// Where `auto-recover` (and `tke plan auto-recover`) copies the key: `--instance`,
/// `--source`.
#[derive(clap::Args, Debug)]
pub struct Copy {
    /// The INSTANCE NUM of the service instance whose units receive the key (as listed
    /// when there are several).
    #[arg(long, value_name = "NUM", allow_negative_numbers = true,
          value_parser = |s: &str| crate::prompt::whole_number(s, "INSTANCE NUM"))]
    pub instance: Option<usize>,
    /// The CRYPTO UNIT NUM of the recovery unit to copy the key from. Default: the first
    /// recovery unit of the instance whose current master key register is Valid.
    #[arg(long, value_name = "NUM", allow_negative_numbers = true,
          value_parser = |s: &str| crate::prompt::whole_number(s, "CRYPTO UNIT NUM"))]
    pub source: Option<usize>,
}

/// The answers `auto-recover` takes as flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub copy: Copy,
    #[command(flatten)]
    pub signers: SignerArgs,
    /// The same as --signer.
    #[arg(long = "admin", value_name = "NAME")]
    pub admin: Vec<String>,
    /// Do not ask for confirmation before changing the crypto units.
    #[arg(long)]
    pub yes: bool,
    /// Finish an interrupted recovery. Running the command again does the same: where
    /// each unit stands is read from its registers.
    #[arg(long)]
    pub resume: bool,
    /// Copy the key into every crypto unit of this other service instance of the fleet as
    /// well (the INSTANCE ID `tke cryptounits` shows; repeat it for each instance): both
    /// instances then share one master key.
    #[arg(long = "to-instance", value_name = "INSTANCE-ID")]
    pub to_instance: Vec<String>,
    /// Copy the key into the units of this instance of --to-instance even though its key
    /// storage holds keys wrapped under another master key, which cannot be used until
    /// that master key is loaded back (repeat it for each instance).
    #[arg(long = "force-with-keys", value_name = "INSTANCE-ID")]
    pub force_with_keys: Vec<String>,
}

/// Runs `auto-recover`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let fleet = ctx.connect()?;
    if !ctx.json {
        header(&fleet);
    }
    let client = &fleet.client;
    let instance = choose_instance(ctx, client, args.copy.instance, "recover")?;
    for id in &args.force_with_keys {
        if !args.to_instance.contains(id) {
            bail!(
                "--force-with-keys {id:?}: it is not an instance of --to-instance; only the key storage of another instance receiving the master key is checked; nothing was changed"
            );
        }
    }
    let ids = |v: &[String]| v.iter().cloned().map(InstanceId).collect::<Vec<_>>();
    let (named, flag) = signing::named(&args.signers.signer, &args.admin);
    let preference = signing::preference(ctx, &named, flag)?;
    let plan = AutoRecover {
        instance: instance.clone(),
        source: args.copy.source,
        keys: signing::admin_infos(&preference),
        to_instances: ids(&args.to_instance),
        force_with_keys: ids(&args.force_with_keys),
    }
    .plan(client)
    .map_err(hint)?;
    // The other instances that receive the key, with their units that do.
    let mut others: Vec<(&InstanceId, Vec<usize>)> = Vec::new();
    for t in plan.targets() {
        if t.unit.instance() == &instance {
            continue;
        }
        match others.iter_mut().find(|(i, _)| *i == t.unit.instance()) {
            Some((_, nums)) => nums.push(t.unit.num),
            None => others.push((t.unit.instance(), vec![t.unit.num])),
        }
    }
    let left: Option<Journal<RecoverParams>> = Journal::open(&ctx.files, COMMAND, &instance.0)
        .map_err(|e| {
            anyhow::anyhow!(
                "{:#}\nA recovery needs no journal to be finished: with the file moved away, \
                 `tke auto-recover` finishes it from what the crypto units hold.",
                anyhow::Error::new(e)
            )
        })?;
    let notes = match &left {
        Some(j) => check_journal(j, &plan)?,
        None => Vec::new(),
    };
    let interrupted = left.as_ref().map(stopped_json);

    let source = plan.source();
    let vp = plan.vp().to_hex();
    let resumed: Vec<usize> = plan
        .targets()
        .iter()
        .filter(|t| t.stage.resumed())
        .map(|t| t.unit.num)
        .collect();
    if !ctx.json {
        let mut t = Table::new(&[
            "CRYPTO UNIT NUM",
            "TYPE",
            "NEW MASTER KEY REGISTER",
            "CURRENT MASTER KEY REGISTER",
            "ACTION",
        ]);
        let mut rows: Vec<(usize, Vec<String>)> = Vec::new();
        let row = |u: &tke_client::KnownUnit, s: &tke_proto::UnitStatus, action: &str| {
            (
                u.num,
                vec![
                    u.num.to_string(),
                    u.unit_type().label().to_owned(),
                    register(&s.new_register),
                    register(&s.current_register),
                    action.to_owned(),
                ],
            )
        };
        rows.push(row(
            source,
            plan.source_status(),
            "copy the master key from it",
        ));
        for target in plan.targets() {
            let action = match target.stage {
                Stage::Transfer => "receive the master key",
                Stage::Commit => "resume: commit, set immediate",
                Stage::SetImmediate => "resume: set immediate",
            };
            let action = if target.unit.instance() == &instance {
                action.to_owned()
            } else {
                format!("{action} (service instance {})", target.unit.instance())
            };
            rows.push(row(target.unit, &target.status, &action));
        }
        for (u, s) in plan.holding() {
            rows.push(row(u, s, "holds the master key: left alone"));
        }
        rows.sort_by_key(|(n, _)| *n);
        for (_, r) in rows {
            t.row(r);
        }
        println!("{}", t.render());
        println!(
            "SOURCE: recovery crypto unit {}, verification pattern\n{}\n",
            source.num,
            crate::table::vp_lines(Some(&plan.vp()))
        );
        match &left {
            Some(j) => {
                println!("The {}.", where_stopped(j));
                for note in &notes {
                    println!("{note}");
                }
                println!();
            }
            None if !resumed.is_empty() => {
                println!("{}", not_found(&ctx.files, COMMAND, &instance.0, ""));
            }
            None => {}
        }
        if !resumed.is_empty() {
            println!(
                "Resuming an interrupted recovery: crypto unit(s) {} already hold the master key in their new register.\n",
                join(&resumed)
            );
        } else if args.resume && left.is_none() {
            println!(
                "No interrupted recovery was found: the units are recovered from the start.\n"
            );
        }
    }

    let targets: Vec<usize> = plan.targets().iter().map(|t| t.unit.num).collect();
    let unchanged: Vec<usize> = plan.holding().iter().map(|(u, _)| u.num).collect();
    if targets.is_empty() {
        if let Some(j) = left {
            // Every target holds the key: the run that left it finished but for this.
            let path = j.path().to_owned();
            j.finish().map_err(|e| {
                anyhow::anyhow!(
                    "the journal {} of a finished recovery cannot be removed ({e}): remove it \
                     by hand",
                    path.display()
                )
            })?;
            if !ctx.json {
                println!("The recovery it records is finished: its journal is removed.");
            }
        }
        if ctx.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "instance": instance.0,
                    "source": source.num,
                    "vp": vp,
                    "recovered": targets,
                    "unchanged": unchanged,
                    "resumed": resumed,
                    "to_instances": Vec::<String>::new(),
                    "interrupted": interrupted,
                    "signed_by": Vec::<String>::new(),
                }))?
            );
        } else {
            let mut all = vec![instance.to_string()];
            all.extend(args.to_instance.iter().cloned());
            println!(
                "OK\nEvery crypto unit of service instance {} holds the master key of recovery crypto unit {}: there is nothing to recover.",
                all.join(" and of service instance "),
                source.num
            );
        }
        return Ok(());
    }

    let own: Vec<usize> = plan
        .targets()
        .iter()
        .filter(|t| t.unit.instance() == &instance)
        .map(|t| t.unit.num)
        .collect();
    let mut into = Vec::new();
    if !own.is_empty() {
        into.push(format!(
            "crypto unit(s) {} of service instance {instance}",
            join(&own)
        ));
    }
    // Said plainly: another instance ends up sharing this instance's master key.
    for (other, nums) in &others {
        into.push(format!(
            "crypto unit(s) {} of ANOTHER service instance, {other}, which will then share the master key of service instance {instance}",
            join(nums)
        ));
    }
    if !ctx.prompt.confirm(
        &format!(
            "Copy the master key of recovery crypto unit {} into {} at {}?",
            source.num,
            into.join(", and "),
            client.describe().join(", ")
        ),
        args.yes,
    )? {
        println!("Cancelled. No crypto unit was changed.");
        return Err(crate::Cancelled.into());
    }
    // The vendor's auto-* commands select the whole instance; done before acting, so that
    // after an interruption `cryptounit-compare` shows exactly these units.
    let mut selected = client.instance_units(&instance);
    for (other, _) in &others {
        selected.extend(client.instance_units(other));
    }
    ctx.save_selected(&selected)?;

    let needed: Vec<tke_proto::AdminInfo> = plan.keys_needed().into_iter().cloned().collect();
    let refs: Vec<&tke_proto::AdminInfo> = needed.iter().collect();
    let opened = signing::open(ctx, &preference, &refs)?;
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s.as_ref()).collect();
    let log = match left {
        Some(j) => JournalLog::resume(j),
        None => JournalLog::start(ctx, COMMAND, &instance.0, RecoverParams::of(&plan))?,
    };
    let report = plan
        .execute_logged(&signers, &Printer { quiet: ctx.json }, &log)
        .map_err(|e| {
            log.stopped(signing::partly_failed(
                e,
                COMMAND,
                "changed",
                "`tke cryptounit-mk`",
            ))
        })?;
    log.finish()?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "instance": report.instance.0,
                "source": report.source,
                "vp": report.vp.to_hex(),
                "recovered": report.recovered,
                "unchanged": report.unchanged,
                "resumed": resumed,
                "to_instances": others.iter().map(|(i, _)| i.0.as_str()).collect::<Vec<_>>(),
                "interrupted": interrupted,
                "signed_by": needed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!(
            "Signed by: {}\n\nOK\nThe master key of recovery crypto unit {} is current in crypto unit(s) {}.\nTo see the master key registers of every unit, use the 'tke cryptounit-compare' command.",
            signing::names(&needed),
            report.source,
            join(&report.recovered)
        );
    }
    Ok(())
}

/// The command, which names its journal.
const COMMAND: &str = "auto-recover";

/// What a recovery's journal records: the recovery unit copied from, the key's
/// verification pattern and the units it is copied into. Never a secret.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverParams {
    /// The recovery unit, as a UUID.
    source: String,
    /// The master key's verification pattern, in hex.
    vp: String,
    /// The units the key is copied into, as UUIDs.
    targets: Vec<String>,
}

impl RecoverParams {
    fn of(plan: &AutoRecoverPlan<'_>) -> Self {
        Self {
            source: plan.source().id().uuid(),
            vp: plan.vp().to_hex(),
            targets: plan.targets().iter().map(|t| t.unit.id().uuid()).collect(),
        }
    }
}

/// Refuses the journal of another recovery: another source or key, or targets that are
/// no longer units of the instance. Targets that now hold the key were finished; new ones
/// are recovered too (the plan checked them), which the returned note says.
fn check_journal(j: &Journal<RecoverParams>, plan: &AutoRecoverPlan<'_>) -> Result<Vec<String>> {
    let p = j.params();
    let source = plan.source();
    if p.source != source.id().uuid() {
        return Err(not_this(
            j,
            &format!(
                "it records a recovery from crypto unit {}, and this one copies from recovery \
                 crypto unit {} ({})",
                p.source,
                source.num,
                source.id().uuid()
            ),
        ));
    }
    if !p.vp.eq_ignore_ascii_case(&plan.vp().to_hex()) {
        return Err(not_this(
            j,
            &format!(
                "it records a recovery of the master key with verification pattern {}..., \
                 and recovery crypto unit {} holds {}...",
                p.vp.get(..16).unwrap_or(&p.vp),
                source.num,
                &plan.vp().to_hex()[..16]
            ),
        ));
    }
    let known: Vec<String> = plan
        .targets()
        .iter()
        .map(|t| t.unit.id().uuid())
        .chain(plan.holding().iter().map(|(u, _)| u.id().uuid()))
        .collect();
    let gone: Vec<&str> = p
        .targets
        .iter()
        .filter(|t| !known.contains(t))
        .map(String::as_str)
        .collect();
    if !gone.is_empty() {
        return Err(not_this(
            j,
            &format!(
                "it records crypto unit(s) {} as targets, which are not units of service \
                 instance {} able to receive the key",
                gone.join(", "),
                j.instance()
            ),
        ));
    }
    let added: Vec<usize> = plan
        .targets()
        .iter()
        .filter(|t| !p.targets.contains(&t.unit.id().uuid()))
        .map(|t| t.unit.num)
        .collect();
    Ok(if added.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "Crypto unit(s) {} need the master key too and are not in the journal of the \
             interrupted recovery (their current master key register was emptied since): \
             they receive it as well.",
            join(&added)
        )]
    })
}

/// `1, 2, 5`.
fn join(nums: &[usize]) -> String {
    nums.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A refused plan, with what the operator can do about it.
fn hint(e: CeremonyError) -> anyhow::Error {
    let mut advice = Vec::new();
    if let CeremonyError::Problems(problems) = &e {
        let rule = |f: fn(&Rule) -> bool| {
            problems
                .iter()
                .any(|p| matches!(p, Problem::Precondition { rule, .. } if f(rule)))
        };
        if rule(|r| matches!(r, Rule::ImprintMode)) {
            advice.push("Bring each unit in imprint mode out of it with the instance's administrators and thresholds first: select only those units (`tke cryptounit-rm`, `tke cryptounit-add`), install each administrator (`tke cryptounit-admin-add`), then set the thresholds (`tke cryptounit-thrhld-set`).");
        }
        if rule(|r| matches!(r, Rule::ThresholdsDiffer { .. })) {
            advice.push("Set the same thresholds on every crypto unit of the instance with `tke cryptounit-thrhld-set` (`tke cryptounit-compare` shows them).");
        }
        if rule(|r| matches!(r, Rule::OtherNewValue { .. })) {
            advice.push("Clear the new master key register of those units first (`tke cryptounit-mk-clrnew` with only them selected).");
        }
        if rule(|r| matches!(r, Rule::OtherMasterKey { .. })) {
            advice.push("A unit that holds another master key is never overwritten: compare the keys with `tke cryptounit-mk`. If that unit's key protects nothing, zeroize it (`tke cryptounit-zeroize`), bring it out of imprint mode again and rerun `tke auto-recover`.");
        }
        if rule(|r| matches!(r, Rule::OtherFleetCa { .. })) {
            advice.push("A master key moves only between crypto units certified by one fleet CA: leave that instance out of --to-instance.");
        }
        if problems.iter().any(|p| {
            matches!(
                p,
                Problem::KeysUnderAnotherMasterKey { .. } | Problem::KeyStorageUnreadable { .. }
            )
        }) {
            advice.push("Keys wrapped under another master key stay unusable until that master key is loaded back into their instance. To copy the master key into it anyway, give --force-with-keys INSTANCE-ID for that instance.");
        }
        if problems
            .iter()
            .any(|p| matches!(p, Problem::NoCommonQuorum { .. }))
        {
            advice.push("Select the signature keys of enough administrators installed on every unit with `tke sigkey-sel`, or name them with --signer NAME (repeatable); `tke cryptounit-admins` lists who is installed where.");
        }
    }
    if advice.is_empty() {
        e.into()
    } else {
        anyhow::anyhow!("{e}\n{}", advice.join("\n"))
    }
}
