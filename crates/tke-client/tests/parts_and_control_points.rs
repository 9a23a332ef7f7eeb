//! Master key parts and control points through the client and the embedded fleet, as a
//! workstation drives them: every operational unit makes an importer key, the workstation
//! seals the same parts to each verified importer key and loads them (`importMkParts`),
//! every unit answers the same VP, and a recovery unit refuses the parts; the control
//! point commands change the mask every unit reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_client::{Client, ClientError, EmbeddedFleet, FleetSpec, Transport};
use tke_proto::{
    der::Decode,
    parts::{self, MasterKeyPart},
    transport::CertifiedImporter,
    Command, CommandId, ControlPoint, ControlPoints, ModuleError, RegisterState, Threshold,
    UnitType, Vp,
};
use tke_sigkey::Signer;
use tke_test_support::MemSigner;

#[test]
fn parts_load_every_operational_unit_and_control_points_change_every_mask() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap();
    let ca = fleet.ca().clone();
    let t: Arc<dyn Transport> = Arc::new(fleet);
    let client = Client::connect(vec![(t, ca)]).unwrap();
    let (one, two) = (MemSigner::new("one"), MemSigner::new("two"));
    let quorum = [&one as &dyn Signer, &two];
    let two_of_two = Threshold::new(2).unwrap();
    for u in client.units() {
        for a in [&one, &two] {
            client
                .run(u, &Command::AddAdmin(a.certificate().clone()), &[])
                .unwrap();
        }
        let thresholds = Command::SetThresholds {
            signature: two_of_two,
            revocation: two_of_two,
        };
        client.run(u, &thresholds, &quorum).unwrap();
    }

    // The parts, sealed to each unit's importer key as the certificate verifies it.
    let key_parts = [MasterKeyPart::random(), MasterKeyPart::random()];
    let load = |u| {
        let out = client.run(u, &Command::GenerateImporter, &[&one]).unwrap();
        let importer = CertifiedImporter::from_der(&out).unwrap();
        let req = parts::seal_parts(&key_parts, &importer, &u.certificate).unwrap();
        client.run(u, &Command::ImportMkParts(Box::new(req)), &[&two])
    };
    let mut vps = Vec::new();
    for u in client.units() {
        match u.unit_type() {
            UnitType::Recovery => match load(u).unwrap_err() {
                ClientError::Module { command, error, .. } => assert_eq!(
                    (command, error),
                    (CommandId::ImportMkParts, ModuleError::LOAD_FORBIDDEN)
                ),
                other => panic!("{other:?}"),
            },
            _ => vps.push(Vp::from_slice(&load(u).unwrap()).unwrap()),
        }
    }
    assert_eq!(vps.len(), 2);
    assert!(vps.iter().all(|vp| *vp == vps[0]), "one key on every unit");
    for u in client.units() {
        let s = client.query(u).unwrap();
        if u.unit_type() == UnitType::Recovery {
            assert_eq!(s.new_register.state, RegisterState::Empty);
            assert!(s.importer_pending, "refused before the importer key");
        } else {
            assert_eq!(s.new_register.state, RegisterState::FullUncommitted);
            assert_eq!(s.new_register.vp, Some(vps[0]));
            assert!(!s.importer_pending);
        }
    }

    // Control points: clear XCP_CPB_BTC everywhere, then set it again on one unit.
    let btc = ControlPoints::of(&[ControlPoint::BTC]);
    for u in client.units() {
        assert_eq!(
            client.query(u).unwrap().control_points,
            ControlPoints::DEFAULT
        );
        let out = client
            .run(u, &Command::RemoveControlPoints(btc), &quorum)
            .unwrap();
        assert_eq!(
            ControlPoints::from_slice(&out).unwrap(),
            ControlPoints::DEFAULT.difference(btc)
        );
    }
    let first = &client.units()[0];
    client
        .run(first, &Command::AddControlPoints(btc), &quorum)
        .unwrap();
    for u in client.units() {
        assert_eq!(
            client
                .query(u)
                .unwrap()
                .control_points
                .contains(ControlPoint::BTC),
            u.id() == first.id()
        );
    }
}
