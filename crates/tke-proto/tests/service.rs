#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Key-service requests: the sizes the protocol allows, the request size limit a server
//! sets, the checks on answers, and the redaction of data keys.

use der::{asn1::OctetString, Decode, Encode};
use tke_proto::{
    GeneratedKeys, ModuleError, ProtoError, Request, ResponseBody, Rewrap, SecretOctets, ServiceOp,
    ServiceOutput, ServiceRequest, UnitId, UnwrapData, Vp, WrapData, MAX_SERVICE_BATCH,
    MAX_SERVICE_DATA,
};

fn wrapped(i: usize) -> OctetString {
    let mut k = [0xa5u8; 40];
    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
    OctetString::new(k.to_vec()).unwrap()
}

fn rewrap(n: usize) -> ServiceOp {
    ServiceOp::Rewrap(Rewrap {
        from: Vp([1; 32]),
        to: Vp([2; 32]),
        keys: (0..n).map(wrapped).collect(),
    })
}

fn wrap(len: usize) -> ServiceOp {
    ServiceOp::WrapData(WrapData {
        vp: Vp([1; 32]),
        root: wrapped(0),
        data: SecretOctets::new(vec![7; len]),
    })
}

#[test]
fn batch_and_data_sizes_are_checked() {
    for n in [1, MAX_SERVICE_BATCH] {
        ServiceOp::GenerateKeys(n as u32).check().unwrap();
        rewrap(n).check().unwrap();
    }
    for n in [0, MAX_SERVICE_BATCH + 1] {
        for op in [ServiceOp::GenerateKeys(n as u32), rewrap(n)] {
            match op.check() {
                Err(ProtoError::ServiceBatch { count }) => assert_eq!(count, n),
                other => panic!("{} of {n}: {other:?}", op.name()),
            }
        }
    }
    let e = ServiceOp::GenerateKeys(0).check().unwrap_err();
    assert_eq!(
        e.to_string(),
        "a key-service batch of 0 keys is not allowed: send 1 to 1024 keys per request"
    );
    for len in [8, 16, 32, MAX_SERVICE_DATA] {
        wrap(len).check().unwrap();
    }
    for len in [
        0,
        1,
        7,
        31,
        MAX_SERVICE_DATA - 1,
        MAX_SERVICE_DATA + 1,
        MAX_SERVICE_DATA + 8,
    ] {
        match wrap(len).check() {
            Err(ProtoError::ServiceData { len: l }) => assert_eq!(l, len),
            other => panic!("data of {len}: {other:?}"),
        }
    }
}

/// The largest requests and answers fit the default body limit of tke-unitd (64 KiB),
/// with room for the HTTP layer's own limits.
#[test]
fn a_full_batch_fits_a_server_request() {
    let unit = UnitId([3; 16]);
    let req = Request::Service(ServiceRequest::new(unit, rewrap(MAX_SERVICE_BATCH)));
    let der = req.to_der().unwrap();
    assert!(der.len() < 60 * 1024, "{} bytes", der.len());
    // And it decodes back, every key in order.
    assert_eq!(Request::from_der(&der).unwrap(), req);
    let out = ServiceOutput::Rewrapped((0..MAX_SERVICE_BATCH).map(wrapped).collect());
    let body = ResponseBody {
        unit_id: unit,
        counter: u64::MAX,
        request_hash: tke_proto::Digest32([0; 32]),
        return_code: 0,
        reason_code: 0,
        output: OctetString::new(out.to_output().unwrap().to_vec()).unwrap(),
    };
    assert!(body.to_der().unwrap().len() < 60 * 1024);
}

#[test]
fn outputs_are_checked_against_the_request() {
    let unit = UnitId([3; 16]);
    let gen = ServiceRequest::new(unit, ServiceOp::GenerateKeys(2));
    let two = GeneratedKeys {
        vp: Vp([1; 32]),
        keys: vec![wrapped(0), wrapped(1)],
    };
    let out = ServiceOutput::Generated(two.clone());
    assert_eq!(gen.decode_output(&out.to_output().unwrap()).unwrap(), out);
    let one = GeneratedKeys {
        keys: vec![wrapped(0)],
        ..two
    };
    match gen.decode_output(&one.to_der().unwrap()) {
        Err(ProtoError::ServiceOutput { unit: u, what }) => {
            assert_eq!(u, unit);
            assert_eq!(what, "the number of keys generated");
        }
        other => panic!("{other:?}"),
    }

    let rw = ServiceRequest::new(unit, rewrap(3));
    let three = ServiceOutput::Rewrapped((10..13).map(wrapped).collect());
    assert_eq!(
        rw.decode_output(&three.to_output().unwrap()).unwrap(),
        three
    );
    let short = vec![wrapped(1)].to_der().unwrap();
    assert!(matches!(
        rw.decode_output(&short),
        Err(ProtoError::ServiceOutput { .. })
    ));
    assert!(matches!(
        rw.decode_output(b"\x30\x01"),
        Err(ProtoError::Der(_))
    ));

    let w = ServiceRequest::new(unit, wrap(16));
    assert_eq!(
        w.decode_output(b"abc").unwrap(),
        ServiceOutput::Wrapped(b"abc".to_vec())
    );
    assert!(w.decode_output(b"").is_err());
    let u = ServiceRequest::new(
        unit,
        ServiceOp::UnwrapData(UnwrapData {
            vp: Vp([1; 32]),
            root: wrapped(0),
            wrapped: wrapped(1),
        }),
    );
    assert_eq!(
        u.decode_output(b"key").unwrap(),
        ServiceOutput::Unwrapped(SecretOctets::new(b"key".to_vec()))
    );
    assert!(u.decode_output(b"").is_err());
}

#[test]
fn requests_get_fresh_nonces() {
    let unit = UnitId([3; 16]);
    let a = ServiceRequest::new(unit, ServiceOp::GenerateKeys(1));
    let b = ServiceRequest::new(unit, ServiceOp::GenerateKeys(1));
    assert_ne!(a.nonce, b.nonce);
}

#[test]
fn data_keys_are_redacted() {
    let secret = SecretOctets::new(b"very secret key".to_vec());
    let shown = format!("{:?}", wrap(16));
    assert!(!shown.contains("7, 7"), "{shown}");
    assert!(shown.contains("16 bytes, <redacted>"), "{shown}");
    let shown = format!("{:?}", ServiceOutput::Unwrapped(secret));
    assert!(!shown.contains("secret key"), "{shown}");
    assert!(!shown.contains("118"), "{shown}"); // 'v'
}

#[test]
fn refusal_codes_have_their_own_texts() {
    for (e, text) in [
        (
            ModuleError::SERVICE_NO_REGISTER,
            "No master key register has this verification pattern",
        ),
        (
            ModuleError::SERVICE_WRAPPED_KEY,
            "A wrapped root key is malformed",
        ),
        (
            ModuleError::SERVICE_WRAPPED_DATA,
            "The wrapped data is malformed",
        ),
        (ModuleError::SERVICE_BATCH, "must name 1 to 1024 keys"),
        (
            ModuleError::SERVICE_DATA,
            "must be 8 to 4096 bytes, a multiple of 8",
        ),
        (
            ModuleError::SERVICE_NO_CURRENT,
            "needs a Valid current master key register",
        ),
        (
            ModuleError::SERVICE_REWRAP_STATE,
            "Rewrapping needs the current register Valid",
        ),
    ] {
        assert!(e.text().contains(text), "{e}");
    }
}
