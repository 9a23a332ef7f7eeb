//! Protocol version 3: a unit whose device key signs its answers the version 1 way (over
//! the bare response body, without the response label) or the version 2 way (under the
//! version 2 label) is refused by the client with an error naming the unit and both
//! versions, and nothing it answered is returned. The same unit signing the version 3 way
//! is accepted, so the version is the only difference.
//!
//! The same fake unit, certified and listed as a recovery unit, signs a status that says
//! operational: the client refuses that status, naming the unit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_client::{Client, ClientError, EmbeddedFleet, FleetSpec, Transport, UnitDescriptor};
use tke_proto::{
    der::Decode,
    p256::ecdsa::{signature::Signer as _, SigningKey},
    DeviceCertificate, InstanceId, ProtoError, Request, UnitDescription, UnitId, UnitType,
};
use tke_test_support::versions::imprint_answer;

/// A fake unit, certified by the fleet CA, that answers every query with an imprint-mode
/// status, signed the way protocol version 1, 2 or 3 signs.
struct FakeUnit {
    key: SigningKey,
    descriptor: UnitDescriptor,
    version: u32,
}

impl FakeUnit {
    /// A fake unit certified and listed as `unit_type`; its status always says operational.
    fn new(fleet: &EmbeddedFleet, version: u32, unit_type: UnitType) -> Self {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let id = UnitId::random();
        let ca_key = fleet.ca_key().unwrap();
        let mut descriptor = fleet.list_units().unwrap().remove(0);
        let description = UnitDescription {
            unit_type,
            instance_id: InstanceId::from_uuid(&descriptor.instance.0).unwrap(),
        };
        let cert = DeviceCertificate::issue(
            fleet.ca(),
            &id,
            &description,
            &key.verifying_key().into(),
            Box::new(move |m| Ok(ca_key.sign(m))),
        )
        .unwrap();
        descriptor.unit_id = id;
        descriptor.unit_type = unit_type;
        descriptor.device_certificate = cert.der().to_vec();
        Self {
            key,
            descriptor,
            version,
        }
    }
}

impl Transport for FakeUnit {
    fn describe(&self) -> String {
        format!("a protocol version {} unit", self.version)
    }

    fn list_units(&self) -> Result<Vec<UnitDescriptor>, ClientError> {
        Ok(vec![self.descriptor.clone()])
    }

    fn exchange(&self, unit: &UnitId, request_der: &[u8]) -> Result<Vec<u8>, ClientError> {
        assert!(matches!(
            Request::from_der(request_der).unwrap(),
            Request::Query(_)
        ));
        Ok(imprint_answer(*unit, &self.key, request_der, self.version))
    }
}

fn client_for(version: u32, unit_type: UnitType) -> (tempfile::TempDir, Client, UnitId) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap();
    let fake = FakeUnit::new(&fleet, version, unit_type);
    let id = fake.descriptor.unit_id;
    let t: Arc<dyn Transport> = Arc::new(fake);
    let client = Client::connect(vec![(t, fleet.ca().clone())]).unwrap();
    (dir, client, id)
}

#[test]
fn a_version_3_unit_is_answered() {
    let (_dir, client, id) = client_for(3, UnitType::Operational);
    let status = client.query(client.unit(&id).unwrap()).unwrap();
    assert_eq!(status.unit_id, id);
}

#[test]
fn older_units_are_refused_naming_both_versions() {
    for version in [1, 2] {
        let (_dir, client, id) = client_for(version, UnitType::Operational);
        let e = client.query(client.unit(&id).unwrap()).unwrap_err();
        match &e {
            ClientError::Response {
                unit,
                source:
                    ProtoError::ProtocolVersion {
                        unit: signer,
                        what,
                        found,
                        expected,
                    },
            } => {
                assert_eq!(
                    (*unit, *signer, *what, *found, *expected),
                    (id, id, "response", version, 4)
                );
            }
            other => panic!("expected a protocol version error, got {other:?}"),
        }
        let source = std::error::Error::source(&e).expect("the protocol error is the source");
        assert_eq!(
            source.to_string(),
            format!(
                "the response from crypto unit {} is signed under protocol version {version}; \
                 version 4 is required",
                id.uuid()
            )
        );
    }
}

#[test]
fn a_signed_status_that_gives_another_type_than_the_certificate_is_refused() {
    let (_dir, client, id) = client_for(3, UnitType::Recovery);
    let unit = client.unit(&id).unwrap();
    assert_eq!(unit.unit_type(), UnitType::Recovery);
    let e = client.query(unit).unwrap_err();
    match &e {
        ClientError::DisagreesWithCertificate {
            unit,
            what,
            stated,
            certified,
        } => assert_eq!(
            (*unit, *what, stated.as_str(), certified.as_str()),
            (
                id,
                "the signed status gives the type",
                "OPERATIONAL",
                "RECOVERY"
            )
        ),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains(&id.uuid()), "{e}");
}
