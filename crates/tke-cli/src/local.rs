//! `tke local init`: create the embedded fleet.

use std::path::PathBuf;

use anyhow::{bail, Result};
use tke_client::{
    embedded::{Latency, Pkcs11Placement, Pkcs11Units, Placement},
    EmbeddedFleet, FleetSpec,
};

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
    /// Place crypto units on PKCS#11 tokens through this module (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so); their secrets then never leave the tokens.
    #[arg(long, value_name = "PATH", requires_all = ["pkcs11_tokens", "pkcs11_pin_file"])]
    pub pkcs11_module: Option<PathBuf>,
    /// The labels of the tokens, one per unit placed, in creation order (per instance:
    /// operational, recovery, then failover units). Each token must exist and be empty.
    #[arg(
        long,
        value_name = "LABEL,LABEL,...",
        value_delimiter = ',',
        requires = "pkcs11_module"
    )]
    pub pkcs11_tokens: Vec<String>,
    /// The file holding the tokens' user PIN (mode 0600); `{label}` in the path stands for
    /// each token's label, e.g. DIR/{label}.pin as softhsm-config/make-tokens.sh writes them.
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Which units go on tokens: all, operational (operational and failover units; recovery
    /// units stay soft) or recovery.
    #[arg(long, value_name = "UNITS", default_value = "all", value_parser = ["all", "operational", "recovery"], requires = "pkcs11_module")]
    pub pkcs11_units: String,
    /// Test and benchmark tooling: every crypto unit of the fleet waits this many
    /// milliseconds (0-10000) before answering each request, standing in for a real
    /// HSM's round trip. Recorded in the fleet (fleet.json); 0, the default, is none.
    #[arg(long = "latency-ms", value_name = "MS", default_value = "0")]
    pub latency: Latency,
}

/// The placement the arguments ask for, checked against the fleet's size.
fn placement(a: &InitArgs, spec: &FleetSpec) -> Result<Placement> {
    let (Some(module), Some(pin_file)) = (&a.pkcs11_module, &a.pkcs11_pin_file) else {
        return Ok(Placement::soft());
    };
    let units = match a.pkcs11_units.as_str() {
        "operational" => Pkcs11Units::Operational,
        "recovery" => Pkcs11Units::Recovery,
        _ => Pkcs11Units::All,
    };
    let p = Pkcs11Placement {
        module: module.clone(),
        units,
        tokens: a.pkcs11_tokens.clone(),
        pin_file: pin_file.clone(),
    };
    let needed = p.units_placed(spec);
    if p.tokens.len() != needed {
        bail!(
            "--pkcs11-tokens names {} token(s), but --pkcs11-units {} places {} crypto unit(s) on tokens: give one token label per unit",
            p.tokens.len(),
            a.pkcs11_units,
            needed
        );
    }
    p.validate(spec)?;
    Ok(Placement::pkcs11(p))
}

/// Runs `local init`.
pub fn init(ctx: &Ctx, a: &InitArgs) -> Result<()> {
    let spec = FleetSpec {
        instances: a.instances,
        operational: a.operational,
        recovery: a.recovery,
        failover: a.failover,
    };
    spec.validate()?;
    let placement = placement(a, &spec)?;
    let dir = ctx.files.local_dir();
    let fleet = EmbeddedFleet::create_with(&dir, spec, &placement)?;
    if !a.latency.is_none() {
        fleet.set_latency(a.latency)?;
    }
    drop(fleet);
    if !ctx.json {
        println!(
            "Created an embedded fleet in {}: {} service instance(s) of {} operational, {} recovery and {} failover crypto units, all in imprint mode.",
            dir.display(),
            spec.instances,
            spec.operational,
            spec.recovery,
            spec.failover
        );
        if let Some(p) = &placement.pkcs11 {
            println!(
                "{} crypto unit(s) keep their secrets on PKCS#11 tokens ({}) of {}.",
                p.tokens.len(),
                p.tokens.join(", "),
                p.module.display()
            );
        }
        if !a.latency.is_none() {
            println!(
                "Every crypto unit waits {} ms before answering (a simulated HSM round trip, for tests and benchmarks).",
                a.latency.as_millis()
            );
        }
        println!();
    }
    crate::units::cryptounits(ctx)?;
    if !ctx.json {
        println!("OK");
    }
    Ok(())
}
