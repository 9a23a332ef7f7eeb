//! Key-service requests (protocol version 4) through a real `tke-unitd`: the server passes
//! them to its units at `.../service` as it passes queries and commands, a full batch fits
//! its request body limit, and the client checks the signed, bound answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use tke_client::{ClientError, Transport};
use tke_proto::{
    der::Encode, Command, ModuleError, Request, Rewrap, SecretOctets, ServiceOp, ServiceOutput,
    ServiceRequest, UnitType, UnwrapData, Vp, WrapData, MAX_SERVICE_BATCH,
};

#[test]
fn service_requests_reach_the_units_of_a_server() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("srv");
    let port = free_port();
    init(&dir, port, &["--operational", "1", "--recovery", "1"]);
    let mut server = ServerProc::start(&dir, port);
    let ca = ca_of(&dir);
    let t: Arc<dyn Transport> = Arc::new(transport(&server.url(), &ca, &dir.join("api-key")));
    let client = tke_client::Client::connect(vec![(t, ca.clone())]).unwrap();
    let alice = MemSigner::new("alice");
    set_up(&client, &alice);
    let of = |ty| client.units().iter().find(|u| u.unit_type() == ty).unwrap();
    let (rec, op) = (of(UnitType::Recovery), of(UnitType::Operational));
    let vp = |out: Vec<u8>| Vp::from_slice(&out).unwrap();
    let vp1 = vp(client
        .run(rec, &Command::GenerateRandomMk, &[&alice])
        .unwrap());

    let counter = client.query(rec).unwrap().counter;
    let ServiceOutput::Generated(g) = client.service(rec, ServiceOp::GenerateKeys(2)).unwrap()
    else {
        panic!("not generated keys")
    };
    assert_eq!((g.vp, g.keys.len()), (vp1, 2));
    let data = [0x33u8; 32];
    let ServiceOutput::Wrapped(wrapped) = client
        .service(
            rec,
            ServiceOp::WrapData(WrapData {
                vp: vp1,
                root: g.keys[0].clone(),
                data: SecretOctets::new(data.to_vec()),
            }),
        )
        .unwrap()
    else {
        panic!("not wrapped data")
    };
    let unwrap = UnwrapData {
        vp: vp1,
        root: g.keys[0].clone(),
        wrapped: tke_proto::der::asn1::OctetString::new(wrapped).unwrap(),
    };
    assert_eq!(
        client
            .service(rec, ServiceOp::UnwrapData(unwrap.clone()))
            .unwrap(),
        ServiceOutput::Unwrapped(SecretOctets::new(data.to_vec()))
    );
    assert_eq!(client.query(rec).unwrap().counter, counter, "nothing ran");
    // The operational unit has no master key: a signed refusal, named.
    let e = client
        .service(op, ServiceOp::UnwrapData(unwrap))
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::ServiceRefused { unit, op: "unwrapData", error }
            if *unit == op.id() && *error == ModuleError::SERVICE_NO_REGISTER),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "crypto unit {} refused the key-service operation unwrapData: Return code: 96, \
             Reason code: 48, Error message: No master key register has this verification \
             pattern (the current register Valid, or the new register Full Committed).",
            op.id().uuid()
        )
    );
    // An oversized batch is not even sent.
    let e = client
        .service(rec, ServiceOp::GenerateKeys(MAX_SERVICE_BATCH as u32 + 1))
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::ServiceRequest {
                op: "generateKeys",
                ..
            }
        ),
        "{e:?}"
    );

    // A full rewrap batch fits the server's default body limit.
    let vp2 = vp(client
        .run(rec, &Command::GenerateRandomMk, &[&alice])
        .unwrap());
    client.run(rec, &Command::CommitMk(vp2), &[&alice]).unwrap();
    let ServiceOutput::Generated(full) = client
        .service(rec, ServiceOp::GenerateKeys(MAX_SERVICE_BATCH as u32))
        .unwrap()
    else {
        panic!("not generated keys")
    };
    let rewrap = ServiceOp::Rewrap(Rewrap {
        from: vp1,
        to: vp2,
        keys: full.keys.clone(),
    });
    let der = Request::Service(ServiceRequest::new(rec.id(), rewrap.clone()))
        .to_der()
        .unwrap();
    assert!(
        der.len() > 40 * 1024,
        "a large request: {} bytes",
        der.len()
    );
    let ServiceOutput::Rewrapped(keys) = client.service(rec, rewrap).unwrap() else {
        panic!("not rewrapped keys")
    };
    assert_eq!(keys.len(), MAX_SERVICE_BATCH);
    server.wait_for_log("command=\"rewrap\"", Duration::from_secs(10));
    assert!(server.logs().contains("kind=\"service\""));

    // The audit log through `.../audit` (the server's journal store): every command that
    // used the counter, chained up to the head the unit signed; service requests are not
    // commands and leave no record.
    let log = client.audit(rec, 0).unwrap();
    let records = tke_proto::audit::verify_chain(&log).unwrap();
    let counter = client.query(rec).unwrap().counter;
    assert_eq!(
        records.iter().map(|r| r.counter).collect::<Vec<_>>(),
        (1..=counter).collect::<Vec<_>>()
    );
    assert_eq!(
        records.last().unwrap().command,
        tke_proto::CommandId::CommitMk
    );
    server.wait_for_log("kind=\"audit\"", Duration::from_secs(10));

    // A service request at the query endpoint: 400, and it never reaches the unit.
    let r = raw(
        port,
        &ca,
        &request(
            "POST",
            &format!(
                "/v1/tke/{}/hsms/{}/query",
                rec.instance().0,
                rec.id().uuid()
            ),
            &[
                ("Authorization", &format!("Bearer {}", key(&dir, "api-key"))),
                ("Content-Type", "application/vnd.tke.request+der"),
                ("Content-Length", &der.len().to_string()),
            ],
            &der,
        ),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "wrong_request_kind");
    assert_eq!(
        r.json()["message"],
        "This endpoint takes a query (Request.query); send queries to .../query, commands to \
         .../command, service requests to .../service and audit queries to .../audit."
    );
}
