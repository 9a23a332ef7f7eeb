//! `cryptounit-zeroize`: return the selected crypto units to imprint mode.
//!
//! As the vendor's: a confirmation, then **one** signature-key password — an operational
//! unit out of imprint mode zeroizes with the signature of one installed administrator; a
//! unit in imprint mode needs none. Unlike the vendor's, a recovery unit out of imprint
//! mode needs its signature threshold (one password per key): it may hold the instance's
//! last copy of the master key. The ceremony is [`tke_ceremony::Zeroize`]: its plan runs every
//! check (units reachable, a usable key for every unit) before the question, so a refusal
//! changes nothing. This module chooses the keys, prints the plan, asks, opens the keys
//! the plan needs and prints the result.
//!
//! Zeroizing destroys any current master key; these fleets have no key storage yet, so
//! the confirmation names what is destroyed.

use anyhow::{bail, Result};
use serde_json::json;
use tke_ceremony::{CeremonyError, Problem, Zeroize};
use tke_proto::RegisterState;
use tke_sigkey::Signer;

use crate::{
    context::Ctx,
    signing::{self, SignerArgs},
    table::Table,
    units::header,
};

/// The answers `cryptounit-zeroize` takes as flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub signers: SignerArgs,
    /// The same as --signer (the name this command first had).
    #[arg(long = "admin", value_name = "NAME", hide = true)]
    pub admin: Vec<String>,
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

    // The keys that may sign, in order of preference.
    let named: Vec<String> = args
        .signers
        .signer
        .iter()
        .chain(&args.admin)
        .cloned()
        .collect();
    let flag = if args.admin.is_empty() {
        "--signer"
    } else {
        "--admin"
    };
    let preference = signing::preference(ctx, &named, flag)?;
    let plan = Zeroize {
        units,
        keys: signing::admin_infos(&preference),
    }
    .plan(client)
    .map_err(hint)?;

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
        for z in plan.targets() {
            let s = &z.status;
            t.row(vec![
                z.unit.num.to_string(),
                z.unit.unit_type().label().to_owned(),
                s.imprint_mode().to_string(),
                s.admins.len().to_string(),
                s.current_register.state.label().to_owned(),
                signing::names(&z.signers),
            ]);
        }
        print!("{}", t.render());
        let holding: Vec<String> = plan
            .targets()
            .iter()
            .filter(|z| z.status.current_register.state == RegisterState::Valid)
            .map(|z| {
                let vp = z
                    .status
                    .current_register
                    .vp
                    .map(|v| v.to_hex())
                    .unwrap_or_default();
                format!(
                    "{} (verification pattern {}...)",
                    z.unit.num,
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
            "Zeroize {} crypto unit(s) at {}? Administrators, signature thresholds and both master key registers are cleared; this cannot be undone.",
            plan.targets().len(),
            client.describe().join(", ")
        ),
        args.yes,
    )? {
        println!("Cancelled. No crypto unit was changed.");
        return Err(crate::Cancelled.into());
    }

    // Open each key needed once (one password per key).
    let opened = signing::open(ctx, &preference, &plan.keys_needed())?;
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s.as_ref()).collect();
    let signed_by: Vec<_> = plan.keys_needed().into_iter().cloned().collect();
    let report = plan.execute(&signers).map_err(|e| {
        signing::partly_failed(e, "zeroize", "zeroized", "`tke cryptounit-compare`")
    })?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "zeroized": report.units,
            }))?
        );
    } else {
        println!(
            "Signed by: {}\nOK\nThe selected crypto units have been zeroized: they are in imprint mode.",
            signing::names(&signed_by)
        );
    }
    Ok(())
}

/// Adds what the operator can do to a plan refused for want of keys on a recovery unit.
fn hint(e: CeremonyError) -> anyhow::Error {
    let short = matches!(&e, CeremonyError::Problems(p)
        if p.iter().any(|p| matches!(p, Problem::TooFewInstalledKeys { .. })));
    if short {
        anyhow::anyhow!(
            "{e}\nA recovery unit needs the signature keys of as many of its administrators as its signature threshold: repeat --signer NAME for each, or select their keys with `tke sigkey-sel` (see `tke sigkeys`)."
        )
    } else {
        e.into()
    }
}
