//! Key-service requests (protocol version 4): root keys generated under the current
//! register, data keys wrapped and unwrapped under them, root keys rewrapped to the new
//! register; every refusal, and that none of it changes the unit.

use tke_proto::{
    der::{asn1::OctetString, Decode},
    Command, GeneratedKeys, ModuleError, Request, ResponseBody, Rewrap, SecretOctets, ServiceOp,
    ServiceRequest, UnitId, UnitType, UnwrapData, Vp, WrapData, MAX_SERVICE_BATCH,
    MAX_SERVICE_DATA,
};
use tke_unit::Unit;

use super::{assert_unchanged, load, vp_of, World};
use crate::support::*;

/// Sends a service request for `op` to `unit` (the answer verified as a client does).
pub fn service(w: &World, unit: &mut Unit, op: ServiceOp) -> ResponseBody {
    let req = Request::Service(ServiceRequest::new(unit.id(), op));
    send(unit, &w.fleet.ca, &req)
}

fn os(bytes: &[u8]) -> OctetString {
    OctetString::new(bytes).unwrap()
}

/// Generates `n` root keys; returns them and their VP.
pub fn generate(w: &World, unit: &mut Unit, n: u32) -> (Vec<OctetString>, Vp) {
    let g = GeneratedKeys::from_der(&ok(service(w, unit, ServiceOp::GenerateKeys(n)))).unwrap();
    assert_eq!(g.keys.len(), n as usize);
    (g.keys, g.vp)
}

/// A random master key in the unit (current register if empty, else new); its VP.
fn random_mk(w: &World, unit: &mut Unit) -> Vp {
    vp_of(&ok(run(
        unit,
        &w.fleet.ca,
        &Command::GenerateRandomMk,
        &[w.a(0)],
    )))
}

fn wrap(vp: Vp, root: &OctetString, data: &[u8]) -> ServiceOp {
    ServiceOp::WrapData(WrapData {
        vp,
        root: root.clone(),
        data: SecretOctets::new(data.to_vec()),
    })
}

fn unwrap(vp: Vp, root: &OctetString, wrapped: &[u8]) -> ServiceOp {
    ServiceOp::UnwrapData(UnwrapData {
        vp,
        root: root.clone(),
        wrapped: os(wrapped),
    })
}

fn rewrap(from: Vp, to: Vp, keys: &[OctetString]) -> ServiceOp {
    ServiceOp::Rewrap(Rewrap {
        from,
        to,
        keys: keys.to_vec(),
    })
}

/// A rotation seen from key storage: root keys made by the recovery unit are readable by
/// an operational unit with the same master key; during the rotation the old records
/// (current register) and the rewrapped ones (new register, Full Committed) are both
/// readable; after set-immediate only the new ones. No service request changes the unit.
pub fn service_keys_through_a_rotation(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let vp1 = random_mk(&w, &mut rec);
    let mut op = w.ready(f, "op", UnitType::Operational);
    assert_eq!(load(&w, &mut rec, &mut op), vp1);

    let before = rec.status();
    let (roots, vp) = generate(&w, &mut rec, 3);
    assert_eq!(vp, vp1);
    for (i, r) in roots.iter().enumerate() {
        assert_eq!(r.as_bytes().len(), 40, "AES-KWP of a 32-byte key");
        assert!(roots[..i].iter().all(|o| o != r), "fresh keys");
    }
    let data = b"a data key of 32 bytes, say 0123";
    let wrapped = ok(service(&w, &mut rec, wrap(vp1, &roots[0], data)));
    assert_ne!(&wrapped[..], &data[..]);
    // Another unit with the same master key reads it.
    let got = ok(service(&w, &mut op, unwrap(vp1, &roots[0], &wrapped)));
    assert_eq!(&got[..], &data[..]);
    // Another root key does not.
    fails(
        &service(&w, &mut op, unwrap(vp1, &roots[1], &wrapped)),
        ModuleError::SERVICE_WRAPPED_DATA,
    );
    assert_unchanged(&rec, &before, false);

    // A new master key, not yet committed: it serves nothing, and no rewrap goes to it.
    let vp2 = random_mk(&w, &mut rec);
    fails(
        &service(&w, &mut rec, rewrap(vp1, vp2, &roots)),
        ModuleError::SERVICE_REWRAP_STATE,
    );
    fails(
        &service(&w, &mut rec, wrap(vp2, &roots[0], data)),
        ModuleError::SERVICE_NO_REGISTER,
    );
    ok(run(
        &mut rec,
        ca,
        &Command::CommitMk(vp2),
        &[w.a(0), w.a(1)],
    ));
    let committed = rec.status();
    // Rewrap: same order, new bytes; the old and the new records both read the data.
    let new_roots: Vec<OctetString> =
        Vec::<OctetString>::from_der(&ok(service(&w, &mut rec, rewrap(vp1, vp2, &roots)))).unwrap();
    assert_eq!(new_roots.len(), roots.len());
    for (old, new) in roots.iter().zip(&new_roots) {
        assert_eq!(new.as_bytes().len(), 40);
        assert_ne!(old, new);
    }
    for (vp, root) in [(vp1, &roots[0]), (vp2, &new_roots[0])] {
        let got = ok(service(&w, &mut rec, unwrap(vp, root, &wrapped)));
        assert_eq!(&got[..], &data[..], "readable under {vp}");
    }
    // A root key is read only under the register its VP names.
    fails(
        &service(&w, &mut rec, unwrap(vp2, &roots[0], &wrapped)),
        ModuleError::SERVICE_WRAPPED_KEY,
    );
    // Rewrapping back, or from the new register, is refused.
    fails(
        &service(&w, &mut rec, rewrap(vp2, vp1, &new_roots)),
        ModuleError::SERVICE_REWRAP_STATE,
    );
    // New data wrapped under a rewrapped root key reads under the old one too.
    let wrapped2 = ok(service(&w, &mut rec, wrap(vp2, &new_roots[2], b"k2k2k2k2")));
    let got = ok(service(&w, &mut rec, unwrap(vp1, &roots[2], &wrapped2)));
    assert_eq!(&got[..], b"k2k2k2k2");
    assert_unchanged(&rec, &committed, false);

    // Set immediate: the new records read under the current register, the old ones not.
    ok(run(&mut rec, ca, &Command::SetImmediate(vp2), &[w.a(1)]));
    let got = ok(service(&w, &mut rec, unwrap(vp2, &new_roots[0], &wrapped)));
    assert_eq!(&got[..], &data[..]);
    fails(
        &service(&w, &mut rec, unwrap(vp1, &roots[0], &wrapped)),
        ModuleError::SERVICE_NO_REGISTER,
    );
    fails(
        &service(&w, &mut rec, rewrap(vp2, vp1, &new_roots)),
        ModuleError::SERVICE_REWRAP_STATE,
    );
    assert_eq!(generate(&w, &mut rec, 1).1, vp2);
}

/// Every refusal: each answers its code, with no output, and changes nothing.
pub fn service_refusals(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut empty = w.ready(f, "empty", UnitType::Recovery);
    let s = empty.status();
    fails(
        &service(&w, &mut empty, ServiceOp::GenerateKeys(1)),
        ModuleError::SERVICE_NO_CURRENT,
    );
    assert_unchanged(&empty, &s, false);

    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let vp1 = random_mk(&w, &mut rec);
    let vp2 = random_mk(&w, &mut rec);
    ok(run(
        &mut rec,
        ca,
        &Command::CommitMk(vp2),
        &[w.a(0), w.a(1)],
    ));
    // A full batch works both ways.
    let (roots, _) = generate(&w, &mut rec, MAX_SERVICE_BATCH as u32);
    let full = ok(service(&w, &mut rec, rewrap(vp1, vp2, &roots)));
    assert_eq!(
        Vec::<OctetString>::from_der(&full).unwrap().len(),
        MAX_SERVICE_BATCH
    );
    let s = rec.status();

    // Another unit's request.
    let req = Request::Service(ServiceRequest::new(
        UnitId::random(),
        ServiceOp::GenerateKeys(1),
    ));
    fails(&send(&mut rec, ca, &req), ModuleError::INVALID_UNIT);
    // Batches.
    let too_many: Vec<OctetString> = roots.iter().chain(&roots[..1]).cloned().collect();
    for op in [
        ServiceOp::GenerateKeys(0),
        ServiceOp::GenerateKeys(MAX_SERVICE_BATCH as u32 + 1),
        ServiceOp::GenerateKeys(u32::MAX),
        rewrap(vp1, vp2, &[]),
        rewrap(vp1, vp2, &too_many),
    ] {
        fails(&service(&w, &mut rec, op), ModuleError::SERVICE_BATCH);
    }
    // Data sizes.
    for len in [0, 1, 15, MAX_SERVICE_DATA + 1] {
        fails(
            &service(&w, &mut rec, wrap(vp1, &roots[0], &vec![1; len])),
            ModuleError::SERVICE_DATA,
        );
    }
    let longest = ok(service(
        &w,
        &mut rec,
        wrap(vp1, &roots[0], &[9; MAX_SERVICE_DATA]),
    ));
    assert_eq!(
        ok(service(&w, &mut rec, unwrap(vp1, &roots[0], &longest))),
        vec![9; MAX_SERVICE_DATA]
    );
    // No register with that VP.
    let nobody = Vp([0x77; 32]);
    fails(
        &service(&w, &mut rec, wrap(nobody, &roots[0], b"xxxxxxxx")),
        ModuleError::SERVICE_NO_REGISTER,
    );
    fails(
        &service(&w, &mut rec, unwrap(nobody, &roots[0], &longest)),
        ModuleError::SERVICE_NO_REGISTER,
    );
    fails(
        &service(&w, &mut rec, rewrap(nobody, vp2, &roots[..1])),
        ModuleError::SERVICE_REWRAP_STATE,
    );
    fails(
        &service(&w, &mut rec, rewrap(vp1, nobody, &roots[..1])),
        ModuleError::SERVICE_REWRAP_STATE,
    );
    // Malformed and foreign root keys: too short, too long, random, another unit's.
    let mut other = w.ready(f, "other", UnitType::Recovery);
    random_mk(&w, &mut other);
    let (foreign, _) = generate(&w, &mut other, 1);
    let mut flipped = roots[0].as_bytes().to_vec();
    flipped[5] ^= 1;
    let bad_roots = [
        os(&roots[0].as_bytes()[..39]),
        os(&[roots[0].as_bytes(), &[0; 8]].concat()),
        os(&[0x42; 40]),
        os(&flipped),
        os(&[]),
        foreign[0].clone(),
    ];
    for bad in &bad_roots {
        fails(
            &service(&w, &mut rec, wrap(vp1, bad, b"xxxxxxxx")),
            ModuleError::SERVICE_WRAPPED_KEY,
        );
        fails(
            &service(&w, &mut rec, unwrap(vp1, bad, &longest)),
            ModuleError::SERVICE_WRAPPED_KEY,
        );
        // One bad key among good ones: nothing is rewrapped.
        let mixed = [roots[0].clone(), bad.clone(), roots[1].clone()];
        fails(
            &service(&w, &mut rec, rewrap(vp1, vp2, &mixed)),
            ModuleError::SERVICE_WRAPPED_KEY,
        );
    }
    // Malformed wrapped data, or data wrapped under another root key.
    let under_other = ok(service(&w, &mut rec, wrap(vp1, &roots[1], b"data key")));
    let mut tampered = longest.clone();
    tampered[20] ^= 0x80;
    for bad in [
        under_other,
        tampered,
        vec![],
        vec![0; 7],
        vec![0; 8],
        vec![0; 17],
    ] {
        fails(
            &service(&w, &mut rec, unwrap(vp1, &roots[0], &bad)),
            ModuleError::SERVICE_WRAPPED_DATA,
        );
    }
    // Malformed DER inside the service request: invalid data, like any request.
    let mut der = tke_proto::der::Encode::to_der(&Request::Service(ServiceRequest::new(
        rec.id(),
        ServiceOp::GenerateKeys(1),
    )))
    .unwrap();
    let last = der.len() - 1;
    der[last - 2] = 0x81; // [1] primitive: not a WrapData
    fails(&send_raw(&mut rec, ca, &der), ModuleError::INVALID_DATA);
    assert_unchanged(&rec, &s, false);
}
