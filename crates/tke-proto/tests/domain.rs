#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Domain separation of device-key signatures (protocol v3): a signature made for one
//! kind of message never verifies as another, even over the very same bytes, and a
//! signature of protocol version 1 (over the bare message) or 2 (under the version 2
//! label) is refused naming both versions.

mod common;

use common::{device_signer, fleet, older_signer, Fleet, Unit};
use der::{asn1::OctetString, Encode};
use p256::ecdsa::signature::Signer as _;
use tke_proto::{
    domain::DeviceSigError,
    transport::{self, CertifiedImporter, ImporterKey, SignedEnvelope},
    DeviceContext, Digest32, MasterKey, ProtoError, ResponseBody, SignedResponse, TransportError,
    PROTOCOL_VERSION,
};

/// The three wrappers a device signature travels in, each filled with `message` and
/// `signature` as they are, and verified as its own kind (A signs; B is the importer's
/// target). The request a response must answer is `REQUEST`.
fn verify_as(
    f: &Fleet,
    context: DeviceContext,
    signer: &Unit,
    message: &[u8],
    signature: &[u8],
) -> Result<(), ProtoError> {
    let message = OctetString::new(message).unwrap();
    let signature = OctetString::new(signature).unwrap();
    match context {
        DeviceContext::Response => SignedResponse {
            body: message,
            signature,
        }
        .verify(signer.key.verifying_key(), &signer.id, REQUEST)
        .map(drop),
        DeviceContext::Importer => CertifiedImporter {
            importer: message,
            signature,
        }
        .verify(&signer.cert)
        .map(drop),
        DeviceContext::Envelope => SignedEnvelope {
            envelope: message,
            signature,
            source_certificate: OctetString::new(signer.cert.der()).unwrap(),
            source_instance: None,
        }
        .verify(&f.ca)
        .map(drop),
    }
}

const REQUEST: &[u8] = b"the request";

/// A successful answer of unit A to `REQUEST`.
fn answer(f: &Fleet, output: Vec<u8>) -> ResponseBody {
    ResponseBody {
        unit_id: f.a.id,
        counter: 7,
        request_hash: Digest32::sha256(REQUEST),
        return_code: 0,
        reason_code: 0,
        output: OctetString::new(output).unwrap(),
    }
}

/// One genuine message of each kind, all from unit A's device key, with the signatures
/// the v3 signer gives them: (context, message DER, signature DER).
fn genuine(f: &Fleet) -> Vec<(DeviceContext, Vec<u8>, Vec<u8>)> {
    let body = answer(f, vec![1, 2, 3]);
    let response = SignedResponse::sign(&body, |c, m| {
        device_signer(&f.a.key)(c, m).map_err(|source| ProtoError::Signing { source })
    })
    .unwrap();
    let importer_key = ImporterKey::new(f.a.id, &common::secret_key(0x1f).public_key()).unwrap();
    let importer = CertifiedImporter::sign(&importer_key, device_signer(&f.a.key)).unwrap();
    let target = ImporterKey::new(f.b.id, &common::secret_key(0x2f).public_key()).unwrap();
    let mk = MasterKey::from_slice(&[0x5c; 32]).unwrap();
    let env = transport::soft_seal(&mk, f.a.id, &target).unwrap();
    let envelope = SignedEnvelope::sign(&env, &f.a.cert, device_signer(&f.a.key)).unwrap();
    vec![
        (
            DeviceContext::Response,
            response.body.as_bytes().to_vec(),
            response.signature.as_bytes().to_vec(),
        ),
        (
            DeviceContext::Importer,
            importer.importer.as_bytes().to_vec(),
            importer.signature.as_bytes().to_vec(),
        ),
        (
            DeviceContext::Envelope,
            envelope.envelope.as_bytes().to_vec(),
            envelope.signature.as_bytes().to_vec(),
        ),
    ]
}

/// The refusal each wrapper gives a signature that is not its own kind's.
fn is_bad_signature(context: DeviceContext, unit: &Unit, e: &ProtoError) -> bool {
    match (context, e) {
        (DeviceContext::Response, ProtoError::ResponseSignature { unit: u }) => *u == unit.id,
        (DeviceContext::Importer, ProtoError::Transport(what)) => {
            *what == TransportError::ImporterNotCertified
        }
        (DeviceContext::Envelope, ProtoError::Transport(what)) => {
            *what == TransportError::EnvelopeNotSigned
        }
        _ => false,
    }
}

#[test]
fn labels_are_distinct_and_prefix_free() {
    for a in DeviceContext::ALL {
        let label = a.label();
        assert!(label.starts_with(b"TKE-Protocol-v3 "), "{a:?}");
        assert_eq!(label.last(), Some(&0), "{a:?} ends in NUL");
        assert!(
            label[..label.len() - 1]
                .iter()
                .all(|b| b.is_ascii_graphic() || *b == b' '),
            "{a:?} is printable ASCII before its NUL"
        );
        for b in DeviceContext::ALL {
            if a != b {
                assert!(!b.label().starts_with(label), "{a:?} is a prefix of {b:?}");
            }
        }
        let m = b"\x30\x03\x02\x01\x05";
        assert_eq!(a.signed_bytes(m), [label, &m[..]].concat());
        assert_eq!(a.digest(m), Digest32::sha256(&a.signed_bytes(m)));
        assert_eq!(a.signed_bytes_of_version(3, m), a.signed_bytes(m));
        assert_eq!(a.signed_bytes_of_version(1, m), m.to_vec());
        let v2 = a.signed_bytes_of_version(2, m);
        assert!(
            v2.starts_with(b"TKE-Protocol-v2 ") && v2.ends_with(m),
            "{a:?}"
        );
        assert_eq!(
            &v2[b"TKE-Protocol-v2".len()..],
            &a.signed_bytes(m)[b"TKE-Protocol-v3".len()..],
            "version 2 and 3 labels differ in the version only"
        );
    }
    // Version 4 added service requests and kept version 3's labels.
    assert_eq!(PROTOCOL_VERSION, 4);
    for a in DeviceContext::ALL {
        assert_eq!(a.signed_bytes_of_version(4, b"m"), a.signed_bytes(b"m"));
    }
}

#[test]
fn each_signature_verifies_in_its_own_context_only() {
    let f = fleet();
    let key = f.a.key.verifying_key();
    for (signed_as, message, signature) in genuine(&f) {
        for context in DeviceContext::ALL {
            let direct = context.verify(key, &message, &signature);
            let wrapped = verify_as(&f, context, &f.a, &message, &signature);
            if context == signed_as {
                assert_eq!(direct, Ok(()), "{signed_as:?} in its own context");
                // A response that verifies still names the request; the others decode.
                if context != DeviceContext::Response {
                    wrapped.unwrap();
                }
            } else {
                assert_eq!(
                    direct,
                    Err(DeviceSigError::Invalid),
                    "a {signed_as:?} signature presented as {context:?}"
                );
                let e = wrapped.unwrap_err();
                assert!(
                    is_bad_signature(context, &f.a, &e),
                    "a {signed_as:?} signature presented as {context:?}: refused by its \
                     signature, not later; got {e:?}"
                );
            }
        }
    }
}

#[test]
fn the_same_bytes_signed_in_one_context_never_verify_in_another() {
    let f = fleet();
    let key = f.a.key.verifying_key();
    // Any bytes: the signature is checked before anything is decoded.
    let message = answer(&f, Vec::new()).to_der().unwrap();
    for signed_as in DeviceContext::ALL {
        let sig = f.a.key.sign(&signed_as.signed_bytes(&message));
        let sig: p256::ecdsa::DerSignature = sig;
        for context in DeviceContext::ALL {
            let r = context.verify(key, &message, sig.as_bytes());
            if context == signed_as {
                assert_eq!(r, Ok(()));
            } else {
                assert_eq!(
                    r,
                    Err(DeviceSigError::Invalid),
                    "{signed_as:?} as {context:?}"
                );
                let e = verify_as(&f, context, &f.a, &message, sig.as_bytes()).unwrap_err();
                assert!(is_bad_signature(context, &f.a, &e), "{e:?}");
            }
        }
    }
}

#[test]
fn older_signatures_are_refused_naming_both_versions() {
    let f = fleet();
    for version in [1, 2] {
        let expect = |r: Result<(), ProtoError>, unit: &Unit, kind: &str| match r {
            Err(ProtoError::ProtocolVersion {
                unit: u,
                what,
                found,
                expected,
            }) => {
                assert_eq!((u, what, found, expected), (unit.id, kind, version, 4));
            }
            other => panic!("expected ProtocolVersion for the {kind}, got {other:?}"),
        };
        // A response signed the older way.
        let body = answer(&f, Vec::new());
        let old = SignedResponse::sign(&body, |c, m| {
            older_signer(&f.a.key, version)(c, m).map_err(|source| ProtoError::Signing { source })
        })
        .unwrap();
        let r = old
            .verify(f.a.key.verifying_key(), &f.a.id, REQUEST)
            .map(drop);
        let e = r.as_ref().unwrap_err().to_string();
        expect(r, &f.a, "response");
        assert_eq!(
            e,
            format!(
                "the response from crypto unit {} is signed under protocol version {version}; \
                 version 4 is required",
                f.a.id.uuid()
            )
        );
        // An importer key certified by B the older way.
        let importer_key =
            ImporterKey::new(f.b.id, &common::secret_key(0x1f).public_key()).unwrap();
        let importer =
            CertifiedImporter::sign(&importer_key, older_signer(&f.b.key, version)).unwrap();
        expect(importer.verify(&f.b.cert).map(drop), &f.b, "importer key");
        // An envelope signed by A the older way.
        let mk = MasterKey::from_slice(&[0x5c; 32]).unwrap();
        let env = transport::soft_seal(&mk, f.a.id, &importer_key).unwrap();
        let envelope =
            SignedEnvelope::sign(&env, &f.a.cert, older_signer(&f.a.key, version)).unwrap();
        expect(envelope.verify(&f.ca).map(drop), &f.a, "envelope");
        // An older signature by another key is just a bad signature.
        let by_b = SignedEnvelope::sign(&env, &f.a.cert, older_signer(&f.b.key, version)).unwrap();
        assert!(is_bad_signature(
            DeviceContext::Envelope,
            &f.a,
            &by_b.verify(&f.ca).map(drop).unwrap_err()
        ));
    }
}

#[test]
fn malformed_signatures_are_refused_as_such() {
    let f = fleet();
    for context in DeviceContext::ALL {
        assert_eq!(
            context.verify(f.a.key.verifying_key(), b"m", &[0x30, 0x00]),
            Err(DeviceSigError::Malformed)
        );
        let e = verify_as(&f, context, &f.a, b"m", &[0x30, 0x00]).unwrap_err();
        assert!(is_bad_signature(context, &f.a, &e), "{e:?}");
    }
}
