//! The client remembers each unit's counter from its authenticated answers, and recovers
//! when another administrator used the unit in between; in imprint mode, where anyone may
//! change the unit unsigned, a moved counter is reported as interference instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_client::{Client, ClientError, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{
    p256::ecdsa::SigningKey, AdminCertificate, AdminName, Command, CommandId, Threshold,
};
use tke_sigkey::Signer;
use tke_test_support::MemSigner;

/// An administrator whose key is in memory.
fn admin(name: &str) -> MemSigner {
    MemSigner::new(name)
}

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

/// Two clients of one fleet (2 operational + 2 recovery units, all in imprint mode).
fn two_clients() -> (tempfile::TempDir, Client, Client) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap();
    let ca = fleet.ca().clone();
    let t: Arc<dyn Transport> = Arc::new(fleet);
    let a = Client::connect(vec![(t.clone(), ca.clone())]).unwrap();
    let b = Client::connect(vec![(t, ca)]).unwrap();
    (dir, a, b)
}

#[test]
fn a_stale_counter_is_read_again_and_the_command_runs_once_out_of_imprint_mode() {
    let (_dir, a, b) = two_clients();
    let unit = &a.units()[0];
    let one = admin("one");
    let signers = [&one as &dyn Signer];

    // Leave imprint mode: from then on every change needs one's signature.
    a.run(unit, &Command::AddAdmin(one.certificate().clone()), &[])
        .unwrap();
    let thresholds = Command::SetThresholds {
        signature: Threshold::new(1).unwrap(),
        revocation: Threshold::new(1).unwrap(),
    };
    a.run(unit, &thresholds, &signers).unwrap();
    let after_a = a.query(unit).unwrap().counter;
    // Another workstation of the same administrator moves the counter on.
    b.run(
        &b.units()[0],
        &Command::AddAdmin(admin_cert("two")),
        &signers,
    )
    .unwrap();
    // A's remembered counter is stale: the unit refuses it (163, nothing runs), A reads
    // the counter again and the command runs exactly once.
    a.run(unit, &Command::AddAdmin(admin_cert("three")), &signers)
        .unwrap();
    let s = a.query(unit).unwrap();
    assert_eq!(s.admins.len(), 3);
    assert_eq!(s.counter, after_a + 2);
}

#[test]
fn in_imprint_mode_a_moved_counter_is_interference_and_nothing_is_retried() {
    let (_dir, a, b) = two_clients();
    let unit = &a.units()[0];

    a.run(unit, &Command::AddAdmin(admin_cert("one")), &[])
        .unwrap();
    let after_a = a.query(unit).unwrap().counter;
    // Anyone who reaches the unit may change it unsigned in imprint mode.
    b.run(&b.units()[0], &Command::AddAdmin(admin_cert("rogue")), &[])
        .unwrap();
    let err = a
        .run(unit, &Command::AddAdmin(admin_cert("two")), &[])
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Interference { unit: u, command: CommandId::AddAdmin, expected, found }
                if u == unit.id() && expected == after_a && found == after_a + 1
        ),
        "{err}"
    );
    // "two" was not installed: the unit holds one and the rogue, nothing more.
    let s = a.query(unit).unwrap();
    let names: Vec<&str> = s.admins.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["one", "rogue"]);
    assert_eq!(s.counter, after_a + 1);
}

#[test]
fn a_counted_command_never_retries() {
    let (_dir, a, b) = two_clients();
    let unit = &a.units()[1];
    let start = a.query(unit).unwrap().counter;

    a.run_counted(unit, &Command::AddAdmin(admin_cert("one")), &[], start)
        .unwrap();
    // The counter the caller accounts for is start + 1 now; another client moves it.
    b.run(&b.units()[1], &Command::AddAdmin(admin_cert("two")), &[])
        .unwrap();
    let err = a
        .run_counted(
            unit,
            &Command::AddAdmin(admin_cert("three")),
            &[],
            start + 1,
        )
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Interference { expected, found, .. } if expected == start + 1 && found == start + 2),
        "{err}"
    );
    assert!(err.to_string().ends_with(&format!(
        "its transaction counter is {}, not {}; AddAdmin was not retried",
        start + 2,
        start + 1
    )));
    assert_eq!(a.query(unit).unwrap().admins.len(), 2);
}
