//! `cryptounit-zeroize`: return the selected crypto units to imprint mode.
//!
//! As the vendor's: a confirmation, then **one** signature-key password — a unit out of
//! imprint mode zeroizes with the signature of one installed administrator; a unit in
//! imprint mode needs none. Every check (units reachable, a usable key for every unit)
//! runs before the question, so a refusal changes nothing.
//!
//! Safety (DESIGN rule 4): zeroize must be refused while the instance's key storage holds
//! keys unless forced with a typed confirmation. These fleets have no key storage yet, so
//! the confirmation names what is destroyed — in particular any current master key.

use anyhow::{bail, Result};
use serde_json::json;
use tke_client::{fanout::parallel, KnownUnit};
use tke_keyfile::SigKeyEntry;
use tke_proto::{Command, ErrorChain, RegisterState, UnitStatus};
use tke_sigkey::Signer;

use crate::{context::Ctx, sigkeys::list, table::Table, units::header};

/// The answers `cryptounit-zeroize` takes as flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sign with the signature key of this administrator. Default: the first of the
    /// selected signature keys (`tke sigkey-sel`), then of the workstation's keys, that
    /// is installed on the unit.
    #[arg(long = "admin", value_name = "NAME")]
    pub admin: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// Runs `cryptounit-zeroize`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let fleet = ctx.connect()?;
    let client = &fleet.client;
    let units = ctx.selected(&fleet)?;
    if units.is_empty() {
        bail!("no crypto units are selected: select them with `tke cryptounit-add` (see `tke cryptounits`)");
    }
    let mut rows: Vec<(&KnownUnit, UnitStatus)> = Vec::new();
    let mut problems = Vec::new();
    for (u, s) in units.iter().zip(parallel(&units, |u| client.query(u))) {
        match s {
            Ok(s) => rows.push((*u, s)),
            Err(e) => problems.push(format!(
                "crypto unit {} cannot be queried: {}",
                u.num,
                ErrorChain(&e)
            )),
        }
    }

    // Which key signs for each unit out of imprint mode.
    let entries = list(ctx)?;
    let selection = ctx.files.load_selection()?.sigkeys;
    let mut preference: Vec<&SigKeyEntry> = match &args.admin {
        Some(name) => {
            let v: Vec<&SigKeyEntry> = entries.iter().filter(|e| e.name.as_str() == name).collect();
            if v.is_empty() {
                bail!("--admin {name:?}: no signature key of that name in {} (see `tke sigkeys`); nothing was changed", ctx.files.path().display());
            }
            v
        }
        None => selection
            .iter()
            .filter_map(|ski| entries.iter().find(|e| e.ski == *ski))
            .collect(),
    };
    if args.admin.is_none() {
        for e in &entries {
            if !preference.iter().any(|p| p.ski == e.ski) {
                preference.push(e);
            }
        }
    }
    let mut signer_of: Vec<Option<usize>> = Vec::new();
    for (u, s) in &rows {
        if s.imprint_mode() {
            signer_of.push(None);
            continue;
        }
        match preference
            .iter()
            .position(|e| s.admins.iter().any(|a| a.ski == e.ski))
        {
            Some(i) => signer_of.push(Some(i)),
            None => {
                let installed: Vec<String> = s.admins.iter().map(|a| a.name.to_string()).collect();
                problems.push(format!(
                    "crypto unit {} is out of imprint mode and none of the usable signature keys on this workstation is installed on it (installed administrators: {}); zeroizing it needs the signature of one of them",
                    u.num,
                    installed.join(", ")
                ));
                signer_of.push(None);
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} problem(s) found; no crypto unit was changed:\n{}",
            problems.len(),
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    if !ctx.json {
        header(&fleet);
        let mut t = Table::new(&[
            "CRYPTO UNIT NUM",
            "TYPE",
            "IMPRINT MODE",
            "ADMINISTRATORS",
            "CURRENT MASTER KEY REGISTER",
            "SIGNED BY",
        ]);
        for ((u, s), k) in rows.iter().zip(&signer_of) {
            t.row(vec![
                u.num.to_string(),
                u.unit_type().label().to_owned(),
                s.imprint_mode().to_string(),
                s.admins.len().to_string(),
                s.current_register.state.label().to_owned(),
                k.map(|i| preference[i].name.to_string())
                    .unwrap_or_else(|| "(no signature needed)".into()),
            ]);
        }
        print!("{}", t.render());
        let holding: Vec<String> = rows
            .iter()
            .filter(|(_, s)| s.current_register.state == RegisterState::Valid)
            .map(|(u, s)| {
                let vp = s
                    .current_register
                    .vp
                    .map(|v| v.to_hex())
                    .unwrap_or_default();
                format!(
                    "{} (verification pattern {}...)",
                    u.num,
                    &vp[..vp.len().min(16)]
                )
            })
            .collect();
        if !holding.is_empty() {
            println!(
                "\nWARNING: these crypto units hold a current master key, which zeroizing destroys: {}.\nOnly zeroize when the service instance's key storage holds no keys, or when the master key can be recovered from another unit.",
                holding.join(", ")
            );
        }
        println!();
    }
    if !ctx.prompt.confirm(
        &format!(
            "Zeroize {} crypto unit(s)? Administrators, signature thresholds and both master key registers are cleared; this cannot be undone.",
            rows.len()
        ),
        args.yes,
    )? {
        println!("Cancelled. No crypto unit was changed.");
        return Err(crate::Cancelled.into());
    }

    // Open each key needed once (one password per key).
    let mut needed: Vec<usize> = signer_of.iter().flatten().copied().collect();
    needed.sort_unstable();
    needed.dedup();
    let mut opened = Vec::new();
    for i in &needed {
        opened.push((*i, ctx.open_signer(preference[*i])?));
    }
    let jobs: Vec<(&KnownUnit, Option<&dyn Signer>)> = rows
        .iter()
        .zip(&signer_of)
        .map(|((u, _), k)| {
            let signer = k.and_then(|i| {
                opened
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, s)| s.as_ref())
            });
            (*u, signer)
        })
        .collect();
    let results = parallel(&jobs, |(u, signer)| {
        let signers: Vec<&dyn Signer> = signer.iter().copied().collect();
        client.run(u, &Command::Zeroize, &signers)
    });
    let mut failures = Vec::new();
    for ((u, _), r) in jobs.iter().zip(results) {
        if let Err(e) = r {
            failures.push(format!("  - crypto unit {}: {}", u.num, ErrorChain(&e)));
        }
    }
    if !failures.is_empty() {
        bail!(
            "zeroize failed on {} crypto unit(s); the others were zeroized. Check with `tke cryptounit-compare`:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "zeroized": rows.iter().map(|(u, _)| u.num).collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!("OK\nThe selected crypto units have been zeroized: they are in imprint mode.");
    }
    Ok(())
}
