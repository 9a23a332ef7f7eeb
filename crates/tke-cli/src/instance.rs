//! Which service instance a command acts on, asked as the vendor asks it.

use anyhow::{bail, Result};
use tke_client::{Client, InstanceId};

use crate::{context::Ctx, prompt::parse_numbers, table::Table};

/// The service instance a command acts on: `--instance NUM`, the only one, or asked for
/// with the vendor's `INSTANCE NUM | INSTANCE ID` table; `purpose` ends the question
/// ("you want to initialize").
pub fn choose(ctx: &Ctx, client: &Client, arg: Option<usize>, purpose: &str) -> Result<InstanceId> {
    let instances = client.instances();
    if instances.is_empty() {
        bail!("No service instances were found in the fleet.");
    }
    Ok(match arg {
        Some(n) if n >= 1 && n <= instances.len() => instances[n - 1].clone(),
        Some(n) => bail!(
            "INSTANCE NUM {n} does not exist: there are {} service instance(s); nothing was changed",
            instances.len()
        ),
        None if instances.len() == 1 => instances[0].clone(),
        None => {
            println!("More than one service instance is assigned to the current resource group.\n");
            let mut t = Table::new(&["INSTANCE NUM", "INSTANCE ID"]);
            for (i, inst) in instances.iter().enumerate() {
                t.row(vec![(i + 1).to_string(), inst.to_string()]);
            }
            println!("{}", t.render());
            let n = ctx.prompt.ask(
                &format!("Enter the INSTANCE NUM of the service instance {purpose}."),
                "--instance NUM",
                |s| {
                    let v = parse_numbers(s, instances.len(), "INSTANCE NUM")?;
                    match v.as_slice() {
                        [n] => Ok(*n),
                        _ => bail!("enter one INSTANCE NUM"),
                    }
                },
            )?;
            instances[n - 1].clone()
        }
    })
}
