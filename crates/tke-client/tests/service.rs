//! `Client::service`: key-service operations on an embedded fleet, their answers checked
//! as a query's are (signed by the unit, bound to this very request) and against the
//! request (as many keys as asked for); refusals and oversized requests name the unit
//! and the operation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tke_client::{Client, ClientError, EmbeddedFleet, FleetSpec, KnownUnit, Transport};
use tke_proto::{
    Command, ModuleError, ProtoError, ServiceOp, ServiceOutput, Threshold, UnitType, Vp,
    MAX_SERVICE_BATCH,
};
use tke_sigkey::Signer as _;
use tke_test_support::{ByteAt, MemSigner, Tamper, TamperingTransport};

fn generated(out: ServiceOutput) -> (Vp, usize) {
    match out {
        ServiceOutput::Generated(g) => (g.vp, g.keys.len()),
        other => panic!("not generated keys: {other:?}"),
    }
}

/// A recovery unit with a master key, behind a tampering wire.
fn recovery_with_a_key(client: &Client, alice: &MemSigner) -> (KnownUnit, Vp) {
    let u = client
        .units()
        .iter()
        .find(|u| u.unit_type() == UnitType::Recovery)
        .unwrap()
        .clone();
    client
        .run(&u, &Command::AddAdmin(alice.certificate().clone()), &[])
        .unwrap();
    let one = Threshold::new(1).unwrap();
    client
        .run(
            &u,
            &Command::SetThresholds {
                signature: one,
                revocation: one,
            },
            &[alice],
        )
        .unwrap();
    let vp = client
        .run(&u, &Command::GenerateRandomMk, &[alice])
        .unwrap();
    (u, Vp::from_slice(&vp).unwrap())
}

#[test]
fn service_answers_are_authentic_bound_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let fleet =
        Arc::new(EmbeddedFleet::create(&dir.path().join("local"), FleetSpec::default()).unwrap());
    let wire = Arc::new(TamperingTransport::new(fleet.clone()));
    let t: Arc<dyn Transport> = wire.clone();
    let client = Client::connect(vec![(t, fleet.ca().clone())]).unwrap();
    let alice = MemSigner::new("alice");
    let (u, vp) = recovery_with_a_key(&client, &alice);

    assert_eq!(
        generated(client.service(&u, ServiceOp::GenerateKeys(3)).unwrap()),
        (vp, 3)
    );
    let answered = wire.exchange_count() - 1;

    // An old answer replayed to a new request (another nonce): not bound to it.
    wire.tamper(u.id(), Tamper::Replay(answered));
    let e = client.service(&u, ServiceOp::GenerateKeys(3)).unwrap_err();
    assert!(
        matches!(&e, ClientError::Response { unit, source: ProtoError::ResponseBinding { what: "request hash", .. } } if *unit == u.id()),
        "{e:?}"
    );
    // A changed byte of the signed body: not signed by the unit.
    wire.tamper(
        u.id(),
        Tamper::FlipByte {
            at: ByteAt::End(80),
            mask: 0x01,
        },
    );
    let e = client.service(&u, ServiceOp::GenerateKeys(3)).unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Response {
                source: ProtoError::ResponseSignature { .. } | ProtoError::Der(_),
                ..
            }
        ),
        "{e:?}"
    );
    // Another unit's answer.
    let other = client.units().iter().find(|o| o.id() != u.id()).unwrap();
    client.query(other).unwrap();
    wire.tamper(u.id(), Tamper::AnswerOf(other.id()));
    let e = client.service(&u, ServiceOp::GenerateKeys(1)).unwrap_err();
    assert!(matches!(&e, ClientError::Response { .. }), "{e:?}");
    assert_eq!(wire.pending(), 0);

    // A refusal names the unit, the operation and the codes.
    let e = client
        .service(other, ServiceOp::GenerateKeys(1))
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::ServiceRefused { unit, op: "generateKeys", error }
            if *unit == other.id() && *error == ModuleError::SERVICE_NO_CURRENT),
        "{e:?}"
    );
    // Too big a batch is not sent at all.
    let sent = wire.exchange_count();
    let e = client
        .service(&u, ServiceOp::GenerateKeys(MAX_SERVICE_BATCH as u32 + 1))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "the key-service operation generateKeys for crypto unit {} was not sent",
            u.id().uuid()
        )
    );
    assert!(matches!(
        e,
        ClientError::ServiceRequest {
            source: ProtoError::ServiceBatch { count: 1025 },
            ..
        }
    ));
    assert_eq!(wire.exchange_count(), sent);
    // And the wire was the only thing wrong.
    assert_eq!(
        generated(client.service(&u, ServiceOp::GenerateKeys(1)).unwrap()),
        (vp, 1)
    );
}
