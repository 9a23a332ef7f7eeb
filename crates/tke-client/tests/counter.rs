//! The client remembers each unit's counter from its authenticated answers, and recovers
//! when another client used the unit in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_client::{Client, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{p256::ecdsa::SigningKey, AdminCertificate, AdminName, Command};

fn admin_cert(name: &str) -> AdminCertificate {
    use tke_proto::p256::ecdsa::{signature::Signer as _, Signature};
    let key = SigningKey::random(&mut rand_core::OsRng);
    let pk = tke_proto::p256::PublicKey::from(key.verifying_key());
    AdminCertificate::build(
        &AdminName::new(name).unwrap(),
        &pk,
        Box::new(move |m| {
            let s: Signature = key.sign(m);
            Ok(s.to_der())
        }),
    )
    .unwrap()
}

#[test]
fn a_stale_counter_is_read_again_and_the_command_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap();
    let ca = fleet.ca().clone();
    let t: Arc<dyn Transport> = Arc::new(fleet);
    let a = Client::connect(vec![(t.clone(), ca.clone())]).unwrap();
    let b = Client::connect(vec![(t, ca)]).unwrap();
    let unit = &a.units()[0];

    // Imprint mode: adding administrators needs no signature.
    a.run(unit, &Command::AddAdmin(admin_cert("one")), &[])
        .unwrap();
    let after_a = a.query(unit).unwrap().counter;
    // Another client moves the counter on.
    b.run(&b.units()[0], &Command::AddAdmin(admin_cert("two")), &[])
        .unwrap();
    // A's remembered counter is stale: the unit refuses it (163, nothing runs), A reads
    // the counter again and the command runs exactly once.
    a.run(unit, &Command::AddAdmin(admin_cert("three")), &[])
        .unwrap();
    let s = a.query(unit).unwrap();
    assert_eq!(s.admins.len(), 3);
    assert_eq!(s.counter, after_a + 2);
}
