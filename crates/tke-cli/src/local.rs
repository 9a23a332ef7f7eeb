//! `tke local init`: create the embedded fleet.

use anyhow::Result;
use tke_client::{EmbeddedFleet, FleetSpec};

use crate::context::Ctx;

/// Sizes of the fleet to create.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Number of service instances (1-16).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub instances: u32,
    /// Operational crypto units per instance (1-6).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub operational: u32,
    /// Recovery crypto units per instance (0-2).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub recovery: u32,
    /// Failover crypto units per instance (0-3, at most the operational count).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub failover: u32,
}

/// Runs `local init`.
pub fn init(ctx: &Ctx, a: &InitArgs) -> Result<()> {
    let spec = FleetSpec {
        instances: a.instances,
        operational: a.operational,
        recovery: a.recovery,
        failover: a.failover,
    };
    let dir = ctx.files.local_dir();
    let fleet = EmbeddedFleet::create(&dir, spec)?;
    drop(fleet);
    if !ctx.json {
        println!(
            "Created an embedded fleet in {}: {} service instance(s) of {} operational, {} recovery and {} failover crypto units, all in imprint mode.\n",
            dir.display(),
            spec.instances,
            spec.operational,
            spec.recovery,
            spec.failover
        );
    }
    crate::units::cryptounits(ctx)?;
    if !ctx.json {
        println!("OK");
    }
    Ok(())
}
