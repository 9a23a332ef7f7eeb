//! Initializes a service instance with the library crates alone: an embedded fleet in a
//! temporary directory, two administrators with file signature keys, thresholds 2/1.
//!
//! `cargo run -p tke-ceremony --example auto_init`

use std::sync::Arc;

use tke_ceremony::{AutoInit, Event, Progress};
use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{AdminName, Threshold};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_workstation::{FilesDir, Password};

/// Prints each milestone as it happens.
struct Print;

impl Progress for Print {
    fn event(&self, event: &Event) {
        println!("{event:?}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let files = FilesDir::resolve(Some(dir.path()))?;
    let fleet = EmbeddedFleet::create(&files.local_dir(), FleetSpec::default())?;
    let ca = fleet.ca().clone();
    let transport: Arc<dyn Transport> = Arc::new(fleet);
    let client = Client::connect(vec![(transport, ca)])?;

    let alice = FileSigner::generate(&files, &AdminName::new("alice")?, &Password::new("a-pw"))?;
    let bob = FileSigner::generate(&files, &AdminName::new("bob")?, &Password::new("b-pw"))?;

    // Every check first; nothing is changed if one fails.
    let plan = AutoInit {
        instance: client.instances()[0].clone(),
        sig_threshold: Threshold::new(2)?,
        rev_threshold: Threshold::new(1)?,
        admins: vec![&alice as &dyn Signer, &bob],
    }
    .plan(&client)?;
    println!("initializing crypto units {:?}", plan.units());
    let report = plan.execute(&Print)?;

    // Check the result on the units themselves, not only the report.
    for u in client.units() {
        let s = client.query(u)?;
        if s.imprint_mode() || s.current_register.vp != Some(report.vp) {
            return Err(format!("crypto unit {} does not hold the new master key", u.num).into());
        }
    }
    println!(
        "OK: every crypto unit holds master key {}",
        report.vp.to_hex()
    );
    Ok(())
}
