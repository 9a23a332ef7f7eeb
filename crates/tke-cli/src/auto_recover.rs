//! `auto-recover` (`auto-mk-recover`): copy a recovery unit's current master key into the
//! units of an instance whose current register is empty.
//!
//! The ceremony is [`tke_ceremony::AutoRecover`]: every check (a recovery unit holding a
//! key, targets out of imprint mode with the same thresholds, no unit holding another key,
//! enough common administrators whose keys may sign) runs before anything is asked. This
//! module picks the instance, prints the plan (which units receive the key, which were
//! left part-way by an interrupted run and where they resume), asks, opens the keys the
//! plan needs and prints the result.

use anyhow::Result;
use serde_json::json;
use tke_ceremony::{AutoRecover, CeremonyError, Problem, Rule, Stage};
use tke_sigkey::Signer;

use crate::{
    auto_init::{choose_instance, Printer},
    context::Ctx,
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
}

/// Runs `auto-recover`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let fleet = ctx.connect()?;
    if !ctx.json {
        header(&fleet);
    }
    let client = &fleet.client;
    let instance = choose_instance(ctx, client, args.copy.instance, "recover")?;
    let (named, flag) = signing::named(&args.signers.signer, &args.admin);
    let preference = signing::preference(ctx, &named, flag)?;
    let plan = AutoRecover {
        instance: instance.clone(),
        source: args.copy.source,
        keys: signing::admin_infos(&preference),
    }
    .plan(client)
    .map_err(hint)?;

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
            rows.push(row(target.unit, &target.status, action));
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
        if !resumed.is_empty() {
            println!(
                "Resuming an interrupted recovery: crypto unit(s) {} already hold the master key in their new register.\n",
                join(&resumed)
            );
        } else if args.resume {
            println!(
                "No interrupted recovery was found: the units are recovered from the start.\n"
            );
        }
    }

    let targets: Vec<usize> = plan.targets().iter().map(|t| t.unit.num).collect();
    let unchanged: Vec<usize> = plan.holding().iter().map(|(u, _)| u.num).collect();
    if targets.is_empty() {
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
                    "signed_by": Vec::<String>::new(),
                }))?
            );
        } else {
            println!(
                "OK\nEvery crypto unit of service instance {instance} holds the master key of recovery crypto unit {}: there is nothing to recover.",
                source.num
            );
        }
        return Ok(());
    }

    if !ctx.prompt.confirm(
        &format!(
            "Copy the master key of recovery crypto unit {} into crypto unit(s) {} of service instance {instance} at {}?",
            source.num,
            join(&targets),
            client.describe().join(", ")
        ),
        args.yes,
    )? {
        println!("Cancelled. No crypto unit was changed.");
        return Err(crate::Cancelled.into());
    }
    // The vendor's auto-* commands select the whole instance; done before acting, so that
    // after an interruption `cryptounit-compare` shows exactly these units.
    ctx.save_selected(&client.instance_units(&instance))?;

    let needed: Vec<tke_proto::AdminInfo> = plan.keys_needed().into_iter().cloned().collect();
    let refs: Vec<&tke_proto::AdminInfo> = needed.iter().collect();
    let opened = signing::open(ctx, &preference, &refs)?;
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s.as_ref()).collect();
    let report = plan
        .execute(&signers, &Printer { quiet: ctx.json })
        .map_err(|e| {
            signing::partly_failed(
                e,
                "auto-recover",
                "changed",
                "`tke cryptounit-mk`; run `tke auto-recover` again to finish",
            )
        })?;
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
