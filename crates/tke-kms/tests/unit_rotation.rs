//! The whole rotation of 10,000 root keys through `LocalKms` on real units (the embedded
//! fleet's soft units, protocol v4 service requests): each key wraps a data key; the
//! rotation is interrupted (the service dropped mid-way, as a process that dies); at that
//! moment every record is still readable by the units under the VP it is tagged with; a
//! new service finishes the rotation; every data key then unwraps to the same bytes with
//! the same root key ids, also once the new key is the units' only one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use tke_client::kms::{store_path, ClientUnits};
use tke_keystore::{KeyId, KeyName, KeyStore, SqliteKeyStore};
use tke_kms::{InstanceUnits, KmsError, WrappedDataKey};
use tke_proto::Vp;

const KEYS: u32 = 10_000;

/// Checks, at the level of the units, that every record unwraps its data key under the
/// VP it is tagged with (what a crash in the middle of a rotation must preserve), reading
/// the store file as it is on disk. Returns how many records are under `from`, and how
/// many under another VP.
fn every_record_readable(
    rig: &common::Rig,
    from: &Vp,
    wrapped: &[(KeyId, Vec<u8>, Vec<u8>)],
) -> (u64, u64) {
    let path = store_path(&rig.dir.path().join("local/keys"), &rig.instance);
    let store = SqliteKeyStore::open(&path).unwrap();
    let units = ClientUnits::new(rig.another_client(), rig.instance.clone());
    let unit = &units.units().unwrap()[0];
    let (mut old, mut new) = (0, 0);
    for (id, data, file) in wrapped {
        let record = store.get(id).unwrap();
        let file = WrappedDataKey::parse(file).unwrap();
        let got = units
            .unwrap_data(unit, &record.vp, &record.wrapped, &file.wrapped)
            .unwrap_or_else(|e| panic!("key {id} under VP {}: {e}", record.vp));
        assert_eq!(got.as_slice(), data.as_slice(), "key {id}");
        if record.vp == *from {
            old += 1;
        } else {
            new += 1;
        }
    }
    (old, new)
}

#[test]
fn ten_thousand_keys_rotate_inside_the_units_and_a_crash_loses_nothing() {
    let rig = common::Rig::new();
    let kms = rig.kms();
    let keys = kms.create(&KeyName::new("root").unwrap(), KEYS).unwrap();
    assert_eq!(keys.len(), KEYS as usize);
    assert_eq!(keys[0].name.as_str(), "root-1");
    let wrapped: Vec<(KeyId, Vec<u8>, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let data = format!("data key {i:06} for the rotation").into_bytes();
            let file = kms.wrap(&k.id, &data).unwrap();
            (k.id, data, file)
        })
        .collect();

    let rotation = rig.commit_new();
    kms.begin_rotation(rotation).unwrap();
    assert!(matches!(
        kms.wrap(&keys[0].id, b"0123456789abcdef"),
        Err(KmsError::RotationInProgress)
    ));
    let p = kms.reencrypt(4_000).unwrap();
    assert_eq!((p.done, p.total), (4_000, u64::from(KEYS)));
    // The process "dies" here: nothing but the store file and the units survive.
    drop(kms);
    assert_eq!(
        every_record_readable(&rig, &rotation.from, &wrapped),
        (6_000, 4_000)
    );

    let kms = rig.kms();
    assert_eq!(kms.summary().unwrap().rotation, Some(rotation));
    let p = kms.reencrypt(u64::MAX).unwrap();
    assert_eq!((p.done, p.remaining()), (u64::from(KEYS), 0));
    kms.finish_rotation().unwrap();
    let summary = kms.summary().unwrap();
    assert_eq!(summary.by_vp, vec![(rotation.to, u64::from(KEYS))]);
    assert_eq!(summary.rotation, None);

    // Unwrapped by the committed new register, then by the current one after setimm.
    for (id, data, file) in &wrapped {
        assert_eq!(kms.unwrap(id, file).unwrap().as_slice(), data.as_slice());
    }
    rig.set_immediate();
    assert_eq!(rig.current_vp(), rotation.to);
    // The same ids (a batch shares its creation time: listed by id within it).
    let mut listed: Vec<KeyId> = kms.list().unwrap().iter().map(|k| k.id).collect();
    let mut created: Vec<KeyId> = keys.iter().map(|k| k.id).collect();
    listed.sort();
    created.sort();
    assert!(listed == created, "the listed ids are not the created ones");
    for (id, data, file) in wrapped.iter().step_by(97) {
        assert_eq!(kms.unwrap(id, file).unwrap().as_slice(), data.as_slice());
    }
}
