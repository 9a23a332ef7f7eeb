//! Secrets never appear in `Debug` or error output: format every secret-bearing type
//! and look for the secret bytes in any common rendering.

use tke_proto::{
    der::asn1::OctetString,
    p256::ecdsa::{signature::Signer as _, Signature, SigningKey},
    transport::MkEnvelope,
    CaCertificate, DeviceCertificate, Digest32, UnitId, UnitType, Vp,
};

use crate::{Backend, SoftBackend, Unit};

fn sign_with(key: &SigningKey) -> Box<tke_proto::cert::SignFn<'_>> {
    Box::new(move |m| {
        let s: Signature = key.sign(m);
        Ok(s.to_der())
    })
}

/// A recovery unit of some instance, as the certificates here describe their units.
fn recovery() -> tke_proto::UnitDescription {
    tke_proto::UnitDescription {
        unit_type: UnitType::Recovery,
        instance_id: tke_proto::InstanceId([7; 16]),
    }
}

/// Every rendering of `secret` (and of any 6-byte window of it) that a careless `Debug`
/// could produce.
fn renderings(secret: &[u8]) -> Vec<String> {
    let mut out = vec![
        format!("{secret:?}"),
        format!("{secret:x?}"),
        format!("{secret:02X?}"),
    ];
    for w in secret.windows(6) {
        out.push(hex::encode(w));
        out.push(hex::encode_upper(w));
        out.push(format!("{w:?}").trim_matches(['[', ']']).to_owned());
    }
    out
}

/// A fleet CA and its key.
fn fleet() -> (SigningKey, CaCertificate) {
    let ca_key = SigningKey::random(&mut rand_core::OsRng);
    let ca = CaCertificate::build(
        "fleet",
        &tke_proto::p256::PublicKey::from(ca_key.verifying_key()),
        sign_with(&ca_key),
    )
    .unwrap();
    (ca_key, ca)
}

/// Every secret of `soft`: the device key, the master key `handle`, the importer key.
fn secrets_of(soft: &SoftBackend, handle: &crate::KeyHandle) -> Vec<Vec<u8>> {
    let mut secrets: Vec<Vec<u8>> = vec![
        soft.device.signing_key().to_bytes().to_vec(),
        soft.master_keys[handle].expose_secret().to_vec(),
    ];
    secrets.extend(soft.importers.values().map(|k| k.to_bytes().to_vec()));
    assert_eq!(secrets.len(), 3);
    secrets
}

#[track_caller]
fn assert_shows_none(outputs: &[String], secrets: &[Vec<u8>]) {
    for text in outputs {
        for secret in secrets {
            for r in renderings(secret) {
                assert!(!text.contains(&r), "secret rendering {r:?} found in {text}");
            }
        }
    }
}

#[test]
fn debug_and_errors_show_no_secret() {
    let d = tempfile::tempdir().unwrap();
    let (ca_key, ca) = fleet();
    let id = UnitId::random();
    let dir = d.path().join("unit");
    let mut unit = Unit::create_soft(&dir, id, UnitType::Recovery, &ca, &mut |pk| {
        DeviceCertificate::issue(&ca, &id, &recovery(), pk, sign_with(&ca_key))
    })
    .unwrap();
    let (handle, vp) = unit.backend.generate_master_key().unwrap();
    unit.backend.generate_importer().unwrap();

    // A second instance over the same file, to read the secrets out.
    let soft = SoftBackend::open(&dir, id).unwrap();
    let secrets = secrets_of(&soft, &handle);

    // A refused import yields a backend error built from a failed unwrap.
    let importer_id = *soft.importers.keys().next().unwrap();
    let bogus = MkEnvelope {
        source_unit_id: UnitId::random(),
        target_unit_id: id,
        importer_key_id: importer_id,
        ephemeral_public_key: OctetString::new(
            tke_proto::transport::point_bytes(&soft.device_public_key()).to_vec(),
        )
        .unwrap(),
        wrapped_key: OctetString::new(vec![0u8; 40]).unwrap(),
        vp: Vp([0; 32]),
    };
    let mut soft2 = SoftBackend::open(&dir, id).unwrap();
    let rejected = soft2.import(&importer_id, &bogus).unwrap_err();
    let unknown = soft2.import(&Digest32([9; 32]), &bogus).unwrap_err();
    let foreign = SoftBackend::open(&dir, UnitId::random()).unwrap_err();

    let outputs = [
        format!("{unit:?}"),
        format!("{unit:#?}"),
        format!("{soft:?}"),
        format!("{soft:#?}"),
        format!("{:?}", &unit.backend),
        format!("{rejected:?} {rejected}"),
        format!("{unknown:?} {unknown}"),
        format!("{foreign:?} {foreign}"),
        format!("{:?}", soft.master_keys),
    ];
    assert_shows_none(&outputs, &secrets);
    // The output is still useful: it names the key by handle and VP.
    assert!(outputs[2].contains(&handle.to_hex()) && outputs[2].contains(&vp.to_hex()));
    assert!(outputs[0].contains("redacted"));
}

#[test]
fn secrets_in_memory_are_not_shown_either() {
    let (ca_key, ca) = fleet();
    let id = UnitId::random();
    let memory = crate::MemorySecrets::new();
    let mut unit = Unit::create_from_parts(
        Box::new(crate::MemoryStore::new()),
        Box::new(SoftBackend::create_in_memory(&memory, id).unwrap()),
        id,
        UnitType::Recovery,
        &ca,
        &mut |pk| DeviceCertificate::issue(&ca, &id, &recovery(), pk, sign_with(&ca_key)),
    )
    .unwrap();
    let (handle, _) = unit.backend.generate_master_key().unwrap();
    unit.backend.generate_importer().unwrap();

    // A second instance over the same memory, to read the secrets out.
    let soft = SoftBackend::open_in_memory(&memory, id).unwrap();
    let secrets = secrets_of(&soft, &handle);

    let outputs = [
        format!("{unit:#?}"),
        format!("{soft:#?}"),
        format!("{memory:#?}"),
    ];
    assert_shows_none(&outputs, &secrets);
    assert!(outputs[2].contains("bytes"), "{}", outputs[2]);
}
