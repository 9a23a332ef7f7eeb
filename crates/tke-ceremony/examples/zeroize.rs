//! Zeroizes the crypto units of an initialized service instance with the library crates
//! alone: the plan picks which administrators' keys sign for each unit (the signature
//! threshold on a recovery unit), the program opens only those keys (where a real program
//! asks for their passwords), then executes.
//!
//! `cargo run -p tke-ceremony --example zeroize`

use std::sync::Arc;

use tke_ceremony::{AutoInit, Silent, Zeroize};
use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{AdminInfo, AdminName, Threshold};
use tke_sigkey::Signer;
use tke_sigkey_file::FileSigner;
use tke_workstation::{FilesDir, Password};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let files = FilesDir::resolve(Some(dir.path()))?;
    let fleet = EmbeddedFleet::create(&files.local_dir(), FleetSpec::default())?;
    let ca = fleet.ca().clone();
    let transport: Arc<dyn Transport> = Arc::new(fleet);
    let client = Client::connect(vec![(transport, ca)])?;

    // An instance to zeroize: initialized by alice and bob.
    let password = |name: &str| Password::new(format!("{name}-pw"));
    let alice = FileSigner::generate(&files, &AdminName::new("alice")?, &password("alice"))?;
    let bob = FileSigner::generate(&files, &AdminName::new("bob")?, &password("bob"))?;
    AutoInit {
        instance: client.instances()[0].clone(),
        sig_threshold: Threshold::new(2)?,
        rev_threshold: Threshold::new(1)?,
        admins: vec![&alice as &dyn Signer, &bob],
    }
    .plan(&client)?
    .execute(&Silent)?;
    drop((alice, bob));

    // The keys on this workstation, by name and SKI: none is opened yet.
    let listing = files.signature_keys()?;
    let keys: Vec<AdminInfo> = listing
        .entries
        .iter()
        .map(|e| AdminInfo {
            ski: e.ski,
            name: e.name.clone(),
        })
        .collect();
    let plan = Zeroize {
        units: client.units().iter().collect(),
        keys,
    }
    .plan(&client)?;
    for t in plan.targets() {
        let names: Vec<&str> = t.signers.iter().map(|k| k.name.as_str()).collect();
        let by = if names.is_empty() {
            "no signature needed".to_owned()
        } else {
            names.join(", ")
        };
        println!("crypto unit {}: signed by {by}", t.unit.num);
    }

    // Open only the keys the plan needs (one password each), then act.
    let mut opened = Vec::new();
    for k in plan.keys_needed() {
        let entry = listing.by_ski(&k.ski).ok_or("a listed key is gone")?;
        opened.push(FileSigner::open(entry, &password(k.name.as_str()))?);
    }
    let signers: Vec<&dyn Signer> = opened.iter().map(|s| s as &dyn Signer).collect();
    let report = plan.execute(&signers)?;

    for u in client.units() {
        if !client.query(u)?.imprint_mode() {
            return Err(format!("crypto unit {} is not in imprint mode", u.num).into());
        }
    }
    println!("OK: crypto units {:?} are in imprint mode", report.units);
    Ok(())
}
