#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Response authentication, module errors, and secrets kept out of `Debug` output.

mod common;

use common::fleet;
use der::{asn1::OctetString, Decode, Encode};
use p256::ecdsa::{signature::Signer as _, DerSignature, SigningKey};
use tke_proto::{
    Digest32, MasterKey, ModuleError, Nonce, ProtoError, Query, Request, ResponseBody,
    SignedResponse, UnitId, UnitStatus,
};

fn query_request(unit: UnitId) -> Vec<u8> {
    Request::Query(Query {
        unit_id: unit,
        nonce: Nonce([9; 16]),
    })
    .to_der()
    .unwrap()
}

fn body(unit: UnitId, request: &[u8]) -> ResponseBody {
    ResponseBody {
        unit_id: unit,
        counter: 3,
        request_hash: Digest32::sha256(request),
        return_code: 0,
        reason_code: 0,
        output: OctetString::new(vec![1, 2, 3]).unwrap(),
    }
}

fn sign(key: &SigningKey, body: &ResponseBody) -> SignedResponse {
    SignedResponse::sign(body, |c, m| {
        Ok::<DerSignature, ProtoError>(key.sign(&c.signed_bytes(m)))
    })
    .unwrap()
}

#[test]
fn a_good_response_verifies() {
    let f = fleet();
    let req = query_request(f.a.id);
    let signed = sign(&f.a.key, &body(f.a.id, &req));
    let wire = signed.to_der().unwrap();
    let got = SignedResponse::from_der(&wire)
        .unwrap()
        .verify(&f.a.cert.verifying_key(), &f.a.id, &req)
        .unwrap();
    assert_eq!(got, body(f.a.id, &req));
    assert_eq!(got.error(), None);
}

#[test]
fn signed_by_another_key_refused() {
    let f = fleet();
    let req = query_request(f.a.id);
    // Unit B's device key (a valid fleet key, but not A's), and the fleet CA's key.
    for key in [&f.b.key, &f.ca_key] {
        let signed = sign(key, &body(f.a.id, &req));
        match signed.verify(&f.a.cert.verifying_key(), &f.a.id, &req) {
            Err(ProtoError::ResponseSignature { unit }) => assert_eq!(unit, f.a.id),
            other => panic!("{other:?}"),
        }
    }
    // A body altered after signing.
    let mut signed = sign(&f.a.key, &body(f.a.id, &req));
    let mut b = signed.body.as_bytes().to_vec();
    let n = b.len();
    b[n - 1] ^= 1;
    signed.body = OctetString::new(b).unwrap();
    assert!(matches!(
        signed.verify(&f.a.cert.verifying_key(), &f.a.id, &req),
        Err(ProtoError::ResponseSignature { .. })
    ));
    // A signature that is not DER.
    let mut signed = sign(&f.a.key, &body(f.a.id, &req));
    signed.signature = OctetString::new(vec![0xde, 0xad]).unwrap();
    assert!(matches!(
        signed.verify(&f.a.cert.verifying_key(), &f.a.id, &req),
        Err(ProtoError::ResponseSignature { .. })
    ));
}

#[test]
fn body_for_another_unit_refused() {
    let f = fleet();
    let req = query_request(f.a.id);
    // Signed by A's key but naming B (e.g. a response relayed from the wrong unit).
    let signed = sign(&f.a.key, &body(f.b.id, &req));
    match signed.verify(&f.a.cert.verifying_key(), &f.a.id, &req) {
        Err(ProtoError::ResponseBinding { unit, what }) => {
            assert_eq!(unit, f.a.id);
            assert_eq!(what, "unit id");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn body_for_another_request_refused() {
    let f = fleet();
    let req = query_request(f.a.id);
    // Same unit, another nonce: an old answer replayed.
    let old = Request::Query(Query {
        unit_id: f.a.id,
        nonce: Nonce([8; 16]),
    })
    .to_der()
    .unwrap();
    let signed = sign(&f.a.key, &body(f.a.id, &old));
    match signed.verify(&f.a.cert.verifying_key(), &f.a.id, &req) {
        Err(ProtoError::ResponseBinding { what, .. }) => assert_eq!(what, "request hash"),
        other => panic!("{other:?}"),
    }
    // The hash covers the whole Request: a command answer does not answer a query.
    let cmd = tke_proto::Command::Zeroize.to_wire(f.a.id, 4).unwrap();
    let cmd_req = Request::Command(tke_proto::SignedCommand::unsigned(&cmd).unwrap())
        .to_der()
        .unwrap();
    let signed = sign(&f.a.key, &body(f.a.id, &cmd_req));
    assert!(signed
        .verify(&f.a.cert.verifying_key(), &f.a.id, &req)
        .is_err());
    assert!(signed
        .verify(&f.a.cert.verifying_key(), &f.a.id, &cmd_req)
        .is_ok());
}

#[test]
fn a_signed_status_answer() {
    let f = fleet();
    let req = query_request(f.a.id);
    let status = UnitStatus {
        unit_id: f.a.id,
        unit_type: tke_proto::UnitType::Recovery,
        counter: 3,
        sig_threshold: 0,
        rev_threshold: 0,
        admins: vec![],
        new_register: tke_proto::RegisterStatus::EMPTY,
        current_register: tke_proto::RegisterStatus::EMPTY,
        importer_pending: false,
        control_points: tke_proto::ControlPoints::NONE,
    };
    let mut b = body(f.a.id, &req);
    b.output = OctetString::new(status.to_der().unwrap()).unwrap();
    let got = sign(&f.a.key, &b)
        .verify(&f.a.cert.verifying_key(), &f.a.id, &req)
        .unwrap();
    assert_eq!(
        UnitStatus::decode_checked(got.output.as_bytes()).unwrap(),
        status
    );
}

#[test]
fn signing_errors_propagate() {
    let f = fleet();
    let r = SignedResponse::sign(&body(f.a.id, &[]), |_, _| {
        Err(ProtoError::Signing {
            source: "device key locked".into(),
        })
    });
    assert!(matches!(r, Err(ProtoError::Signing { .. })));
}

#[test]
fn module_errors() {
    let e = ModuleError::NOT_ENOUGH_SIGNATURES;
    assert_eq!(
        e.to_string(),
        "Return code: 208, Reason code: 0, Error message: Not enough signatures."
    );
    // A pair without its own text falls back to the text of the return code.
    assert_eq!(
        ModuleError::new(209, 99).text(),
        "Inconsistent attribute settings."
    );
    assert_eq!(
        ModuleError::new(80, 1).text(),
        ModuleError::new(80, 0).text()
    );
    assert_eq!(
        ModuleError::new(999, 0).text(),
        ModuleError::INTERNAL.text()
    );
    // Every named constant has a text of its own or its return code's.
    for e in [
        ModuleError::INVALID_UNIT,
        ModuleError::INVALID_IMPORTER,
        ModuleError::INVALID_DATA,
        ModuleError::ADMIN_NOT_FOUND,
        ModuleError::UNEXPECTED_ARGUMENTS,
        ModuleError::RANDOM_FORBIDDEN,
        ModuleError::EXPORT_FORBIDDEN,
        ModuleError::NOT_FOUND,
        ModuleError::VP_MISMATCH,
        ModuleError::REGISTER_STATE,
        ModuleError::SAME_VALUE,
        ModuleError::INVALID_COUNTER,
        ModuleError::IMPRINT_MODE,
        ModuleError::INVALID_SIGNATURE,
        ModuleError::MALFORMED_SIGNATURE,
        ModuleError::NOT_ENOUGH_SIGNATURES,
        ModuleError::SIG_THRESHOLD_ABOVE_ADMINS,
        ModuleError::REV_THRESHOLD_ABOVE_ADMINS,
        ModuleError::REMOVAL_BELOW_THRESHOLD,
        ModuleError::ADMIN_EXISTS,
        ModuleError::UNAUTHORIZED_SIGNER,
        ModuleError::TOO_MANY_ADMINS,
    ] {
        assert_ne!(e.text(), ModuleError::INTERNAL.text(), "{e:?}");
    }
}

// ---- Secrets ---------------------------------------------------------------------------

#[test]
fn master_key_debug_hides_the_value() {
    let key = [0xa7u8; 32];
    let mk = MasterKey::from_slice(&key).unwrap();
    let debug = format!("{mk:?}");
    let alt = format!("{mk:#?}");
    for out in [&debug, &alt] {
        assert!(!out.contains(&hex::encode(key)), "{out}");
        assert!(!out.contains(&hex::encode_upper(key)), "{out}");
        assert!(!out.contains("a7a7a7"), "{out}");
        assert!(!out.contains("167"), "decimal bytes in {out}");
        assert!(out.contains("redacted"), "{out}");
        // The VP is public and identifies the key.
        assert!(out.contains(&mk.vp().to_hex()), "{out}");
    }
    // A random key too.
    let mk = MasterKey::random();
    let out = format!("{mk:?}");
    assert!(!out.contains(&hex::encode(mk.expose_secret())), "{out}");
    // A wrong-length key is refused with the lengths, and the error shows no bytes.
    let err = MasterKey::from_slice(&[0xa7; 31])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("32") && err.contains("31"), "{err}");
    assert!(!err.contains("a7"), "{err}");
}

#[test]
fn transport_errors_show_no_key_material() {
    let f = fleet();
    let secret = common::secret_key(0x1f);
    let importer = tke_proto::transport::ImporterKey::new(f.b.id, &secret.public_key()).unwrap();
    let key = [0xb3u8; 32];
    let mk = MasterKey::from_slice(&key).unwrap();
    let mut env = tke_proto::transport::soft_seal(&mk, f.a.id, &importer).unwrap();
    env.vp = tke_proto::Vp([0; 32]);
    let err = tke_proto::transport::soft_open(&env, &secret)
        .err()
        .unwrap();
    for out in [format!("{err:?}"), err.to_string()] {
        assert!(!out.contains(&hex::encode(key)), "{out}");
        assert!(!out.contains(&hex::encode(secret.to_bytes())), "{out}");
    }
}

/// ECDSA signatures are malleable: (r, n − s) verifies as well as (r, s). Verifiers
/// accept both (docs/protocol.md §1); nothing counts signatures by their bytes.
#[test]
fn high_s_signatures_verify() {
    use p256::ecdsa::{signature::Verifier, Signature};
    let f = fleet();
    let msg = b"TKE";
    let sig: Signature = f.a.key.sign(msg);
    let flipped = Signature::from_scalars(sig.r().to_bytes(), (-*sig.s()).to_bytes()).unwrap();
    assert_ne!(flipped, sig);
    let vk = f.a.cert.verifying_key();
    assert!(vk.verify(msg, &sig.to_der()).is_ok());
    assert!(vk.verify(msg, &flipped.to_der()).is_ok());
}
