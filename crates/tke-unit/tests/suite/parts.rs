//! `importMkParts` and the control point commands, on every backend.

use tke_proto::{
    parts::{self, MasterKeyPart, MkPartsRequest},
    transport::ImporterKey,
    ControlPoint, ControlPoints, ProtoError, ResponseBody, TransportError,
};

use super::*;

/// The target makes an importer key; returns it, verified as a workstation does.
fn importer_of(w: &World, target: &mut Unit) -> ImporterKey {
    certified_importer(w, target)
        .verify(target.device_certificate())
        .unwrap()
}

/// The target makes an importer key; returns `parts` sealed to it by the workstation's
/// helper.
fn parts_request(w: &World, target: &mut Unit, parts: &[MasterKeyPart]) -> MkPartsRequest {
    let importer = certified_importer(w, target);
    parts::seal_parts(parts, &importer, target.device_certificate()).unwrap()
}

/// `parts` sealed to `importer` part by part, without the workstation's checks.
fn sealed_anyway(importer: &ImporterKey, parts: &[MasterKeyPart]) -> MkPartsRequest {
    MkPartsRequest {
        importer_key_id: importer.key_id,
        parts: parts
            .iter()
            .enumerate()
            .map(|(i, p)| parts::seal_part(p, i + 1, importer).unwrap())
            .collect(),
    }
}

/// Sends `importMkParts` with one administrator's signature.
fn load_parts(w: &World, target: &mut Unit, req: MkPartsRequest) -> ResponseBody {
    run(
        target,
        &w.fleet.ca,
        &Command::ImportMkParts(Box::new(req)),
        &[w.a(2)],
    )
}

/// Sends `req` (described by `what`) to `u` and checks that it is refused with `expected`
/// and that the refusal changed the counter and used up the importer key, nothing else.
#[track_caller]
fn refused_using_up_importer(
    w: &World,
    u: &mut Unit,
    req: MkPartsRequest,
    expected: ModuleError,
    what: &str,
) {
    let mut before = u.status();
    assert!(before.importer_pending, "{what}");
    let body = load_parts(w, u, req);
    assert_eq!(body.error(), Some(expected), "{what}");
    before.importer_pending = false;
    assert_unchanged(u, &before, true);
}

fn random_parts<const N: usize>() -> [MasterKeyPart; N] {
    core::array::from_fn(|_| MasterKeyPart::random())
}

/// 2 parts into an operational unit, 3 into a failover unit: the new register holds
/// their XOR (its VP is the VP of the XOR), one signature suffices, the importer key is
/// used up, and the key is committed and activated like any other.
pub fn import_mk_parts(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut op = w.ready(f, "op", UnitType::Operational);
    let mut fo = w.ready(f, "fo", UnitType::Failover);
    let two = random_parts::<2>();
    let three = [
        two[0].clone(),
        MasterKeyPart::random(),
        MasterKeyPart::random(),
    ];
    for (u, parts) in [(&mut op, &two[..]), (&mut fo, &three[..])] {
        let expected = parts::combine(parts).unwrap().vp();
        let req = parts_request(&w, u, parts);
        let vp = vp_of(&ok(load_parts(&w, u, req)));
        assert_eq!(vp, expected, "the VP of the parts' XOR");
        let s = query(u, ca);
        assert_eq!(s.new_register, full(RegisterState::FullUncommitted, vp));
        assert!(!s.importer_pending, "the importer key is single-use");
        ok(run(u, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]));
        ok(run(u, ca, &Command::SetImmediate(vp), &[w.a(1)]));
        assert_eq!(query(u, ca).current_register, valid(vp));
    }
    // A next key for the operational unit from three parts, one of them reused: at least
    // one fresh part makes another value.
    let next = [
        two[1].clone(),
        MasterKeyPart::random(),
        MasterKeyPart::random(),
    ];
    let req = parts_request(&w, &mut op, &next);
    let vp = vp_of(&ok(load_parts(&w, &mut op, req)));
    assert_eq!(vp, parts::combine(&next).unwrap().vp());
    assert_ne!(Some(vp), op.status().current_register.vp);
    // The loaded keys are in the backend: a reopen checks every register's VP against it.
    let status = (op.status(), fo.status());
    drop((op, fo));
    assert_eq!(
        (
            f.reopen(&w.path("op")).status(),
            f.reopen(&w.path("fo")).status()
        ),
        status
    );
}

/// Every refusal of `importMkParts`, in the order `docs/protocol.md` §11.2 gives, each
/// changing nothing but the counter and, once the importer key matched, that key.
pub fn import_mk_parts_refusals(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut op = w.ready(f, "op", UnitType::Operational);
    let good = random_parts::<2>();

    // A recovery unit's key is only ever generated inside it: 80/80, before the importer
    // key is looked at, so it stays pending.
    let mut rec = w.ready(f, "rec", UnitType::Recovery);
    let req = parts_request(&w, &mut rec, &good);
    let before = rec.status();
    assert!(before.importer_pending);
    fails(&load_parts(&w, &mut rec, req), ModuleError::LOAD_FORBIDDEN);
    assert_unchanged(&rec, &before, true);

    // Not the pending importer key (replaced by a newer one): 96, and the newer one stays.
    let stale = parts_request(&w, &mut op, &good);
    let fresh = parts_request(&w, &mut op, &good);
    let before = op.status();
    fails(&load_parts(&w, &mut op, stale), ModuleError::NOT_FOUND);
    assert_unchanged(&op, &before, true);

    // One part or four: malformed input (32), refused before the counter is consumed.
    for count in [1, 4] {
        let mut req = fresh.clone();
        req.parts = vec![fresh.parts[0].clone(); count];
        let before = op.status();
        fails(&load_parts(&w, &mut op, req), ModuleError::INVALID_DATA);
        assert_unchanged(&op, &before, false);
    }

    // Parts that do not open: 32, and the importer key is used up.
    type Spoil = fn(&mut MkPartsRequest, &ImporterKey);
    let spoilers: [(&str, Spoil); 6] = [
        ("sealed for another unit", |r, importer| {
            let elsewhere = ImporterKey {
                unit_id: UnitId::random(),
                ..importer.clone()
            };
            r.parts[1] = parts::seal_part(&MasterKeyPart::random(), 2, &elsewhere).unwrap();
        }),
        ("in each other's position", |r, _| r.parts.swap(0, 1)),
        ("a wrapped byte changed", |r, _| {
            let mut w = r.parts[0].wrapped_part.as_bytes().to_vec();
            w[20] ^= 1;
            r.parts[0].wrapped_part = OctetString::new(w).unwrap();
        }),
        ("the other part's VP", |r, _| r.parts[0].vp = r.parts[1].vp),
        ("a 64-byte ephemeral point", |r, _| {
            let e = r.parts[1].ephemeral_public_key.as_bytes()[..64].to_vec();
            r.parts[1].ephemeral_public_key = OctetString::new(e).unwrap();
        }),
        ("a 39-byte wrapped part", |r, _| {
            let p = r.parts[1].wrapped_part.as_bytes()[..39].to_vec();
            r.parts[1].wrapped_part = OctetString::new(p).unwrap();
        }),
    ];
    for (what, spoil) in spoilers {
        let importer = importer_of(&w, &mut op);
        let mut req = sealed_anyway(&importer, &good);
        spoil(&mut req, &importer);
        let what = format!("a part {what} ({})", f.name());
        refused_using_up_importer(&w, &mut op, req, ModuleError::INVALID_DATA, &what);
    }

    // Parts that are not independent: 32/2, and the importer key is used up.
    let a = MasterKeyPart::random();
    let b = MasterKeyPart::random();
    let a_xor_b = MasterKeyPart::from_slice(&core::array::from_fn::<u8, 32, _>(|i| {
        a.expose_secret()[i] ^ b.expose_secret()[i]
    }))
    .unwrap();
    let zero = MasterKeyPart::from_slice(&[0; 32]).unwrap();
    for (what, dependent) in [
        ("two equal parts", vec![a.clone(), a.clone()]),
        ("a zero part", vec![a.clone(), zero]),
        (
            "three that XOR to zero",
            vec![a.clone(), b.clone(), a_xor_b],
        ),
        ("two equal of three", vec![a.clone(), b.clone(), a.clone()]),
    ] {
        // The workstation's helper refuses them before anything is sent.
        let importer = importer_of(&w, &mut op);
        let checked = parts::check_independent(&dependent);
        assert!(
            matches!(
                checked,
                Err(ProtoError::Transport(TransportError::PartsNotIndependent))
            ),
            "{what}"
        );
        refused_using_up_importer(
            &w,
            &mut op,
            sealed_anyway(&importer, &dependent),
            ModuleError::PARTS_NOT_INDEPENDENT,
            what,
        );
    }

    // The new register is full: 102, and the importer key is used up.
    let req = parts_request(&w, &mut op, &good);
    let vp = vp_of(&ok(load_parts(&w, &mut op, req)));
    let req = parts_request(&w, &mut op, &random_parts::<2>());
    refused_using_up_importer(
        &w,
        &mut op,
        req,
        ModuleError::REGISTER_STATE,
        "into a full new register",
    );

    // The same value as the current register: 102/1 (the vendor's refusal when every
    // part is an old one), the importer key used up and the new register left empty.
    ok(run(&mut op, ca, &Command::CommitMk(vp), &[w.a(0), w.a(1)]));
    ok(run(&mut op, ca, &Command::SetImmediate(vp), &[w.a(0)]));
    let req = parts_request(&w, &mut op, &good);
    refused_using_up_importer(
        &w,
        &mut op,
        req,
        ModuleError::SAME_VALUE,
        "the current key's parts",
    );
    // What was refused left nothing behind: the unit reopens (every secret it refers to
    // is there) and loads a fresh key.
    let status = op.status();
    drop(op);
    let mut op = f.reopen(&w.path("op"));
    assert_eq!(op.status(), status);
    let req = parts_request(&w, &mut op, &random_parts::<3>());
    ok(load_parts(&w, &mut op, req));
}

/// The control point mask: a new unit's default, set and cleared by the signature
/// threshold, refused in imprint mode, kept by zeroize and across a reopen.
pub fn control_points(f: &dyn UnitFactory) {
    let w = World::new(3);
    let ca = &w.fleet.ca;
    let mut u = w.unit(f, "u", UnitType::Operational);
    assert_eq!(query(&mut u, ca).control_points, ControlPoints::DEFAULT);
    let btc = ControlPoints::of(&[ControlPoint::BTC]);
    add_admins(&mut u, ca, &w.admins);
    let before = u.status();
    for signers in [&[][..], &[w.a(0), w.a(1)]] {
        fails(
            &run(&mut u, ca, &Command::AddControlPoints(btc), signers),
            ModuleError::IMPRINT_MODE,
        );
    }
    assert_unchanged(&u, &before, false);
    leave_imprint_mode(&mut u, ca, &w.admins, 2, 2);

    // Below the signature threshold: 208, nothing changes.
    let before = u.status();
    fails(
        &run(&mut u, ca, &Command::RemoveControlPoints(btc), &[w.a(0)]),
        ModuleError::NOT_ENOUGH_SIGNATURES,
    );
    assert_unchanged(&u, &before, false);

    // Clear XCP_CPB_BTC: the answer is the mask afterwards, and only that bit changed.
    let out = ok(run(
        &mut u,
        ca,
        &Command::RemoveControlPoints(btc),
        &[w.a(0), w.a(1)],
    ));
    let cleared = ControlPoints::DEFAULT.difference(btc);
    assert_eq!(ControlPoints::from_slice(&out).unwrap(), cleared);
    let mut expected = before.clone();
    expected.counter += 1;
    expected.control_points = cleared;
    assert_eq!(query(&mut u, ca), expected);
    // Clearing a clear bit changes nothing but the counter.
    let out = ok(run(
        &mut u,
        ca,
        &Command::RemoveControlPoints(btc),
        &[w.a(1), w.a(2)],
    ));
    assert_eq!(ControlPoints::from_slice(&out).unwrap(), cleared);

    // Set the first and last bits and XCP_CPB_BTC again.
    let more = ControlPoints::of(&[
        ControlPoint::new(0).unwrap(),
        ControlPoint::BTC,
        ControlPoint::new(127).unwrap(),
    ]);
    let out = ok(run(
        &mut u,
        ca,
        &Command::AddControlPoints(more),
        &[w.a(2), w.a(0)],
    ));
    let all = ControlPoints::DEFAULT.union(more);
    assert_eq!(ControlPoints::from_slice(&out).unwrap(), all);
    assert_eq!(query(&mut u, ca).control_points, all);

    // A mask of another size than 16 bytes: 32, refused before the counter is consumed.
    let before = u.status();
    for len in [15, 17] {
        let input = vec![0xff; len];
        let body = run_raw(
            &mut u,
            ca,
            CommandId::AddControlPoints,
            input,
            &[w.a(0), w.a(1)],
        );
        fails(&body, ModuleError::INVALID_DATA);
    }
    assert_unchanged(&u, &before, false);

    // Zeroize keeps the control points (EP11 does), and so does a reopen.
    ok(run(&mut u, ca, &Command::Zeroize, &[w.a(0)]));
    assert_eq!(query(&mut u, ca).control_points, all);
    drop(u);
    assert_eq!(f.reopen(&w.path("u")).status().control_points, all);
}
