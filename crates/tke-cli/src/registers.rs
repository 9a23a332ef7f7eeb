//! `cryptounit-mk-commit`, `cryptounit-mk-setimm`, `cryptounit-mk-clrnew`,
//! `cryptounit-mk-clrcur`: one master key register command on every selected unit.
//!
//! The ceremony is [`tke_ceremony::MkRegister`] on the shared plan: every unit is checked
//! (imprint mode, register states, one common value to commit, enough installed keys that
//! may sign) before anything is asked or sent. This module prints the plan, shows the
//! vendor's warning and asks before set-immediate and clear-current, opens only the keys
//! the plan needs, and says who signed.

use anyhow::{bail, Result};
use serde_json::json;
use tke_ceremony::{
    guard::Destruction, CeremonyError, MkRegister, Plan, Problem, RegisterAction, Rule,
};
use tke_client::KnownUnit;
use tke_proto::{AdminInfo, RegisterState, RegisterStatus, UnitStatus};

use crate::{
    context::Ctx,
    signing::{self, SignerArgs},
    table::{vp_lines, Table},
    units::header,
};

/// The flags of `cryptounit-mk-commit` and `cryptounit-mk-clrnew`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub signers: SignerArgs,
}

/// The flags of `cryptounit-mk-setimm` and `cryptounit-mk-clrcur`, which ask first.
#[derive(clap::Args, Debug)]
pub struct ConfirmArgs {
    #[command(flatten)]
    pub signers: SignerArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// The flags of `cryptounit-mk-clrcur`: it asks first, and is guarded like zeroize.
#[derive(clap::Args, Debug)]
pub struct ClearCurrentArgs {
    #[command(flatten)]
    pub confirm: ConfirmArgs,
    #[command(flatten)]
    pub force: crate::guard::ForceArgs,
}

/// The plan of a register command: per unit its number, type, both registers and who
/// signs its commands.
pub fn plan_table<'a>(
    units: impl IntoIterator<Item = (&'a KnownUnit, &'a UnitStatus, Vec<&'a AdminInfo>)>,
) -> String {
    let mut t = Table::new(&[
        "CRYPTO UNIT NUM",
        "TYPE",
        "NEW MASTER KEY REGISTER",
        "CURRENT MASTER KEY REGISTER",
        "SIGNED BY",
    ]);
    for (unit, status, signers) in units {
        t.row(vec![
            unit.num.to_string(),
            unit.unit_type().label().to_owned(),
            register(&status.new_register),
            register(&status.current_register),
            signing::names(signers),
        ]);
    }
    t.render()
}

/// A register as `Full Committed 599ed092b9e47faf...`.
pub fn register(r: &RegisterStatus) -> String {
    match r.vp {
        Some(vp) => format!("{} {}...", r.state.label(), &vp.to_hex()[..16]),
        None => r.state.label().to_owned(),
    }
}

/// Runs one register command on the selected units; `yes` answers its confirmation.
pub fn run(ctx: &Ctx, action: RegisterAction, signers: &SignerArgs, yes: bool) -> Result<()> {
    run_guarded(
        ctx,
        action,
        signers,
        yes,
        &crate::guard::ForceArgs::default(),
    )
}

/// As [`run`]; clearing the current register first asks the key-storage guard, which
/// `force` may confirm ([`crate::guard`]).
pub fn run_guarded(
    ctx: &Ctx,
    action: RegisterAction,
    signers: &SignerArgs,
    yes: bool,
    force: &crate::guard::ForceArgs,
) -> Result<()> {
    let fleet = ctx.connect()?;
    let client = &fleet.client;
    let units = ctx.selected(&fleet)?;
    if units.is_empty() {
        bail!("no crypto units are selected: select them with `tke cryptounit-add` (see `tke cryptounits`)");
    }
    let keys = signing::preference(ctx, &signers.signer, "--signer")?;
    let request = || MkRegister {
        action,
        units: units.clone(),
        keys: signing::admin_infos(&keys),
    };
    let plan = if action == RegisterAction::ClearCurrent {
        let what = Destruction::ClearCurrent;
        let mut guard = crate::guard::key_storage(ctx, client, &units, what, force)?;
        let planned = request().plan_guarded(client, &guard);
        crate::guard::planned_again(ctx, &mut guard, what, planned, |g| {
            request().plan_guarded(client, g)
        })?
    } else {
        request().plan(client)
    }
    .map_err(hint)?;

    if !ctx.json {
        header(&fleet);
        let rows = plan
            .units()
            .iter()
            .map(|u| (u.unit, &u.status, u.signed_by()));
        println!("{}", plan_table(rows));
        if action == RegisterAction::Commit {
            let vp = plan.units().first().and_then(|u| u.status.new_register.vp);
            println!(
                "VERIFICATION PATTERN TO COMMIT\n{}\n",
                vp_lines(vp.as_ref())
            );
        }
    }
    if let Some(question) = warning(ctx, action, &plan) {
        if !ctx.prompt.confirm(
            &format!("{question} at {}?", client.describe().join(", ")),
            yes,
        )? {
            println!("Cancelled. No crypto unit was changed.");
            return Err(crate::Cancelled.into());
        }
    }

    let nums: Vec<usize> = plan.units().iter().map(|u| u.unit.num).collect();
    let (signed_by, names) = signing::execute(ctx, &keys, plan, "`tke cryptounit-mk`")?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "units": nums, "signed_by": names }))?
        );
        return Ok(());
    }
    println!("{signed_by}\nOK\n{}", done(action));
    Ok(())
}

/// The warning before a command that changes the current register, and the question to
/// ask; `None` for the commands the vendor runs without asking.
fn warning(ctx: &Ctx, action: RegisterAction, plan: &Plan<'_>) -> Option<String> {
    let n = plan.units().len();
    // Units whose current register holds a value the command replaces or clears.
    let holding: Vec<String> = plan
        .units()
        .iter()
        .filter(|u| u.status.current_register.state == RegisterState::Valid)
        .filter(|u| {
            action == RegisterAction::ClearCurrent
                || u.status.current_register.vp != u.status.new_register.vp
        })
        .map(|u| {
            let vp = u
                .status
                .current_register
                .vp
                .map(|v| v.to_hex())
                .unwrap_or_default();
            format!("{} ({}...)", u.unit.num, &vp[..vp.len().min(16)])
        })
        .collect();
    let (warning, holds, guidance, question) = match action {
        RegisterAction::SetImmediate => (
            "WARNING: the current master key register of the selected crypto units is about to change: the value of their new master key register replaces it.",
            "These crypto units hold another current value, which is replaced",
            "Answer y for the first initialization of the service instance (its key storage is empty),\n\
             when reloading the same value after it was lost (with no key actions in progress),\n\
             or when finishing an interrupted rotation after `KMS CRK rewrap successful, waiting on cryptounit-mk-setimm` was shown.\n\
             Answer N when installing a different value while key storage holds keys: rotate to it instead\n\
             (`tke cryptounit-mk-rotate`), or the keys encrypted under the current value become unusable.\n",
            format!("Set the new master key register immediately on {n} crypto unit(s)"),
        ),
        RegisterAction::ClearCurrent => (
            "WARNING: clearing the current master key register makes the service instance's key storage unusable until the same value is loaded again (from the same key parts, or from a recovery crypto unit).",
            "These crypto units hold a current master key, which is cleared",
            "",
            format!("Clear the current master key register of {n} crypto unit(s)"),
        ),
        RegisterAction::Commit | RegisterAction::ClearNew => return None,
    };
    let mut text = warning.to_owned();
    if !holding.is_empty() {
        text.push_str(&format!("\n{holds}: {}.", holding.join(", ")));
    }
    text.push('\n');
    text.push_str(guidance);
    if !ctx.json {
        println!("{text}");
    }
    Some(question)
}

/// What a finished command says.
fn done(action: RegisterAction) -> &'static str {
    match action {
        RegisterAction::Commit => "The new master key registers of the selected crypto units are Full Committed.\nActivate the value with `tke cryptounit-mk-setimm` (first initialization, or reloading the same value), or rotate to it with `tke cryptounit-mk-rotate`.",
        RegisterAction::SetImmediate => "The new master key value is current in the selected crypto units, and their new master key registers are empty.",
        RegisterAction::ClearNew => "The new master key registers of the selected crypto units are empty.",
        RegisterAction::ClearCurrent => "The current master key registers of the selected crypto units are empty. Load the same value again before the service instance's key storage is used.",
    }
}

/// A refused plan, with what the operator can do about it.
pub fn hint(e: CeremonyError) -> anyhow::Error {
    let mut advice: Vec<&str> = crate::guard::advice(&e).into_iter().collect();
    if let CeremonyError::Problems(problems) = &e {
        let any = |f: fn(&Rule) -> bool| {
            problems
                .iter()
                .any(|p| matches!(p, Problem::Precondition { rule, .. } if f(rule)))
        };
        if any(|r| matches!(r, Rule::ImprintMode)) {
            advice.push("Master key registers change only out of imprint mode: install the administrators (`tke cryptounit-admin-add`) and set the signature thresholds (`tke cryptounit-thrhld-set`) first, or initialize the instance with `tke auto-init`.");
        }
        if any(|r| matches!(r, Rule::NewRegisterValues { .. })) {
            advice.push("Compare the values with `tke cryptounit-mk`; clear the new master key register of the crypto units that hold another value (`tke cryptounit-mk-clrnew` with only them selected) and load them again.");
        }
    }
    let e = signing::hint(e);
    if advice.is_empty() {
        e
    } else {
        anyhow::anyhow!("{e}\n{}", advice.join("\n"))
    }
}
