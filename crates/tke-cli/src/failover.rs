//! `failover-enable`: add failover crypto units to the selected service instance.
//!
//! As the vendor's: every unit of the instance selected; the current count and the maximum
//! (the instance's operational units, at most 3); `Enter the total number of failover
//! crypto units you would like (max N):`; a notice (the vendor's is about billing) and a
//! confirmation; then the refreshed unit table, the new units unselected, and the reminder
//! to initialize them now. The ceremony is [`tke_ceremony::FailoverEnable`]; this module
//! asks and prints. Units are added to the embedded fleet; a `tke-unitd` server makes its
//! units when it is set up, so for targets the refusal says how to add them there.

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use tke_ceremony::{CeremonyError, FailoverEnable, Problem};

use crate::{
    context::{Ctx, Fleet},
    units::{header, print_units},
};

/// The answers `failover-enable` takes as flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The total number of failover crypto units the instance should have (asked for
    /// when omitted): 2, or 2 or 3 when it has 3 operational units or more.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = total_number)]
    pub total: Option<usize>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// A total of failover units as typed: a message that says what to type, not a parser's.
fn total_number(s: &str) -> std::result::Result<usize, String> {
    s.trim().parse().map_err(|_| {
        format!("{s:?} is not a whole number: enter the total number of failover crypto units the instance should have, such as 2")
    })
}

/// Runs `failover-enable`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let fleet = ctx.connect()?;
    let units = ctx.selected(&fleet)?;
    if units.is_empty() {
        bail!("no crypto units are selected: select every crypto unit of the service instance with `tke cryptounit-add` (see `tke cryptounits`)");
    }
    let plan = FailoverEnable { units }.plan(&fleet.client).map_err(hint)?;
    let instance = plan.instance().clone();
    let limits = plan.limits();
    if !ctx.json {
        header(&fleet);
        println!(
            "Service instance {instance} has {} failover crypto unit(s). It may have up to {} (as many as its {} operational crypto units, at most 3).\n",
            limits.failover,
            limits.max(),
            limits.operational
        );
    }
    let total = match args.total {
        Some(total) => {
            plan.check_total(total)
                .with_context(|| format!("--total {total}"))?;
            total
        }
        None => ctx.prompt.ask(
            &format!(
                "Enter the total number of failover crypto units you would like (max {}):",
                limits.max()
            ),
            "--total N",
            |s| {
                let total = total_number(s).map_err(anyhow::Error::msg)?;
                plan.check_total(total)?;
                Ok(total)
            },
        )?,
    };
    let adding = total - limits.failover;
    if !ctx.json {
        println!(
            "{adding} failover crypto unit(s) will be added to service instance {instance} in {}.\nThe vendor bills failover crypto units; these are emulated and cost nothing. They are created in imprint mode, not selected, and hold no master key until you initialize them.\n",
            fleet.client.describe().join(", ")
        );
    }
    if !ctx
        .prompt
        .confirm("Would you like to continue?", args.yes)?
    {
        println!("Cancelled. No crypto unit was added.");
        return Err(crate::Cancelled.into());
    }
    if !ctx.json {
        println!("Adding {adding} failover crypto unit(s) to service instance {instance}....");
    }
    let report = plan.execute(total)?;
    let fleet = Fleet {
        client: report.client,
    };
    let nums: Vec<usize> = report
        .added
        .iter()
        .filter_map(|id| fleet.client.unit(id))
        .map(|u| u.num)
        .collect();
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "instance": instance.0,
                "failover_units": total,
                "added": nums,
            }))?
        );
        return Ok(());
    }
    println!("{total} failover crypto units are assigned to service instance {instance}.\nGetting crypto unit info....\n");
    print_units(ctx, &fleet)?;
    let list = nums
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "All crypto units of a service instance must be configured the same. Initialize the new\n\
         failover crypto units now, with the administrators, signature thresholds and master key\n\
         of the other units of the instance:\n\
         \x20 1. select them: tke cryptounit-add {list}\n\
         \x20 2. install the same administrators: tke cryptounit-admin-add\n\
         \x20 3. set the same signature thresholds: tke cryptounit-thrhld-set\n\
         \x20 4. copy the master key into them from a recovery crypto unit (tke auto-mk-recover),\n\
         \x20    or load it from the same key parts (tke cryptounit-mk-load, cryptounit-mk-commit,\n\
         \x20    cryptounit-mk-setimm).\n\
         Failover crypto units that are not initialized cannot take over in a disaster.\nOK"
    );
    Ok(())
}

/// Adds to a refused plan what the operator can do: which units to select, and how to
/// add units to a `tke-unitd` server.
fn hint(e: CeremonyError) -> anyhow::Error {
    let CeremonyError::Problems(problems) = &e else {
        return e.into();
    };
    let mut advice = Vec::new();
    for p in problems {
        match p {
            Problem::SeveralInstances { .. } => advice.push(
                "Remove the other instances' crypto units from the selection with `tke cryptounit-rm` (see `tke cryptounits`).".to_owned(),
            ),
            Problem::InstanceNotAllSelected { unselected, .. } => advice.push(format!(
                "Select them with `tke cryptounit-add {}`.",
                unselected
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            Problem::CannotAddUnits { instance, .. } => advice.push(format!(
                "A tke-unitd server makes its crypto units when it is set up and cannot add any later. Host the failover crypto units on another tke-unitd server that joins service instance {instance}:\n  tke-unitd join --dir DIR --listen ADDR:PORT --operational 0 --recovery 0 --failover N --instance-id {instance} --api-key-file API-KEY-FILE --ca ca.pem --request DIR.req\n  tke-unitd ca-sign --ca-dir CA-DIR --request DIR.req --out DIR.crt   (where the fleet CA key is kept)\n  tke-unitd join --dir DIR --certificates DIR.crt\n  tke-unitd serve --config DIR/unitd.toml\nthen add it here with `tke target add NAME https://ADDR:PORT --ca ca.pem --api-key-file API-KEY-FILE`. N is 2, or 2 or 3 when the instance has 3 operational crypto units or more."
            )),
            _ => {}
        }
    }
    if advice.is_empty() {
        e.into()
    } else {
        anyhow::anyhow!("{e}\n{}", advice.join("\n"))
    }
}
