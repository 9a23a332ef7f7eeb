//! Administrators and thresholds of the selected crypto units: `cryptounit-admins`,
//! `cryptounit-thrhlds` (read), `cryptounit-admin-add`, `cryptounit-admin-rm`,
//! `cryptounit-thrhld-set` and the deprecated `cryptounit-exit-impr`.
//!
//! The changes are [`tke_ceremony::AdminChange`] ceremonies: the plan queries every unit
//! and replays its rules, so every refusal (8 administrators already, an administrator
//! installed or missing, a removal below a threshold, thresholds above the number of
//! administrators, too few installed keys that may sign) is reported before any password
//! is asked or any command sent. This module picks the key or administrator, asks the
//! thresholds, prints the plan and who signs on each unit, opens only the keys the plan
//! needs, and prints who signed.

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_ceremony::{AdminChange, Change};
use tke_client::{fanout::parallel, ClientError, KnownUnit};
use tke_proto::{AdminInfo, Threshold, UnitStatus};
use tke_sigkey::Signer;

use crate::{
    auto_init::thresholds,
    context::{Ctx, Fleet},
    prompt::parse_numbers,
    sigkeys::{admin_info, keynum_by_name, list, print_table},
    signing::{self, SignerArgs},
    table::Table,
    units::{
        admin_cells, admins_json, by_instance, header, require_selected, threshold_cells,
        thresholds_json, unit_json, unreachable_units, ADMIN_HEADERS, THRESHOLD_HEADERS,
    },
};

/// What a read command shows of each unit.
#[derive(Clone, Copy)]
pub enum View {
    /// `cryptounit-admins`: name and SKI of every installed administrator.
    Admins,
    /// `cryptounit-thrhlds`: both thresholds (0/0 is imprint mode).
    Thresholds,
}

/// Shows `view` of every selected unit, grouped by service instance, or as JSON. Units
/// that cannot be queried, and targets that cannot be reached, are named on standard
/// error after what could be shown, and the command fails: a partial listing never passes
/// for the whole selection.
pub fn show(ctx: &Ctx, view: View) -> Result<()> {
    let (fleet, down) = ctx.connect_reachable()?;
    let units = require_selected(ctx, &fleet)?;
    let mut rows: Vec<(&KnownUnit, UnitStatus)> = Vec::new();
    let mut failed: Vec<(usize, ClientError)> = Vec::new();
    for (u, s) in units
        .iter()
        .zip(parallel(&units, |u| fleet.client.query(u)))
    {
        match s {
            Ok(s) => rows.push((*u, s)),
            Err(e) => failed.push((u.num, e)),
        }
    }
    if ctx.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(u, s)| {
                let mut v = unit_json(u);
                match view {
                    View::Admins => {
                        v.insert("admins".into(), admins_json(s));
                    }
                    View::Thresholds => v.extend(thresholds_json(s)),
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        header(&fleet);
        match view {
            View::Admins => by_instance(&rows, &ADMIN_HEADERS, &admin_cells),
            View::Thresholds => by_instance(&rows, &THRESHOLD_HEADERS, &threshold_cells),
        }
    }
    unreachable_units(&down, &failed)
}

/// `cryptounit-admin-add` flags.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// Install the signature key of this administrator (see `tke sigkeys`; asked for by
    /// KEYNUM when omitted). Its password is asked: the key must open and sign before it
    /// becomes an administrator.
    #[arg(long = "admin", value_name = "NAME")]
    pub admin: Option<String>,
    #[command(flatten)]
    pub signers: SignerArgs,
}

/// `cryptounit-admin-rm` flags.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Remove this administrator (see `tke cryptounit-admins`; asked for from the
    /// installed list when omitted).
    #[arg(long = "admin", value_name = "NAME")]
    pub admin: Option<String>,
    #[command(flatten)]
    pub signers: SignerArgs,
}

/// `cryptounit-thrhld-set` flags.
#[derive(clap::Args, Debug)]
pub struct ThresholdArgs {
    /// Signatures required on commands (1-8, at most the number of installed
    /// administrators; at least 2 for dual control).
    #[arg(long, value_name = "N")]
    pub sig_threshold: Option<u32>,
    /// Signatures required to remove an administrator (1-8, at most the number of
    /// installed administrators).
    #[arg(long, value_name = "N")]
    pub rev_threshold: Option<u32>,
    #[command(flatten)]
    pub signers: SignerArgs,
}

/// `cryptounit-exit-impr` flags.
#[derive(clap::Args, Debug)]
pub struct ExitArgs {
    #[command(flatten)]
    pub signers: SignerArgs,
}

/// `cryptounit-admin-add`: installs one administrator in every selected unit.
pub fn add(ctx: &Ctx, args: &AddArgs) -> Result<()> {
    let fleet = ctx.connect()?;
    let units = start(ctx, &fleet)?;
    let entries = list(ctx)?;
    if entries.is_empty() {
        bail!(
            "no signature keys were found in {}; create one with `tke sigkey-add`",
            ctx.files.path().display()
        );
    }
    let keynum = match &args.admin {
        Some(name) => keynum_by_name(ctx, &entries, name, "create one with `tke sigkey-add`")?,
        None => {
            if ctx.prompt.interactive() && !ctx.json {
                print_table(&entries, &ctx.files.load_selection()?.sigkeys);
                println!();
            }
            ask_one(
                ctx,
                "Enter the KEYNUM of the signature key to install as an administrator:",
                entries.len(),
                "KEYNUM",
            )?
        }
    };
    let entry = &entries[keynum - 1];
    let change = Change::Add(entry.certificate.clone());
    let done = run_change(ctx, &fleet, units, change, &args.signers, &|| {
        // The vendor asks the new administrator's password first: the key must open and
        // sign, or the units would trust a key that can never sign for them.
        let key = ctx.open_signer(entry)?;
        tke_sigkey::check_usable(key.as_ref()).with_context(|| {
            format!(
                "the signature key of {} cannot sign; it was not installed",
                entry.name
            )
        })?;
        Ok(())
    })?;
    done.finish(
        ctx,
        json!({"added": {"name": entry.name.as_str(), "ski": entry.ski.to_hex()}}),
        &format!(
            "Administrator {} ({}) is installed in the selected crypto units.",
            entry.name,
            entry.ski.short()
        ),
    )
}

/// `cryptounit-admin-rm`: removes one administrator from every selected unit.
pub fn rm(ctx: &Ctx, args: &RmArgs) -> Result<()> {
    let fleet = ctx.connect()?;
    let units = start(ctx, &fleet)?;
    // Who is installed where, to choose from; a unit that cannot be queried is named by
    // the plan.
    let mut installed: Vec<(AdminInfo, Vec<usize>)> = Vec::new();
    for (u, s) in units
        .iter()
        .zip(parallel(&units, |u| fleet.client.query(u)))
    {
        for a in s.map(|s| s.admins).unwrap_or_default() {
            match installed.iter_mut().find(|(b, _)| b.ski == a.ski) {
                Some((_, nums)) => nums.push(u.num),
                None => installed.push((a, vec![u.num])),
            }
        }
    }
    let admin = match &args.admin {
        Some(name) => installed_by_name(ctx, &installed, name)?,
        None => {
            if installed.is_empty() {
                bail!("no administrators are installed in the selected crypto units (see `tke cryptounit-admins`); nothing was changed");
            }
            if ctx.prompt.interactive() && !ctx.json {
                let mut t = Table::new(&[
                    "ADMIN NUM",
                    "ADMIN NAME",
                    "SUBJECT KEY IDENTIFIER",
                    "CRYPTO UNITS",
                ]);
                for (i, (a, nums)) in installed.iter().enumerate() {
                    t.row(vec![
                        (i + 1).to_string(),
                        a.name.to_string(),
                        a.ski.short(),
                        nums.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]);
                }
                println!("{}", t.render());
            }
            let n = ask_one(
                ctx,
                "Enter the ADMIN NUM of the administrator to remove:",
                installed.len(),
                "ADMIN NUM",
            )?;
            installed[n - 1].0.clone()
        }
    };
    let done = run_change(
        ctx,
        &fleet,
        units,
        Change::Remove(admin.clone()),
        &args.signers,
        &|| Ok(()),
    )?;
    done.finish(
        ctx,
        json!({"removed": {"name": admin.name.as_str(), "ski": admin.ski.to_hex()}}),
        &format!(
            "Administrator {} ({}) is removed from the selected crypto units.",
            admin.name,
            admin.ski.short()
        ),
    )
}

/// The selected units of a change; shows which fleet it changes first, before any
/// question.
pub fn start<'f>(ctx: &Ctx, fleet: &'f Fleet) -> Result<Vec<&'f KnownUnit>> {
    let units = require_selected(ctx, fleet)?;
    if !ctx.json {
        header(fleet);
    }
    Ok(units)
}

/// Asks for one `what` (1 to `max`), which `--admin NAME` answers in scripts.
fn ask_one(ctx: &Ctx, question: &str, max: usize, what: &str) -> Result<usize> {
    let n = ctx.prompt.ask(question, "--admin NAME", |s| {
        match parse_numbers(s, max, what)?.as_slice() {
            [n] => Ok(*n),
            _ => bail!("enter one {what}"),
        }
    })?;
    if !ctx.json {
        println!();
    }
    Ok(n)
}

/// The administrator `--admin NAME` names: installed under that name on a selected unit,
/// else the workstation's key of that name (which the plan then finds not installed).
fn installed_by_name(
    ctx: &Ctx,
    installed: &[(AdminInfo, Vec<usize>)],
    name: &str,
) -> Result<AdminInfo> {
    let named: Vec<&AdminInfo> = installed
        .iter()
        .map(|(a, _)| a)
        .filter(|a| a.name.as_str() == name)
        .collect();
    match named.as_slice() {
        [a] => Ok((*a).clone()),
        [] => match list(ctx)?.iter().find(|e| e.name.as_str() == name) {
            Some(e) => Ok(admin_info(e)),
            None => bail!("--admin {name:?}: no administrator of that name is installed in the selected crypto units (see `tke cryptounit-admins`); nothing was changed"),
        },
        several => bail!(
            "--admin {name:?}: administrators with different keys have that name on the selected crypto units ({}); select the units of one of them with `tke cryptounit-rm` and `tke cryptounit-add`; nothing was changed",
            several.iter().map(|a| a.ski.short()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `cryptounit-thrhld-set`: sets both thresholds on every selected unit.
pub fn set_thresholds(ctx: &Ctx, args: &ThresholdArgs) -> Result<()> {
    let fleet = ctx.connect()?;
    let units = start(ctx, &fleet)?;
    let quiet = ctx.json;
    let say = |s: &str| {
        if !quiet {
            println!("{s}");
        }
    };
    for (flag, n) in [
        ("--sig-threshold", args.sig_threshold),
        ("--rev-threshold", args.rev_threshold),
    ] {
        if n == Some(0) {
            bail!("{flag} 0: a threshold of 0 is imprint mode, to which a crypto unit returns only when zeroized (`tke cryptounit-zeroize`); choose a number between 1 and 8");
        }
    }
    let (signature, revocation) = thresholds(ctx, args.sig_threshold, args.rev_threshold, &say)?;
    if args.sig_threshold.is_none() || args.rev_threshold.is_none() {
        say("");
    }
    let change = Change::Thresholds {
        signature,
        revocation,
    };
    let done = run_change(ctx, &fleet, units, change, &args.signers, &|| Ok(()))?;
    let leaving = done.left_imprint_mode();
    done.finish(
        ctx,
        json!({"sig_threshold": signature.get(), "rev_threshold": revocation.get(), "left_imprint_mode": leaving}),
        &format!(
            "The signature threshold is {signature} and the revocation signature threshold {revocation} on the selected crypto units.{}",
            left_message(&leaving)
        ),
    )
}

/// `cryptounit-exit-impr` (deprecated): leaves imprint mode with both thresholds 1.
pub fn exit_imprint_mode(ctx: &Ctx, args: &ExitArgs) -> Result<()> {
    eprintln!("Warning: cryptounit-exit-impr is deprecated: it sets both thresholds to 1, which gives one administrator control of the crypto units. Use `tke cryptounit-thrhld-set`, which sets the signature and revocation thresholds you choose (at least 2 for dual control).");
    let fleet = ctx.connect()?;
    let units = start(ctx, &fleet)?;
    let one = Threshold::new(1)?;
    let change = Change::LeaveImprintMode {
        signature: one,
        revocation: one,
    };
    let done = run_change(ctx, &fleet, units, change, &args.signers, &|| Ok(()))?;
    let leaving = done.left_imprint_mode();
    done.finish(
        ctx,
        json!({"sig_threshold": 1, "rev_threshold": 1, "left_imprint_mode": leaving}),
        &format!(
            "Both thresholds are 1 on the selected crypto units.{}",
            left_message(&leaving)
        ),
    )
}

fn left_message(units: &[usize]) -> String {
    if units.is_empty() {
        String::new()
    } else {
        let nums: Vec<String> = units.iter().map(ToString::to_string).collect();
        format!(" Crypto unit(s) {} left imprint mode.", nums.join(", "))
    }
}

/// A change that ran: what is printed after it.
struct Done {
    /// Per unit: its number, whether the change takes it out of imprint mode, and who
    /// signed.
    units: Vec<(usize, bool, Vec<AdminInfo>)>,
    /// Whether any command was sent.
    sent: bool,
    /// Every administrator who signed, each once.
    signed_by: Vec<AdminInfo>,
}

impl Done {
    /// The units the change took out of imprint mode.
    fn left_imprint_mode(&self) -> Vec<usize> {
        self.units
            .iter()
            .filter(|(_, imprint, _)| *imprint)
            .map(|(n, _, _)| *n)
            .collect()
    }

    /// Prints the result: `extra` fields in JSON, or who signed, `OK` and `message`.
    fn finish(self, ctx: &Ctx, extra: serde_json::Value, message: &str) -> Result<()> {
        if ctx.json {
            let mut v = json!({
                "units": self.units.iter().map(|(n, _, by)| json!({
                    "num": n,
                    "signed_by": by.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "signed_by": self.signed_by.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            });
            if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if self.sent {
            println!(
                "Signed by: {}\nOK\n{message}",
                signing::names(&self.signed_by)
            );
        } else {
            println!("OK\nThe selected crypto units hold this already; nothing was sent.");
        }
        Ok(())
    }
}

/// Plans `change` on `units` (every problem before anything is asked or sent), shows the
/// plan, runs `before_signers` (a password the command asks first), opens the keys the
/// plan needs and runs it.
fn run_change(
    ctx: &Ctx,
    fleet: &Fleet,
    units: Vec<&KnownUnit>,
    change: Change,
    signer_args: &SignerArgs,
    before_signers: &dyn Fn() -> Result<()>,
) -> Result<Done> {
    let client = &fleet.client;
    let preference = signing::preference(ctx, &signer_args.signer, "--signer")?;
    let plan = AdminChange {
        units,
        change,
        keys: signing::admin_infos(&preference),
    }
    .plan(client)
    .map_err(signing::hint)?;
    if !ctx.json {
        let mut t = Table::new(&[
            "CRYPTO UNIT NUM",
            "TYPE",
            "THRESHOLDS",
            "ADMINISTRATORS",
            "SIGNED BY",
        ]);
        for (u, c) in plan.plan().units().iter().zip(plan.changes()) {
            let s = &c.status;
            t.row(vec![
                u.unit.num.to_string(),
                u.unit.unit_type().label().to_owned(),
                if s.imprint_mode() {
                    "0/0 (imprint mode)".to_owned()
                } else {
                    format!("{}/{}", s.sig_threshold, s.rev_threshold)
                },
                admin_cells(s).swap_remove(0),
                if c.steps.is_empty() {
                    "(nothing to change)".to_owned()
                } else {
                    signing::names(u.signed_by())
                },
            ]);
        }
        println!("{}", t.render());
    }
    before_signers()?;
    let opened = signing::open(ctx, &preference, &plan.keys_needed())?;
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s.as_ref()).collect();
    let done = Done {
        units: plan
            .plan()
            .units()
            .iter()
            .zip(plan.changes())
            .map(|(u, c)| {
                let left = c.status.imprint_mode() && c.expected.sig_threshold > 0;
                (
                    u.unit.num,
                    left,
                    u.signed_by().into_iter().cloned().collect(),
                )
            })
            .collect(),
        sent: plan.changes().iter().any(|c| !c.steps.is_empty()),
        signed_by: plan.keys_needed().into_iter().cloned().collect(),
    };
    let step = plan.plan().step();
    plan.execute(&signers).map_err(|e| {
        signing::partly_failed(
            e,
            step,
            "changed",
            "`tke cryptounit-admins` and `tke cryptounit-thrhlds`",
        )
    })?;
    Ok(done)
}
