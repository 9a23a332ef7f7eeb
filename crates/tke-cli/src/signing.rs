//! Who signs a command: the keys that may sign, opening only those a plan needs, and the
//! "Signed by" line.
//!
//! As the vendor's `sigkey-sel`: the selection says which keys *may* sign; each command
//! takes, per unit, as many selected keys installed on it as it needs, asks only their
//! passwords (or PINs), and says which administrators signed. `--signer NAME` names the
//! keys for one command instead. Without either, every signature key of the workstation
//! may sign, in KEYNUM order.

use anyhow::{bail, Result};
use tke_ceremony::{CeremonyError, Plan, Problem};
use tke_proto::AdminInfo;
use tke_sigkey::Signer;
use tke_workstation::SigKeyEntry;

use crate::{
    context::Ctx,
    sigkeys::{admin_info, list},
};

/// `--signer`, for every command that needs signatures.
#[derive(clap::Args, Debug, Default)]
pub struct SignerArgs {
    /// Sign with the signature key of this administrator (repeat it for a command that
    /// needs several signatures). Default: the keys selected with `tke sigkey-sel`, else
    /// every signature key on this workstation; in both cases as many installed
    /// administrators as the command needs, and only their passwords are asked.
    #[arg(long = "signer", value_name = "NAME")]
    pub signer: Vec<String>,
}

/// The signature keys that may sign, in order of preference, each once: the keys named
/// (`--signer`), else the `sigkey-sel` selection, else every key of the workstation.
///
/// # Errors
/// A name with no signature key on this workstation.
pub fn preference(ctx: &Ctx, named: &[String], flag: &str) -> Result<Vec<SigKeyEntry>> {
    let entries = list(ctx)?;
    let candidates: Vec<&SigKeyEntry> = if named.is_empty() {
        let selection = ctx.files.load_selection()?.sigkeys;
        let selected: Vec<&SigKeyEntry> = selection
            .iter()
            .filter_map(|ski| entries.iter().find(|e| e.ski == *ski))
            .collect();
        if selected.is_empty() {
            entries.iter().collect()
        } else {
            selected
        }
    } else {
        let mut chosen = Vec::new();
        for name in named {
            let before = chosen.len();
            chosen.extend(entries.iter().filter(|e| e.name.as_str() == name));
            if chosen.len() == before {
                bail!(
                    "{flag} {name:?}: no signature key of that name in {} (see `tke sigkeys`); nothing was changed",
                    ctx.files.path().display()
                );
            }
        }
        chosen
    };
    let mut unique: Vec<SigKeyEntry> = Vec::new();
    for e in candidates {
        if !unique.iter().any(|u| u.ski == e.ski) {
            unique.push(e.clone());
        }
    }
    Ok(unique)
}

/// The keys named by `--signer` and by `--admin` (its other name on some commands), in
/// that order, and the flag to name in errors.
pub fn named(signer: &[String], admin: &[String]) -> (Vec<String>, &'static str) {
    let names = signer.iter().chain(admin).cloned().collect();
    let flag = if admin.is_empty() {
        "--signer"
    } else {
        "--admin"
    };
    (names, flag)
}

/// The administrator name and SKI of each key, for a ceremony's plan.
pub fn admin_infos(keys: &[SigKeyEntry]) -> Vec<AdminInfo> {
    keys.iter().map(admin_info).collect()
}

/// Opens each key a plan needs, once (one password or PIN per key).
///
/// # Errors
/// A key that cannot be opened (wrong password, token missing, ...).
pub fn open(
    ctx: &Ctx,
    keys: &[SigKeyEntry],
    needed: &[&AdminInfo],
) -> Result<Vec<Box<dyn Signer>>> {
    let mut opened = Vec::with_capacity(needed.len());
    for k in needed {
        if let Some(e) = keys.iter().find(|e| e.ski == k.ski) {
            opened.push(ctx.open_signer(e)?);
        }
    }
    Ok(opened)
}

/// `alice, bob`, or `(no signature needed)`.
pub fn names<'a>(admins: impl IntoIterator<Item = &'a AdminInfo>) -> String {
    let all: Vec<&str> = admins.into_iter().map(|a| a.name.as_str()).collect();
    if all.is_empty() {
        "(no signature needed)".to_owned()
    } else {
        all.join(", ")
    }
}

/// A refused plan, with what the operator can do when keys were too few.
pub fn hint(e: CeremonyError) -> anyhow::Error {
    let short = matches!(&e, CeremonyError::Problems(p)
        if p.iter().any(|p| matches!(p, Problem::TooFewSigners { .. })));
    if short {
        anyhow::anyhow!("{e}\n{TOO_FEW_SIGNERS_HINT}")
    } else {
        e.into()
    }
}

/// The advice added to a plan refused for want of installed keys.
const TOO_FEW_SIGNERS_HINT: &str = "Select more of the installed administrators' signature keys with `tke sigkey-sel`, or name them with --signer NAME (repeatable); `tke cryptounit-admins` lists who is installed on each crypto unit.";

/// The line every signing command prints: who signed, over all units of a plan.
pub fn signed_by(plan: &Plan<'_>) -> String {
    let mut all: Vec<&AdminInfo> = Vec::new();
    for a in plan.units().iter().flat_map(|u| u.signed_by()) {
        if !all.iter().any(|b| b.ski == a.ski) {
            all.push(a);
        }
    }
    format!("Signed by: {}", names(all))
}

/// Opens the keys `plan` needs (from `keys`) and runs it. Returns the "Signed by" line
/// and the names of the administrators who signed. A failure on some units says which,
/// and `check` (the command(s) to look with).
///
/// # Errors
/// A key that cannot be opened (nothing was sent), or the ceremony's failure.
pub fn execute(
    ctx: &Ctx,
    keys: &[SigKeyEntry],
    plan: Plan<'_>,
    check: &str,
) -> Result<(String, Vec<String>)> {
    let opened = open(ctx, keys, &plan.keys_needed())?;
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s.as_ref()).collect();
    let line = signed_by(&plan);
    let names: Vec<String> = plan
        .keys_needed()
        .iter()
        .map(|k| k.name.to_string())
        .collect();
    let step = plan.step();
    plan.execute(&signers)
        .map_err(|e| partly_failed(e, step, "changed", check))?;
    Ok((line, names))
}

/// A ceremony that failed on some units after the others were changed: says which failed,
/// that the others are `changed`, and the command(s) to look with (`check`). Any other
/// error is passed on.
pub fn partly_failed(e: CeremonyError, what: &str, changed: &str, check: &str) -> anyhow::Error {
    match e {
        CeremonyError::Step { failures, .. } => crate::report::failed_on_some(
            what,
            &format!("any other selected crypto units were {changed}"),
            check,
            &failures,
        ),
        other => other.into(),
    }
}
