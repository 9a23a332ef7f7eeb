#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Master key transport: importer certification, seal, sign, verify, open — and every
//! way it must fail.

mod common;

use common::{device_signer, fleet, Fleet};
use der::{asn1::OctetString, Decode, Encode};
use tke_proto::{
    transport::{self, CertifiedImporter, ImporterKey, MkEnvelope, SignedEnvelope},
    MasterKey, ProtoError, TransportError, UnitId, Vp,
};

const IMPORTER: u8 = 0x1f;

/// B certifies an importer key; A seals `mk` to it and signs; returns the signed envelope.
fn export(f: &Fleet, mk: &MasterKey) -> (ImporterKey, SignedEnvelope) {
    let secret = common::secret_key(IMPORTER);
    let importer = ImporterKey::new(f.b.id, &secret.public_key()).unwrap();
    let certified = CertifiedImporter::sign(&importer, device_signer(&f.b.key)).unwrap();
    // The source checks the target's certificate chain and the certification.
    let target = tke_proto::DeviceCertificate::verify(f.b.cert.der(), &f.ca).unwrap();
    let checked = certified.verify(&target).unwrap();
    assert_eq!(checked, importer);
    let env = transport::soft_seal(mk, f.a.id, &checked).unwrap();
    let signed = SignedEnvelope::sign(&env, &f.a.cert, device_signer(&f.a.key)).unwrap();
    (importer, signed)
}

fn mk() -> MasterKey {
    MasterKey::from_slice(&[0x5c; 32]).unwrap()
}

fn expect_transport(r: Result<MasterKey, ProtoError>, expected: TransportError) {
    match r {
        Err(ProtoError::Transport(kind)) => assert_eq!(kind, expected),
        Err(other) => panic!("expected Transport({expected:?}), got {other:?}"),
        Ok(k) => panic!(
            "expected Transport({expected:?}), got a key with VP {}",
            k.vp()
        ),
    }
}

#[test]
fn round_trip() {
    let f = fleet();
    let mk = mk();
    let (importer, signed) = export(&f, &mk);

    // Over the wire and back.
    let signed = SignedEnvelope::from_der(&signed.to_der().unwrap()).unwrap();
    let (env, source) = signed.verify(&f.ca).unwrap();
    assert_eq!(source.unit_id(), f.a.id);
    assert_eq!(env.source_unit_id, f.a.id);
    assert_eq!(env.target_unit_id, f.b.id);
    assert_eq!(env.importer_key_id, importer.key_id);
    assert_eq!(env.ephemeral_public_key.as_bytes().len(), 65);
    assert_eq!(env.wrapped_key.as_bytes().len(), 40);
    assert_eq!(env.vp, mk.vp());

    let got = transport::soft_open(&env, &common::secret_key(IMPORTER)).unwrap();
    assert_eq!(got.vp(), mk.vp());
    assert_eq!(got.expose_secret(), mk.expose_secret());
}

#[test]
fn each_seal_uses_a_fresh_ephemeral_key() {
    let f = fleet();
    let (_, a) = export(&f, &mk());
    let (_, b) = export(&f, &mk());
    let (a, _) = a.verify(&f.ca).unwrap();
    let (b, _) = b.verify(&f.ca).unwrap();
    assert_ne!(a.ephemeral_public_key, b.ephemeral_public_key);
    assert_ne!(a.wrapped_key, b.wrapped_key);
}

fn opened_envelope(f: &Fleet) -> MkEnvelope {
    let (_, signed) = export(f, &mk());
    signed.verify(&f.ca).unwrap().0
}

#[test]
fn wrong_importer_secret_fails() {
    let f = fleet();
    let env = opened_envelope(&f);
    let other = common::secret_key(0x2f);
    expect_transport(
        transport::soft_open(&env, &other),
        TransportError::OtherImporter,
    );
    // Even if the envelope is relabelled for the other key, the KEK differs.
    let mut relabelled = env.clone();
    relabelled.importer_key_id = ImporterKey::new(f.b.id, &other.public_key())
        .unwrap()
        .key_id;
    expect_transport(
        transport::soft_open(&relabelled, &other),
        TransportError::WrappedKeyIntegrity,
    );
}

#[test]
fn flipped_wrapped_key_fails() {
    let f = fleet();
    let env = opened_envelope(&f);
    for i in 0..env.wrapped_key.as_bytes().len() {
        let mut bad = env.clone();
        let mut w = bad.wrapped_key.as_bytes().to_vec();
        w[i] ^= 0x80;
        bad.wrapped_key = OctetString::new(w).unwrap();
        expect_transport(
            transport::soft_open(&bad, &common::secret_key(IMPORTER)),
            TransportError::WrappedKeyIntegrity,
        );
    }
    // Truncated or extended.
    let mut bad = env.clone();
    bad.wrapped_key = OctetString::new(&env.wrapped_key.as_bytes()[..32]).unwrap();
    assert!(transport::soft_open(&bad, &common::secret_key(IMPORTER)).is_err());
}

#[test]
fn unit_ids_are_bound_by_the_kdf() {
    let f = fleet();
    let env = opened_envelope(&f);
    let other = UnitId([0x77; 16]);
    let mut bad = env.clone();
    bad.target_unit_id = other;
    expect_transport(
        transport::soft_open(&bad, &common::secret_key(IMPORTER)),
        TransportError::WrappedKeyIntegrity,
    );
    let mut bad = env.clone();
    bad.source_unit_id = other;
    expect_transport(
        transport::soft_open(&bad, &common::secret_key(IMPORTER)),
        TransportError::WrappedKeyIntegrity,
    );
    // Swapping source and target changes the context too.
    let mut bad = env;
    std::mem::swap(&mut bad.source_unit_id, &mut bad.target_unit_id);
    expect_transport(
        transport::soft_open(&bad, &common::secret_key(IMPORTER)),
        TransportError::WrappedKeyIntegrity,
    );
}

#[test]
fn ephemeral_key_is_bound() {
    let f = fleet();
    let env = opened_envelope(&f);
    // Another valid point: the KEK changes.
    let mut bad = env.clone();
    let g = common::public_key(&common::signing_key(0x01));
    bad.ephemeral_public_key = OctetString::new(transport::point_bytes(&g).to_vec()).unwrap();
    expect_transport(
        transport::soft_open(&bad, &common::secret_key(IMPORTER)),
        TransportError::WrappedKeyIntegrity,
    );
    // Not a point at all, a compressed point, or a point off the curve.
    let mut compressed = env.ephemeral_public_key.as_bytes()[..33].to_vec();
    compressed[0] = 0x02;
    let mut off_curve = env.ephemeral_public_key.as_bytes().to_vec();
    off_curve[64] ^= 1;
    for bytes in [vec![4u8; 10], compressed, off_curve] {
        let mut bad = env.clone();
        bad.ephemeral_public_key = OctetString::new(bytes).unwrap();
        assert!(matches!(
            transport::soft_open(&bad, &common::secret_key(IMPORTER)),
            Err(ProtoError::PublicKey { .. })
        ));
    }
}

#[test]
fn wrong_vp_fails() {
    let f = fleet();
    let mut env = opened_envelope(&f);
    env.vp = Vp([0; 32]);
    expect_transport(
        transport::soft_open(&env, &common::secret_key(IMPORTER)),
        TransportError::VpMismatch,
    );
}

#[test]
fn signed_envelope_checks() {
    let f = fleet();
    let (_, signed) = export(&f, &mk());
    // Another fleet's CA does not vouch for the source.
    let (_, other_ca) = common::ca("fleet-1", 0x0e);
    assert!(matches!(
        signed.verify(&other_ca),
        Err(ProtoError::Certificate(
            tke_proto::CertificateError::NotIssuedByFleetCa
        ))
    ));
    // Any change to the envelope breaks the source's signature.
    let mut bytes = signed.envelope.as_bytes().to_vec();
    let n = bytes.len();
    bytes[n - 1] ^= 1; // last byte of the VP
    let mut bad = signed.clone();
    bad.envelope = OctetString::new(bytes).unwrap();
    assert!(matches!(
        bad.verify(&f.ca),
        Err(ProtoError::Transport(TransportError::EnvelopeNotSigned))
    ));
    // Signed by B's device key but presented with A's certificate.
    let env = MkEnvelope::from_der(signed.envelope.as_bytes()).unwrap();
    let by_b = SignedEnvelope::sign(&env, &f.a.cert, device_signer(&f.b.key)).unwrap();
    assert!(by_b.verify(&f.ca).is_err());
    // Signed by B, with B's certificate, but naming A as the source.
    let by_b = SignedEnvelope::sign(&env, &f.b.cert, device_signer(&f.b.key)).unwrap();
    assert!(matches!(
        by_b.verify(&f.ca),
        Err(ProtoError::Transport(
            TransportError::EnvelopeOfAnotherSource
        ))
    ));
    // A malformed signature.
    let mut bad = signed;
    bad.signature = OctetString::new(vec![0x30, 0x00]).unwrap();
    assert!(bad.verify(&f.ca).is_err());
}

#[test]
fn certified_importer_checks() {
    let f = fleet();
    let secret = common::secret_key(IMPORTER);
    let importer = ImporterKey::new(f.b.id, &secret.public_key()).unwrap();
    let certified = CertifiedImporter::sign(&importer, device_signer(&f.b.key)).unwrap();
    assert_eq!(certified.verify(&f.b.cert).unwrap(), importer);

    // Checked with another unit's device certificate.
    match certified.verify(&f.a.cert) {
        Err(ProtoError::Transport(kind)) => {
            assert_eq!(kind, TransportError::ImporterNotCertified)
        }
        other => panic!("{other:?}"),
    }
    // Certified by A for B's id, presented with A's certificate: the id differs.
    let by_a = CertifiedImporter::sign(&importer, device_signer(&f.a.key)).unwrap();
    assert!(matches!(
        by_a.verify(&f.a.cert),
        Err(ProtoError::Transport(TransportError::ImporterOfAnotherUnit))
    ));
    // A key id that does not match the key.
    let mut lying = importer.clone();
    lying.key_id.0[0] ^= 1;
    let certified = CertifiedImporter::sign(&lying, device_signer(&f.b.key)).unwrap();
    assert!(matches!(
        certified.verify(&f.b.cert),
        Err(ProtoError::Transport(TransportError::ImporterKeyIdMismatch))
    ));
    // soft_seal refuses it too.
    assert!(transport::soft_seal(&mk(), f.a.id, &lying).is_err());
    // A signer that fails.
    let failing = CertifiedImporter::sign(&importer, |_, _| Err("device key unavailable".into()));
    assert!(matches!(failing, Err(ProtoError::Signing { .. })));
}

#[test]
fn wrap_and_unwrap() {
    // Odd lengths are refused before they reach the cipher (aes-kw panics on some).
    let mut panicky = vec![0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 0];
    assert!(transport::unwrap(&[0x11; 32], &panicky).is_err());
    panicky.clear();
    assert!(transport::unwrap(&[0x11; 32], &panicky).is_err());
    let kek = [0x11; 32];
    let w = transport::wrap(&kek, &mk()).unwrap();
    assert_eq!(w.len(), 40);
    assert_eq!(transport::unwrap(&kek, &w).unwrap().vp(), mk().vp());
    assert!(transport::unwrap(&[0x12; 32], &w).is_err());
    // A validly wrapped value that is not 32 bytes long is refused.
    let short = aes_kw::KekAes256::from(kek)
        .wrap_with_padding_vec(&[1; 16])
        .unwrap();
    match transport::unwrap(&kek, &short) {
        Err(ProtoError::Transport(kind)) => assert_eq!(kind, TransportError::WrappedKeyLength),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("accepted a 16-byte key"),
    }
}

/// `seal_parts` seals nothing to an importer key its target did not certify: a load sends
/// parts only to the unit whose device key certified the importer key it answered.
#[test]
fn parts_are_sealed_only_to_an_importer_the_target_certified() {
    use tke_proto::parts::{seal_parts, MasterKeyPart};
    let f = fleet();
    let parts = [MasterKeyPart::random(), MasterKeyPart::random()];
    let secret = common::secret_key(IMPORTER);
    let importer = ImporterKey::new(f.b.id, &secret.public_key()).unwrap();
    let by_b = CertifiedImporter::sign(&importer, device_signer(&f.b.key)).unwrap();
    let request = seal_parts(&parts, &by_b, &f.b.cert).unwrap();
    assert_eq!(request.importer_key_id, importer.key_id);
    // B's importer presented as A's; A's device key certifying an importer for B.
    let by_a = CertifiedImporter::sign(&importer, device_signer(&f.a.key)).unwrap();
    for (certified, target, kind) in [
        (&by_b, &f.a.cert, TransportError::ImporterNotCertified),
        (&by_a, &f.a.cert, TransportError::ImporterOfAnotherUnit),
        (&by_a, &f.b.cert, TransportError::ImporterNotCertified),
    ] {
        match seal_parts(&parts, certified, target) {
            Err(ProtoError::Transport(k)) => assert_eq!(k, kind),
            other => panic!("{other:?}"),
        }
    }
}
